//! The disk's GUID partition table, as the builder reads and writes it: the layout, the codec
//! and the edits are the contract's ([`berth_contract::gpt`], shared with berth-init); this
//! module only moves the sectors between a [`DiskLayout`] and a file.

use std::io::{Read, Seek, SeekFrom, Write};

use anyhow::{Context, Result};

pub use berth_contract::dps::{
    ATTR_NO_AUTO, ATTR_READ_ONLY, ATTR_REQUIRED, ESP_TYPE, ROOT_VERITY_X86_64_TYPE,
    ROOT_X86_64_TYPE, VAR_TYPE,
};
pub use berth_contract::gpt::Table;
pub use berth_contract::layout::{ALIGN, PARTITION_NAMES, PARTITION_TYPES};
pub use berth_contract::{
    crc32, plan, roothash_partuuids, DiskLayout, DiskSpec, Error, Guid, PartitionPlan, Slot, SECTOR,
};

use crate::units::Bytes;

fn write_at<W: Write + Seek>(out: &mut W, lba: u64, data: &[u8], what: &str) -> Result<()> {
    out.seek(SeekFrom::Start(lba * SECTOR))
        .with_context(|| format!("seeking to the {what} at LBA {lba}"))?;
    out.write_all(data)
        .with_context(|| format!("writing the {what} at LBA {lba}"))
}

/// Writes the protective MBR, both headers and both entry arrays of `layout`.
///
/// Nothing else is written: partition contents go at [`PartitionPlan::offset`], by the caller,
/// before or after. Writing the backup header makes a shorter file `disk_size` long; a caller
/// writing a sparse file can `set_len(disk_size)` first, either way.
pub fn write<W: Write + Seek>(layout: &DiskLayout, out: &mut W) -> Result<()> {
    write_table(&layout.table(), out)
}

/// Writes an (edited) table's sectors, backup copy first.
pub fn write_table<W: Write + Seek>(table: &Table, out: &mut W) -> Result<()> {
    let enc = table.encode();
    for (what, lba, bytes) in enc.writes() {
        write_at(out, lba, bytes, what)?;
    }
    out.flush().context("flushing the GPT")
}

fn read_at<R: Read + Seek>(r: &mut R, lba: u64, buf: &mut [u8], what: &str) -> Result<()> {
    r.seek(SeekFrom::Start(lba * SECTOR))
        .with_context(|| format!("seeking to the {what} at LBA {lba}"))?;
    r.read_exact(buf)
        .with_context(|| format!("reading the {what} at LBA {lba}"))
}

/// Reads one copy of the table: the header at `lba` and the entry array it points to.
fn read_copy<R: Read + Seek>(r: &mut R, lba: u64, which: &str) -> Result<Table> {
    let mut s = [0u8; SECTOR as usize];
    read_at(r, lba, &mut s, &format!("{which} GPT header"))?;
    let h = Table::decode_header(&s, lba)?;
    let mut entries = vec![0u8; h.entry_array_bytes() as usize];
    read_at(
        r,
        h.entries_lba,
        &mut entries,
        &format!("{which} GPT entries"),
    )?;
    Ok(Table::decode(&s, lba, &entries)?)
}

/// Reads a disk's GPT, checks it (protective MBR, both headers' and entry arrays' CRC32s, the
/// two copies agreeing) and that it holds berth's six partitions with their names and types.
///
/// A damaged primary header or array is an error even when the backup is intact (sgdisk would
/// recover from the backup): berth never boots or updates a disk whose table it cannot trust,
/// and repairing it is a job for `sgdisk`, on purpose. Errors wrap an [`Error`]
/// (`downcast_ref::<gpt::Error>()` tells "not ours" from "ours but damaged").
pub fn read<R: Read + Seek>(r: &mut R) -> Result<DiskLayout> {
    read_table(r).and_then(|t| Ok(DiskLayout::from_table(&t)?))
}

/// Reads and checks both copies of a disk's GPT (see [`read`]) and returns the primary.
pub fn read_table<R: Read + Seek>(r: &mut R) -> Result<Table> {
    let len = r
        .seek(SeekFrom::End(0))
        .context("finding the disk's size")?;
    let total = len / SECTOR;
    if total < 2 * berth_contract::gpt::FIRST_USABLE_LBA {
        return Err(Error::NotGpt(format!("{} is too small to hold a GPT", Bytes(len))).into());
    }
    let mut mbr = [0u8; SECTOR as usize];
    read_at(r, 0, &mut mbr, "MBR")?;
    berth_contract::gpt::check_protective_mbr(&mbr)?;
    let primary = read_copy(r, 1, "primary")?;
    let alt = primary.header.alternate_lba;
    if alt <= primary.header.last_usable_lba || alt >= total {
        return Err(Error::Corrupt(format!(
            "the primary header puts the backup header at LBA {alt}, outside the disk ({total} sectors): truncated or damaged image"
        ))
        .into());
    }
    let backup = read_copy(r, alt, "backup")?;
    primary.check_backup(&backup)?;
    Ok(primary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn small() -> DiskLayout {
        plan(&DiskSpec {
            esp: Bytes::mib(2),
            root_slot: Bytes::mib(3),
            verity_slot: Bytes(4096),
            state: Bytes::mib(1),
            disk_guid: Guid::parse("11111111-2222-3333-4444-555555555555").unwrap(),
            part_guids: std::array::from_fn(|i| Guid::from_bytes([i as u8 + 1; 16])),
            active: Slot::A,
        })
        .unwrap()
    }

    fn written(l: &DiskLayout) -> Vec<u8> {
        let mut c = Cursor::new(vec![0; l.disk_size().get() as usize]);
        write(l, &mut c).unwrap();
        c.into_inner()
    }

    #[test]
    fn file_round_trip() {
        let l = small();
        assert_eq!(read(&mut Cursor::new(written(&l))).unwrap(), l);
    }

    #[test]
    fn errors_keep_their_kind_through_anyhow() {
        let l = small();
        let e = read(&mut Cursor::new(vec![0; 4 << 20])).unwrap_err();
        assert!(
            matches!(e.downcast_ref::<Error>(), Some(Error::NotGpt(_))),
            "{e:#}"
        );
        let mut d = written(&l);
        d[(SECTOR + 16) as usize] ^= 1;
        let e = read(&mut Cursor::new(d)).unwrap_err();
        assert!(
            matches!(e.downcast_ref::<Error>(), Some(Error::Corrupt(_))),
            "{e:#}"
        );
        assert!(format!("{e:#}").contains("primary header"), "{e:#}");
        let d = written(&l);
        let e = read(&mut Cursor::new(d[..d.len() - 512].to_vec())).unwrap_err();
        assert!(format!("{e:#}").contains("truncated"), "{e:#}");
    }
}
