//! The disk stage: partition UUIDs derived from the build, the GPT plan for the profile's
//! sizes, and `disk.raw` itself (GPT, ESP, slot A, empty slot B, state).

pub mod gpt;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

use berth_contract::{BootArgs, EntryName};

use crate::boot::{esp, BootFiles};
use crate::fsimage::fat::{self, FatFile, FatOptions};
use crate::fsimage::manifest::Manifest;
use crate::fsimage::{ext4, verity};
use crate::outdir::DISK;
use crate::profile::Profile;
use crate::root::image::{RootImage, Verity};
use crate::units::{Bytes, MIB};
use crate::util::digest::derive16;
use crate::util::printer::Printer;
use gpt::{DiskLayout, DiskSpec, Guid, Slot};

/// `disk.raw` as written, and what it boots.
pub struct Disk {
    pub path: std::path::PathBuf,
    pub layout: DiskLayout,
    /// Slot A's boot arguments (its entry's `options` line).
    pub args: BootArgs,
    /// Slot A's entry name (`berth-a+3.conf`).
    pub entry: EntryName,
}

/// RootImage + Verity + BootFiles -> Disk: partition UUIDs (slot A's from its root hash), the
/// boot arguments, the ESP, and `out/disk.raw`.
pub fn write(
    profile: &Profile,
    root: &RootImage,
    verity: &Verity,
    boot: &BootFiles,
    out: &Path,
    printer: &Printer,
) -> Result<Disk> {
    let step = printer.step("disk.raw");
    let ids = PartUuids::derive(&profile.image.name, &verity.info.root_hash);
    let args = esp::boot_args(
        profile,
        Slot::A,
        ids.root_a,
        ids.verity_a,
        ids.state,
        &verity.roothash_hex(),
    )?;
    let files = esp::esp_files(
        profile,
        boot.loader.clone(),
        boot.vmlinuz.clone(),
        boot.initrd.clone(),
        &args,
    );
    let layout = plan_disk(profile, &ids)?;
    let path = out.join(DISK);
    write_disk(&path, &layout, &files, &root.path, &verity.path, profile)?;
    step.done(&format!("{} (sparse)", layout.disk_size()));
    Ok(Disk {
        path,
        layout,
        args,
        entry: EntryName::new(Slot::A, profile.boot.tries),
    })
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
fn write_disk(
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
