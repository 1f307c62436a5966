//! Assembling the root filesystem manifest: the stage between fetched packages and the ext4 image.
//!
//! Packages are read into a *sysroot* manifest (every file they ship, never written anywhere);
//! the image takes from it only the kernel's modules, the runtime's executables and their ELF
//! shared-library closure (with the dynamic loader). Then come berth-init, the skeleton,
//! generated files, overlays and the profile's `[[files]]`, in that order, each able to replace
//! what came before. Last, every timestamp is set to SOURCE_DATE_EPOCH.
//!
//! The image is merged-/usr: `/bin`, `/sbin`, `/lib`, `/lib64` are symlinks into `/usr`, and
//! package paths are moved there as they are read, as Debian's usrmerge does.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde::Serialize;

pub use crate::fetch::PackageData;
use crate::fsimage::manifest::{Entry, ImagePath, Kind, Manifest};
use crate::profile::{FileSource, Profile};
use crate::root::elf;

/// Directories every image has, with their modes. `/var` is where the state partition is
/// mounted; `/proc`, `/sys`, `/dev`, `/run`, `/tmp` are mount points for API filesystems.
const SKELETON_DIRS: &[(&str, u16)] = &[
    ("/dev", 0o755),
    ("/etc", 0o755),
    ("/home", 0o755),
    ("/mnt", 0o755),
    ("/proc", 0o555),
    ("/root", 0o700),
    ("/run", 0o755),
    ("/sys", 0o555),
    ("/tmp", 0o1777),
    ("/usr/bin", 0o755),
    ("/usr/lib", 0o755),
    ("/usr/lib64", 0o755),
    ("/usr/sbin", 0o755),
    ("/var", 0o755),
];

/// merged-/usr: top-level names that are symlinks into /usr.
const USRMERGE: &[&str] = &["bin", "lib", "lib64", "sbin"];

/// Skeleton files from `rootfs/base/`, compiled in so the binary works from any directory.
const BASE_FILES: &[(&str, &[u8])] = &[
    (
        "/etc/containerd/config.toml",
        include_bytes!("../../../rootfs/base/etc/containerd/config.toml"),
    ),
    (
        "/etc/group",
        include_bytes!("../../../rootfs/base/etc/group"),
    ),
    (
        "/etc/hosts",
        include_bytes!("../../../rootfs/base/etc/hosts"),
    ),
    (
        "/etc/nsswitch.conf",
        include_bytes!("../../../rootfs/base/etc/nsswitch.conf"),
    ),
    (
        "/etc/passwd",
        include_bytes!("../../../rootfs/base/etc/passwd"),
    ),
];

/// Where the dynamic loader looks when a binary has no RUNPATH (Debian multiarch + fallbacks).
const LIB_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/lib/x86_64-linux-gnu",
    "/lib64",
    "/lib",
];

/// Where berth-init lives in the image; `/usr/sbin/init` and `berthctl` point at it.
pub const INIT_PATH: &str = "/usr/sbin/berth-init";

/// The kernel found in the kernel package.
#[derive(Clone, Debug, Serialize)]
pub struct KernelInfo {
    pub version: String,
    /// The kernel image. It goes to the ESP (and into update bundles), not into the root:
    /// nothing on the machine reads a kernel from its root, and a second copy would cost the
    /// root its size (14 MiB for Debian's cloud kernel).
    #[serde(skip)]
    pub vmlinuz: Arc<Vec<u8>>,
    pub modules: usize,
}

/// The assembled root: the manifest plus what was learned while building it.
pub struct RootfsManifest {
    pub manifest: Manifest,
    pub kernel: KernelInfo,
    /// Executables and libraries taken from packages, with the package each came from.
    pub selected: BTreeMap<ImagePath, String>,
}

/// Moves `/lib/...` to `/usr/lib/...` and so on.
pub fn usrmerge(p: &ImagePath) -> ImagePath {
    let s = p.as_str();
    for top in USRMERGE {
        let prefix = format!("/{top}");
        if s == prefix || s.starts_with(&format!("{prefix}/")) {
            if let Ok(q) = ImagePath::new(&format!("/usr{s}")) {
                return q;
            }
        }
    }
    p.clone()
}

fn usrmerge_links(m: &mut Manifest, mtime: i64) -> Result<()> {
    for top in USRMERGE {
        m.insert(
            ImagePath::new(&format!("/usr/{top}"))?,
            Entry::dir(0o755, mtime),
        )?;
        m.insert(
            ImagePath::new(top)?,
            Entry::symlink(format!("usr/{top}"), mtime),
        )?;
    }
    Ok(())
}

/// Everything the packages ship, merged (packages in name order, later wins on conflicts), with
/// the package each path came from.
pub fn sysroot(packages: &[PackageData]) -> Result<(Manifest, BTreeMap<ImagePath, String>)> {
    let mut m = Manifest::new(0);
    usrmerge_links(&mut m, 0)?;
    let mut owner = BTreeMap::new();
    let mut sorted: Vec<&PackageData> = packages.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for pkg in sorted {
        for (path, entry) in &pkg.entries {
            let path = usrmerge(path);
            if path.is_root() || (entry.kind == Kind::Dir && m.contains(&path)) {
                continue;
            }
            let mut entry = entry.clone();
            if let Kind::Hardlink(t) = &entry.kind {
                entry.kind = Kind::Hardlink(usrmerge(t));
            }
            m.insert(path.clone(), entry)
                .with_context(|| format!("package {} {}: placing {path}", pkg.name, pkg.version))?;
            owner.insert(path, pkg.name.clone());
        }
    }
    Ok((m, owner))
}

/// Follows `path` through symlinks in `sys`, returning every hop (symlinks, then the file) with
/// its canonical path, so the image gets the same names (`libfoo.so.1 -> libfoo.so.1.2.3`).
fn chain(sys: &Manifest, path: &ImagePath) -> Option<Vec<(ImagePath, Entry)>> {
    let mut hops = Vec::new();
    let mut cur = usrmerge(path);
    for _ in 0..40 {
        let parent = sys.resolve(&cur.parent()?)?;
        let here = usrmerge(&parent.join(cur.file_name()).ok()?);
        let entry = sys.get(&here)?.clone();
        match &entry.kind {
            Kind::Symlink(t) => {
                let next = if t.starts_with('/') {
                    t.clone()
                } else {
                    format!("{parent}/{t}")
                };
                hops.push((here, entry.clone()));
                cur = usrmerge(&crate::fsimage::manifest::normalize_dotdot(&next)?);
            }
            Kind::Hardlink(t) => {
                let data = match sys.get(t).map(|e| &e.kind) {
                    Some(Kind::File(d)) => d.clone(),
                    _ => return None,
                };
                hops.push((
                    here,
                    Entry {
                        kind: Kind::File(data),
                        ..entry
                    },
                ));
                return Some(hops);
            }
            _ => {
                hops.push((here, entry));
                return Some(hops);
            }
        }
    }
    None
}

/// Copies `bin` and, recursively, its interpreter and DT_NEEDED libraries from `sys` into `img`.
fn add_with_closure(
    sys: &Manifest,
    owners: &BTreeMap<ImagePath, String>,
    img: &mut Manifest,
    selected: &mut BTreeMap<ImagePath, String>,
    bin: &ImagePath,
    packages: &str,
) -> Result<()> {
    let mut todo = vec![(bin.clone(), "the profile's runtime.binaries".to_string())];
    let mut seen = BTreeSet::new();
    while let Some((path, why)) = todo.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let hops = chain(sys, &path).with_context(|| {
            format!("{path} (needed by {why}) is not shipped by any fetched package ({packages})")
        })?;
        let Some((real, last)) = hops.last().cloned() else {
            continue;
        };
        for (p, e) in hops {
            selected.insert(p.clone(), owners.get(&p).cloned().unwrap_or_default());
            img.insert(p, e)?;
        }
        let Kind::File(data) = &last.kind else {
            continue;
        };
        if !elf::is_elf(data) {
            continue;
        }
        let deps = elf::deps(data).with_context(|| format!("reading ELF {real}"))?;
        if let Some(interp) = deps.interp {
            todo.push((ImagePath::new(&interp)?, format!("{real} (PT_INTERP)")));
        }
        let origin = real.parent().unwrap_or_else(ImagePath::root);
        for lib in deps.needed {
            let dirs = deps
                .runpath
                .iter()
                .map(|d| {
                    d.replace("$ORIGIN", origin.as_str())
                        .replace("${ORIGIN}", origin.as_str())
                })
                .chain(LIB_DIRS.iter().map(|s| s.to_string()));
            let found = dirs
                .filter_map(|d| ImagePath::new(&format!("{d}/{lib}")).ok())
                .find(|p| chain(sys, p).is_some());
            match found {
                Some(p) => todo.push((p, real.to_string())),
                None => bail!(
                    "{real} needs shared library {lib} (DT_NEEDED), which no fetched package ({packages}) ships: add the package that does to runtime.packages"
                ),
            }
        }
    }
    Ok(())
}

/// `*` matches any run of characters (including `/`); everything else literally.
pub fn glob_match(pat: &str, s: &str) -> bool {
    let (p, s) = (pat.as_bytes(), s.as_bytes());
    let (mut pi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            pi += 1;
            mark = si;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

/// Takes the kernel and its modules (filtered by the profile) from the kernel package's data.
fn add_kernel(profile: &Profile, kernel: &PackageData, img: &mut Manifest) -> Result<KernelInfo> {
    let mut vmlinuz = None;
    for (p, e) in &kernel.entries {
        if let Some(v) = p.as_str().strip_prefix("/boot/vmlinuz-") {
            if let Kind::File(d) = &e.kind {
                vmlinuz = Some((v.to_string(), d.clone()));
            }
        }
    }
    let Some((version, data)) = vmlinuz else {
        bail!(
            "kernel package {} {} ships no /boot/vmlinuz-*: is kernel.package a kernel image package?",
            kernel.name,
            kernel.version
        );
    };
    let moddir = ImagePath::new(&format!("/usr/lib/modules/{version}"))?;
    let prefix = format!("{moddir}/");
    let mut modules = 0;
    let mut matched = vec![false; profile.kernel.modules.as_ref().map_or(0, Vec::len)];
    for (p, e) in &kernel.entries {
        let p = usrmerge(p);
        let Some(rel) = p.as_str().strip_prefix(&prefix) else {
            continue;
        };
        let is_module = rel.ends_with(".ko") || rel.ends_with(".ko.xz") || rel.ends_with(".ko.zst");
        if is_module {
            if let Some(pats) = &profile.kernel.modules {
                let hits: Vec<usize> = pats
                    .iter()
                    .enumerate()
                    .filter(|(_, pat)| glob_match(pat, rel))
                    .map(|(i, _)| i)
                    .collect();
                if hits.is_empty() {
                    continue;
                }
                for i in hits {
                    matched[i] = true;
                }
            }
            modules += 1;
        }
        if e.kind == Kind::Dir {
            continue; // created as needed, so filtered-out subtrees leave no empty dirs
        }
        img.insert(p, e.clone())?;
    }
    if let Some(pats) = &profile.kernel.modules {
        if let Some(i) = matched.iter().position(|m| !m) {
            bail!(
                "{}: key `kernel.modules`: pattern {:?} matches no module of kernel {version} (patterns are relative to /lib/modules/{version}/, e.g. \"kernel/drivers/block/virtio_blk.ko\" or \"kernel/fs/*\")",
                profile.path.display(),
                pats[i]
            );
        }
    }
    Ok(KernelInfo {
        version,
        vmlinuz: data,
        modules,
    })
}

fn os_release(profile: &Profile) -> String {
    let i = &profile.image;
    format!(
        "NAME=\"berth\"\nID=berth\nPRETTY_NAME=\"{name} {version}\"\nIMAGE_ID={name}\nIMAGE_VERSION={version}\nVERSION_ID={version}\nBERTH_DEBIAN_SUITE={suite}\nHOME_URL=\"\"\n",
        name = i.name,
        version = i.version,
        suite = profile.debian.suite
    )
}

/// Adds a host directory tree. Modes are normalised (0755 for directories and files with any
/// execute bit, 0644 otherwise) because a git checkout only keeps the execute bit; owners are
/// root. Other attributes come from the profile's `[[files]]`.
fn add_overlay(dir: &Path, name: &str, img: &mut Manifest) -> Result<usize> {
    let mut count = 0;
    let mut stack = vec![(dir.to_path_buf(), ImagePath::root())];
    while let Some((host, image)) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(&host)
            .with_context(|| format!("overlay {name}: reading {}", host.display()))?
            .collect::<std::io::Result<Vec<_>>>()
            .with_context(|| format!("overlay {name}: reading {}", host.display()))?;
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let fname = e.file_name();
            let Some(fname) = fname.to_str() else {
                bail!(
                    "overlay {name}: {} has a name that is not UTF-8",
                    e.path().display()
                );
            };
            let ip = image.join(fname)?;
            let meta = fs::symlink_metadata(e.path())
                .with_context(|| format!("overlay {name}: {}", e.path().display()))?;
            let ft = meta.file_type();
            use std::os::unix::fs::PermissionsExt;
            let exec = meta.permissions().mode() & 0o111 != 0;
            if ft.is_dir() {
                img.insert(ip.clone(), Entry::dir(0o755, 0))?;
                stack.push((e.path(), ip));
            } else if ft.is_symlink() {
                let t = fs::read_link(e.path())?;
                img.insert(ip, Entry::symlink(t.to_string_lossy().into_owned(), 0))?;
            } else if ft.is_file() {
                let data = fs::read(e.path())
                    .with_context(|| format!("overlay {name}: reading {}", e.path().display()))?;
                img.insert(ip, Entry::file(data, if exec { 0o755 } else { 0o644 }, 0))?;
            } else {
                bail!(
                    "overlay {name}: {} is a special file; create devices, fifos and sockets at boot instead",
                    e.path().display()
                );
            }
            count += 1;
        }
    }
    Ok(count)
}

fn apply_files(profile: &Profile, img: &mut Manifest) -> Result<()> {
    for f in &profile.files {
        let mode = f.mode;
        let entry = match &f.what {
            FileSource::Source(src) => {
                let data = fs::read(src)
                    .with_context(|| format!("[[files]] {}: reading {}", f.path, src.display()))?;
                Some(Entry::file(data, mode.unwrap_or(0o644), 0))
            }
            FileSource::Content(c) => {
                Some(Entry::file(c.as_bytes().to_vec(), mode.unwrap_or(0o644), 0))
            }
            FileSource::Symlink(t) => Some(Entry::symlink(t.clone(), 0)),
            FileSource::Dir => Some(Entry::dir(mode.unwrap_or(0o755), 0)),
            FileSource::Attrs => None,
        };
        if let Some(e) = entry {
            img.insert(f.path.clone(), e)
                .with_context(|| format!("[[files]] {}", f.path))?;
        }
        let Some(e) = img.get_mut(&f.path) else {
            bail!(
                "{}: [[files]] entry for {} changes mode/owner, but nothing in the image has that path",
                profile.path.display(),
                f.path
            );
        };
        if let Some(m) = mode {
            e.mode = m;
        }
        if let Some(u) = f.uid {
            e.uid = u;
        }
        if let Some(g) = f.gid {
            e.gid = g;
        }
    }
    Ok(())
}

/// The stage: packages + init + profile -> the root filesystem manifest.
pub fn assemble(
    profile: &Profile,
    kernel: &PackageData,
    runtime: &[PackageData],
    init: &[u8],
) -> Result<RootfsManifest> {
    let sde = profile.image.source_date_epoch;
    let mut img = Manifest::new(sde);
    usrmerge_links(&mut img, sde)?;
    for (d, mode) in SKELETON_DIRS {
        img.insert(ImagePath::new(d)?, Entry::dir(*mode, sde))?;
    }

    let kernel_info = add_kernel(profile, kernel, &mut img)?;

    let (sys, owners) = sysroot(runtime)?;
    let names: Vec<String> = runtime.iter().map(|p| p.name.clone()).collect();
    let names = names.join(", ");
    let mut selected = BTreeMap::new();
    for bin in &profile.runtime.binaries {
        add_with_closure(&sys, &owners, &mut img, &mut selected, bin, &names)?;
    }

    if !elf::is_elf(init) {
        bail!("the init program is not an ELF executable");
    }
    img.insert(
        ImagePath::new(INIT_PATH)?,
        Entry::file(init.to_vec(), 0o755, sde),
    )?;
    img.insert(
        ImagePath::new("/usr/sbin/init")?,
        Entry::symlink("berth-init", sde),
    )?;
    img.insert(
        ImagePath::new("/usr/bin/berthctl")?,
        Entry::symlink("../sbin/berth-init", sde),
    )?;

    for (p, data) in BASE_FILES {
        img.insert(ImagePath::new(p)?, Entry::file(data.to_vec(), 0o644, sde))?;
    }
    img.insert(
        ImagePath::new("/etc/os-release")?,
        Entry::file(os_release(profile), 0o644, sde),
    )?;
    img.insert(
        ImagePath::new("/etc/hostname")?,
        Entry::file(format!("{}\n", profile.image.hostname), 0o644, sde),
    )?;
    // Written at boot (DHCP or provisioning) onto the writable /run.
    img.insert(
        ImagePath::new("/etc/resolv.conf")?,
        Entry::symlink("../run/resolv.conf", sde),
    )?;
    // Empty: berth-init derives the machine id on first boot and keeps it on the state partition.
    img.insert(
        ImagePath::new("/etc/machine-id")?,
        Entry::file(Vec::new(), 0o444, sde),
    )?;

    for o in &profile.overlays {
        add_overlay(&o.path, &o.name, &mut img)?;
    }
    apply_files(profile, &mut img)?;

    // One clock for the whole image, whatever the packages, the host or git said.
    for (_, e) in img.iter_mut() {
        e.mtime = sde;
    }
    img.validate()?;
    Ok(RootfsManifest {
        manifest: img,
        kernel: kernel_info,
        selected,
    })
}

/// Shared data of every regular file, for writers and hashing (keeps `Arc` clones cheap).
pub fn file_data(e: &Entry) -> Option<&Arc<Vec<u8>>> {
    match &e.kind {
        Kind::File(d) => Some(d),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ImagePath {
        ImagePath::new(s).unwrap()
    }

    #[test]
    fn usrmerge_moves_top_level_dirs_only() {
        assert_eq!(
            usrmerge(&p("/lib/x86_64-linux-gnu/libc.so.6")).as_str(),
            "/usr/lib/x86_64-linux-gnu/libc.so.6"
        );
        assert_eq!(usrmerge(&p("/lib64")).as_str(), "/usr/lib64");
        assert_eq!(usrmerge(&p("/library")).as_str(), "/library");
        assert_eq!(usrmerge(&p("/etc/lib")).as_str(), "/etc/lib");
    }

    #[test]
    fn globs() {
        assert!(glob_match(
            "kernel/drivers/block/virtio_blk.ko",
            "kernel/drivers/block/virtio_blk.ko"
        ));
        assert!(glob_match("kernel/fs/*", "kernel/fs/overlayfs/overlay.ko"));
        assert!(glob_match("*virtio*", "kernel/drivers/net/virtio_net.ko"));
        assert!(!glob_match("kernel/fs/*", "kernel/net/x.ko"));
        assert!(!glob_match("a*b", "acbd"));
    }

    #[test]
    fn chain_follows_absolute_and_relative_links_through_usrmerge() {
        let pkg = PackageData {
            name: "libc6".into(),
            version: "1".into(),
            entries: vec![
                (
                    p("/lib64/ld-linux-x86-64.so.2"),
                    Entry::symlink("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", 0),
                ),
                (
                    p("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
                    Entry::file(b"ld".to_vec(), 0o755, 0),
                ),
                (
                    p("/usr/lib/x86_64-linux-gnu/libz.so.1"),
                    Entry::symlink("libz.so.1.2.13", 0),
                ),
                (
                    p("/usr/lib/x86_64-linux-gnu/libz.so.1.2.13"),
                    Entry::file(b"z".to_vec(), 0o644, 0),
                ),
            ],
            ..Default::default()
        };
        let (sys, owners) = sysroot(&[pkg]).unwrap();
        let hops = chain(&sys, &p("/lib64/ld-linux-x86-64.so.2")).unwrap();
        let paths: Vec<_> = hops.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/usr/lib64/ld-linux-x86-64.so.2",
                "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
            ]
        );
        let hops = chain(&sys, &p("/lib/x86_64-linux-gnu/libz.so.1")).unwrap();
        assert_eq!(hops.len(), 2);
        assert_eq!(
            owners
                .get(&p("/usr/lib/x86_64-linux-gnu/libz.so.1.2.13"))
                .unwrap(),
            "libc6"
        );
        assert!(chain(&sys, &p("/usr/lib/nothing")).is_none());
    }

    #[test]
    fn closure_of_a_real_binary_pulls_libc_and_the_loader() {
        // Use the host's own /bin/true and libc as a "package": the ELF walk must find the loader
        // and libc.so.6 through the usrmerge links, and report a missing library by name.
        let read = |h: &str| std::fs::read(h).unwrap();
        let libc_dir = "/lib/x86_64-linux-gnu";
        let pkg = PackageData {
            name: "host".into(),
            version: "0".into(),
            entries: vec![
                (
                    p("/usr/bin/true"),
                    Entry::file(read("/usr/bin/true"), 0o755, 0),
                ),
                (
                    p(&format!("{libc_dir}/libc.so.6")),
                    Entry::file(read(&format!("{libc_dir}/libc.so.6")), 0o755, 0),
                ),
                (
                    p("/lib64/ld-linux-x86-64.so.2"),
                    Entry::symlink(format!("{libc_dir}/ld-linux-x86-64.so.2"), 0),
                ),
                (
                    p(&format!("{libc_dir}/ld-linux-x86-64.so.2")),
                    Entry::file(read(&format!("{libc_dir}/ld-linux-x86-64.so.2")), 0o755, 0),
                ),
            ],
            ..Default::default()
        };
        let (sys, owners) = sysroot(&[pkg]).unwrap();
        let mut img = Manifest::new(0);
        let mut sel = BTreeMap::new();
        add_with_closure(
            &sys,
            &owners,
            &mut img,
            &mut sel,
            &p("/usr/bin/true"),
            "host",
        )
        .unwrap();
        assert!(img.contains(&p("/usr/lib/x86_64-linux-gnu/libc.so.6")));
        assert!(img.contains(&p("/usr/lib64/ld-linux-x86-64.so.2")));
        assert!(img.contains(&p("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")));

        // Without libc, the error names the binary and the library.
        let pkg = PackageData {
            name: "host".into(),
            version: "0".into(),
            entries: vec![(
                p("/usr/bin/true"),
                Entry::file(read("/usr/bin/true"), 0o755, 0),
            )],
            ..Default::default()
        };
        let (sys, owners) = sysroot(&[pkg]).unwrap();
        let e = add_with_closure(
            &sys,
            &owners,
            &mut Manifest::new(0),
            &mut sel,
            &p("/usr/bin/true"),
            "host",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("/usr/bin/true") && (e.contains("libc.so.6") || e.contains("ld-linux")),
            "{e}"
        );
    }
}
