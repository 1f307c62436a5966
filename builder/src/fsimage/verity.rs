//! dm-verity hash tree, on-disk format v1: the layout `veritysetup format` makes by default
//! (sha256, 4 KiB data and hash blocks, salt, superblock at offset 0 of the hash image).
//!
//! The hash image written here is byte-identical to `veritysetup format --salt=<hex>
//! --uuid=<uuid> data hash` for the same data (the integration test `verity_veritysetup` checks
//! this against the real tool), so the kernel and `veritysetup verify` accept it.
//!
//! Format v1 in short (cryptsetup `lib/verity/verity_hash.c`):
//! - every data block is hashed as `sha256(salt || block)`; hashes are packed 128 to a 4 KiB
//!   hash block, the tail of the last block of a level zero-filled;
//! - the blocks of one level are hashed the same way to make the next level, until a level fits
//!   in one block; the root hash is `sha256(salt || that block)` (with a single data block there
//!   is no tree at all and the root hash is the data block's own hash);
//! - on disk: the superblock in the first hash block, then the levels **top first**, the level
//!   that hashes the data blocks last.

use std::io::{Read, Seek, Write};
use std::sync::{mpsc, Mutex};
use std::thread;

use anyhow::{bail, ensure, Context, Result};
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

/// Data and hash block size, bytes (veritysetup's default; also the ext4 block size we write).
pub const BLOCK_SIZE: u64 = 4096;
/// SHA-256 digest size. v1 pads digests to a power of two; 32 already is one.
pub const DIGEST_SIZE: usize = 32;
/// Digests per hash block.
pub const HASHES_PER_BLOCK: u64 = BLOCK_SIZE / DIGEST_SIZE as u64;
/// The superblock field holds at most 256 bytes of salt.
pub use berth_contract::verity::MAX_SALT_SIZE;
/// Data is read in chunks of this size and handed to the hashing threads: large enough that
/// syscall and channel overhead vanish, small enough that a few in flight cost nothing.
const CHUNK_SIZE: usize = 1 << 20;
const BLOCK: usize = BLOCK_SIZE as usize;

/// What `format` produced; the caller records root hash and salt (kernel command line,
/// partition UUIDs, update bundles).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerityInfo {
    pub root_hash: [u8; 32],
    pub salt: Vec<u8>,
    pub uuid: [u8; 16],
    pub data_blocks: u64,
    /// Bytes of the hash image, superblock included.
    pub hash_size: u64,
}

/// One level of the hash tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Level {
    /// Hash blocks in this level.
    pub blocks: u64,
    /// Byte offset of the level's first block in the hash image.
    pub offset: u64,
}

/// Layout of a hash image for a number of data blocks. `levels[0]` hashes the data blocks,
/// `levels.last()` is the single top block the root hash is computed from.
///
/// ```text
///  hash image (129 data blocks)
///  +------------+-----------+-----------+-----------+
///  | superblock | level 1   | level 0   | level 0   |
///  | block 0    | block 1   | block 2   | block 3   |
///  +------------+-----------+-----------+-----------+
///                 top level   hashes of data blocks 0..127, 128
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreePlan {
    pub data_blocks: u64,
    pub levels: Vec<Level>,
    /// Bytes of the whole hash image, superblock included.
    pub hash_size: u64,
}

/// Tree layout for `data_blocks` data blocks (pure; mirrors cryptsetup's `hash_levels`).
pub fn plan(data_blocks: u64) -> TreePlan {
    let bits = HASHES_PER_BLOCK.trailing_zeros();
    // Levels needed so that the top level fits one block; 0 for a single data block.
    let mut depth = 0u32;
    while bits * depth < 64 && data_blocks.saturating_sub(1) >> (bits * depth) != 0 {
        depth += 1;
    }
    let sizes: Vec<u64> = (0..depth)
        .map(|i| {
            let shift = bits * (i + 1);
            if shift >= 64 {
                1
            } else {
                data_blocks.div_ceil(1u64 << shift)
            }
        })
        .collect();
    // The superblock takes the first hash block; the top level comes right after it.
    let mut levels = vec![
        Level {
            blocks: 0,
            offset: 0
        };
        sizes.len()
    ];
    let mut pos = BLOCK_SIZE;
    for i in (0..sizes.len()).rev() {
        levels[i] = Level {
            blocks: sizes[i],
            offset: pos,
        };
        pos += sizes[i] * BLOCK_SIZE;
    }
    TreePlan {
        data_blocks,
        levels,
        hash_size: pos,
    }
}

/// Bytes of the hash image (superblock included) for `data_size` bytes of data.
pub fn hash_image_size(data_size: u64) -> u64 {
    plan(data_size.div_ceil(BLOCK_SIZE)).hash_size
}

/// The v1 superblock as the contract defines it (it is what the init reads); this module
/// writes only sha256 with 4 KiB data and hash blocks.
pub use berth_contract::verity::Superblock;

/// The superblock berth writes for `data_blocks` blocks.
pub fn superblock(uuid: [u8; 16], data_blocks: u64, salt: &[u8]) -> Superblock {
    Superblock {
        uuid,
        data_block_size: BLOCK_SIZE as u32,
        hash_block_size: BLOCK_SIZE as u32,
        data_blocks,
        salt: salt.to_vec(),
    }
}

/// Parses a superblock, rejecting any parameter this module does not write.
fn parse_superblock(b: &[u8]) -> Result<Superblock> {
    let sb = Superblock::decode(b)?;
    ensure!(
        u64::from(sb.data_block_size) == BLOCK_SIZE && u64::from(sb.hash_block_size) == BLOCK_SIZE,
        "verity block sizes data {} / hash {}, only {BLOCK_SIZE} is supported",
        sb.data_block_size,
        sb.hash_block_size
    );
    Ok(sb)
}

/// Builds the hash tree of `data_size` bytes read from `data` (starting at its current
/// position; `data_size` must be a non-zero multiple of 4096) and writes superblock + tree to
/// `out` at its current position. Returns the root hash and what went into the superblock.
pub fn format<R: Read + Seek, W: Write + Seek>(
    data: &mut R,
    data_size: u64,
    salt: &[u8],
    uuid: [u8; 16],
    out: &mut W,
    progress: Option<ProgressBar>,
) -> Result<VerityInfo> {
    let data_blocks = check_data_size(data_size)?;
    let sb = superblock(uuid, data_blocks, salt).encode()?;
    let plan = plan(data_blocks);
    let leaves = hash_data(data, data_blocks, salt, progress.as_ref())?;
    let (tree, root_hash) = build_tree(&plan, leaves, salt);

    let start = out
        .stream_position()
        .context("verity: hash image position")?;
    out.write_all(&sb)
        .context("writing the verity superblock")?;
    // Top level first, as veritysetup lays it out.
    for level in tree.iter().rev() {
        out.write_all(level)
            .context("writing the verity hash tree")?;
    }
    out.flush().context("writing the verity hash tree")?;
    let written = out
        .stream_position()
        .context("verity: hash image position")?
        - start;
    ensure!(
        written == plan.hash_size,
        "verity: wrote {written} bytes of hash image, planned {}",
        plan.hash_size
    );
    Ok(VerityInfo {
        root_hash,
        salt: salt.to_vec(),
        uuid,
        data_blocks,
        hash_size: plan.hash_size,
    })
}

/// Why [`verify`] rejected a data/hash pair; returned inside the `anyhow::Error` so a caller can
/// `downcast_ref` and branch (e.g. report the block of a bad update write).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("hash tree does not match root hash {expected} (its root is {actual}): wrong root hash or corrupt hash image")]
    RootHash { expected: String, actual: String },
    #[error("hash block {block} of the hash image does not match the tree above it")]
    HashBlock { block: u64 },
    #[error("data block {block} (byte offset {offset}) does not match its hash: data corrupt")]
    DataBlock { block: u64, offset: u64 },
}

/// Checks `data_size` bytes of `data` against the hash image in `hash` (both read from their
/// current positions) and the expected `root_hash`, as the kernel would: the stored tree must
/// hash up to the root hash, and every data block must match its stored hash. The first
/// failure is returned as a [`VerifyError`] naming the bad block.
pub fn verify<R: Read, H: Read>(
    data: &mut R,
    data_size: u64,
    hash: &mut H,
    root_hash: &[u8; 32],
    progress: Option<ProgressBar>,
) -> Result<()> {
    let data_blocks = check_data_size(data_size)?;
    let mut sb = vec![0u8; BLOCK];
    hash.read_exact(&mut sb)
        .context("reading the verity superblock")?;
    let sb = parse_superblock(&sb)?;
    ensure!(
        sb.data_blocks == data_blocks,
        "verity superblock is for {} data blocks, the data has {data_blocks}",
        sb.data_blocks
    );
    let plan = plan(data_blocks);
    // Stored levels, read top first as they lie on disk, then reordered bottom first.
    let mut stored: Vec<Vec<u8>> = Vec::with_capacity(plan.levels.len());
    for level in plan.levels.iter().rev() {
        let mut buf = vec![0u8; to_usize(level.blocks * BLOCK_SIZE)?];
        hash.read_exact(&mut buf)
            .context("reading the verity hash tree (image truncated?)")?;
        stored.push(buf);
    }
    stored.reverse();

    // 1. The stored tree must be authentic: each level hashes to the one above, the top to the
    //    root. Checked top down so the error names the highest bad block, as the kernel would.
    let top_hash = match stored.last() {
        Some(top) => hash_block(&Sha256::new_with_prefix(&sb.salt), top),
        None => [0u8; 32], // single data block: no tree; the root is the block's own hash
    };
    if !stored.is_empty() && &top_hash != root_hash {
        return Err(VerifyError::RootHash {
            expected: hex::encode(root_hash),
            actual: hex::encode(top_hash),
        }
        .into());
    }
    for i in (1..stored.len()).rev() {
        let below = hash_blocks(&stored[i - 1], &sb.salt);
        if let Some(bad) = first_mismatch(&below, &stored[i]) {
            let level = &plan.levels[i - 1];
            return Err(VerifyError::HashBlock {
                block: level.offset / BLOCK_SIZE + bad,
            }
            .into());
        }
    }

    // 2. The data must match the (now trusted) bottom level, or the root if there is none.
    let leaves = hash_data(data, data_blocks, &sb.salt, progress.as_ref())?;
    let expected: &[u8] = match stored.first() {
        Some(level0) => level0,
        None => root_hash,
    };
    if let Some(block) = first_mismatch(&leaves[..to_usize(data_blocks)? * DIGEST_SIZE], expected) {
        return Err(VerifyError::DataBlock {
            block,
            offset: block * BLOCK_SIZE,
        }
        .into());
    }
    Ok(())
}

fn check_data_size(data_size: u64) -> Result<u64> {
    if data_size == 0 || !data_size.is_multiple_of(BLOCK_SIZE) {
        bail!("verity: data size {data_size} is not a non-zero multiple of {BLOCK_SIZE} bytes");
    }
    Ok(data_size / BLOCK_SIZE)
}

fn to_usize(n: u64) -> Result<usize> {
    usize::try_from(n).context("verity: size does not fit in memory on this platform")
}

/// Index of the first 32-byte digest that differs between `a` and `b` (compared over `a`).
fn first_mismatch(a: &[u8], b: &[u8]) -> Option<u64> {
    a.chunks(DIGEST_SIZE)
        .zip(b.chunks(DIGEST_SIZE))
        .position(|(x, y)| x != y)
        .map(|i| i as u64)
}

/// `sha256(salt || block)`, from a hasher already fed the salt.
fn hash_block(salted: &Sha256, block: &[u8]) -> [u8; 32] {
    let mut h = salted.clone();
    h.update(block);
    h.finalize().into()
}

/// Digests of every 4 KiB block of `bytes`, packed into whole hash blocks (zero-filled tail).
fn hash_blocks(bytes: &[u8], salt: &[u8]) -> Vec<u8> {
    let salted = Sha256::new_with_prefix(salt);
    let n = bytes.len() / BLOCK;
    let mut out = vec![0u8; (n as u64).div_ceil(HASHES_PER_BLOCK) as usize * BLOCK];
    for (i, block) in bytes.chunks_exact(BLOCK).enumerate() {
        out[i * DIGEST_SIZE..(i + 1) * DIGEST_SIZE].copy_from_slice(&hash_block(&salted, block));
    }
    out
}

/// Builds the levels above the data: returns the levels bottom first and the root hash.
fn build_tree(plan: &TreePlan, leaves: Vec<u8>, salt: &[u8]) -> (Vec<Vec<u8>>, [u8; 32]) {
    if plan.levels.is_empty() {
        let mut root = [0u8; 32];
        root.copy_from_slice(&leaves[..DIGEST_SIZE]);
        return (Vec::new(), root);
    }
    let mut levels = vec![leaves];
    while levels.len() < plan.levels.len() {
        let next = hash_blocks(levels.last().map_or(&[][..], |l| &l[..]), salt);
        levels.push(next);
    }
    let top = levels.last().map_or(&[][..], |l| &l[..]);
    let root = hash_block(&Sha256::new_with_prefix(salt), top);
    (levels, root)
}

struct Job {
    first_block: u64,
    len: usize,
    buf: Vec<u8>,
}

struct Done {
    first_block: u64,
    digests: Vec<u8>,
    buf: Vec<u8>,
}

/// Hashes `data_blocks` blocks read sequentially from `data` in 1 MiB chunks. The reading
/// thread hands chunks to one hashing thread per core (buffers are recycled, so at most a few
/// MiB are in flight); digests are packed into the bottom level of the tree, whole hash blocks
/// with a zero tail, ready to be written.
fn hash_data<R: Read>(
    data: &mut R,
    data_blocks: u64,
    salt: &[u8],
    progress: Option<&ProgressBar>,
) -> Result<Vec<u8>> {
    let mut leaves = vec![0u8; to_usize(data_blocks.div_ceil(HASHES_PER_BLOCK) * BLOCK_SIZE)?];
    if let Some(pb) = progress {
        pb.set_length(data_blocks * BLOCK_SIZE);
    }
    let workers = thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let salted = Sha256::new_with_prefix(salt);
    let (job_tx, job_rx) = mpsc::sync_channel::<Job>(workers);
    let job_rx = Mutex::new(job_rx);
    let (done_tx, done_rx) = mpsc::channel::<Done>();

    thread::scope(|s| -> Result<()> {
        for _ in 0..workers {
            let (job_rx, done_tx, salted) = (&job_rx, done_tx.clone(), &salted);
            s.spawn(move || loop {
                let job = match job_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok(job) = job else { return };
                let mut digests = vec![0u8; job.len / BLOCK * DIGEST_SIZE];
                for (d, block) in digests
                    .chunks_exact_mut(DIGEST_SIZE)
                    .zip(job.buf[..job.len].chunks_exact(BLOCK))
                {
                    d.copy_from_slice(&hash_block(salted, block));
                }
                let done = Done {
                    first_block: job.first_block,
                    digests,
                    buf: job.buf,
                };
                if done_tx.send(done).is_err() {
                    return;
                }
            });
        }
        // Moved in here so that an early error return drops it and the workers wind down.
        let job_tx = job_tx;
        drop(done_tx);

        let mut place = |d: &Done| {
            let at = d.first_block as usize * DIGEST_SIZE;
            leaves[at..at + d.digests.len()].copy_from_slice(&d.digests);
        };
        let mut free: Vec<Vec<u8>> = (0..workers + 2).map(|_| vec![0u8; CHUNK_SIZE]).collect();
        let mut outstanding = 0usize;
        let mut block = 0u64;
        while block < data_blocks {
            let mut buf = match free.pop() {
                Some(b) => b,
                None => {
                    let d = done_rx.recv().context("verity: hashing thread died")?;
                    outstanding -= 1;
                    place(&d);
                    d.buf
                }
            };
            let n = (data_blocks - block).min((CHUNK_SIZE / BLOCK) as u64);
            let len = n as usize * BLOCK;
            data.read_exact(&mut buf[..len]).with_context(|| {
                format!(
                    "reading data block {block} (byte {}) of {data_blocks} for the verity tree",
                    block * BLOCK_SIZE
                )
            })?;
            if let Some(pb) = progress {
                pb.inc(len as u64);
            }
            job_tx
                .send(Job {
                    first_block: block,
                    len,
                    buf,
                })
                .context("verity: hashing threads died")?;
            outstanding += 1;
            block += n;
        }
        drop(job_tx);
        for _ in 0..outstanding {
            let d = done_rx.recv().context("verity: hashing thread died")?;
            place(&d);
        }
        Ok(())
    })?;
    Ok(leaves)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn blocks(level: &[Level]) -> Vec<u64> {
        level.iter().map(|l| l.blocks).collect()
    }

    #[test]
    fn plan_one_block_has_no_tree() {
        let p = plan(1);
        assert!(p.levels.is_empty());
        assert_eq!(p.hash_size, 4096); // superblock only, as veritysetup writes it
    }

    #[test]
    fn plan_128_blocks_is_one_level_of_one_block() {
        let p = plan(128);
        assert_eq!(
            p.levels,
            [Level {
                blocks: 1,
                offset: 4096
            }]
        );
        assert_eq!(p.hash_size, 2 * 4096);
    }

    #[test]
    fn plan_129_blocks_puts_top_level_first() {
        let p = plan(129);
        assert_eq!(blocks(&p.levels), [2, 1]);
        assert_eq!(p.levels[1].offset, 4096); // top level right after the superblock
        assert_eq!(p.levels[0].offset, 2 * 4096);
        assert_eq!(p.hash_size, 4 * 4096);
    }

    #[test]
    fn plan_128_squared_plus_one_has_three_levels() {
        let p = plan(128 * 128 + 1);
        assert_eq!(blocks(&p.levels), [129, 2, 1]);
        assert_eq!(p.levels[2].offset, 4096);
        assert_eq!(p.levels[1].offset, 2 * 4096);
        assert_eq!(p.levels[0].offset, 4 * 4096);
        assert_eq!(p.hash_size, (1 + 1 + 2 + 129) * 4096);
        // Exactly 128*128 blocks still fits two levels.
        assert_eq!(blocks(&plan(128 * 128).levels), [128, 1]);
        assert_eq!(hash_image_size(1 << 30), (1 + 1 + 16 + 2048) * 4096);
    }

    #[test]
    fn superblock_bytes_match_veritysetup() {
        // Leading bytes of `veritysetup format --salt=00112233
        // --uuid=12345678-9abc-def0-1234-56789abcdef0` on a one-block file (xxd of the hash).
        let sb = superblock(KAT_UUID, 1, &[0x00, 0x11, 0x22, 0x33]);
        let b = sb.encode().unwrap();
        let expected = "76657269747900000100000001000000123456789abcdef0123456789abcdef0\
                        7368613235360000000000000000000000000000000000000000000000000000\
                        0010000000100000010000000000000004000000000000000011223300000000";
        assert_eq!(hex::encode(&b[..96]), expected);
        assert!(b[96..].iter().all(|&x| x == 0));
        assert_eq!(b.len(), 4096);
        assert_eq!(parse_superblock(&b).unwrap(), sb);
        let long_salt = Superblock {
            salt: vec![0; 257],
            ..sb.clone()
        };
        assert!(long_salt.encode().is_err());
        let small_blocks = Superblock {
            data_block_size: 1024,
            ..sb
        };
        assert!(parse_superblock(&small_blocks.encode().unwrap()).is_err());
    }

    /// 129 blocks, block i filled with the byte i, salt 00112233, uuid 1234...f0.
    fn kat_data() -> Vec<u8> {
        (0..129u8).flat_map(|i| vec![i; 4096]).collect()
    }
    const KAT_UUID: [u8; 16] = [
        0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde,
        0xf0,
    ];

    #[test]
    fn known_answer_matches_veritysetup() {
        // Produced once with cryptsetup 2.6.1 (Debian 12):
        //   python3 -c 'import sys; sys.stdout.buffer.write(b"".join(bytes([i])*4096 for i in range(129)))' > d
        //   veritysetup format --salt=00112233 --uuid=12345678-9abc-def0-1234-56789abcdef0 d h
        //   sha256sum h
        // The integration test tests/verity_veritysetup.rs runs the tool itself on more sizes.
        let data = kat_data();
        let mut out = Cursor::new(Vec::new());
        let info = format(
            &mut Cursor::new(&data),
            data.len() as u64,
            &[0x00, 0x11, 0x22, 0x33],
            KAT_UUID,
            &mut out,
            None,
        )
        .unwrap();
        assert_eq!(hex::encode(info.root_hash), KAT_ROOT);
        assert_eq!(info.hash_size, 4 * 4096);
        let image = out.into_inner();
        assert_eq!(image.len(), 4 * 4096);
        assert_eq!(hex::encode(Sha256::digest(&image)), KAT_IMAGE_SHA256);
    }
    const KAT_ROOT: &str = "2d37f803a1877617fe97bd7685625064b812a6c281280d10f1cd48bb5bd2fc95";
    const KAT_IMAGE_SHA256: &str =
        "92d2dffed039d11227b28b7e6d5ebc953435a906ac058491e669a85793763b6d";

    #[test]
    fn single_block_root_is_the_salted_block_hash() {
        // veritysetup prints 7ec8dd…742f for one zero block with salt 00112233.
        let data = vec![0u8; 4096];
        let mut out = Cursor::new(Vec::new());
        let info = format(
            &mut Cursor::new(&data),
            4096,
            &[0, 0x11, 0x22, 0x33],
            KAT_UUID,
            &mut out,
            None,
        )
        .unwrap();
        assert_eq!(
            hex::encode(info.root_hash),
            "7ec8dda1b53ca958f13d08bcb7f8320234bed38c694eaebd9bd43bbfbf4d742f"
        );
        assert_eq!(out.get_ref().len(), 4096);
        verify(
            &mut Cursor::new(&data),
            4096,
            &mut Cursor::new(out.get_ref()),
            &info.root_hash,
            None,
        )
        .unwrap();
    }

    #[test]
    fn verify_names_the_corrupt_data_block() {
        let mut data = kat_data();
        let mut out = Cursor::new(Vec::new());
        let info = format(
            &mut Cursor::new(&data),
            data.len() as u64,
            b"salt",
            KAT_UUID,
            &mut out,
            None,
        )
        .unwrap();
        let image = out.into_inner();
        verify(
            &mut Cursor::new(&data),
            data.len() as u64,
            &mut Cursor::new(&image),
            &info.root_hash,
            None,
        )
        .unwrap();

        data[128 * 4096 + 17] ^= 1;
        let err = verify(
            &mut Cursor::new(&data),
            data.len() as u64,
            &mut Cursor::new(&image),
            &info.root_hash,
            None,
        )
        .unwrap_err();
        match err.downcast_ref::<VerifyError>() {
            Some(VerifyError::DataBlock { block: 128, offset }) => assert_eq!(*offset, 128 * 4096),
            other => panic!("unexpected {other:?}: {err:#}"),
        }
    }

    #[test]
    fn verify_rejects_a_corrupt_tree_or_wrong_root() {
        let data = kat_data();
        let mut out = Cursor::new(Vec::new());
        let info = format(
            &mut Cursor::new(&data),
            data.len() as u64,
            b"salt",
            KAT_UUID,
            &mut out,
            None,
        )
        .unwrap();
        let image = out.into_inner();
        let check = |image: &[u8], root: &[u8; 32]| {
            verify(
                &mut Cursor::new(&data),
                data.len() as u64,
                &mut Cursor::new(image),
                root,
                None,
            )
        };
        let mut wrong = info.root_hash;
        wrong[0] ^= 1;
        let err = check(&image, &wrong).unwrap_err();
        assert!(
            matches!(err.downcast_ref(), Some(VerifyError::RootHash { .. })),
            "{err:#}"
        );

        let mut bad = image.clone();
        bad[3 * 4096] ^= 1; // second block of level 0
        let err = check(&bad, &info.root_hash).unwrap_err();
        assert!(
            matches!(
                err.downcast_ref(),
                Some(VerifyError::HashBlock { block: 3 })
            ),
            "{err:#}"
        );
    }

    #[test]
    fn chunked_parallel_hashing_matches_a_plain_loop() {
        // More than a few chunks, not a multiple of the chunk size.
        let n = 3 * (CHUNK_SIZE / BLOCK) as u64 + 5;
        let data: Vec<u8> = (0..n as usize * BLOCK)
            .map(|i| (i * 31 / 7) as u8)
            .collect();
        let leaves = hash_data(&mut Cursor::new(&data), n, b"s", None).unwrap();
        assert_eq!(leaves, hash_blocks(&data, b"s"));
    }

    #[test]
    fn bad_sizes_are_rejected() {
        let mut out = Cursor::new(Vec::new());
        for size in [0u64, 100, 4097] {
            let r = format(
                &mut Cursor::new(vec![0u8; 8192]),
                size,
                b"",
                KAT_UUID,
                &mut out,
                None,
            );
            assert!(r.is_err(), "size {size}");
        }
        let r = format(
            &mut Cursor::new(vec![0u8; 4096]),
            8192,
            b"",
            KAT_UUID,
            &mut out,
            None,
        );
        let err = r.unwrap_err();
        assert!(format!("{err:#}").contains("data block 0"), "{err:#}");
    }
}
