//! GPT on disk (UEFI spec, "GUID Partition Table (GPT) Disk Layout"): protective MBR, the two
//! headers and the two entry arrays. All integers are little-endian.

use std::io::{Read, Seek, SeekFrom, Write};

use anyhow::{Context, Result};

use super::{
    crc32, DiskLayout, Guid, PartitionPlan, Slot, ATTR_NO_AUTO, PARTITION_NAMES, PARTITION_TYPES,
    SECTOR,
};
use crate::units::Bytes;

const SIGNATURE: &[u8; 8] = b"EFI PART";
/// GPT revision 1.0, the only one there is.
const REVISION: u32 = 0x0001_0000;
/// The header's defined fields; the rest of its sector is reserved and zero.
const HEADER_SIZE: u32 = 92;
/// UEFI's minimum array size, and what every tool writes: 128 entries of 128 bytes = 16 KiB.
const NUM_ENTRIES: u32 = 128;
const ENTRY_SIZE: u32 = 128;
const ENTRY_ARRAY_SECTORS: u64 = (NUM_ENTRIES as u64 * ENTRY_SIZE as u64) / SECTOR;
/// MBR + primary header + primary entries.
const FIRST_USABLE_LBA: u64 = 2 + ENTRY_ARRAY_SECTORS;
/// Partition names are 36 UTF-16 code units.
const NAME_BYTES: usize = 72;
/// Largest entry array `read` accepts: far beyond any real disk, small enough to allocate.
const MAX_ENTRY_ARRAY: u64 = 4 * 1024 * 1024;
const MBR_TYPE_GPT_PROTECTIVE: u8 = 0xEE;

/// Why a disk is not a usable berth disk. Wrapped in the `anyhow::Error` that [`read`] returns;
/// `downcast_ref::<ReadError>()` tells "not ours" apart from "ours but damaged".
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("not a GPT disk: {0}")]
    NotGpt(String),
    #[error("damaged GPT: {0}")]
    Corrupt(String),
    #[error("a GPT disk, but not a berth layout: {0}")]
    NotBerth(String),
}

/// One GPT header's fields (the CRCs are computed on encode and checked on decode).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Header {
    my_lba: u64,
    alternate_lba: u64,
    first_usable_lba: u64,
    last_usable_lba: u64,
    disk_guid: Guid,
    entries_lba: u64,
    num_entries: u32,
    entry_size: u32,
    entries_crc: u32,
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn guid_at(b: &[u8], off: usize) -> Guid {
    Guid::from_disk_bytes(b[off..off + 16].try_into().unwrap())
}

impl Header {
    fn encode(&self) -> [u8; SECTOR as usize] {
        let mut s = [0u8; SECTOR as usize];
        s[0..8].copy_from_slice(SIGNATURE);
        s[8..12].copy_from_slice(&REVISION.to_le_bytes());
        s[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
        // 16..20 header CRC (below), 20..24 reserved zero.
        s[24..32].copy_from_slice(&self.my_lba.to_le_bytes());
        s[32..40].copy_from_slice(&self.alternate_lba.to_le_bytes());
        s[40..48].copy_from_slice(&self.first_usable_lba.to_le_bytes());
        s[48..56].copy_from_slice(&self.last_usable_lba.to_le_bytes());
        s[56..72].copy_from_slice(&self.disk_guid.to_disk_bytes());
        s[72..80].copy_from_slice(&self.entries_lba.to_le_bytes());
        s[80..84].copy_from_slice(&self.num_entries.to_le_bytes());
        s[84..88].copy_from_slice(&self.entry_size.to_le_bytes());
        s[88..92].copy_from_slice(&self.entries_crc.to_le_bytes());
        let crc = crc32(&s[..HEADER_SIZE as usize]);
        s[16..20].copy_from_slice(&crc.to_le_bytes());
        s
    }

    /// Decodes and checks the header found at `lba`; the error says what is wrong with it.
    fn decode(s: &[u8; SECTOR as usize], lba: u64) -> std::result::Result<Header, String> {
        if &s[0..8] != SIGNATURE {
            return Err(format!("no \"EFI PART\" signature at LBA {lba}"));
        }
        let revision = u32_at(s, 8);
        if revision >> 16 != 1 {
            return Err(format!(
                "header at LBA {lba} has revision {revision:#010x}; only 1.x is defined"
            ));
        }
        let size = u32_at(s, 12);
        if !(HEADER_SIZE..=SECTOR as u32).contains(&size) {
            return Err(format!(
                "header at LBA {lba} claims a size of {size} bytes (must be 92..=512)"
            ));
        }
        let stored = u32_at(s, 16);
        let mut copy = *s;
        copy[16..20].fill(0);
        let actual = crc32(&copy[..size as usize]);
        if stored != actual {
            return Err(format!(
                "header CRC32 mismatch at LBA {lba}: stored {stored:#010x}, computed {actual:#010x} \
                 (the header was modified or damaged)"
            ));
        }
        let h = Header {
            my_lba: u64_at(s, 24),
            alternate_lba: u64_at(s, 32),
            first_usable_lba: u64_at(s, 40),
            last_usable_lba: u64_at(s, 48),
            disk_guid: guid_at(s, 56),
            entries_lba: u64_at(s, 72),
            num_entries: u32_at(s, 80),
            entry_size: u32_at(s, 84),
            entries_crc: u32_at(s, 88),
        };
        if h.my_lba != lba {
            return Err(format!(
                "header at LBA {lba} says it is at LBA {}",
                h.my_lba
            ));
        }
        if h.entry_size < ENTRY_SIZE || !h.entry_size.is_power_of_two() {
            return Err(format!(
                "header at LBA {lba}: entry size {} is not 128 x 2^n",
                h.entry_size
            ));
        }
        if u64::from(h.num_entries) * u64::from(h.entry_size) > MAX_ENTRY_ARRAY {
            return Err(format!(
                "header at LBA {lba}: {} entries of {} bytes is implausible",
                h.num_entries, h.entry_size
            ));
        }
        if h.first_usable_lba > h.last_usable_lba {
            return Err(format!(
                "header at LBA {lba}: first usable LBA {} is past the last, {}",
                h.first_usable_lba, h.last_usable_lba
            ));
        }
        Ok(h)
    }

    fn entry_array_bytes(&self) -> u64 {
        u64::from(self.num_entries) * u64::from(self.entry_size)
    }
}

/// The entry array: `NUM_ENTRIES` slots, the layout's partitions first, the rest zero (unused).
fn encode_entries(partitions: &[PartitionPlan]) -> Vec<u8> {
    let mut a = vec![0u8; (NUM_ENTRIES * ENTRY_SIZE) as usize];
    for p in partitions {
        let off = (p.index as usize - 1) * ENTRY_SIZE as usize;
        let e = &mut a[off..off + ENTRY_SIZE as usize];
        e[0..16].copy_from_slice(&p.type_guid.to_disk_bytes());
        e[16..32].copy_from_slice(&p.guid.to_disk_bytes());
        e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
        e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
        e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
        for (i, unit) in p.name.encode_utf16().enumerate() {
            e[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
        }
    }
    a
}

/// CHS address of `lba` in the 255-head, 63-sector geometry every tool assumes, or all ones
/// past the 1023rd cylinder (UEFI: "0xFFFFFF if it is not possible to represent the value").
fn chs(lba: u64) -> [u8; 3] {
    let (heads, sectors) = (255u64, 63u64);
    let cyl = lba / (heads * sectors);
    if cyl > 1023 {
        return [0xFF; 3];
    }
    let head = (lba / sectors) % heads;
    let sector = lba % sectors + 1;
    [
        head as u8,
        (sector as u8) | ((cyl >> 2) as u8 & 0xC0),
        cyl as u8,
    ]
}

/// LBA 0: no boot code, one 0xEE partition from LBA 1 over the whole disk (capped at the
/// 32-bit maximum, as UEFI requires for larger disks).
fn protective_mbr(total_lbas: u64) -> [u8; SECTOR as usize] {
    let mut s = [0u8; SECTOR as usize];
    let r = &mut s[446..462];
    r[0] = 0x00; // not bootable
    r[1..4].copy_from_slice(&chs(1));
    r[4] = MBR_TYPE_GPT_PROTECTIVE;
    r[5..8].copy_from_slice(&chs(total_lbas - 1));
    r[8..12].copy_from_slice(&1u32.to_le_bytes());
    let size = u32::try_from(total_lbas - 1).unwrap_or(u32::MAX);
    r[12..16].copy_from_slice(&size.to_le_bytes());
    s[510] = 0x55;
    s[511] = 0xAA;
    s
}

fn write_at<W: Write + Seek>(out: &mut W, lba: u64, data: &[u8], what: &str) -> Result<()> {
    out.seek(SeekFrom::Start(lba * SECTOR))
        .with_context(|| format!("seeking to the {what} at LBA {lba}"))?;
    out.write_all(data)
        .with_context(|| format!("writing the {what} at LBA {lba}"))
}

/// Writes the protective MBR, the primary header (LBA 1) and entries (LBA 2..=33), and the
/// backup entries and header in the last 33 sectors of `layout.disk_size()`.
///
/// Nothing else is written: partition contents go at [`PartitionPlan::offset`], by the caller,
/// before or after. Writing the backup header makes a shorter file `disk_size` long; a caller
/// writing a sparse file can `set_len(disk_size)` first, either way.
pub fn write<W: Write + Seek>(layout: &DiskLayout, out: &mut W) -> Result<()> {
    let total = layout.disk_size().get() / SECTOR;
    let last = layout.last_lba();
    let entries = encode_entries(layout.partitions());
    let primary = Header {
        my_lba: 1,
        alternate_lba: last,
        first_usable_lba: FIRST_USABLE_LBA,
        last_usable_lba: last - 1 - ENTRY_ARRAY_SECTORS,
        disk_guid: layout.disk_guid(),
        entries_lba: 2,
        num_entries: NUM_ENTRIES,
        entry_size: ENTRY_SIZE,
        entries_crc: crc32(&entries),
    };
    let backup = Header {
        my_lba: last,
        alternate_lba: 1,
        entries_lba: last - ENTRY_ARRAY_SECTORS,
        ..primary.clone()
    };
    write_at(out, 0, &protective_mbr(total), "protective MBR")?;
    write_at(out, 1, &primary.encode(), "primary GPT header")?;
    write_at(out, primary.entries_lba, &entries, "primary GPT entries")?;
    write_at(out, backup.entries_lba, &entries, "backup GPT entries")?;
    write_at(out, backup.my_lba, &backup.encode(), "backup GPT header")?;
    out.flush().context("flushing the GPT")
}

fn read_at<R: Read + Seek>(r: &mut R, lba: u64, buf: &mut [u8], what: &str) -> Result<()> {
    r.seek(SeekFrom::Start(lba * SECTOR))
        .with_context(|| format!("seeking to the {what} at LBA {lba}"))?;
    r.read_exact(buf)
        .with_context(|| format!("reading the {what} at LBA {lba}"))
}

/// Reads the header at `lba` and its entry array, checking both CRCs.
fn read_table<R: Read + Seek>(r: &mut R, lba: u64, which: &str) -> Result<(Header, Vec<u8>)> {
    let mut s = [0u8; SECTOR as usize];
    read_at(r, lba, &mut s, &format!("{which} GPT header"))?;
    let h = Header::decode(&s, lba).map_err(|m| {
        if which == "primary" && !s.starts_with(SIGNATURE) {
            ReadError::NotGpt(m)
        } else {
            ReadError::Corrupt(format!("{which} header: {m}"))
        }
    })?;
    let mut entries = vec![0u8; h.entry_array_bytes() as usize];
    read_at(
        r,
        h.entries_lba,
        &mut entries,
        &format!("{which} GPT entries"),
    )?;
    let actual = crc32(&entries);
    if actual != h.entries_crc {
        return Err(ReadError::Corrupt(format!(
            "{which} entry array at LBA {}: CRC32 is {actual:#010x}, the header says {:#010x}",
            h.entries_lba, h.entries_crc
        ))
        .into());
    }
    Ok((h, entries))
}

/// Reads a disk's GPT, checks it (protective MBR, both headers' and entry arrays' CRC32s, the
/// two copies agreeing) and that it holds berth's six partitions with their names and types.
///
/// A damaged primary header or array is an error even when the backup is intact (sgdisk would
/// recover from the backup): berth never boots or updates a disk whose table it cannot trust,
/// and repairing it is a job for `sgdisk`, on purpose. Errors wrap a [`ReadError`]. The returned layout's `disk_size` is where the GPT puts the
/// disk's end (the backup header's LBA + 1); the active slot is the one whose root partition
/// lacks the no-auto bit.
pub fn read<R: Read + Seek>(r: &mut R) -> Result<DiskLayout> {
    let len = r
        .seek(SeekFrom::End(0))
        .context("finding the disk's size")?;
    let total = len / SECTOR;
    if total < 2 * FIRST_USABLE_LBA {
        return Err(ReadError::NotGpt(format!("{} is too small to hold a GPT", Bytes(len))).into());
    }
    let mut mbr = [0u8; SECTOR as usize];
    read_at(r, 0, &mut mbr, "MBR")?;
    if mbr[510..512] != [0x55, 0xAA] {
        return Err(ReadError::NotGpt("no MBR boot signature (55 AA) at LBA 0".into()).into());
    }
    if !(0..4).any(|i| mbr[446 + 16 * i + 4] == MBR_TYPE_GPT_PROTECTIVE) {
        return Err(ReadError::NotGpt(
            "the MBR at LBA 0 has no protective (0xEE) partition: an MBR-partitioned disk".into(),
        )
        .into());
    }

    let (primary, entries) = read_table(r, 1, "primary")?;
    let alt = primary.alternate_lba;
    if alt <= primary.last_usable_lba || alt >= total {
        return Err(ReadError::Corrupt(format!(
            "the primary header puts the backup header at LBA {alt}, outside the disk ({total} sectors): truncated or damaged image"
        ))
        .into());
    }
    let (backup, _) = read_table(r, alt, "backup")?;
    let mirrored = Header {
        my_lba: 1,
        alternate_lba: alt,
        entries_lba: primary.entries_lba,
        ..backup.clone()
    };
    if backup.alternate_lba != 1 || mirrored != primary {
        return Err(ReadError::Corrupt(format!(
            "the backup header at LBA {alt} does not match the primary one (primary {primary:?}, backup {backup:?})"
        ))
        .into());
    }

    let layout = berth_layout(&primary, &entries)?;
    Ok(DiskLayout {
        disk_size: Bytes((alt + 1) * SECTOR),
        ..layout
    })
}

/// Checks the used entries are exactly berth's six, in order, inside the usable area.
fn berth_layout(h: &Header, entries: &[u8]) -> Result<DiskLayout> {
    let mut found = Vec::new();
    for (i, e) in entries.chunks_exact(h.entry_size as usize).enumerate() {
        let type_guid = guid_at(e, 0);
        if type_guid.is_nil() {
            continue;
        }
        let units: Vec<u16> = e[56..56 + NAME_BYTES]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        let name = String::from_utf16_lossy(&units);
        let (first_lba, last_lba) = (u64_at(e, 32), u64_at(e, 40));
        if first_lba > last_lba || first_lba < h.first_usable_lba || last_lba > h.last_usable_lba {
            return Err(ReadError::Corrupt(format!(
                "partition {} ({name:?}) spans LBA {first_lba}..={last_lba}, outside the usable LBA {}..={}",
                i + 1,
                h.first_usable_lba,
                h.last_usable_lba
            ))
            .into());
        }
        found.push((
            i as u32 + 1,
            name,
            type_guid,
            guid_at(e, 16),
            first_lba,
            last_lba,
            u64_at(e, 48),
        ));
    }

    let describe = || {
        found
            .iter()
            .map(|f| format!("{} {:?} ({})", f.0, f.1, f.2))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if found.len() != PARTITION_NAMES.len() {
        return Err(ReadError::NotBerth(format!(
            "{} partitions [{}], berth disks have 6: {}",
            found.len(),
            describe(),
            PARTITION_NAMES.join(", ")
        ))
        .into());
    }
    let mut partitions = Vec::with_capacity(6);
    for (k, (index, name, type_guid, guid, first_lba, last_lba, attributes)) in
        found.iter().cloned().enumerate()
    {
        let (want_name, want_type) = (PARTITION_NAMES[k], PARTITION_TYPES[k]);
        if index as usize != k + 1 || name != want_name || type_guid != want_type {
            return Err(ReadError::NotBerth(format!(
                "entry {index} is {name:?} of type {type_guid}; berth expects entry {} to be {want_name:?} of type {want_type} \
                 (partitions found: {})",
                k + 1,
                describe()
            ))
            .into());
        }
        if let Some(prev) = partitions.last().map(|p: &PartitionPlan| p.last_lba) {
            if first_lba <= prev {
                return Err(ReadError::Corrupt(format!(
                    "partition {index} ({name}) overlaps the one before it"
                ))
                .into());
            }
        }
        partitions.push(PartitionPlan {
            index,
            name: want_name,
            type_guid,
            guid,
            first_lba,
            last_lba,
            attributes,
        });
    }

    let no_auto = |i: usize| partitions[i].attributes & ATTR_NO_AUTO != 0;
    let active = match (no_auto(1), no_auto(3)) {
        (false, true) => Slot::A,
        (true, false) => Slot::B,
        (a, b) => {
            return Err(ReadError::NotBerth(format!(
                "cannot tell the active slot: no-auto is {} on root-a and {} on root-b (exactly one must have it)",
                if a { "set" } else { "clear" },
                if b { "set" } else { "clear" }
            ))
            .into())
        }
    };
    Ok(DiskLayout {
        disk_size: Bytes(0),
        disk_guid: h.disk_guid,
        active,
        partitions,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{plan, DiskSpec, ATTR_READ_ONLY};
    use super::*;
    use crate::units::MIB;
    use std::io::Cursor;

    fn small() -> DiskLayout {
        small_with(Slot::A)
    }

    fn small_with(active: Slot) -> DiskLayout {
        plan(&DiskSpec {
            esp: Bytes::mib(2),
            root_slot: Bytes::mib(3),
            verity_slot: Bytes(4096),
            state: Bytes::mib(1),
            disk_guid: Guid::parse("11111111-2222-3333-4444-555555555555").unwrap(),
            part_guids: std::array::from_fn(|i| Guid::from_bytes([i as u8 + 1; 16])),
            active,
        })
        .unwrap()
    }

    fn written(l: &DiskLayout, fill: u8) -> Vec<u8> {
        let mut c = Cursor::new(vec![fill; l.disk_size().get() as usize]);
        write(l, &mut c).unwrap();
        c.into_inner()
    }

    fn sector(d: &[u8], lba: u64) -> &[u8] {
        &d[(lba * SECTOR) as usize..((lba + 1) * SECTOR) as usize]
    }

    #[test]
    fn header_fields() {
        let l = small();
        let d = written(&l, 0);
        let last = l.last_lba();
        assert_eq!(last, (13 * MIB) / SECTOR - 1); // 1 + 2 + 2 * (3 + 1) + 1 + 1 MiB
        for (lba, alt, entries_lba) in [(1, last, 2), (last, 1, last - 32)] {
            let h = sector(&d, lba);
            assert_eq!(&h[0..8], b"EFI PART");
            assert_eq!(u32_at(h, 8), 0x0001_0000);
            assert_eq!(u32_at(h, 12), 92);
            let mut z = h[..92].to_vec();
            z[16..20].fill(0);
            assert_eq!(u32_at(h, 16), crc32(&z));
            assert_eq!(u32_at(h, 20), 0);
            assert_eq!(u64_at(h, 24), lba);
            assert_eq!(u64_at(h, 32), alt);
            assert_eq!(u64_at(h, 40), 34);
            assert_eq!(u64_at(h, 48), last - 33);
            assert_eq!(&h[56..72], &l.disk_guid().to_disk_bytes());
            assert_eq!(u64_at(h, 72), entries_lba);
            assert_eq!(u32_at(h, 80), 128);
            assert_eq!(u32_at(h, 84), 128);
            let array = &d[(entries_lba * SECTOR) as usize..((entries_lba + 32) * SECTOR) as usize];
            assert_eq!(u32_at(h, 88), crc32(array));
            assert!(h[92..].iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn entries_and_mbr() {
        let l = small();
        let d = written(&l, 0);
        let e = &sector(&d, 2)[128..256]; // entry 2: root-a
        assert_eq!(&e[0..16], &super::super::ROOT_X86_64_TYPE.to_disk_bytes());
        assert_eq!(&e[16..32], &[2u8; 16]);
        assert_eq!(u64_at(e, 32), l.root(Slot::A).first_lba);
        assert_eq!(u64_at(e, 40), l.root(Slot::A).last_lba);
        assert_eq!(u64_at(e, 48), ATTR_READ_ONLY);
        assert_eq!(&e[56..70], b"r\0o\0o\0t\0-\0a\0\0\0");
        assert!(d[(2 * SECTOR + 6 * 128) as usize..(34 * SECTOR) as usize]
            .iter()
            .all(|&b| b == 0));

        let m = sector(&d, 0);
        assert!(m[..446].iter().all(|&b| b == 0));
        assert_eq!(
            &m[446..462],
            &[0, 0, 2, 0, 0xEE, 0xA7, 0x26, 0x01, 1, 0, 0, 0, 0xFF, 0x67, 0, 0][..]
        );
        assert!(m[462..510].iter().all(|&b| b == 0));
        assert_eq!(&m[510..], &[0x55, 0xAA]);
        assert_eq!(chs(1), [0, 2, 0]);
        assert_eq!(chs(100_000_000), [0xFF; 3]);
    }

    #[test]
    fn writes_only_gpt_structures() {
        let l = small();
        let d = written(&l, 0xAB);
        let last = l.last_lba();
        let untouched = &d[(34 * SECTOR) as usize..((last - 32) * SECTOR) as usize];
        assert!(untouched.iter().all(|&b| b == 0xAB));
        // Deterministic: same layout, same bytes.
        assert_eq!(d, written(&l, 0xAB));
    }

    #[test]
    fn read_round_trips_both_slots() {
        for active in [Slot::A, Slot::B] {
            let l = small_with(active);
            let got = read(&mut Cursor::new(written(&l, 0))).unwrap();
            assert_eq!(got, l);
            assert_eq!(got.active(), active);
        }
    }

    fn read_err(d: Vec<u8>) -> (String, ReadError) {
        let e = read(&mut Cursor::new(d)).unwrap_err();
        let msg = format!("{e:#}");
        (msg, e.downcast::<ReadError>().unwrap())
    }

    #[test]
    fn read_rejects_damage_clearly() {
        let l = small();
        let good = written(&l, 0);

        let (msg, e) = read_err(vec![0; 4 * MIB as usize]);
        assert!(
            matches!(e, ReadError::NotGpt(_)) && msg.contains("55 AA"),
            "{msg}"
        );

        let mut d = good.clone();
        d[(SECTOR + 16) as usize] ^= 1; // primary header CRC
        let (msg, e) = read_err(d);
        assert!(
            matches!(e, ReadError::Corrupt(_))
                && msg.contains("primary header")
                && msg.contains("CRC32"),
            "{msg}"
        );

        let mut d = good.clone();
        d[(2 * SECTOR + 130) as usize] ^= 1; // primary entries
        let (msg, _) = read_err(d);
        assert!(
            msg.contains("primary entry array") && msg.contains("CRC32"),
            "{msg}"
        );

        let mut d = good.clone();
        d[(l.last_lba() * SECTOR + 40) as usize] ^= 1; // backup header field
        let (msg, _) = read_err(d);
        assert!(
            msg.contains("backup header") && msg.contains("CRC32"),
            "{msg}"
        );

        let d = good[..good.len() - SECTOR as usize].to_vec();
        let (msg, _) = read_err(d);
        assert!(msg.contains("truncated"), "{msg}");
    }

    #[test]
    fn read_rejects_foreign_layouts() {
        let mut l = small();
        l.partitions[5].name = "home";
        let (msg, e) = read_err(written(&l, 0));
        assert!(
            matches!(e, ReadError::NotBerth(_))
                && msg.contains("\"home\"")
                && msg.contains("\"state\""),
            "{msg}"
        );

        let mut l = small();
        l.partitions.pop();
        let (msg, _) = read_err(written(&l, 0));
        assert!(msg.contains("5 partitions"), "{msg}");

        let mut l = small();
        l.partitions[1].attributes |= ATTR_NO_AUTO;
        let (msg, _) = read_err(written(&l, 0));
        assert!(msg.contains("active slot"), "{msg}");
    }
}
