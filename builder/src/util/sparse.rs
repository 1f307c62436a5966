//! Copying sparse files (disk images) by their data extents only, with `lseek(SEEK_DATA)` and
//! `lseek(SEEK_HOLE)`. A 2.5 GiB disk image with 230 MiB of data copies in a tenth of the time a
//! read-everything copy takes, and stays sparse. std has no SEEK_DATA, hence the syscall
//! wrapper below (one of the two `unsafe` blocks in this crate; the other is `qemu::signal`).

#![allow(unsafe_code)]

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{Context, Result};

/// `lseek(fd, offset, whence)`; `Ok(None)` when there is no more data (ENXIO).
fn lseek(f: &File, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let off =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: lseek only reads the descriptor number, which `f` keeps open for the call; it touches
    // no memory of ours.
    let r = unsafe { libc::lseek(f.as_raw_fd(), off, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENXIO) {
            Ok(None)
        } else {
            Err(e)
        };
    }
    Ok(Some(r as u64))
}

/// The data extents of `f` as (start, end) byte ranges.
fn extents(f: &File, len: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < len {
        let Some(start) = lseek(f, pos, libc::SEEK_DATA)? else {
            break;
        };
        let end = lseek(f, start, libc::SEEK_HOLE)?.unwrap_or(len).min(len);
        if end <= start {
            break;
        }
        out.push((start, end));
        pos = end;
    }
    Ok(out)
}

/// Feeds the whole of `path` to `sink` in order, reading only its data extents: holes are
/// passed as zeros from memory. Reading a hole through `read(2)` makes the kernel allocate and
/// zero page-cache pages for it, which for a fresh 2.5 GiB disk image with 230 MiB of data cost
/// ~9 s of system time per pass; this costs none. Falls back to reading everything where the
/// filesystem cannot report extents.
pub fn for_each_chunk(path: &Path, sink: &mut dyn FnMut(&[u8])) -> Result<u64> {
    const CHUNK: usize = 1 << 20;
    static ZEROS: [u8; CHUNK] = [0; CHUNK];
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    let ranges = extents(&f, len).unwrap_or_else(|_| vec![(0, len)]);
    let zeros = |mut n: u64, sink: &mut dyn FnMut(&[u8])| {
        while n > 0 {
            let k = n.min(CHUNK as u64) as usize;
            sink(&ZEROS[..k]);
            n -= k as u64;
        }
    };
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    for (start, end) in ranges {
        zeros(start - pos, sink);
        f.seek(SeekFrom::Start(start))
            .with_context(|| format!("seeking in {}", path.display()))?;
        let mut left = end - start;
        while left > 0 {
            let n = (left as usize).min(buf.len());
            f.read_exact(&mut buf[..n])
                .with_context(|| format!("reading {}", path.display()))?;
            sink(&buf[..n]);
            left -= n as u64;
        }
        pos = end;
    }
    zeros(len - pos, sink);
    Ok(len)
}

/// Copies `from` to `to`, writing only the source's data extents (holes stay holes). Falls back
/// to a plain copy where the filesystem cannot report extents.
pub fn copy(from: &Path, to: &Path) -> Result<()> {
    let mut src = File::open(from).with_context(|| format!("opening {}", from.display()))?;
    let len = src.metadata()?.len();
    let mut dst = File::create(to).with_context(|| format!("creating {}", to.display()))?;
    let ranges = match extents(&src, len) {
        Ok(r) => r,
        Err(_) => vec![(0, len)],
    };
    let mut buf = vec![0u8; 1 << 20];
    for (start, end) in ranges {
        src.seek(SeekFrom::Start(start))?;
        dst.seek(SeekFrom::Start(start))?;
        let mut left = end - start;
        while left > 0 {
            let n = (left as usize).min(buf.len());
            src.read_exact(&mut buf[..n])
                .with_context(|| format!("reading {}", from.display()))?;
            dst.write_all(&buf[..n])
                .with_context(|| format!("writing {}", to.display()))?;
            left -= n as u64;
        }
    }
    dst.set_len(len)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunks_of_a_sparse_file_are_its_bytes() {
        use std::io::{Seek, SeekFrom, Write};
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sparse");
        let mut f = File::create(&p).unwrap();
        f.set_len(5 << 20).unwrap();
        f.seek(SeekFrom::Start(3 << 20)).unwrap();
        f.write_all(&[7u8; 70_000]).unwrap();
        f.seek(SeekFrom::Start(100)).unwrap();
        f.write_all(b"head").unwrap();
        drop(f);
        let mut got = Vec::new();
        let n = for_each_chunk(&p, &mut |c| got.extend_from_slice(c)).unwrap();
        assert_eq!(n, 5 << 20);
        assert_eq!(got, std::fs::read(&p).unwrap());
    }

    use super::*;

    #[test]
    fn copies_data_and_keeps_holes() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        let mut f = File::create(&a).unwrap();
        f.set_len(64 << 20).unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(&[7u8; 8192]).unwrap();
        f.seek(SeekFrom::Start(40 << 20)).unwrap();
        f.write_all(b"tail").unwrap();
        drop(f);
        let b = d.path().join("b");
        copy(&a, &b).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        use std::os::unix::fs::MetadataExt;
        let blocks = std::fs::metadata(&b).unwrap().blocks();
        assert!(
            blocks * 512 < 4 << 20,
            "copy is not sparse: {} bytes allocated",
            blocks * 512
        );
    }
}
