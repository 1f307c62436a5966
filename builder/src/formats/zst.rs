//! `disk.raw.zst`: the raw disk, zstd-compressed on all cores, the same bytes for any core count.
//!
//! The disk is cut into fixed [`CHUNK`]-sized pieces and each becomes one independent zstd frame
//! (with content size and checksum); frames are compressed in parallel and written in order. A
//! concatenation of frames is one valid zstd stream (`zstd -d`, `unzstd`, the zstd crate all read
//! it), and since no frame depends on another or on the thread count, the output cannot either.
//! (zstd's own multithreading needs the crate's `zstdmt` feature, which the workspace does not
//! enable; it is deterministic too, but only for a given worker count >= 1 and job size.)
//! The compressor is the zstd-sys vendored in Cargo.lock, not the host's, so the bytes do not
//! change with the machine either.

use std::fs;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use anyhow::{Context, Result};

use super::{read_full, workers, FormatCtx, Progress, MIB};

/// zstd level: 9 compresses a typical berth disk within a few per cent of 19 at several
/// times the speed (see the report in the tests); decompression speed is the same.
pub const LEVEL: i32 = 6;
/// Bytes of disk per frame: large enough that the ratio loss against one stream is noise, small
/// enough that 2 x workers chunks fit in memory comfortably.
pub const CHUNK: usize = 32 * MIB as usize;

pub(crate) fn write(ctx: &FormatCtx, dest: &Path, progress: &Progress) -> Result<()> {
    let src =
        fs::File::open(ctx.disk).with_context(|| format!("opening {}", ctx.disk.display()))?;
    let f = fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut out = BufWriter::with_capacity(MIB as usize, f);
    progress.start(ctx.disk_size);
    compress(src, &mut out, workers(), progress)?;
    out.into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
        .context("flushing")?;
    Ok(())
}

/// Compresses `src` to `out` as a sequence of frames, one per [`CHUNK`]; returns bytes written.
pub(crate) fn compress(
    mut src: impl Read,
    out: &mut impl Write,
    workers: usize,
    progress: &Progress,
) -> Result<u64> {
    let workers = workers.max(1);
    let mut written = 0u64;
    let mut chunks: Vec<Vec<u8>> = (0..workers).map(|_| vec![0u8; CHUNK]).collect();
    loop {
        // Fill up to `workers` chunks; the last one read may be short.
        let mut lens = Vec::with_capacity(workers);
        for c in chunks.iter_mut() {
            let n = read_full(&mut src, c).context("reading the disk")?;
            if n == 0 {
                break;
            }
            lens.push(n);
            if n < CHUNK {
                break;
            }
        }
        if lens.is_empty() {
            break;
        }
        let frames: Vec<Result<Vec<u8>>> = std::thread::scope(|s| {
            let handles: Vec<_> = chunks
                .iter()
                .zip(&lens)
                .map(|(c, &n)| s.spawn(move || frame(&c[..n])))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("zstd worker panicked")))
                })
                .collect()
        });
        for (f, n) in frames.into_iter().zip(&lens) {
            let f = f?;
            out.write_all(&f)?;
            written += f.len() as u64;
            progress.inc(*n as u64);
        }
        if *lens.last().unwrap_or(&0) < CHUNK {
            break;
        }
    }
    Ok(written)
}

/// One complete zstd frame holding `data`: content size in the header, xxhash checksum at the end.
fn frame(data: &[u8]) -> Result<Vec<u8>> {
    let mut c = zstd::bulk::Compressor::new(LEVEL)?;
    c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))?;
    c.set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(true))?;
    Ok(c.compress(data)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        // Some compressible text, some noise (xorshift), long zero runs.
        let mut v = vec![0u8; len];
        let mut x = 0x2545f4914f6cdd1du64;
        for (i, b) in v.iter_mut().enumerate() {
            if (i / 4096) % 7 == 1 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            } else if (i / 4096) % 7 == 3 {
                *b = b"berth "[i % 6];
            }
        }
        v
    }

    #[test]
    fn same_bytes_for_any_worker_count_and_decodes_back() {
        let data = sample(CHUNK * 2 + 12345);
        let mut outs = Vec::new();
        for w in [1, 2, 3] {
            let mut out = Vec::new();
            compress(&data[..], &mut out, w, &Progress(None)).unwrap();
            outs.push(out);
        }
        assert_eq!(outs[0], outs[1]);
        assert_eq!(outs[0], outs[2]);
        let back = zstd::stream::decode_all(&outs[0][..]).unwrap();
        assert!(back == data, "round trip differs");
    }

    #[test]
    fn empty_input_gives_empty_output() {
        let mut out = Vec::new();
        compress(&[][..], &mut out, 2, &Progress(None)).unwrap();
        assert!(out.is_empty());
    }
}
