//! The boot side of a build: the initramfs, the ESP's contents (systemd-boot, loader.conf, the
//! slot's kernel, initrd and boot entry) and the GPT disk that holds everything.
//!
//! What berth-init expects of these is written down in `rootfs/init/README.md`.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::build::derive16;
use crate::fat::{self, FatFile, FatOptions};
use berth_contract::entry::loader_conf;
use berth_contract::paths::{self, INITRD_RELEASE, MODULE_LIST};
use berth_contract::{BootArgs, BootEntry, EntryName};

use crate::gpt::{self, DiskLayout, DiskSpec, Guid, Slot};
use crate::kmod;
use crate::manifest::{Entry, ImagePath, Kind, Manifest};
use crate::profile::Profile;
use crate::rootfs::RootfsManifest;
use crate::units::{Bytes, MIB};
use crate::{cpio, ext4, verity};

/// Where systemd-boot-efi ships the loader.
const SYSTEMD_BOOT_EFI: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";

/// Takes the systemd-boot EFI binary from the boot package's data.
pub fn systemd_boot_efi(entries: &[(ImagePath, Entry)], package: &str) -> Result<Arc<Vec<u8>>> {
    let want = ImagePath::new(SYSTEMD_BOOT_EFI)?;
    entries
        .iter()
        .find_map(|(p, e)| match &e.kind {
            Kind::File(d) if *p == want => Some(d.clone()),
            _ => None,
        })
        .with_context(|| format!("boot package {package} has no {SYSTEMD_BOOT_EFI}: is boot.package a systemd-boot EFI package?"))
}

fn module_dir(kver: &str) -> Result<ImagePath> {
    ImagePath::new(&format!("/usr/lib/modules/{kver}"))
}

/// Adds `/etc/berth/modules` (what the main stage loads) and a depmod-style `modules.dep` to the
/// root, so berth-init and later `modprobe`-like loads find dependencies without depmod.
pub fn add_module_files(profile: &Profile, rootfs: &mut RootfsManifest) -> Result<()> {
    let kver = rootfs.kernel.version.clone();
    let sde = profile.image.source_date_epoch;
    let idx = kmod::index(&rootfs.manifest, &kver)?;
    let wanted: Vec<&str> = profile
        .kernel
        .load_modules
        .iter()
        .map(String::as_str)
        .collect();
    let order = idx
        .load_order(&wanted)
        .with_context(|| format!("{}: key `kernel.load-modules`", profile.path.display()))?;
    let dir = module_dir(&kver)?;
    rootfs.manifest.insert(
        dir.join("modules.dep")?,
        Entry::file(idx.modules_dep(), 0o644, sde),
    )?;
    rootfs.manifest.insert(
        ImagePath::new(MODULE_LIST)?,
        Entry::file(lines(&order), 0o644, sde),
    )?;
    Ok(())
}

fn lines(items: &[String]) -> String {
    items.iter().map(|l| format!("{l}\n")).collect()
}

/// The initramfs: berth-init as `/init`, the modules the boot needs (with dependencies, in load
/// order), and the mount points. zstd-compressed cpio, reproducible.
pub fn initramfs(
    profile: &Profile,
    rootfs: &RootfsManifest,
    init: &[u8],
) -> Result<(Vec<u8>, usize)> {
    let sde = profile.image.source_date_epoch;
    let kver = &rootfs.kernel.version;
    let idx = kmod::index(&rootfs.manifest, kver)?;
    let wanted: Vec<&str> = profile
        .kernel
        .initrd_modules
        .iter()
        .map(String::as_str)
        .collect();
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
    let mut out = Vec::new();
    cpio::write_initramfs(&m, &mut out, cpio::Compression::Zstd)
        .context("writing the initramfs")?;
    Ok((out, order.len()))
}

/// Partition UUIDs of a disk, derived (never random) so the same build gives the same disk.
pub struct PartUuids {
    pub disk: Guid,
    pub esp: Guid,
    pub root_a: Guid,
    pub verity_a: Guid,
    pub root_b: Guid,
    pub verity_b: Guid,
    pub state: Guid,
}

impl PartUuids {
    /// Slot A's from its root hash (Discoverable Partitions convention); the others from the
    /// image name, so they stay the same across versions of one image.
    pub fn derive(image_name: &str, roothash: &[u8; 32]) -> PartUuids {
        let (root_a, verity_a) = gpt::roothash_partuuids(roothash);
        let g = |label: &str| Guid::from_bytes(derive16(label, image_name.as_bytes()));
        PartUuids {
            disk: g("disk"),
            esp: g("esp"),
            root_a,
            verity_a,
            root_b: g("root-b"),
            verity_b: g("root-b-verity"),
            state: g("state"),
        }
    }
}

/// The boot arguments of a slot's boot entry (the contract's `BootArgs`): the slot's partitions
/// and root hash, then the profile's `kernel.cmdline`. Checked to read back as written.
pub fn boot_args(
    profile: &Profile,
    slot: Slot,
    root: Guid,
    verity: Guid,
    state: Guid,
    roothash: &str,
) -> Result<BootArgs> {
    let args = BootArgs {
        slot,
        version: profile.image.version.clone(),
        root,
        verity,
        roothash: roothash.to_string(),
        state,
        after_ready: None,
        extra: berth_contract::cmdline::extra_words(&profile.kernel.cmdline),
    };
    args.validate().with_context(|| {
        format!(
            "{}: keys `image.version` and `kernel.cmdline` must make a valid kernel command line",
            profile.path.display()
        )
    })?;
    Ok(args)
}

/// The boot entry's file name: `berth-a+3.conf` while it has tries left (boot counting), or
/// `berth-a.conf` when counting is off.
pub fn entry_name(slot: Slot, tries: u32) -> String {
    EntryName::new(slot, tries).file_name()
}

/// Everything on the ESP for a disk whose slot A holds this build.
pub fn esp_files(
    profile: &Profile,
    loader: Arc<Vec<u8>>,
    vmlinuz: Arc<Vec<u8>>,
    initrd: Arc<Vec<u8>>,
    args: &BootArgs,
) -> Vec<FatFile> {
    let slot = args.slot;
    let entry = BootEntry { args: args.clone() };
    let f = |p: &str, d: Arc<Vec<u8>>| FatFile {
        path: p.to_string(),
        data: d,
    };
    vec![
        f(paths::ESP_LOADER, loader),
        f(
            paths::LOADER_CONF,
            Arc::new(loader_conf(profile.boot.timeout).into_bytes()),
        ),
        f(
            &paths::entry(&EntryName::new(slot, profile.boot.tries)),
            Arc::new(entry.text().into_bytes()),
        ),
        f(&paths::slot_kernel(slot), vmlinuz),
        f(&paths::slot_initrd(slot), initrd),
    ]
}

/// The verity partition of a slot holds the tree of a root as large as the slot.
pub fn verity_slot_size(root_slot: Bytes) -> Bytes {
    Bytes(verity::hash_image_size(root_slot.get())).align_up(MIB)
}

pub fn plan_disk(profile: &Profile, ids: &PartUuids) -> Result<DiskLayout> {
    Ok(gpt::plan(&DiskSpec {
        esp: profile.disk.esp,
        root_slot: profile.disk.root,
        verity_slot: verity_slot_size(profile.disk.root),
        state: profile.disk.state,
        disk_guid: ids.disk,
        part_guids: [
            ids.esp,
            ids.root_a,
            ids.verity_a,
            ids.root_b,
            ids.verity_b,
            ids.state,
        ],
        active: Slot::A,
    })?)
}

/// Copies `src` to `out` at its current position, skipping all-zero 64 KiB chunks with a seek so
/// the disk image stays sparse.
fn copy_sparse(src: &Path, out: &mut fs::File, limit: Bytes, what: &str) -> Result<u64> {
    let len = fs::metadata(src)
        .with_context(|| format!("reading {}", src.display()))?
        .len();
    if len > limit.get() {
        bail!(
            "{what}: {} is {} but its partition holds only {limit}",
            src.display(),
            Bytes(len)
        );
    }
    let mut f = fs::File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut done = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|b| *b == 0) {
            out.seek(SeekFrom::Current(n as i64))?;
        } else {
            out.write_all(&buf[..n])?;
        }
        done += n as u64;
    }
    Ok(done)
}

/// Writes `disk.raw`: GPT, ESP, slot A (root + verity), empty slot B, and an empty journaled
/// ext4 on the state partition. Sparse: unwritten space is holes.
pub fn write_disk(
    path: &Path,
    layout: &DiskLayout,
    esp: &[FatFile],
    root: &Path,
    verity_image: &Path,
    profile: &Profile,
) -> Result<()> {
    let sde = profile.image.source_date_epoch;
    let mut f = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.set_len(layout.disk_size().get())?;
    gpt::write(layout, &mut f).context("writing the GPT")?;

    let p = layout.esp();
    f.seek(SeekFrom::Start(p.offset().get()))?;
    let volume_id =
        u32::from_le_bytes(derive16("esp-volume-id", p.guid.as_bytes())[..4].try_into()?);
    fat::write(
        esp,
        &FatOptions {
            size: p.size().get(),
            label: "BERTH-ESP".to_string(),
            volume_id,
            mtime: sde,
        },
        &mut f,
    )
    .context("writing the ESP (partition esp)")?;

    let p = layout.root(Slot::A);
    f.seek(SeekFrom::Start(p.offset().get()))?;
    copy_sparse(root, &mut f, p.size(), "partition root-a")?;
    let p = layout.verity(Slot::A);
    f.seek(SeekFrom::Start(p.offset().get()))?;
    copy_sparse(verity_image, &mut f, p.size(), "partition root-a-verity")?;

    // The state partition: an empty, journaled, writable ext4. berth-init makes its directories
    // on first boot and grows it to the end of the disk.
    let p = layout.state();
    let state = Manifest::new(sde);
    let seed = derive16("state-fs", p.guid.as_bytes());
    f.seek(SeekFrom::Start(p.offset().get()))?;
    ext4::write(
        &state,
        &ext4::Ext4Options {
            size: p.size().get(),
            label: "berth-state".to_string(),
            uuid: seed,
            hash_seed: derive16("state-hash-seed", &seed),
            journal: true,
            mtime: sde,
        },
        &mut f,
        None,
    )
    .context("writing the state filesystem (partition state)")?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_follow_boot_counting() {
        assert_eq!(entry_name(Slot::A, 3), "berth-a+3.conf");
        assert_eq!(entry_name(Slot::B, 0), "berth-b.conf");
    }

    #[test]
    fn partuuids_are_stable_and_distinct() {
        let hash: [u8; 32] = std::array::from_fn(|i| i as u8);
        let a = PartUuids::derive("img", &hash);
        let b = PartUuids::derive("img", &hash);
        assert_eq!(a.state, b.state);
        let all = [
            a.disk, a.esp, a.root_a, a.verity_a, a.root_b, a.verity_b, a.state,
        ];
        for (i, x) in all.iter().enumerate() {
            for y in &all[i + 1..] {
                assert_ne!(x, y);
            }
        }
        // The state partition keeps its UUID across versions (its root hash changes).
        assert_eq!(PartUuids::derive("img", &[8; 32]).state, a.state);
        assert_ne!(PartUuids::derive("img", &[8; 32]).root_a, a.root_a);
    }

    #[test]
    fn verity_slot_fits_a_full_root_slot() {
        let v = verity_slot_size(Bytes(1 << 30));
        assert!(v.get() >= verity::hash_image_size(1 << 30));
        assert_eq!(v.get() % MIB, 0);
    }
}
