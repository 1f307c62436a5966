//! Fetching Debian packages with apt, without touching the host's apt state.
//!
//! apt runs with `APT_CONFIG` pointing at a config berth writes under its cache directory: its own
//! lists, archives, (empty) dpkg status and sources. Nothing under /etc/apt or /var/lib/apt is
//! written, and no root is needed. The mirror and keyring come from the host's sources (one-line
//! `.list` or deb822 `.sources`) unless the profile names them, so no registry host is ever
//! written into this repository.
//!
//! Resolution (name -> exact version + SHA-256) is done here in Rust from the Packages indexes
//! apt downloaded, so the result is a plain, deterministic function of the indexes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::fetch::deb::{parse_stanzas, ControlFields};
use crate::fetch::debversion;
use crate::profile::Debian;
use crate::util::cmd::Cmd;

/// The architecture berth images are built for (the only one the disk layout supports so far).
pub const ARCH: &str = "amd64";
/// Where the host's apt keeps its sources.
const HOST_SOURCES: &str = "/etc/apt/sources.list";
const HOST_SOURCES_D: &str = "/etc/apt/sources.list.d";
/// Debian's archive keyring, the fallback when neither profile nor host source names one.
const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// One `deb` line of berth's own sources list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub uri: String,
    pub suite: String,
    pub components: Vec<String>,
    pub keyring: PathBuf,
}

impl Source {
    fn line(&self) -> String {
        format!(
            "deb [arch={ARCH} signed-by={}] {} {} {}",
            self.keyring.display(),
            self.uri,
            self.suite,
            self.components.join(" ")
        )
    }
}

/// A `deb` source found in the host's apt configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSource {
    pub uri: String,
    pub suites: Vec<String>,
    pub signed_by: Option<PathBuf>,
}

/// Reads the host's enabled `deb` sources (both formats). Unreadable files are skipped: a host
/// without sources just means the profile must name a mirror.
pub fn host_sources() -> Vec<HostSource> {
    let mut out = Vec::new();
    if let Ok(t) = fs::read_to_string(HOST_SOURCES) {
        out.extend(parse_one_line_sources(&t));
    }
    let mut files: Vec<PathBuf> = fs::read_dir(HOST_SOURCES_D)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    for f in files {
        let Ok(t) = fs::read_to_string(&f) else {
            continue;
        };
        match f.extension().and_then(|e| e.to_str()) {
            Some("list") => out.extend(parse_one_line_sources(&t)),
            Some("sources") => out.extend(parse_deb822_sources(&t)),
            _ => {}
        }
    }
    out
}

fn parse_one_line_sources(text: &str) -> Vec<HostSource> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut rest = match line.strip_prefix("deb ") {
            Some(r) => r.trim(),
            None => continue,
        };
        let mut signed_by = None;
        if rest.starts_with('[') {
            let Some(end) = rest.find(']') else { continue };
            for opt in rest[1..end].split_whitespace() {
                if let Some(k) = opt.strip_prefix("signed-by=") {
                    signed_by = Some(PathBuf::from(k));
                }
            }
            rest = rest[end + 1..].trim();
        }
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        out.push(HostSource {
            uri: uri.to_string(),
            suites: vec![suite.to_string()],
            signed_by,
        });
    }
    out
}

fn parse_deb822_sources(text: &str) -> Vec<HostSource> {
    let mut out = Vec::new();
    for st in parse_stanzas(text) {
        let enabled = st
            .get("Enabled")
            .is_none_or(|v| !v.trim().eq_ignore_ascii_case("no"));
        let is_deb = st
            .get("Types")
            .is_some_and(|t| t.split_whitespace().any(|t| t == "deb"));
        if !enabled || !is_deb {
            continue;
        }
        let suites: Vec<String> = st
            .get("Suites")
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let signed_by = st
            .get("Signed-By")
            .map(str::trim)
            .filter(|s| s.starts_with('/') && !s.contains('\n'))
            .map(PathBuf::from);
        for uri in st.get("URIs").unwrap_or("").split_whitespace() {
            out.push(HostSource {
                uri: uri.to_string(),
                suites: suites.clone(),
                signed_by: signed_by.clone(),
            });
        }
    }
    out
}

/// Berth's sources for a profile: `<suite>`, `<suite>-updates` and `<suite>-security`, from the
/// profile's mirrors or else the host's.
pub fn sources_for(debian: &Debian, host: &[HostSource]) -> Result<Vec<Source>> {
    let suite = &debian.suite;
    let find = |want: &str| -> Option<&HostSource> {
        host.iter().find(|h| h.suites.iter().any(|s| s == want))
    };
    // The main mirror: the host source carrying the suite, else any host source that is not a
    // security one (a host on another release still names a usable mirror).
    let host_main = find(suite).or_else(|| {
        host.iter()
            .find(|h| !h.suites.iter().any(|s| s.ends_with("-security")))
    });
    let keyring_for = |h: Option<&HostSource>| -> PathBuf {
        debian
            .keyring
            .clone()
            .or_else(|| h.and_then(|h| h.signed_by.clone()))
            .unwrap_or_else(|| PathBuf::from(DEBIAN_KEYRING))
    };
    let main_uri = match (&debian.mirror, host_main) {
        (Some(m), _) => m.clone(),
        (None, Some(h)) => h.uri.clone(),
        (None, None) => bail!(
            "no Debian mirror: the host's apt configuration ({HOST_SOURCES}, {HOST_SOURCES_D}/) has no `deb` source; set `debian.mirror` in the profile"
        ),
    };
    let keyring = keyring_for(host_main);
    if !keyring.is_file() {
        bail!(
            "apt keyring {} does not exist: install `debian-archive-keyring` or set `debian.keyring` in the profile",
            keyring.display()
        );
    }
    let mut out = vec![Source {
        uri: main_uri.clone(),
        suite: suite.clone(),
        components: debian.components.clone(),
        keyring: keyring.clone(),
    }];
    let updates = format!("{suite}-updates");
    if debian.mirror.is_some() || find(&updates).is_some() {
        out.push(Source {
            uri: main_uri,
            suite: updates,
            components: debian.components.clone(),
            keyring,
        });
    }
    let security = format!("{suite}-security");
    let host_sec = find(&security);
    let sec_uri = debian
        .security_mirror
        .clone()
        .or_else(|| host_sec.map(|h| h.uri.clone()));
    if let Some(uri) = sec_uri {
        out.push(Source {
            uri,
            suite: security,
            components: debian.components.clone(),
            keyring: keyring_for(host_sec),
        });
    }
    Ok(out)
}

/// berth's private apt: config, lists, archives, all under one directory of the cache. The
/// directory is keyed by the sources, so two profiles on different suites never share lists.
pub struct Apt {
    root: PathBuf,
    config: PathBuf,
}

impl Apt {
    pub fn new(cache_dir: &Path, sources: &[Source]) -> Result<Apt> {
        let list: String = sources.iter().map(|s| s.line() + "\n").collect();
        let key = hex::encode(&Sha256::digest(list.as_bytes())[..8]);
        let root = cache_dir.join("apt").join(key);
        for d in [
            "etc/apt.conf.d",
            "etc/sources.list.d",
            "etc/preferences.d",
            "etc/trusted.gpg.d",
            "state/lists/partial",
            "cache/archives/partial",
        ] {
            fs::create_dir_all(root.join(d))
                .with_context(|| format!("creating {}", root.join(d).display()))?;
        }
        fs::write(root.join("etc/sources.list"), &list)?;
        let status = root.join("state/status");
        if !status.exists() {
            fs::write(&status, "")?;
        }
        let r = root.display();
        // Every Dir:: apt would otherwise take from the host points into `root`; Parts dirs are
        // ours and empty, so the host's apt.conf.d (proxies excepted, see below) cannot change
        // what berth resolves.
        let mut conf = format!(
            r#"Dir "/";
Dir::State "{r}/state";
Dir::State::status "{r}/state/status";
Dir::Cache "{r}/cache";
Dir::Etc "{r}/etc";
Dir::Etc::main "{r}/etc/apt.conf";
Dir::Etc::Parts "{r}/etc/apt.conf.d";
Dir::Etc::sourcelist "{r}/etc/sources.list";
Dir::Etc::sourceparts "{r}/etc/sources.list.d";
Dir::Etc::preferences "{r}/etc/preferences";
Dir::Etc::preferencesparts "{r}/etc/preferences.d";
Dir::Etc::trusted "{r}/etc/trusted.gpg";
Dir::Etc::trustedparts "{r}/etc/trusted.gpg.d";
APT::Architecture "{ARCH}";
APT::Architectures {{ "{ARCH}"; }};
Acquire::Languages "none";
Acquire::GzipIndexes "false";
Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled "false";
Acquire::IndexTargets::deb::DEP-11::DefaultEnabled "false";
Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled "false";
Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled "false";
Acquire::IndexTargets::deb::CNF::DefaultEnabled "false";
Debug::NoLocking "true";
Binary::apt::APT::Keep-Downloaded-Packages "true";
"#
        );
        // The host's proxy settings are how this machine reaches its mirror at all: keep them.
        for line in host_proxy_config() {
            conf.push_str(&line);
            conf.push('\n');
        }
        let config = root.join("etc/apt.conf");
        fs::write(&config, conf)?;
        Ok(Apt { root, config })
    }

    fn apt_get(&self) -> Cmd {
        Cmd::new("apt-get")
            .env("APT_CONFIG", &self.config)
            .env("LC_ALL", "C")
            .arg("-q")
    }

    /// `apt-get update` into berth's own lists.
    pub fn update(&self) -> Result<()> {
        self.apt_get()
            .arg("update")
            .output()
            .context("apt-get update (berth's own apt state)")?;
        Ok(())
    }

    /// True once `update` has fetched at least one Packages index.
    pub fn has_lists(&self) -> bool {
        self.list_files().map(|l| !l.is_empty()).unwrap_or(false)
    }

    fn list_files(&self) -> Result<Vec<PathBuf>> {
        let dir = self.root.join("state/lists");
        let mut out: Vec<PathBuf> = fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with("_Packages"))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Parses every downloaded Packages index.
    pub fn index(&self) -> Result<PackageIndex> {
        let mut idx = PackageIndex::default();
        for f in self.list_files()? {
            let text =
                fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
            for st in parse_stanzas(&text) {
                if let Some(p) = IndexEntry::from_stanza(&st) {
                    idx.add(p);
                }
            }
        }
        if idx.by_name.is_empty() {
            bail!(
                "apt's package lists under {} are empty: did `apt-get update` reach the mirror?",
                self.root.display()
            );
        }
        Ok(idx)
    }

    /// Downloads exactly `name=version` into `dir` with `apt-get download` (apt checks the
    /// index's hashes); returns the file's path.
    pub fn download(&self, name: &str, version: &str, dir: &Path) -> Result<PathBuf> {
        self.apt_get()
            .arg("download")
            .arg(format!("{name}={version}"))
            .cwd(dir)
            .output()
            .with_context(|| format!("downloading package {name} version {version}"))?;
        let prefix = format!("{name}_");
        let found = fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
            });
        found.with_context(|| {
            format!(
                "apt-get download {name}={version} left no .deb in {}",
                dir.display()
            )
        })
    }
}

/// `Acquire::*::Proxy` lines from the host's apt configuration, if any.
fn host_proxy_config() -> Vec<String> {
    let Ok(dump) = Cmd::new("apt-config").arg("dump").stdout() else {
        return Vec::new();
    };
    dump.lines()
        .filter(|l| {
            let k = l.split_whitespace().next().unwrap_or("");
            k.starts_with("Acquire::") && k.to_ascii_lowercase().ends_with("::proxy")
        })
        .map(|l| format!("{};", l.trim_end_matches(';')))
        .collect()
}

/// One package version from a Packages index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub depends: Vec<String>,
    pub provides: Vec<String>,
    pub filename: String,
    pub sha256: String,
    pub size: u64,
}

impl IndexEntry {
    fn from_stanza(st: &ControlFields) -> Option<IndexEntry> {
        let deps = |k: &str| st.get(k).map(first_alternatives).unwrap_or_default();
        let mut depends = deps("Pre-Depends");
        depends.extend(deps("Depends"));
        Some(IndexEntry {
            name: st.get("Package")?.trim().to_string(),
            version: st.get("Version")?.trim().to_string(),
            arch: st.get("Architecture")?.trim().to_string(),
            depends,
            provides: st
                .get("Provides")
                .map(first_alternatives)
                .unwrap_or_default(),
            filename: st.get("Filename")?.trim().to_string(),
            sha256: st.get("SHA256")?.trim().to_string(),
            size: st.get("Size")?.trim().parse().ok()?,
        })
    }
}

/// From a dependency field, the package name of each relation's first alternative, without
/// version constraint, architecture qualifier or restriction list.
pub fn first_alternatives(field: &str) -> Vec<String> {
    field
        .split(',')
        .filter_map(|rel| {
            let first = rel.split('|').next()?.trim();
            let name = first
                .split(|c: char| c.is_whitespace() || c == '(' || c == '[' || c == '<')
                .next()?;
            let name = name.split(':').next()?.trim();
            (!name.is_empty()).then(|| name.to_string())
        })
        .collect()
}

#[derive(Default, Debug)]
pub struct PackageIndex {
    by_name: BTreeMap<String, Vec<IndexEntry>>,
    providers: BTreeMap<String, BTreeSet<String>>,
}

/// How a resolved package got into the closure (recorded in the lock for humans).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Kernel,
    Runtime,
    /// The boot loader: one file is taken from it, nothing it depends on is needed.
    Boot,
    /// Packages container images are made of.
    Image,
    /// The kernel source a `kernel.source` build unpacks: its dependencies (binutils, xz) are
    /// the build host's business, not the image's.
    KernelSource,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Kernel => "kernel",
            Role::Runtime => "runtime",
            Role::Boot => "boot",
            Role::Image => "image",
            Role::KernelSource => "kernel-source",
        }
    }

    /// Whether a package taken in this role brings its dependency `dep` along (see
    /// [`PackageIndex::resolve`]).
    pub fn follows(self, dep: &str) -> bool {
        match self {
            Role::Kernel => dep.starts_with("linux-image-"),
            Role::Boot | Role::KernelSource => false,
            Role::Runtime | Role::Image => !install_only(dep),
        }
    }
}

/// Packages that serve only the installation of other packages on a mutable Debian system:
/// their maintainer scripts create users (`adduser`), ask questions (`debconf`), register
/// services (`init-system-helpers`), merge /usr (`usrmerge`, `usr-is-merged`), run init-script
/// helpers (`lsb-base`) or manage configuration files (`ucf`), or they are dpkg itself. berth
/// runs no maintainer script and builds merged-/usr trees itself, so a dependency on one of
/// them is not followed. They are not small: etcd-server's image was 108 MB, 84 MB of it perl
/// and PAM reached through init-system-helpers -> usrmerge and adduser -> passwd, imported by
/// every node's first boot. A package a profile names itself is still taken.
pub fn install_only(dep: &str) -> bool {
    matches!(
        dep,
        "adduser"
            | "debconf"
            | "dpkg"
            | "init-system-helpers"
            | "lsb-base"
            | "ucf"
            | "usr-is-merged"
            | "usrmerge"
    )
}

impl PackageIndex {
    fn add(&mut self, e: IndexEntry) {
        if e.arch != ARCH && e.arch != "all" {
            return;
        }
        for p in &e.provides {
            self.providers
                .entry(p.clone())
                .or_default()
                .insert(e.name.clone());
        }
        self.by_name.entry(e.name.clone()).or_default().push(e);
    }

    /// The newest version of `name`, or of the first (sorted) package providing it.
    pub fn candidate(&self, name: &str) -> Option<&IndexEntry> {
        let pick = |n: &str| {
            self.by_name.get(n).and_then(|v| {
                v.iter()
                    .max_by(|a, b| debversion::compare(&a.version, &b.version))
            })
        };
        pick(name).or_else(|| self.providers.get(name)?.iter().find_map(|p| pick(p)))
    }

    /// Exactly `name` at `version`.
    pub fn exact(&self, name: &str, version: &str) -> Option<&IndexEntry> {
        self.by_name
            .get(name)?
            .iter()
            .find(|e| e.version == version)
    }

    /// The dependency closure of the roots. Runtime packages follow every `Pre-Depends`/`Depends`
    /// (first alternative) so every shared library their binaries need is there. The kernel is
    /// followed only through `linux-image-*` (metapackage -> versioned image): its other
    /// dependencies (kmod, initramfs-tools, linux-base) are tools for installing a kernel on a
    /// mutable system; berth builds the initramfs itself and the image never runs them.
    /// The boot loader package is taken alone. Image packages follow their dependencies like
    /// the runtime's.
    pub fn resolve(&self, roots: &[(Role, String, String)]) -> Result<Vec<(Role, IndexEntry)>> {
        let mut out: BTreeMap<String, (Role, IndexEntry)> = BTreeMap::new();
        let mut queue: VecDeque<(Role, String, String)> = roots.iter().cloned().collect();
        while let Some((role, name, why)) = queue.pop_front() {
            if out.contains_key(&name) {
                continue;
            }
            let Some(e) = self.candidate(&name) else {
                bail!(
                    "package {name:?} (needed by {why}) is not in the configured Debian suites for {ARCH}: check the name (`apt-cache policy {name}`) or the profile's `debian.suite`"
                );
            };
            if out.contains_key(&e.name) {
                continue;
            }
            for d in &e.depends {
                if !role.follows(d) {
                    continue;
                }
                queue.push_back((role, d.clone(), format!("{} {}", e.name, e.version)));
            }
            out.insert(e.name.clone(), (role, e.clone()));
        }
        Ok(out.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_alternatives_strips_constraints() {
        assert_eq!(
            first_alternatives("libc6 (>= 2.34), initramfs-tools (>= 0.120) | linux-initramfs-tool, perl:any, foo [amd64] <!nocheck>"),
            ["libc6", "initramfs-tools", "perl", "foo"]
        );
        assert!(first_alternatives("").is_empty());
    }

    #[test]
    fn host_sources_both_formats() {
        let one = parse_one_line_sources(
            "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://m/debian bookworm main\ndeb-src http://m/debian bookworm main\ndeb http://s/sec bookworm-security main\n",
        );
        assert_eq!(one.len(), 2);
        assert_eq!(one[0].signed_by.as_deref(), Some(Path::new("/k.gpg")));
        assert_eq!(one[1].suites, ["bookworm-security"]);
        let d = parse_deb822_sources(
            "Types: deb\nURIs: http://m/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nEnabled: no\nURIs: http://x\nSuites: sid\n",
        );
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].suites, ["bookworm", "bookworm-updates"]);
    }

    fn roots(kernel: &str, runtime: &[&str]) -> Vec<(Role, String, String)> {
        let mut r = vec![(
            Role::Kernel,
            kernel.to_string(),
            "the profile's kernel.package".to_string(),
        )];
        for p in runtime {
            r.push((
                Role::Runtime,
                p.to_string(),
                "the profile's runtime.packages".to_string(),
            ));
        }
        r
    }

    fn entry(name: &str, version: &str, depends: &[&str]) -> IndexEntry {
        IndexEntry {
            name: name.into(),
            version: version.into(),
            arch: ARCH.into(),
            depends: depends.iter().map(|s| s.to_string()).collect(),
            provides: vec![],
            filename: format!("pool/{name}.deb"),
            sha256: "0".repeat(64),
            size: 1,
        }
    }

    #[test]
    fn resolve_picks_newest_and_prunes_kernel_tooling() {
        let mut idx = PackageIndex::default();
        idx.add(entry(
            "linux-image-cloud-amd64",
            "6.1.1",
            &["linux-image-6.1-cloud"],
        ));
        idx.add(entry(
            "linux-image-6.1-cloud",
            "6.1.1",
            &["kmod", "initramfs-tools"],
        ));
        idx.add(entry("containerd", "1.6", &["runc", "libc6"]));
        idx.add(entry("runc", "1.1", &["libc6", "libseccomp2"]));
        idx.add(entry("libc6", "2.36-9+deb12u7", &["libgcc-s1"]));
        idx.add(entry("libc6", "2.36-9+deb12u14", &["libgcc-s1"]));
        idx.add(entry("libgcc-s1", "12", &[]));
        let mut seccomp = entry("libseccomp2", "2.5", &[]);
        seccomp.provides = vec!["libseccomp".into()];
        idx.add(seccomp);
        let got = idx
            .resolve(&roots("linux-image-cloud-amd64", &["containerd"]))
            .unwrap();
        let names: Vec<_> = got.iter().map(|(_, e)| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "containerd",
                "libc6",
                "libgcc-s1",
                "libseccomp2",
                "linux-image-6.1-cloud",
                "linux-image-cloud-amd64",
                "runc"
            ]
        );
        let libc = got.iter().find(|(_, e)| e.name == "libc6").unwrap();
        assert_eq!(libc.1.version, "2.36-9+deb12u14");
        assert_eq!(idx.candidate("libseccomp").unwrap().name, "libseccomp2");
    }

    #[test]
    fn install_only_dependencies_are_not_followed_unless_named() {
        let mut idx = PackageIndex::default();
        idx.add(entry("linux-image-cloud-amd64", "6.1.1", &[]));
        idx.add(entry(
            "etcd-server",
            "3.4",
            &["init-system-helpers", "adduser", "libc6"],
        ));
        idx.add(entry(
            "init-system-helpers",
            "1.65",
            &["usrmerge", "perl-base"],
        ));
        idx.add(entry("usrmerge", "37", &["perl"]));
        idx.add(entry("adduser", "3.134", &["passwd"]));
        idx.add(entry("passwd", "4.13", &["libpam0g"]));
        idx.add(entry("libpam0g", "1.5", &[]));
        idx.add(entry("libc6", "2.36", &[]));
        let names = |runtime: &[&str]| -> Vec<String> {
            idx.resolve(&roots("linux-image-cloud-amd64", runtime))
                .unwrap()
                .into_iter()
                .map(|(_, e)| e.name)
                .collect()
        };
        assert_eq!(
            names(&["etcd-server"]),
            ["etcd-server", "libc6", "linux-image-cloud-amd64"]
        );
        // Named by the profile, it is taken (with what it needs that is not install-only).
        assert_eq!(
            names(&["etcd-server", "adduser"]),
            [
                "adduser",
                "etcd-server",
                "libc6",
                "libpam0g",
                "linux-image-cloud-amd64",
                "passwd"
            ]
        );
    }

    #[test]
    fn resolve_names_the_missing_package_and_who_wanted_it() {
        let mut idx = PackageIndex::default();
        idx.add(entry("k", "1", &[]));
        idx.add(entry("containerd", "1.6", &["nosuchlib"]));
        let e = idx
            .resolve(&roots("k", &["containerd"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"nosuchlib\"") && e.contains("containerd 1.6"),
            "{e}"
        );
        let e = idx
            .resolve(&roots("k", &["cointainerd"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"cointainerd\"") && e.contains("runtime.packages"),
            "{e}"
        );
    }
}
