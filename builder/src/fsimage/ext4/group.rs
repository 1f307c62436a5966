//! Block groups: the block and inode bitmaps and the 64-byte group descriptors that point at
//! them and carry their free counts and checksums.

use super::csum;
use super::layout::{Layout, BLOCKS_PER_GROUP, BLOCK_SIZE, DESC_SIZE};

/// `bg_flags`: the inode table is zeroed (the kernel's lazy init has nothing to do).
pub const BG_INODE_ZEROED: u16 = 0x4;

/// A bitmap over the whole filesystem, one bit per block (or inode), stored group by group:
/// group `g`'s bitmap block is `bytes[g * 4096..(g + 1) * 4096]`.
#[derive(Debug, Clone)]
pub struct Bitmap {
    bytes: Vec<u8>,
}

impl Bitmap {
    pub fn new(groups: u64) -> Self {
        Bitmap {
            bytes: vec![0u8; (groups * BLOCK_SIZE) as usize],
        }
    }

    /// Sets bits `start..start + len` (global numbering: group * bits_per_group + index).
    pub fn set_range(&mut self, start: u64, len: u64) {
        let (mut i, end) = (start, start + len);
        while i < end && i % 8 != 0 {
            self.bytes[(i / 8) as usize] |= 1 << (i % 8);
            i += 1;
        }
        let whole = (end - i) / 8;
        self.bytes[(i / 8) as usize..(i / 8 + whole) as usize].fill(0xFF);
        i += whole * 8;
        while i < end {
            self.bytes[(i / 8) as usize] |= 1 << (i % 8);
            i += 1;
        }
    }

    /// Group `g`'s bitmap block.
    pub fn group(&self, g: u64) -> &[u8] {
        &self.bytes[(g * BLOCK_SIZE) as usize..((g + 1) * BLOCK_SIZE) as usize]
    }

    /// Set bits among the first `n` of group `g`.
    pub fn count_group(&self, g: u64, n: u64) -> u64 {
        let b = self.group(g);
        let whole = (n / 8) as usize;
        let mut c: u64 = b[..whole].iter().map(|x| u64::from(x.count_ones())).sum();
        for i in whole as u64 * 8..n {
            c += u64::from(b[(i / 8) as usize] >> (i % 8) & 1);
        }
        c
    }
}

/// One group descriptor's contents.
#[derive(Debug, Clone, Default)]
pub struct GroupDesc {
    pub block_bitmap: u64,
    pub inode_bitmap: u64,
    pub inode_table: u64,
    pub free_blocks: u32,
    pub free_inodes: u32,
    pub used_dirs: u32,
    pub flags: u16,
    pub itable_unused: u32,
    pub block_bitmap_csum: u32,
    pub inode_bitmap_csum: u32,
}

fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

impl GroupDesc {
    /// The 64-byte descriptor of group `group`, with its checksum.
    pub fn encode(&self, group: u32, fs_seed: u32) -> [u8; DESC_SIZE as usize] {
        let mut b = [0u8; DESC_SIZE as usize];
        put32(&mut b, 0x00, self.block_bitmap as u32);
        put32(&mut b, 0x04, self.inode_bitmap as u32);
        put32(&mut b, 0x08, self.inode_table as u32);
        put16(&mut b, 0x0C, self.free_blocks as u16);
        put16(&mut b, 0x0E, self.free_inodes as u16);
        put16(&mut b, 0x10, self.used_dirs as u16);
        put16(&mut b, 0x12, self.flags);
        put16(&mut b, 0x18, self.block_bitmap_csum as u16);
        put16(&mut b, 0x1A, self.inode_bitmap_csum as u16);
        put16(&mut b, 0x1C, self.itable_unused as u16);
        put32(&mut b, 0x20, (self.block_bitmap >> 32) as u32);
        put32(&mut b, 0x24, (self.inode_bitmap >> 32) as u32);
        put32(&mut b, 0x28, (self.inode_table >> 32) as u32);
        put16(&mut b, 0x2C, (self.free_blocks >> 16) as u16);
        put16(&mut b, 0x2E, (self.free_inodes >> 16) as u16);
        put16(&mut b, 0x30, (self.used_dirs >> 16) as u16);
        put16(&mut b, 0x32, (self.itable_unused >> 16) as u16);
        put16(&mut b, 0x38, (self.block_bitmap_csum >> 16) as u16);
        put16(&mut b, 0x3A, (self.inode_bitmap_csum >> 16) as u16);
        let c = csum::raw(csum::raw(fs_seed, &group.to_le_bytes()), &b);
        put16(&mut b, 0x1E, c as u16);
        b
    }
}

/// Inputs per group beyond what the bitmaps say.
pub struct GroupCounts {
    pub used_dirs: u32,
    /// Inodes in use at the start of the group's table (all used inodes are a prefix).
    pub used_inodes: u32,
}

/// Builds every group's descriptor from the bitmaps. `blocks` must include the padding bits
/// past the end of the filesystem; `inodes` must have the padding past `inodes_per_group`.
pub fn descriptors(
    layout: &Layout,
    blocks: &Bitmap,
    inodes: &Bitmap,
    counts: &[GroupCounts],
    fs_seed: u32,
) -> Vec<GroupDesc> {
    let geo = &layout.geo;
    let ipg = geo.inodes_per_group;
    (0..geo.groups)
        .map(|g| {
            let m = layout.groups[g as usize];
            let c = &counts[g as usize];
            let free_blocks = BLOCKS_PER_GROUP - blocks.count_group(g, BLOCKS_PER_GROUP);
            let free_inodes = ipg - inodes.count_group(g, ipg);
            GroupDesc {
                block_bitmap: m.block_bitmap,
                inode_bitmap: m.inode_bitmap,
                inode_table: m.inode_table,
                free_blocks: free_blocks as u32,
                free_inodes: free_inodes as u32,
                used_dirs: c.used_dirs,
                flags: BG_INODE_ZEROED,
                itable_unused: (ipg - u64::from(c.used_inodes)) as u32,
                block_bitmap_csum: csum::raw(fs_seed, blocks.group(g)),
                inode_bitmap_csum: csum::raw(fs_seed, &inodes.group(g)[..(ipg / 8) as usize]),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MKE2FS_GD0: &[u8; 64] = include_bytes!("testdata/mke2fs-gd0.bin");
    const MKE2FS_SB: &[u8; 1024] = include_bytes!("testdata/mke2fs-sb.bin");

    #[test]
    fn descriptor_matches_mke2fs_byte_for_byte() {
        let r = MKE2FS_GD0;
        let rd16 = |o: usize| u32::from(u16::from_le_bytes([r[o], r[o + 1]]));
        let rd32 = |o: usize| u32::from_le_bytes(r[o..o + 4].try_into().unwrap());
        let gd = GroupDesc {
            block_bitmap: 2,
            inode_bitmap: 18,
            inode_table: 34,
            free_blocks: 14327,
            free_inodes: 16373,
            used_dirs: 2,
            flags: BG_INODE_ZEROED,
            itable_unused: 16373,
            block_bitmap_csum: rd16(0x18) | rd16(0x38) << 16,
            inode_bitmap_csum: rd16(0x1A) | rd16(0x3A) << 16,
        };
        assert_eq!(rd32(0x08), 34);
        let uuid: [u8; 16] = MKE2FS_SB[0x68..0x78].try_into().unwrap();
        assert_eq!(&gd.encode(0, csum::fs_seed(&uuid))[..], &r[..]);
    }

    #[test]
    fn block_bitmap_checksum_matches_mke2fs() {
        let bitmap: &[u8; 4096] = include_bytes!("testdata/mke2fs-bbitmap.bin");
        let r = MKE2FS_GD0;
        let want = u32::from(u16::from_le_bytes([r[0x18], r[0x19]]))
            | u32::from(u16::from_le_bytes([r[0x38], r[0x39]])) << 16;
        let uuid: [u8; 16] = MKE2FS_SB[0x68..0x78].try_into().unwrap();
        assert_eq!(csum::raw(csum::fs_seed(&uuid), bitmap), want);
    }

    #[test]
    fn bitmap_ranges_and_counts() {
        let mut b = Bitmap::new(2);
        b.set_range(3, 20);
        b.set_range(32768 - 2, 4);
        assert_eq!(b.count_group(0, 32768), 22);
        assert_eq!(b.count_group(1, 32768), 2);
        assert_eq!(b.count_group(0, 10), 7);
        assert_eq!(b.group(0)[0], 0b1111_1000);
    }
}
