//! Test harness shared by the moto integration tests and the benchmark: a moto server on
//! 127.0.0.1 (killed on drop), a recording / fault-injecting HTTP proxy in front of it, an
//! independent oracle (boto3, the AWS SDK for Python, which moto brings along) and synthetic
//! disks.

#![allow(dead_code)]

pub mod proxy;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_aws::blocks::BLOCK_SIZE;
use berth_aws::{Credentials, Endpoints};

pub const REGION: &str = "us-east-1";

pub fn creds() -> Credentials {
    Credentials {
        access_key_id: "AKIDTESTING".into(),
        secret_access_key: "testing-secret".into(),
        session_token: None,
    }
}

/// `moto_server` on a free loopback port, killed when dropped.
pub struct Moto {
    child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

const INSTALL_HINT: &str = "these tests need moto's server: pip install 'moto[server]'";

impl Moto {
    pub fn start() -> Moto {
        let ok = Command::new("python3")
            .args(["-c", "import moto.server, boto3"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "{INSTALL_HINT}");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("moto.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect(INSTALL_HINT);
        let mut moto = Moto {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!(
                    "moto_server exited with {status}: {}",
                    std::fs::read_to_string(&moto.log).unwrap_or_default()
                );
            }
            if TcpStream::connect_timeout(&moto.addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {} within 60 s",
                moto.addr
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn endpoints(&self) -> Endpoints {
        Endpoints::single(&self.url()).unwrap()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs tests/oracle.py (boto3 against moto) and parses its JSON answer.
pub fn oracle(endpoint: &str, region: &str, args: &[&str]) -> serde_json::Value {
    oracle_with_input(endpoint, region, args, b"")
}

pub fn oracle_with_input(
    endpoint: &str,
    region: &str,
    args: &[&str],
    input: &[u8],
) -> serde_json::Value {
    use std::io::Write;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(endpoint)
        .arg(region)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "oracle {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// xorshift64*: reproducible pseudo-random bytes without a crate.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// A disk of `blocks` 512 KiB blocks where the listed ones hold pseudo-random data (a whole
/// block, or for odd indices only a few hundred bytes in the middle) and the rest are zero.
pub fn synthetic_disk(dir: &Path, blocks: u64, data_blocks: &[u64], seed: u64) -> PathBuf {
    let mut disk = vec![0u8; (blocks * BLOCK_SIZE) as usize];
    let mut rng = Rng(seed);
    for &b in data_blocks {
        let start = (b * BLOCK_SIZE) as usize;
        let block = &mut disk[start..start + BLOCK_SIZE as usize];
        if b % 2 == 0 {
            rng.fill(block);
        } else {
            let at = (rng.next() % (BLOCK_SIZE - 1000)) as usize;
            rng.fill(&mut block[at..at + 300]);
        }
    }
    let path = dir.join("disk.raw");
    std::fs::write(&path, &disk).unwrap();
    path
}

pub fn read_disk_block(disk: &[u8], index: u64) -> &[u8] {
    let start = (index * BLOCK_SIZE) as usize;
    &disk[start..start + BLOCK_SIZE as usize]
}
