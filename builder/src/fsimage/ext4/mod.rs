//! ext4 writer: turns a [`Manifest`] into an ext4 filesystem image, byte for byte the same for
//! the same manifest and options.
//!
//! The image is planned completely in memory first ([`plan`]: inode numbers in manifest path
//! order, directory blocks, file holes; then block allocation for the given size, see
//! [`layout`] for the on-disk sketch), so a manifest that does not fit is reported before a
//! byte is written. Writing is then one pass in disk order with large sequential writes; file
//! data goes straight from the manifest to the output.
//!
//! Features: `extents`, `64bit`, `filetype`, `flex_bg`, `sparse_super`, `large_file`,
//! `huge_file`, `dir_nlink`, `extra_isize` (256-byte inodes), `ext_attr` and `metadata_csum`
//! (CRC32C seeded from the UUID). With [`Ext4Options::journal`] also `has_journal` (a jbd2
//! journal in inode 8, sized as mke2fs would) and `dir_index` (for the directories the kernel
//! will grow). No `resize_inode`: the kernel grows such a filesystem online by switching to
//! `meta_bg` when it needs more descriptor blocks. Directories are linear (no htree), files
//! have no inline data, all-zero 4 KiB blocks of a file are holes.
//!
//! Blocks the filesystem does not use are skipped with a seek, so `out` must read as zeros
//! there: a new file, a fresh buffer, or a zeroed device.

mod csum;
mod dir;
mod extent;
mod group;
mod image;
mod inode;
mod layout;
mod plan;
mod superblock;
mod xattr;

use std::io::{BufWriter, Seek, SeekFrom, Write};

use anyhow::{anyhow, bail, Context, Result};
use indicatif::ProgressBar;

use crate::fsimage::manifest::Manifest;
use layout::BLOCK_SIZE;

/// How to build the filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Options {
    /// Total image size in bytes, a multiple of 4096.
    pub size: u64,
    /// Volume label (at most 16 bytes).
    pub label: String,
    /// Filesystem UUID (callers derive it from content hashes).
    pub uuid: [u8; 16],
    /// `s_hash_seed` for directory hashing.
    pub hash_seed: [u8; 16],
    /// `false` for the read-only root; `true` for a writable filesystem with a journal.
    pub journal: bool,
    /// Superblock times (creation, last write, last check): SOURCE_DATE_EPOCH.
    pub mtime: i64,
}

/// What [`write`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ext4Stats {
    /// Bytes of image written (the requested size).
    pub size: u64,
    pub inodes_used: u64,
    pub blocks_used: u64,
    pub block_size: u32,
}

/// Gaps between written regions up to this size are filled with zeros rather than skipped
/// with a seek, so the writes stay large and sequential.
const MAX_ZERO_FILL: u64 = 256 << 10;
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
const MIB_BLOCKS: u64 = (1 << 20) / BLOCK_SIZE;

/// Smallest image size (bytes, rounded up to 1 MiB) that holds `m` with the given options,
/// with modest slack (about 2% plus 1 MiB) on top. An invalid manifest gets a rough estimate;
/// [`write`] reports what is wrong with it.
pub fn required_size(m: &Manifest, journal: bool) -> u64 {
    match m.validate().and_then(|()| plan::analyze(m, journal, 0)) {
        Ok(a) => search_size(&a),
        Err(_) => {
            let rough = m.content_bytes() + m.len() as u64 * BLOCK_SIZE;
            (rough + rough / 8 + (16 << 20)).next_multiple_of(1 << 20)
        }
    }
}

/// Grows a candidate size by each shortfall until the allocation succeeds.
fn fit_from(a: &plan::Analysis<'_>, mut blocks: u64) -> u64 {
    loop {
        blocks = blocks.next_multiple_of(MIB_BLOCKS).max(MIB_BLOCKS);
        match plan::allocate(a, blocks) {
            Ok(_) => return blocks,
            Err(s) => blocks += s.blocks(),
        }
    }
}

fn search_size(a: &plan::Analysis<'_>) -> u64 {
    let data: u64 = a.nodes.iter().map(|n| n.data_blocks(0)).sum();
    let min = fit_from(a, data);
    fit_from(a, min + min / 50 + MIB_BLOCKS) * BLOCK_SIZE
}

/// Writes `m` as an ext4 image of `opts.size` bytes at `out`'s current position. Checks the
/// manifest and that it fits before writing anything. `progress`, if given, gets its length
/// set to the bytes of file data and advances as they are written.
pub fn write<W: Write + Seek>(
    m: &Manifest,
    opts: &Ext4Options,
    out: &mut W,
    progress: Option<ProgressBar>,
) -> Result<Ext4Stats> {
    m.validate().context("cannot write the ext4 image")?;
    if opts.size == 0 || !opts.size.is_multiple_of(BLOCK_SIZE) {
        bail!(
            "ext4 image size {} is not a positive multiple of {BLOCK_SIZE}",
            opts.size
        );
    }
    if opts.label.len() > 16 {
        bail!(
            "ext4 label {:?} is {} bytes; at most 16 fit",
            opts.label,
            opts.label.len()
        );
    }
    let a = plan::analyze(m, opts.journal, opts.mtime)?;
    let al = plan::allocate(&a, opts.size / BLOCK_SIZE).map_err(|s| {
        anyhow!(
            "the manifest ({} entries, {} bytes of file data) does not fit in a {} byte ext4 image \
             ({s}); it needs about {} bytes: raise the image size",
            m.len(),
            a.file_bytes,
            opts.size,
            search_size(&a)
        )
    })?;
    let file_bytes = a.file_bytes;
    let image = image::assemble(a, &al, opts)?;
    if let Some(pb) = &progress {
        pb.set_length(file_bytes);
    }
    write_chunks(out, &image.chunks, opts.size, progress.as_ref())
        .context("writing the ext4 image")?;
    tracing::debug!(
        size = opts.size,
        blocks_used = image.stats.blocks_used,
        inodes_used = image.stats.inodes_used,
        "wrote ext4 image"
    );
    Ok(image.stats)
}

/// Moves from `*pos` to `to` (relative to `base`): zeros for a small gap, a seek for a big one.
fn skip_to<W: Write + Seek>(
    w: &mut BufWriter<&mut W>,
    base: u64,
    pos: &mut u64,
    to: u64,
) -> Result<()> {
    if to - *pos > MAX_ZERO_FILL {
        w.seek(SeekFrom::Start(base + to))?;
    } else {
        while *pos < to {
            let n = (to - *pos).min(ZEROS.len() as u64);
            w.write_all(&ZEROS[..n as usize])?;
            *pos += n;
        }
    }
    *pos = to;
    Ok(())
}

/// Writes the sorted chunks in one forward pass, zero-filling small gaps and seeking over big
/// ones, and makes the image exactly `total` bytes long.
fn write_chunks<W: Write + Seek>(
    out: &mut W,
    chunks: &[image::Chunk<'_>],
    total: u64,
    progress: Option<&ProgressBar>,
) -> Result<()> {
    let base = out.stream_position()?;
    let mut w = BufWriter::with_capacity(1 << 20, out);
    let mut pos = 0u64;
    for c in chunks {
        let at = c.block * BLOCK_SIZE;
        if at < pos {
            bail!("internal error: ext4 block {} written twice", c.block);
        }
        skip_to(&mut w, base, &mut pos, at)?;
        w.write_all(&c.data)?;
        let len = c.data.len() as u64;
        let pad = len.next_multiple_of(BLOCK_SIZE) - len;
        w.write_all(&ZEROS[..pad as usize])?;
        pos += len + pad;
        if let (true, Some(pb)) = (c.file, progress) {
            pb.inc(len);
        }
    }
    if pos > total {
        bail!("internal error: ext4 image grew to {pos} bytes, past its size {total}");
    }
    if total - pos > MAX_ZERO_FILL {
        // Extend to the full size by writing its last byte.
        skip_to(&mut w, base, &mut pos, total - 1)?;
        w.write_all(&[0])?;
    } else {
        skip_to(&mut w, base, &mut pos, total)?;
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::fsimage::manifest::{Entry, ImagePath};

    fn opts(size: u64, journal: bool) -> Ext4Options {
        Ext4Options {
            size,
            label: "test".into(),
            uuid: [7; 16],
            hash_seed: [9; 16],
            journal,
            mtime: 1_700_000_000,
        }
    }

    fn sample() -> Manifest {
        let mut m = Manifest::new(1_700_000_000);
        let p = |s: &str| ImagePath::new(s).unwrap();
        m.insert(
            p("/etc/hostname"),
            Entry::file(b"berth\n".to_vec(), 0o644, 1_700_000_000),
        )
        .unwrap();
        m.insert(
            p("/usr/bin/tool"),
            Entry::file(vec![0xAB; 100_000], 0o755, 1_700_000_000),
        )
        .unwrap();
        m.insert(p("/bin"), Entry::symlink("usr/bin", 1_700_000_000))
            .unwrap();
        m
    }

    #[test]
    fn writes_a_deterministic_image_of_the_requested_size() {
        let m = sample();
        let size = required_size(&m, false);
        assert_eq!(size % (1 << 20), 0);
        let mut a = Cursor::new(Vec::new());
        let stats = write(&m, &opts(size, false), &mut a, None).unwrap();
        let mut b = Cursor::new(Vec::new());
        write(&m, &opts(size, false), &mut b, None).unwrap();
        assert_eq!(a.get_ref().len() as u64, size);
        assert!(a.get_ref() == b.get_ref());
        assert_eq!(stats.inodes_used, 17); // 1..=11 reserved and lost+found, then 12..=17
        let sb = &a.get_ref()[1024..2048];
        assert_eq!(&sb[0x38..0x3A], &0xEF53u16.to_le_bytes());
    }

    #[test]
    fn writes_at_the_current_position() {
        let m = sample();
        let size = required_size(&m, false);
        let mut c = Cursor::new(vec![0u8; 4096]);
        c.seek(SeekFrom::Start(4096)).unwrap();
        write(&m, &opts(size, false), &mut c, None).unwrap();
        assert_eq!(c.get_ref().len() as u64, 4096 + size);
        assert_eq!(
            &c.get_ref()[4096 + 1024 + 0x38..4096 + 1024 + 0x3A],
            &0xEF53u16.to_le_bytes()
        );
    }

    #[test]
    fn too_small_is_an_error_naming_sizes_and_writes_nothing() {
        let mut m = sample();
        let big = Entry::file(vec![1u8; 1 << 20], 0o644, 0);
        m.insert(ImagePath::new("/big").unwrap(), big).unwrap();
        let mut c = Cursor::new(Vec::new());
        let err = write(&m, &opts(64 * 4096, false), &mut c, None).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("262144 byte ext4 image"), "{msg}");
        assert!(c.get_ref().is_empty());
    }

    #[test]
    fn journal_needs_more_room() {
        let m = sample();
        assert!(required_size(&m, true) >= required_size(&m, false) + (4 << 20));
    }

    #[test]
    fn progress_counts_file_bytes() {
        let m = sample();
        let pb = ProgressBar::hidden();
        write(
            &m,
            &opts(required_size(&m, false), false),
            &mut Cursor::new(Vec::new()),
            Some(pb.clone()),
        )
        .unwrap();
        assert_eq!((pb.position(), pb.length()), (100_006, Some(100_006)));
    }

    #[test]
    fn bad_options_are_errors() {
        let m = sample();
        let mut c = Cursor::new(Vec::new());
        assert!(write(&m, &opts(4097, false), &mut c, None).is_err());
        let mut o = opts(16 << 20, false);
        o.label = "x".repeat(17);
        assert!(write(&m, &o, &mut c, None).is_err());
    }
}
