//! Reading a FAT32 volume back, and renaming one entry in place.
//!
//! Enough FAT to inspect and bless an ESP berth wrote (or a FAT32 volume with the same reserved
//! region and FAT count, which is what mkfs.fat makes): FAT chains, long names, the NT case
//! bits. Not a general driver: no FAT12/16, no writing of contents.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom, Write};

use anyhow::{anyhow, bail, ensure, Context, Result};

use super::dirent::{ShortEntry, ATTR_VOLUME_ID, DELETED, ENTRY};
use super::geometry::{self, Geometry, EOC, FAT_COUNT, FSINFO_SECTOR, SECTOR};
use super::name::{self, LfnAssembler, ATTR_LONG_NAME};

/// An opened volume: where it starts in the stream, its geometry and FAT (copy 1).
struct Volume {
    base: u64,
    geo: Geometry,
    root: u32,
    fat: Vec<u32>,
}

/// One live entry of a directory.
struct Entry {
    name: String,
    short: ShortEntry,
    /// Index of the first slot (LFN or short) and of the short entry, in 32-byte units.
    first_slot: usize,
    short_slot: usize,
}

impl Volume {
    fn open<R: Read + Seek>(r: &mut R) -> Result<Volume> {
        let base = r.stream_position()?;
        let mut boot = [0u8; SECTOR as usize];
        r.read_exact(&mut boot).context("reading the boot sector")?;
        let (geo, root) = geometry::parse_boot_sector(&boot).context("not a FAT32 volume")?;
        let mut raw = vec![0u8; (geo.clusters as usize + 2) * 4];
        r.seek(SeekFrom::Start(base + geo.fat_offset(0)))?;
        r.read_exact(&mut raw).context("reading the FAT")?;
        let fat = raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) & 0x0FFF_FFFF)
            .collect();
        Ok(Volume {
            base,
            geo,
            root,
            fat,
        })
    }

    fn valid(&self, c: u32) -> bool {
        (2..self.geo.clusters + 2).contains(&c)
    }

    /// The clusters of the chain starting at `first`.
    fn chain(&self, first: u32) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        let mut c = first;
        loop {
            ensure!(
                self.valid(c),
                "cluster chain from {first} reaches invalid cluster {c:#x}"
            );
            ensure!(
                out.len() <= self.geo.clusters as usize,
                "cluster chain from {first} loops"
            );
            out.push(c);
            let next = self.fat[c as usize];
            if next >= 0x0FFF_FFF8 {
                return Ok(out);
            }
            c = next;
        }
    }

    fn read_chain<R: Read + Seek>(&self, r: &mut R, first: u32) -> Result<Vec<u8>> {
        let chain = self.chain(first)?;
        let cb = self.geo.cluster_bytes() as usize;
        let mut buf = vec![0u8; chain.len() * cb];
        for (i, &c) in chain.iter().enumerate() {
            r.seek(SeekFrom::Start(self.base + self.geo.cluster_offset(c)))?;
            r.read_exact(&mut buf[i * cb..(i + 1) * cb])
                .with_context(|| format!("reading cluster {c}"))?;
        }
        Ok(buf)
    }

    fn write_chain<W: Write + Seek>(&self, w: &mut W, first: u32, buf: &[u8]) -> Result<()> {
        let cb = self.geo.cluster_bytes() as usize;
        for (c, bytes) in self.chain(first)?.iter().zip(buf.chunks(cb)) {
            w.seek(SeekFrom::Start(self.base + self.geo.cluster_offset(*c)))?;
            w.write_all(bytes)?;
        }
        Ok(())
    }

    fn read_file<R: Read + Seek>(&self, r: &mut R, e: &ShortEntry) -> Result<Vec<u8>> {
        if e.size == 0 {
            return Ok(Vec::new());
        }
        let mut data = self.read_chain(r, e.cluster)?;
        ensure!(
            data.len() as u64 >= u64::from(e.size),
            "file of {} bytes has only {} bytes of clusters",
            e.size,
            data.len()
        );
        data.truncate(e.size as usize);
        Ok(data)
    }

    /// The first cluster of the directory at `path` (`/` or `/a/b`).
    fn find_dir<R: Read + Seek>(&self, r: &mut R, path: &str) -> Result<u32> {
        let mut cluster = self.root;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            let entries = parse_dir(&self.read_chain(r, cluster)?);
            let e = entries
                .iter()
                .find(|e| same_name(&e.name, part))
                .ok_or_else(|| anyhow!("no directory {part:?} in {path}"))?;
            ensure!(e.short.is_dir(), "{part:?} in {path} is not a directory");
            cluster = if e.short.cluster == 0 {
                self.root
            } else {
                e.short.cluster
            };
        }
        Ok(cluster)
    }

    /// Takes a free cluster, links it after `last` and marks it end-of-chain, in both FATs
    /// and the FSInfo sector.
    fn extend<W: Read + Write + Seek>(&mut self, w: &mut W, last: u32) -> Result<u32> {
        let new = (2..self.geo.clusters + 2)
            .find(|&c| self.fat[c as usize] == 0)
            .ok_or_else(|| anyhow!("no free cluster to grow the directory"))?;
        self.fat[last as usize] = new;
        self.fat[new as usize] = EOC;
        for copy in 0..FAT_COUNT {
            for c in [last, new] {
                let off = self.base + self.geo.fat_offset(copy) + u64::from(c) * 4;
                w.seek(SeekFrom::Start(off))?;
                w.write_all(&self.fat[c as usize].to_le_bytes())?;
            }
        }
        w.seek(SeekFrom::Start(self.base + self.geo.cluster_offset(new)))?;
        w.write_all(&vec![0u8; self.geo.cluster_bytes() as usize])?;
        // Keep FSInfo exact (fsck.fat reports a wrong free count): primary and backup.
        for sector in [FSINFO_SECTOR, geometry::BACKUP_BOOT_SECTOR + 1] {
            let off = self.base + u64::from(sector) * SECTOR;
            let mut s = [0u8; SECTOR as usize];
            w.seek(SeekFrom::Start(off))?;
            w.read_exact(&mut s)?;
            if !geometry::is_fsinfo(&s) {
                continue;
            }
            let free = u32::from_le_bytes([s[488], s[489], s[490], s[491]]);
            let updated = geometry::fsinfo_sector(free.saturating_sub(1), new + 1);
            w.seek(SeekFrom::Start(off + 488))?;
            w.write_all(&updated[488..496])?;
        }
        Ok(new)
    }
}

/// FAT compares names case-insensitively.
fn same_name(a: &str, b: &str) -> bool {
    a == b || a.to_lowercase() == b.to_lowercase()
}

/// The live entries of a directory's bytes, without `.`, `..` and the volume label.
fn parse_dir(buf: &[u8]) -> Vec<Entry> {
    parse_dir_all(buf)
        .into_iter()
        .filter(|e| e.short.attr & ATTR_VOLUME_ID == 0 && e.name != "." && e.name != "..")
        .collect()
}

/// Every live entry, the volume label included.
fn parse_dir_all(buf: &[u8]) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut lfn = LfnAssembler::default();
    let mut first = None;
    for (i, e) in buf.chunks_exact(ENTRY).enumerate() {
        match e[0] {
            0 => break,
            DELETED => {
                lfn.reset();
                first = None;
                continue;
            }
            _ => {}
        }
        if e[11] & 0x3F == ATTR_LONG_NAME {
            lfn.push_slot(e);
            first.get_or_insert(i);
            continue;
        }
        let short = ShortEntry::decode(e);
        let name = lfn
            .finish(&short.name)
            .unwrap_or_else(|| short.display_name());
        out.push(Entry {
            name,
            short,
            first_slot: first.take().unwrap_or(i),
            short_slot: i,
        });
    }
    out
}

/// Every file on the FAT32 volume starting at `r`'s position, as (`/`-separated absolute
/// path with long-name case, contents), directories depth-first in on-disk order (for a
/// volume from [`super::write`], sorted by name).
pub fn read_dir_tree<R: Read + Seek>(r: &mut R) -> Result<Vec<(String, Vec<u8>)>> {
    let vol = Volume::open(r)?;
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    walk(&vol, r, vol.root, "", &mut out, &mut seen)?;
    Ok(out)
}

fn walk<R: Read + Seek>(
    vol: &Volume,
    r: &mut R,
    cluster: u32,
    path: &str,
    out: &mut Vec<(String, Vec<u8>)>,
    seen: &mut HashSet<u32>,
) -> Result<()> {
    ensure!(
        seen.insert(cluster),
        "directory {path}/ is reachable twice (cluster {cluster})"
    );
    let buf = vol
        .read_chain(r, cluster)
        .with_context(|| format!("reading directory {path}/"))?;
    for e in parse_dir(&buf) {
        let p = format!("{path}/{}", e.name);
        if e.short.is_dir() {
            walk(vol, r, e.short.cluster, &p, out, seen)?;
        } else {
            let data = vol
                .read_file(r, &e.short)
                .with_context(|| format!("reading {p}"))?;
            out.push((p, data));
        }
    }
    Ok(())
}

/// Renames the file or directory at `path` (absolute) to `new_name` in the same directory, in
/// place, on the FAT32 volume starting at `img`'s position: what boot counting does to
/// `loader/entries/berth-a+3.conf`. The entry keeps its clusters, size and timestamps; it gets
/// fresh LFN slots and a short name unique in the directory. It moves to the first run of free
/// slots big enough (its old slots included), and the directory grows by a cluster if there
/// is none.
pub fn rename<F: Read + Write + Seek>(img: &mut F, path: &str, new_name: &str) -> Result<()> {
    let what = || format!("renaming {path} to {new_name}");
    rename_inner(img, path, new_name).with_context(what)
}

fn rename_inner<F: Read + Write + Seek>(img: &mut F, path: &str, new_name: &str) -> Result<()> {
    name::check_long_name(new_name).map_err(|e| anyhow!(e))?;
    let (dir_path, old_name) = path
        .rsplit_once('/')
        .filter(|(_, n)| !n.is_empty())
        .ok_or_else(|| anyhow!("not an absolute file path"))?;
    let mut vol = Volume::open(img)?;
    let dir = vol.find_dir(img, dir_path)?;
    let mut buf = vol.read_chain(img, dir)?;
    let entries = parse_dir_all(&buf);
    let live = |e: &&Entry| e.short.attr & ATTR_VOLUME_ID == 0;
    let old = entries
        .iter()
        .filter(live)
        .find(|e| same_name(&e.name, old_name))
        .ok_or_else(|| anyhow!("no such file"))?;
    if let Some(other) = entries
        .iter()
        .filter(live)
        .find(|e| same_name(&e.name, new_name) && e.short_slot != old.short_slot)
    {
        bail!("{dir_path}/{} already exists", other.name);
    }
    if old.name == "." || old.name == ".." {
        bail!("cannot rename {old_name:?}");
    }

    let taken: HashSet<[u8; 11]> = entries
        .iter()
        .filter(|e| e.short_slot != old.short_slot)
        .map(|e| e.short.name)
        .collect();
    let short_name = name::short_name_for(new_name, &taken)
        .ok_or_else(|| anyhow!("no free short name left in {dir_path}/"))?;
    let mut slots = Vec::new();
    if name::needs_long_name(new_name) {
        slots = name::lfn_slots(new_name, &short_name);
    }
    // Keep the stored timestamps and everything else in the old short entry.
    let mut entry = [0u8; ENTRY];
    entry.copy_from_slice(&buf[old.short_slot * ENTRY..(old.short_slot + 1) * ENTRY]);
    entry[..11].copy_from_slice(&short_name);
    entry[12] = 0;
    slots.push(entry);

    for s in old.first_slot..=old.short_slot {
        buf[s * ENTRY] = DELETED;
    }

    let start = loop {
        if let Some(s) = free_run(&buf, slots.len()) {
            break s;
        }
        let last = *vol.chain(dir)?.last().expect("chains are non-empty");
        vol.extend(img, last)?;
        buf.resize(buf.len() + vol.geo.cluster_bytes() as usize, 0);
    };
    let end_marker = end_slot(&buf);
    for (i, s) in slots.iter().enumerate() {
        buf[(start + i) * ENTRY..(start + i + 1) * ENTRY].copy_from_slice(s);
    }
    // Slots past the old end marker were free by position only: keep one after the new entry.
    let after = start + slots.len();
    if after > end_marker && after < buf.len() / ENTRY {
        buf[after * ENTRY] = 0;
    }
    vol.write_chain(img, dir, &buf)?;
    img.flush()?;
    Ok(())
}

/// Index of the 0x00 end-of-directory slot (or the slot count).
fn end_slot(buf: &[u8]) -> usize {
    buf.chunks_exact(ENTRY)
        .position(|e| e[0] == 0)
        .unwrap_or(buf.len() / ENTRY)
}

/// The first run of `n` free slots: deleted ones, or any from the end marker on.
fn free_run(buf: &[u8], n: usize) -> Option<usize> {
    let end = end_slot(buf);
    let total = buf.len() / ENTRY;
    let mut run = 0;
    for i in 0..total {
        if i >= end || buf[i * ENTRY] == DELETED {
            run += 1;
            if run == n {
                return Some(i + 1 - n);
            }
        } else {
            run = 0;
        }
    }
    None
}
