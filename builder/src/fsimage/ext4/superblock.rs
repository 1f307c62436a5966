//! The ext4 superblock (and its backups) and the jbd2 journal superblock.

use anyhow::{bail, Result};

use super::csum;
use super::layout::{self, Geometry, BLOCKS_PER_GROUP, BLOCK_SIZE, DESC_SIZE, INODE_SIZE};

pub const MAGIC: u16 = 0xEF53;

const COMPAT_HAS_JOURNAL: u32 = 0x4;
const COMPAT_EXT_ATTR: u32 = 0x8;
const COMPAT_DIR_INDEX: u32 = 0x20;
const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_EXTENTS: u32 = 0x40;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_FLEX_BG: u32 = 0x200;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_LARGE_FILE: u32 = 0x2;
const RO_COMPAT_HUGE_FILE: u32 = 0x8;
const RO_COMPAT_DIR_NLINK: u32 = 0x20;
const RO_COMPAT_EXTRA_ISIZE: u32 = 0x40;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;

/// The journal inode's `i_block`, size, and blocks for the superblock's backup copy.
#[derive(Debug, Clone)]
pub struct JournalInfo {
    pub i_block: [u8; 60],
    pub size: u64,
}

/// Inputs of the superblock.
#[derive(Debug, Clone)]
pub struct Super<'a> {
    pub geo: &'a Geometry,
    pub free_blocks: u64,
    pub free_inodes: u64,
    pub reserved_blocks: u64,
    pub uuid: [u8; 16],
    pub hash_seed: [u8; 16],
    pub label: &'a str,
    /// mkfs, last write and last check time.
    pub time: i64,
    pub journal: Option<JournalInfo>,
}

fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// Low 32 bits and high 8 bits of a superblock time (these fields are unsigned).
fn split_time(t: i64) -> (u32, u8) {
    let t = u64::try_from(t).unwrap_or(0);
    (t as u32, (t >> 32) as u8)
}

impl Super<'_> {
    /// The 1024-byte superblock as stored in group `group` (0 for the primary).
    pub fn encode(&self, group: u64) -> Result<[u8; 1024]> {
        let g = self.geo;
        if self.label.len() > 16 {
            bail!(
                "volume label {:?} is {} bytes; ext4 labels hold at most 16",
                self.label,
                self.label.len()
            );
        }
        let inodes = g.inodes_count();
        let Ok(inodes) = u32::try_from(inodes) else {
            bail!("{inodes} inodes exceed ext4's 32-bit count")
        };
        let mut b = [0u8; 1024];
        put32(&mut b, 0x00, inodes);
        put32(&mut b, 0x04, g.blocks_count as u32);
        put32(&mut b, 0x08, self.reserved_blocks as u32);
        put32(&mut b, 0x0C, self.free_blocks as u32);
        put32(&mut b, 0x10, self.free_inodes as u32);
        put32(&mut b, 0x14, 0); // first data block
        put32(&mut b, 0x18, 2); // log2(block size) - 10
        put32(&mut b, 0x1C, 2); // cluster size = block size
        put32(&mut b, 0x20, BLOCKS_PER_GROUP as u32);
        put32(&mut b, 0x24, BLOCKS_PER_GROUP as u32);
        put32(&mut b, 0x28, g.inodes_per_group as u32);
        let (t, t_hi) = split_time(self.time);
        put32(&mut b, 0x30, t); // last write
        put16(&mut b, 0x36, 0xFFFF); // max mount count: never force a check
        put16(&mut b, 0x38, MAGIC);
        put16(&mut b, 0x3A, 1); // state: clean
        put16(&mut b, 0x3C, 1); // errors: continue
        put32(&mut b, 0x40, t); // last check
        put32(&mut b, 0x4C, 1); // dynamic revision
        put32(&mut b, 0x54, layout::FIRST_INO);
        put16(&mut b, 0x58, INODE_SIZE as u16);
        put16(&mut b, 0x5A, group as u16);
        let mut compat = COMPAT_EXT_ATTR;
        if self.journal.is_some() {
            // Writable filesystem: let the kernel index the directories it grows.
            compat |= COMPAT_HAS_JOURNAL | COMPAT_DIR_INDEX;
        }
        put32(&mut b, 0x5C, compat);
        put32(
            &mut b,
            0x60,
            INCOMPAT_FILETYPE | INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG,
        );
        put32(
            &mut b,
            0x64,
            RO_COMPAT_SPARSE_SUPER
                | RO_COMPAT_LARGE_FILE
                | RO_COMPAT_HUGE_FILE
                | RO_COMPAT_DIR_NLINK
                | RO_COMPAT_EXTRA_ISIZE
                | RO_COMPAT_METADATA_CSUM,
        );
        b[0x68..0x78].copy_from_slice(&self.uuid);
        b[0x78..0x78 + self.label.len()].copy_from_slice(self.label.as_bytes());
        b[0xEC..0xFC].copy_from_slice(&self.hash_seed);
        b[0xFC] = 1; // default hash: half_md4
        put16(&mut b, 0xFE, DESC_SIZE as u16);
        put32(&mut b, 0x100, 0x000C); // default mount options: user_xattr, acl
        put32(&mut b, 0x108, t); // mkfs time
        if let Some(j) = &self.journal {
            put32(&mut b, 0xE0, 8); // journal inode
            b[0xFD] = 1; // s_jnl_blocks holds a copy of the journal inode's i_block
            b[0x10C..0x148].copy_from_slice(&j.i_block);
            put32(&mut b, 0x148, (j.size >> 32) as u32);
            put32(&mut b, 0x14C, j.size as u32);
        }
        put32(&mut b, 0x150, (g.blocks_count >> 32) as u32);
        put32(&mut b, 0x154, (self.reserved_blocks >> 32) as u32);
        put32(&mut b, 0x158, (self.free_blocks >> 32) as u32);
        put16(&mut b, 0x15C, 32); // min extra isize
        put16(&mut b, 0x15E, 32); // wanted extra isize
        put32(&mut b, 0x160, 1); // signed directory hash
        b[0x174] = layout::LOG_GROUPS_PER_FLEX;
        b[0x175] = 1; // checksum type: crc32c
        b[0x274] = t_hi; // wtime
        b[0x276] = t_hi; // mkfs time
        b[0x277] = t_hi; // last check
        let c = csum::raw(!0, &b[..0x3FC]);
        put32(&mut b, 0x3FC, c);
        Ok(b)
    }
}

/// jbd2 superblock (v2, big-endian) for an internal journal of `blocks` blocks that is clean
/// (`s_start` 0): the kernel replays nothing and starts at sequence 1.
pub fn journal_superblock(blocks: u64, uuid: &[u8; 16]) -> Result<Vec<u8>> {
    let Ok(maxlen) = u32::try_from(blocks) else {
        bail!("journal of {blocks} blocks is too long")
    };
    let mut b = vec![0u8; BLOCK_SIZE as usize];
    let mut be = |off: usize, v: u32| b[off..off + 4].copy_from_slice(&v.to_be_bytes());
    be(0x00, 0xC03B_3998); // magic
    be(0x04, 4); // superblock v2
    be(0x0C, BLOCK_SIZE as u32);
    be(0x10, maxlen);
    be(0x14, 1); // first log block
    be(0x18, 1); // first expected commit id
    be(0x40, 1); // users: this filesystem
    b[0x30..0x40].copy_from_slice(uuid);
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MKE2FS_SB: &[u8; 1024] = include_bytes!("testdata/mke2fs-sb.bin");

    #[test]
    fn superblock_matches_mke2fs_in_the_fields_we_share() {
        // The mke2fs reference: 64 MiB, 16384 inodes, journal, created at the time in it.
        let r = MKE2FS_SB;
        let geo = Geometry::new(16384, 16384).unwrap();
        let time = i64::from(u32::from_le_bytes(r[0x108..0x10C].try_into().unwrap()));
        let sb = Super {
            geo: &geo,
            free_blocks: 14327,
            free_inodes: 16373,
            reserved_blocks: 819,
            uuid: r[0x68..0x78].try_into().unwrap(),
            hash_seed: r[0xEC..0xFC].try_into().unwrap(),
            label: "",
            time,
            journal: Some(JournalInfo {
                i_block: r[0x10C..0x148].try_into().unwrap(),
                size: 4 << 20,
            }),
        };
        let mut got = sb.encode(0).unwrap();
        let mut want = *r;
        // Fields mke2fs fills that we leave to the kernel: overhead clusters, lifetime writes.
        for (off, len) in [(0x248, 4), (0x178, 8), (0x3FC, 4)] {
            want[off..off + len].fill(0);
            got[off..off + len].fill(0);
        }
        for i in 0..1024 {
            assert_eq!(got[i], want[i], "superblock byte {i:#x}");
        }
    }

    #[test]
    fn label_too_long_is_an_error() {
        let geo = Geometry::new(16384, 100).unwrap();
        let sb = Super {
            geo: &geo,
            free_blocks: 0,
            free_inodes: 0,
            reserved_blocks: 0,
            uuid: [0; 16],
            hash_seed: [0; 16],
            label: "a-label-that-is-too-long",
            time: 0,
            journal: None,
        };
        assert!(sb.encode(0).is_err());
    }

    #[test]
    fn journal_superblock_fields() {
        let b = journal_superblock(1024, &[9; 16]).unwrap();
        assert_eq!(&b[..8], &[0xC0, 0x3B, 0x39, 0x98, 0, 0, 0, 4]);
        assert_eq!(&b[0x10..0x14], &1024u32.to_be_bytes());
        assert_eq!(&b[0x30..0x40], &[9; 16]);
    }
}
