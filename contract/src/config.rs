//! The machine config: what differs per machine, given at first boot (QEMU fw_cfg
//! `opt/org.berth/config`, a `cidata` config drive, EC2 user-data) and checked on the host by
//! `berth config check`. One parser for both, here, so the host reports exactly what the
//! machine would.
//!
//! JSON, strict (unknown keys are errors), versioned:
//!
//! ```json
//! {
//!   "version": 1,
//!   "hostname": "node-1",
//!   "network": [
//!     {"interface": "first", "address": "10.0.2.15/24", "gateway": "10.0.2.2", "dns": ["10.0.2.3"]}
//!   ],
//!   "ssh-authorized-keys": ["ssh-ed25519 AAAAC3Nza... me@laptop"],
//!   "files": [{"path": "/etc/motd", "content": "hello\n", "mode": "0644", "uid": 0, "gid": 0}]
//! }
//! ```
//!
//! - `hostname`: RFC 1123 (labels of letters, digits and `-`, at most 63 each, 253 in all).
//! - `network`: one entry per NIC; `interface` is a kernel name (`eth0`, `ens3`) or `"first"`
//!   (the first ethernet NIC); `"dhcp": true`, or a static `address` (`a.b.c.d/prefix`) with an
//!   optional `gateway` and `dns` list. Without `network`, the first NIC uses DHCP.
//! - `ssh-authorized-keys`: OpenSSH public key lines, for the admin container.
//! - `files`: written on first boot; paths must be under `/etc/` or `/var/` (not berth's own
//!   `/var/lib/berth/`), `mode` an octal string (default `"0644"`), owner numeric (default 0).
//! - `services`: container services, in the schema of [`crate::service`]; one with the name of
//!   an image service replaces it, the others run after the image's.
//! - `update`: the image's update policy overridden for this machine ([`crate::channel`]):
//!   `channel` (an `http://` URL), `check-interval` (seconds; 0 turns automatic checks off),
//!   `reboot` (`"now"`, `"never"`, `"HH:MM-HH:MM"` UTC).

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::json::{self, Node, Value};
use crate::schema::{array, err, int, quote, string, Fields};
use crate::{Error, Result};

/// The config version this berth reads.
pub const CONFIG_VERSION: i64 = 1;
/// Largest config accepted (the whole document), from any source.
pub const MAX_CONFIG_BYTES: usize = 256 * 1024;
/// Where QEMU's fw_cfg carries the config (`-fw_cfg name=…,file=…`).
pub const FW_CFG_NAME: &str = "opt/org.berth/config";
/// Where the machine keeps the config it applied (`berthctl config show`).
pub const APPLIED: &str = "/var/lib/berth/config.json";
/// Where the admin container's SSH server reads the authorized keys.
pub const AUTHORIZED_KEYS: &str = "/var/lib/berth/ssh/authorized_keys";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MachineConfig {
    pub hostname: Option<String>,
    pub network: Vec<Nic>,
    pub ssh_authorized_keys: Vec<String>,
    pub files: Vec<File>,
    /// Services added to the image's (or replacing the image's of the same name).
    pub services: Vec<crate::service::Service>,
    /// The machine's update policy over the image's.
    pub update: Option<crate::channel::Override>,
}

/// Which NIC an entry configures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Interface {
    First,
    Named(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addressing {
    Dhcp,
    Static {
        address: [u8; 4],
        prefix: u8,
        gateway: Option<[u8; 4]>,
        dns: Vec<[u8; 4]>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nic {
    pub interface: Interface,
    pub addressing: Addressing,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    pub path: String,
    pub content: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

fn ipv4(n: &Node, key: &str) -> Result<[u8; 4]> {
    let s = string(n, key)?;
    parse_ipv4(&s).ok_or_else(|| {
        err(
            n.pos,
            key,
            &format!("{s:?} is not an IPv4 address like \"10.0.2.15\""),
        )
    })
}

fn parse_ipv4(s: &str) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut parts = s.split('.');
    for o in &mut out {
        let p = parts.next()?;
        if p.is_empty()
            || p.len() > 3
            || !p.bytes().all(|b| b.is_ascii_digit())
            || (p.len() > 1 && p.starts_with('0'))
        {
            return None;
        }
        *o = p.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens.
pub fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// A file path the config may write: absolute, under /etc/ or /var/, no `.`/`..`/empty
/// components, not berth's own records.
fn valid_file_path(p: &str) -> core::result::Result<(), &'static str> {
    if !(p.starts_with("/etc/") || p.starts_with("/var/")) {
        return Err(
            "files may only be written under /etc/ or /var/ (the rest of the root is read-only)",
        );
    }
    if p.ends_with('/')
        || p[1..]
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("must be a normalised absolute path (no empty, `.` or `..` components)");
    }
    if p.starts_with("/var/lib/berth/") || p == "/var/lib/berth" {
        return Err("/var/lib/berth/ holds berth's own records and cannot be written by a config");
    }
    if p.contains('\0') || p.len() > 4096 {
        return Err("is not a usable path");
    }
    Ok(())
}

/// An OpenSSH public key line: `TYPE BASE64 [COMMENT]` on one line, TYPE a known key type.
pub fn valid_ssh_key(line: &str) -> bool {
    let kind = line.split(' ').next().unwrap_or("");
    !line.contains(['\n', '\r', '\0'])
        && SSH_KEY_TYPES.contains(&kind)
        && line.split(' ').nth(1).is_some_and(|b| {
            !b.is_empty()
                && b.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"+/=".contains(&c))
        })
}

/// The key types [`valid_ssh_key`] accepts.
pub const SSH_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

impl MachineConfig {
    /// Parses and checks a config; the error names `line:col`, the key and what is valid.
    pub fn parse(text: &str) -> Result<MachineConfig> {
        if text.len() > MAX_CONFIG_BYTES {
            return Err(Error::Invalid(format!(
                "the config is {} bytes; at most {MAX_CONFIG_BYTES} are accepted",
                text.len()
            )));
        }
        let doc = json::parse(text)?;
        let mut f = Fields::of(&doc, "")?;
        match f.take("version") {
            None => {
                return Err(err(
                    f.pos,
                    "version",
                    &format!(
                        "missing: a berth machine config starts with \"version\": {CONFIG_VERSION}"
                    ),
                ))
            }
            Some((n, k)) => {
                let v = int(n, &k, i64::MAX)?;
                if v != CONFIG_VERSION {
                    return Err(err(
                        n.pos,
                        &k,
                        &format!(
                            "this berth reads config version {CONFIG_VERSION}, the config says {v}"
                        ),
                    ));
                }
            }
        }
        let mut c = MachineConfig::default();
        if let Some((n, k)) = f.take("hostname") {
            let h = string(n, &k)?;
            if !valid_hostname(&h) {
                return Err(err(n.pos, &k, &format!("{h:?} is not a host name (letters, digits, inner `-`; labels of at most 63 separated by `.`)")));
            }
            c.hostname = Some(h);
        }
        if let Some((n, k)) = f.take("network") {
            for (i, e) in array(n, &k)?.iter().enumerate() {
                c.network.push(nic(e, &format!("{k}[{i}]"))?);
            }
        }
        if let Some((n, k)) = f.take("ssh-authorized-keys") {
            for (i, e) in array(n, &k)?.iter().enumerate() {
                let key = format!("{k}[{i}]");
                let line = string(e, &key)?;
                if !valid_ssh_key(&line) {
                    return Err(err(e.pos, &key, &format!("not an OpenSSH public key line (\"TYPE BASE64 [COMMENT]\", TYPE one of {})", SSH_KEY_TYPES.join(", "))));
                }
                c.ssh_authorized_keys.push(line);
            }
        }
        if let Some((n, k)) = f.take("files") {
            for (i, e) in array(n, &k)?.iter().enumerate() {
                let file = file(e, &format!("{k}[{i}]"))?;
                if let Some(o) = c.files.iter().position(|x| x.path == file.path) {
                    return Err(err(
                        e.pos,
                        &format!("{k}[{i}].path"),
                        &format!("{} is already written by {k}[{o}]", file.path),
                    ));
                }
                c.files.push(file);
            }
        }
        if let Some((n, k)) = f.take("services") {
            c.services = crate::service::list(n, &k)?;
        }
        if let Some((n, k)) = f.take("update") {
            c.update = Some(crate::channel::Override::parse(n, &k)?);
        }
        f.finish(&[
            "version",
            "hostname",
            "network",
            "ssh-authorized-keys",
            "files",
            "services",
            "update",
        ])?;
        Ok(c)
    }
}

/// An IPv4 address as text (`10.0.2.15`): for the JSON writer, `berth config check` and the
/// init's console line alike.
pub fn ipv4_text(a: &[u8; 4]) -> String {
    format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])
}

impl MachineConfig {
    /// The config as a document [`MachineConfig::parse`] reads back to the same value (for a
    /// config made on the machine, e.g. from EC2 metadata, so it can be kept and shown).
    pub fn to_json(&self) -> String {
        let mut parts = alloc::vec![format!("\"version\": {CONFIG_VERSION}")];
        if let Some(h) = &self.hostname {
            parts.push(format!("\"hostname\": {}", quote(h)));
        }
        if !self.network.is_empty() {
            let nics: Vec<String> = self
                .network
                .iter()
                .map(|n| {
                    let iface = match &n.interface {
                        Interface::First => "first".to_string(),
                        Interface::Named(s) => s.clone(),
                    };
                    let how = match &n.addressing {
                        Addressing::Dhcp => "\"dhcp\": true".to_string(),
                        Addressing::Static {
                            address,
                            prefix,
                            gateway,
                            dns,
                        } => {
                            let mut v = alloc::vec![format!(
                                "\"address\": \"{}/{prefix}\"",
                                ipv4_text(address)
                            )];
                            if let Some(g) = gateway {
                                v.push(format!("\"gateway\": \"{}\"", ipv4_text(g)));
                            }
                            if !dns.is_empty() {
                                let d: Vec<String> = dns
                                    .iter()
                                    .map(|d| format!("\"{}\"", ipv4_text(d)))
                                    .collect();
                                v.push(format!("\"dns\": [{}]", d.join(", ")));
                            }
                            v.join(", ")
                        }
                    };
                    format!("{{\"interface\": {}, {how}}}", quote(&iface))
                })
                .collect();
            parts.push(format!("\"network\": [{}]", nics.join(", ")));
        }
        if !self.ssh_authorized_keys.is_empty() {
            let k: Vec<String> = self.ssh_authorized_keys.iter().map(|k| quote(k)).collect();
            parts.push(format!("\"ssh-authorized-keys\": [{}]", k.join(", ")));
        }
        if !self.files.is_empty() {
            let f: Vec<String> = self
                .files
                .iter()
                .map(|f| {
                    format!(
                        "{{\"path\": {}, \"content\": {}, \"mode\": \"{:04o}\", \"uid\": {}, \"gid\": {}}}",
                        quote(&f.path),
                        quote(&f.content),
                        f.mode,
                        f.uid,
                        f.gid
                    )
                })
                .collect();
            parts.push(format!("\"files\": [{}]", f.join(", ")));
        }
        if !self.services.is_empty() {
            let s: Vec<String> = self.services.iter().map(|s| s.to_json()).collect();
            parts.push(format!("\"services\": [{}]", s.join(", ")));
        }
        if let Some(u) = &self.update {
            parts.push(format!("\"update\": {}", u.json()));
        }
        format!("{{{}}}\n", parts.join(", "))
    }
}

fn nic(n: &Node, prefix: &str) -> Result<Nic> {
    let mut f = Fields::of(n, prefix)?;
    let interface = match f.take("interface") {
        None => Interface::First,
        Some((v, k)) => {
            let s = string(v, &k)?;
            if s == "first" {
                Interface::First
            } else if !s.is_empty()
                && s.len() < 16
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                Interface::Named(s)
            } else {
                return Err(err(
                    v.pos,
                    &k,
                    &format!("{s:?} is not an interface name (like \"eth0\"), nor \"first\""),
                ));
            }
        }
    };
    let dhcp = match f.take("dhcp") {
        None => None,
        Some((v, k)) => match v.value {
            Value::Bool(b) => Some((b, v.pos, k)),
            ref other => {
                return Err(err(
                    v.pos,
                    &k,
                    &format!("expected true or false, found {}", other.kind()),
                ))
            }
        },
    };
    let address = f.take("address");
    let gateway = f.take("gateway");
    let dns = f.take("dns");
    let addressing = match (dhcp, address) {
        (Some((true, pos, k)), Some(_)) => {
            return Err(err(
                pos,
                &k,
                "give either \"dhcp\": true or a static \"address\", not both",
            ))
        }
        (Some((true, _, _)), None) => {
            if let Some((v, k)) = gateway.or(dns) {
                return Err(err(v.pos, &k, "only for a static address"));
            }
            Addressing::Dhcp
        }
        (_, Some((v, k))) => {
            let s = string(v, &k)?;
            let bad = || {
                err(
                    v.pos,
                    &k,
                    &format!("{s:?} is not an address with a prefix, like \"10.0.2.15/24\""),
                )
            };
            let (a, p) = s.split_once('/').ok_or_else(bad)?;
            let address = parse_ipv4(a).ok_or_else(bad)?;
            let prefix: u8 = p
                .parse()
                .ok()
                .filter(|p| (1..=32).contains(p))
                .ok_or_else(bad)?;
            let gateway = match gateway {
                Some((g, k)) => Some(ipv4(g, &k)?),
                None => None,
            };
            let mut servers = Vec::new();
            if let Some((d, k)) = dns {
                for (i, e) in array(d, &k)?.iter().enumerate() {
                    servers.push(ipv4(e, &format!("{k}[{i}]"))?);
                }
            }
            Addressing::Static {
                address,
                prefix,
                gateway,
                dns: servers,
            }
        }
        (Some((false, pos, k)), None) => {
            return Err(err(pos, &k, "false: give a static \"address\" instead"))
        }
        (None, None) => {
            return Err(err(
                n.pos,
                prefix,
                "give \"dhcp\": true or a static \"address\"",
            ))
        }
    };
    f.finish(&["interface", "dhcp", "address", "gateway", "dns"])?;
    Ok(Nic {
        interface,
        addressing,
    })
}

fn file(n: &Node, prefix: &str) -> Result<File> {
    let mut f = Fields::of(n, prefix)?;
    let (pn, pk) = f.take("path").ok_or_else(|| {
        err(
            n.pos,
            &format!("{prefix}.path"),
            "missing: every file needs a path",
        )
    })?;
    let path = string(pn, &pk)?;
    valid_file_path(&path).map_err(|m| err(pn.pos, &pk, &format!("{path:?}: {m}")))?;
    let content = match f.take("content") {
        Some((v, k)) => string(v, &k)?,
        None => String::new(),
    };
    let mode = match f.take("mode") {
        None => 0o644,
        Some((v, k)) => {
            let s = string(v, &k)?;
            u32::from_str_radix(&s, 8)
                .ok()
                .filter(|m| *m <= 0o7777 && !s.is_empty() && s.len() <= 4)
                .ok_or_else(|| {
                    err(
                        v.pos,
                        &k,
                        &format!(
                            "{s:?} is not an octal mode like \"0644\" (a string, up to 0o7777)"
                        ),
                    )
                })?
        }
    };
    let owner = |f: &mut Fields, key: &str| -> Result<u32> {
        match f.take(key) {
            None => Ok(0),
            // 2^32 - 1 is (uid_t)-1, "no change" to the kernel: not an owner.
            Some((v, k)) => Ok(int(v, &k, i64::from(u32::MAX) - 1)? as u32),
        }
    };
    let uid = owner(&mut f, "uid")?;
    let gid = owner(&mut f, "gid")?;
    f.finish(&["path", "content", "mode", "uid", "gid"])?;
    Ok(File {
        path,
        content,
        mode,
        uid,
        gid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    const FULL: &str = r#"{
  "version": 1,
  "hostname": "node-1.example",
  "network": [
    {"interface": "first", "address": "10.0.2.15/24", "gateway": "10.0.2.2", "dns": ["10.0.2.3"]},
    {"interface": "eth1", "dhcp": true}
  ],
  "ssh-authorized-keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA me@laptop"],
  "files": [
    {"path": "/etc/motd", "content": "hello\n"},
    {"path": "/var/lib/app/conf", "content": "x=1", "mode": "0600", "uid": 1000, "gid": 1000}
  ],
  "services": [
    {"name": "app", "image": "localhost/app:1", "command": ["/app", "--greeting", "hello world"],
     "env": {"MODE": "prod"}, "mounts": [{"source": "/var/lib/app", "target": "/data"}],
     "ready": {"tcp": 8080}}
  ]
}"#;

    #[test]
    fn a_full_config() {
        let c = MachineConfig::parse(FULL).unwrap();
        assert_eq!(c.hostname.as_deref(), Some("node-1.example"));
        assert_eq!(c.services.len(), 1);
        assert_eq!(c.services[0].command[2], "hello world");
        assert_eq!(c.services[0].ready, Some(crate::service::Ready::Tcp(8080)));
        assert_eq!(
            c.network,
            vec![
                Nic {
                    interface: Interface::First,
                    addressing: Addressing::Static {
                        address: [10, 0, 2, 15],
                        prefix: 24,
                        gateway: Some([10, 0, 2, 2]),
                        dns: vec![[10, 0, 2, 3]],
                    },
                },
                Nic {
                    interface: Interface::Named("eth1".into()),
                    addressing: Addressing::Dhcp
                },
            ]
        );
        assert_eq!(c.ssh_authorized_keys.len(), 1);
        assert_eq!(c.files[0].mode, 0o644);
        assert_eq!((c.files[1].mode, c.files[1].uid), (0o600, 1000));
        assert_eq!(
            MachineConfig::parse(r#"{"version": 1}"#).unwrap(),
            MachineConfig::default()
        );
    }

    #[test]
    fn every_schema_error_names_line_column_and_key() {
        for (doc, want) in [
            (r#"{}"#, "1:1: key `version`: missing"),
            (r#"{"version": 2}"#, "1:13: key `version`: this berth reads config version 1"),
            (r#"{"version": 1, "hostnam": "x"}"#, "1:27: key `hostnam`: unknown key; valid keys here: version, hostname"),
            (r#"{"version": 1, "hostname": 5}"#, "key `hostname`: expected a string, found a number"),
            (r#"{"version": 1, "hostname": "-bad"}"#, "not a host name"),
            (r#"{"version": 1, "files": [{"path": "/usr/bin/x"}]}"#, "key `files[0].path`: \"/usr/bin/x\": files may only be written under /etc/ or /var/"),
            (r#"{"version": 1, "files": [{"path": "/etc/../usr/x"}]}"#, "normalised"),
            (r#"{"version": 1, "files": [{"path": "/var/lib/berth/config.json"}]}"#, "berth's own records"),
            (r#"{"version": 1, "files": [{"content": "x"}]}"#, "key `files[0].path`: missing"),
            (r#"{"version": 1, "files": [{"path": "/etc/a", "mode": 644}]}"#, "key `files[0].mode`: expected a string"),
            (r#"{"version": 1, "files": [{"path": "/etc/a", "mode": "0999"}]}"#, "not an octal mode"),
            (r#"{"version": 1, "files": [{"path": "/etc/a", "uid": 4294967295}]}"#, "out of range"),
            (r#"{"version": 1, "files": [{"path": "/etc/a"}, {"path": "/etc/a"}]}"#, "key `files[1].path`: /etc/a is already written by files[0]"),
            (r#"{"version": 1, "files": [{"path": "/etc/a", "owner": "root"}]}"#, "key `files[0].owner`: unknown key"),
            (r#"{"version": 1, "network": [{"address": "10.0.0.1"}]}"#, "like \"10.0.2.15/24\""),
            (r#"{"version": 1, "network": [{"address": "10.0.0.300/24"}]}"#, "key `network[0].address`"),
            (r#"{"version": 1, "network": [{"dhcp": true, "address": "10.0.0.1/24"}]}"#, "not both"),
            (r#"{"version": 1, "network": [{"dhcp": true, "gateway": "10.0.0.1"}]}"#, "only for a static address"),
            (r#"{"version": 1, "network": [{"interface": "eth0"}]}"#, "key `network[0]`: give \"dhcp\": true or a static"),
            (r#"{"version": 1, "network": [{"interface": "a b", "dhcp": true}]}"#, "not an interface name"),
            (r#"{"version": 1, "network": {"dhcp": true}}"#, "key `network`: expected an array"),
            (r#"{"version": 1, "ssh-authorized-keys": ["hello"]}"#, "not an OpenSSH public key line"),
            (r#"["version", 1]"#, "expected an object, found an array"),
            ("{\"version\": 1,\n  \"files\": [\n    {\"path\": 1}]}", "3:14: key `files[0].path`"),
        ] {
            let e = MachineConfig::parse(doc).unwrap_err().to_string();
            assert!(e.contains(want), "{doc}\n  gave: {e}\n  want: {want}");
        }
    }

    #[test]
    fn to_json_reads_back_as_the_same_config() {
        let c = MachineConfig::parse(FULL).unwrap();
        assert_eq!(MachineConfig::parse(&c.to_json()).unwrap(), c);
        let odd = MachineConfig {
            hostname: Some("h".into()),
            files: vec![File {
                path: "/etc/q".into(),
                content: "quote \" backslash \\ tab \t nl \n ctl \u{1} é".into(),
                mode: 0o4755,
                uid: 1,
                gid: 2,
            }],
            ..Default::default()
        };
        assert_eq!(MachineConfig::parse(&odd.to_json()).unwrap(), odd);
        assert_eq!(MachineConfig::default().to_json(), "{\"version\": 1}\n");
    }

    #[test]
    fn garbage_and_huge_configs_are_refused() {
        assert!(MachineConfig::parse("\u{1}\u{2}binary").is_err());
        let big = format!(
            "{{\"version\": 1, \"hostname\": \"{}\"}}",
            "a".repeat(MAX_CONFIG_BYTES)
        );
        assert!(MachineConfig::parse(&big)
            .unwrap_err()
            .to_string()
            .contains("at most"));
    }
}
