//! The initramfs: berth-init as `/init` and the kernel modules the boot needs, in load order.

use std::path::Path;

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
        Some(dir) => crate::cache::initramfs(
            dir,
            &newc,
            |d| cpio::decompress(d, z),
            |raw| cpio::compress(raw, z),
        )?,
        None => cpio::compress(&newc, z)?,
    };
    Ok((out, order.len()))
}
