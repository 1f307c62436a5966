//! The cluster's reboot lock on the machine (`berth_contract::lock`): `berthctl lock
//! status|take|release`, through the local etcd member's JSON gateway, and the record on /var
//! that this machine holds it ([`paths::REBOOT_LOCK`]: the holder and the version it rebooted
//! for), which outlives the reboot so the new boot knows to release it.
//!
//! Under the reboot policy `etcd-lock`, PID 1 runs `berthctl lock take --wait --for VERSION`
//! once an update is applied and reboots when the record appears; the boot that follows runs
//! `berthctl lock release --wait` once it is ready on that version and blessed. A boot on
//! another version (it rolled back, or never got to the new one) keeps the lock: no other
//! machine should reboot into a release that just failed here; `berthctl lock release` is the
//! operator's way out.

use std::fs;
use std::time::{Duration, Instant};

use berth_contract::lock::{self as proto, LOCK_KEY};
use berth_contract::paths;

use crate::{fail, http, Ctx, Result};

const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_ANSWER: u64 = 64 << 10;
const RETRY: Duration = Duration::from_secs(5);

pub struct Lock {
    pub endpoint: String,
    pub holder: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Release {
    Done,
    NotHeld,
    HeldBy(String),
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Lock {
    pub fn new(endpoint: &str, holder: &str) -> Result<Lock> {
        if let Err(m) = berth_contract::channel::check_url(endpoint) {
            fail!("etcd endpoint: {m}");
        }
        if let Err(m) = proto::check_holder(holder) {
            fail!("{m}");
        }
        Ok(Lock {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            holder: holder.to_string(),
        })
    }

    fn call(&self, path: &str, body: &str) -> Result<String> {
        let url = format!("{}{path}", self.endpoint);
        http::post_text(&url, body, MAX_ANSWER, TIMEOUT)
    }

    /// Who holds the lock now.
    pub fn holder(&self) -> Result<Option<String>> {
        let a = self.call("/v3/kv/range", &proto::holder_request())?;
        proto::holder_of(&a).ctx(|| format!("reading {LOCK_KEY}"))
    }

    /// Takes the lock; `Ok(None)` when this machine holds it now (it may have held it
    /// already), `Ok(Some(other))` when another does.
    pub fn take(&self) -> Result<Option<String>> {
        let a = self.call("/v3/kv/txn", &proto::take_request(&self.holder, now_ms()))?;
        if proto::txn_succeeded(&a).ctx(|| format!("taking {LOCK_KEY}"))? {
            return Ok(None);
        }
        match self.holder()? {
            Some(h) if h == self.holder => Ok(None),
            Some(h) => Ok(Some(h)),
            // Released between the two requests: the next try may get it.
            None => Ok(Some(String::new())),
        }
    }

    pub fn release(&self) -> Result<Release> {
        let a = self.call(
            "/v3/kv/txn",
            &proto::release_request(&self.holder, now_ms()),
        )?;
        if proto::txn_succeeded(&a).ctx(|| format!("releasing {LOCK_KEY}"))? {
            return Ok(Release::Done);
        }
        Ok(match self.holder()? {
            Some(h) => Release::HeldBy(h),
            None => Release::NotHeld,
        })
    }
}

/// This machine's name (the lock's holder): its host name, as PID 1 has it.
pub fn machine_name() -> Result<String> {
    use std::os::fd::AsRawFd;
    // berthctl may run in the admin container, with a UTS namespace of its own.
    if let Ok(ns) = fs::File::open("/proc/1/ns/uts") {
        let _ = crate::sys::setns(ns.as_raw_fd(), libc::CLONE_NEWUTS);
    }
    crate::read_trim("/proc/sys/kernel/hostname")
}

fn host(p: &str) -> String {
    if std::process::id() == 1 {
        p.to_string()
    } else {
        format!("/proc/1/root{p}")
    }
}

/// The record that this machine holds the lock: (holder, the version it rebooted for).
pub fn held() -> Option<(String, String)> {
    let t = fs::read_to_string(host(paths::REBOOT_LOCK)).ok()?;
    let mut l = t.lines();
    Some((l.next()?.to_string(), l.next().unwrap_or("").to_string()))
}

fn write_held(holder: &str, version: &str) -> Result<()> {
    let p = host(paths::REBOOT_LOCK);
    crate::durable::replace(&p, format!("{holder}\n{version}\n").as_bytes())?;
    crate::sys::sync();
    Ok(())
}

fn clear_held() {
    if fs::remove_file(host(paths::REBOOT_LOCK)).is_ok() {
        crate::sys::sync();
    }
}

const USAGE: &str = "usage: berthctl lock status | take [--wait] [--for VERSION] | release [--wait]   [--endpoint URL]";

/// `berthctl lock …`; returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let (mut wait, mut version, mut endpoint) = (false, String::new(), None);
    let verb = args.first().map(String::as_str);
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--wait" => wait = true,
            "--for" => match it.next() {
                Some(v) => version = v.clone(),
                None => return usage("--for needs a VERSION"),
            },
            "--endpoint" => match it.next() {
                Some(v) => endpoint = Some(v.clone()),
                None => return usage("--endpoint needs a URL"),
            },
            other => return usage(&format!("unexpected {other:?}")),
        }
    }
    let endpoint = endpoint.unwrap_or_else(|| proto::LOCAL_ENDPOINT.to_string());
    let run = || -> Result<i32> {
        let lock = Lock::new(&endpoint, &machine_name()?)?;
        match verb {
            Some("status") => {
                match lock.holder()? {
                    None => println!("reboot lock ({LOCK_KEY}): free"),
                    Some(h) if h == lock.holder => {
                        println!("reboot lock ({LOCK_KEY}): held by {h} (this machine)")
                    }
                    Some(h) => println!("reboot lock ({LOCK_KEY}): held by {h}"),
                }
                Ok(0)
            }
            Some("take") => take(&lock, wait, &version),
            Some("release") => release(&lock, wait),
            _ => Ok(usage("status, take or release?")),
        }
    };
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berthctl: lock: {e}");
            1
        }
    }
}

fn usage(why: &str) -> i32 {
    eprintln!("berthctl: lock: {why}\n{USAGE}");
    2
}

fn take(lock: &Lock, wait: bool, version: &str) -> Result<i32> {
    let mut said = String::from("\0");
    loop {
        let waiting_for = match lock.take() {
            Ok(None) => {
                write_held(&lock.holder, version)?;
                println!(
                    "berthctl: reboot lock taken by {}{}",
                    lock.holder,
                    if version.is_empty() {
                        String::new()
                    } else {
                        format!(" for {version}")
                    }
                );
                return Ok(0);
            }
            Ok(Some(other)) if !wait => {
                eprintln!("berthctl: lock: the reboot lock is held by {other}");
                return Ok(1);
            }
            Ok(Some(other)) if other.is_empty() => String::new(),
            Ok(Some(other)) => format!("held by {other}"),
            Err(e) if !wait => return Err(e),
            Err(e) => format!("etcd does not answer ({e})"),
        };
        if !waiting_for.is_empty() && waiting_for != said {
            println!("berthctl: waiting for the reboot lock: {waiting_for}");
            said = waiting_for;
        }
        std::thread::sleep(RETRY);
    }
}

/// How long `release --wait` keeps trying while etcd does not answer (a member that just
/// rebooted may take a while to rejoin).
const RELEASE_PATIENCE: Duration = Duration::from_secs(900);

fn release(lock: &Lock, wait: bool) -> Result<i32> {
    let start = Instant::now();
    let mut said = false;
    loop {
        match lock.release() {
            Ok(Release::Done) => {
                clear_held();
                println!("berthctl: reboot lock released by {}", lock.holder);
                return Ok(0);
            }
            Ok(Release::NotHeld) => {
                clear_held();
                println!("berthctl: the reboot lock was not held");
                return Ok(0);
            }
            Ok(Release::HeldBy(h)) => {
                // Not ours in etcd: a record saying otherwise is stale.
                clear_held();
                eprintln!(
                    "berthctl: lock: the reboot lock is held by {h}, not by {}",
                    lock.holder
                );
                return Ok(1);
            }
            Err(e) if !wait || start.elapsed() > RELEASE_PATIENCE => return Err(e),
            Err(e) => {
                if !said {
                    println!("berthctl: releasing the reboot lock: etcd does not answer yet ({e}); trying again");
                    said = true;
                }
                std::thread::sleep(RETRY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command, Stdio};

    struct Etcd(Child, std::path::PathBuf);
    impl Drop for Etcd {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            let _ = fs::remove_dir_all(&self.1);
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap()
    }

    /// A real etcd (Debian's etcd-server) on two free loopback ports, its data in a fresh
    /// directory; `None` (a skip) only outside CI.
    fn etcd() -> Option<(Etcd, String)> {
        let have = Command::new("etcd")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !have {
            assert!(
                std::env::var_os("CI").is_none(),
                "etcd (Debian etcd-server) is missing: ci/install-deps installs it"
            );
            eprintln!("skipping: no etcd (apt-get install etcd-server)");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("berth-lock-etcd-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .arg("--data-dir")
            .arg(&dir)
            .args(["--name", "lock-test", "--listen-client-urls", &url])
            .args(["--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("lock-test={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let e = Etcd(child, dir);
        let start = Instant::now();
        while http::get_text(&format!("{url}/health"), 1024).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "etcd did not answer /health within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some((e, url))
    }

    #[test]
    fn one_holder_at_a_time_against_a_real_etcd() {
        let Some((_etcd, url)) = etcd() else { return };
        let a = Lock::new(&url, "t-1").unwrap();
        let b = Lock::new(&url, "t-2").unwrap();
        assert_eq!(a.holder().unwrap(), None);
        assert_eq!(a.take().unwrap(), None, "free: t-1 takes it");
        assert_eq!(b.take().unwrap().as_deref(), Some("t-1"), "t-2 must wait");
        assert_eq!(a.take().unwrap(), None, "t-1 holds it already");
        assert_eq!(b.release().unwrap(), Release::HeldBy("t-1".into()));
        assert_eq!(b.holder().unwrap().as_deref(), Some("t-1"));
        // A history key is per millisecond and holder: a take and a release by one holder in
        // the same millisecond (only a test is that quick) would share one.
        let tick = || std::thread::sleep(Duration::from_millis(2));
        tick();
        assert_eq!(a.release().unwrap(), Release::Done);
        assert_eq!(a.release().unwrap(), Release::NotHeld);
        assert_eq!(b.take().unwrap(), None, "free again: t-2 takes it");
        tick();
        assert_eq!(b.release().unwrap(), Release::Done);
        // The history, in creation order: taken, released by t-1, then by t-2.
        let range = format!(
            "{{\"key\": \"{}\", \"range_end\": \"{}\", \"sort_target\": \"CREATE\", \"sort_order\": \"ASCEND\"}}",
            proto::base64(proto::HISTORY_PREFIX.as_bytes()),
            proto::base64(b"berth/reboot-history0")
        );
        let text = a.call("/v3/kv/range", &range).unwrap();
        let n = berth_contract::json::parse(&text).unwrap();
        let berth_contract::json::Value::Object(m) = n.value else {
            panic!("{text}")
        };
        let kvs = &m.iter().find(|(k, _)| k == "kvs").expect(&text).1;
        let berth_contract::json::Value::Array(kvs) = &kvs.value else {
            panic!("{text}")
        };
        let mut got = Vec::new();
        for kv in kvs {
            let berth_contract::json::Value::Object(f) = &kv.value else {
                panic!("{text}")
            };
            let s = |name: &str| match &f.iter().find(|(k, _)| k == name).unwrap().1.value {
                berth_contract::json::Value::Str(s) => {
                    String::from_utf8(proto::unbase64(s).unwrap()).unwrap()
                }
                _ => panic!("{text}"),
            };
            let key = s("key");
            let (_, who) = key
                .strip_prefix(proto::HISTORY_PREFIX)
                .and_then(|r| r.split_once('-'))
                .expect(&key);
            got.push(format!("{who}:{}", s("value")));
        }
        assert_eq!(
            got,
            ["t-1:taken", "t-1:released", "t-2:taken", "t-2:released"]
        );
        // A gateway that is not there: an error naming the request.
        let gone = Lock::new(&format!("http://127.0.0.1:{}", free_port()), "t-1").unwrap();
        let e = gone.take().unwrap_err();
        assert!(e.0.contains("connecting to http://127.0.0.1:"), "{e}");
    }
}
