//! `disk.vmdk`: a streamOptimized VMDK (VMware "Virtual Disk Format 1.1", "Stream-Optimized
//! Compressed Sparse Extents"), the VMDK flavour that AWS VM Import and OVF/OVA packages take.
//!
//! We write it ourselves: qemu-img puts a random CID into the descriptor, and a stream-optimized
//! extent is simple to write strictly sequentially (no seeks), so the writer takes any `Write`.
//!
//! ```text
//! sector 0        sparse extent header (gdOffset = GD_AT_END: "look in the footer")
//! 1 ..= 20        embedded descriptor (text, zero padded)
//! ..128           padding up to OVERHEAD (the first grain starts grain aligned)
//! then, per grain table (512 grains = 32 MiB of disk) that has data:
//!                 grain marker (lba, size) + zlib-compressed 64 KiB grain, sector padded  x N
//!                 GT marker, grain table (512 x u32 sector offsets, 0 = not present)
//! GD marker, grain directory (u32 sector offset of each grain table, 0 = none)
//! footer marker, footer (the header again, with the real gdOffset)
//! end-of-stream marker
//! ```
//!
//! All-zero grains are left out (a missing grain reads as zeros). Grains are compressed in
//! parallel, one grain table's worth at a time, and written in disk order: the output does not
//! depend on the thread count. The last grain of a disk that is not a whole number of grains is
//! zero-padded to a full grain before compression, as readers expect full grains.

use std::fs;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use flate2::write::ZlibEncoder;
use flate2::Compression;

use super::{derive_id, is_zero, read_full, workers, FormatCtx, Progress, MIB, SECTOR};

const MAGIC: u32 = 0x564d_444b; // "KDMV" on disk
/// Version 3: what VMware writes for stream-optimized extents.
const VERSION: u32 = 3;
/// Flags: valid newline-detection bytes (bit 0), compressed grains (16), markers (17).
const FLAGS: u32 = 1 | (1 << 16) | (1 << 17);
/// 128 sectors = 64 KiB grains, the usual (and qemu's) grain size.
pub const GRAIN_SECTORS: u64 = 128;
const GRAIN_BYTES: usize = (GRAIN_SECTORS * SECTOR) as usize;
/// Grain table entries: 512 is the value every writer uses (and the most qemu accepts).
const GTES_PER_GT: u64 = 512;
const GT_SECTORS: u64 = GTES_PER_GT * 4 / SECTOR;
const DESCRIPTOR_OFFSET: u64 = 1;
/// Room for the descriptor, like qemu (20 sectors = 10 KiB).
const DESCRIPTOR_SECTORS: u64 = 20;
/// Sectors before the first grain: header + descriptor, rounded up to a grain.
const OVERHEAD: u64 = GRAIN_SECTORS;
const GD_AT_END: u64 = u64::MAX;
const COMPRESS_DEFLATE: u16 = 1;
/// zlib level for grains: 6 (zlib's default) is within ~1% of 9 at about twice the speed.
const ZLIB_LEVEL: u32 = 6;

const MARKER_EOS: u32 = 0;
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;
const MARKER_FOOTER: u32 = 3;

/// What goes into the header and descriptor besides the data.
#[derive(Clone, Debug)]
pub struct VmdkOptions {
    /// Disk size in bytes (a whole number of sectors).
    pub capacity: u64,
    /// Content ID written in the descriptor (qemu-img writes a random one).
    pub cid: u32,
    /// ddb.uuid.image: VirtualBox identifies the medium by it.
    pub uuid: [u8; 16],
    /// The file name the extent line names (the file itself, for a monolithic extent).
    pub file_name: String,
}

impl VmdkOptions {
    /// Options for `ctx`'s disk, ids derived from its seed.
    pub fn for_ctx(ctx: &FormatCtx) -> VmdkOptions {
        let cid = derive_id("berth-vmdk-cid", &ctx.seed);
        VmdkOptions {
            capacity: ctx.disk_size,
            cid: u32::from_le_bytes([cid[0], cid[1], cid[2], cid[3]]),
            uuid: derive_id("berth-vmdk-uuid", &ctx.seed),
            file_name: super::Format::Vmdk.file_name().to_string(),
        }
    }
}

pub(crate) fn write(ctx: &FormatCtx, dest: &Path, progress: &Progress) -> Result<()> {
    let src =
        fs::File::open(ctx.disk).with_context(|| format!("opening {}", ctx.disk.display()))?;
    let f = fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut out = BufWriter::with_capacity(MIB as usize, f);
    progress.start(ctx.disk_size);
    write_stream_optimized(
        src,
        &VmdkOptions::for_ctx(ctx),
        &mut out,
        workers(),
        progress,
    )?;
    out.into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
        .context("flushing")?;
    Ok(())
}

/// The descriptor text: what `qemu-img info` and VirtualBox read for CID, type and geometry.
pub fn descriptor(o: &VmdkOptions) -> String {
    let sectors = o.capacity / SECTOR;
    // The usual IDE-style geometry VMware writes: 16 heads, 63 sectors, cylinders to fit.
    let cylinders = (sectors / (16 * 63)).min(65535);
    let u = hex::encode(o.uuid);
    format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         CID={cid:08x}\n\
         parentCID=ffffffff\n\
         createType=\"streamOptimized\"\n\
         \n\
         # Extent description\n\
         RW {sectors} SPARSE \"{name}\"\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.adapterType = \"lsilogic\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"16\"\n\
         ddb.geometry.sectors = \"63\"\n\
         ddb.uuid.image = \"{}-{}-{}-{}-{}\"\n\
         ddb.virtualHWVersion = \"4\"\n",
        &u[..8],
        &u[8..12],
        &u[12..16],
        &u[16..20],
        &u[20..],
        cid = o.cid,
        name = o.file_name,
    )
}

/// The 512-byte sparse extent header (also the footer, with `gd_offset` set).
fn header(capacity_sectors: u64, gd_offset: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&VERSION.to_le_bytes());
    h[8..12].copy_from_slice(&FLAGS.to_le_bytes());
    h[12..20].copy_from_slice(&capacity_sectors.to_le_bytes());
    h[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
    h[28..36].copy_from_slice(&DESCRIPTOR_OFFSET.to_le_bytes());
    h[36..44].copy_from_slice(&DESCRIPTOR_SECTORS.to_le_bytes());
    h[44..48].copy_from_slice(&(GTES_PER_GT as u32).to_le_bytes());
    // 48..56: rgdOffset 0 (no redundant grain directory in a stream).
    h[56..64].copy_from_slice(&gd_offset.to_le_bytes());
    h[64..72].copy_from_slice(&OVERHEAD.to_le_bytes());
    // 72: uncleanShutdown 0; 73..77: the newline-detection characters.
    h[73..77].copy_from_slice(b"\n \r\n");
    h[77..79].copy_from_slice(&COMPRESS_DEFLATE.to_le_bytes());
    h
}

/// A metadata marker sector: `val` (sectors of metadata that follow), size 0, `kind`.
fn marker(val: u64, kind: u32) -> [u8; 512] {
    let mut m = [0u8; 512];
    m[0..8].copy_from_slice(&val.to_le_bytes());
    m[12..16].copy_from_slice(&kind.to_le_bytes());
    m
}

/// Counts what it writes, in bytes, so sector offsets are known without seeking.
struct Counted<W> {
    inner: W,
    pos: u64,
}

impl<W: Write> Counted<W> {
    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.inner.write_all(b)?;
        self.pos += b.len() as u64;
        Ok(())
    }

    fn pad_to_sector(&mut self) -> Result<()> {
        let rem = self.pos % SECTOR;
        if rem != 0 {
            self.put(&[0u8; SECTOR as usize][..(SECTOR - rem) as usize])?;
        }
        Ok(())
    }

    fn sector(&self) -> u64 {
        debug_assert_eq!(self.pos % SECTOR, 0);
        self.pos / SECTOR
    }
}

/// A grain marker + compressed grain, unpadded: lba (u64), compressed size (u32), zlib data.
fn grain_record(lba: u64, data: &[u8]) -> Result<Vec<u8>> {
    let mut rec = Vec::with_capacity(data.len() / 2 + 12);
    rec.extend_from_slice(&lba.to_le_bytes());
    rec.extend_from_slice(&[0u8; 4]);
    let mut z = ZlibEncoder::new(rec, Compression::new(ZLIB_LEVEL));
    z.write_all(data)?;
    let mut rec = z.finish()?;
    let size = u32::try_from(rec.len() - 12).context("compressed grain too large")?;
    rec[8..12].copy_from_slice(&size.to_le_bytes());
    Ok(rec)
}

/// Writes `src` (exactly `o.capacity` bytes) as a stream-optimized VMDK. Returns bytes written.
pub(crate) fn write_stream_optimized(
    mut src: impl Read,
    o: &VmdkOptions,
    out: impl Write,
    workers: usize,
    progress: &Progress,
) -> Result<u64> {
    if !o.capacity.is_multiple_of(SECTOR) {
        bail!(
            "a VMDK's capacity must be whole sectors; {} is not",
            o.capacity
        );
    }
    let capacity_sectors = o.capacity / SECTOR;
    let grains = capacity_sectors.div_ceil(GRAIN_SECTORS);
    let gt_count = grains.div_ceil(GTES_PER_GT);
    let desc = descriptor(o);
    if desc.len() as u64 > DESCRIPTOR_SECTORS * SECTOR {
        bail!("VMDK descriptor too long ({} bytes)", desc.len());
    }

    let mut w = Counted { inner: out, pos: 0 };
    w.put(&header(capacity_sectors, GD_AT_END))?;
    w.put(desc.as_bytes())?;
    w.put(&vec![0u8; (OVERHEAD * SECTOR) as usize - w.pos as usize])?;

    let mut gd = vec![0u32; gt_count as usize];
    let workers = workers.max(1);
    let mut table = vec![0u8; GTES_PER_GT as usize * GRAIN_BYTES];
    let mut remaining = o.capacity;
    for (gt_index, gd_entry) in gd.iter_mut().enumerate() {
        // One grain table's worth of disk (the last may be short; pad it to whole grains).
        let want = remaining.min(table.len() as u64) as usize;
        let n = read_full(&mut src, &mut table[..want]).context("reading the disk")?;
        if n != want {
            bail!(
                "the disk ended after {} bytes, expected {}",
                o.capacity - remaining + n as u64,
                o.capacity
            );
        }
        remaining -= n as u64;
        let padded = n.div_ceil(GRAIN_BYTES) * GRAIN_BYTES;
        table[n..padded].fill(0);
        let first_grain = gt_index as u64 * GTES_PER_GT;
        let present: Vec<usize> = (0..padded / GRAIN_BYTES)
            .filter(|g| !is_zero(&table[g * GRAIN_BYTES..(g + 1) * GRAIN_BYTES]))
            .collect();
        progress.inc(n as u64);
        if present.is_empty() {
            continue;
        }
        // Compress: worker k takes every workers-th present grain.
        let records: Vec<Vec<u8>> = std::thread::scope(|s| -> Result<Vec<Vec<u8>>> {
            let table = &table;
            let present = &present;
            let handles: Vec<_> = (0..workers.min(present.len()))
                .map(|k| {
                    s.spawn(move || -> Result<Vec<(usize, Vec<u8>)>> {
                        present
                            .iter()
                            .enumerate()
                            .skip(k)
                            .step_by(workers)
                            .map(|(i, &g)| {
                                let lba = (first_grain + g as u64) * GRAIN_SECTORS;
                                let data = &table[g * GRAIN_BYTES..(g + 1) * GRAIN_BYTES];
                                Ok((i, grain_record(lba, data)?))
                            })
                            .collect()
                    })
                })
                .collect();
            let mut recs = vec![Vec::new(); present.len()];
            for h in handles {
                let part = h
                    .join()
                    .map_err(|_| anyhow::anyhow!("VMDK compression worker panicked"))??;
                for (i, r) in part {
                    recs[i] = r;
                }
            }
            Ok(recs)
        })?;

        let mut gt = vec![0u8; (GT_SECTORS * SECTOR) as usize];
        for (&g, rec) in present.iter().zip(&records) {
            let at = u32::try_from(w.sector()).context("VMDK larger than 2 TiB of grains")?;
            gt[g * 4..g * 4 + 4].copy_from_slice(&at.to_le_bytes());
            w.put(rec)?;
            w.pad_to_sector()?;
        }
        w.put(&marker(GT_SECTORS, MARKER_GT))?;
        *gd_entry = u32::try_from(w.sector()).context("VMDK too large")?;
        w.put(&gt)?;
    }

    let gd_sectors = (gt_count * 4).div_ceil(SECTOR);
    w.put(&marker(gd_sectors, MARKER_GD))?;
    let gd_offset = w.sector();
    let mut gd_bytes = vec![0u8; (gd_sectors * SECTOR) as usize];
    for (i, e) in gd.iter().enumerate() {
        gd_bytes[i * 4..i * 4 + 4].copy_from_slice(&e.to_le_bytes());
    }
    w.put(&gd_bytes)?;
    w.put(&marker(1, MARKER_FOOTER))?;
    w.put(&header(capacity_sectors, gd_offset))?;
    w.put(&marker(0, MARKER_EOS))?;
    w.inner.flush()?;
    Ok(w.pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(capacity: u64) -> VmdkOptions {
        VmdkOptions {
            capacity,
            cid: 0x1234_abcd,
            uuid: [9; 16],
            file_name: "disk.vmdk".into(),
        }
    }

    /// A minimal reader: follows the footer's grain directory and inflates every grain.
    fn read_back(v: &[u8]) -> Vec<u8> {
        let le32 = |o: usize| u32::from_le_bytes(v[o..o + 4].try_into().unwrap()) as usize;
        let le64 = |o: usize| u64::from_le_bytes(v[o..o + 8].try_into().unwrap());
        let footer = v.len() - 1024;
        assert_eq!(le32(footer), MAGIC as usize);
        assert_eq!(le32(v.len() - 1536 + 12), MARKER_FOOTER as usize);
        assert_eq!(&v[v.len() - 512..], &[0u8; 512][..]);
        let cap = le64(footer + 12) as usize * 512;
        let gd = le64(footer + 56) as usize * 512;
        let mut disk = vec![0u8; cap];
        for gt_i in 0..cap.div_ceil(GRAIN_BYTES * 512) {
            let gt = le32(gd + gt_i * 4) * 512;
            if gt == 0 {
                continue;
            }
            for e in 0..512 {
                let g = le32(gt + e * 4) * 512;
                if g == 0 {
                    continue;
                }
                let lba = le64(g) as usize;
                assert_eq!(lba, (gt_i * 512 + e) * 128);
                let size = le32(g + 8);
                let mut data = Vec::new();
                flate2::read::ZlibDecoder::new(&v[g + 12..g + 12 + size])
                    .read_to_end(&mut data)
                    .unwrap();
                assert_eq!(data.len(), GRAIN_BYTES);
                let end = (lba * 512 + GRAIN_BYTES).min(cap);
                disk[lba * 512..end].copy_from_slice(&data[..end - lba * 512]);
            }
        }
        disk
    }

    #[test]
    fn round_trips_through_a_minimal_reader_for_any_worker_count() {
        // 40 MiB + 1.5 KiB: two grain tables, a partial last grain, data in both tables.
        let cap = 40 * MIB + 1536;
        let mut disk = vec![0u8; cap as usize];
        for (i, b) in disk[100_000..300_000].iter_mut().enumerate() {
            *b = (i * 7 % 251) as u8;
        }
        disk[(cap - 10) as usize] = 0xee;
        let mut a = Vec::new();
        write_stream_optimized(&disk[..], &opts(cap), &mut a, 1, &Progress(None)).unwrap();
        let mut b = Vec::new();
        write_stream_optimized(&disk[..], &opts(cap), &mut b, 3, &Progress(None)).unwrap();
        assert!(a == b, "worker count changed the output");
        assert_eq!(a.len() % 512, 0);
        assert!(read_back(&a) == disk);
    }

    #[test]
    fn descriptor_names_the_type_and_cid() {
        let d = descriptor(&opts(64 * MIB));
        assert!(d.contains("createType=\"streamOptimized\""));
        assert!(d.contains("CID=1234abcd"));
        assert!(d.contains("RW 131072 SPARSE \"disk.vmdk\""));
        assert!(d.contains("ddb.uuid.image = \"09090909-0909-0909-0909-090909090909\""));
    }

    #[test]
    fn short_input_is_an_error() {
        let e = write_stream_optimized(
            &[1u8; 1000][..],
            &opts(4096),
            &mut Vec::new(),
            1,
            &Progress(None),
        )
        .unwrap_err();
        assert!(e.to_string().contains("ended after 1000 bytes"), "{e}");
    }
}
