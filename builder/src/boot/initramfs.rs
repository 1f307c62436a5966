//! The initramfs: berth-init as `/init` and the kernel modules the boot needs, in load order.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use berth_contract::paths::{INITRD_RELEASE, MODULE_LIST};

use crate::fsimage::cpio;
use crate::fsimage::manifest::{Entry, ImagePath, Manifest};
use crate::profile::Profile;
use crate::root::kmod::{self, lines, module_dir};
use crate::root::rootfs::RootfsManifest;

/// The initramfs: berth-init as `/init`, the modules the boot needs (with dependencies, in load
/// order), and the mount points. zstd-compressed cpio, reproducible.
pub fn initramfs(
    profile: &Profile,
    rootfs: &RootfsManifest,
    init: &[u8],
    cache_dir: Option<&Path>,
) -> Result<(Vec<u8>, usize)> {
    let sde = profile.image.source_date_epoch;
    let kver = &rootfs.kernel.version;
    let idx = kmod::index(&rootfs.manifest, kver)?;
    let wanted = kmod::initrd_wanted(profile);
    let order = idx
        .load_order(&wanted)
        .with_context(|| format!("{}: key `kernel.initrd-modules`", profile.path.display()))?;
    let mut m = Manifest::new(sde);
    for d in ["/dev", "/proc", "/sys", "/run", "/sysroot", "/tmp"] {
        m.insert(ImagePath::new(d)?, Entry::dir(0o755, sde))?;
    }
    m.insert(
        ImagePath::new("/init")?,
        Entry::file(init.to_vec(), 0o755, sde),
    )?;
    m.insert(
        ImagePath::new(INITRD_RELEASE)?,
        Entry::file(
            format!(
                "NAME=\"berth initrd\"\nIMAGE_VERSION={}\n",
                profile.image.version
            ),
            0o644,
            sde,
        ),
    )?;
    m.insert(
        ImagePath::new(MODULE_LIST)?,
        Entry::file(lines(&order), 0o644, sde),
    )?;
    let dir = module_dir(kver)?;
    for rel in &order {
        let p = dir.join(rel)?;
        let e = rootfs.manifest.get(&p).with_context(|| {
            format!("module {p} is in the load order but not in the root filesystem")
        })?;
        m.insert(
            p,
            Entry {
                mtime: sde,
                ..e.clone()
            },
        )?;
    }
    let mut newc = Vec::new();
    cpio::write_newc(&m, &mut newc).context("writing the initramfs")?;
    let z = cpio::Compression::Zstd;
    let out = match cache_dir {
        Some(dir) => cached(
            dir,
            &newc,
            |d| cpio::decompress(d, z),
            |raw| cpio::compress(raw, z),
        )?,
        None => cpio::compress(&newc, z)?,
    };
    Ok((out, order.len()))
}

/// Where compressed initramfs images are kept, by the SHA-256 of their uncompressed cpio.
pub const CACHE_DIR: &str = "initramfs";
/// How many of them are kept (the most recently used).
const CACHE_KEEP: usize = 16;

/// The compressed form of `raw` (an uncompressed cpio archive) made by `compress`, from the
/// cache when it holds it: a one-file change to a profile leaves the initramfs as it was, and
/// zstd -19 of berth-init is most of a warm rebuild's initramfs stage. What the cache holds is
/// checked before use: it must decompress to exactly `raw` (a damaged or altered entry is
/// dropped and made again). Failing to store costs only speed, so it is a warning.
pub fn cached(
    cache_dir: &Path,
    raw: &[u8],
    decompress: impl Fn(&[u8]) -> Result<Vec<u8>>,
    compress: impl Fn(&[u8]) -> Result<Vec<u8>>,
) -> Result<Vec<u8>> {
    use sha2::{Digest, Sha256};
    let dir = cache_dir.join(CACHE_DIR);
    let path = dir.join(format!("{}.img", hex::encode(Sha256::digest(raw))));
    if let Ok(kept) = fs::read(&path) {
        if decompress(&kept).is_ok_and(|d| d == raw) {
            // Its mtime is its last use, for the eviction below.
            let _ = fs::File::options()
                .append(true)
                .open(&path)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
            return Ok(kept);
        }
        tracing::warn!(
            "{}: a cached initramfs that does not decompress to its key; made again",
            path.display()
        );
        let _ = fs::remove_file(&path);
    }
    let made = compress(raw)?;
    let store = || -> Result<()> {
        fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!(".tmp-{}", std::process::id()));
        fs::write(&tmp, &made)?;
        fs::rename(&tmp, &path)?;
        let mut kept: Vec<(std::time::SystemTime, PathBuf)> = fs::read_dir(&dir)?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".img"))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        kept.sort_by_key(|k| std::cmp::Reverse(k.0));
        for (_, old) in kept.into_iter().skip(CACHE_KEEP) {
            let _ = fs::remove_file(old);
        }
        Ok(())
    };
    if let Err(e) = store() {
        tracing::warn!("could not cache the initramfs in {}: {e:#}", dir.display());
    }
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn the_initramfs_is_compressed_once_and_a_damaged_entry_is_made_again() {
        use crate::fsimage::cpio::{compress, decompress, Compression::Zstd};
        let d = tempfile::tempdir().unwrap();
        let made = std::cell::Cell::new(0);
        let get = |raw: &[u8]| {
            cached(
                d.path(),
                raw,
                |z| decompress(z, Zstd),
                |r| {
                    made.set(made.get() + 1);
                    compress(r, Zstd)
                },
            )
            .unwrap()
        };
        let raw = b"070701 a cpio archive, or near enough".repeat(100);
        let first = get(&raw);
        assert_eq!(decompress(&first, Zstd).unwrap(), raw);
        assert_eq!(
            (get(&raw), made.get()),
            (first.clone(), 1),
            "from the cache"
        );
        // Damaged: it decompresses to something else, so it is made again (same bytes).
        let entry = fs::read_dir(d.path().join(CACHE_DIR))
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().ends_with(".img"))
            .unwrap()
            .path();
        fs::write(&entry, compress(b"something else", Zstd).unwrap()).unwrap();
        assert_eq!((get(&raw), made.get()), (first, 2));
        // At most CACHE_KEEP entries stay.
        for i in 0..CACHE_KEEP + 3 {
            get(format!("archive {i}").as_bytes());
        }
        let n = fs::read_dir(d.path().join(CACHE_DIR)).unwrap().count();
        assert_eq!(n, CACHE_KEEP);
    }
}
