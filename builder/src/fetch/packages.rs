//! The Packages stage: the exact .deb files a lock names, fetched into berth's cache and checked
//! against the lock's SHA-256 on every build.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::fetch::apt::Apt;
use crate::fetch::lock::LockedPackage;
use crate::util::digest::sha256_file;

/// A .deb on disk whose bytes match its lock entry.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub locked: LockedPackage,
    pub path: PathBuf,
}

fn cache_name(p: &LockedPackage) -> String {
    // Versions may hold ':' (epochs), which apt itself escapes as %3a in file names.
    format!(
        "{}_{}_{}.deb",
        p.name,
        p.version.replace(':', "%3a"),
        p.architecture
    )
}

/// Makes sure every package is in `<cache>/debs/` with the locked hash; downloads what is
/// missing with berth's apt (updating its lists first if needed). `apt` is created lazily
/// because a warm cache needs no apt at all.
pub fn fetch(
    cache_dir: &Path,
    packages: &[LockedPackage],
    apt: &mut dyn FnMut() -> Result<Apt>,
    bar: Option<indicatif::ProgressBar>,
) -> Result<Vec<Fetched>> {
    let dir = cache_dir.join("debs");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut out = Vec::new();
    let mut apt_handle: Option<Apt> = None;
    for p in packages {
        let path = dir.join(cache_name(p));
        let cached_ok = path.is_file() && sha256_file(&path)? == p.sha256;
        if !cached_ok {
            let apt = match &mut apt_handle {
                Some(a) => a,
                None => {
                    let a = apt()?;
                    if !a.has_lists() {
                        a.update()?;
                    }
                    apt_handle.insert(a)
                }
            };
            let staging = tempfile::tempdir_in(&dir).context("creating a download directory")?;
            // Lists older than the lock may not know this version yet: refresh once and retry.
            let got = match apt.download(&p.name, &p.version, staging.path()) {
                Ok(g) => Ok(g),
                Err(first) => {
                    tracing::debug!("download failed ({first:#}); updating apt lists and retrying");
                    apt.update()?;
                    apt.download(&p.name, &p.version, staging.path())
                }
            }
            .with_context(|| {
                format!("package {} {} from the lock is not available from the mirror any more: run `berth lock` to pin current versions", p.name, p.version)
            })?;
            let sum = sha256_file(&got)?;
            if sum != p.sha256 {
                bail!(
                    "package {} {}: the downloaded file's SHA-256 is {sum}, but the lock file says {}. The lock is wrong or the mirror serves different bytes; re-create the lock with `berth lock` if you trust the mirror",
                    p.name,
                    p.version,
                    p.sha256
                );
            }
            fs::rename(&got, &path)
                .with_context(|| format!("moving {} into the cache", got.display()))?;
        }
        if let Some(b) = &bar {
            b.inc(p.size);
        }
        out.push(Fetched {
            locked: p.clone(),
            path,
        });
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(out)
}
