//! Where everything goes: pure geometry and metadata placement, no I/O.
//!
//! ```text
//!  block 0          1 .. gdt      flex-group metadata (groups 0..15)          data ...
//! +--------------+-------------+----------+----------+---------------------+---------------
//! | pad + super  | group descs | 16 block | 16 inode | 16 inode tables     | dirs, files,
//! | (at 1024)    |             | bitmaps  | bitmaps  |                     | journal, ...
//! +--------------+-------------+----------+----------+---------------------+---------------
//!  group 1 (and 3^n, 5^n, 7^n): backup super + group descs at its first block, then data.
//!  groups 16, 32, ...: the next flex group's bitmaps and inode tables at their start.
//! ```
//!
//! Blocks are 4 KiB, groups 32768 blocks (128 MiB), inodes 256 bytes, group descriptors
//! 64 bytes (the `64bit` feature). With `flex_bg` the kernel and e2fsck accept bitmaps and
//! inode tables anywhere in the filesystem, which is what lets a group's metadata live in the
//! first group of its flex group.

use std::collections::BTreeMap;

pub const BLOCK_SIZE: u64 = 4096;
pub const BLOCKS_PER_GROUP: u64 = 8 * BLOCK_SIZE;
pub const INODE_SIZE: u64 = 256;
pub const DESC_SIZE: u64 = 64;
pub const INODES_PER_BLOCK: u64 = BLOCK_SIZE / INODE_SIZE;
/// One inode bitmap block holds this many bits.
pub const MAX_INODES_PER_GROUP: u64 = 8 * BLOCK_SIZE;
/// 16 groups per flex group, as mke2fs does.
pub const LOG_GROUPS_PER_FLEX: u8 = 4;
const GROUPS_PER_FLEX: u64 = 1 << LOG_GROUPS_PER_FLEX;
/// First inode not reserved by ext4 (lost+found gets it).
pub const FIRST_INO: u32 = 11;
/// Bytes of filesystem per inode on a writable filesystem: mke2fs's default `inode_ratio`, so
/// the state partition has as many inodes as `mkfs.ext4` would give it.
pub const WRITABLE_INODE_RATIO: u64 = 16384;
/// A last group smaller than its own metadata plus this many blocks is dropped (mke2fs drops
/// groups that would be mostly overhead; 64 keeps some room for data).
const MIN_LAST_GROUP_DATA: u64 = 64;

/// Why a filesystem of a given size cannot hold what it should; `blocks` is how many more
/// blocks would be needed (a lower bound), so a caller searching for a size can step by it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: needs {need} blocks of 4 KiB but only {have} are available")]
pub struct Shortfall {
    pub what: String,
    pub need: u64,
    pub have: u64,
}

impl Shortfall {
    pub fn blocks(&self) -> u64 {
        self.need.saturating_sub(self.have).max(1)
    }
}

/// Whether group `g` carries a superblock and descriptor backup under `sparse_super`:
/// groups 0, 1 and powers of 3, 5 and 7.
pub fn has_super(g: u64) -> bool {
    if g <= 1 {
        return true;
    }
    [3u64, 5, 7].iter().any(|&p| {
        let mut x = p;
        while x < g {
            x *= p;
        }
        x == g
    })
}

/// mke2fs's default journal size (`ext2fs_default_journal_size`), in blocks, for a filesystem
/// of `blocks` blocks; never below 1024 blocks (4 MiB), the smallest jbd2 accepts comfortably.
pub fn journal_blocks(blocks: u64) -> u64 {
    match blocks {
        b if b < 32768 => 1024,
        b if b < 256 * 1024 => 4096,
        b if b < 512 * 1024 => 8192,
        b if b < 4096 * 1024 => 16384,
        b if b < 8192 * 1024 => 32768,
        b if b < 16384 * 1024 => 65536,
        b if b < 32768 * 1024 => 131072,
        _ => 262144,
    }
}

/// How many inodes to give a filesystem of `blocks` blocks that must hold `used` inodes
/// (reserved ones included). A read-only filesystem gets what it needs plus a little; a
/// writable one gets mke2fs's ratio, and at least 1/8 more than it starts with, so it can
/// be filled later.
pub fn inodes_wanted(blocks: u64, used: u64, writable: bool) -> u64 {
    if writable {
        (used + used / 8 + 64).max(blocks * BLOCK_SIZE / WRITABLE_INODE_RATIO)
    } else {
        used + used / 32 + 16
    }
}

/// The size-dependent numbers of a filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    pub blocks_count: u64,
    pub groups: u64,
    pub inodes_per_group: u64,
    pub gdt_blocks: u64,
}

impl Geometry {
    /// Geometry for an image of `image_blocks` blocks holding at least `inodes` inodes. The
    /// filesystem may be a little shorter than the image when the last group would be tiny.
    pub fn new(image_blocks: u64, inodes: u64) -> Result<Geometry, Shortfall> {
        let mut blocks = image_blocks;
        let mut groups = blocks.div_ceil(BLOCKS_PER_GROUP);
        let gdt_blocks = |groups: u64| (groups * DESC_SIZE).div_ceil(BLOCK_SIZE);
        if groups > 1 {
            let last = blocks - (groups - 1) * BLOCKS_PER_GROUP;
            let overhead = if has_super(groups - 1) {
                1 + gdt_blocks(groups)
            } else {
                0
            };
            if last < overhead + MIN_LAST_GROUP_DATA {
                blocks -= last;
                groups -= 1;
            }
        }
        if blocks < 64 {
            return Err(Shortfall {
                what: "filesystem".into(),
                need: 64,
                have: blocks,
            });
        }
        let ipg = inodes
            .div_ceil(groups)
            .next_multiple_of(INODES_PER_BLOCK)
            .max(INODES_PER_BLOCK);
        if ipg > MAX_INODES_PER_GROUP {
            return Err(Shortfall {
                what: format!("{inodes} inodes (at most {MAX_INODES_PER_GROUP} per 128 MiB group)"),
                need: inodes.div_ceil(MAX_INODES_PER_GROUP) * BLOCKS_PER_GROUP,
                have: blocks,
            });
        }
        Ok(Geometry {
            blocks_count: blocks,
            groups,
            inodes_per_group: ipg,
            gdt_blocks: gdt_blocks(groups),
        })
    }

    pub fn inodes_count(&self) -> u64 {
        self.inodes_per_group * self.groups
    }

    pub fn itable_blocks(&self) -> u64 {
        self.inodes_per_group / INODES_PER_BLOCK
    }

    pub fn group_start(&self, g: u64) -> u64 {
        g * BLOCKS_PER_GROUP
    }
}

/// Where one group's bitmaps and inode table are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupMeta {
    pub block_bitmap: u64,
    pub inode_bitmap: u64,
    pub inode_table: u64,
}

/// Geometry plus the placement of all fixed metadata.
#[derive(Debug, Clone)]
pub struct Layout {
    pub geo: Geometry,
    pub groups: Vec<GroupMeta>,
    /// Every metadata extent (superblocks, descriptors, bitmaps, inode tables): start -> end.
    occupied: BTreeMap<u64, u64>,
}

/// First block >= `from` where `len` blocks fit between the `occupied` extents and below
/// `limit`.
fn find_fit(occupied: &BTreeMap<u64, u64>, from: u64, len: u64, limit: u64) -> Option<u64> {
    let mut cand = from;
    if let Some((_, &end)) = occupied.range(..=cand).next_back() {
        cand = cand.max(end);
    }
    while let Some((&start, &end)) = occupied.range(cand..).next() {
        if start >= cand + len {
            break;
        }
        cand = end;
    }
    (cand + len <= limit).then_some(cand)
}

/// Places superblock backups, descriptor tables, bitmaps and inode tables.
pub fn plan(geo: Geometry) -> Result<Layout, Shortfall> {
    let mut occupied = BTreeMap::new();
    for g in (0..geo.groups).filter(|&g| has_super(g)) {
        let start = geo.group_start(g);
        occupied.insert(start, start + 1 + geo.gdt_blocks);
    }
    let limit = geo.blocks_count;
    let itb = geo.itable_blocks();
    let total_meta =
        geo.groups * (2 + itb) + occupied.values().count() as u64 * (1 + geo.gdt_blocks);
    let short = || Shortfall {
        what: "filesystem metadata".into(),
        need: total_meta + 1,
        have: limit,
    };
    let mut groups = vec![
        GroupMeta {
            block_bitmap: 0,
            inode_bitmap: 0,
            inode_table: 0
        };
        geo.groups as usize
    ];
    for flex in (0..geo.groups).step_by(GROUPS_PER_FLEX as usize) {
        let members = flex..(flex + GROUPS_PER_FLEX).min(geo.groups);
        // Start at the flex group's first block; if the tail of the filesystem is too short for
        // the tables, fall back to any free room earlier on (flex_bg allows it).
        let mut place = |len: u64, cursor: &mut u64| -> Result<u64, Shortfall> {
            let at = find_fit(&occupied, *cursor, len, limit)
                .or_else(|| find_fit(&occupied, 0, len, limit))
                .ok_or_else(short)?;
            occupied.insert(at, at + len);
            *cursor = at + len;
            Ok(at)
        };
        let mut cursor = geo.group_start(flex);
        for g in members.clone() {
            groups[g as usize].block_bitmap = place(1, &mut cursor)?;
        }
        for g in members.clone() {
            groups[g as usize].inode_bitmap = place(1, &mut cursor)?;
        }
        for g in members {
            groups[g as usize].inode_table = place(itb, &mut cursor)?;
        }
    }
    Ok(Layout {
        geo,
        groups,
        occupied,
    })
}

impl Layout {
    /// Metadata extents as (start, len), in block order.
    pub fn metadata(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.occupied.iter().map(|(&s, &e)| (s, e - s))
    }

    /// The blocks left for data, as (start, len) runs in block order.
    pub fn free_runs(&self) -> Vec<(u64, u64)> {
        let mut runs = Vec::new();
        let mut pos = 0;
        for (&s, &e) in &self.occupied {
            if s > pos {
                runs.push((pos, s - pos));
            }
            pos = pos.max(e);
        }
        if pos < self.geo.blocks_count {
            runs.push((pos, self.geo.blocks_count - pos));
        }
        runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_super_groups() {
        let got: Vec<u64> = (0..100).filter(|&g| has_super(g)).collect();
        assert_eq!(got, [0, 1, 3, 5, 7, 9, 25, 27, 49, 81]);
    }

    #[test]
    fn journal_sizes_follow_mke2fs() {
        assert_eq!(journal_blocks(16384), 1024);
        assert_eq!(journal_blocks(65536), 4096);
        assert_eq!(journal_blocks(300 * 1024), 8192);
        assert_eq!(journal_blocks(1 << 40), 262144);
    }

    #[test]
    fn writable_filesystems_get_spare_inodes() {
        assert_eq!(inodes_wanted(16384, 20, true), 16384 * 4096 / 16384);
        assert_eq!(inodes_wanted(1024, 3000, true), 3000 + 375 + 64);
        assert_eq!(inodes_wanted(1 << 30, 3200, false), 3200 + 100 + 16);
    }

    #[test]
    fn tiny_last_group_is_dropped() {
        // One full group plus 10 blocks: group 1 would hold a backup superblock + descriptors
        // and almost nothing else.
        let g = Geometry::new(BLOCKS_PER_GROUP + 10, 100).unwrap();
        assert_eq!((g.groups, g.blocks_count), (1, BLOCKS_PER_GROUP));
        let g = Geometry::new(BLOCKS_PER_GROUP + 256, 100).unwrap();
        assert_eq!((g.groups, g.blocks_count), (2, BLOCKS_PER_GROUP + 256));
    }

    #[test]
    fn inodes_per_group_is_whole_blocks() {
        let g = Geometry::new(3 * BLOCKS_PER_GROUP, 1000).unwrap();
        assert_eq!(g.inodes_per_group, 336); // ceil(1000 / 3) = 334 -> 336
        assert_eq!(g.itable_blocks(), 21);
        assert!(Geometry::new(BLOCKS_PER_GROUP, MAX_INODES_PER_GROUP + 1).is_err());
    }

    #[test]
    fn small_fs_layout_is_packed_after_descriptors() {
        let l = plan(Geometry::new(16384, 2048).unwrap()).unwrap();
        assert_eq!(
            l.groups[0],
            GroupMeta {
                block_bitmap: 2,
                inode_bitmap: 3,
                inode_table: 4
            }
        );
        let meta: Vec<_> = l.metadata().collect();
        assert_eq!(meta, [(0, 2), (2, 1), (3, 1), (4, 128)]);
        assert_eq!(l.free_runs(), [(132, 16384 - 132)]);
    }

    #[test]
    fn multi_group_layout_skips_backups_and_covers_everything() {
        // 20 groups: two flex groups (0..16, 16..20), backups in 1, 3, 5, 7, 9.
        let blocks = 20 * BLOCKS_PER_GROUP - 1000;
        let l = plan(Geometry::new(blocks, 20 * 8192).unwrap()).unwrap();
        assert_eq!(l.geo.gdt_blocks, 1);
        assert_eq!(l.groups[0].block_bitmap, 2);
        assert_eq!(l.groups[15].inode_bitmap, 2 + 16 + 15);
        assert_eq!(l.groups[0].inode_table, 2 + 32);
        assert_eq!(l.groups[16].block_bitmap, 16 * BLOCKS_PER_GROUP);
        // Metadata and free runs tile the filesystem exactly, without overlap.
        let mut all: Vec<(u64, u64)> = l.metadata().chain(l.free_runs()).collect();
        all.sort();
        let mut pos = 0;
        for (s, n) in all {
            assert_eq!(s, pos);
            pos += n;
        }
        assert_eq!(pos, blocks);
        for g in [1, 3, 5, 7, 9] {
            assert!(l
                .metadata()
                .any(|(s, n)| s == g * BLOCKS_PER_GROUP && n == 2));
        }
    }

    #[test]
    fn inode_tables_that_spill_over_a_backup_are_moved_past_it() {
        // 32768 inodes per group: 2048-block tables; 16 of them overflow group 0 into group 1,
        // whose first blocks hold the backup superblock.
        let l = plan(Geometry::new(16 * BLOCKS_PER_GROUP, 16 * 32768).unwrap()).unwrap();
        let backup = (BLOCKS_PER_GROUP, BLOCKS_PER_GROUP + 2);
        for g in &l.groups {
            let (s, e) = (g.inode_table, g.inode_table + 2048);
            assert!(e <= backup.0 || s >= backup.1, "{g:?}");
        }
    }

    #[test]
    fn too_small_for_metadata_is_a_shortfall() {
        let err = plan(Geometry::new(100, 32768).unwrap()).unwrap_err();
        assert!(err.blocks() > 0);
    }
}
