//! Extent trees: mapping a file's logical blocks to disk blocks.
//!
//! The root node lives in the inode's 60-byte `i_block` (a 12-byte header and room for 4
//! entries). More than 4 extents need tree blocks: leaves of up to 340 extents, indexed by
//! index blocks of up to 340 entries, until the top level fits in the inode. Every tree block
//! ends with a 4-byte CRC32C tail seeded by its inode.

use super::csum;
use super::layout::BLOCK_SIZE;

const MAGIC: u16 = 0xF30A;
/// Longest initialized extent (a longer `ee_len` means "uninitialized").
pub const MAX_LEN: u64 = 32768;
const ROOT_ENTRIES: usize = 4;
/// (4096 - 12-byte header) / 12-byte entries.
const BLOCK_ENTRIES: usize = 340;
const TAIL_OFFSET: usize = 12 + 12 * BLOCK_ENTRIES;

/// One mapping of `len` logical blocks starting at `logical` to disk blocks at `physical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub logical: u32,
    pub len: u16,
    pub physical: u64,
}

/// Zips the runs of logical blocks that hold data with the physical runs they were given
/// (both in order, same total) into extents no longer than [`MAX_LEN`].
pub fn map_runs(logical: &[(u64, u64)], physical: &[(u64, u64)]) -> Vec<Extent> {
    let mut out: Vec<Extent> = Vec::new();
    let mut phys = physical.iter().copied();
    let mut cur = phys.next();
    for &(mut lstart, mut llen) in logical {
        while llen > 0 {
            let Some((pstart, plen)) = cur else { break };
            let n = llen.min(plen).min(MAX_LEN);
            // Extend the previous extent when both sides continue it.
            if let Some(last) = out.last_mut() {
                let (l_end, p_end) = (
                    u64::from(last.logical) + u64::from(last.len),
                    last.physical + u64::from(last.len),
                );
                if l_end == lstart && p_end == pstart && u64::from(last.len) + n <= MAX_LEN {
                    last.len += n as u16;
                    (lstart, llen) = (lstart + n, llen - n);
                    cur = if plen == n {
                        phys.next()
                    } else {
                        Some((pstart + n, plen - n))
                    };
                    continue;
                }
            }
            out.push(Extent {
                logical: lstart as u32,
                len: n as u16,
                physical: pstart,
            });
            (lstart, llen) = (lstart + n, llen - n);
            cur = if plen == n {
                phys.next()
            } else {
                Some((pstart + n, plen - n))
            };
        }
    }
    out
}

/// Tree blocks needed to hold `n` extents (0 when they fit in the inode).
pub fn tree_blocks(n: usize) -> usize {
    let mut total = 0;
    let mut level = n;
    while level > ROOT_ENTRIES {
        level = level.div_ceil(BLOCK_ENTRIES);
        total += level;
    }
    total
}

/// A built tree: the inode's `i_block` and the tree blocks with their disk addresses.
pub struct Tree {
    pub root: [u8; 60],
    pub blocks: Vec<(u64, Vec<u8>)>,
}

fn header(buf: &mut [u8], entries: usize, max: usize, depth: u16) {
    buf[0..2].copy_from_slice(&MAGIC.to_le_bytes());
    buf[2..4].copy_from_slice(&(entries as u16).to_le_bytes());
    buf[4..6].copy_from_slice(&(max as u16).to_le_bytes());
    buf[6..8].copy_from_slice(&depth.to_le_bytes());
}

/// A 12-byte entry: either an extent (leaf) or an index entry pointing at a child block.
#[derive(Clone, Copy)]
enum Entry {
    Leaf(Extent),
    Index { logical: u32, child: u64 },
}

impl Entry {
    fn logical(&self) -> u32 {
        match *self {
            Entry::Leaf(e) => e.logical,
            Entry::Index { logical, .. } => logical,
        }
    }

    fn encode(&self, out: &mut [u8]) {
        match *self {
            Entry::Leaf(e) => {
                out[0..4].copy_from_slice(&e.logical.to_le_bytes());
                out[4..6].copy_from_slice(&e.len.to_le_bytes());
                out[6..8].copy_from_slice(&((e.physical >> 32) as u16).to_le_bytes());
                out[8..12].copy_from_slice(&(e.physical as u32).to_le_bytes());
            }
            Entry::Index { logical, child } => {
                out[0..4].copy_from_slice(&logical.to_le_bytes());
                out[4..8].copy_from_slice(&(child as u32).to_le_bytes());
                out[8..10].copy_from_slice(&((child >> 32) as u16).to_le_bytes());
                out[10..12].copy_from_slice(&[0, 0]);
            }
        }
    }
}

/// Builds the tree for `extents` (sorted, non-overlapping), placing tree blocks at
/// `tree_at` (exactly [`tree_blocks`]`(extents.len())` addresses, used bottom level first).
/// `seed` is the inode's checksum seed.
pub fn build(extents: &[Extent], tree_at: &[u64], seed: u32) -> Tree {
    debug_assert_eq!(tree_at.len(), tree_blocks(extents.len()));
    let mut level: Vec<Entry> = extents.iter().map(|&e| Entry::Leaf(e)).collect();
    let mut depth = 0u16;
    let mut addrs = tree_at.iter().copied();
    let mut blocks = Vec::new();
    while level.len() > ROOT_ENTRIES {
        let mut up = Vec::with_capacity(level.len().div_ceil(BLOCK_ENTRIES));
        for chunk in level.chunks(BLOCK_ENTRIES) {
            let addr = addrs.next().unwrap_or_default();
            let mut b = vec![0u8; BLOCK_SIZE as usize];
            header(&mut b, chunk.len(), BLOCK_ENTRIES, depth);
            for (i, e) in chunk.iter().enumerate() {
                e.encode(&mut b[12 + 12 * i..24 + 12 * i]);
            }
            let c = csum::raw(seed, &b[..TAIL_OFFSET]);
            b[TAIL_OFFSET..TAIL_OFFSET + 4].copy_from_slice(&c.to_le_bytes());
            up.push(Entry::Index {
                logical: chunk[0].logical(),
                child: addr,
            });
            blocks.push((addr, b));
        }
        level = up;
        depth += 1;
    }
    let mut root = [0u8; 60];
    header(&mut root, level.len(), ROOT_ENTRIES, depth);
    for (i, e) in level.iter().enumerate() {
        e.encode(&mut root[12 + 12 * i..24 + 12 * i]);
    }
    Tree { root, blocks }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], o: usize) -> u16 {
        u16::from_le_bytes([b[o], b[o + 1]])
    }
    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }

    #[test]
    fn runs_split_at_physical_gaps_and_max_len() {
        // Logical: blocks 0..10 and 20..25 hold data; physical: 100..106 and 200..300.
        let ex = map_runs(&[(0, 10), (20, 5)], &[(100, 6), (200, 100)]);
        assert_eq!(
            ex,
            [
                Extent {
                    logical: 0,
                    len: 6,
                    physical: 100
                },
                Extent {
                    logical: 6,
                    len: 4,
                    physical: 200
                },
                Extent {
                    logical: 20,
                    len: 5,
                    physical: 204
                },
            ]
        );
        let ex = map_runs(&[(0, 70000)], &[(1000, 70000)]);
        assert_eq!(ex.len(), 3);
        assert_eq!(
            (ex[1].logical, ex[1].len, ex[1].physical),
            (32768, 32768, 33768)
        );
        assert_eq!(ex[2].len as u64, 70000 - 65536);
    }

    #[test]
    fn tree_sizes() {
        assert_eq!(tree_blocks(0), 0);
        assert_eq!(tree_blocks(4), 0);
        assert_eq!(tree_blocks(5), 1);
        assert_eq!(tree_blocks(340 * 4), 4);
        assert_eq!(tree_blocks(340 * 4 + 1), 5 + 1);
    }

    #[test]
    fn small_tree_lives_in_the_inode() {
        let ex = [Extent {
            logical: 0,
            len: 3,
            physical: 0x1_0000_0005,
        }];
        let t = build(&ex, &[], 0);
        assert!(t.blocks.is_empty());
        assert_eq!(u16_at(&t.root, 0), 0xF30A);
        assert_eq!(
            (u16_at(&t.root, 2), u16_at(&t.root, 4), u16_at(&t.root, 6)),
            (1, 4, 0)
        );
        assert_eq!(
            (
                u16_at(&t.root, 16),
                u16_at(&t.root, 18),
                u32_at(&t.root, 20)
            ),
            (3, 1, 5)
        );
    }

    #[test]
    fn two_level_tree_indexes_full_leaves_with_checksums() {
        let ex: Vec<Extent> = (0..700u32)
            .map(|i| Extent {
                logical: 2 * i,
                len: 1,
                physical: 1000 + u64::from(i),
            })
            .collect();
        let t = build(&ex, &[50, 51, 52], 0x1234);
        assert_eq!((u16_at(&t.root, 2), u16_at(&t.root, 6)), (3, 1));
        // Index entries: first logical block of each leaf, then the leaf's address.
        assert_eq!((u32_at(&t.root, 12), u32_at(&t.root, 16)), (0, 50));
        assert_eq!((u32_at(&t.root, 24), u32_at(&t.root, 28)), (680, 51));
        let (addr, leaf) = &t.blocks[2];
        assert_eq!(*addr, 52);
        assert_eq!(
            (u16_at(leaf, 2), u16_at(leaf, 4), u16_at(leaf, 6)),
            (20, 340, 0)
        );
        assert_eq!(u32_at(leaf, 4092), csum::raw(0x1234, &leaf[..4092]));
    }
}
