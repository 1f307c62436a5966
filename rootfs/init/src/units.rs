//! Container services (`berth_contract::service`): the image's `/etc/berth/services.json` with
//! the machine config's services merged in, started in dependency order with `ctr run`,
//! watched for readiness, restarted by the supervisor as their policy says, their state
//! published at `/run/berth/services` for `berthctl services`.
//!
//! A daemon is *up* once its readiness check passes (or, without one, once started); a oneshot
//! once it exited 0. A service waits for what it depends on; if a dependency fails (a oneshot
//! exits non-zero, a daemon is not ready within its `ready-timeout`), the service is *blocked*
//! and not started. The boot's ready line comes after every service is up or has failed, so
//! "ready" means the services are.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::process::Stdio;
use std::time::{Duration, Instant};

use berth_contract::config::AUTHORIZED_KEYS;
use berth_contract::paths::{
    ADMIN_HOST_KEYS, ADMIN_SSH_DIR, IMAGE_AUTHORIZED_KEYS, SERVICE_LOG_DIR, SERVICE_STATE,
};
use berth_contract::service::{Kind, Network, Ready, Service};

use crate::logs;
use crate::services::{self, command, describe, Log, Supervisor, CONNECT_TIMEOUT, CTR, NAMESPACE};
use crate::{say, warn, Ctx, Result};

/// A oneshot that runs longer than this is killed and counts as failed.
const ONESHOT_LIMIT: Duration = Duration::from_secs(600);
/// A readiness command is killed after this.
const CHECK_LIMIT: Duration = Duration::from_secs(10);
/// How often a tcp/http check is tried; a command check (a `ctr tasks exec`, a Go start-up
/// under TCG) less often.
const PROBE_EVERY: Duration = Duration::from_millis(250);
const COMMAND_EVERY: Duration = Duration::from_secs(2);
const NOTE_EVERY: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Not started yet.
    Waiting,
    /// Started; its readiness check has not passed yet.
    Starting,
    Up,
    Failed(String),
    /// Not started: a dependency failed.
    Blocked(String),
}

/// `ctr` arguments that run `s`.
pub fn run_args(s: &Service) -> Vec<String> {
    let mut v: Vec<String> = [
        "-n",
        NAMESPACE,
        "--connect-timeout",
        CONNECT_TIMEOUT,
        "run",
        "--rm",
    ]
    .map(String::from)
    .to_vec();
    if s.network == Network::Host {
        v.push("--net-host".into());
    }
    if s.privileged {
        v.push("--privileged".into());
    }
    if s.host_pid {
        // The host's process table and its host name (so `hostname` in the admin shell is the
        // machine's, and `berthctl hostname` changes both).
        for ns in ["pid:/proc/1/ns/pid", "uts:/proc/1/ns/uts"] {
            v.push("--with-ns".into());
            v.push(ns.into());
        }
    }
    for (k, val) in &s.env {
        v.push("--env".into());
        v.push(format!("{k}={val}"));
    }
    for m in &s.mounts {
        v.push("--mount".into());
        v.push(format!(
            "type=bind,src={},dst={},options=rbind:{}",
            m.source,
            m.target,
            if m.read_only { "ro" } else { "rw" }
        ));
    }
    v.push(s.image.clone());
    v.push(s.name.clone());
    v.extend(s.command.iter().cloned());
    v
}

fn label(s: &Service) -> String {
    format!("service {}", s.name)
}

fn check_text(r: &Option<Ready>) -> String {
    match r {
        None => "no readiness check".into(),
        Some(Ready::Tcp(p)) => format!("tcp {p}"),
        Some(Ready::Http { port, path }) => format!("http 127.0.0.1:{port}{path}"),
        Some(Ready::Command(c)) => format!("command {}", c.join(" ")),
    }
}

/// Mount sources: under /var made when missing; under /run they must exist.
fn prepare_mounts(s: &Service) -> Result<()> {
    for m in &s.mounts {
        if m.source.starts_with("/var/") {
            fs::create_dir_all(&m.source).ctx(|| format!("mkdir -p {}", m.source))?;
        } else if fs::metadata(&m.source).is_err() {
            crate::fail!("mount source {} does not exist", m.source);
        }
    }
    Ok(())
}

/// The admin container's `~/.ssh`: the image's keys, then the machine config's, in a fresh
/// directory on /run (0700, the file 0600), so a key removed from either is gone next boot.
/// Its host-key directory on /var (0700).
pub fn prepare_admin() -> Result<()> {
    let mut keys = fs::read_to_string(IMAGE_AUTHORIZED_KEYS).unwrap_or_default();
    if let Ok(more) = fs::read_to_string(AUTHORIZED_KEYS) {
        if !keys.is_empty() && !keys.ends_with('\n') {
            keys.push('\n');
        }
        keys.push_str(&more);
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(ADMIN_SSH_DIR)
        .ctx(|| format!("mkdir {ADMIN_SSH_DIR}"))?;
    let p = format!("{ADMIN_SSH_DIR}/authorized_keys");
    fs::write(&p, keys).ctx(|| format!("writing {p}"))?;
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).ctx(|| format!("chmod {p}"))?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(ADMIN_HOST_KEYS)
        .ctx(|| format!("mkdir {ADMIN_HOST_KEYS}"))?;
    Ok(())
}

fn tcp_open(port: u16) -> Option<TcpStream> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
}

/// `GET path` answered 2xx or 3xx.
fn http_ok(port: u16, path: &str) -> bool {
    let Some(mut s) = tcp_open(port) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
    let req =
        format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: berth-init\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 16];
    let mut n = 0;
    while n < head.len() {
        match s.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let line = String::from_utf8_lossy(&head[..n]);
    matches!(
        line.split(' ').nth(1).and_then(|c| c.parse::<u16>().ok()),
        Some(200..=399)
    )
}

pub struct Units {
    list: Vec<Service>,
    phase: Vec<Phase>,
    since: Vec<Instant>,
    last_probe: Vec<Option<Instant>>,
    seen_restarts: Vec<u32>,
    exec_seq: u32,
    published: String,
}

impl Units {
    pub fn new(list: Vec<Service>) -> Units {
        let n = list.len();
        Units {
            list,
            phase: vec![Phase::Waiting; n],
            since: vec![Instant::now(); n],
            last_probe: vec![None; n],
            seen_restarts: vec![0; n],
            exec_seq: 0,
            published: String::new(),
        }
    }

    fn set(&mut self, i: usize, p: Phase) {
        let s = &self.list[i];
        match &p {
            Phase::Up if s.kind == Kind::Daemon => say!(
                "service {} ready after {:.1}s ({})",
                s.name,
                self.since[i].elapsed().as_secs_f64(),
                check_text(&s.ready)
            ),
            Phase::Failed(why) => warn!("service {} failed: {why}", s.name),
            Phase::Blocked(why) => warn!("service {} not started: {why}", s.name),
            _ => {}
        }
        self.phase[i] = p;
    }

    /// Starts every service in dependency order, then waits for the readiness of those still
    /// starting (each bounded by its `ready-timeout`).
    pub fn start_all(&mut self, sup: &mut Supervisor) {
        let _ = fs::create_dir_all(SERVICE_LOG_DIR);
        let order = match berth_contract::service::start_order(&self.list) {
            Ok(o) => o,
            Err(e) => {
                // The parser refused cycles already; be safe anyway.
                warn!("{e}; no service started");
                return;
            }
        };
        for i in order {
            self.wait(sup, |u| {
                u.list[i].depends_on.iter().all(|d| {
                    u.index(d)
                        .is_none_or(|j| !matches!(u.phase[j], Phase::Starting | Phase::Waiting))
                })
            });
            let failed: Vec<&String> = self.list[i]
                .depends_on
                .iter()
                .filter(|d| self.index(d).is_some_and(|j| self.phase[j] != Phase::Up))
                .collect();
            if let Some(d) = failed.first() {
                let why = format!("it depends on {d}, which is not up");
                self.set(i, Phase::Blocked(why));
                continue;
            }
            self.start(i, sup);
        }
        self.wait(sup, |u| {
            !u.phase.iter().any(|p| matches!(p, Phase::Starting))
        });
        self.publish(sup);
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.list.iter().position(|s| s.name == name)
    }

    /// Polls until `done`, saying every `NOTE_EVERY` what it waits for.
    fn wait(&mut self, sup: &mut Supervisor, done: impl Fn(&Units) -> bool) {
        let start = Instant::now();
        let mut note = NOTE_EVERY;
        while !done(self) {
            sup.reap();
            sup.tick();
            self.probe(sup);
            if start.elapsed() >= note {
                let pending: Vec<&str> = self
                    .list
                    .iter()
                    .zip(&self.phase)
                    .filter(|(_, p)| **p == Phase::Starting)
                    .map(|(s, _)| s.name.as_str())
                    .collect();
                say!(
                    "waiting for service(s) {} to be ready ({}s so far)",
                    pending.join(", "),
                    start.elapsed().as_secs()
                );
                note += NOTE_EVERY;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn start(&mut self, i: usize, sup: &mut Supervisor) {
        let s = self.list[i].clone();
        if let Err(e) = prepare_mounts(&s) {
            self.set(i, Phase::Failed(e.0));
            return;
        }
        self.since[i] = Instant::now();
        let args = run_args(&s);
        match s.kind {
            Kind::Oneshot => {
                let status = run_oneshot(sup, &s, &args);
                match status {
                    Some(0) => {
                        say!("service {} exited status=0", s.name);
                        self.set(i, Phase::Up);
                    }
                    Some(st) => {
                        say!("service {} exited {}", s.name, describe(st));
                        self.set(i, Phase::Failed(format!("exited {}", describe(st))));
                    }
                    None => self.set(i, Phase::Failed("did not finish".into())),
                }
            }
            Kind::Daemon => {
                let log = Log::Service {
                    name: s.name.clone(),
                    tee: false,
                };
                match sup.add(&label(&s), CTR, args, log, s.restart) {
                    Ok(()) => {
                        say!("service {} started ({})", s.name, check_text(&s.ready));
                        if s.ready.is_none() {
                            self.set(i, Phase::Up);
                        } else {
                            self.phase[i] = Phase::Starting;
                        }
                    }
                    Err(e) => self.set(i, Phase::Failed(e.0)),
                }
            }
        }
    }

    /// Readiness checks of daemons that are starting, restarts noticed, deadlines enforced.
    fn probe(&mut self, sup: &mut Supervisor) {
        for i in 0..self.list.len() {
            let s = &self.list[i];
            if s.kind != Kind::Daemon || matches!(self.phase[i], Phase::Waiting | Phase::Blocked(_))
            {
                continue;
            }
            let Some(st) = sup.state(&label(s)) else {
                continue;
            };
            if st.restarts > self.seen_restarts[i] {
                // Restarted: ready again only when its check passes again.
                self.seen_restarts[i] = st.restarts;
                self.since[i] = Instant::now();
                self.phase[i] = if s.ready.is_some() {
                    Phase::Starting
                } else {
                    Phase::Up
                };
            }
            if st.done {
                if !matches!(self.phase[i], Phase::Failed(_)) {
                    let why = format!("exited {}", st.last_status.map_or("?".into(), describe));
                    self.set(i, Phase::Failed(why));
                }
                continue;
            }
            // A daemon past its readiness deadline that keeps running is still probed: it
            // counts as up once its check passes.
            let late = matches!(self.phase[i], Phase::Failed(_)) && s.ready.is_some();
            if !(self.phase[i] == Phase::Starting || late) || st.pid.is_none() {
                continue;
            }
            let every = match s.ready {
                Some(Ready::Command(_)) => COMMAND_EVERY,
                _ => PROBE_EVERY,
            };
            if self.last_probe[i].is_some_and(|t| t.elapsed() < every) {
                continue;
            }
            self.last_probe[i] = Some(Instant::now());
            let ok = match &s.ready {
                None => true,
                Some(Ready::Tcp(p)) => tcp_open(*p).is_some(),
                Some(Ready::Http { port, path }) => http_ok(*port, path),
                Some(Ready::Command(c)) => {
                    self.exec_seq += 1;
                    let (name, c) = (s.name.clone(), c.clone());
                    exec_ok(sup, &name, &c, self.exec_seq)
                }
            };
            let s = &self.list[i];
            if ok {
                self.set(i, Phase::Up);
            } else if !late
                && self.since[i].elapsed() > Duration::from_secs(u64::from(s.ready_timeout))
            {
                let why = format!(
                    "not ready within {}s ({})",
                    s.ready_timeout,
                    check_text(&s.ready)
                );
                self.set(i, Phase::Failed(why));
            }
        }
    }

    /// Called from PID 1's main loop: readiness after restarts, the state file.
    pub fn poll(&mut self, sup: &mut Supervisor) {
        self.probe(sup);
        self.publish(sup);
    }

    /// Required services that are not up, with the reason.
    pub fn not_up(&self) -> Vec<String> {
        self.list
            .iter()
            .zip(&self.phase)
            .filter(|(s, p)| s.required && **p != Phase::Up)
            .map(|(s, p)| format!("{}: {}", s.name, phase_text(p).1))
            .collect()
    }

    pub fn count_up(&self) -> (usize, usize) {
        (
            self.phase.iter().filter(|p| **p == Phase::Up).count(),
            self.list.len(),
        )
    }

    /// `/run/berth/services`: `name TAB kind TAB state TAB restarts TAB pid TAB detail`.
    fn publish(&mut self, sup: &Supervisor) {
        let mut text = String::new();
        for (s, p) in self.list.iter().zip(&self.phase) {
            let st = sup.state(&label(s));
            let (state, detail) = phase_text(p);
            let state = match (p, s.kind) {
                (Phase::Up, Kind::Oneshot) => "done",
                _ => state,
            };
            text.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\t{}\n",
                s.name,
                if s.kind == Kind::Daemon {
                    "daemon"
                } else {
                    "oneshot"
                },
                state,
                st.as_ref().map_or(0, |st| st.restarts),
                st.and_then(|st| st.pid)
                    .map_or("-".into(), |p| p.to_string()),
                if detail.is_empty() {
                    check_text(&s.ready)
                } else {
                    detail
                }
            ));
        }
        if text != self.published {
            let tmp = format!("{SERVICE_STATE}.tmp");
            if fs::write(&tmp, &text)
                .and_then(|()| fs::rename(&tmp, SERVICE_STATE))
                .is_ok()
            {
                self.published = text;
            }
        }
    }
}

fn phase_text(p: &Phase) -> (&'static str, String) {
    match p {
        Phase::Waiting => ("waiting", String::new()),
        Phase::Starting => ("starting", String::new()),
        Phase::Up => ("up", String::new()),
        Phase::Failed(w) => ("failed", w.clone()),
        Phase::Blocked(w) => ("blocked", w.clone()),
    }
}

/// Runs a oneshot to completion (bounded), its output to its log and the console.
fn run_oneshot(sup: &mut Supervisor, s: &Service, args: &[String]) -> Option<i32> {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut c = command(CTR, &a);
    let pipe = std::io::pipe().and_then(|(r, w)| Ok((r, w.try_clone()?, w)));
    let (r, w1, w2) = match pipe {
        Ok(p) => p,
        Err(e) => {
            warn!("service {}: pipe: {e}", s.name);
            return None;
        }
    };
    c.stdout(w1).stderr(w2);
    let spawned = c.spawn();
    drop(c);
    logs::spawn_writer(&s.name, r, true);
    match spawned {
        Ok(mut child) => services::wait_supervised(
            sup,
            &mut child,
            &format!("service {}", s.name),
            ONESHOT_LIMIT,
        ),
        Err(e) => {
            warn!("service {}: running {CTR}: {e}", s.name);
            None
        }
    }
}

/// A readiness command, run in the service's container: exit 0 within [`CHECK_LIMIT`].
fn exec_ok(sup: &mut Supervisor, name: &str, cmd: &[String], seq: u32) -> bool {
    let id = format!("berth-ready-{seq}");
    let mut args: Vec<&str> = vec![
        "-n",
        NAMESPACE,
        "--connect-timeout",
        CONNECT_TIMEOUT,
        "tasks",
        "exec",
        "--exec-id",
        &id,
        name,
    ];
    args.extend(cmd.iter().map(String::as_str));
    let spawned = command(CTR, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match spawned {
        Ok(mut child) => {
            services::wait_supervised(
                sup,
                &mut child,
                &format!("the readiness check of {name}"),
                CHECK_LIMIT,
            ) == Some(0)
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_contract::service::Mount;

    #[test]
    fn ctr_arguments_carry_every_setting() {
        let mut s = Service::new("web", "localhost/web:1");
        s.command = vec!["/bin/httpd".into(), "two words".into()];
        s.env = vec![("A".into(), "x y".into())];
        s.mounts = vec![Mount {
            source: "/var/lib/web".into(),
            target: "/srv".into(),
            read_only: true,
        }];
        s.host_pid = true;
        s.privileged = true;
        let a = run_args(&s);
        let want = [
            "-n",
            "berth",
            "--connect-timeout",
            "60s",
            "run",
            "--rm",
            "--net-host",
            "--privileged",
            "--with-ns",
            "pid:/proc/1/ns/pid",
            "--with-ns",
            "uts:/proc/1/ns/uts",
            "--env",
            "A=x y",
            "--mount",
            "type=bind,src=/var/lib/web,dst=/srv,options=rbind:ro",
            "localhost/web:1",
            "web",
            "/bin/httpd",
            "two words",
        ];
        assert_eq!(a, want);
        s.network = Network::Private;
        s.host_pid = false;
        s.privileged = false;
        s.mounts.clear();
        s.env.clear();
        assert_eq!(
            run_args(&s)[4..],
            [
                "run",
                "--rm",
                "localhost/web:1",
                "web",
                "/bin/httpd",
                "two words"
            ]
        );
    }

    #[test]
    fn http_check_reads_the_status_line() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            for (i, answer) in ["HTTP/1.0 200 OK\r\n\r\n", "HTTP/1.1 503 Busy\r\n\r\n"]
                .iter()
                .enumerate()
            {
                let (mut c, _) = l.accept().unwrap();
                let mut buf = [0u8; 256];
                let n = c.read(&mut buf).unwrap();
                assert!(
                    String::from_utf8_lossy(&buf[..n]).starts_with("GET /health HTTP/1.0\r\n"),
                    "{i}"
                );
                c.write_all(answer.as_bytes()).unwrap();
            }
        });
        assert!(http_ok(port, "/health"));
        assert!(!http_ok(port, "/health"));
        t.join().unwrap();
        assert!(tcp_open(port).is_none(), "the listener is gone");
    }
}
