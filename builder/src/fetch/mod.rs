//! Getting the packages: the lock (exact versions + SHA-256), apt with berth's own state, the
//! .deb reader. The stages here: [`lock_for`] (Profile -> Lock) and [`packages`] (Lock ->
//! Packages, read and grouped by role).

pub mod apt;
pub mod deb;
pub mod debversion;
pub mod lock;
pub mod packages;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};

use crate::fsimage::manifest::{Entry, ImagePath};
use crate::profile::Profile;
use crate::units::Bytes;
use crate::util::printer::Printer;
use apt::Apt;
use lock::{Lock, LockedPackage};
pub use packages::Fetched;

/// Reads the lock next to the profile, or resolves and writes one if there is none.
pub fn lock_for(profile: &Profile, cache_dir: &Path, printer: &Printer) -> Result<Lock> {
    let path = lock::path_for(&profile.path);
    if path.is_file() {
        let l = Lock::read(&path)?;
        l.check_covers(profile, &path)?;
        return Ok(l);
    }
    let step = printer.step("resolve packages");
    let l = resolve_lock(profile, cache_dir)?;
    l.write(&path)?;
    step.done(&format!(
        "{} packages, wrote {}",
        l.packages.len(),
        path.display()
    ));
    Ok(l)
}

/// `apt-get update` in berth's apt, then resolve the profile's packages.
pub fn resolve_lock(profile: &Profile, cache_dir: &Path) -> Result<Lock> {
    let apt = make_apt(profile, cache_dir)?;
    apt.update()?;
    Lock::resolve(profile, &apt.index()?)
}

fn make_apt(profile: &Profile, cache_dir: &Path) -> Result<Apt> {
    let sources = apt::sources_for(&profile.debian, &apt::host_sources())?;
    Apt::new(cache_dir, &sources)
}

/// One package's data, already read from its .deb.
#[derive(Default)]
pub struct PackageData {
    pub name: String,
    pub version: String,
    pub entries: Vec<(ImagePath, Entry)>,
    /// `Pre-Depends` and `Depends` (first alternatives), from its control file.
    pub depends: Vec<String>,
    /// `Provides` (virtual names it satisfies).
    pub provides: Vec<String>,
}

/// The packages of a build, read, by the role the lock gives them.
pub struct Packages {
    pub kernel: Vec<PackageData>,
    pub runtime: Vec<PackageData>,
    pub boot: Vec<PackageData>,
    /// Packages of the images of `[[containers]]`.
    pub image: Vec<PackageData>,
    /// The kernel source package (`kernel.source`) as locked: fetched ([`fetch_one`]) and
    /// unpacked only when the kernel is not in the cache (the kernel stage).
    pub kernel_source: Option<LockedPackage>,
}

/// Lock -> Packages: fetch (or take from the cache) what the lock names, check each against
/// its SHA-256, read their data.
pub fn packages(
    profile: &Profile,
    lock: &Lock,
    cache_dir: &Path,
    printer: &Printer,
) -> Result<Packages> {
    let step = printer.step("fetch packages");
    // The kernel source is fetched only when the kernel is not in the kernel cache
    // (the kernel stage, through [`fetch_one`]): its cache key needs only the lock's sha256.
    let (source, wanted): (Vec<LockedPackage>, Vec<LockedPackage>) = lock
        .packages
        .iter()
        .cloned()
        .partition(|p| p.role == apt::Role::KernelSource.name());
    let total: u64 = wanted.iter().map(|p| p.size).sum();
    let fetched = packages::fetch(
        cache_dir,
        &wanted,
        &mut || make_apt(profile, cache_dir),
        printer.bytes_bar(total, "packages"),
    )?;
    step.done(&format!("{} packages, {}", fetched.len(), Bytes(total)));

    let step = printer.step("read packages");
    let datas = read_packages(&fetched, Some(&cache_dir.join(ZSTD_COPIES)))?;
    let unused = lock.unused(profile, &datas);
    if !unused.is_empty() {
        anyhow::bail!(
            "{}: the lock lists {} that nothing in {} needs: {}. Run `berth lock {}` to re-create the lock",
            lock::path_for(&profile.path).display(),
            if unused.len() == 1 { "a package" } else { "packages" },
            profile.path.display(),
            unused.join(", "),
            profile.path.display()
        );
    }
    step.done(&format!(
        "{} entries",
        datas.iter().map(|d| d.entries.len()).sum::<usize>()
    ));
    let mut by_role: BTreeMap<String, Vec<PackageData>> = BTreeMap::new();
    for d in datas {
        let role = lock
            .packages
            .iter()
            .find(|p| p.name == d.name)
            .map(|p| p.role.clone())
            .unwrap_or_default();
        by_role.entry(role).or_default().push(d);
    }
    let mut take = |r: &str| by_role.remove(r).unwrap_or_default();
    Ok(Packages {
        kernel: take("kernel"),
        runtime: take("runtime"),
        boot: take("boot"),
        image: take("image"),
        kernel_source: source.into_iter().next(),
    })
}

/// Fetches one locked package (or takes it from the cache), checked against its SHA-256.
pub fn fetch_one(
    profile: &Profile,
    locked: &LockedPackage,
    cache_dir: &Path,
    printer: &Printer,
) -> Result<Fetched> {
    let mut got = packages::fetch(
        cache_dir,
        std::slice::from_ref(locked),
        &mut || make_apt(profile, cache_dir),
        printer.bytes_bar(locked.size, &locked.name),
    )?;
    got.pop()
        .with_context(|| format!("fetching package {} {}", locked.name, locked.version))
}

/// Where each package is kept a second time with zstd instead of xz (`deb::recompress_zstd`),
/// named by the SHA-256 the lock gives the package, beside the SHA-256 of the copy itself. xz
/// decompression was most of a warm rebuild's "read packages" stage; zstd reads 5-10 times
/// faster. `berth clean` removes them (they are made again from the packages).
pub const ZSTD_COPIES: &str = "packages-zst";
const ZSTD_COPY_LEVEL: i32 = 3;

/// The zstd copy of `f` in `dir`, made if it is missing or does not match its recorded sum
/// (`None` if it cannot be made: the package is read as it is).
fn zstd_copy(dir: &Path, f: &Fetched) -> Option<std::path::PathBuf> {
    let copy = dir.join(format!("{}.deb", f.locked.sha256));
    let sum = dir.join(format!("{}.deb.sha256", f.locked.sha256));
    let recorded = std::fs::read_to_string(&sum).unwrap_or_default();
    if !recorded.is_empty()
        && crate::util::digest::sha256_file(&copy).is_ok_and(|s| s == recorded.trim())
    {
        return Some(copy);
    }
    let made = (|| -> Result<()> {
        std::fs::create_dir_all(dir)?;
        deb::recompress_zstd(&f.path, &copy, ZSTD_COPY_LEVEL)?;
        let tmp = dir.join(format!(".{}.{}.tmp", f.locked.sha256, std::process::id()));
        std::fs::write(&tmp, crate::util::digest::sha256_file(&copy)? + "\n")?;
        std::fs::rename(&tmp, &sum)?;
        Ok(())
    })();
    match made {
        Ok(()) => Some(copy),
        Err(e) => {
            tracing::warn!(
                "keeping a zstd copy of {} in {}: {e:#}",
                f.path.display(),
                dir.display()
            );
            None
        }
    }
}

/// Reads the fetched packages' data (decompression dominates; two threads), from their zstd
/// copies in `copies` when given.
fn read_packages(fetched: &[Fetched], copies: Option<&Path>) -> Result<Vec<PackageData>> {
    let read = |f: &Fetched| -> Result<PackageData> {
        let path = copies
            .and_then(|dir| zstd_copy(dir, f))
            .unwrap_or_else(|| f.path.clone());
        let d = deb::Deb::read(&path).map_err(|e| {
            e.context(format!(
                "reading package {} {}",
                f.locked.name, f.locked.version
            ))
        })?;
        let field = |k: &str| {
            d.control
                .get(k)
                .map(apt::first_alternatives)
                .unwrap_or_default()
        };
        let mut depends = field("Pre-Depends");
        depends.extend(field("Depends"));
        Ok(PackageData {
            name: f.locked.name.clone(),
            version: f.locked.version.clone(),
            entries: d.data,
            depends,
            provides: field("Provides"),
        })
    };
    // Split by size into two halves so both cores decompress.
    let mut order: Vec<&Fetched> = fetched.iter().collect();
    order.sort_by_key(|f| std::cmp::Reverse(f.locked.size));
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (mut sa, mut sb) = (0u64, 0u64);
    for f in order {
        if sa <= sb {
            sa += f.locked.size;
            a.push(f);
        } else {
            sb += f.locked.size;
            b.push(f);
        }
    }
    let (ra, rb) = std::thread::scope(|s| {
        let hb = s.spawn(|| b.iter().map(|f| read(f)).collect::<Result<Vec<_>>>());
        let ra = a.iter().map(|f| read(f)).collect::<Result<Vec<_>>>();
        (ra, hb.join())
    });
    let mut all = ra?;
    all.extend(rb.map_err(|_| anyhow::anyhow!("package reader thread panicked"))??);
    all.sort_by(|x, y| x.name.cmp(&y.name));
    Ok(all)
}

/// `berth lock --check`: the lock beside the profile must exist and equal `resolved` (what
/// resolving gives now). `profile_arg` is the profile as the user named it, for the hint.
pub fn check_lock(profile: &Profile, resolved: &Lock, profile_arg: &Path) -> Result<()> {
    let path = lock::path_for(&profile.path);
    if !path.is_file() {
        anyhow::bail!(
            "{} does not exist yet: run `berth lock {}` to create it",
            path.display(),
            profile_arg.display()
        );
    }
    if Lock::read(&path)? != *resolved {
        anyhow::bail!(
            "{} is out of date: run `berth lock {}`",
            path.display(),
            profile_arg.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The zstd copy reads as the package does; a damaged copy is noticed (its recorded sum)
    /// and made again.
    #[test]
    fn zstd_copies_are_checked_and_remade() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("pkg");
        std::fs::create_dir_all(tree.join("DEBIAN")).unwrap();
        std::fs::create_dir_all(tree.join("usr/share/t")).unwrap();
        std::fs::write(
            tree.join("DEBIAN/control"),
            "Package: t\nVersion: 1\nArchitecture: amd64\nMaintainer: x <x@y>\nDescription: t\n",
        )
        .unwrap();
        std::fs::write(tree.join("usr/share/t/data"), "data ".repeat(1000)).unwrap();
        let deb = d.path().join("t.deb");
        let st = std::process::Command::new("dpkg-deb")
            .args(["-Zxz", "--root-owner-group", "--build"])
            .arg(&tree)
            .arg(&deb)
            .output()
            .expect("running dpkg-deb");
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        let f = Fetched {
            locked: LockedPackage {
                name: "t".into(),
                version: "1".into(),
                architecture: "amd64".into(),
                role: "image".into(),
                sha256: crate::util::digest::sha256_file(&deb).unwrap(),
                size: std::fs::metadata(&deb).unwrap().len(),
                filename: "t.deb".into(),
            },
            path: deb.clone(),
        };
        let copies = d.path().join("copies");
        let want = deb::Deb::read(&deb).unwrap().data;
        let copy = zstd_copy(&copies, &f).unwrap();
        assert_eq!(deb::Deb::read(&copy).unwrap().data, want);
        let made = std::fs::metadata(&copy).unwrap().modified().unwrap();
        assert_eq!(zstd_copy(&copies, &f).unwrap(), copy, "kept");
        assert_eq!(std::fs::metadata(&copy).unwrap().modified().unwrap(), made);
        // Damaged: one byte changed.
        let mut bytes = std::fs::read(&copy).unwrap();
        let last = bytes.len() - 10;
        bytes[last] ^= 0xff;
        std::fs::write(&copy, bytes).unwrap();
        let again = zstd_copy(&copies, &f).unwrap();
        assert_eq!(deb::Deb::read(&again).unwrap().data, want, "made again");
        let datas = read_packages(std::slice::from_ref(&f), Some(&copies)).unwrap();
        assert_eq!(datas[0].entries, want);
    }
}
