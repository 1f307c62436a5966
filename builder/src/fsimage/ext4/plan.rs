//! From a manifest to a plan: inode numbers, directory contents, which file blocks hold data
//! ([`analyze`], independent of the image size), then where every block goes ([`allocate`],
//! for one image size). Nothing here does I/O.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

use super::dir::{self, ftype, DirEntry};
use super::extent::{self, Extent};
use super::inode;
use super::layout::{self, Layout, Shortfall, BLOCK_SIZE};
use super::xattr::{self, Attr, Placement};
use crate::fsimage::manifest::{ImagePath, Kind, Manifest};

pub const ROOT_INO: u32 = 2;
pub const JOURNAL_INO: u32 = 8;
pub const LOST_FOUND_INO: u32 = 11;
/// mke2fs makes lost+found 16 KiB so e2fsck can reconnect files without allocating.
const LOST_FOUND_BLOCKS: usize = 4;
/// Above this many links a directory's count is stored as 1 (`dir_nlink`).
const LINK_MAX: u32 = 65000;
/// Symlink targets shorter than this live in `i_block` ("fast" symlinks, as the kernel makes).
pub const FAST_SYMLINK_MAX: usize = 59;
const BS: usize = BLOCK_SIZE as usize;

/// What an inode holds.
pub enum Body<'a> {
    /// Packed directory blocks (checksum tails still empty).
    Dir(Vec<Vec<u8>>),
    /// File data and the runs of its blocks that are not all zero: (first block, count).
    File {
        data: &'a [u8],
        runs: Vec<(u64, u64)>,
    },
    Symlink(&'a [u8]),
    /// Character/block device (`i_block` holds the number), FIFO or socket (`i_block` zero).
    Special([u8; 60]),
    /// The jbd2 journal (its size depends on the filesystem size).
    Journal,
}

/// One inode to write.
pub struct Node<'a> {
    pub ino: u32,
    /// The manifest path, for error messages (`None` for what the writer adds itself).
    pub path: Option<&'a ImagePath>,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub time: i64,
    pub links: u16,
    pub body: Body<'a>,
    pub xattrs: Placement,
}

impl Node<'_> {
    pub fn name(&self) -> String {
        match self.path {
            Some(p) => p.to_string(),
            None => format!("inode {}", self.ino),
        }
    }

    /// Data blocks (not tree or attribute blocks) this inode needs for a `journal`-block journal.
    pub fn data_blocks(&self, journal: u64) -> u64 {
        match &self.body {
            Body::Dir(b) => b.len() as u64,
            Body::File { runs, .. } => runs.iter().map(|r| r.1).sum(),
            Body::Symlink(t) if t.len() > FAST_SYMLINK_MAX => 1,
            Body::Symlink(_) | Body::Special(_) => 0,
            Body::Journal => journal,
        }
    }
}

/// The size-independent part of the plan; nodes sorted by inode number.
pub struct Analysis<'a> {
    pub nodes: Vec<Node<'a>>,
    pub max_ino: u32,
    pub journal: bool,
    /// Regular-file bytes (each inode once): what the progress bar counts.
    pub file_bytes: u64,
}

/// Runs of 4 KiB blocks of `data` that are not all zero; all-zero blocks become holes.
pub fn data_runs(data: &[u8]) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for (i, chunk) in data.chunks(BS).enumerate() {
        // OR 64-byte pieces together (vectorizes), stopping at the first non-zero piece.
        let nonzero = chunk
            .chunks(64)
            .any(|p| p.iter().fold(0u8, |a, &b| a | b) != 0);
        if nonzero {
            let i = i as u64;
            match runs.last_mut() {
                Some((s, n)) if *s + *n == i => *n += 1,
                _ => runs.push((i, 1)),
            }
        }
    }
    runs
}

fn file_type(k: &Kind) -> u8 {
    match k {
        Kind::Dir => ftype::DIR,
        Kind::File(_) | Kind::Hardlink(_) => ftype::REG,
        Kind::Symlink(_) => ftype::LNK,
        Kind::CharDev { .. } => ftype::CHR,
        Kind::BlockDev { .. } => ftype::BLK,
        Kind::Fifo => ftype::FIFO,
        Kind::Socket => ftype::SOCK,
    }
}

/// Numbers the inodes (root 2, journal 8, lost+found 11, then manifest order from 12), builds
/// the directories and finds file holes. `m` must have been validated.
pub fn analyze(m: &Manifest, journal: bool, time: i64) -> Result<Analysis<'_>> {
    let lpf = ImagePath::new("/lost+found")?;
    let mut inos: BTreeMap<&ImagePath, u32> = BTreeMap::new();
    let mut next = LOST_FOUND_INO + 1;
    for (p, e) in m.iter() {
        let ino = match &e.kind {
            _ if p.is_root() => ROOT_INO,
            Kind::Dir if *p == lpf => LOST_FOUND_INO,
            _ if *p == lpf => bail!(
                "/lost+found is a {}; ext4 needs it to be a directory",
                e.kind.name()
            ),
            Kind::Hardlink(_) => continue,
            _ => {
                let n = next;
                next = next.checked_add(1).context("more than 2^32 inodes")?;
                n
            }
        };
        inos.insert(p, ino);
    }
    let max_ino = next - 1;
    let slots = max_ino as usize + 1;
    let mut entries: Vec<Vec<DirEntry<'_>>> = vec![Vec::new(); slots];
    let mut parents = vec![ROOT_INO; slots];
    let mut links = vec![0u32; slots];
    let ino_of = |p: &ImagePath| {
        inos.get(p)
            .copied()
            .with_context(|| format!("{p} is not in the manifest"))
    };
    for (p, e) in m.iter() {
        let ino = match &e.kind {
            Kind::Hardlink(t) => ino_of(t)?,
            _ => ino_of(p)?,
        };
        links[ino as usize] += if e.kind == Kind::Dir { 2 } else { 1 };
        let Some(parent) = p.parent() else { continue };
        let pino = ino_of(&parent)?;
        let name = p.file_name().as_bytes();
        dir::check_name(name).with_context(|| format!("{p}: bad file name"))?;
        entries[pino as usize].push(DirEntry {
            name,
            ino,
            ftype: file_type(&e.kind),
        });
        if e.kind == Kind::Dir {
            links[pino as usize] += 1;
            parents[ino as usize] = pino;
        }
    }
    if !m.contains(&lpf) {
        let root = &mut entries[ROOT_INO as usize];
        let at = root.partition_point(|e| e.name < b"lost+found".as_slice());
        root.insert(
            at,
            DirEntry {
                name: b"lost+found",
                ino: LOST_FOUND_INO,
                ftype: ftype::DIR,
            },
        );
        links[ROOT_INO as usize] += 1;
        links[LOST_FOUND_INO as usize] = 2;
    }

    let mut nodes: Vec<Node<'_>> = Vec::with_capacity(slots);
    let mut file_bytes = 0;
    let dir_links = |n: u32| if n > LINK_MAX { 1 } else { n as u16 };
    if !m.contains(&lpf) {
        nodes.push(Node {
            ino: LOST_FOUND_INO,
            path: None,
            mode: 0o40700,
            uid: 0,
            gid: 0,
            time,
            links: 2,
            body: Body::Dir(dir::pack(LOST_FOUND_INO, ROOT_INO, &[], LOST_FOUND_BLOCKS)),
            xattrs: Placement::default(),
        });
    }
    if journal {
        nodes.push(Node {
            ino: JOURNAL_INO,
            path: None,
            mode: 0o100600,
            uid: 0,
            gid: 0,
            time,
            links: 1,
            body: Body::Journal,
            xattrs: Placement::default(),
        });
    }
    for (p, e) in m.iter() {
        if matches!(e.kind, Kind::Hardlink(_)) {
            continue;
        }
        let ino = ino_of(p)?;
        let n = links[ino as usize];
        let (body, links) = match &e.kind {
            Kind::Dir => {
                let min = if ino == LOST_FOUND_INO {
                    LOST_FOUND_BLOCKS
                } else {
                    1
                };
                (
                    Body::Dir(dir::pack(
                        ino,
                        parents[ino as usize],
                        &entries[ino as usize],
                        min,
                    )),
                    dir_links(n),
                )
            }
            Kind::File(d) => {
                if d.len() as u64 > u64::from(u32::MAX) * BLOCK_SIZE {
                    bail!(
                        "{p}: {} bytes is larger than ext4's 16 TiB file limit",
                        d.len()
                    );
                }
                if n > LINK_MAX {
                    bail!("{p} has {n} hard links; ext4 allows {LINK_MAX}");
                }
                file_bytes += d.len() as u64;
                (
                    Body::File {
                        data: d.as_slice(),
                        runs: data_runs(d),
                    },
                    n as u16,
                )
            }
            Kind::Symlink(t) => {
                if t.len() >= BS || t.as_bytes().contains(&0) {
                    bail!(
                        "{p}: symlink target is {} bytes or contains NUL; ext4 takes up to 4095",
                        t.len()
                    );
                }
                (Body::Symlink(t.as_bytes()), 1)
            }
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => (
                Body::Special(inode::encode_dev(*major, *minor).with_context(|| p.to_string())?),
                1,
            ),
            Kind::Fifo | Kind::Socket => (Body::Special([0; 60]), 1),
            Kind::Hardlink(_) => continue,
        };
        let xattrs = xattr::place(xattr::to_disk(&e.xattrs).with_context(|| p.to_string())?)
            .with_context(|| p.to_string())?;
        nodes.push(Node {
            ino,
            path: Some(p),
            // Only permission bits from `mode`; the type always comes from the kind.
            mode: (e.kind.type_bits() | u32::from(e.mode & 0o7777)) as u16,
            uid: e.uid,
            gid: e.gid,
            time: e.mtime,
            links,
            body,
            xattrs,
        });
    }
    nodes.sort_by_key(|n| n.ino);
    Ok(Analysis {
        nodes,
        max_ino,
        journal,
        file_bytes,
    })
}

/// Where one inode's blocks went.
#[derive(Debug, Clone, Default)]
pub struct Placed {
    pub extents: Vec<Extent>,
    pub tree: Vec<u64>,
    /// Index into [`Allocation::xattr_blocks`].
    pub xattr_block: Option<usize>,
}

/// A shared attribute block: its address, contents and how many inodes use it.
pub struct XattrBlock {
    pub at: u64,
    pub attrs: Vec<Attr>,
    pub refcount: u32,
}

/// The size-dependent part of the plan.
pub struct Allocation {
    pub layout: Layout,
    pub journal_blocks: u64,
    /// Parallel to [`Analysis::nodes`].
    pub placed: Vec<Placed>,
    pub xattr_blocks: Vec<XattrBlock>,
    /// Data blocks handed out, as runs in block order.
    pub used_runs: Vec<(u64, u64)>,
}

/// Hands out free blocks in disk order.
struct Allocator {
    free: Vec<(u64, u64)>,
    idx: usize,
    /// Blocks already taken from `free[idx]`.
    taken: u64,
    used: Vec<(u64, u64)>,
}

impl Allocator {
    fn alloc(&mut self, mut n: u64) -> Option<Vec<(u64, u64)>> {
        let mut out = Vec::new();
        while n > 0 {
            let &(start, len) = self.free.get(self.idx)?;
            let k = n.min(len - self.taken);
            let at = start + self.taken;
            out.push((at, k));
            match self.used.last_mut() {
                Some((s, l)) if *s + *l == at => *l += k,
                _ => self.used.push((at, k)),
            }
            self.taken += k;
            n -= k;
            if self.taken == len {
                (self.idx, self.taken) = (self.idx + 1, 0);
            }
        }
        Some(out)
    }

    fn blocks(&mut self, n: u64) -> Option<Vec<u64>> {
        Some(
            self.alloc(n)?
                .into_iter()
                .flat_map(|(s, l)| s..s + l)
                .collect(),
        )
    }
}

/// Lays the analysed filesystem out in an image of `image_blocks` blocks, or says how far
/// short it falls.
pub fn allocate(a: &Analysis<'_>, image_blocks: u64) -> Result<Allocation, Shortfall> {
    let inodes = layout::inodes_wanted(image_blocks, u64::from(a.max_ino), a.journal);
    let layout = layout::plan(layout::Geometry::new(image_blocks, inodes)?)?;
    let journal_blocks = if a.journal {
        layout::journal_blocks(layout.geo.blocks_count)
    } else {
        0
    };
    let free = layout.free_runs();
    let have: u64 = free.iter().map(|r| r.1).sum();
    // What the plan needs at least (data, one tree per file's minimum extent count, attribute
    // blocks before sharing), for the error and for callers searching for a size.
    let need = || -> u64 {
        a.nodes
            .iter()
            .map(|n| {
                let d = n.data_blocks(journal_blocks);
                d + extent::tree_blocks(d.div_ceil(extent::MAX_LEN) as usize) as u64
                    + u64::from(n.xattrs.block.is_some())
            })
            .sum()
    };
    let short = || Shortfall {
        what: "files, directories and journal".into(),
        need: need().max(have + 1),
        have,
    };
    let mut al = Allocator {
        free,
        idx: 0,
        taken: 0,
        used: Vec::new(),
    };
    let mut placed = Vec::with_capacity(a.nodes.len());
    let mut xattr_blocks: Vec<XattrBlock> = Vec::new();
    let mut xattr_index: BTreeMap<&[Attr], usize> = BTreeMap::new();
    for n in &a.nodes {
        let blocks = n.data_blocks(journal_blocks);
        let mut p = Placed::default();
        if blocks > 0 {
            let phys = al.alloc(blocks).ok_or_else(short)?;
            p.extents = match &n.body {
                Body::File { runs, .. } => extent::map_runs(runs, &phys),
                _ => extent::map_runs(&[(0, blocks)], &phys),
            };
            p.tree = al
                .blocks(extent::tree_blocks(p.extents.len()) as u64)
                .ok_or_else(short)?;
        }
        if let Some(attrs) = &n.xattrs.block {
            let i = match xattr_index.get(attrs.as_slice()) {
                Some(&i) if xattr_blocks[i].refcount < 1024 => i,
                _ => {
                    let at = al.blocks(1).ok_or_else(short)?[0];
                    xattr_blocks.push(XattrBlock {
                        at,
                        attrs: attrs.clone(),
                        refcount: 0,
                    });
                    xattr_index.insert(attrs, xattr_blocks.len() - 1);
                    xattr_blocks.len() - 1
                }
            };
            xattr_blocks[i].refcount += 1;
            p.xattr_block = Some(i);
        }
        placed.push(p);
    }
    Ok(Allocation {
        layout,
        journal_blocks,
        placed,
        xattr_blocks,
        used_runs: al.used,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsimage::manifest::Entry;

    fn p(s: &str) -> ImagePath {
        ImagePath::new(s).unwrap()
    }

    #[test]
    fn zero_blocks_become_holes() {
        let mut d = vec![0u8; 5 * BS + 10];
        d[BS] = 1;
        d[2 * BS + 4095] = 1;
        d[5 * BS + 9] = 1;
        assert_eq!(data_runs(&d), [(1, 2), (5, 1)]);
        assert!(data_runs(&[0u8; 3 * BS]).is_empty());
        assert!(data_runs(&[]).is_empty());
    }

    #[test]
    fn inodes_follow_path_order_and_links_add_up() {
        let mut m = Manifest::new(0);
        m.insert(p("/b/f"), Entry::file(b"x".to_vec(), 0o644, 0))
            .unwrap();
        m.insert(p("/a"), Entry::dir(0o755, 0)).unwrap();
        m.insert(p("/a/h"), Entry::new(Kind::Hardlink(p("/b/f")), 0o644, 0))
            .unwrap();
        m.insert(p("/a/sub"), Entry::dir(0o755, 0)).unwrap();
        let a = analyze(&m, false, 0).unwrap();
        let inos: Vec<(u32, String, u16)> =
            a.nodes.iter().map(|n| (n.ino, n.name(), n.links)).collect();
        assert_eq!(
            inos,
            [
                (2, "/".into(), 5), // ., .., a/.., b/.., lost+found/..
                (11, "inode 11".into(), 2),
                (12, "/a".into(), 3), // sub
                (13, "/a/sub".into(), 2),
                (14, "/b".into(), 2),
                (15, "/b/f".into(), 2), // hard link
            ]
        );
        assert_eq!(a.max_ino, 15);
    }

    #[test]
    fn lost_found_that_is_a_file_is_an_error() {
        let mut m = Manifest::new(0);
        m.insert(p("/lost+found"), Entry::file(vec![], 0o644, 0))
            .unwrap();
        assert!(analyze(&m, false, 0).is_err());
    }

    #[test]
    fn allocation_shares_identical_attribute_blocks_and_reports_shortfall() {
        let mut m = Manifest::new(0);
        for name in ["/x", "/y"] {
            let mut e = Entry::file(vec![1u8; 10], 0o644, 0);
            e.xattrs.insert("user.big".into(), vec![7u8; 300]);
            m.insert(p(name), e).unwrap();
        }
        let a = analyze(&m, false, 0).unwrap();
        let al = allocate(&a, 4096).unwrap();
        assert_eq!(al.xattr_blocks.len(), 1);
        assert_eq!(al.xattr_blocks[0].refcount, 2);
        m.insert(p("/big"), Entry::file(vec![1u8; 20 << 20], 0o644, 0))
            .unwrap();
        let a = analyze(&m, false, 0).unwrap();
        let err = allocate(&a, 4096).err().unwrap();
        assert!(err.need > 5120 && err.have < 4096, "{err}");
    }
}
