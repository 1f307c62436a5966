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
    /// "kernel" or "runtime".
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
fn root_requests(p: &Profile) -> Vec<(Role, String, String)> {
    let mut r = vec![(
        Role::Kernel,
        p.kernel.package.clone(),
        "the profile's kernel.package".to_string(),
    )];
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
