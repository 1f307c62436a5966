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

/// Builds the vm-tests' image (`profiles/test.toml` plus a daemon from an OCI archive made
/// here, [`VM_TEST_PROFILE`]) once per test process.
pub fn test_image() -> &'static Image {
    static IMG: OnceLock<Image> = OnceLock::new();
    IMG.get_or_init(|| {
        build_profile("vm-test.toml", None)
            .unwrap_or_else(|e| panic!("building the test image: {e:#}"))
    })
}

/// A scratch copy of profiles/, overlays/ and kernel-config/ (so lock files stay out of the repository), made
/// once per test process, with the vm-tests' own profile and its OCI archive added.
fn workspace() -> Result<&'static Path> {
    static WS: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    let ws = WS.get_or_init(|| make_workspace().map_err(|e| format!("{e:#}")));
    match ws {
        Ok(p) => Ok(p),
        Err(e) => bail!("preparing the test workspace: {e}"),
    }
}

fn make_workspace() -> Result<PathBuf> {
    let ws = target_dir().join("vm-tests").join("ws");
    let _ = fs::remove_dir_all(&ws);
    fs::create_dir_all(&ws)?;
    for d in ["profiles", "overlays", "kernel-config"] {
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
    // The docker-save format, made with tar and sha256sum, not with berth's own OCI writer.
    busybox_archive(&ws.join("profiles"), "web.tar")?;
    fs::write(ws.join("profiles/vm-test.toml"), VM_TEST_PROFILE)?;
    // A fixed release key for the tests (fixed, so cached builds stay valid between runs).
    fs::write(ws.join("profiles/release.key"), TEST_SECRET_KEY)?;
    let key = berth::update::read_secret(&ws.join("profiles/release.key"))?;
    fs::write(
        ws.join("profiles/release.pub"),
        berth::update::public_line(&key.verifying_key()),
    )?;
    fs::write(
        ws.join("profiles/vm-test-v2.toml"),
        "schema = 1\nextends = \"vm-test.toml\"\n\n[image]\nversion = \"0.2.0\"\n",
    )?;
    // 0.1.0 with one package more (in the hello container's image), for the delta figure.
    fs::write(
        ws.join("profiles/vm-test-pkg.toml"),
        "schema = 1\nextends = \"vm-test.toml\"\n\n[image]\nversion = \"0.1.1\"\n\n\
         [[containers]]\nname = \"hello\"\npackages = [\"busybox-static\", \"hello\"]\n\
         command = [\"/bin/busybox\", \"echo\", \"berth-test-marker:hello-from-a-container\"]\n\
         oneshot = true\n",
    )?;
    // The release after 0.2.0, for the second update (B to A).
    fs::write(
        ws.join("profiles/vm-test-v3.toml"),
        "schema = 1\nextends = \"vm-test.toml\"\n\n[image]\nversion = \"0.5.0\"\n",
    )?;
    // A release whose new slot never becomes healthy: a required oneshot that fails.
    fs::write(
        ws.join("profiles/vm-test-broken.toml"),
        "schema = 1\nextends = \"vm-test.toml\"\n\n[image]\nversion = \"0.3.0\"\n\n\
         [[containers]]\nname = \"broken\"\npackages = [\"busybox-static\"]\n\
         command = [\"/bin/busybox\", \"false\"]\noneshot = true\n",
    )?;
    // A release whose new slot hangs before ready: a required daemon whose readiness never
    // comes, with a wait longer than the ready-deadline; one try, a short watchdog.
    fs::write(
        ws.join("profiles/vm-test-hang.toml"),
        "schema = 1\nextends = \"vm-test.toml\"\n\n[image]\nversion = \"0.4.0\"\n\n\
         [boot]\ntries = 1\nready-deadline = 60\nwatchdog = 30\n\n\
         [[containers]]\nname = \"stuck\"\npackages = [\"busybox-static\"]\n\
         command = [\"/bin/busybox\", \"sleep\", \"100000\"]\n\
         ready = { tcp = 9 }\nready-timeout = 3600\n",
    )?;
    // The cluster, signed releases: cluster.toml with the release key; 0.2.0 for the rolling
    // update; and a release whose new slot fails health (one try), to stop a rollout.
    fs::write(
        ws.join("profiles/cluster-test.toml"),
        "schema = 1\nextends = \"cluster.toml\"\n\n[update]\npublic-key = \"release.pub\"\n",
    )?;
    fs::write(
        ws.join("profiles/cluster-v2.toml"),
        "schema = 1\nextends = \"cluster-test.toml\"\n\n[image]\nversion = \"0.2.0\"\n",
    )?;
    // The release the nodes fetch from a channel by themselves (after 0.3.0 failed).
    fs::write(
        ws.join("profiles/cluster-v3.toml"),
        "schema = 1\nextends = \"cluster-test.toml\"\n\n[image]\nversion = \"0.4.0\"\n",
    )?;
    fs::write(
        ws.join("profiles/cluster-broken.toml"),
        "schema = 1\nextends = \"cluster-test.toml\"\n\n[image]\nversion = \"0.3.0\"\n\n\
         [boot]\ntries = 1\n\n\
         [[containers]]\nname = \"broken\"\npackages = [\"busybox-static\"]\n\
         command = [\"/bin/busybox\", \"false\"]\noneshot = true\n",
    )?;
    Ok(ws)
}

/// Builds `profiles/<profile>` of the test workspace into `target/vm-tests/out-<name>`, with a
/// package cache shared by test runs under the target directory.
/// `formats`: the disk formats to write besides disk.raw (`None`: the profile's).
pub fn build_profile(profile: &str, formats: Option<Vec<berth::formats::Format>>) -> Result<Image> {
    build_profile_delta(profile, formats, None)
}

/// [`build_profile`], also writing update-delta.bundle against the build in `delta_from`.
pub fn build_profile_delta(
    profile: &str,
    formats: Option<Vec<berth::formats::Format>>,
    delta_from: Option<PathBuf>,
) -> Result<Image> {
    // Tests of one binary run in parallel and several build the same profile (both update
    // tests build vm-test-v2): two builds into one output directory at once fail on its lock,
    // and a rebuild would swap the directory under a test reading it. So builds take turns,
    // and a build this process already made with the same arguments is not made again.
    static BUILDS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut made = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let ws = workspace()?;
    let root = target_dir().join("vm-tests");
    let out = root.join(format!("out-{}", profile.trim_end_matches(".toml")));
    let this = format!("{profile} {formats:?} {delta_from:?}");
    if made.contains(&this) {
        let manifest = berth::artifacts::BuildManifest::read(&out)?;
        return Ok(Image { dir: out, manifest });
    }
    // Another set of arguments for this profile rebuilds its directory: forget the old one.
    made.retain(|m| m.split(' ').next() != Some(profile));
    share_kernels(&root.join("cache"))?;
    let printer = Printer::new(Mode::Quiet);
    berth::build::build(
        &berth::build::BuildOptions {
            profile: ws.join("profiles").join(profile),
            out: Some(out.clone()),
            cache_dir: root.join("cache"),
            init: None,
            no_cache: false,
            formats,
            signing_key: Some(ws.join("profiles/release.key")),
            delta_from,
        },
        &printer,
    )?;
    made.push(this);
    let manifest = berth::artifacts::BuildManifest::read(&out)?;
    Ok(Image { dir: out, manifest })
}

/// The vm-tests' cache keeps its kernels built from source in the user's berth cache
/// (`$XDG_CACHE_HOME/berth/kernels`), not under the target directory: a kernel takes minutes
/// to compile, and CI's clean checkouts on one machine then compile it once, not every run.
fn share_kernels(cache: &Path) -> Result<()> {
    let link = cache.join("kernels");
    if fs::symlink_metadata(&link).is_ok() {
        return Ok(());
    }
    let shared = berth::cache::default_dir().join("kernels");
    fs::create_dir_all(&shared).with_context(|| format!("creating {}", shared.display()))?;
    fs::create_dir_all(cache)?;
    std::os::unix::fs::symlink(&shared, &link)
        .with_context(|| format!("linking {} to {}", link.display(), shared.display()))
}

/// Builds the source kernel of `profiles/<profile>` (already built once by [`build_profile`],
/// so its lock exists) again, with `kernels_cache` as the cache: another build directory,
/// nothing to reuse. Packages come from the vm-tests' shared cache.
pub fn build_kernel_in(profile: &str, kernels_cache: &Path) -> Result<berth::kernel::Built> {
    let ws = workspace()?;
    let printer = Printer::new(Mode::Quiet);
    let profile = berth::profile::load(&ws.join("profiles").join(profile))?;
    let src = profile
        .kernel
        .source
        .clone()
        .context("the profile builds no kernel from source")?;
    let shared = target_dir().join("vm-tests").join("cache");
    let lock = berth::fetch::lock_for(&profile, &shared, &printer)?;
    let packages = berth::fetch::packages(&profile, &lock, &shared, &printer)?;
    let locked = packages
        .kernel_source
        .as_ref()
        .context("the lock has no kernel-source package")?;
    let fetch = || berth::fetch::fetch_one(&profile, locked, &shared, &printer);
    berth::kernel::build(&profile, &src, locked, &fetch, kernels_cache, &printer)
}

/// The vm-tests' release key: fixed arbitrary bytes, for tests and nothing else.
const TEST_SECRET_KEY: &str =
    "berth-ed25519-secret 1f0e3c8a5d6b7a49e2c4f1b0d3a5c7e9f1a3b5c7d9e1f3a5b7c9d1e3f5a7b9c1\n";

/// The workspace's release key files.
pub fn release_key() -> Result<(PathBuf, PathBuf)> {
    let ws = workspace()?;
    Ok((
        ws.join("profiles/release.key"),
        ws.join("profiles/release.pub"),
    ))
}

/// Writes to `dest` a copy of the update bundle `src` whose header `edit` changed, signed by
/// `key`: apart from what the edit changed, a bundle a machine would take (same payloads, chunk
/// hashes and a good signature over the new header), so a refusal can only be for that change.
pub fn resigned_bundle(
    src: &Path,
    dest: &Path,
    edit: impl FnOnce(&mut berth_contract::bundle::Header),
    key: &ed25519_dalek::SigningKey,
) -> Result<()> {
    use berth_contract::bundle;
    use ed25519_dalek::Signer;
    let bytes = fs::read(src).with_context(|| format!("reading {}", src.display()))?;
    let u32_at = |at: usize| -> Result<usize> {
        let b = bytes
            .get(at..at + 4)
            .with_context(|| format!("{}: truncated before byte {at}", src.display()))?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let hlen = u32_at(8)?;
    let hb = bytes
        .get(12..12 + hlen)
        .with_context(|| format!("{}: truncated header", src.display()))?;
    let mut header = bundle::Header::decode(hb)
        .map_err(|e| anyhow::anyhow!("{}: the header: {e}", src.display()))?;
    let data = 12 + hlen + 4 + u32_at(12 + hlen)?;
    edit(&mut header);
    let prefix = bundle::signed_prefix(&header.encode());
    let mut out = prefix.clone();
    out.extend_from_slice(&(bundle::SIGNATURE_LEN as u32).to_le_bytes());
    out.extend_from_slice(&key.sign(&prefix).to_bytes());
    out.extend_from_slice(key.verifying_key().as_bytes());
    out.extend_from_slice(&bytes[data..]);
    fs::write(dest, out).with_context(|| format!("writing {}", dest.display()))
}

/// test.toml plus `web`: busybox httpd from a user-made OCI archive, with an environment
/// variable holding spaces, a read-only mount of /var/lib/web, and an HTTP readiness check.
const VM_TEST_PROFILE: &str = r#"schema = 1
extends = "test.toml"

[[containers]]
name = "web"
archive = "web.tar"
command = ["/bin/busybox", "httpd", "-f", "-vv", "-p", "8080", "-h", "/www"]
env = { GREETING = "hello  world" }
mounts = [{ source = "/var/lib/web", target = "/www/data", read-only = true }]
ready = { http = "http://127.0.0.1:8080/" }

# A file no boot reads: health.rs corrupts its block, which only a read after ready touches.
[[files]]
path = "/usr/share/berth-test/unread"
content = "berth vm-tests: nothing reads this file at boot\n"

# A boot counts as good after 20 s of ready (default 120): the power-cut test cuts soon after.
[boot]
stable-after = 20

[update]
public-key = "release.pub"
"#;

/// Writes `dir/name`: a docker-save archive (manifest.json, config, one layer) of a tree with
/// the host's static busybox as /bin/busybox and /www/index.html.
pub fn busybox_archive(dir: &Path, name: &str) -> Result<PathBuf> {
    let busybox = which("busybox").context("busybox (Debian busybox-static) is needed to make the test's OCI archive: run ci/install-deps")?;
    let work = tempfile::tempdir()?;
    let tree = work.path().join("tree");
    for d in ["bin", "www/data", "tmp"] {
        fs::create_dir_all(tree.join(d))?;
    }
    fs::copy(&busybox, tree.join("bin/busybox"))?;
    std::os::unix::fs::symlink("busybox", tree.join("bin/sh"))?;
    fs::write(tree.join("www/index.html"), "berth web\n")?;
    let layer_dir = work.path().join("out/layer");
    fs::create_dir_all(&layer_dir)?;
    let layer = layer_dir.join("layer.tar");
    run_ok(
        Command::new("tar")
            .args([
                "--sort=name",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "--mtime=@0",
                "-C",
            ])
            .arg(&tree)
            .arg("-cf")
            .arg(&layer)
            .arg("."),
    )?;
    let sum = String::from_utf8(run_ok(Command::new("sha256sum").arg(&layer))?.stdout)?;
    let hex = sum
        .split_whitespace()
        .next()
        .context("sha256sum printed nothing")?;
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Env":["PATH=/bin"],"Cmd":["/bin/busybox","httpd","-f"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{hex}"]}}}}"#
    );
    fs::write(work.path().join("out/config.json"), config)?;
    fs::write(
        work.path().join("out/manifest.json"),
        r#"[{"Config":"config.json","RepoTags":["web:test"],"Layers":["layer/layer.tar"]}]"#,
    )?;
    let archive = dir.join(name);
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(work.path().join("out"))
            .arg("-cf")
            .arg(&archive)
            .args(["manifest.json", "config.json", "layer/layer.tar"]),
    )?;
    Ok(archive)
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

fn run_ok(cmd: &mut Command) -> Result<std::process::Output> {
    let o = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !o.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(o)
}

/// An SSH key pair made for a test: the private key's path and the public key line.
pub struct SshKey {
    pub private: PathBuf,
    pub public: String,
}

pub fn ssh_key(dir: &Path) -> Result<SshKey> {
    let private = dir.join("id_ed25519");
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "berth-vm-test", "-f"])
            .arg(&private),
    )?;
    let public = fs::read_to_string(private.with_extension("pub"))?
        .trim()
        .to_string();
    Ok(SshKey { private, public })
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for a forward to the guest).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs `cmd` to its end or kills it after `timeout`; returns (exit code, stdout + stderr).
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<(i32, String)> {
    cmd.stdin(Stdio::null());
    run_bounded_with_stdin(cmd, timeout)
}

/// [`run_bounded`] with whatever stdin `cmd` was given.
pub fn run_bounded_with_stdin(cmd: &mut Command, timeout: Duration) -> Result<(i32, String)> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    // Read both pipes on the side, so a chatty command cannot block on a full pipe.
    let mut out = child.stdout.take().context("stdout")?;
    let mut err = child.stderr.take().context("stderr")?;
    let t_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut b);
        b
    });
    let t_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut b);
        b
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut text = String::from_utf8_lossy(&t_out.join().unwrap_or_default()).into_owned();
    text.push_str(&String::from_utf8_lossy(&t_err.join().unwrap_or_default()));
    Ok((status.code().unwrap_or(-1), text))
}

/// Like [`ssh`], with `input` (a file) as the command's stdin.
pub fn ssh_with_input(
    port: u16,
    user: &str,
    key: &SshKey,
    cmd: &str,
    input: &Path,
    timeout: Duration,
) -> Result<(i32, String)> {
    let mut c = ssh_command(port, user, key, cmd);
    c.stdin(Stdio::from(
        fs::File::open(input).with_context(|| format!("opening {}", input.display()))?,
    ));
    run_bounded_with_stdin(&mut c, timeout)
}

/// A QEMU `guestfwd` command that relays each guest connection (on its stdin/stdout) to
/// 127.0.0.1:`port` on the host; the script is written into `dir`.
pub fn loopback_relay(dir: &Path, port: u16) -> Result<String> {
    let relay = dir.join("relay.py");
    fs::write(
        &relay,
        "import os, socket, sys, threading\n\
         s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n\
         def up():\n    while True:\n        b = os.read(0, 65536)\n        if not b:\n            break\n        s.sendall(b)\n\
         threading.Thread(target=up, daemon=True).start()\n\
         while True:\n    b = s.recv(65536)\n    if not b:\n        break\n    os.write(1, b)\n",
    )?;
    Ok(format!("python3 {} {port}", relay.display()))
}

/// Starts `cmd` in the guest through SSH in the background, `input` as its stdin, its output
/// (stdout and stderr) into the file `out`; the caller waits for or kills the child.
pub fn ssh_spawn(
    port: u16,
    user: &str,
    key: &SshKey,
    cmd: &str,
    input: &Path,
    out: &Path,
) -> Result<Child> {
    let mut c = ssh_command(port, user, key, cmd);
    let o = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    c.stdin(Stdio::from(
        fs::File::open(input).with_context(|| format!("opening {}", input.display()))?,
    ))
    .stdout(Stdio::from(o.try_clone()?))
    .stderr(Stdio::from(o));
    c.spawn().context("starting ssh")
}

fn ssh_command(port: u16, user: &str, key: &SshKey, cmd: &str) -> Command {
    let mut c = Command::new("ssh");
    c.arg("-i")
        .arg(&key.private)
        .args(["-p", &port.to_string()])
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=10",
        ])
        .arg(format!("{user}@127.0.0.1"))
        .arg(cmd);
    c
}

/// Runs `cmd` in the guest through SSH to 127.0.0.1:`port` as `user` (bounded: 10 s to
/// connect, `timeout` in all); returns (exit code, stdout + stderr).
pub fn ssh(
    port: u16,
    user: &str,
    key: &SshKey,
    cmd: &str,
    timeout: Duration,
) -> Result<(i32, String)> {
    let mut c = ssh_command(port, user, key, cmd);
    run_bounded(&mut c, timeout)
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

    /// Like [`Guest::wait_for`], for the `n`-th line (1-based) containing `marker`.
    pub fn wait_for_nth(&mut self, marker: &str, n: usize, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self
                .console()
                .lines()
                .filter(|l| l.contains(marker))
                .nth(n - 1)
            {
                return Ok(line.to_string());
            }
            if Instant::now() > deadline || self.child.try_wait()?.is_some() {
                bail!(
                    "{}: no {n}th {marker:?} on the console within {timeout:?}; console tail:\n{}",
                    self.name,
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Pulls the plug: SIGKILL to QEMU (what the guest had not written to its disk is lost).
    pub fn power_cut(&mut self) -> Result<()> {
        if self.exited.is_none() {
            let _ = self.child.kill();
            self.exited = Some(self.child.wait()?);
        }
        Ok(())
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
