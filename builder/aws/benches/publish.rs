//! Upload throughput of `publish` against moto on 127.0.0.1, with 8 parallel PutSnapshotBlock
//! workers versus a plain sequential upload of the same blocks (parallelism 1), and the bytes an
//! incremental publish sends versus a full one.
//!
//! Against moto directly the server is the bottleneck (one Python process on the same cores),
//! so that ratio says little about AWS, where each request costs a network round trip that
//! parallel requests overlap. The benchmark therefore also runs through a local proxy that
//! holds each request for a simulated round trip (BERTH_BENCH_RTT_MS, default 20).
//!
//! `cargo bench -p berth-aws` (needs `pip install 'moto[server]'`). BERTH_BENCH_MIB sets the
//! disk size (default 128 MiB, every block non-zero, so every block is sent).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::Duration;

use berth_aws::blocks::BLOCK_SIZE;
use berth_aws::*;
use common::proxy::Proxy;
use common::*;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run(
    ep: &Endpoints,
    disk: &Path,
    name: &str,
    parallelism: usize,
    previous: Option<PreviousPublish>,
) -> PublishRecord {
    let mut req = PublishRequest::new(disk, name, "1.0.0", REGION);
    req.parallelism = parallelism;
    req.previous = previous;
    req.wait_timeout = Duration::from_secs(60);
    publish(&req, &creds(), ep, None).expect("publish")
}

fn mib_s(r: &PublishRecord) -> f64 {
    r.bytes_sent as f64 / (1 << 20) as f64 / r.upload_seconds
}

/// Sequential vs parallel upload of the same disk, 2 rounds alternating; prints the ratio.
fn compare(label: &str, tag: &str, ep: &Endpoints, disk: &Path) {
    let mut seq: f64 = 0.0;
    let mut par: f64 = 0.0;
    for round in 0..2 {
        let s = run(ep, disk, &format!("bench-{tag}-seq-{round}"), 1, None);
        let p = run(
            ep,
            disk,
            &format!("bench-{tag}-par-{round}"),
            DEFAULT_PARALLELISM,
            None,
        );
        println!(
            "{label}, round {round}: {} blocks ({} MiB): sequential {:.1} MiB/s ({:.2} s), {} workers {:.1} MiB/s ({:.2} s)",
            s.blocks_sent,
            s.bytes_sent >> 20,
            mib_s(&s),
            s.upload_seconds,
            DEFAULT_PARALLELISM,
            mib_s(&p),
            p.upload_seconds
        );
        seq = seq.max(mib_s(&s));
        par = par.max(mib_s(&p));
    }
    println!(
        "{label}: throughput ratio parallel({DEFAULT_PARALLELISM}) / sequential = {:.2}x (best of 2: {par:.1} vs {seq:.1} MiB/s)",
        par / seq
    );
}

fn main() {
    let blocks = env_u64("BERTH_BENCH_MIB", 128) * (1 << 20) / BLOCK_SIZE;
    let rtt = env_u64("BERTH_BENCH_RTT_MS", 20);
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    // Even blocks fully random, odd ones a few random bytes: every block is non-zero.
    let every: Vec<u64> = (0..blocks).collect();
    let disk = synthetic_disk(dir.path(), blocks, &every, 42);

    let direct = moto.endpoints();
    compare("moto directly", "direct", &direct, &disk);
    let proxy = Proxy::start(moto.addr);
    proxy.set_delay(Duration::from_millis(rtt));
    let delayed = Endpoints::single(&proxy.url()).unwrap();
    compare(
        &format!("moto + {rtt} ms simulated round trip"),
        "rtt",
        &delayed,
        &disk,
    );
    drop(proxy);

    // Incremental: change 3 bytes in each of 2 blocks.
    let full = run(&direct, &disk, "bench-full", DEFAULT_PARALLELISM, None);
    let mut bytes = std::fs::read(&disk).unwrap();
    for b in [3u64, blocks / 2] {
        let at = (b * BLOCK_SIZE + 100) as usize;
        bytes[at..at + 3].copy_from_slice(b"chg");
    }
    std::fs::write(&disk, &bytes).unwrap();
    let incr = run(
        &direct,
        &disk,
        "bench-incr",
        DEFAULT_PARALLELISM,
        Some(full.previous().unwrap()),
    );
    println!(
        "incremental publish sent {} bytes ({} blocks) vs {} bytes ({} blocks) for the full one: {:.2}%",
        incr.bytes_sent,
        incr.blocks_sent,
        full.bytes_sent,
        full.blocks_sent,
        100.0 * incr.bytes_sent as f64 / full.bytes_sent as f64
    );
}
