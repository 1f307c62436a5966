//! Container services: what berth-init runs in containerd. One schema for the image's
//! services file (`/etc/berth/services.json`, written by `berth build` from the profile's
//! `[[containers]]` and `[admin]`) and for the machine config's `services` key, parsed here so
//! the host and the machine agree on every rule.
//!
//! ```json
//! {"version": 1, "services": [
//!   {"name": "web", "image": "localhost/web:1", "command": ["/bin/httpd", "-f", "-p", "8080"],
//!    "env": {"GREETING": "hello world"},
//!    "mounts": [{"source": "/var/lib/web", "target": "/srv", "read-only": true}],
//!    "network": "host", "restart": "always", "depends-on": ["db"],
//!    "ready": {"tcp": 8080}, "ready-timeout": 60, "required": true}
//! ]}
//! ```
//!
//! - `name`: `[a-z0-9][a-z0-9._-]*`, at most 63; unique. It names the container, the log file
//!   (`/var/log/berth/NAME.log`) and the service in `berthctl services`.
//! - `kind`: `"daemon"` (default: kept running, restarted by `restart`) or `"oneshot"` (run to
//!   completion once per boot; services that depend on it wait for it to exit 0).
//! - `image`: a reference containerd holds (the image's baked archives are imported at boot).
//! - `command`: program and arguments, each a separate string (spaces allowed); empty means the
//!   image's own entrypoint and cmd.
//! - `env`: variables set in the container (`NAME` of letters, digits and `_`).
//! - `mounts`: bind mounts; `source` under `/var/` (made as a directory when missing) or
//!   `/run/` (must exist), `target` any absolute path; `read-only` defaults to false.
//! - `network`: `"host"` (default; the host's interfaces) or `"private"` (a namespace of its own
//!   with only loopback).
//! - `restart`: for daemons, `"always"` (default), `"on-failure"` (only after a non-zero exit or
//!   a signal) or `"never"`; restarts back off 1 s, 2 s, 4 s … 30 s.
//! - `depends-on`: services started first; a daemon counts as up once ready, a oneshot once it
//!   exited 0. A service whose dependency failed is not started.
//! - `ready`: `{"tcp": PORT}` (a connection to 127.0.0.1:PORT is accepted), `{"http": URL}`
//!   (`http://127.0.0.1:PORT/PATH` answers 2xx or 3xx) or `{"command": [...]}` (run in the
//!   container, exit 0); without it a daemon is ready once started. tcp/http need host
//!   networking. `ready-timeout` (seconds, default 120) bounds the wait.
//! - `required` (default true): the boot is healthy only when this service is up.
//! - `host-pid`, `privileged` (default false): join the host's PID and UTS namespaces (its
//!   processes and host name); all capabilities and devices. The admin container uses both.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::json::{self, Node};
use crate::schema::{array, boolean, err, int, quote, quote_list, string, strings, Fields};
use crate::{Error, Result};

/// The services file version this berth reads.
pub const SERVICES_VERSION: i64 = 1;
/// Where the image carries its services.
pub const SERVICES_FILE: &str = "/etc/berth/services.json";
/// Default bound on a readiness wait, in seconds.
pub const DEFAULT_READY_TIMEOUT: u32 = 120;
/// Longest a readiness wait may be given, in seconds.
pub const MAX_READY_TIMEOUT: i64 = 3600;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Daemon,
    Oneshot,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    Host,
    Private,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    Always,
    OnFailure,
    Never,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ready {
    Tcp(u16),
    /// `http://127.0.0.1:PORT/PATH`, kept as port and path (starting with `/`).
    Http {
        port: u16,
        path: String,
    },
    Command(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub kind: Kind,
    pub image: String,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    pub network: Network,
    pub restart: Restart,
    pub depends_on: Vec<String>,
    pub ready: Option<Ready>,
    pub ready_timeout: u32,
    pub required: bool,
    pub host_pid: bool,
    pub privileged: bool,
}

impl Service {
    /// A daemon with every default: `image` run with its own command, host network.
    pub fn new(name: &str, image: &str) -> Service {
        Service {
            name: name.to_string(),
            kind: Kind::Daemon,
            image: image.to_string(),
            command: Vec::new(),
            env: Vec::new(),
            mounts: Vec::new(),
            network: Network::Host,
            restart: Restart::Always,
            depends_on: Vec::new(),
            ready: None,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            required: true,
            host_pid: false,
            privileged: false,
        }
    }
}

/// A service name: it becomes a container ID and a file name.
pub fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
}

/// A path berth passes to `ctr --mount` (which splits on `,` and `:`): absolute, normalised,
/// of a conservative character set.
fn valid_mount_path(p: &str) -> bool {
    p.starts_with('/')
        && p.len() <= 1024
        && (p == "/"
            || !p[1..]
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == ".."))
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+@".contains(&b))
}

fn valid_env_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

fn one_of<T: Copy>(n: &Node, key: &str, choices: &[(&str, T)]) -> Result<T> {
    let s = string(n, key)?;
    choices
        .iter()
        .find(|(name, _)| *name == s)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<String> = choices.iter().map(|(n, _)| format!("\"{n}\"")).collect();
            err(
                n.pos,
                key,
                &format!("{s:?} is not one of {}", names.join(", ")),
            )
        })
}

fn command_list(n: &Node, key: &str) -> Result<Vec<String>> {
    let v = strings(n, key)?;
    if let Some(i) = v.iter().position(|a| a.contains('\0')) {
        return Err(err(
            n.pos,
            &format!("{key}[{i}]"),
            "contains a NUL character",
        ));
    }
    Ok(v)
}

fn mount(n: &Node, prefix: &str) -> Result<Mount> {
    let mut f = Fields::of(n, prefix)?;
    let mut path = |k: &str| -> Result<(String, Node, String)> {
        let (v, key) = f.take(k).ok_or_else(|| {
            err(
                n.pos,
                &format!("{prefix}.{k}"),
                "missing: a mount needs a source and a target",
            )
        })?;
        let s = string(v, &key)?;
        if !valid_mount_path(&s) {
            return Err(err(
                v.pos,
                &key,
                &format!("{s:?} is not a normalised absolute path of letters, digits and /._-+@"),
            ));
        }
        Ok((s, v.clone(), key))
    };
    let (source, sn, sk) = path("source")?;
    let (target, tn, tk) = path("target")?;
    if !(source.starts_with("/var/") || source.starts_with("/run/")) {
        return Err(err(
            sn.pos,
            &sk,
            &format!("{source:?}: a mount source must be under /var/ (persistent) or /run/ (this boot's)"),
        ));
    }
    if target == "/" {
        return Err(err(tn.pos, &tk, "cannot mount over the container's root"));
    }
    let read_only = match f.take("read-only") {
        Some((v, k)) => boolean(v, &k)?,
        None => false,
    };
    f.finish(&["source", "target", "read-only"])?;
    Ok(Mount {
        source,
        target,
        read_only,
    })
}

fn port(n: &Node, key: &str) -> Result<u16> {
    let p = int(n, key, 65535)?;
    if p == 0 {
        return Err(err(n.pos, key, "port 0 is not a port (1..=65535)"));
    }
    Ok(p as u16)
}

/// `http://127.0.0.1:PORT/PATH` (or `localhost`): readiness is checked on the machine itself.
fn http_url(s: &str) -> Option<(u16, String)> {
    let rest = s
        .strip_prefix("http://127.0.0.1:")
        .or_else(|| s.strip_prefix("http://localhost:"))?;
    let (p, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let port: u16 = p.parse().ok().filter(|p| *p != 0)?;
    if p.starts_with('0') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return None;
    }
    Some((port, path.to_string()))
}

fn ready(n: &Node, prefix: &str) -> Result<Ready> {
    let mut f = Fields::of(n, prefix)?;
    let tcp = f.take("tcp");
    let http = f.take("http");
    let command = f.take("command");
    let known = ["tcp", "http", "command"];
    f.finish(&known)?;
    match (tcp, http, command) {
        (Some((v, k)), None, None) => Ok(Ready::Tcp(port(v, &k)?)),
        (None, Some((v, k)), None) => {
            let s = string(v, &k)?;
            let (port, path) = http_url(&s).ok_or_else(|| {
                err(
                    v.pos,
                    &k,
                    &format!("{s:?} is not a URL like \"http://127.0.0.1:8080/health\" (readiness is checked on the machine)"),
                )
            })?;
            Ok(Ready::Http { port, path })
        }
        (None, None, Some((v, k))) => {
            let c = command_list(v, &k)?;
            if c.is_empty() {
                return Err(err(
                    v.pos,
                    &k,
                    "is empty: give the program and its arguments",
                ));
            }
            Ok(Ready::Command(c))
        }
        _ => Err(err(
            n.pos,
            prefix,
            "give exactly one of \"tcp\": PORT, \"http\": URL, \"command\": [...]",
        )),
    }
}

/// One service object.
pub fn service(n: &Node, prefix: &str) -> Result<Service> {
    let mut f = Fields::of(n, prefix)?;
    let missing = |k: &str, what: &str| err(n.pos, &format!("{prefix}.{k}"), what);
    let (v, k) = f
        .take("name")
        .ok_or_else(|| missing("name", "missing: every service needs a name"))?;
    let name = string(v, &k)?;
    if !valid_name(&name) {
        return Err(err(
            v.pos,
            &k,
            &format!("{name:?} is not a service name (lower-case letters, digits, `.`, `_`, `-`; starting with a letter or digit; at most 63)"),
        ));
    }
    let (v, k) = f.take("image").ok_or_else(|| {
        missing(
            "image",
            "missing: name the image to run (a reference like \"localhost/web:1\")",
        )
    })?;
    let image = string(v, &k)?;
    if image.is_empty() || image.len() > 255 || image.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(err(
            v.pos,
            &k,
            &format!("{image:?} is not an image reference (no spaces, at most 255 bytes)"),
        ));
    }
    let mut s = Service::new(&name, &image);
    if let Some((v, k)) = f.take("kind") {
        s.kind = one_of(
            v,
            &k,
            &[("daemon", Kind::Daemon), ("oneshot", Kind::Oneshot)],
        )?;
    }
    if let Some((v, k)) = f.take("command") {
        s.command = command_list(v, &k)?;
    }
    if let Some((v, k)) = f.take("env") {
        let mut env = Fields::of(v, &k)?;
        for (name, node) in core::mem::take(&mut env.members) {
            let key = format!("{k}.{name}");
            if !valid_env_name(name) {
                return Err(err(
                    node.pos,
                    &key,
                    "not a variable name (letters, digits and `_`, not starting with a digit)",
                ));
            }
            let value = string(node, &key)?;
            if value.contains('\0') {
                return Err(err(node.pos, &key, "contains a NUL character"));
            }
            s.env.push((name.to_string(), value));
        }
    }
    if let Some((v, k)) = f.take("mounts") {
        for (i, e) in array(v, &k)?.iter().enumerate() {
            let m = mount(e, &format!("{k}[{i}]"))?;
            if let Some(o) = s.mounts.iter().position(|x| x.target == m.target) {
                return Err(err(
                    e.pos,
                    &format!("{k}[{i}].target"),
                    &format!("{} is already the target of {k}[{o}]", m.target),
                ));
            }
            s.mounts.push(m);
        }
    }
    if let Some((v, k)) = f.take("network") {
        s.network = one_of(
            v,
            &k,
            &[("host", Network::Host), ("private", Network::Private)],
        )?;
    }
    if let Some((v, k)) = f.take("restart") {
        s.restart = one_of(
            v,
            &k,
            &[
                ("always", Restart::Always),
                ("on-failure", Restart::OnFailure),
                ("never", Restart::Never),
            ],
        )?;
        if s.kind == Kind::Oneshot {
            return Err(err(
                v.pos,
                &k,
                "a oneshot runs once per boot; `restart` is for daemons",
            ));
        }
    }
    if s.kind == Kind::Oneshot {
        s.restart = Restart::Never;
    }
    if let Some((v, k)) = f.take("depends-on") {
        for (i, d) in strings(v, &k)?.into_iter().enumerate() {
            if d == name {
                return Err(err(
                    v.pos,
                    &format!("{k}[{i}]"),
                    "a service cannot depend on itself",
                ));
            }
            if !s.depends_on.contains(&d) {
                s.depends_on.push(d);
            }
        }
    }
    if let Some((v, k)) = f.take("ready") {
        let r = ready(v, &k)?;
        if s.kind == Kind::Oneshot {
            return Err(err(
                v.pos,
                &k,
                "a oneshot is up when it exits 0; `ready` is for daemons",
            ));
        }
        s.ready = Some(r);
    }
    if let Some((v, k)) = f.take("ready-timeout") {
        let t = int(v, &k, MAX_READY_TIMEOUT)?;
        if t == 0 {
            return Err(err(v.pos, &k, "0 s would never wait; give 1..=3600"));
        }
        s.ready_timeout = t as u32;
    }
    if let Some((v, k)) = f.take("required") {
        s.required = boolean(v, &k)?;
    }
    if let Some((v, k)) = f.take("host-pid") {
        s.host_pid = boolean(v, &k)?;
    }
    if let Some((v, k)) = f.take("privileged") {
        s.privileged = boolean(v, &k)?;
    }
    if s.network == Network::Private {
        if let Some(Ready::Tcp(_) | Ready::Http { .. }) = s.ready {
            return Err(err(
                n.pos,
                &format!("{prefix}.ready"),
                "a tcp or http check reaches the host's loopback; a service with \"network\": \"private\" needs a \"command\" check",
            ));
        }
    }
    f.finish(&[
        "name",
        "image",
        "kind",
        "command",
        "env",
        "mounts",
        "network",
        "restart",
        "depends-on",
        "ready",
        "ready-timeout",
        "required",
        "host-pid",
        "privileged",
    ])?;
    Ok(s)
}

/// A list of services (the file's `services`, the machine config's `services`): each checked,
/// names unique.
pub fn list(n: &Node, key: &str) -> Result<Vec<Service>> {
    let mut out: Vec<Service> = Vec::new();
    for (i, e) in array(n, key)?.iter().enumerate() {
        let s = service(e, &format!("{key}[{i}]"))?;
        if let Some(o) = out.iter().position(|x| x.name == s.name) {
            return Err(err(
                e.pos,
                &format!("{key}[{i}].name"),
                &format!("service {:?} is already defined by {key}[{o}]", s.name),
            ));
        }
        out.push(s);
    }
    Ok(out)
}

/// Reads a services file.
pub fn parse_file(text: &str) -> Result<Vec<Service>> {
    let doc = json::parse(text)?;
    let mut f = Fields::of(&doc, "")?;
    let (v, k) = f.take("version").ok_or_else(|| {
        err(
            doc.pos,
            "version",
            &format!("missing: a services file starts with \"version\": {SERVICES_VERSION}"),
        )
    })?;
    let ver = int(v, &k, i64::MAX)?;
    if ver != SERVICES_VERSION {
        return Err(err(
            v.pos,
            &k,
            &format!("this berth reads services version {SERVICES_VERSION}, the file says {ver}"),
        ));
    }
    let services = match f.take("services") {
        Some((v, k)) => list(v, &k)?,
        None => Vec::new(),
    };
    f.finish(&["version", "services"])?;
    check(&services)?;
    Ok(services)
}

/// `extra` (the machine config's services) over `base` (the image's): a service of the same
/// name replaces the image's, others are added after. The result is checked as a whole.
pub fn merge(base: &[Service], extra: &[Service]) -> Result<Vec<Service>> {
    let mut out: Vec<Service> = base.to_vec();
    for s in extra {
        match out.iter_mut().find(|o| o.name == s.name) {
            Some(o) => *o = s.clone(),
            None => out.push(s.clone()),
        }
    }
    check(&out)?;
    Ok(out)
}

/// Every `depends-on` names a service, and there is no cycle.
pub fn check(services: &[Service]) -> Result<()> {
    for s in services {
        for d in &s.depends_on {
            if !services.iter().any(|o| &o.name == d) {
                let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
                return Err(Error::Invalid(format!(
                    "service {:?}: depends-on {d:?}, which is not a service (services: {})",
                    s.name,
                    names.join(", ")
                )));
            }
        }
    }
    start_order(services).map(|_| ())
}

/// Indexes of `services` in an order where every service comes after what it depends on;
/// otherwise in the given order. A cycle is an error naming it.
pub fn start_order(services: &[Service]) -> Result<Vec<usize>> {
    let index = |n: &str| services.iter().position(|s| s.name == n);
    let mut order = Vec::new();
    // 0 = not visited, 1 = on the current path, 2 = placed.
    let mut mark = alloc::vec![0u8; services.len()];
    fn visit(
        i: usize,
        services: &[Service],
        index: &dyn Fn(&str) -> Option<usize>,
        mark: &mut [u8],
        path: &mut Vec<usize>,
        order: &mut Vec<usize>,
    ) -> Result<()> {
        match mark[i] {
            2 => return Ok(()),
            1 => {
                let from = path.iter().position(|&p| p == i).unwrap_or(0);
                let mut names: Vec<&str> = path[from..]
                    .iter()
                    .map(|&p| services[p].name.as_str())
                    .collect();
                names.push(&services[i].name);
                return Err(Error::Invalid(format!(
                    "services depend on each other in a cycle: {}",
                    names.join(" -> ")
                )));
            }
            _ => {}
        }
        mark[i] = 1;
        path.push(i);
        for d in &services[i].depends_on {
            if let Some(j) = index(d) {
                visit(j, services, index, mark, path, order)?;
            }
        }
        path.pop();
        mark[i] = 2;
        order.push(i);
        Ok(())
    }
    for i in 0..services.len() {
        visit(i, services, &index, &mut mark, &mut Vec::new(), &mut order)?;
    }
    Ok(order)
}

impl Service {
    /// The service as a JSON object [`service`] reads back to the same value.
    pub fn to_json(&self) -> String {
        let mut p = alloc::vec![
            format!("\"name\": {}", quote(&self.name)),
            format!("\"image\": {}", quote(&self.image)),
            format!(
                "\"kind\": \"{}\"",
                match self.kind {
                    Kind::Daemon => "daemon",
                    Kind::Oneshot => "oneshot",
                }
            ),
        ];
        if !self.command.is_empty() {
            p.push(format!("\"command\": {}", quote_list(&self.command)));
        }
        if !self.env.is_empty() {
            let e: Vec<String> = self
                .env
                .iter()
                .map(|(k, v)| format!("{}: {}", quote(k), quote(v)))
                .collect();
            p.push(format!("\"env\": {{{}}}", e.join(", ")));
        }
        if !self.mounts.is_empty() {
            let m: Vec<String> = self
                .mounts
                .iter()
                .map(|m| {
                    format!(
                        "{{\"source\": {}, \"target\": {}, \"read-only\": {}}}",
                        quote(&m.source),
                        quote(&m.target),
                        m.read_only
                    )
                })
                .collect();
            p.push(format!("\"mounts\": [{}]", m.join(", ")));
        }
        if self.network == Network::Private {
            p.push("\"network\": \"private\"".to_string());
        }
        if self.kind == Kind::Daemon {
            p.push(format!(
                "\"restart\": \"{}\"",
                match self.restart {
                    Restart::Always => "always",
                    Restart::OnFailure => "on-failure",
                    Restart::Never => "never",
                }
            ));
        }
        if !self.depends_on.is_empty() {
            p.push(format!("\"depends-on\": {}", quote_list(&self.depends_on)));
        }
        match &self.ready {
            None => {}
            Some(Ready::Tcp(port)) => p.push(format!("\"ready\": {{\"tcp\": {port}}}")),
            Some(Ready::Http { port, path }) => p.push(format!(
                "\"ready\": {{\"http\": {}}}",
                quote(&format!("http://127.0.0.1:{port}{path}"))
            )),
            Some(Ready::Command(c)) => {
                p.push(format!("\"ready\": {{\"command\": {}}}", quote_list(c)))
            }
        }
        if self.ready_timeout != DEFAULT_READY_TIMEOUT {
            p.push(format!("\"ready-timeout\": {}", self.ready_timeout));
        }
        if !self.required {
            p.push("\"required\": false".to_string());
        }
        if self.host_pid {
            p.push("\"host-pid\": true".to_string());
        }
        if self.privileged {
            p.push("\"privileged\": true".to_string());
        }
        format!("{{{}}}", p.join(", "))
    }
}

/// A services file [`parse_file`] reads back to `services`.
pub fn file_text(services: &[Service]) -> String {
    let items: Vec<String> = services
        .iter()
        .map(|s| format!("  {}", s.to_json()))
        .collect();
    if items.is_empty() {
        return format!("{{\"version\": {SERVICES_VERSION}, \"services\": []}}\n");
    }
    format!(
        "{{\"version\": {SERVICES_VERSION}, \"services\": [\n{}\n]}}\n",
        items.join(",\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn one(body: &str) -> Result<Service> {
        parse_file(&format!("{{\"version\": 1, \"services\": [{body}]}}")).map(|mut v| v.remove(0))
    }

    #[test]
    fn a_full_service_and_its_round_trip() {
        let s = one(
            r#"{"name": "web", "image": "localhost/web:1", "command": ["/bin/httpd", "-f", "two words"],
                "env": {"GREETING": "hello world", "B_2": ""},
                "mounts": [{"source": "/var/lib/web", "target": "/srv", "read-only": true},
                           {"source": "/run/berth/ssh", "target": "/root/.ssh"}],
                "network": "host", "restart": "on-failure", "ready": {"http": "http://localhost:8080/health"},
                "ready-timeout": 30, "required": false, "host-pid": true, "privileged": true}"#,
        )
        .unwrap();
        assert_eq!(s.command, ["/bin/httpd", "-f", "two words"]);
        assert_eq!(s.env[0], ("GREETING".into(), "hello world".into()));
        assert!(s.mounts[0].read_only && !s.mounts[1].read_only);
        assert_eq!(s.restart, Restart::OnFailure);
        assert_eq!(
            s.ready,
            Some(Ready::Http {
                port: 8080,
                path: "/health".into()
            })
        );
        assert_eq!(
            (s.ready_timeout, s.required, s.host_pid, s.privileged),
            (30, false, true, true)
        );
        let d = one(r#"{"name": "x", "image": "i", "kind": "oneshot"}"#).unwrap();
        assert_eq!(
            (d.kind, d.restart, d.required),
            (Kind::Oneshot, Restart::Never, true)
        );
        let all = vec![s, d, {
            let mut t = Service::new("t", "img");
            t.ready = Some(Ready::Command(vec!["/bin/true".into()]));
            t.network = Network::Private;
            t.depends_on = vec!["x".into()];
            t
        }];
        let text = file_text(&all);
        assert_eq!(parse_file(&text).unwrap(), all, "{text}");
        assert_eq!(parse_file(&file_text(&[])).unwrap(), vec![]);
    }

    #[test]
    fn schema_errors_name_the_key_and_what_is_valid() {
        let cases = [
            (r#"{"name": "Web", "image": "i"}"#, "services[0].name"),
            (r#"{"name": "w"}"#, "services[0].image"),
            (r#"{"name": "w", "image": "a b"}"#, "services[0].image"),
            (
                r#"{"name": "w", "image": "i", "kind": "sometimes"}"#,
                "\"daemon\", \"oneshot\"",
            ),
            (
                r#"{"name": "w", "image": "i", "colour": 1}"#,
                "valid keys here",
            ),
            (
                r#"{"name": "w", "image": "i", "command": "/bin/sh -c x"}"#,
                "expected an array",
            ),
            (
                r#"{"name": "w", "image": "i", "env": {"1X": "v"}}"#,
                "services[0].env.1X",
            ),
            (
                r#"{"name": "w", "image": "i", "mounts": [{"source": "/etc", "target": "/x"}]}"#,
                "under /var/",
            ),
            (
                r#"{"name": "w", "image": "i", "mounts": [{"source": "/var/a,b", "target": "/x"}]}"#,
                "normalised",
            ),
            (
                r#"{"name": "w", "image": "i", "mounts": [{"source": "/var/../etc", "target": "/x"}]}"#,
                "normalised",
            ),
            (
                r#"{"name": "w", "image": "i", "mounts": [{"source": "/var/a", "target": "/"}]}"#,
                "root",
            ),
            (
                r#"{"name": "w", "image": "i", "mounts": [{"source": "/var/a", "target": "/x"}, {"source": "/var/b", "target": "/x"}]}"#,
                "already the target",
            ),
            (
                r#"{"name": "w", "image": "i", "ready": {"tcp": 0}}"#,
                "port 0",
            ),
            (
                r#"{"name": "w", "image": "i", "ready": {"tcp": 70000}}"#,
                "out of range",
            ),
            (
                r#"{"name": "w", "image": "i", "ready": {"http": "http://example.com/"}}"#,
                "checked on the machine",
            ),
            (
                r#"{"name": "w", "image": "i", "ready": {"tcp": 1, "command": ["x"]}}"#,
                "exactly one",
            ),
            (
                r#"{"name": "w", "image": "i", "network": "private", "ready": {"tcp": 80}}"#,
                "needs a \"command\"",
            ),
            (
                r#"{"name": "w", "image": "i", "kind": "oneshot", "restart": "always"}"#,
                "for daemons",
            ),
            (
                r#"{"name": "w", "image": "i", "ready-timeout": 0}"#,
                "never wait",
            ),
            (
                r#"{"name": "w", "image": "i", "depends-on": ["w"]}"#,
                "itself",
            ),
            (
                r#"{"name": "w", "image": "i", "depends-on": ["db"]}"#,
                "not a service",
            ),
            (
                r#"{"name": "w", "image": "i"}, {"name": "w", "image": "j"}"#,
                "already defined",
            ),
        ];
        for (body, want) in cases {
            let e = one(body).unwrap_err().to_string();
            assert!(e.contains(want), "{body}: {e}");
        }
        let e = parse_file(r#"{"version": 2}"#).unwrap_err().to_string();
        assert!(e.contains("version 1"), "{e}");
        let e = parse_file("{\"version\": 1,\n \"services\": [{\"name\": 3}]}")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("2:24: key `services[0].name`"), "{e}");
    }

    #[test]
    fn start_order_follows_dependencies_and_refuses_cycles() {
        let svc = |n: &str, deps: &[&str]| {
            let mut s = Service::new(n, "i");
            s.depends_on = deps.iter().map(|d| d.to_string()).collect();
            s
        };
        let v = vec![
            svc("web", &["db", "cache"]),
            svc("db", &[]),
            svc("cache", &["db"]),
            svc("admin", &[]),
        ];
        let names: Vec<&str> = start_order(&v)
            .unwrap()
            .iter()
            .map(|&i| v[i].name.as_str())
            .collect();
        assert_eq!(names, ["db", "cache", "web", "admin"]);
        let c = vec![svc("a", &["b"]), svc("b", &["c"]), svc("c", &["a"])];
        let e = check(&c).unwrap_err().to_string();
        assert!(e.contains("a -> b -> c -> a"), "{e}");
        // A config service replaces the image's of the same name, and the whole is checked.
        let merged = merge(&[svc("db", &[]), svc("web", &["db"])], &[svc("db", &["x"])]);
        assert!(merged.unwrap_err().to_string().contains("\"x\""));
        let merged = merge(
            &[svc("db", &[])],
            &[
                {
                    let mut s = svc("db", &[]);
                    s.image = "new".into();
                    s
                },
                svc("extra", &["db"]),
            ],
        )
        .unwrap();
        assert_eq!((merged.len(), merged[0].image.as_str()), (2, "new"));
    }
}
