//! GPT on disk (UEFI spec, "GUID Partition Table (GPT) Disk Layout"): protective MBR, the two
//! headers and the two entry arrays, decoded into a [`Table`], edited, and encoded back into
//! the sectors to write. All integers are little-endian. No I/O: callers read the sectors
//! (the builder through `Read + Seek`, the init with `read_exact_at`) and write what
//! [`Table::encode`] returns, in the order [`Encoded::writes`] gives.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::dps::ATTR_NO_AUTO;
use crate::layout::{
    root_index, slot_attributes, verity_index, DiskLayout, PartitionPlan, ALIGN, PARTITION_NAMES,
    PARTITION_TYPES,
};
use crate::units::{Bytes, SECTOR};
use crate::{crc32, Error, Guid, Result, Slot};

pub const SIGNATURE: &[u8; 8] = b"EFI PART";
/// GPT revision 1.0, the only one there is.
const REVISION: u32 = 0x0001_0000;
/// The header's defined fields; the rest of its sector is reserved and zero.
pub const HEADER_SIZE: u32 = 92;
/// UEFI's minimum array size, and what every tool writes: 128 entries of 128 bytes = 16 KiB.
pub const NUM_ENTRIES: u32 = 128;
pub const ENTRY_SIZE: u32 = 128;
pub const ENTRY_ARRAY_SECTORS: u64 = (NUM_ENTRIES as u64 * ENTRY_SIZE as u64) / SECTOR;
/// MBR + primary header + primary entries.
pub const FIRST_USABLE_LBA: u64 = 2 + ENTRY_ARRAY_SECTORS;
/// Largest entry array accepted: far beyond any real disk, small enough to allocate.
pub const MAX_ENTRY_ARRAY: u64 = 4 * 1024 * 1024;
/// Partition names are 36 UTF-16 code units.
const NAME_UNITS: usize = 36;
const MBR_TYPE_GPT_PROTECTIVE: u8 = 0xEE;
const S: usize = SECTOR as usize;

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from(u32_at(b, off)) | (u64::from(u32_at(b, off + 4)) << 32)
}

fn guid_at(b: &[u8], off: usize) -> Guid {
    let mut g = [0u8; 16];
    g.copy_from_slice(&b[off..off + 16]);
    Guid::from_disk_bytes(g)
}

/// One GPT header's fields (the header CRC is computed on encode and checked on decode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub my_lba: u64,
    pub alternate_lba: u64,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    pub disk_guid: Guid,
    pub entries_lba: u64,
    pub num_entries: u32,
    pub entry_size: u32,
    pub entries_crc: u32,
}

impl Header {
    pub fn encode(&self) -> [u8; S] {
        let mut s = [0u8; S];
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

    /// Decodes and checks the header sector read from `lba`. An error says what is wrong:
    /// [`Error::NotGpt`] without a signature, [`Error::Corrupt`] otherwise.
    pub fn decode(s: &[u8], lba: u64) -> Result<Header> {
        if s.len() < S {
            return Err(Error::Corrupt(format!(
                "the GPT header at LBA {lba} is truncated ({} bytes)",
                s.len()
            )));
        }
        if &s[0..8] != SIGNATURE {
            return Err(Error::NotGpt(format!(
                "no \"EFI PART\" signature at LBA {lba}"
            )));
        }
        let bad = |m: String| Err(Error::Corrupt(m));
        let revision = u32_at(s, 8);
        if revision >> 16 != 1 {
            return bad(format!(
                "header at LBA {lba} has revision {revision:#010x}; only 1.x is defined"
            ));
        }
        let size = u32_at(s, 12);
        if !(HEADER_SIZE..=SECTOR as u32).contains(&size) {
            return bad(format!(
                "header at LBA {lba} claims a size of {size} bytes (must be 92..=512)"
            ));
        }
        let stored = u32_at(s, 16);
        let mut copy = [0u8; S];
        copy.copy_from_slice(&s[..S]);
        copy[16..20].fill(0);
        let actual = crc32(&copy[..size as usize]);
        if stored != actual {
            return bad(format!(
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
            return bad(format!(
                "header at LBA {lba} says it is at LBA {}",
                h.my_lba
            ));
        }
        if h.entry_size < ENTRY_SIZE || !h.entry_size.is_power_of_two() {
            return bad(format!(
                "header at LBA {lba}: entry size {} is not 128 x 2^n",
                h.entry_size
            ));
        }
        if h.entry_array_bytes() > MAX_ENTRY_ARRAY {
            return bad(format!(
                "header at LBA {lba}: {} entries of {} bytes is implausible",
                h.num_entries, h.entry_size
            ));
        }
        if h.first_usable_lba > h.last_usable_lba {
            return bad(format!(
                "header at LBA {lba}: first usable LBA {} is past the last, {}",
                h.first_usable_lba, h.last_usable_lba
            ));
        }
        Ok(h)
    }

    /// Length of the entry array this header describes.
    pub fn entry_array_bytes(&self) -> u64 {
        u64::from(self.num_entries) * u64::from(self.entry_size)
    }

    /// Sectors the entry array occupies.
    pub fn entry_array_sectors(&self) -> u64 {
        self.entry_array_bytes().div_ceil(SECTOR)
    }
}

/// A used entry of the partition array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// 1-based, as the kernel numbers partitions.
    pub index: u32,
    pub type_guid: Guid,
    pub guid: Guid,
    pub first_lba: u64,
    /// Inclusive, as GPT stores it.
    pub last_lba: u64,
    pub attributes: u64,
    pub name: String,
}

impl Entry {
    pub fn size(&self) -> Bytes {
        Bytes((self.last_lba - self.first_lba + 1) * SECTOR)
    }
}

/// A disk's GPT as read from one copy (its header and entry array), or as planned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub header: Header,
    /// The used entries, in entry order.
    pub entries: Vec<Entry>,
}

/// What the GPT of a disk is on its sectors: write each at its LBA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    pub mbr: [u8; S],
    pub primary: [u8; S],
    pub primary_entries_lba: u64,
    pub entries: Vec<u8>,
    pub backup: [u8; S],
    pub backup_lba: u64,
    pub backup_entries_lba: u64,
}

impl Encoded {
    /// `(what, lba, bytes)` in the order to write them so that a power cut at any point leaves
    /// a disk with at least one valid table: the backup copy first (until the primary header
    /// is replaced, the old primary stays valid), then the primary entries and header, then
    /// the protective MBR.
    pub fn writes(&self) -> [(&'static str, u64, &[u8]); 5] {
        [
            ("backup GPT entries", self.backup_entries_lba, &self.entries),
            ("backup GPT header", self.backup_lba, &self.backup),
            (
                "primary GPT entries",
                self.primary_entries_lba,
                &self.entries,
            ),
            ("primary GPT header", 1, &self.primary),
            ("protective MBR", 0, &self.mbr),
        ]
    }
}

/// Checks LBA 0 is a protective MBR (boot signature and a 0xEE partition).
pub fn check_protective_mbr(mbr: &[u8]) -> Result<()> {
    if mbr.len() < S || mbr[510..512] != [0x55, 0xAA] {
        return Err(Error::NotGpt(
            "no MBR boot signature (55 AA) at LBA 0".into(),
        ));
    }
    if !(0..4).any(|i| mbr[446 + 16 * i + 4] == MBR_TYPE_GPT_PROTECTIVE) {
        return Err(Error::NotGpt(
            "the MBR at LBA 0 has no protective (0xEE) partition: an MBR-partitioned disk".into(),
        ));
    }
    Ok(())
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
pub fn protective_mbr(total_lbas: u64) -> [u8; S] {
    let mut s = [0u8; S];
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

impl Table {
    /// Decodes one copy of the table: the header sector read from `lba` and the entry array
    /// read from the header's `entries_lba` (exactly [`Header::entry_array_bytes`] long).
    /// Checks both CRCs and that every used entry lies in the usable area.
    pub fn decode(header: &[u8], lba: u64, array: &[u8]) -> Result<Table> {
        let which = if lba == 1 { "primary" } else { "backup" };
        let h = Table::decode_header(header, lba)?;
        if array.len() as u64 != h.entry_array_bytes() {
            return Err(Error::Corrupt(format!(
                "{which} entry array: {} bytes given, the header describes {} x {}",
                array.len(),
                h.num_entries,
                h.entry_size
            )));
        }
        let actual = crc32(array);
        if actual != h.entries_crc {
            return Err(Error::Corrupt(format!(
                "{which} entry array at LBA {}: CRC32 is {actual:#010x}, the header says {:#010x}",
                h.entries_lba, h.entries_crc
            )));
        }
        let mut entries = Vec::new();
        for (i, e) in array.chunks_exact(h.entry_size as usize).enumerate() {
            let type_guid = guid_at(e, 0);
            if type_guid.is_nil() {
                continue;
            }
            let units: Vec<u16> = e[56..56 + 2 * NAME_UNITS]
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&u| u != 0)
                .collect();
            let name = String::from_utf16_lossy(&units);
            let (first_lba, last_lba) = (u64_at(e, 32), u64_at(e, 40));
            if first_lba > last_lba
                || first_lba < h.first_usable_lba
                || last_lba > h.last_usable_lba
            {
                return Err(Error::Corrupt(format!(
                    "partition {} ({name:?}) spans LBA {first_lba}..={last_lba}, outside the usable LBA {}..={}",
                    i + 1,
                    h.first_usable_lba,
                    h.last_usable_lba
                )));
            }
            entries.push(Entry {
                index: i as u32 + 1,
                type_guid,
                guid: guid_at(e, 16),
                first_lba,
                last_lba,
                attributes: u64_at(e, 48),
                name,
            });
        }
        Ok(Table { header: h, entries })
    }

    /// The header of the copy at `lba`, to learn where its entry array is and how long:
    /// [`Header::decode`] with errors that say which copy (only a primary without a signature
    /// is [`Error::NotGpt`]; anything else wrong is [`Error::Corrupt`]).
    pub fn decode_header(header: &[u8], lba: u64) -> Result<Header> {
        let which = if lba == 1 { "primary" } else { "backup" };
        Header::decode(header, lba).map_err(|e| match e {
            Error::NotGpt(m) if lba == 1 => Error::NotGpt(m),
            e => Error::Corrupt(format!("{which} header: {}", e.message())),
        })
    }

    /// Checks that `backup` (decoded from the primary's alternate LBA) mirrors this primary
    /// table, as UEFI requires.
    pub fn check_backup(&self, backup: &Table) -> Result<()> {
        let p = &self.header;
        let mirrored = Header {
            my_lba: p.my_lba,
            alternate_lba: p.alternate_lba,
            entries_lba: p.entries_lba,
            ..backup.header.clone()
        };
        if backup.header.my_lba != p.alternate_lba
            || backup.header.alternate_lba != p.my_lba
            || mirrored != *p
            || backup.entries != self.entries
        {
            return Err(Error::Corrupt(format!(
                "the backup header at LBA {} does not match the primary one (primary {:?}, backup {:?})",
                p.alternate_lba, p, backup.header
            )));
        }
        Ok(())
    }

    /// The used entry with that unique partition GUID (`PARTUUID`).
    pub fn find(&self, guid: Guid) -> Option<&Entry> {
        self.entries.iter().find(|e| e.guid == guid)
    }

    /// The first used entry of that type.
    pub fn find_type(&self, type_guid: Guid) -> Option<&Entry> {
        self.entries.iter().find(|e| e.type_guid == type_guid)
    }

    fn entry_mut(&mut self, index: u32) -> Result<&mut Entry> {
        self.entries
            .iter_mut()
            .find(|e| e.index == index)
            .ok_or_else(|| Error::NotBerth(format!("the GPT has no entry {index}")))
    }

    /// The entry array, `num_entries` x `entry_size`, unused entries zero.
    pub fn encode_entries(&self) -> Vec<u8> {
        let esize = self.header.entry_size as usize;
        let mut a = alloc::vec![0u8; self.header.entry_array_bytes() as usize];
        for p in &self.entries {
            let off = (p.index as usize - 1) * esize;
            let e = &mut a[off..off + esize];
            e[0..16].copy_from_slice(&p.type_guid.to_disk_bytes());
            e[16..32].copy_from_slice(&p.guid.to_disk_bytes());
            e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
            e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
            e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
            for (i, unit) in p.name.encode_utf16().take(NAME_UNITS).enumerate() {
                e[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
            }
        }
        a
    }

    /// Both copies and the protective MBR for this table, the primary at LBA 1 and the backup
    /// at the header's alternate LBA (the disk's last sector).
    pub fn encode(&self) -> Encoded {
        let entries = self.encode_entries();
        let last = self.header.alternate_lba;
        let array_sectors = self.header.entry_array_sectors();
        let primary = Header {
            my_lba: 1,
            alternate_lba: last,
            entries_crc: crc32(&entries),
            ..self.header.clone()
        };
        let backup = Header {
            my_lba: last,
            alternate_lba: 1,
            entries_lba: last - array_sectors,
            ..primary.clone()
        };
        Encoded {
            mbr: protective_mbr(last + 1),
            primary: primary.encode(),
            primary_entries_lba: primary.entries_lba,
            entries,
            backup: backup.encode(),
            backup_lba: last,
            backup_entries_lba: backup.entries_lba,
        }
    }

    /// Grows partition `index` to the end of a disk of `disk_sectors`, if it is the last
    /// partition and the disk leaves room after it: its end moves to the last usable LBA
    /// (aligned down to 1 MiB) and the backup copy to the disk's last sector. Returns the
    /// partition's old and new last LBA, or `None` when there is nothing to grow.
    pub fn grow_last(&mut self, index: u32, disk_sectors: u64) -> Option<(u64, u64)> {
        let array_sectors = self.header.entry_array_sectors();
        let e = self.entries.iter().find(|e| e.index == index)?;
        if self.entries.iter().any(|o| o.last_lba > e.last_lba) {
            return None; // not the last partition: nothing to grow into
        }
        let last = disk_sectors.checked_sub(1)?;
        let last_usable = last.checked_sub(array_sectors + 1)?;
        let align = ALIGN / SECTOR;
        let new_last = ((last_usable + 1) / align * align).checked_sub(1)?;
        let old_last = e.last_lba;
        if new_last <= old_last {
            return None;
        }
        self.header.alternate_lba = last;
        self.header.last_usable_lba = last_usable;
        if let Ok(e) = self.entry_mut(index) {
            e.last_lba = new_last;
        }
        Some((old_last, new_last))
    }

    /// Marks `slot` the one that boots: its root and verity partitions lose the no-auto bit,
    /// the other slot's gain it; both stay read-only. Other attribute bits are kept.
    pub fn set_active(&mut self, slot: Slot) -> Result<()> {
        for s in Slot::ALL {
            for index in [root_index(s), verity_index(s)] {
                let e = self.entry_mut(index)?;
                e.attributes = (e.attributes & !ATTR_NO_AUTO) | slot_attributes(s, slot);
            }
        }
        Ok(())
    }

    /// Marks `slot` not bootable (no-auto on its partitions) without touching the other slot:
    /// the first step of writing an update into it.
    pub fn set_inactive(&mut self, slot: Slot) -> Result<()> {
        for index in [root_index(slot), verity_index(slot)] {
            self.entry_mut(index)?.attributes |= ATTR_NO_AUTO;
        }
        Ok(())
    }

    /// Sets the unique GUIDs of a slot's root and verity partitions (after an update, the
    /// halves of the new root hash: [`crate::roothash_partuuids`]). A GUID another partition
    /// already has is refused, since `PARTUUID=` lookups need unique GUIDs.
    pub fn set_slot_guids(&mut self, slot: Slot, root: Guid, verity: Guid) -> Result<()> {
        let (ri, vi) = (root_index(slot), verity_index(slot));
        for (g, idx) in [(root, ri), (verity, vi)] {
            if g.is_nil() {
                return Err(Error::Invalid(format!(
                    "partition {idx}: the nil GUID is reserved"
                )));
            }
            if let Some(o) = self
                .entries
                .iter()
                .find(|e| e.guid == g && e.index != ri && e.index != vi)
            {
                return Err(Error::Invalid(format!(
                    "GUID {g} for partition {idx} is already partition {}'s",
                    o.index
                )));
            }
        }
        if root == verity {
            return Err(Error::Invalid(format!(
                "root and verity GUIDs are both {root}"
            )));
        }
        self.entry_mut(ri)?.guid = root;
        self.entry_mut(vi)?.guid = verity;
        Ok(())
    }
}

impl DiskLayout {
    /// The GPT that describes this layout: 128 entries, primary entries at LBA 2, backup at
    /// the disk's last sector.
    pub fn table(&self) -> Table {
        let last = self.last_lba();
        let entries: Vec<Entry> = self
            .partitions
            .iter()
            .map(|p| Entry {
                index: p.index,
                type_guid: p.type_guid,
                guid: p.guid,
                first_lba: p.first_lba,
                last_lba: p.last_lba,
                attributes: p.attributes,
                name: String::from(p.name),
            })
            .collect();
        let mut t = Table {
            header: Header {
                my_lba: 1,
                alternate_lba: last,
                first_usable_lba: FIRST_USABLE_LBA,
                last_usable_lba: last - 1 - ENTRY_ARRAY_SECTORS,
                disk_guid: self.disk_guid,
                entries_lba: 2,
                num_entries: NUM_ENTRIES,
                entry_size: ENTRY_SIZE,
                entries_crc: 0,
            },
            entries,
        };
        t.header.entries_crc = crc32(&t.encode_entries());
        t
    }

    /// Recognises berth's six partitions, names and types in order, in a decoded table; the
    /// disk's size is where the table puts its end (the backup header's LBA + 1); the active
    /// slot is the one whose root partition lacks the no-auto bit.
    pub fn from_table(t: &Table) -> Result<DiskLayout> {
        let found = &t.entries;
        let describe = || {
            found
                .iter()
                .map(|f| format!("{} {:?} ({})", f.index, f.name, f.type_guid))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if found.len() != PARTITION_NAMES.len() {
            return Err(Error::NotBerth(format!(
                "{} partitions [{}], berth disks have 6: {}",
                found.len(),
                describe(),
                PARTITION_NAMES.join(", ")
            )));
        }
        let mut partitions: Vec<PartitionPlan> = Vec::with_capacity(6);
        for (k, e) in found.iter().enumerate() {
            let (want_name, want_type) = (PARTITION_NAMES[k], PARTITION_TYPES[k]);
            if e.index as usize != k + 1 || e.name != want_name || e.type_guid != want_type {
                return Err(Error::NotBerth(format!(
                    "entry {} is {:?} of type {}; berth expects entry {} to be {want_name:?} of type {want_type} \
                     (partitions found: {})",
                    e.index,
                    e.name,
                    e.type_guid,
                    k + 1,
                    describe()
                )));
            }
            if let Some(prev) = partitions.last() {
                if e.first_lba <= prev.last_lba {
                    return Err(Error::Corrupt(format!(
                        "partition {} ({}) overlaps the one before it",
                        e.index, e.name
                    )));
                }
            }
            partitions.push(PartitionPlan {
                index: e.index,
                name: want_name,
                type_guid: e.type_guid,
                guid: e.guid,
                first_lba: e.first_lba,
                last_lba: e.last_lba,
                attributes: e.attributes,
            });
        }
        let no_auto =
            |s: Slot| partitions[(root_index(s) - 1) as usize].attributes & ATTR_NO_AUTO != 0;
        let active = match (no_auto(Slot::A), no_auto(Slot::B)) {
            (false, true) => Slot::A,
            (true, false) => Slot::B,
            (a, b) => {
                let word = |x: bool| if x { "set" } else { "clear" };
                return Err(Error::NotBerth(format!(
                    "cannot tell the active slot: no-auto is {} on root-a and {} on root-b (exactly one must have it)",
                    word(a),
                    word(b)
                )));
            }
        };
        Ok(DiskLayout {
            disk_size: Bytes((t.header.alternate_lba.max(t.header.my_lba) + 1) * SECTOR),
            disk_guid: t.header.disk_guid,
            active,
            partitions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dps::{ATTR_READ_ONLY, ROOT_X86_64_TYPE};
    use crate::layout::{plan, DiskSpec};
    use crate::units::MIB;
    use alloc::string::ToString;

    fn small_with(active: Slot) -> DiskLayout {
        plan(&DiskSpec {
            esp: Bytes::mib(2),
            root_slot: Bytes::mib(3),
            verity_slot: Bytes(4096),
            state: Bytes::mib(1),
            disk_guid: Guid::parse("11111111-2222-3333-4444-555555555555").unwrap(),
            part_guids: core::array::from_fn(|i| Guid::from_bytes([i as u8 + 1; 16])),
            active,
        })
        .unwrap()
    }

    /// A whole disk image holding `e`'s sectors, `sectors` long, other bytes `fill`.
    fn image(e: &Encoded, sectors: u64, fill: u8) -> Vec<u8> {
        let mut d = alloc::vec![fill; (sectors * SECTOR) as usize];
        for (_, lba, bytes) in e.writes() {
            let o = (lba * SECTOR) as usize;
            d[o..o + bytes.len()].copy_from_slice(bytes);
        }
        d
    }

    fn sector(d: &[u8], lba: u64) -> &[u8] {
        &d[(lba * SECTOR) as usize..((lba + 1) * SECTOR) as usize]
    }

    /// Decodes the primary copy of a disk image, as the init does.
    fn decode_primary(d: &[u8]) -> Result<Table> {
        check_protective_mbr(sector(d, 0))?;
        let h = Header::decode(sector(d, 1), 1)?;
        let a = (h.entries_lba * SECTOR) as usize;
        Table::decode(sector(d, 1), 1, &d[a..a + h.entry_array_bytes() as usize])
    }

    fn decode_backup(d: &[u8], lba: u64) -> Result<Table> {
        let h = Header::decode(sector(d, lba), lba)?;
        let a = (h.entries_lba * SECTOR) as usize;
        Table::decode(
            sector(d, lba),
            lba,
            &d[a..a + h.entry_array_bytes() as usize],
        )
    }

    fn disk(l: &DiskLayout) -> Vec<u8> {
        image(&l.table().encode(), l.last_lba() + 1, 0)
    }

    #[test]
    fn header_fields() {
        let l = small_with(Slot::A);
        let d = disk(&l);
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
        let l = small_with(Slot::A);
        let d = disk(&l);
        let e = &sector(&d, 2)[128..256]; // entry 2: root-a
        assert_eq!(&e[0..16], &ROOT_X86_64_TYPE.to_disk_bytes());
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
    fn writes_only_gpt_structures_and_in_a_safe_order() {
        let l = small_with(Slot::A);
        let d = image(&l.table().encode(), l.last_lba() + 1, 0xAB);
        let untouched = &d[(34 * SECTOR) as usize..((l.last_lba() - 32) * SECTOR) as usize];
        assert!(untouched.iter().all(|&b| b == 0xAB));
        let order: Vec<&str> = l.table().encode().writes().iter().map(|w| w.0).collect();
        assert_eq!(order[..2], ["backup GPT entries", "backup GPT header"]);
        assert_eq!(order[4], "protective MBR");
    }

    #[test]
    fn decode_encode_round_trips_the_plan() {
        for active in Slot::ALL {
            let l = small_with(active);
            let d = disk(&l);
            let primary = decode_primary(&d).unwrap();
            assert_eq!(primary, l.table());
            let backup = decode_backup(&d, l.last_lba()).unwrap();
            primary.check_backup(&backup).unwrap();
            let got = DiskLayout::from_table(&primary).unwrap();
            assert_eq!(got, l);
            assert_eq!(got.active(), active);
            // And the encoding of a decoded table is the same bytes.
            assert_eq!(image(&primary.encode(), l.last_lba() + 1, 0), d);
        }
    }

    #[test]
    fn set_active_flips_only_the_no_auto_bits() {
        let a = small_with(Slot::A);
        let mut t = a.table();
        t.entries[1].attributes |= 1 << 48; // a type-specific bit must survive
        t.set_active(Slot::B).unwrap();
        let d = image(&t.encode(), a.last_lba() + 1, 0);
        let back = decode_primary(&d).unwrap();
        let l = DiskLayout::from_table(&back).unwrap();
        assert_eq!(l.active(), Slot::B);
        assert_eq!(
            l.root(Slot::A).attributes,
            ATTR_READ_ONLY | ATTR_NO_AUTO | 1 << 48
        );
        assert_eq!(l.root(Slot::B).attributes, ATTR_READ_ONLY);
        assert_eq!(l.verity(Slot::B).attributes, ATTR_READ_ONLY);
        let mut plain = small_with(Slot::B).table();
        plain.entries[1].attributes |= 1 << 48;
        assert_eq!(back.entries, plain.entries);
        // Back again gives the original table.
        let mut t2 = back.clone();
        t2.set_active(Slot::A).unwrap();
        t2.entries[1].attributes &= !(1 << 48);
        assert_eq!(t2.entries, a.table().entries);
    }

    #[test]
    fn set_inactive_leaves_no_slot_active_and_the_reader_says_so() {
        let mut t = small_with(Slot::A).table();
        t.set_inactive(Slot::B).unwrap(); // already inactive: unchanged
        assert_eq!(t, small_with(Slot::A).table());
        t.set_inactive(Slot::A).unwrap();
        let d = image(&t.encode(), small_with(Slot::A).last_lba() + 1, 0);
        let e = DiskLayout::from_table(&decode_primary(&d).unwrap()).unwrap_err();
        assert!(e.to_string().contains("active slot"), "{e}");
    }

    #[test]
    fn set_slot_guids_then_decode() {
        let l = small_with(Slot::A);
        let mut t = l.table();
        let h: [u8; 32] = core::array::from_fn(|i| 100 + i as u8);
        let (r, v) = crate::roothash_partuuids(&h);
        t.set_slot_guids(Slot::B, r, v).unwrap();
        let d = image(&t.encode(), l.last_lba() + 1, 0);
        let back = DiskLayout::from_table(&decode_primary(&d).unwrap()).unwrap();
        assert_eq!(back.root(Slot::B).guid, r);
        assert_eq!(back.verity(Slot::B).guid, v);
        assert_eq!(back.root(Slot::A).guid, l.root(Slot::A).guid);
        // A GUID another partition has is refused, and so is the nil GUID.
        let esp = l.esp().guid;
        assert!(t
            .set_slot_guids(Slot::B, esp, v)
            .unwrap_err()
            .to_string()
            .contains("already"));
        assert!(t.set_slot_guids(Slot::B, Guid::NIL, v).is_err());
        assert!(t.set_slot_guids(Slot::B, v, v).is_err());
    }

    #[test]
    fn grow_last_then_decode() {
        let l = small_with(Slot::A);
        let mut t = l.table();
        assert_eq!(
            t.grow_last(6, l.last_lba() + 1),
            None,
            "nothing to grow into"
        );
        assert_eq!(t.grow_last(2, 1 << 20), None, "not the last partition");
        // The disk grew to 64 MiB: grow the state partition, write the new table there.
        let sectors = 131_072;
        let old = l.state().last_lba;
        let (was, now) = t.grow_last(6, sectors).unwrap();
        assert_eq!((was, now), (old, 129_023)); // last usable 131_038, aligned down to 1 MiB
        let mut big = disk(&l);
        big.truncate(((l.last_lba() - 32) * SECTOR) as usize); // the old backup is gone
        big.resize((sectors * SECTOR) as usize, 0);
        for (_, lba, bytes) in t.encode().writes() {
            let o = (lba * SECTOR) as usize;
            big[o..o + bytes.len()].copy_from_slice(bytes);
        }
        let p = decode_primary(&big).unwrap();
        p.check_backup(&decode_backup(&big, sectors - 1).unwrap())
            .unwrap();
        let back = DiskLayout::from_table(&p).unwrap();
        assert_eq!(back.state().last_lba, 129_023);
        assert_eq!(back.disk_size(), Bytes(sectors * SECTOR));
        assert_eq!(p.header.last_usable_lba, sectors - 34);
        assert_eq!(u32_at(&big, 446 + 12), (sectors - 1) as u32);
        // Everything but the state partition's end is as before.
        for (a, b) in back.partitions()[..5].iter().zip(l.partitions()) {
            assert_eq!(a, b);
        }
    }

    #[test]
    fn decode_rejects_damage_clearly() {
        let l = small_with(Slot::A);
        let good = disk(&l);
        let e = decode_primary(&alloc::vec![0; 4 * MIB as usize]).unwrap_err();
        assert!(
            matches!(e, Error::NotGpt(_)) && e.to_string().contains("55 AA"),
            "{e}"
        );

        let mut d = good.clone();
        d[(SECTOR + 16) as usize] ^= 1; // primary header CRC
        let e = decode_primary(&d).unwrap_err();
        let m = e.to_string();
        assert!(
            matches!(e, Error::Corrupt(_)) && m.contains("header") && m.contains("CRC32"),
            "{m}"
        );

        let mut d = good.clone();
        d[(2 * SECTOR + 130) as usize] ^= 1; // primary entries
        let m = decode_primary(&d).unwrap_err().to_string();
        assert!(
            m.contains("primary entry array") && m.contains("CRC32"),
            "{m}"
        );

        let mut d = good.clone();
        d[(l.last_lba() * SECTOR + 40) as usize] ^= 1; // backup header field
        let m = decode_backup(&d, l.last_lba()).unwrap_err().to_string();
        assert!(m.contains("CRC32"), "{m}");

        // A backup that decodes but differs from the primary.
        let mut other = l.table();
        other.entries[0].attributes = 4;
        other.header.entries_crc = crc32(&other.encode_entries());
        let mut d = good.clone();
        let enc = other.encode();
        let o = (enc.backup_entries_lba * SECTOR) as usize;
        d[o..o + enc.entries.len()].copy_from_slice(&enc.entries);
        let o = (enc.backup_lba * SECTOR) as usize;
        d[o..o + S].copy_from_slice(&enc.backup);
        let p = decode_primary(&d).unwrap();
        let m = p
            .check_backup(&decode_backup(&d, l.last_lba()).unwrap())
            .unwrap_err()
            .to_string();
        assert!(m.contains("does not match"), "{m}");
    }

    #[test]
    fn from_table_rejects_foreign_layouts() {
        let mut t = small_with(Slot::A).table();
        t.entries[5].name = "home".to_string();
        let e = DiskLayout::from_table(&t).unwrap_err();
        let m = e.to_string();
        assert!(
            matches!(e, Error::NotBerth(_)) && m.contains("\"home\"") && m.contains("\"state\""),
            "{m}"
        );

        let mut t = small_with(Slot::A).table();
        t.entries.pop();
        let m = DiskLayout::from_table(&t).unwrap_err().to_string();
        assert!(m.contains("5 partitions"), "{m}");

        let mut t = small_with(Slot::A).table();
        t.entries[1].attributes |= ATTR_NO_AUTO;
        let m = DiskLayout::from_table(&t).unwrap_err().to_string();
        assert!(m.contains("active slot"), "{m}");
    }
}
