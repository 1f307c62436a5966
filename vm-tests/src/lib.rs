//! The vm-tests harness: build a berth image once, boot it in QEMU (TCG here), and wait for what
//! the guest prints on its serial console.
//!
//! A [`Guest`] owns one QEMU process and its console log. Every wait is bounded; dropping a
//! guest kills QEMU; a failing test keeps the console log under `target/vm-test-logs/` and
//! prints where it is.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth::run::qemu::{Boot, VmConfig};
use berth::util::printer::{Mode, Printer};

/// Generous bounds for TCG on 2 cores: direct boot to ready is ~10-30 s, UEFI adds ~15-30 s.
pub const READY_DIRECT: Duration = Duration::from_secs(180);
pub const READY_UEFI: Duration = Duration::from_secs(300);
pub const SHUTDOWN: Duration = Duration::from_secs(90);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
}

/// A built image: its output directory and parsed manifest.json.
pub struct Image {
    pub dir: PathBuf,
    pub manifest: berth::artifacts::BuildManifest,
}

impl Image {
    pub fn disk(&self) -> PathBuf {
        self.dir.join("disk.raw")
    }

    /// The direct-boot configuration of slot A, with extra kernel arguments.
    pub fn direct(&self, append: &str) -> Result<Boot> {
        berth::run::Target {
            disk: self.disk(),
            dir: Some(self.dir.clone()),
        }
        .direct_boot(Some(append))
    }

    /// A private, writable copy of the disk (sparse), for tests that change it.
    pub fn disk_copy(&self, dir: &Path) -> Result<PathBuf> {
        let to = dir.join("disk.raw");
        let st = Command::new("cp")
            .args(["--sparse=always"])
            .arg(self.disk())
            .arg(&to)
            .status()?;
        if !st.success() {
            bail!("copying the disk image failed");
        }
        Ok(to)
    }
}

/// Builds `profiles/test.toml` once per test process, in a scratch copy of profiles/ and
/// overlays/ (so its lock file stays out of the repository), with a package cache shared by
/// test runs under the target directory.
pub fn test_image() -> &'static Image {
    static IMG: OnceLock<Image> = OnceLock::new();
    IMG.get_or_init(|| {
        build_test_image().unwrap_or_else(|e| panic!("building the test image: {e:#}"))
    })
}

fn build_test_image() -> Result<Image> {
    let root = target_dir().join("vm-tests");
    let ws = root.join("ws");
    let _ = fs::remove_dir_all(&ws);
    fs::create_dir_all(&ws)?;
    for d in ["profiles", "overlays"] {
        let st = Command::new("cp")
            .arg("-r")
            .arg(repo().join(d))
            .arg(ws.join(d))
            .status()?;
        if !st.success() {
            bail!("copying {d} to {}", ws.display());
        }
    }
    for e in fs::read_dir(ws.join("profiles"))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "lock") {
            fs::remove_file(p)?;
        }
    }
    let out = root.join("out");
    let printer = Printer::new(Mode::Quiet);
    berth::build::build(
        &berth::build::BuildOptions {
            profile: ws.join("profiles/test.toml"),
            out: Some(out.clone()),
            cache_dir: root.join("cache"),
            init: None,
            no_cache: false,
            formats: None,
        },
        &printer,
    )?;
    let manifest = berth::artifacts::BuildManifest::read(&out)?;
    Ok(Image { dir: out, manifest })
}

/// Guests boot one at a time: on a 2-core host, two TCG guests (or one with 2 vCPUs) starve each
/// other's vCPU threads, and a guest spinning on a lock held by a descheduled vCPU soft-locks
/// (seen here: runc stuck for minutes). One guest with one vCPU at a time is slow but steady.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// One running QEMU guest.
pub struct Guest {
    _turn: std::sync::MutexGuard<'static, ()>,
    name: String,
    child: Child,
    log: PathBuf,
    qmp: PathBuf,
    _work: tempfile::TempDir,
    exited: Option<ExitStatus>,
}

impl Guest {
    /// Boots `cfg` (its console goes to a log file; the guest never reboots by itself).
    pub fn start(name: &str, mut cfg: VmConfig) -> Result<Guest> {
        // A test that panicked while holding the lock must not stop the others.
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        if cfg.accel == berth::run::qemu::Accel::Tcg {
            cfg.cpus = 1;
        }
        let work = tempfile::tempdir()?;
        let log = work.path().join("console.log");
        cfg.console_file = Some(log.clone());
        cfg.no_reboot = true;
        let qmp = work.path().join("qmp.sock");
        cfg.qmp = Some(qmp.clone());
        let mut cmd = berth::run::qemu::command(&cfg, work.path())?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(fs::File::create(
                work.path().join("qemu.stderr"),
            )?));
        let child = cmd.spawn().context("starting QEMU")?;
        Ok(Guest {
            _turn: turn,
            name: name.to_string(),
            child,
            log,
            qmp,
            _work: work,
            exited: None,
        })
    }

    /// Sends one QMP command (e.g. `system_powerdown`) and returns QEMU's reply line.
    pub fn qmp(&self, command: &str) -> Result<String> {
        use std::io::{BufRead, BufReader, Write};
        let s = std::os::unix::net::UnixStream::connect(&self.qmp)
            .with_context(|| format!("connecting to QMP at {}", self.qmp.display()))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut r = BufReader::new(s.try_clone()?);
        let mut w = s;
        let mut line = String::new();
        r.read_line(&mut line).context("reading the QMP greeting")?;
        for cmd in ["qmp_capabilities", command] {
            writeln!(w, "{{\"execute\": \"{cmd}\"}}")?;
            loop {
                line.clear();
                r.read_line(&mut line)
                    .with_context(|| format!("reading QMP's reply to {cmd}"))?;
                // Events may come first; the reply has "return" or "error".
                if line.contains("\"return\"") || line.contains("\"error\"") {
                    break;
                }
                if line.is_empty() {
                    bail!("QMP closed the connection after {cmd}");
                }
            }
            if line.contains("\"error\"") {
                bail!("QMP {cmd}: {line}");
            }
        }
        Ok(line)
    }

    pub fn console(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn tail(&self) -> String {
        let c = self.console();
        let lines: Vec<&str> = c.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Waits until a console line contains `marker`; returns that line. Fails if QEMU exits
    /// first or the time runs out, with the console's tail in the error.
    pub fn wait_for(&mut self, marker: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.console().lines().find(|l| l.contains(marker)) {
                return Ok(line.to_string());
            }
            if self.exited.is_none() {
                self.exited = self.child.try_wait()?;
            }
            if let Some(st) = self.exited {
                let stderr =
                    fs::read_to_string(self._work.path().join("qemu.stderr")).unwrap_or_default();
                bail!(
                    "{}: QEMU exited ({st}) before {marker:?} appeared; QEMU said: {}; console tail:\n{}",
                    self.name,
                    stderr.trim(),
                    self.tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: no {marker:?} on the console within {timeout:?}; console tail:\n{}",
                    self.name,
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits (bounded) for QEMU to exit, as it does when the guest powers off.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.exited.or(self.child.try_wait()?) {
                self.exited = Some(st);
                return Ok(st);
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: guest did not power off within {timeout:?}; console tail:\n{}",
                    self.name,
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let dir = target_dir().join("vm-test-logs");
            let _ = fs::create_dir_all(&dir);
            let keep = dir.join(format!("{}.log", self.name));
            if fs::copy(&self.log, &keep).is_ok() {
                eprintln!("console log of {} kept at {}", self.name, keep.display());
            }
        }
    }
}
