//! The mutation fuzzer both crates' fuzz tests share (contract/tests/fuzz.rs,
//! builder/tests/fuzz.rs): seeds, mutations, a time budget, panics caught and kept.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: [u8; 12] = [
    0, 1, 0x7f, 0x80, 0xff, b'"', b'\\', b'{', b'}', b',', b'\n', b'9',
];

fn mutate(r: &mut Rng, seeds: &[Vec<u8>], input: &mut Vec<u8>) {
    for _ in 0..1 + r.below(4) {
        let len = input.len();
        match r.below(8) {
            0 if len > 0 => {
                let i = r.below(len);
                input[i] ^= 1 << r.below(8);
            }
            1 if len > 0 => {
                let i = r.below(len);
                input[i] = INTERESTING[r.below(INTERESTING.len())];
            }
            2 if len > 0 => input.truncate(r.below(len)),
            3 => {
                for _ in 0..1 + r.below(16) {
                    input.push(r.next() as u8);
                }
            }
            4 => {
                let other = &seeds[r.below(seeds.len())];
                if !other.is_empty() {
                    let a = r.below(other.len());
                    let b = a + r.below(other.len() - a);
                    let at = r.below(len + 1);
                    input.splice(at..at, other[a..b].iter().copied());
                }
            }
            5 if len > 1 => {
                let a = r.below(len);
                let b = a + r.below(len - a);
                input.drain(a..b);
            }
            6 if len > 1 => {
                let a = r.below(len);
                let b = (a + 1 + r.below(8)).min(len);
                let copy: Vec<u8> = input[a..b].to_vec();
                input.splice(a..a, copy);
            }
            _ if len >= 8 => {
                // A little-endian integer field set to an edge value.
                let i = r.below(len - 7);
                let v: u64 = [0, 1, u64::MAX, u32::MAX as u64, 1 << 31, 4096][r.below(6)];
                input[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
            _ => input.push(r.next() as u8),
        }
    }
}

pub fn seconds() -> f64 {
    std::env::var("BERTH_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

/// Whether `name` is to run: all targets, or those `BERTH_FUZZ_TARGETS` lists (commas).
fn selected(name: &str) -> bool {
    std::env::var("BERTH_FUZZ_TARGETS")
        .map(|l| l.split(',').any(|t| t.trim() == name))
        .unwrap_or(true)
}

/// Where a crashing input is kept: `target/fuzz-crashes` of the workspace.
fn crash_dir() -> std::path::PathBuf {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = here
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .unwrap_or(here);
    root.join("target/fuzz-crashes")
}

/// Runs `target` on mutations of `seeds` for the configured time; panics on a crash.
pub fn fuzz(name: &str, seeds: Vec<Vec<u8>>, target: impl Fn(&[u8])) {
    if !selected(name) {
        return;
    }
    for s in &seeds {
        target(s);
    }
    let budget = Duration::from_secs_f64(seconds());
    let mut r = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
    let (start, mut n, mut accepted_len) = (Instant::now(), 0u64, 0usize);
    while start.elapsed() < budget {
        let mut input = seeds[r.below(seeds.len())].clone();
        mutate(&mut r, &seeds, &mut input);
        accepted_len = accepted_len.max(input.len());
        if let Err(e) = catch_unwind(AssertUnwindSafe(|| target(&input))) {
            let dir = crash_dir();
            let _ = std::fs::create_dir_all(&dir);
            let p = dir.join(format!("{name}-{n}.bin"));
            let _ = std::fs::write(&p, &input);
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!(
                "fuzz target {name}: a panic on input {} ({msg})",
                p.display()
            );
        }
        n += 1;
    }
    println!(
        "fuzz {name}: {n} executions in {:.1} s ({:.0}/s), inputs up to {accepted_len} bytes",
        start.elapsed().as_secs_f64(),
        n as f64 / start.elapsed().as_secs_f64().max(1e-9)
    );
    assert!(n > 0 || budget.is_zero());
}
