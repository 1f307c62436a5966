//! Turns a plan into the image's contents: a sorted list of chunks (a disk block and the bytes
//! that start there). File data is borrowed from the manifest, never copied; everything else
//! (metadata, directories, tree blocks) is built in memory, which is small next to the data.

use std::borrow::Cow;

use anyhow::{bail, Context, Result};

use super::csum;
use super::dir;
use super::extent;
use super::group::{self, Bitmap, GroupCounts};
use super::inode::{Inode, EXTENTS_FL};
use super::layout::{has_super, BLOCKS_PER_GROUP, BLOCK_SIZE, INODE_SIZE};
use super::plan::{Allocation, Analysis, Body, FAST_SYMLINK_MAX};
use super::superblock::{self, JournalInfo, Super};
use super::xattr;
use super::{Ext4Options, Ext4Stats};

/// Percentage of blocks reserved for root on a writable filesystem (mke2fs's default), so a
/// full /var does not lock out root-owned services; the read-only root reserves nothing.
const WRITABLE_RESERVED_PERCENT: u64 = 5;

/// Bytes to write at a block. A chunk may end mid-block; the rest of that block is zero.
pub struct Chunk<'a> {
    pub block: u64,
    pub data: Cow<'a, [u8]>,
    /// Regular-file data (counted by the progress bar).
    pub file: bool,
}

pub struct Image<'a> {
    /// Sorted by block, non-overlapping.
    pub chunks: Vec<Chunk<'a>>,
    pub stats: Ext4Stats,
}

fn owned(block: u64, data: Vec<u8>) -> Chunk<'static> {
    Chunk {
        block,
        data: Cow::Owned(data),
        file: false,
    }
}

/// Builds every block of the filesystem described by `a` and `al`.
pub fn assemble<'a>(a: Analysis<'a>, al: &Allocation, opts: &Ext4Options) -> Result<Image<'a>> {
    let fs_seed = csum::fs_seed(&opts.uuid);
    let geo = &al.layout.geo;
    let ipg = geo.inodes_per_group;
    let mut chunks: Vec<Chunk<'a>> = Vec::new();
    let mut itable = vec![0u8; a.max_ino as usize * INODE_SIZE as usize];
    let mut used_dirs = vec![0u32; geo.groups as usize];
    let mut journal = None;

    for (node, placed) in a.nodes.into_iter().zip(&al.placed) {
        let name = node.name();
        let seed = csum::inode_seed(fs_seed, node.ino, 0);
        let tree = extent::build(&placed.extents, &placed.tree, seed);
        let data_blocks: u64 = placed.extents.iter().map(|e| u64::from(e.len)).sum();
        let mut ino = Inode {
            mode: node.mode,
            uid: node.uid,
            gid: node.gid,
            time: node.time,
            links: node.links,
            sectors: (data_blocks
                + tree.blocks.len() as u64
                + u64::from(placed.xattr_block.is_some()))
                * 8,
            ibody: node.xattrs.ibody,
            ..Default::default()
        };
        if let Some(i) = placed.xattr_block {
            ino.file_acl = al.xattr_blocks[i].at;
        }
        let extents = &placed.extents;
        match node.body {
            Body::Dir(mut blocks) => {
                used_dirs[((node.ino - 1) as u64 / ipg) as usize] += 1;
                (ino.size, ino.flags, ino.block) =
                    (blocks.len() as u64 * BLOCK_SIZE, EXTENTS_FL, tree.root);
                for b in &mut blocks {
                    dir::seal(b, seed);
                }
                for e in extents {
                    let first = e.logical as usize;
                    chunks.push(owned(
                        e.physical,
                        blocks[first..first + e.len as usize].concat(),
                    ));
                }
            }
            Body::File { data, .. } => {
                (ino.size, ino.flags, ino.block) = (data.len() as u64, EXTENTS_FL, tree.root);
                for e in extents {
                    let start = e.logical as usize * BLOCK_SIZE as usize;
                    let end = (start + e.len as usize * BLOCK_SIZE as usize).min(data.len());
                    chunks.push(Chunk {
                        block: e.physical,
                        data: Cow::Borrowed(&data[start..end]),
                        file: true,
                    });
                }
            }
            Body::Symlink(t) if t.len() <= FAST_SYMLINK_MAX => {
                ino.size = t.len() as u64;
                ino.block[..t.len()].copy_from_slice(t);
            }
            Body::Symlink(t) => {
                (ino.size, ino.flags, ino.block) = (t.len() as u64, EXTENTS_FL, tree.root);
                let e = extents
                    .first()
                    .with_context(|| format!("{name}: symlink block not allocated"))?;
                chunks.push(Chunk {
                    block: e.physical,
                    data: Cow::Borrowed(t),
                    file: false,
                });
            }
            Body::Special(b) => ino.block = b,
            Body::Journal => {
                (ino.size, ino.flags, ino.block) =
                    (al.journal_blocks * BLOCK_SIZE, EXTENTS_FL, tree.root);
                let e = extents.first().context("journal blocks not allocated")?;
                // Only the journal superblock is written; the log itself is never read while
                // the journal is clean, so the rest stays a hole.
                chunks.push(owned(
                    e.physical,
                    superblock::journal_superblock(al.journal_blocks, &opts.uuid)?,
                ));
                journal = Some(JournalInfo {
                    i_block: tree.root,
                    size: ino.size,
                });
            }
        }
        for (at, b) in tree.blocks {
            chunks.push(owned(at, b));
        }
        let bytes = ino
            .encode(node.ino, fs_seed)
            .with_context(|| name.clone())?;
        let off = (node.ino as usize - 1) * INODE_SIZE as usize;
        itable[off..off + INODE_SIZE as usize].copy_from_slice(&bytes);
    }
    for x in &al.xattr_blocks {
        chunks.push(owned(
            x.at,
            xattr::encode_block(&x.attrs, x.at, x.refcount, fs_seed),
        ));
    }

    // Bitmaps. Bits past the end of the filesystem (block bitmap) and past inodes_per_group
    // (inode bitmaps) are set, as e2fsck expects.
    let mut blocks = Bitmap::new(geo.groups);
    for (s, n) in al.layout.metadata().chain(al.used_runs.iter().copied()) {
        blocks.set_range(s, n);
    }
    blocks.set_range(
        geo.blocks_count,
        geo.groups * BLOCKS_PER_GROUP - geo.blocks_count,
    );
    let mut inodes = Bitmap::new(geo.groups);
    let mut counts = Vec::with_capacity(geo.groups as usize);
    for g in 0..geo.groups {
        let used = u64::from(a.max_ino).saturating_sub(g * ipg).min(ipg);
        inodes.set_range(g * BLOCKS_PER_GROUP, used);
        inodes.set_range(g * BLOCKS_PER_GROUP + ipg, BLOCKS_PER_GROUP - ipg);
        counts.push(GroupCounts {
            used_dirs: used_dirs[g as usize],
            used_inodes: used as u32,
        });
        if used > 0 {
            let start = (g * ipg * INODE_SIZE) as usize;
            let table = itable[start..start + (used * INODE_SIZE) as usize].to_vec();
            chunks.push(owned(al.layout.groups[g as usize].inode_table, table));
        }
    }
    let descs = group::descriptors(&al.layout, &blocks, &inodes, &counts, fs_seed);
    let mut gdt = Vec::with_capacity((geo.gdt_blocks * BLOCK_SIZE) as usize);
    for (g, d) in descs.iter().enumerate() {
        gdt.extend_from_slice(&d.encode(g as u32, fs_seed));
        let m = &al.layout.groups[g];
        chunks.push(owned(m.block_bitmap, blocks.group(g as u64).to_vec()));
        chunks.push(owned(m.inode_bitmap, inodes.group(g as u64).to_vec()));
    }
    gdt.resize((geo.gdt_blocks * BLOCK_SIZE) as usize, 0);

    let free_blocks: u64 = descs.iter().map(|d| u64::from(d.free_blocks)).sum();
    let free_inodes: u64 = descs.iter().map(|d| u64::from(d.free_inodes)).sum();
    let sb = Super {
        geo,
        free_blocks,
        free_inodes,
        reserved_blocks: if opts.journal {
            geo.blocks_count * WRITABLE_RESERVED_PERCENT / 100
        } else {
            0
        },
        uuid: opts.uuid,
        hash_seed: opts.hash_seed,
        label: &opts.label,
        time: opts.mtime,
        journal,
    };
    for g in (0..geo.groups).filter(|&g| has_super(g)) {
        // The primary superblock sits 1024 bytes into block 0; backups start their block.
        let pad = if g == 0 { 1024 } else { 0 };
        let mut b = vec![0u8; pad];
        b.extend_from_slice(&sb.encode(g)?);
        b.resize(BLOCK_SIZE as usize, 0);
        b.extend_from_slice(&gdt);
        chunks.push(owned(g * BLOCKS_PER_GROUP, b));
    }

    chunks.sort_by_key(|c| c.block);
    for w in chunks.windows(2) {
        let end = w[0].block + (w[0].data.len() as u64).div_ceil(BLOCK_SIZE);
        if end > w[1].block {
            bail!(
                "internal error: ext4 blocks {} and {} overlap",
                w[0].block,
                w[1].block
            );
        }
    }
    let stats = Ext4Stats {
        size: opts.size,
        inodes_used: geo.inodes_count() - free_inodes,
        blocks_used: geo.blocks_count - free_blocks,
        block_size: BLOCK_SIZE as u32,
    };
    Ok(Image { chunks, stats })
}
