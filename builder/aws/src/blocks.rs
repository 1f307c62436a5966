//! The disk as EBS sees it: 512 KiB blocks, each either all zeros (never sent to a fresh
//! snapshot) or identified by its SHA-256. Scanning reads the file; planning which blocks to
//! send is pure.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

/// EBS direct APIs move data in 512 KiB blocks (the only block size they offer).
pub const BLOCK_SIZE: u64 = 512 * 1024;

pub type BlockHash = [u8; 32];

/// One scan worker's results: (block index, hash).
type Hashed = Vec<(u64, Option<BlockHash>)>;

/// Whether `buf` is all zero bytes (compared 16 bytes at a time).
pub fn is_zero(buf: &[u8]) -> bool {
    let (chunks, tail) = buf.split_at(buf.len() - buf.len() % 16);
    chunks
        .chunks_exact(16)
        .all(|c| u128::from_ne_bytes(c.try_into().expect("16 bytes")) == 0)
        && tail.iter().all(|&b| b == 0)
}

/// Per-block hashes of a disk: `None` for an all-zero block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockMap {
    pub disk_bytes: u64,
    pub hashes: Vec<Option<BlockHash>>,
}

impl BlockMap {
    pub fn blocks(disk_bytes: u64) -> u64 {
        disk_bytes.div_ceil(BLOCK_SIZE)
    }

    pub fn nonzero(&self) -> u64 {
        self.hashes.iter().filter(|h| h.is_some()).count() as u64
    }

    /// A digest of the whole content (block hashes and size), for idempotency tokens.
    pub fn digest(&self) -> BlockHash {
        let mut h = Sha256::new();
        h.update(self.disk_bytes.to_le_bytes());
        for b in &self.hashes {
            match b {
                Some(b) => h.update(b),
                None => h.update([0u8; 32]),
            }
        }
        h.finalize().into()
    }
}

/// Reads block `index` of `file` (`disk_bytes` long) into `buf`, zero-padding past the end.
pub fn read_block(file: &File, disk_bytes: u64, index: u64, buf: &mut [u8]) -> std::io::Result<()> {
    let start = index * BLOCK_SIZE;
    let len = (disk_bytes.saturating_sub(start)).min(BLOCK_SIZE) as usize;
    file.read_exact_at(&mut buf[..len], start)?;
    buf[len..].fill(0);
    Ok(())
}

/// Hashes every block of `path` with `threads` readers.
pub fn scan(path: &Path, threads: usize, progress: Option<&ProgressBar>) -> Result<BlockMap> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let disk_bytes = file
        .metadata()
        .with_context(|| format!("reading the size of {}", path.display()))?
        .len();
    let n = BlockMap::blocks(disk_bytes);
    let next = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let threads = threads.clamp(1, 64);
    let parts: Vec<Result<Hashed>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<Hashed> {
                    let mut buf = vec![0u8; BLOCK_SIZE as usize];
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n || failed.load(Ordering::Relaxed) {
                            return Ok(out);
                        }
                        if let Err(e) = read_block(&file, disk_bytes, i, &mut buf) {
                            failed.store(true, Ordering::Relaxed);
                            return Err(e).with_context(|| {
                                format!("reading block {i} of {}", path.display())
                            });
                        }
                        let h = if is_zero(&buf) {
                            None
                        } else {
                            Some(Sha256::digest(&buf).into())
                        };
                        out.push((i, h));
                        if let Some(p) = progress {
                            p.inc(BLOCK_SIZE);
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("scan worker panicked"))
            .collect()
    });
    let mut hashes = vec![None; n as usize];
    for part in parts {
        for (i, h) in part? {
            hashes[i as usize] = h;
        }
    }
    Ok(BlockMap { disk_bytes, hashes })
}

/// Blocks to send for `new`, given the parent snapshot's blocks (`None` for a fresh snapshot).
/// Fresh: every non-zero block. Incremental: every block whose content differs from the
/// parent's, including blocks that became zero (sent as zeros, or the parent's data would show
/// through) and parent blocks past the new disk's end.
pub fn plan(new: &BlockMap, parent: Option<&BlockMap>) -> Vec<u64> {
    match parent {
        None => (0..new.hashes.len() as u64)
            .filter(|&i| new.hashes[i as usize].is_some())
            .collect(),
        Some(p) => {
            let n = new.hashes.len().max(p.hashes.len());
            (0..n)
                .filter(|&i| {
                    let a = new.hashes.get(i).copied().flatten();
                    let b = p.hashes.get(i).copied().flatten();
                    a != b
                })
                .map(|i| i as u64)
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn map(hs: &[u8]) -> BlockMap {
        // 0 = zero block, k = a block whose hash is [k; 32]
        BlockMap {
            disk_bytes: hs.len() as u64 * BLOCK_SIZE,
            hashes: hs.iter().map(|&k| (k != 0).then_some([k; 32])).collect(),
        }
    }

    #[test]
    fn zero_detection() {
        let mut b = vec![0u8; BLOCK_SIZE as usize];
        assert!(is_zero(&b));
        b[BLOCK_SIZE as usize - 1] = 1;
        assert!(!is_zero(&b));
        b.fill(0);
        b[7] = 0x80;
        assert!(!is_zero(&b));
        assert!(is_zero(&[0; 5]));
        assert!(!is_zero(&[
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3
        ]));
        assert!(is_zero(&[]));
    }

    #[test]
    fn fresh_plan_skips_zero_blocks() {
        assert_eq!(plan(&map(&[1, 0, 2, 0, 0, 3]), None), vec![0, 2, 5]);
    }

    #[test]
    fn incremental_plan() {
        let parent = map(&[1, 0, 2, 4, 0, 3]);
        // unchanged, zero->data, same, data->zero, zero->zero, changed
        let new = map(&[1, 5, 2, 0, 0, 6]);
        assert_eq!(plan(&new, Some(&parent)), vec![1, 3, 5]);
        // shrunk: the parent's data past the new end is zeroed; grown: new blocks sent
        assert_eq!(plan(&map(&[1, 0]), Some(&map(&[1, 0, 2, 0]))), vec![2]);
        assert_eq!(plan(&map(&[1, 0, 0, 7]), Some(&map(&[1]))), vec![3]);
        assert!(plan(&parent, Some(&parent)).is_empty());
    }

    #[test]
    fn scan_pads_the_last_block() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let mut data = vec![0u8; BLOCK_SIZE as usize * 2 + 100];
        data[BLOCK_SIZE as usize * 2 + 99] = 9;
        f.write_all(&data).unwrap();
        let m = scan(f.path(), 3, None).unwrap();
        assert_eq!(m.hashes.len(), 3);
        assert_eq!(m.hashes[..2], [None, None]);
        let mut padded = vec![0u8; BLOCK_SIZE as usize];
        padded[99] = 9;
        assert_eq!(m.hashes[2], Some(Sha256::digest(&padded).into()));
        assert_eq!(m.nonzero(), 1);
    }
}
