//! Just enough GPT (UEFI spec, "GUID Partition Table Disk Layout") for the init: find a
//! partition by unique GUID or type on the disks in /sys/class/block, and grow the last
//! partition to the end of a disk that got bigger. Layout as the builder writes it
//! (builder/src/gpt/ondisk.rs): 512-byte sectors, header at LBA 1, little-endian integers.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use crate::{fail, sys, Ctx, Result};

pub const SECTOR: u64 = 512;
/// EFI System Partition type.
pub const ESP_TYPE: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
/// Partitions end on 1 MiB boundaries, like every partitioning tool makes them.
const ALIGN: u64 = 2048;

/// A GUID in text byte order (`00112233-...` is `[0x00, 0x11, ...]`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    pub fn parse(s: &str) -> std::result::Result<Guid, String> {
        let hex: Vec<u8> = s.bytes().filter(|&b| b != b'-').collect();
        let dashes_ok = s.len() == 36 && [8, 13, 18, 23].iter().all(|&i| s.as_bytes()[i] == b'-');
        if !dashes_ok || hex.len() != 32 {
            return Err(format!("{s:?} is not a GUID"));
        }
        let mut g = [0u8; 16];
        for (i, pair) in hex.chunks(2).enumerate() {
            let txt = std::str::from_utf8(pair).map_err(|_| format!("{s:?} is not a GUID"))?;
            g[i] = u8::from_str_radix(txt, 16).map_err(|_| format!("{s:?} is not a GUID"))?;
        }
        Ok(Guid(g))
    }

    /// GPT stores the first three fields little-endian; this swap is its own inverse.
    pub fn from_disk(b: &[u8]) -> Guid {
        let mut g = [0u8; 16];
        g.copy_from_slice(&b[..16]);
        g[0..4].reverse();
        g[4..6].reverse();
        g[6..8].reverse();
        Guid(g)
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// CRC-32/IEEE (reflected 0xEDB88320, init and final XOR all ones), as GPT uses.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from(u32_at(b, o)) | (u64::from(u32_at(b, o + 4)) << 32)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// 1-based, as the kernel numbers partitions.
    pub index: u32,
    pub type_guid: Guid,
    pub guid: Guid,
    pub first_lba: u64,
    pub last_lba: u64,
}

/// A disk's primary GPT, as read (the raw sectors are kept to rewrite them).
#[derive(Clone, Debug)]
pub struct Gpt {
    mbr: Vec<u8>,
    header: Vec<u8>,
    array: Vec<u8>,
    pub entries: Vec<Entry>,
}

impl Gpt {
    /// Parses LBA 0 and 1 (`first`, 1024 bytes) and the entry array, checking both CRCs.
    pub fn parse(first: &[u8], array: &[u8]) -> std::result::Result<Gpt, String> {
        let h = &first[512..1024];
        if &h[0..8] != b"EFI PART" {
            return Err("no GPT header (\"EFI PART\") at LBA 1".into());
        }
        let size = u32_at(h, 12) as usize;
        if !(92..=512).contains(&size) {
            return Err(format!("GPT header size {size} is invalid"));
        }
        let mut z = h[..size].to_vec();
        z[16..20].fill(0);
        if crc32(&z) != u32_at(h, 16) {
            return Err("GPT header CRC32 mismatch".into());
        }
        let (n, esize) = (u32_at(h, 80) as usize, u32_at(h, 84) as usize);
        if esize < 128 || n * esize != array.len() {
            return Err(format!(
                "GPT entry array of {n} x {esize} bytes is not what was read"
            ));
        }
        if crc32(array) != u32_at(h, 88) {
            return Err("GPT entry array CRC32 mismatch".into());
        }
        let entries = array
            .chunks_exact(esize)
            .enumerate()
            .filter(|(_, e)| e[0..16].iter().any(|&b| b != 0))
            .map(|(i, e)| Entry {
                index: i as u32 + 1,
                type_guid: Guid::from_disk(&e[0..16]),
                guid: Guid::from_disk(&e[16..32]),
                first_lba: u64_at(e, 32),
                last_lba: u64_at(e, 40),
            })
            .collect();
        Ok(Gpt {
            mbr: first[..512].to_vec(),
            header: h.to_vec(),
            array: array.to_vec(),
            entries,
        })
    }

    /// Byte length of the entry array the header describes (from LBA 0+1 alone).
    fn array_len(first: &[u8]) -> u64 {
        u64::from(u32_at(first, 512 + 80)) * u64::from(u32_at(first, 512 + 84))
    }

    #[cfg(test)]
    fn alternate_lba(&self) -> u64 {
        u64_at(&self.header, 32)
    }

    pub fn find(&self, guid: Guid) -> Option<&Entry> {
        self.entries.iter().find(|e| e.guid == guid)
    }
}

/// Reads the primary GPT of the disk device at `path`.
pub fn read(path: &str) -> Result<Gpt> {
    let f = File::open(path).ctx(|| format!("opening {path}"))?;
    let mut first = vec![0u8; 1024];
    f.read_exact_at(&mut first, 0)
        .ctx(|| format!("reading LBA 0-1 of {path}"))?;
    if &first[512..520] != b"EFI PART" {
        fail!("reading the GPT of {path}: no GPT header at LBA 1");
    }
    let len = Gpt::array_len(&first);
    if len > 4 << 20 {
        fail!("reading the GPT of {path}: implausible entry array of {len} bytes");
    }
    let mut array = vec![0u8; len as usize];
    let at = u64_at(&first, 512 + 72) * SECTOR;
    f.read_exact_at(&mut array, at)
        .ctx(|| format!("reading the GPT entries of {path}"))?;
    Gpt::parse(&first, &array).map_err(|e| crate::Error(format!("reading the GPT of {path}: {e}")))
}

/// The new sectors of a grown GPT; `plan_grow` computes them, `Grow::write` puts them on disk.
#[derive(Debug)]
pub struct Grow {
    pub index: u32,
    pub first_lba: u64,
    pub old_last: u64,
    pub new_last: u64,
    mbr: Vec<u8>,
    primary: Vec<u8>,
    array: Vec<u8>,
    backup: Vec<u8>,
    backup_lba: u64,
}

fn seal(h: &mut [u8]) {
    let size = u32_at(h, 12) as usize;
    h[16..20].fill(0);
    let crc = crc32(&h[..size]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
}

/// Pure arithmetic: if partition `index` is the last one and the disk (`disk_sectors` long)
/// leaves room after it, the GPT that grows it to the end of the usable area, aligned down to
/// 1 MiB, with the backup header moved to the disk's last sector.
pub fn plan_grow(g: &Gpt, disk_sectors: u64, index: u32) -> Option<Grow> {
    let e = g.entries.iter().find(|e| e.index == index)?;
    if g.entries.iter().any(|o| o.last_lba > e.last_lba) {
        return None; // not the last partition: nothing to grow into
    }
    let array_sectors = (g.array.len() as u64).div_ceil(SECTOR);
    let last = disk_sectors.checked_sub(1)?;
    let last_usable = last.checked_sub(array_sectors + 1)?;
    let new_last = ((last_usable + 1) / ALIGN * ALIGN).checked_sub(1)?;
    if new_last <= e.last_lba {
        return None;
    }
    let mut array = g.array.clone();
    let esize = u32_at(&g.header, 84) as usize;
    let off = (index as usize - 1) * esize + 40;
    array[off..off + 8].copy_from_slice(&new_last.to_le_bytes());

    let mut primary = g.header.clone();
    primary[32..40].copy_from_slice(&last.to_le_bytes()); // alternate LBA
    primary[48..56].copy_from_slice(&last_usable.to_le_bytes());
    primary[88..92].copy_from_slice(&crc32(&array).to_le_bytes());
    let mut backup = primary.clone();
    backup[24..32].copy_from_slice(&last.to_le_bytes()); // my LBA
    backup[32..40].copy_from_slice(&1u64.to_le_bytes());
    backup[72..80].copy_from_slice(&(last - array_sectors).to_le_bytes());
    seal(&mut primary);
    seal(&mut backup);

    // The protective MBR covers the whole disk (capped at 32 bits).
    let mut mbr = g.mbr.clone();
    for p in 0..4 {
        let o = 446 + 16 * p;
        if mbr[o + 4] == 0xEE {
            let size = u32::try_from(disk_sectors - 1).unwrap_or(u32::MAX);
            mbr[o + 12..o + 16].copy_from_slice(&size.to_le_bytes());
        }
    }
    Some(Grow {
        index,
        first_lba: e.first_lba,
        old_last: e.last_lba,
        new_last,
        mbr,
        primary,
        array,
        backup,
        backup_lba: last,
    })
}

impl Grow {
    /// Writes the new GPT to the disk at `path` (backup copy first: until the primary header
    /// is replaced, the old table stays valid) and tells the kernel the partition's new size.
    pub fn write(&self, path: &str) -> Result<()> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .ctx(|| format!("opening {path} for writing"))?;
        let array_sectors = (self.array.len() as u64).div_ceil(SECTOR);
        let writes: [(&str, u64, &[u8]); 5] = [
            (
                "backup GPT entries",
                self.backup_lba - array_sectors,
                &self.array,
            ),
            ("backup GPT header", self.backup_lba, &self.backup),
            (
                "primary GPT entries",
                u64_at(&self.primary, 72),
                &self.array,
            ),
            ("primary GPT header", 1, &self.primary),
            ("protective MBR", 0, &self.mbr),
        ];
        for (what, lba, data) in writes {
            f.write_all_at(data, lba * SECTOR)
                .ctx(|| format!("writing the {what} at LBA {lba} of {path}"))?;
        }
        f.sync_all().ctx(|| format!("fsync {path}"))?;
        let (start, len) = (
            self.first_lba * SECTOR,
            (self.new_last - self.first_lba + 1) * SECTOR,
        );
        sys::blkpg_resize(f.as_raw_fd(), self.index, start, len).ctx(|| {
            format!(
                "BLKPG_RESIZE_PARTITION of {path} partition {} to {len} bytes",
                self.index
            )
        })
    }
}

/// A partition found on a disk: `dev` is its /dev name (`vda6`), `disk` the disk's (`vda`).
#[derive(Clone, Debug)]
pub struct Found {
    pub disk: String,
    pub dev: String,
    pub entry: Entry,
    pub gpt: Gpt,
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
fn part_dev(disk: &str, index: u32) -> Option<String> {
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
                gpt.entries.iter().find(|e| e.type_guid == *w)
            } else {
                gpt.find(*w)
            };
            if let (None, Some(e)) = (&slot, e) {
                if let Some(dev) = part_dev(&disk, e.index) {
                    *slot = Some(Found {
                        disk: disk.clone(),
                        dev,
                        entry: e.clone(),
                        gpt: gpt.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A 128-entry GPT in memory, as sgdisk or berth writes it: `parts` are (type, guid,
    /// first, last). Returns the whole disk image.
    pub fn disk(sectors: u64, parts: &[(Guid, Guid, u64, u64)]) -> Vec<u8> {
        fn to_disk(g: Guid) -> [u8; 16] {
            Guid::from_disk(&g.0).0
        }
        let mut d = vec![0u8; (sectors * SECTOR) as usize];
        let mut array = vec![0u8; 128 * 128];
        for (i, (t, g, first, last)) in parts.iter().enumerate() {
            let e = &mut array[i * 128..(i + 1) * 128];
            e[0..16].copy_from_slice(&to_disk(*t));
            e[16..32].copy_from_slice(&to_disk(*g));
            e[32..40].copy_from_slice(&first.to_le_bytes());
            e[40..48].copy_from_slice(&last.to_le_bytes());
        }
        let last = sectors - 1;
        let mut h = vec![0u8; 512];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&1u64.to_le_bytes());
        h[32..40].copy_from_slice(&last.to_le_bytes());
        h[40..48].copy_from_slice(&34u64.to_le_bytes());
        h[48..56].copy_from_slice(&(last - 33).to_le_bytes());
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&crc32(&array).to_le_bytes());
        let mut b = h.clone();
        b[24..32].copy_from_slice(&last.to_le_bytes());
        b[32..40].copy_from_slice(&1u64.to_le_bytes());
        b[72..80].copy_from_slice(&(last - 32).to_le_bytes());
        seal(&mut h);
        seal(&mut b);
        d[446 + 4] = 0xEE;
        d[510] = 0x55;
        d[511] = 0xAA;
        d[512..1024].copy_from_slice(&h);
        d[1024..1024 + array.len()].copy_from_slice(&array);
        let bl = ((last - 32) * SECTOR) as usize;
        d[bl..bl + array.len()].copy_from_slice(&array);
        d[(last * SECTOR) as usize..].copy_from_slice(&b);
        d
    }

    fn parse_image(d: &[u8]) -> Gpt {
        Gpt::parse(&d[..1024], &d[1024..1024 + 128 * 128]).unwrap()
    }

    fn g(n: u8) -> Guid {
        Guid([n; 16])
    }

    #[test]
    fn guid_text_and_disk_order() {
        let t = Guid::parse(ESP_TYPE).unwrap();
        assert_eq!(t.to_string(), ESP_TYPE);
        // On disk: 28 73 2A C1 1F F8 D2 11 BA 4B 00 A0 C9 3E C9 3B.
        let disk = Guid::from_disk(&t.0);
        assert_eq!(
            &disk.0[..8],
            &[0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11]
        );
        assert_eq!(Guid::from_disk(&disk.0), t);
        assert!(Guid::parse("c12a7328f81f11d2ba4b00a0c93ec93b").is_err());
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn parses_and_grows_to_the_end() {
        let d = disk(
            8192,
            &[(g(1), g(11), 2048, 4095), (g(6), g(16), 4096, 6143)],
        );
        let gpt = parse_image(&d);
        assert_eq!(gpt.find(g(16)).map(|e| e.index), Some(2));
        assert_eq!(gpt.alternate_lba(), 8191);
        assert!(
            plan_grow(&gpt, 8192, 2).is_none(),
            "already ends at the last aligned LBA"
        );
        assert!(
            plan_grow(&gpt, 100_000, 1).is_none(),
            "not the last partition"
        );

        // The disk grew to 64 MiB: grow partition 2, then parse the result back.
        let sectors = 131_072;
        let gr = plan_grow(&gpt, sectors, 2).unwrap();
        assert_eq!((gr.old_last, gr.new_last), (6143, 129_023)); // last usable 131_038, aligned
        let mut big = d[..(8192 - 33) as usize * 512].to_vec();
        big.resize((sectors * SECTOR) as usize, 0);
        for (lba, data) in [
            (0, &gr.mbr),
            (1, &gr.primary),
            (2, &gr.array),
            (sectors - 33, &gr.array),
            (sectors - 1, &gr.backup),
        ] {
            let o = (lba * SECTOR) as usize;
            big[o..o + data.len()].copy_from_slice(data);
        }
        let again = parse_image(&big);
        assert_eq!(again.find(g(16)).unwrap().last_lba, 129_023);
        assert_eq!(again.alternate_lba(), sectors - 1);
        assert_eq!(u64_at(&again.header, 48), sectors - 34);
        let b = &big[((sectors - 1) * SECTOR) as usize..];
        let mut z = b[..92].to_vec();
        z[16..20].fill(0);
        assert_eq!(crc32(&z), u32_at(b, 16));
        assert_eq!(
            (u64_at(b, 24), u64_at(b, 32), u64_at(b, 72)),
            (sectors - 1, 1, sectors - 33)
        );
        assert_eq!(u32_at(&big, 446 + 12), (sectors - 1) as u32);
    }

    /// sgdisk is the oracle: it must accept the grown table and see the new partition end.
    #[test]
    fn sgdisk_accepts_the_grown_table() {
        let Ok(out) = std::process::Command::new("sgdisk")
            .arg("--version")
            .output()
        else {
            eprintln!("sgdisk not installed; skipped");
            return;
        };
        assert!(out.status.success());
        let dir = std::env::temp_dir().join(format!("berth-init-gpt-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let img = dir.join("disk.raw");
        let p = img.to_str().unwrap();
        let f = File::create(&img).unwrap();
        f.set_len(16 << 20).unwrap();
        let sg = |args: &[&str]| {
            let o = std::process::Command::new("sgdisk")
                .args(args)
                .arg(p)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        sg(&[
            "-n",
            "1:2048:+4M",
            "-t",
            "1:ef00",
            "-n",
            "2:0:+4M",
            "-u",
            "2:4d21b016-b534-45c2-a9fb-5c16e091fd2d",
        ]);
        f.set_len(64 << 20).unwrap();
        let d = fs::read(&img).unwrap();
        let gpt = parse_image(&d);
        let state = gpt
            .find(Guid::parse("4d21b016-b534-45c2-a9fb-5c16e091fd2d").unwrap())
            .unwrap();
        assert_eq!(state.index, 2);
        let gr = plan_grow(&gpt, (64 << 20) / SECTOR, 2).unwrap();
        for (lba, data) in [
            (0, &gr.mbr),
            (1, &gr.primary),
            (2, &gr.array),
            (gr.backup_lba - 32, &gr.array),
            (gr.backup_lba, &gr.backup),
        ] {
            f.write_all_at(data, lba * SECTOR).unwrap();
        }
        let v = sg(&["-v"]);
        assert!(v.contains("No problems found"), "{v}");
        let info = sg(&["-i", "2"]);
        assert!(
            info.contains(&format!("Last sector: {} ", gr.new_last)),
            "{info}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
