//! Linear directories: `ext4_dir_entry_2` records packed into 4 KiB blocks.
//!
//! Each block is a chain of records (inode, rec_len, name_len, file_type, name padded to 4
//! bytes); the last record's `rec_len` stretches to the end of the usable space. With
//! metadata_csum the last 12 bytes are a fake record (inode 0, rec_len 12, type 0xDE) holding
//! the block's CRC32C. The first block starts with `.` and `..`.

use anyhow::{bail, Result};

use super::csum;
use super::layout::BLOCK_SIZE;

const BS: usize = BLOCK_SIZE as usize;
const TAIL: usize = 12;
/// Bytes of each block available to real records.
const USABLE: usize = BS - TAIL;

/// `file_type` codes of `ext4_dir_entry_2`.
pub mod ftype {
    pub const REG: u8 = 1;
    pub const DIR: u8 = 2;
    pub const CHR: u8 = 3;
    pub const BLK: u8 = 4;
    pub const FIFO: u8 = 5;
    pub const SOCK: u8 = 6;
    pub const LNK: u8 = 7;
}

/// One name in a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirEntry<'a> {
    pub name: &'a [u8],
    pub ino: u32,
    pub ftype: u8,
}

/// On-disk size of a record with a name of `len` bytes.
fn rec_size(len: usize) -> usize {
    (8 + len).next_multiple_of(4)
}

fn put(block: &mut [u8], off: usize, rec_len: usize, e: &DirEntry<'_>) {
    block[off..off + 4].copy_from_slice(&e.ino.to_le_bytes());
    block[off + 4..off + 6].copy_from_slice(&(rec_len as u16).to_le_bytes());
    block[off + 6] = e.name.len() as u8;
    block[off + 7] = e.ftype;
    block[off + 8..off + 8 + e.name.len()].copy_from_slice(e.name);
}

/// Checks that `name` can be a directory entry name.
pub fn check_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name.len() > 255 {
        bail!(
            "name is {} bytes; ext4 names are 1 to 255 bytes",
            name.len()
        );
    }
    if name.contains(&0) || name.contains(&b'/') {
        bail!("name contains a NUL or '/' byte");
    }
    if name == b"." || name == b".." {
        bail!("name is '.' or '..'");
    }
    Ok(())
}

/// Packs a directory: `.` -> `ino`, `..` -> `parent`, then `entries` in order, at least
/// `min_blocks` blocks (lost+found is made 4 blocks long, as mke2fs does, so e2fsck can
/// reconnect files without allocating). Blocks come back with a zeroed checksum tail; call
/// [`seal`] once the inode's checksum seed is known.
pub fn pack(ino: u32, parent: u32, entries: &[DirEntry<'_>], min_blocks: usize) -> Vec<Vec<u8>> {
    let dot = DirEntry {
        name: b".",
        ino,
        ftype: ftype::DIR,
    };
    let dotdot = DirEntry {
        name: b"..",
        ino: parent,
        ftype: ftype::DIR,
    };
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut block = vec![0u8; BS];
    // Offset and size of the last record written in `block`, so its rec_len can be stretched.
    let mut last: Option<(usize, usize)> = None;
    let mut off = 0;
    let finish = |block: &mut Vec<u8>, last: Option<(usize, usize)>, off: usize| {
        match last {
            Some((at, _)) => {
                let len = (USABLE - at) as u16;
                block[at + 4..at + 6].copy_from_slice(&len.to_le_bytes());
            }
            None => block[4..6].copy_from_slice(&(USABLE as u16).to_le_bytes()),
        }
        debug_assert!(off <= USABLE);
        block[USABLE + 4..USABLE + 6].copy_from_slice(&(TAIL as u16).to_le_bytes());
        block[USABLE + 7] = 0xDE;
    };
    for e in [dot, dotdot].iter().chain(entries) {
        let size = rec_size(e.name.len());
        if off + size > USABLE {
            finish(&mut block, last, off);
            blocks.push(std::mem::replace(&mut block, vec![0u8; BS]));
            off = 0;
        }
        put(&mut block, off, size, e);
        last = Some((off, size));
        off += size;
    }
    finish(&mut block, last, off);
    blocks.push(block);
    while blocks.len() < min_blocks {
        let mut b = vec![0u8; BS];
        finish(&mut b, None, 0);
        blocks.push(b);
    }
    blocks
}

/// Fills the checksum tail of a directory block; `seed` is the directory inode's seed.
pub fn seal(block: &mut [u8], seed: u32) {
    let c = csum::raw(seed, &block[..USABLE]);
    block[USABLE + 8..BS].copy_from_slice(&c.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// mke2fs's root directory block: `.`, `..`, `lost+found`, checksum tail.
    const MKE2FS_ROOT: &[u8; 4096] = include_bytes!("testdata/mke2fs-rootdir.bin");

    #[test]
    fn root_block_matches_mke2fs_byte_for_byte() {
        let lpf = [DirEntry {
            name: b"lost+found",
            ino: 11,
            ftype: ftype::DIR,
        }];
        let mut blocks = pack(2, 2, &lpf, 1);
        assert_eq!(blocks.len(), 1);
        // The reference filesystem's uuid and the root inode's generation (0).
        let uuid = [
            0x11, 0x11, 0x11, 0x11, 0x22, 0x22, 0x33, 0x33, 0x44, 0x44, 0x55, 0x55, 0x55, 0x55,
            0x55, 0x55,
        ];
        seal(&mut blocks[0], csum::inode_seed(csum::fs_seed(&uuid), 2, 0));
        assert_eq!(&blocks[0][..], &MKE2FS_ROOT[..]);
    }

    #[test]
    fn many_entries_span_blocks_and_each_chain_covers_the_block() {
        let names: Vec<String> = (0..3000).map(|i| format!("file-{i:05}")).collect();
        let entries: Vec<DirEntry<'_>> = names
            .iter()
            .enumerate()
            .map(|(i, n)| DirEntry {
                name: n.as_bytes(),
                ino: 100 + i as u32,
                ftype: 1,
            })
            .collect();
        let blocks = pack(12, 2, &entries, 1);
        assert!(blocks.len() > 10);
        let mut seen = 0;
        for b in &blocks {
            let mut off = 0;
            while off < USABLE {
                let rec = u16::from_le_bytes([b[off + 4], b[off + 5]]) as usize;
                assert!(rec >= 12 && off + rec <= USABLE);
                if u32::from_le_bytes(b[off..off + 4].try_into().unwrap()) >= 100 {
                    seen += 1;
                }
                off += rec;
            }
            assert_eq!(off, USABLE);
        }
        assert_eq!(seen, 3000);
    }

    #[test]
    fn empty_padding_blocks_for_lost_and_found() {
        let blocks = pack(11, 2, &[], 4);
        assert_eq!(blocks.len(), 4);
        assert_eq!(
            u16::from_le_bytes([blocks[3][4], blocks[3][5]]) as usize,
            USABLE
        );
        assert_eq!(&blocks[3][..4], &[0, 0, 0, 0]);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name(b"ok").is_ok());
        assert!(check_name(&[b'a'; 256]).is_err());
        assert!(check_name(b"a\0b").is_err());
        assert!(check_name(b"..").is_err());
    }
}
