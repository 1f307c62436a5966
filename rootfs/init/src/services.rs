//! containerd and the container services: the one door to subprocesses (`command`), the
//! supervisor that restarts long-running children with backoff, image import, oneshots.
//!
//! PID 1 reaps every child with waitpid(-1) in its main loop, so long-running children are
//! tracked by pid here, never as `std::process::Child` (whose status the reaper would steal).
//! Short commands run with `Command::status()/output()`, which wait for their own pid: the
//! init is single-threaded, so the reaper never runs meanwhile.

use std::fs::{self, OpenOptions};
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::collections::BTreeSet;

use berth_contract::service::Restart;
use berth_contract::Slot;

use crate::{fail, say, sys, warn, Ctx, Result};

const CONTAINERD: &str = "/usr/bin/containerd";
pub const CTR: &str = "/usr/bin/ctr";
const SHIM: &str = "/usr/bin/containerd-shim-runc-v2";
const RUNC: &str = "/usr/sbin/runc";
const SOCKET: &str = "/run/containerd/containerd.sock";
pub const NAMESPACE: &str = "berth";
/// containerd under TCG takes several seconds to start; 60 s is far beyond a healthy start.
const CONTAINERD_WAIT: Duration = Duration::from_secs(60);
/// How long ctr waits for the socket to appear: it retries every 10 ms, so a ctr started
/// alongside containerd connects the moment containerd serves.
pub const CONNECT_TIMEOUT: &str = "60s";
/// Image imports (content, then unpacking) end within this or are killed and reported.
const IMPORT_LIMIT: Duration = Duration::from_secs(600);
/// How often a long wait says what it is waiting for.
const NOTE_EVERY: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// PID 1 starts with no PATH; containerd finds runc and its shim through this one.
const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Every subprocess starts here: clean environment, stdin from /dev/null.
pub fn command(prog: &str, args: &[&str]) -> Command {
    let mut c = Command::new(prog);
    c.args(args)
        .env_clear()
        .env("PATH", PATH)
        .stdin(Stdio::null());
    c
}

pub fn ctr(args: &[&str]) -> Command {
    let mut v = vec!["-n", NAMESPACE, "--connect-timeout", CONNECT_TIMEOUT];
    v.extend_from_slice(args);
    command(CTR, &v)
}

/// Where a child's stdout and stderr go.
#[derive(Clone, Debug)]
pub enum Log {
    /// Appended to this file.
    File(String),
    /// Through a pipe to `/var/log/berth/<name>.log` (rotated), and with `tee` to the console.
    Service { name: String, tee: bool },
}

/// A long-running child, restarted with backoff when it exits (as its policy says).
struct Proc {
    label: String,
    prog: String,
    args: Vec<String>,
    log: Log,
    restart: Restart,
    pid: Option<i32>,
    restarts: u32,
    next_start: Option<Instant>,
    last_status: Option<i32>,
}

/// What the supervisor knows of one child, for `berthctl services`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcState {
    pub pid: Option<i32>,
    pub restarts: u32,
    pub last_status: Option<i32>,
    /// Exited and not going to be restarted.
    pub done: bool,
}

#[derive(Default)]
pub struct Supervisor {
    procs: Vec<Proc>,
    stopping: bool,
}

/// 1 s, 2 s, 4 s ... capped at 30 s.
pub fn backoff(restarts: u32) -> Duration {
    Duration::from_secs(1u64 << restarts.min(5)).min(MAX_BACKOFF)
}

pub fn describe(status: i32) -> String {
    use std::os::unix::process::ExitStatusExt;
    let s = std::process::ExitStatus::from_raw(status);
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("status={c}"),
        (_, Some(sig)) => format!("signal={sig}"),
        _ => format!("wait status {status:#x}"),
    }
}

impl Supervisor {
    /// Adds and starts a child.
    pub fn add(
        &mut self,
        label: &str,
        prog: &str,
        args: Vec<String>,
        log: Log,
        restart: Restart,
    ) -> Result<()> {
        self.procs.push(Proc {
            label: label.into(),
            prog: prog.into(),
            args,
            log,
            restart,
            pid: None,
            restarts: 0,
            next_start: None,
            last_status: None,
        });
        let i = self.procs.len() - 1;
        self.start(i)
    }

    /// The state of the child added as `label`.
    pub fn state(&self, label: &str) -> Option<ProcState> {
        self.procs
            .iter()
            .find(|p| p.label == label)
            .map(|p| ProcState {
                pid: p.pid,
                restarts: p.restarts,
                last_status: p.last_status,
                done: p.pid.is_none() && p.next_start.is_none(),
            })
    }

    fn start(&mut self, i: usize) -> Result<()> {
        let p = &mut self.procs[i];
        let args: Vec<&str> = p.args.iter().map(String::as_str).collect();
        let mut c = command(&p.prog, &args);
        match &p.log {
            Log::File(log) => {
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .ctx(|| format!("opening {log}"))?;
                let f2 = f
                    .try_clone()
                    .ctx(|| format!("duplicating the fd of {log}"))?;
                c.stdout(f).stderr(f2);
            }
            Log::Service { name, tee } => {
                let (r, w) = std::io::pipe().ctx(|| format!("pipe for the log of {name}"))?;
                let w2 = w.try_clone().ctx(|| "duplicating a pipe fd")?;
                c.stdout(w).stderr(w2);
                crate::logs::spawn_writer(name, r, *tee);
            }
        }
        let child = c
            .spawn()
            .ctx(|| format!("starting {} ({})", p.label, p.prog))?;
        // `c` (and with it the pipe's write ends) is dropped here: the log writer sees EOF
        // when the child's copies close.
        p.pid = Some(child.id() as i32);
        p.next_start = None;
        Ok(())
    }

    /// A child was reaped: if it is one of ours, schedule its restart (as its policy says).
    pub fn exited(&mut self, pid: i32, status: i32) {
        let stopping = self.stopping;
        let Some(p) = self.procs.iter_mut().find(|p| p.pid == Some(pid)) else {
            return;
        };
        p.pid = None;
        p.last_status = Some(status);
        if stopping {
            return;
        }
        let again = match p.restart {
            Restart::Always => true,
            Restart::OnFailure => status != 0,
            Restart::Never => false,
        };
        if !again {
            warn!(
                "{} exited {}; not restarted (restart policy)",
                p.label,
                describe(status)
            );
            return;
        }
        let delay = backoff(p.restarts);
        p.restarts += 1;
        p.next_start = Some(Instant::now() + delay);
        warn!(
            "{} exited {}; restarting in {}s",
            p.label,
            describe(status),
            delay.as_secs()
        );
    }

    /// Restarts whatever is due.
    pub fn tick(&mut self) {
        for i in 0..self.procs.len() {
            if self.procs[i]
                .next_start
                .is_some_and(|t| t <= Instant::now())
            {
                if let Some(name) = self.procs[i].label.strip_prefix("service ") {
                    // A killed `ctr run --rm` may leave its container behind; a restart would
                    // then fail with "already exists".
                    let _ = ctr(&["containers", "rm", name])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
                if let Err(e) = self.start(i) {
                    warn!("{e}");
                    self.procs[i].next_start = Some(Instant::now() + MAX_BACKOFF);
                }
            }
        }
    }

    /// Reaps exited children (ours restart later, orphans just vanish).
    pub fn reap(&mut self) {
        self.reap_with(|_, _| false);
    }

    /// Like `reap`, but offers each reaped child to `claim` first (true: it was the caller's).
    pub fn reap_with(&mut self, mut claim: impl FnMut(i32, i32) -> bool) {
        while let Ok(Some((pid, status))) = sys::reap_any() {
            if !claim(pid, status) {
                self.exited(pid, status);
            }
        }
    }

    /// Stops everything in reverse start order: SIGTERM, then up to `each` for it to exit.
    pub fn stop_all(&mut self, each: Duration) {
        self.stopping = true;
        for i in (0..self.procs.len()).rev() {
            let Some(pid) = self.procs[i].pid else {
                continue;
            };
            if let Err(e) = sys::kill(pid, sys::SIGTERM) {
                warn!("kill -TERM {pid} ({}): {e}", self.procs[i].label);
            }
            let start = Instant::now();
            while self.procs[i].pid.is_some() && start.elapsed() < each {
                std::thread::sleep(Duration::from_millis(50));
                self.reap();
            }
            if self.procs[i].pid.is_some() {
                warn!(
                    "{} did not stop within {}s",
                    self.procs[i].label,
                    each.as_secs()
                );
            }
        }
    }
}

/// Reads `paths` in a background thread, so that their pages are in the page cache (and past
/// dm-verity's hashing, slow without hardware SHA under TCG) before they are executed. It runs
/// while containerd and the first ctr start, using the CPU their Go start-up leaves idle;
/// benches/boot.sh measured the direct boot to ready at a median 15.5 s with it, 16.7 s without.
pub fn prefetch(paths: &'static [&'static str]) {
    let spawned = std::thread::Builder::new()
        .name("prefetch".into())
        .spawn(move || {
            let mut buf = vec![0u8; 1 << 20];
            for p in paths {
                if let Ok(mut f) = fs::File::open(p) {
                    while matches!(f.read(&mut buf), Ok(n) if n > 0) {}
                }
            }
        });
    if let Err(e) = spawned {
        warn!("starting the prefetch thread: {e}");
    }
}

/// The binaries a boot executes, in the order it needs them.
pub const BINARIES: &[&str] = &[CONTAINERD, CTR, SHIM, RUNC];

/// Starts containerd (supervised, logging to /var/log/containerd.log).
pub fn start_containerd(sup: &mut Supervisor) -> Result<()> {
    sup.add(
        "containerd",
        CONTAINERD,
        vec![],
        Log::File("/var/log/containerd.log".into()),
        Restart::Always,
    )
}

/// A short-lived child waited for by pid while the supervisor goes on reaping the others.
struct Job {
    what: String,
    /// For an archive whose manifest containerd already holds under another name: that name,
    /// which `ctr images tag` gives this version's name too instead of importing again.
    tag_from: Option<String>,
    child: Child,
    status: Option<i32>,
    tries: u32,
    err: String,
}

/// A `ctr images import` that dialled containerd between its bind(2) and listen(2) gets
/// ECONNREFUSED, which ctr does not retry (it retries only a missing socket): started again,
/// this many times at most.
const IMPORT_TRIES: u32 = 5;

fn spawn_import(tar: &str) -> std::io::Result<Child> {
    ctr(&["images", "import", tar])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
}

/// `ctr images tag --force FROM TO`: the new name for a manifest containerd holds (its content
/// and unpacked snapshots are shared, nothing is read or written but the name).
fn spawn_tag(from: &str, to: &str) -> std::io::Result<Child> {
    ctr(&["images", "tag", "--force", from, to])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
}

/// Starts the job for `tar`: a tag when `from` names its manifest already in containerd, else
/// an import.
fn spawn_job(tar: &str, from: Option<&str>, digest: Option<&str>) -> std::io::Result<Child> {
    match (from, digest.and_then(|d| d.split_once(' '))) {
        (Some(from), Some((_, to))) => spawn_tag(from, to),
        _ => spawn_import(tar),
    }
}

/// Imports every `dir/*.tar` (in name order) while containerd starts: each `ctr images import`
/// is started at once and connects as soon as containerd serves, so ctr's own start-up overlaps
/// containerd's. Returns when containerd accepts connections on its socket and every import
/// has ended; fails only when containerd never serves. Import failures are loud warnings: a
/// service whose image is missing fails in turn and says so.
///
/// An archive whose manifest containerd holds under another name (the same image in a new
/// version: `localhost/berth/etcd:0.1.0` becomes `…:0.2.0`) is tagged with the new name instead:
/// an import would read and hash the whole archive again, on every version's first boot.
///
/// Before importing, the images an earlier version of either slot imported and neither slot
/// ships any more are removed (`prune_images`): without that every update leaves its images
/// behind in containerd, and a few updates fill /var (seen: the third version's admin image
/// failed to unpack with ENOSPC on a 256 MiB state partition).
pub fn import_images(sup: &mut Supervisor, dir: &str, slot: Option<Slot>) -> Result<()> {
    let mut tars: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.path().to_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    tars.retain(|p| p.ends_with(".tar"));
    tars.sort();
    let ours: BTreeSet<String> = tars
        .iter()
        .filter_map(|t| manifest_digest(t))
        .filter_map(|d| d.split_once(' ').map(|(_, r)| r.to_string()))
        .collect();
    prune_images(sup, slot.unwrap_or(Slot::A), &ours);
    let mut jobs = Vec::new();
    let mut digests = Vec::new();
    for tar in tars {
        let digest = manifest_digest(&tar);
        if let Some(d) = &digest {
            if already_imported(&tar, d) {
                say!("image {tar} unchanged ({d}); not imported again");
                continue;
            }
        }
        let from = digest.as_deref().and_then(|d| tag_source(&tar, d));
        digests.push((tar.clone(), digest.clone()));
        match spawn_job(&tar, from.as_deref(), digest.as_deref()) {
            Ok(child) => jobs.push(Job {
                what: tar,
                tag_from: from,
                child,
                status: None,
                tries: 1,
                err: String::new(),
            }),
            Err(e) => warn!("running {CTR} images import {tar}: {e}"),
        }
    }

    let start = Instant::now();
    let mut serving = false;
    let mut note = NOTE_EVERY;
    loop {
        sup.reap_with(
            |pid, status| match jobs.iter_mut().find(|j| j.child.id() as i32 == pid) {
                Some(j) => {
                    j.status = Some(status);
                    true
                }
                None => false,
            },
        );
        sup.tick();
        for j in jobs.iter_mut() {
            if !matches!(j.status, Some(st) if st != 0) || !j.err.is_empty() {
                continue;
            }
            let mut err = String::new();
            if let Some(mut e) = j.child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let refused = err.contains("failed to dial") && err.contains("connection refused");
            if !refused && j.tag_from.is_some() {
                // The old name is gone (removed by hand, or pruned): import after all.
                warn!(
                    "ctr images tag {} failed ({}): {}; importing {} instead",
                    j.tag_from.as_deref().unwrap_or(""),
                    describe(j.status.unwrap_or(0)),
                    err.trim(),
                    j.what
                );
                j.tag_from = None;
                match spawn_import(&j.what) {
                    Ok(child) => {
                        j.child = child;
                        j.status = None;
                        j.tries = 1;
                        continue;
                    }
                    Err(e) => err = format!("{err}; importing instead: {e}"),
                }
            } else if refused && j.tries < IMPORT_TRIES {
                std::thread::sleep(Duration::from_millis(200));
                let digest = digests
                    .iter()
                    .find(|(t, _)| *t == j.what)
                    .and_then(|(_, d)| d.as_deref());
                match spawn_job(&j.what, j.tag_from.as_deref(), digest) {
                    Ok(child) => {
                        j.child = child;
                        j.status = None;
                        j.tries += 1;
                        continue;
                    }
                    Err(e) => err = format!("{err}; starting it again: {e}"),
                }
            }
            j.err = if err.trim().is_empty() {
                "(no message)".into()
            } else {
                err
            };
        }
        if !serving && UnixStream::connect(SOCKET).is_ok() {
            serving = true;
            say!(
                "containerd serving {SOCKET} after {:.1}s",
                start.elapsed().as_secs_f64()
            );
        }
        let pending = jobs.iter().filter(|j| j.status.is_none()).count();
        if serving && pending == 0 {
            break;
        }
        let t = start.elapsed();
        if (!serving && t > CONTAINERD_WAIT) || t > IMPORT_LIMIT {
            for j in jobs.iter_mut().filter(|j| j.status.is_none()) {
                let _ = j.child.kill();
                let _ = j.child.wait();
                warn!(
                    "ctr images import {} did not finish within {}s; killed it",
                    j.what,
                    t.as_secs()
                );
            }
            if !serving {
                fail!(
                    "waiting {}s for containerd to accept connections on {SOCKET} (see /var/log/containerd.log)",
                    CONTAINERD_WAIT.as_secs()
                );
            }
            break;
        }
        if t >= note {
            say!(
                "waiting for {pending} image import(s) ({}s so far)",
                t.as_secs()
            );
            note += NOTE_EVERY;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut imported = BTreeSet::new();
    for j in jobs {
        let Some(status) = j.status else { continue };
        let err = j.err;
        if status == 0 {
            match &j.tag_from {
                Some(from) => say!(
                    "image {} unchanged: tagged {from} with this version's name",
                    j.what
                ),
                None => say!("imported {}", j.what),
            }
            if let Some((_, Some(d))) = digests.iter().find(|(t, _)| *t == j.what) {
                if let Some((_, r)) = d.split_once(' ') {
                    imported.insert(r.to_string());
                }
                if let Err(e) = record_import(&j.what, d) {
                    warn!("{e}; the image will be imported again on the next boot");
                }
            }
        } else {
            warn!(
                "ctr images {} {} failed ({}): {}",
                if j.tag_from.is_some() {
                    "tag for"
                } else {
                    "import"
                },
                j.what,
                describe(status),
                err.trim()
            );
        }
    }
    if !imported.is_empty() {
        let mut managed = read_refs(MANAGED);
        managed.extend(imported);
        if let Err(e) = write_refs(MANAGED, &managed) {
            warn!("{e}; images of this version may outlive it");
        }
    }
    Ok(())
}

/// Every image reference berth-init imported and has not removed, one per line.
const MANAGED: &str = "/var/lib/berth/images/managed";

fn slot_record(slot: Slot) -> String {
    format!("{IMPORTED_DIR}/slot-{}", slot.as_str())
}

fn read_refs(path: &str) -> BTreeSet<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

fn write_refs(path: &str, refs: &BTreeSet<String>) -> Result<()> {
    let text: String = refs.iter().map(|r| format!("{r}\n")).collect();
    crate::durable::replace(path, text.as_bytes())
}

/// The images to remove: berth imported them (`managed`, and the last import recorded per
/// archive), and neither this slot's root (`ours`) nor the other slot's last record ships
/// them. Images something else put in containerd are never in `managed`, so never touched;
/// the other slot keeps its images, so a rollback does not import them again.
fn stale(
    managed: &BTreeSet<String>,
    ours: &BTreeSet<String>,
    other: &BTreeSet<String>,
) -> Vec<String> {
    managed
        .iter()
        .filter(|r| !ours.contains(*r) && !other.contains(*r))
        .cloned()
        .collect()
}

/// Records what this slot ships, then removes the stale images (see `stale`) with
/// `ctr images rm --sync`, which returns once containerd's garbage collector has freed their
/// content and snapshots. Costs a ctr start only on the first boot of a new version.
fn prune_images(sup: &mut Supervisor, slot: Slot, ours: &BTreeSet<String>) {
    let other = match slot {
        Slot::A => Slot::B,
        Slot::B => Slot::A,
    };
    if let Err(e) = write_refs(&slot_record(slot), ours) {
        warn!("{e}; images are not pruned this boot");
        return;
    }
    let mut managed = read_refs(MANAGED);
    // Imports before this record existed: the last one of each archive.
    if let Ok(d) = fs::read_dir(IMPORTED_DIR) {
        for e in d.flatten() {
            if e.file_name().to_string_lossy().ends_with(".imported") {
                let text = fs::read_to_string(e.path()).unwrap_or_default();
                if let Some((_, r)) = text.trim().split_once(' ') {
                    managed.insert(r.to_string());
                }
            }
        }
    }
    let gone = stale(&managed, ours, &read_refs(&slot_record(other)));
    if gone.is_empty() {
        return;
    }
    let mut args = vec!["images", "rm", "--sync"];
    args.extend(gone.iter().map(String::as_str));
    let mut child = match ctr(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            warn!("running {CTR} images rm: {e}");
            return;
        }
    };
    // Its few lines of errors fit in the pipe: read once it has exited.
    let status = wait_supervised(sup, &mut child, "ctr images rm", IMPORT_LIMIT);
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    match status {
        Some(0) => say!(
            "removed {} image(s) no slot ships: {}",
            gone.len(),
            gone.join(" ")
        ),
        // ctr goes on past a missing image and fails at the end: gone is gone.
        Some(st) if err.contains("not found") => say!(
            "removed image(s) no slot ships: {} ({}: {})",
            gone.join(" "),
            describe(st),
            err.trim()
        ),
        Some(st) => warn!(
            "ctr images rm {} failed ({}): {}",
            gone.join(" "),
            describe(st),
            err.trim()
        ),
        None => {}
    }
    for r in &gone {
        managed.remove(r);
    }
    if let Err(e) = write_refs(MANAGED, &managed) {
        warn!("{e}");
    }
}

/// Where berth-init notes which manifest it imported from each archive.
const IMPORTED_DIR: &str = "/var/lib/berth/images";
/// containerd's content store (its root is /var/lib/containerd, rootfs/base/etc/containerd).
const CONTENT_BLOBS: &str = "/var/lib/containerd/io.containerd.content.v1.content/blobs";

/// What the builder wrote beside an archive (`<tar>.digest`): the image's manifest digest and
/// the name it is imported under (`sha256:<hex> <reference>`). Both identify an import: a new
/// version of an unchanged image has the same manifest under a new name.
fn manifest_digest(tar: &str) -> Option<String> {
    let d = fs::read_to_string(format!("{tar}.digest")).ok()?;
    let d = d.trim();
    let digest = d.split(' ').next()?;
    let (alg, hex) = digest.split_once(':')?;
    (alg == "sha256" && hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| d.to_string())
}

fn record_path(tar: &str) -> String {
    let name = tar.rsplit('/').next().unwrap_or(tar);
    format!("{IMPORTED_DIR}/{name}.imported")
}

/// Whether this archive's manifest was imported before and containerd still has it: the
/// record of the last successful import says this digest, and the manifest blob is in the
/// content store (a wiped store, or an interrupted import, means importing again).
fn already_imported(tar: &str, digest: &str) -> bool {
    let recorded = fs::read_to_string(record_path(tar)).unwrap_or_default();
    let hex = digest
        .split(' ')
        .next()
        .unwrap_or("")
        .trim_start_matches("sha256:");
    recorded.trim() == digest
        && std::path::Path::new(&format!("{CONTENT_BLOBS}/sha256/{hex}")).is_file()
}

/// The name this archive's manifest was last imported (or tagged) under, when that was the same
/// manifest under another name and containerd still holds its content: what a new version of an
/// unchanged image is tagged from.
fn tag_source(tar: &str, digest: &str) -> Option<String> {
    let recorded = fs::read_to_string(record_path(tar)).ok()?;
    same_manifest_other_name(recorded.trim(), digest, |hex| {
        std::path::Path::new(&format!("{CONTENT_BLOBS}/sha256/{hex}")).is_file()
    })
}

/// `recorded` and `ours` are `sha256:<hex> <reference>`: the recorded reference when the digests
/// match, the references differ and `have(hex)` says the manifest blob is still there.
fn same_manifest_other_name(
    recorded: &str,
    ours: &str,
    have: impl Fn(&str) -> bool,
) -> Option<String> {
    let (rd, rref) = recorded.split_once(' ')?;
    let (od, oref) = ours.split_once(' ')?;
    let hex = od.strip_prefix("sha256:")?;
    (rd == od && rref != oref && !rref.is_empty() && have(hex)).then(|| rref.to_string())
}

fn record_import(tar: &str, digest: &str) -> Result<()> {
    crate::durable::replace(&record_path(tar), format!("{digest}\n").as_bytes())
        .ctx(|| format!("recording the import of {tar}"))
}

/// containerd's version as `ctr version` reports it from the running daemon: proof that its API
/// answers. Asked after the boot is ready, since it costs a Go start-up (seconds under TCG).
pub fn containerd_version() -> Result<String> {
    let o = ctr(&["version"])
        .output()
        .ctx(|| format!("running {CTR} version"))?;
    if !o.status.success() {
        fail!("ctr version: {}", String::from_utf8_lossy(&o.stderr).trim());
    }
    Ok(server_version(&String::from_utf8_lossy(&o.stdout)).unwrap_or_else(|| "unknown".into()))
}

/// The `Version:` under `Server:` in `ctr version` output.
fn server_version(text: &str) -> Option<String> {
    let server = text.split_once("Server:")?.1;
    let line = server
        .lines()
        .find(|l| l.trim_start().starts_with("Version:"))?;
    Some(
        line.trim_start()
            .trim_start_matches("Version:")
            .trim()
            .to_string(),
    )
}

/// Waits for `child` while the supervisor goes on reaping (and restarting) the others; says so
/// every `NOTE_EVERY`, and kills it after `limit`. Returns its wait status, or None if killed.
pub fn wait_supervised(
    sup: &mut Supervisor,
    child: &mut Child,
    what: &str,
    limit: Duration,
) -> Option<i32> {
    let pid = child.id() as i32;
    let start = Instant::now();
    let mut note = NOTE_EVERY;
    loop {
        let mut got = None;
        sup.reap_with(|p, st| {
            if p == pid {
                got = Some(st);
            }
            p == pid
        });
        if got.is_some() {
            return got;
        }
        sup.tick();
        let t = start.elapsed();
        if t >= limit {
            let _ = child.kill();
            let _ = child.wait();
            warn!("{what} still running after {}s; killed it", limit.as_secs());
            return None;
        }
        if t >= note {
            say!("waiting for {what} ({}s so far)", t.as_secs());
            note += NOTE_EVERY;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_images_are_those_neither_slot_ships() {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let managed = set(&["a:1", "a:2", "a:3", "web:1", "x:9"]);
        let ours = set(&["a:3", "web:1"]);
        let other = set(&["a:2", "web:1"]);
        assert_eq!(stale(&managed, &ours, &other), ["a:1", "x:9"]);
        assert!(stale(&managed, &managed, &set(&[])).is_empty());
        assert!(stale(&set(&[]), &ours, &other).is_empty());
    }

    #[test]
    fn an_unchanged_manifest_under_a_new_name_is_tagged_from_the_old_one() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let other = format!("sha256:{}", "cd".repeat(32));
        let rec = |r: &str| format!("{d} {r}");
        let yes = |_: &str| true;
        assert_eq!(
            same_manifest_other_name(&rec("l/etcd:0.1.0"), &rec("l/etcd:0.2.0"), yes).as_deref(),
            Some("l/etcd:0.1.0")
        );
        // Same name: nothing to tag (already_imported decides); another manifest: import it.
        assert_eq!(
            same_manifest_other_name(&rec("l/etcd:0.1.0"), &rec("l/etcd:0.1.0"), yes),
            None
        );
        assert_eq!(
            same_manifest_other_name(&format!("{other} l/etcd:0.1.0"), &rec("l/etcd:0.2.0"), yes),
            None
        );
        // Content gone from containerd (a wiped store): import again.
        assert_eq!(
            same_manifest_other_name(&rec("l/etcd:0.1.0"), &rec("l/etcd:0.2.0"), |h| h
                != "ab".repeat(32)),
            None
        );
        assert_eq!(
            same_manifest_other_name("", &rec("l/etcd:0.2.0"), yes),
            None
        );
    }

    #[test]
    fn versions_backoff_and_statuses() {
        let out = "Client:\n  Version:  1.6.20~ds1\n  Revision: x\n\nServer:\n  Version:  1.6.21\n  UUID: u\n";
        assert_eq!(server_version(out).as_deref(), Some("1.6.21"));
        assert_eq!(server_version("Client:\n Version: 1\n"), None);
        let secs: Vec<u64> = (0..8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(describe(3 << 8), "status=3");
        assert_eq!(describe(9), "signal=9");
    }
}
