//! Oracle test: our dm-verity hash image against `veritysetup` (cryptsetup) on the same data.
//!
//! For each size: root hash equal, hash image bytes identical, `veritysetup verify` accepts our
//! image, and after flipping one data byte both `veritysetup verify` and `berth::fsimage::verity::verify`
//! reject it (ours naming the block). Skipped, with a message, when veritysetup is missing.

mod common;

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use berth::fsimage::verity::{self, VerifyError, BLOCK_SIZE};

const VERITYSETUP: &str = "/usr/sbin/veritysetup";

fn veritysetup() -> Option<PathBuf> {
    let p = PathBuf::from(VERITYSETUP);
    if p.exists() {
        return Some(p);
    }
    // Fall back to PATH.
    let ok = Command::new("veritysetup")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| PathBuf::from("veritysetup"))
}

fn uuid_string(u: &[u8; 16]) -> String {
    let h = hex::encode(u);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// splitmix64: deterministic pseudo-random data without a rand dependency.
fn write_data(path: &Path, blocks: u64, seed: u64) {
    let mut state = seed;
    let mut w = BufWriter::new(File::create(path).unwrap());
    let mut buf = vec![0u8; BLOCK_SIZE as usize];
    for _ in 0..blocks {
        for chunk in buf.chunks_exact_mut(8) {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        w.write_all(&buf).unwrap();
    }
    w.flush().unwrap();
}

fn run(tool: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn check_size(tool: &Path, dir: &Path, name: &str, blocks: u64, seed: u64) {
    let data = dir.join(format!("{name}.data"));
    let ours = dir.join(format!("{name}.ours"));
    let theirs = dir.join(format!("{name}.theirs"));
    write_data(&data, blocks, seed);
    let size = blocks * BLOCK_SIZE;
    let salt: Vec<u8> = (0..32u8)
        .map(|i| i.wrapping_mul(7).wrapping_add(seed as u8))
        .collect();
    let uuid: [u8; 16] = std::array::from_fn(|i| (i as u8).wrapping_mul(17) ^ 0x5a);

    let t = Instant::now();
    let info = {
        let mut out = File::create(&ours).unwrap();
        verity::format(
            &mut File::open(&data).unwrap(),
            size,
            &salt,
            uuid,
            &mut out,
            None,
        )
        .unwrap()
    };
    let ours_time = t.elapsed();

    let t = Instant::now();
    let (ok, text) = run(
        tool,
        &[
            "format",
            &format!("--salt={}", hex::encode(&salt)),
            &format!("--uuid={}", uuid_string(&uuid)),
            data.to_str().unwrap(),
            theirs.to_str().unwrap(),
        ],
    );
    let theirs_time = t.elapsed();
    assert!(ok, "veritysetup format failed: {text}");
    let root = text
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .map(|r| r.trim().to_string())
        .unwrap_or_else(|| panic!("no root hash in veritysetup output:\n{text}"));

    let ours_bytes = fs::read(&ours).unwrap();
    let theirs_bytes = fs::read(&theirs).unwrap();
    println!(
        "{name}: {blocks} blocks, root {root}, hash image {} bytes (veritysetup {}), \
         berth {:?} vs veritysetup {:?}",
        ours_bytes.len(),
        theirs_bytes.len(),
        ours_time,
        theirs_time
    );
    assert_eq!(
        hex::encode(info.root_hash),
        root,
        "{name}: root hash differs"
    );
    assert_eq!(info.hash_size, ours_bytes.len() as u64);
    assert_eq!(info.hash_size, verity::hash_image_size(size));
    assert_eq!(
        ours_bytes.len(),
        theirs_bytes.len(),
        "{name}: hash image sizes differ"
    );
    if let Some(i) = ours_bytes
        .iter()
        .zip(&theirs_bytes)
        .position(|(a, b)| a != b)
    {
        panic!("{name}: hash images differ first at byte {i}");
    }

    let (ok, text) = run(
        tool,
        &[
            "verify",
            data.to_str().unwrap(),
            ours.to_str().unwrap(),
            &root,
        ],
    );
    assert!(
        ok,
        "{name}: veritysetup verify rejected our hash image: {text}"
    );
    verity::verify(
        &mut File::open(&data).unwrap(),
        size,
        &mut File::open(&ours).unwrap(),
        &info.root_hash,
        None,
    )
    .unwrap();

    // Corrupt one byte in the last data block (the one a partial hash block covers).
    let bad_block = blocks - 1;
    let mut bytes = fs::read(&data).unwrap();
    bytes[(bad_block * BLOCK_SIZE + 123) as usize] ^= 0x40;
    fs::write(&data, &bytes).unwrap();
    drop(bytes);
    let (ok, text) = run(
        tool,
        &[
            "verify",
            data.to_str().unwrap(),
            ours.to_str().unwrap(),
            &root,
        ],
    );
    assert!(
        !ok,
        "{name}: veritysetup verify accepted corrupt data: {text}"
    );
    let err = verity::verify(
        &mut File::open(&data).unwrap(),
        size,
        &mut File::open(&ours).unwrap(),
        &info.root_hash,
        None,
    )
    .unwrap_err();
    if blocks == 1 {
        // No tree: the root hash is the block's hash, so the root check is what fails.
        assert!(
            matches!(
                err.downcast_ref(),
                Some(VerifyError::DataBlock { block: 0, .. })
            ),
            "{name}: {err:#}"
        );
    } else {
        match err.downcast_ref::<VerifyError>() {
            Some(VerifyError::DataBlock { block, .. }) => assert_eq!(*block, bad_block, "{name}"),
            _ => panic!("{name}: expected a data block error, got {err:#}"),
        }
    }
    for p in [data, ours, theirs] {
        let _ = fs::remove_file(p);
    }
}

#[test]
fn hash_images_match_veritysetup() {
    let Some(tool) = veritysetup() else {
        common::require(
            false,
            &format!("veritysetup not found ({VERITYSETUP})"),
            "install the Debian package cryptsetup-bin (ci/install-deps does)",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (name, blocks, seed) in [
        ("one-block", 1, 1),
        ("two-blocks", 2, 2),
        ("full-level", 128, 3),
        ("129-blocks", 129, 4),
        ("few-mib", 3 * 256 + 77, 5),
        ("three-levels", 128 * 128 + 1, 6),
    ] {
        check_size(&tool, dir.path(), name, blocks, seed);
    }
}

/// Throughput on 256 MiB against `veritysetup format` (run with `--ignored --nocapture`).
#[test]
#[ignore = "benchmark: 256 MiB"]
fn throughput_256mib() {
    let Some(tool) = veritysetup() else {
        panic!("veritysetup not found: install cryptsetup-bin");
    };
    let dir = tempfile::tempdir().unwrap();
    check_size(&tool, dir.path(), "256mib", 256 * 256, 7);
}

/// The superblock the init decodes (the contract's), from what veritysetup itself writes.
#[test]
fn contract_reads_the_superblock_veritysetup_writes() {
    let Some(tool) = veritysetup() else {
        common::require(false, "veritysetup not found", "install cryptsetup-bin");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (data, hash) = (dir.path().join("data"), dir.path().join("hash"));
    fs::write(&data, vec![7u8; 5 * 4096]).unwrap();
    let (ok, text) = run(
        &tool,
        &[
            "format",
            "--salt=00112233aabb",
            data.to_str().unwrap(),
            hash.to_str().unwrap(),
        ],
    );
    assert!(ok, "{text}");
    let sb = berth_contract_superblock(&fs::read(&hash).unwrap());
    assert_eq!(
        (sb.data_blocks, sb.data_block_size, sb.hash_block_size),
        (5, 4096, 4096)
    );
    assert_eq!(sb.salt, [0x00, 0x11, 0x22, 0x33, 0xaa, 0xbb]);
    assert_eq!(sb.data_sectors(), 5 * 8);
}

fn berth_contract_superblock(b: &[u8]) -> verity::Superblock {
    verity::Superblock::decode(b).unwrap()
}
