//! FAT32 for the ESP: a deterministic writer ([`write`]), a small reader ([`read_dir_tree`]) and
//! the in-place rename boot counting needs ([`rename`]).
//!
//! berth writes FAT itself because the published `fatfs` crate writes directories `fsck.fat`
//! rejects and mtools stamps the current time and random serials. What [`write`] produces:
//!
//! - FAT32 with 512-byte sectors, 32 reserved sectors, two FATs, FSInfo at sector 1 (exact free
//!   count and next-free hint), backup boot sector (and FSInfo) at 6, media 0xF8, the root
//!   directory at cluster 2; cluster size as `mkfs.fat`/fatgen103 pick it for the volume size
//!   (see [`geometry::sectors_per_cluster`]);
//! - directories implied by the file paths, entries sorted by name (UTF-8 byte order), the
//!   volume label first in the root; `.`/`..` in every subdirectory (`..` of a top-level
//!   directory is cluster 0, per the spec);
//! - a VFAT long name for every name that is not a valid upper-case 8.3 name, so `loader`,
//!   `entries`, `berth-a+3.conf` keep their case in Linux and in UEFI firmware; short names
//!   per [`name::short_name_for`];
//! - every timestamp (create, write, access) from [`FatOptions::mtime`], in UTC;
//! - each directory and file in one contiguous cluster run, allocated depth-first in entry
//!   order; nothing but metadata and file bytes is written, so the unused space is whatever
//!   the output already reads as (zeros for a new or sparse file).
//!
//! Same input, same bytes.

mod dirent;
mod geometry;
mod name;
mod read;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;

use anyhow::{Context, Result};

use dirent::{DosTime, ShortEntry, ATTR_ARCHIVE, ATTR_DIRECTORY, ATTR_VOLUME_ID, ENTRY};
use geometry::{BootParams, EOC, MEDIA, ROOT_CLUSTER};
pub use geometry::{Geometry, SECTOR};
pub use read::{read_dir_tree, rename};

use crate::units::MIB;

/// One file to put on the volume.
#[derive(Clone, Debug)]
pub struct FatFile {
    /// Absolute, `/`-separated: `/EFI/BOOT/BOOTX64.EFI`, `/loader/entries/berth-a+3.conf`.
    pub path: String,
    pub data: Arc<Vec<u8>>,
}

/// How to format the volume.
#[derive(Clone, Debug)]
pub struct FatOptions {
    /// Volume size in bytes: whole sectors (the ESP partition's size, a multiple of 1 MiB), at
    /// least 33 MiB so FAT32 gets its minimum 65 525 clusters.
    pub size: u64,
    /// Volume label, up to 11 characters valid in an 8.3 name (upper case, digits,
    /// ``!#$%&'()-@^_`{}~`` and space); empty for none.
    pub label: String,
    /// Volume serial number; the caller derives it from content to stay reproducible.
    pub volume_id: u32,
    /// Every timestamp on the volume (SOURCE_DATE_EPOCH), Unix seconds; rendered in UTC and
    /// clamped to FAT's 1980–2107 range.
    pub mtime: i64,
}

/// Errors a caller may branch on (the ESP too small for its contents, above all).
#[derive(Debug, thiserror::Error)]
pub enum FatError {
    #[error(
        "a {size}-byte volume is too small for FAT32, which needs 65525 clusters: \
         make it at least {min} bytes ({} MiB)",
        min / MIB
    )]
    BelowFat32Minimum { size: u64, min: u64 },
    #[error(
        "the files need a bigger FAT volume: {size} bytes ({} MiB) holds {have} clusters, \
         they need {need}; make it at least {min} bytes ({} MiB)",
        size / MIB,
        min / MIB
    )]
    TooSmall {
        size: u64,
        have: u64,
        need: u64,
        min: u64,
    },
    #[error("volume size {size} is not a whole number of 512-byte sectors")]
    Unaligned { size: u64 },
    #[error("volume size {size} exceeds FAT32's 2^32 sectors (2 TiB)")]
    TooLarge { size: u64 },
    #[error("{path:?}: {reason}")]
    BadPath { path: String, reason: String },
}

fn bad_path(path: &str, reason: impl Into<String>) -> FatError {
    FatError::BadPath {
        path: path.to_string(),
        reason: reason.into(),
    }
}

/// Writes a FAT32 volume holding `files` at `out`'s current position (the caller may seek to
/// a partition's offset first; that offset, in sectors, becomes `BPB_HiddSec` as with
/// `mkfs.fat --offset`). Only metadata and file contents are written, and the last byte of
/// the volume if the stream is shorter, so the stream's length covers the volume; the stream
/// is left at the volume's end. Fails with a [`FatError`] (inside the `anyhow::Error`) for a
/// bad path, a bad label, or a size that is too small for FAT32 or for the files.
pub fn write<W: Write + Seek>(files: &[FatFile], opts: &FatOptions, out: &mut W) -> Result<()> {
    let label = volume_label(&opts.label)?;
    let tree = Tree::build(files)?;
    let geo = Geometry::plan(opts.size)?;
    let time = DosTime::from_unix(opts.mtime);

    let need = tree.clusters_needed(geo.cluster_bytes(), label.is_some());
    if need > u64::from(geo.clusters) {
        let min = min_size_for(&tree, label.is_some(), opts.size);
        return Err(FatError::TooSmall {
            size: opts.size,
            have: u64::from(geo.clusters),
            need,
            min,
        }
        .into());
    }

    let mut placed = Placement {
        alloc: Allocator {
            next: ROOT_CLUSTER,
            cluster_bytes: geo.cluster_bytes(),
            runs: Vec::new(),
        },
        time,
        dirs: Vec::new(),
        files: Vec::new(),
    };
    let root = placed.place(&tree.root, None, label)?;
    debug_assert_eq!(root, ROOT_CLUSTER);
    let Placement {
        alloc,
        dirs,
        files: file_runs,
        ..
    } = placed;
    let used = alloc.next - ROOT_CLUSTER;
    debug_assert_eq!(u64::from(used), need);

    let base = out
        .stream_position()
        .context("querying the output position")?;
    let at = |out: &mut W, off: u64, bytes: &[u8]| -> Result<()> {
        out.seek(SeekFrom::Start(base + off))?;
        out.write_all(bytes)?;
        Ok(())
    };

    // Reserved region.
    let boot = geometry::boot_sector(&BootParams {
        geometry: &geo,
        hidden_sectors: u32::try_from(base / SECTOR).unwrap_or(0),
        volume_id: opts.volume_id,
        label: label.unwrap_or(*b"NO NAME    "),
    });
    let free = geo.clusters - used;
    let next_free = if free > 0 { alloc.next } else { u32::MAX };
    let fsinfo = geometry::fsinfo_sector(free, next_free);
    for first in [0, u64::from(geometry::BACKUP_BOOT_SECTOR)] {
        at(out, first * SECTOR, &boot).context("writing the FAT boot sector")?;
        at(out, (first + 1) * SECTOR, &fsinfo).context("writing the FSInfo sector")?;
    }

    // FATs: only the used prefix; free entries are zero.
    let mut fat = vec![0u32; alloc.next as usize];
    fat[0] = 0x0FFF_FF00 | u32::from(MEDIA);
    fat[1] = EOC; // also the "clean unmount, no I/O errors" bits
    for &(first, count) in &alloc.runs {
        for c in first..first + count - 1 {
            fat[c as usize] = c + 1;
        }
        fat[(first + count - 1) as usize] = EOC;
    }
    let fat_bytes: Vec<u8> = fat.iter().flat_map(|e| e.to_le_bytes()).collect();
    for copy in 0..geometry::FAT_COUNT {
        at(out, geo.fat_offset(copy), &fat_bytes).context("writing the FAT")?;
    }

    for (first, bytes) in &dirs {
        at(out, geo.cluster_offset(*first), bytes).context("writing a directory")?;
    }
    for (first, path, data) in &file_runs {
        at(out, geo.cluster_offset(*first), data).with_context(|| format!("writing {path}"))?;
    }

    // Make the stream cover the whole volume (fsck.fat checks it can read the last sector).
    let end = base + geo.size();
    if out.seek(SeekFrom::End(0))? < end {
        at(out, geo.size() - 1, &[0]).context("extending the output to the volume's end")?;
    }
    out.seek(SeekFrom::Start(end))?;
    out.flush()?;
    Ok(())
}

/// The label as stored in the BPB and the root directory, `None` if empty.
fn volume_label(label: &str) -> Result<Option<[u8; 11]>, FatError> {
    if label.is_empty() {
        return Ok(None);
    }
    let bad = |why: &str| bad_path(label, format!("invalid volume label: {why}"));
    if label.len() > 11 {
        return Err(bad("longer than 11 characters"));
    }
    if label.starts_with(' ') {
        return Err(bad("starts with a space"));
    }
    if let Some(c) = label
        .bytes()
        .find(|&b| b != b' ' && name::exact_short_name(&(b as char).to_string()).is_none())
    {
        return Err(bad(&format!(
            "{:?} is not allowed; use upper case, digits, space and !#$%&'()-@^_`{{}}~",
            c as char
        )));
    }
    let mut out = [b' '; 11];
    out[..label.len()].copy_from_slice(label.as_bytes());
    Ok(Some(out))
}

/// The smallest whole-MiB volume, at least `from`, that holds `tree`.
fn min_size_for(tree: &Tree, label: bool, from: u64) -> u64 {
    let start = from.div_ceil(MIB).max(1);
    (start..)
        .map(|m| m * MIB)
        .find(|&s| match Geometry::plan(s) {
            Ok(g) => tree.clusters_needed(g.cluster_bytes(), label) <= u64::from(g.clusters),
            Err(FatError::TooLarge { .. }) => true,
            Err(_) => false,
        })
        .unwrap_or(u64::MAX)
}

enum Node<'a> {
    File { path: &'a str, data: &'a [u8] },
    Dir(BTreeMap<&'a str, Node<'a>>),
}

/// The directory tree implied by the file paths, validated.
struct Tree<'a> {
    root: BTreeMap<&'a str, Node<'a>>,
}

/// Hands out contiguous cluster runs from cluster 2 up.
struct Allocator {
    next: u32,
    cluster_bytes: u64,
    runs: Vec<(u32, u32)>,
}

impl Allocator {
    /// First cluster of a run for `bytes` (at least one cluster), or 0 for an empty file.
    fn take(&mut self, bytes: u64, at_least_one: bool) -> u32 {
        let mut n = bytes.div_ceil(self.cluster_bytes) as u32;
        if n == 0 {
            if !at_least_one {
                return 0;
            }
            n = 1;
        }
        let first = self.next;
        self.next += n;
        self.runs.push((first, n));
        first
    }
}

impl<'a> Tree<'a> {
    fn build(files: &'a [FatFile]) -> Result<Tree<'a>, FatError> {
        let mut root = BTreeMap::new();
        for f in files {
            let path = f.path.as_str();
            let rest = path
                .strip_prefix('/')
                .ok_or_else(|| bad_path(path, "path must be absolute (start with '/')"))?;
            let parts: Vec<&str> = rest.split('/').collect();
            for p in &parts {
                name::check_long_name(p).map_err(|e| bad_path(path, e))?;
            }
            if f.data.len() > u32::MAX as usize {
                return Err(bad_path(
                    path,
                    "larger than FAT's 4 GiB - 1 file size limit",
                ));
            }
            let (last, dirs) = parts.split_last().expect("split yields one part");
            let mut cur = &mut root;
            for (i, d) in dirs.iter().enumerate() {
                let node = cur.entry(*d).or_insert_with(|| Node::Dir(BTreeMap::new()));
                cur = match node {
                    Node::Dir(m) => m,
                    Node::File { path: other, .. } => {
                        return Err(bad_path(
                            path,
                            format!(
                                "/{} is both a file ({other}) and a directory",
                                parts[..=i].join("/")
                            ),
                        ))
                    }
                };
            }
            match cur.get(last) {
                None => {}
                Some(Node::Dir(_)) => {
                    return Err(bad_path(path, "is both a file and a directory"));
                }
                Some(Node::File { .. }) => return Err(bad_path(path, "listed twice")),
            }
            cur.insert(
                last,
                Node::File {
                    path,
                    data: &f.data,
                },
            );
        }
        let tree = Tree { root };
        tree.check_case_clashes(&tree.root, "")?;
        Ok(tree)
    }

    /// FAT names are case-insensitive: `Foo` and `foo` in one directory would be one file.
    fn check_case_clashes(&self, dir: &BTreeMap<&str, Node>, at: &str) -> Result<(), FatError> {
        let mut seen: HashMap<String, &str> = HashMap::new();
        for (name, node) in dir {
            if let Some(other) = seen.insert(name.to_lowercase(), name) {
                return Err(bad_path(
                    &format!("{at}/{name}"),
                    format!("differs from {at}/{other} only in case; FAT names ignore case"),
                ));
            }
            if let Node::Dir(sub) = node {
                self.check_case_clashes(sub, &format!("{at}/{name}"))?;
            }
        }
        Ok(())
    }

    /// Clusters the whole tree takes with `cluster_bytes` clusters.
    fn clusters_needed(&self, cluster_bytes: u64, label: bool) -> u64 {
        fn dir(m: &BTreeMap<&str, Node>, fixed: usize, cb: u64) -> u64 {
            let slots: usize = fixed + m.keys().map(|n| 1 + name::slot_count(n)).sum::<usize>();
            let mut total = ((slots * ENTRY) as u64).div_ceil(cb).max(1);
            for node in m.values() {
                total += match node {
                    Node::File { data, .. } => (data.len() as u64).div_ceil(cb),
                    Node::Dir(sub) => dir(sub, 2, cb),
                };
            }
            total
        }
        dir(&self.root, usize::from(label), cluster_bytes)
    }
}

/// The allocation and rendered directories of a tree being laid out.
struct Placement<'a> {
    alloc: Allocator,
    time: DosTime,
    /// (first cluster, entries padded to whole clusters)
    dirs: Vec<(u32, Vec<u8>)>,
    /// (first cluster, path, contents) of every non-empty file
    files: Vec<(u32, &'a str, &'a [u8])>,
}

impl<'a> Placement<'a> {
    /// Allocates `dir` and everything under it (depth-first, in entry order) and renders its
    /// entries. `parent` is the parent's first cluster (`Some(0)` for a top-level directory,
    /// `None` for the root, which alone carries the `label`). Returns the directory's first
    /// cluster.
    fn place(
        &mut self,
        dir: &'a BTreeMap<&'a str, Node<'a>>,
        parent: Option<u32>,
        label: Option<[u8; 11]>,
    ) -> Result<u32, FatError> {
        let time = self.time;
        let names = short_names(dir)?;
        let fixed = if parent.is_some() {
            2
        } else {
            usize::from(label.is_some())
        };
        let slots = fixed
            + names
                .iter()
                .map(|(n, _)| 1 + name::slot_count(n))
                .sum::<usize>();
        let dir_bytes = (slots * ENTRY) as u64;
        let first = self.alloc.take(dir_bytes, true);

        let mut bytes = Vec::with_capacity(slots * ENTRY);
        match parent {
            Some(p) => {
                let dot = |n: &[u8; 11], c| ShortEntry::new(*n, ATTR_DIRECTORY, c, 0, time);
                bytes.extend_from_slice(&dot(b".          ", first).encode());
                bytes.extend_from_slice(&dot(b"..         ", p).encode());
            }
            None => {
                if let Some(l) = label {
                    bytes.extend_from_slice(
                        &ShortEntry::new(l, ATTR_VOLUME_ID, 0, 0, time).encode(),
                    );
                }
            }
        }
        for (entry_name, short) in &names {
            let (attr, cluster, size) = match &dir[entry_name] {
                Node::File { path, data } => {
                    let c = self.alloc.take(data.len() as u64, false);
                    if c != 0 {
                        self.files.push((c, path, data));
                    }
                    (ATTR_ARCHIVE, c, data.len() as u32)
                }
                Node::Dir(sub) => {
                    // `..` in a top-level directory names the root as cluster 0 (fatgen103 §6.7).
                    let me = self.alloc.next;
                    let c =
                        self.place(sub, Some(if parent.is_some() { first } else { 0 }), None)?;
                    debug_assert_eq!(c, me);
                    (ATTR_DIRECTORY, c, 0)
                }
            };
            if name::needs_long_name(entry_name) {
                for slot in name::lfn_slots(entry_name, short) {
                    bytes.extend_from_slice(&slot);
                }
            }
            bytes.extend_from_slice(&ShortEntry::new(*short, attr, cluster, size, time).encode());
        }
        let cb = self.alloc.cluster_bytes;
        bytes.resize((dir_bytes.div_ceil(cb) * cb) as usize, 0);
        self.dirs.push((first, bytes));
        Ok(first)
    }
}

/// Short names for a directory's entries, in entry order. Names that are exact 8.3 names, or
/// 8.3 names but for case, claim theirs first (they are unique, case clashes being rejected),
/// then the others get `~N` tails in name order: deterministic, and a generated name never
/// steals one an exact name needs.
fn short_names<'a>(dir: &BTreeMap<&'a str, Node>) -> Result<Vec<(&'a str, [u8; 11])>, FatError> {
    let mut taken = HashSet::new();
    let mut fixed = HashMap::new();
    for &n in dir.keys() {
        if let Some(s) = name::exact_short_name(&n.to_ascii_uppercase()) {
            taken.insert(s);
            fixed.insert(n, s);
        }
    }
    dir.keys()
        .map(|&n| {
            let s = match fixed.get(n) {
                Some(s) => *s,
                None => {
                    let s = name::short_name_for(n, &taken)
                        .ok_or_else(|| bad_path(n, "no free short name left in its directory"))?;
                    taken.insert(s);
                    s
                }
            };
            Ok((n, s))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn file(path: &str, data: &[u8]) -> FatFile {
        FatFile {
            path: path.into(),
            data: Arc::new(data.to_vec()),
        }
    }

    fn opts(size: u64) -> FatOptions {
        FatOptions {
            size,
            label: "BERTH-ESP".into(),
            volume_id: 0x1234_5678,
            mtime: 1_700_000_000,
        }
    }

    fn write_err(files: &[FatFile], o: &FatOptions) -> String {
        let mut out = Cursor::new(Vec::new());
        format!("{:#}", write(files, o, &mut out).unwrap_err())
    }

    #[test]
    fn rejects_bad_inputs() {
        let o = opts(64 * MIB);
        let e = write_err(&[file("/a", b"x"), file("/a/b", b"y")], &o);
        assert!(e.contains("both a file"), "{e}");
        let e = write_err(&[file("/a/b", b"x"), file("/a", b"y")], &o);
        assert!(e.contains("both a file and a directory"), "{e}");
        let e = write_err(&[file("/a", b"x"), file("/a", b"y")], &o);
        assert!(e.contains("listed twice"), "{e}");
        let e = write_err(&[file("/Foo", b"x"), file("/foo", b"y")], &o);
        assert!(e.contains("only in case"), "{e}");
        let e = write_err(&[file("/a?b", b"x")], &o);
        assert!(e.contains("contains '?'"), "{e}");
        let e = write_err(&[file("relative", b"x")], &o);
        assert!(e.contains("absolute"), "{e}");
        let e = write_err(&[file("/a//b", b"x")], &o);
        assert!(e.contains("empty path component"), "{e}");
        let long = format!("/{}", "n".repeat(256));
        assert!(write_err(&[file(&long, b"x")], &o).contains("at most 255"));
        let mut bad_label = opts(64 * MIB);
        bad_label.label = "esp".into();
        assert!(write_err(&[], &bad_label).contains("invalid volume label"));
        bad_label.label = "TWELVE-CHARS".into();
        assert!(write_err(&[], &bad_label).contains("longer than 11"));
        let e = write_err(&[], &opts(16 * MIB));
        assert!(e.contains("at least 34603008 bytes (33 MiB)"), "{e}");
    }

    #[test]
    fn too_small_names_the_size_needed() {
        let big = vec![0u8; 40 * MIB as usize];
        let e = write_err(&[file("/big", &big)], &opts(33 * MIB));
        // 40 MiB of 512-byte clusters plus FATs and the root directory: 41 MiB.
        assert!(e.contains("at least 42991616 bytes (41 MiB)"), "{e}");
        let mut out = Cursor::new(Vec::new());
        write(&[file("/big", &big)], &opts(41 * MIB), &mut out).unwrap();
    }

    #[test]
    fn layout_and_read_back() {
        let files = vec![
            file("/EFI/BOOT/BOOTX64.EFI", &[7u8; 3000]),
            file("/loader/entries/berth-a+3.conf", b"title a\n"),
            file("/empty", b""),
        ];
        let mut out = Cursor::new(vec![0xAAu8; 4096]);
        out.seek(SeekFrom::Start(1024)).unwrap();
        write(&files, &opts(64 * MIB), &mut out).unwrap();
        let img = out.into_inner();
        assert_eq!(img.len() as u64, 1024 + 64 * MIB);
        let vol = &img[1024..];
        assert_eq!(
            u32::from_le_bytes(vol[28..32].try_into().unwrap()),
            2,
            "hidden sectors"
        );
        assert_eq!(&vol[..512], &vol[6 * 512..7 * 512], "backup boot sector");
        let geo = Geometry::plan(64 * MIB).unwrap();
        let root = &vol[geo.cluster_offset(2) as usize..][..512];
        assert_eq!(&root[..11], b"BERTH-ESP  ");
        assert_eq!(root[11], ATTR_VOLUME_ID);
        // Root: label, EFI, empty (LFN + short), loader (LFN + short) = 6 entries in cluster 2;
        // EFI's directory is cluster 3, its `..` is 0.
        assert_eq!(&root[32..43], b"EFI        ");
        let efi = &vol[geo.cluster_offset(3) as usize..][..96];
        assert_eq!(&efi[..11], b".          ");
        assert_eq!(ShortEntry::decode(&efi[..32]).cluster, 3);
        assert_eq!(&efi[32..43], b"..         ");
        assert_eq!(ShortEntry::decode(&efi[32..64]).cluster, 0);

        let mut r = Cursor::new(&img);
        r.seek(SeekFrom::Start(1024)).unwrap();
        let tree = read_dir_tree(&mut r).unwrap();
        let got: Vec<(&str, usize)> = tree.iter().map(|(p, d)| (p.as_str(), d.len())).collect();
        assert_eq!(
            got,
            [
                ("/EFI/BOOT/BOOTX64.EFI", 3000),
                ("/empty", 0),
                ("/loader/entries/berth-a+3.conf", 8)
            ]
        );
        assert_eq!(tree[2].1, b"title a\n");

        // Deterministic.
        let mut again = Cursor::new(vec![0xAAu8; 4096]);
        again.seek(SeekFrom::Start(1024)).unwrap();
        write(&files, &opts(64 * MIB), &mut again).unwrap();
        assert!(again.into_inner() == img);
    }

    #[test]
    fn rename_in_place() {
        let files = vec![
            file("/loader/entries/berth-a+3.conf", b"a"),
            file("/loader/entries/berth-b.conf", b"b"),
        ];
        let mut img = Cursor::new(Vec::new());
        write(&files, &opts(64 * MIB), &mut img).unwrap();
        img.set_position(0);
        rename(
            &mut img,
            "/loader/entries/berth-a+3.conf",
            "berth-a+2-1.conf",
        )
        .unwrap();
        img.set_position(0);
        // Longer than any free run: needs LFN slots past the old ones.
        let long = format!("berth-a-{}.conf", "x".repeat(60));
        rename(&mut img, "/loader/entries/berth-a+2-1.conf", &long).unwrap();
        img.set_position(0);
        let tree = read_dir_tree(&mut img).unwrap();
        let names: Vec<&str> = tree.iter().map(|(p, _)| p.as_str()).collect();
        assert!(
            names.contains(&format!("/loader/entries/{long}").as_str()),
            "{names:?}"
        );
        assert!(names.contains(&"/loader/entries/berth-b.conf"));
        assert_eq!(names.len(), 2);
        img.set_position(0);
        let e = format!(
            "{:#}",
            rename(&mut img, &format!("/loader/entries/{long}"), "BERTH-B.CONF").unwrap_err()
        );
        assert!(e.contains("already exists"), "{e}");
    }
}
