//! The lock file: exact package versions and SHA-256, so the same profile builds the same bytes.
//!
//! `profiles/qemu.toml` is locked by `profiles/qemu.lock`. A build without a lock resolves one
//! and writes it; a build with a lock uses exactly what it says and fails if the profile asks for
//! packages the lock does not cover, or a package's bytes do not match its hash.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::fetch::apt::{IndexEntry, PackageIndex, Role, ARCH};
use crate::profile::{ImageSource, Profile};

pub const LOCK_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Lock {
    pub lock_version: u32,
    pub suite: String,
    pub architecture: String,
    /// What the profile asked for when the lock was made (kernel package first).
    pub roots: Vec<String>,
    #[serde(rename = "package")]
    pub packages: Vec<LockedPackage>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LockedPackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// "kernel", "kernel-source", "runtime", "boot" or "image".
    pub role: String,
    pub sha256: String,
    pub size: u64,
    /// Path of the .deb in the archive (for humans; downloads go by name=version).
    pub filename: String,
}

/// Where the lock of `profile` lives: next to it, `.toml` replaced by `.lock`.
pub fn path_for(profile: &Path) -> PathBuf {
    profile.with_extension("lock")
}

/// What the profile asks for, with the role and the key that asked (for error messages).
pub(crate) fn root_requests(p: &Profile) -> Vec<(Role, String, String)> {
    let mut r = vec![match &p.kernel.source {
        Some(s) => (
            Role::KernelSource,
            s.package.clone(),
            "the profile's kernel.source".to_string(),
        ),
        None => (
            Role::Kernel,
            p.kernel.package.clone(),
            "the profile's kernel.package".to_string(),
        ),
    }];
    for pkg in &p.runtime.packages {
        r.push((
            Role::Runtime,
            pkg.clone(),
            "the profile's runtime.packages".to_string(),
        ));
    }
    r.push((
        Role::Boot,
        p.boot.package.clone(),
        "the profile's boot.package".to_string(),
    ));
    for c in &p.containers {
        if let ImageSource::Packages(pkgs) = &c.source {
            for pkg in pkgs {
                r.push((
                    Role::Image,
                    pkg.clone(),
                    format!("the profile's [[containers]] {:?}", c.name),
                ));
            }
        }
    }
    if let Some(a) = &p.admin {
        for pkg in a.all_packages() {
            r.push((
                Role::Image,
                pkg,
                "the admin container ([admin])".to_string(),
            ));
        }
    }
    r
}

fn roots_of(p: &Profile) -> Vec<String> {
    let mut seen = Vec::new();
    for (_, name, _) in root_requests(p) {
        if !seen.contains(&name) {
            seen.push(name);
        }
    }
    seen
}

impl Lock {
    /// Resolves the profile's packages against an index.
    pub fn resolve(profile: &Profile, index: &PackageIndex) -> Result<Lock> {
        let resolved = index.resolve(&root_requests(profile))?;
        let packages = resolved
            .into_iter()
            .map(|(role, e): (Role, IndexEntry)| LockedPackage {
                name: e.name,
                version: e.version,
                architecture: e.arch,
                role: role.name().to_string(),
                sha256: e.sha256.to_ascii_lowercase(),
                size: e.size,
                filename: e.filename,
            })
            .collect();
        Ok(Lock {
            lock_version: LOCK_VERSION,
            suite: profile.debian.suite.clone(),
            architecture: ARCH.to_string(),
            roots: roots_of(profile),
            packages,
        })
    }

    pub fn read(path: &Path) -> Result<Lock> {
        let text = crate::profile::read_utf8(path, "lock file")?;
        let lock: Lock = toml::from_str(&text).map_err(|e| {
            crate::profile::toml_error(path, &text, &e)
                .context("the lock file is damaged: fix it or delete it and run `berth lock`")
        })?;
        if lock.lock_version != LOCK_VERSION {
            bail!(
                "{}: lock-version {} is not {LOCK_VERSION}: run `berth lock` to re-create it",
                path.display(),
                lock.lock_version
            );
        }
        for p in &lock.packages {
            if p.sha256.len() != 64 || !p.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!(
                    "{}: package {}: sha256 {:?} is not 64 hex digits",
                    path.display(),
                    p.name,
                    p.sha256
                );
            }
        }
        Ok(lock)
    }

    /// Writes atomically (temp file + rename), so an interrupted `berth lock` leaves the old one.
    pub fn write(&self, path: &Path) -> Result<()> {
        let body = toml::to_string_pretty(self).context("serialising the lock")?;
        let text = format!(
            "# berth lock file: exact packages for {}. Generated by `berth lock`; commit it.\n\n{body}",
            path.with_extension("toml").file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
        );
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        std::io::Write::write_all(&mut tmp, text.as_bytes())?;
        crate::util::output::persist(tmp, path)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Checks that this lock was made for what the profile asks now.
    pub fn check_covers(&self, profile: &Profile, lock_path: &Path) -> Result<()> {
        if self.suite != profile.debian.suite {
            bail!(
                "{}: locked for suite {:?} but the profile asks for {:?}: run `berth lock {}`",
                lock_path.display(),
                self.suite,
                profile.debian.suite,
                profile.path.display()
            );
        }
        let roots = roots_of(profile);
        if self.roots != roots {
            bail!(
                "{}: locked for packages {:?} but the profile asks for {:?}: run `berth lock {}` to update it",
                lock_path.display(),
                self.roots,
                roots,
                profile.path.display()
            );
        }
        Ok(())
    }

    /// Packages of the lock that nothing the profile asks for needs: not a root, and not
    /// reached from one through the `Depends` of the packages as read (`packages`), with the
    /// rules `berth lock` resolves by ([`Role::follows`]). A lock edited by hand, or one left
    /// over from an older profile, would otherwise have them downloaded and listed.
    pub fn unused(&self, profile: &Profile, packages: &[crate::fetch::PackageData]) -> Vec<String> {
        use std::collections::{BTreeMap, BTreeSet, VecDeque};
        let by_name: BTreeMap<&str, &crate::fetch::PackageData> =
            packages.iter().map(|p| (p.name.as_str(), p)).collect();
        let mut providers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for p in packages {
            for v in &p.provides {
                providers
                    .entry(v.as_str())
                    .or_default()
                    .push(p.name.as_str());
            }
        }
        let locked: BTreeSet<&str> = self.packages.iter().map(|p| p.name.as_str()).collect();
        let mut reached: BTreeSet<String> = BTreeSet::new();
        let mut queue: VecDeque<(Role, String)> = root_requests(profile)
            .into_iter()
            .map(|(role, name, _)| (role, name))
            .collect();
        let mut seen = BTreeSet::new();
        while let Some((role, name)) = queue.pop_front() {
            if !seen.insert((role.name(), name.clone())) {
                continue;
            }
            let real: Vec<&str> = if locked.contains(name.as_str()) {
                vec![name.as_str()]
            } else {
                providers.get(name.as_str()).cloned().unwrap_or_default()
            };
            for r in real {
                reached.insert(r.to_string());
                if let Some(p) = by_name.get(r) {
                    for d in p.depends.iter().filter(|d| role.follows(d)) {
                        queue.push_back((role, d.clone()));
                    }
                }
            }
        }
        self.packages
            .iter()
            .filter(|p| !reached.contains(&p.name))
            .map(|p| format!("{} {}", p.name, p.version))
            .collect()
    }

    pub fn kernel_packages(&self) -> impl Iterator<Item = &LockedPackage> {
        self.packages.iter().filter(|p| p.role == "kernel")
    }

    pub fn runtime_packages(&self) -> impl Iterator<Item = &LockedPackage> {
        self.packages.iter().filter(|p| p.role == "runtime")
    }

    pub fn with_role<'a>(&'a self, role: &'a str) -> impl Iterator<Item = &'a LockedPackage> + 'a {
        self.packages.iter().filter(move |p| p.role == role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Lock {
        Lock {
            lock_version: LOCK_VERSION,
            suite: "bookworm".into(),
            architecture: "amd64".into(),
            roots: vec!["k".into(), "containerd".into()],
            packages: vec![LockedPackage {
                name: "containerd".into(),
                version: "1.6.20~ds1-1+deb12u3".into(),
                architecture: "amd64".into(),
                role: "runtime".into(),
                sha256: "ab".repeat(32),
                size: 10,
                filename: "pool/main/c/containerd/containerd.deb".into(),
            }],
        }
    }

    /// Regression (BAD-10): a package in the lock that nothing needs is found, while what the
    /// roots reach (by name, through `Provides`, through the kernel metapackage, and the boot
    /// loader taken alone) is not.
    #[test]
    fn unused_packages_in_a_lock_are_found() {
        let d = tempfile::tempdir().unwrap();
        let prof = d.path().join("p.toml");
        std::fs::write(
            &prof,
            "schema = 1\n[image]\nname = \"t\"\nversion = \"1\"\nsource-date-epoch = 1\n\
             [kernel]\npackage = \"linux-image-cloud-amd64\"\n\
             [runtime]\npackages = [\"containerd\"]\nbinaries = [\"/usr/bin/containerd\"]\n",
        )
        .unwrap();
        let profile = crate::profile::load(&prof).unwrap();
        let locked = |name: &str, role: &str| LockedPackage {
            name: name.into(),
            version: "1".into(),
            role: role.into(),
            ..sample().packages[0].clone()
        };
        let data = |name: &str, depends: &[&str], provides: &[&str]| crate::fetch::PackageData {
            name: name.into(),
            version: "1".into(),
            depends: depends.iter().map(|s| s.to_string()).collect(),
            provides: provides.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let mut lock = sample();
        lock.packages = vec![
            locked("linux-image-cloud-amd64", "kernel"),
            locked("linux-image-6.1.0-1-cloud-amd64", "kernel"),
            locked("containerd", "runtime"),
            locked("libc6", "runtime"),
            locked("mawk", "runtime"),
            locked("systemd-boot-efi", "boot"),
            locked("stray", "runtime"),
        ];
        let packages = vec![
            data(
                "linux-image-cloud-amd64",
                &["linux-image-6.1.0-1-cloud-amd64"],
                &[],
            ),
            data(
                "linux-image-6.1.0-1-cloud-amd64",
                &["kmod", "initramfs-tools"],
                &[],
            ),
            data("containerd", &["libc6", "awk"], &[]),
            data("libc6", &[], &[]),
            data("mawk", &[], &["awk"]),
            data("systemd-boot-efi", &["libc6"], &[]),
            data("stray", &["libc6"], &[]),
        ];
        assert_eq!(lock.unused(&profile, &packages), ["stray 1"]);
        lock.packages.retain(|p| p.name != "stray");
        assert!(lock.unused(&profile, &packages).is_empty());
    }

    #[test]
    fn round_trips_and_is_stable_text() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.lock");
        sample().write(&p).unwrap();
        let a = std::fs::read(&p).unwrap();
        assert_eq!(Lock::read(&p).unwrap(), sample());
        sample().write(&p).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), a);
    }

    #[test]
    fn damaged_hash_is_an_error_naming_the_package() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.lock");
        sample().write(&p).unwrap();
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace(&"ab".repeat(32), "xyz");
        std::fs::write(&p, text).unwrap();
        let e = Lock::read(&p).unwrap_err().to_string();
        assert!(e.contains("containerd") && e.contains("64 hex"), "{e}");
    }
}
