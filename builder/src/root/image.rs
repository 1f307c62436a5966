//! The RootImage and Verity stages: the root manifest written as ext4 (read-only, no journal)
//! and its dm-verity hash tree, with every identifier derived from the content.

use std::fs;
use std::io::{BufReader, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::fsimage::manifest::{Kind, Manifest};
use crate::fsimage::{ext4, verity};
use crate::outdir::{FileSum, ROOT_IMAGE, ROOT_VERITY};
use crate::profile::Profile;
use crate::root::rootfs::RootfsManifest;
use crate::units::Bytes;
use crate::util::digest::{derive16, sha256_file};
use crate::util::printer::Printer;

/// `root.ext4` as written.
pub struct RootImage {
    pub path: PathBuf,
    pub size: u64,
    /// Its SHA-256, computed once here: it seeds the verity salt and goes into the sums.
    pub sum: FileSum,
}

/// `root.verity` and what the boot needs of it.
pub struct Verity {
    pub path: PathBuf,
    pub info: verity::VerityInfo,
    pub sum: FileSum,
}

impl Verity {
    pub fn roothash_hex(&self) -> String {
        hex::encode(self.info.root_hash)
    }
}

/// Fails before anything is written if the root cannot fit its slot (with its hash tree).
pub fn check_fits_slot(profile: &Profile, rootfs: &RootfsManifest) -> Result<u64> {
    let need = ext4::required_size(&rootfs.manifest, false);
    let slot = profile.disk.root.get();
    if need + verity::hash_image_size(need) > slot {
        bail!(
            "{}: the root filesystem needs {} (+ {} of verity hashes) but `disk.root-size` is {}: raise disk.root-size, or keep fewer kernel modules (kernel.modules)",
            profile.path.display(),
            Bytes(need),
            Bytes(verity::hash_image_size(need)),
            profile.disk.root
        );
    }
    Ok(need)
}

/// RootfsManifest -> RootImage: `out/root.ext4`, UUID and hash seed derived from the manifest.
pub fn root_image(
    profile: &Profile,
    rootfs: &RootfsManifest,
    out: &Path,
    printer: &Printer,
) -> Result<RootImage> {
    let need = check_fits_slot(profile, rootfs)?;
    let step = printer.step("write root.ext4");
    let digest = manifest_digest(&rootfs.manifest);
    let opts = ext4::Ext4Options {
        size: need,
        label: "berth-root".to_string(),
        uuid: derive16("ext4-uuid", &digest),
        hash_seed: derive16("ext4-hash-seed", &digest),
        journal: false,
        mtime: profile.image.source_date_epoch,
    };
    let path = out.join(ROOT_IMAGE);
    let f = fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let bar = printer.bytes_bar(rootfs.manifest.content_bytes(), ROOT_IMAGE);
    ext4::write(&rootfs.manifest, &opts, &mut w, bar)?;
    let f = w
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("flushing {}", path.display()))?;
    f.set_len(need)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("finishing {}", path.display()))?;
    let sum = FileSum {
        name: ROOT_IMAGE.into(),
        size: need,
        sha256: sha256_file(&path)?,
    };
    step.done(&format!("{}", Bytes(need)));
    Ok(RootImage {
        path,
        size: need,
        sum,
    })
}

/// RootImage -> Verity: the hash tree in `out/root.verity`; the salt and the superblock UUID
/// are derived from the root image's digest.
pub fn verity(root: &RootImage, out: &Path, printer: &Printer) -> Result<Verity> {
    let step = printer.step("dm-verity");
    let salt = Sha256::new()
        .chain_update(b"berth-verity-salt")
        .chain_update(root.sum.sha256.as_bytes())
        .finalize();
    let open =
        || fs::File::open(&root.path).with_context(|| format!("opening {}", root.path.display()));
    let mut data = BufReader::with_capacity(1 << 20, open()?);
    let path = out.join(ROOT_VERITY);
    let file = fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let bar = printer.bytes_bar(root.size, "dm-verity");
    let info = verity::format(
        &mut data,
        root.size,
        &salt,
        derive16("verity-uuid", &salt),
        &mut w,
        bar,
    )?;
    w.flush()
        .and_then(|()| w.get_mut().rewind().map(|_| ()))
        .and_then(|()| w.get_ref().sync_all())
        .with_context(|| format!("finishing {}", path.display()))?;
    let sum = FileSum {
        name: ROOT_VERITY.into(),
        size: info.hash_size,
        sha256: sha256_file(&path)?,
    };
    step.done(&format!("roothash {}", hex::encode(info.root_hash)));
    Ok(Verity { path, info, sum })
}

/// A digest of the manifest's structure and content, for deriving the filesystem UUID.
fn manifest_digest(m: &Manifest) -> [u8; 32] {
    let mut h = Sha256::new();
    for (p, e) in m.iter() {
        h.update(p.as_str().as_bytes());
        h.update(format!("\0{:o}:{}:{}:{}:", e.st_mode(), e.uid, e.gid, e.mtime).as_bytes());
        match &e.kind {
            Kind::File(d) => h.update(Sha256::digest(d.as_slice())),
            Kind::Symlink(t) => h.update(t.as_bytes()),
            Kind::Hardlink(t) => h.update(t.as_str().as_bytes()),
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                h.update(format!("{major}:{minor}").as_bytes())
            }
            _ => {}
        }
        for (k, v) in &e.xattrs {
            h.update(k.as_bytes());
            h.update(v);
        }
    }
    h.finalize().into()
}
