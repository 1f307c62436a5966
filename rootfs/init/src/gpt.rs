//! Finding partitions for the init: read the GPT of each disk in /sys/class/block, find a
//! partition by unique GUID (PARTUUID) or type, and write an edited table back. The GPT itself
//! (codec, checks, edits such as growing the last partition) is the contract's
//! ([`berth_contract::gpt`]), shared with the builder; only the I/O is here.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use berth_contract::gpt::{check_protective_mbr, Entry, Table, MAX_ENTRY_ARRAY};
pub use berth_contract::{Guid, SECTOR};

use crate::{fail, sys, Ctx, Result};

/// Reads the primary GPT of the disk device at `path` (LBA 0 and 1, then the entry array the
/// header points to), checking the protective MBR and both CRCs.
pub fn read(path: &str) -> Result<Table> {
    let f = File::open(path).ctx(|| format!("opening {path}"))?;
    let mut first = vec![0u8; 2 * SECTOR as usize];
    f.read_exact_at(&mut first, 0)
        .ctx(|| format!("reading LBA 0-1 of {path}"))?;
    let (mbr, header) = first.split_at(SECTOR as usize);
    let what = || format!("reading the GPT of {path}");
    check_protective_mbr(mbr).ctx(what)?;
    let h = Table::decode_header(header, 1).ctx(what)?;
    if h.entry_array_bytes() > MAX_ENTRY_ARRAY {
        fail!(
            "{}: implausible entry array of {} bytes",
            what(),
            h.entry_array_bytes()
        );
    }
    let mut array = vec![0u8; h.entry_array_bytes() as usize];
    f.read_exact_at(&mut array, h.entries_lba * SECTOR)
        .ctx(|| format!("reading the GPT entries of {path}"))?;
    Table::decode(header, 1, &array).ctx(what)
}

/// Writes an edited table to the disk at `path` in the contract's safe order (backup copy
/// first: until the primary header is replaced, the old table stays valid), fsyncs, and tells
/// the kernel the new extent of partition `resized` (BLKPG), if any.
pub fn write(path: &str, table: &Table, resized: Option<&Entry>) -> Result<()> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .ctx(|| format!("opening {path} for writing"))?;
    let enc = table.encode();
    for (what, lba, data) in enc.writes() {
        f.write_all_at(data, lba * SECTOR)
            .ctx(|| format!("writing the {what} at LBA {lba} of {path}"))?;
    }
    f.sync_all().ctx(|| format!("fsync {path}"))?;
    if let Some(e) = resized {
        let (start, len) = (e.first_lba * SECTOR, e.size().get());
        sys::blkpg_resize(f.as_raw_fd(), e.index, start, len).ctx(|| {
            format!(
                "BLKPG_RESIZE_PARTITION of {path} partition {} to {len} bytes",
                e.index
            )
        })?;
    }
    Ok(())
}

/// A partition found on a disk: `dev` is its /dev name (`vda6`), `disk` the disk's (`vda`).
#[derive(Clone, Debug)]
pub struct Found {
    pub disk: String,
    pub dev: String,
    pub entry: Entry,
    pub table: Table,
}

fn sysfs(name: &str, file: &str) -> Option<String> {
    fs::read_to_string(format!("/sys/class/block/{name}/{file}"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Size of a block device from sysfs (512-byte units there, whatever the logical block size).
pub fn dev_sectors(name: &str) -> Result<u64> {
    let s = crate::read_trim(&format!("/sys/class/block/{name}/size"))?;
    s.parse()
        .ctx(|| format!("parsing /sys/class/block/{name}/size {s:?}"))
}

/// Whole disks now known to the kernel (no `partition` file; not loop, ram, dm or cdrom).
fn disks() -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir("/sys/class/block")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    v.retain(|n| {
        sysfs(n, "partition").is_none()
            && !["loop", "ram", "dm-", "sr", "zram", "fd", "nbd", "mtdblock"]
                .iter()
                .any(|p| n.starts_with(p))
    });
    v.sort();
    v
}

/// The /dev name of partition number `index` of `disk`, once its node exists.
pub fn part_dev(disk: &str, index: u32) -> Option<String> {
    let children = fs::read_dir(format!("/sys/class/block/{disk}")).ok()?;
    children
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .find(|c| sysfs(&format!("{disk}/{c}"), "partition").as_deref() == Some(&index.to_string()))
        .filter(|c| std::path::Path::new(&format!("/dev/{c}")).exists())
}

/// One scan: every disk's GPT, each wanted partition if present (by unique GUID, or by type
/// when `by_type`).
fn scan(wanted: &[Guid], by_type: bool, only_disk: Option<&str>) -> Vec<Option<Found>> {
    let mut out = vec![None; wanted.len()];
    for disk in disks() {
        if only_disk.is_some_and(|d| d != disk) {
            continue;
        }
        let Ok(gpt) = read(&format!("/dev/{disk}")) else {
            continue;
        };
        for (slot, w) in out.iter_mut().zip(wanted) {
            let e = if by_type {
                gpt.find_type(*w)
            } else {
                gpt.find(*w)
            };
            if let (None, Some(e)) = (&slot, e) {
                if let Some(dev) = part_dev(&disk, e.index) {
                    *slot = Some(Found {
                        disk: disk.clone(),
                        dev,
                        entry: e.clone(),
                        table: gpt.clone(),
                    });
                }
            }
        }
    }
    out
}

/// Waits (bounded: virtio_blk probes asynchronously) until every partition in `wanted` (by
/// unique GUID, i.e. PARTUUID) shows up with its device node.
pub fn wait_for(wanted: &[Guid], timeout: Duration) -> Result<Vec<Found>> {
    let start = Instant::now();
    loop {
        let found = scan(wanted, false, None);
        if found.iter().all(Option::is_some) {
            return Ok(found.into_iter().flatten().collect());
        }
        if start.elapsed() >= timeout {
            let missing: Vec<String> = wanted
                .iter()
                .zip(&found)
                .filter(|(_, f)| f.is_none())
                .map(|(g, _)| format!("PARTUUID={g}"))
                .collect();
            fail!(
                "waiting {}s for partitions {} (disks seen: {:?}): not found",
                timeout.as_secs(),
                missing.join(", "),
                disks()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The partition of type `type_guid` on `disk`, if any.
pub fn find_type(disk: &str, type_guid: Guid) -> Option<Found> {
    scan(&[type_guid], true, Some(disk)).pop().flatten()
}
