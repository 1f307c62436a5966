//! Update channels (DESIGN.md "A/B updates"): a static directory any file server can host,
//! `channel.json` plus bundles, written by `berth publish channel` and read by
//! `berthctl update check`; and the image's policy for using one.
//!
//! `channel.json`:
//! ```json
//! {"schema": 1, "image": "berth", "arch": "x86_64",
//!  "latest": {"version": "0.2.0", "roothash": "<64 hex>", "bundle": "berth-0.2.0.bundle",
//!             "size": 276623561, "sha256": "<64 hex>"},
//!  "deltas": [{"from": "<roothash of the base>", "bundle": "berth-0.2.0-from-1a2b3c4d5e6f.bundle",
//!              "size": 89977033, "sha256": "<64 hex>"}]}
//! ```
//! Bundle names are relative to the channel's URL. The index is not signed: each bundle is
//! (its header signature, checked by the machine before it writes a byte), and a machine
//! never takes a version older than the one it runs.
//!
//! The policy (`paths::UPDATE_POLICY`, `key=value` lines; a machine config's `update` object
//! overrides it): `channel` (an `http://` URL), `check-interval` (seconds between automatic
//! checks; 0: only `berthctl update check`), `reboot` (`now`, `never`, a daily UTC window
//! `HH:MM-HH:MM` in which a machine with an applied update reboots, or `etcd-lock`: when it
//! holds the cluster's reboot lock, [`crate::lock`]).

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::json::{self, Node};
use crate::schema::{err, int, quote, string, Fields};
use crate::{Error, Result};

pub const SCHEMA: i64 = 1;
pub const INDEX_FILE: &str = "channel.json";

/// When a machine that applied an update reboots into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Reboot {
    #[default]
    Now,
    Never,
    /// Minutes after midnight UTC, start inclusive, end exclusive; may wrap past midnight.
    Window(u16, u16),
    /// When this machine holds the cluster's reboot lock in etcd ([`crate::lock`]): it takes
    /// the lock once the update is applied, reboots, and releases it when the new version is
    /// up, blessed and its etcd member healthy (locksmith's `etcd-lock` strategy).
    EtcdLock,
}

impl Reboot {
    pub fn parse(s: &str) -> core::result::Result<Reboot, String> {
        let bad = || {
            format!("{s:?} is not a reboot policy (valid: \"now\", \"never\", \"etcd-lock\", or a daily UTC window \"HH:MM-HH:MM\")")
        };
        match s {
            "now" => return Ok(Reboot::Now),
            "never" => return Ok(Reboot::Never),
            "etcd-lock" => return Ok(Reboot::EtcdLock),
            _ => {}
        }
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let hm = |t: &str| -> Option<u16> {
            let (h, m) = t.split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        let (a, b) = (hm(a).ok_or_else(bad)?, hm(b).ok_or_else(bad)?);
        if a == b {
            return Err(format!("{s:?}: the window is empty"));
        }
        Ok(Reboot::Window(a, b))
    }

    pub fn text(&self) -> String {
        match self {
            Reboot::Now => "now".into(),
            Reboot::Never => "never".into(),
            Reboot::EtcdLock => "etcd-lock".into(),
            Reboot::Window(a, b) => {
                format!("{:02}:{:02}-{:02}:{:02}", a / 60, a % 60, b / 60, b % 60)
            }
        }
    }

    /// Whether a reboot may happen at `unix` seconds (UTC) by the clock alone (`etcd-lock`:
    /// never; the lock decides).
    pub fn allows(&self, unix: u64) -> bool {
        let m = ((unix / 60) % (24 * 60)) as u16;
        match *self {
            Reboot::Now => true,
            Reboot::Never | Reboot::EtcdLock => false,
            Reboot::Window(a, b) if a < b => a <= m && m < b,
            Reboot::Window(a, b) => m >= a || m < b,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub channel: Option<String>,
    pub check_interval: u32,
    pub reboot: Reboot,
}

/// An `http://HOST[:PORT]/PATH` URL berthctl can fetch (no TLS in the init: bundles carry
/// their own signature).
pub fn check_url(u: &str) -> core::result::Result<(), String> {
    let rest = u.strip_prefix("http://").ok_or_else(|| {
        format!("{u:?} is not an http:// URL (berthctl fetches plain HTTP; bundles are signed)")
    })?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || u.contains(char::is_whitespace) || u.len() > 2048 {
        return Err(format!("{u:?} is not a usable URL"));
    }
    Ok(())
}

/// The longest check interval (a week).
pub const MAX_INTERVAL: u32 = 7 * 86_400;

impl Policy {
    /// Sets one key from text (the policy file, a profile); `what` names the source and key.
    pub fn set(&mut self, key: &str, value: &str, what: &str) -> Result<()> {
        let e = |m: String| Error::Invalid(format!("{what}: {m}"));
        match key {
            "channel" => {
                check_url(value).map_err(e)?;
                self.channel = Some(value.to_string());
            }
            "check-interval" => {
                let v: u32 = value
                    .parse()
                    .ok()
                    .filter(|v| *v <= MAX_INTERVAL)
                    .ok_or_else(|| {
                        e(format!(
                            "{value:?} is not a number of seconds from 0 to {MAX_INTERVAL}"
                        ))
                    })?;
                self.check_interval = v;
            }
            "reboot" => self.reboot = Reboot::parse(value).map_err(e)?,
            _ => {
                return Err(Error::Invalid(format!(
                    "{what}: unknown key {key:?} (valid: channel, check-interval, reboot)"
                )))
            }
        }
        Ok(())
    }

    pub fn text(&self) -> String {
        let mut s = String::new();
        if let Some(c) = &self.channel {
            s.push_str(&format!("channel={c}\n"));
        }
        s.push_str(&format!(
            "check-interval={}\nreboot={}\n",
            self.check_interval,
            self.reboot.text()
        ));
        s
    }

    pub fn parse(text: &str) -> Result<Policy> {
        let mut p = Policy::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line.split_once('=').ok_or_else(|| {
                Error::Invalid(format!("update policy line {}: expected key=value", n + 1))
            })?;
            let what = format!("update policy line {}: {}", n + 1, k.trim());
            p.set(k.trim(), v.trim(), &what)?;
        }
        Ok(p)
    }
}

/// A machine config's `update` object: the keys it sets, over the image's policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Override {
    pub channel: Option<String>,
    pub check_interval: Option<u32>,
    pub reboot: Option<Reboot>,
}

impl Override {
    pub fn apply(&self, p: &mut Policy) {
        if let Some(c) = &self.channel {
            p.channel = Some(c.clone());
        }
        if let Some(i) = self.check_interval {
            p.check_interval = i;
        }
        if let Some(r) = self.reboot {
            p.reboot = r;
        }
    }

    pub(crate) fn parse(n: &Node, prefix: &str) -> Result<Override> {
        let mut o = Override::default();
        let mut f = Fields::of(n, prefix)?;
        if let Some((v, k)) = f.take("channel") {
            let s = string(v, &k)?;
            check_url(&s).map_err(|m| err(v.pos, &k, &m))?;
            o.channel = Some(s);
        }
        if let Some((v, k)) = f.take("check-interval") {
            o.check_interval = Some(int(v, &k, i64::from(MAX_INTERVAL))? as u32);
        }
        if let Some((v, k)) = f.take("reboot") {
            let s = string(v, &k)?;
            o.reboot = Some(Reboot::parse(&s).map_err(|m| err(v.pos, &k, &m))?);
        }
        f.finish(&["channel", "check-interval", "reboot"])?;
        Ok(o)
    }

    pub(crate) fn json(&self) -> String {
        let mut parts = Vec::new();
        if let Some(c) = &self.channel {
            parts.push(format!("\"channel\": {}", quote(c)));
        }
        if let Some(i) = self.check_interval {
            parts.push(format!("\"check-interval\": {i}"));
        }
        if let Some(r) = &self.reboot {
            parts.push(format!("\"reboot\": {}", quote(&r.text())));
        }
        format!("{{{}}}", parts.join(", "))
    }
}

/// One bundle in a channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// File name relative to the channel.
    pub bundle: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Index {
    pub image: String,
    pub arch: String,
    pub version: String,
    pub roothash: String,
    pub full: Entry,
    /// (root hash of the base, bundle).
    pub deltas: Vec<(String, Entry)>,
}

fn hex64(n: &Node, key: &str) -> Result<String> {
    let s = string(n, key)?;
    if s.len() != 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(err(n.pos, key, "expected 64 lower-case hex digits"));
    }
    Ok(s)
}

fn bundle_name(n: &Node, key: &str) -> Result<String> {
    let s = string(n, key)?;
    if s.is_empty()
        || s.starts_with('.')
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+~".contains(&b))
    {
        return Err(err(
            n.pos,
            key,
            "expected a file name in the channel (letters, digits, . _ - + ~)",
        ));
    }
    Ok(s)
}

fn need<'a>(f: &mut Fields<'a>, k: &str) -> Result<(&'a Node, String)> {
    let pos = f.pos;
    let key = if f.prefix.is_empty() {
        k.to_string()
    } else {
        format!("{}.{k}", f.prefix)
    };
    f.take(k).ok_or_else(|| err(pos, &key, "missing"))
}

fn entry(f: &mut Fields<'_>) -> Result<Entry> {
    let (n, k) = need(f, "bundle")?;
    let bundle = bundle_name(n, &k)?;
    let (n, k) = need(f, "size")?;
    let size = int(n, &k, i64::MAX)? as u64;
    let (n, k) = need(f, "sha256")?;
    let sha256 = hex64(n, &k)?;
    Ok(Entry {
        bundle,
        size,
        sha256,
    })
}

impl Index {
    pub fn parse(text: &str) -> Result<Index> {
        let doc = json::parse(text)?;
        let mut f = Fields::of(&doc, "")?;
        let (n, k) = need(&mut f, "schema")?;
        if int(n, &k, i64::MAX)? != SCHEMA {
            return Err(err(
                n.pos,
                &k,
                &format!("this berth reads channel schema {SCHEMA}"),
            ));
        }
        let (n, k) = need(&mut f, "image")?;
        let image = string(n, &k)?;
        let (n, k) = need(&mut f, "arch")?;
        let arch = string(n, &k)?;
        let (n, k) = need(&mut f, "latest")?;
        let mut lf = Fields::of(n, &k)?;
        let (v, vk) = need(&mut lf, "version")?;
        let version = string(v, &vk)?;
        let (v, vk) = need(&mut lf, "roothash")?;
        let roothash = hex64(v, &vk)?;
        let full = entry(&mut lf)?;
        lf.finish(&["version", "roothash", "bundle", "size", "sha256"])?;
        let mut deltas = Vec::new();
        if let Some((n, k)) = f.take("deltas") {
            for (i, d) in crate::schema::array(n, &k)?.iter().enumerate() {
                let mut df = Fields::of(d, &format!("{k}[{i}]"))?;
                let (v, vk) = need(&mut df, "from")?;
                let from = hex64(v, &vk)?;
                let e = entry(&mut df)?;
                df.finish(&["from", "bundle", "size", "sha256"])?;
                deltas.push((from, e));
            }
        }
        f.finish(&["schema", "image", "arch", "latest", "deltas"])?;
        Ok(Index {
            image,
            arch,
            version,
            roothash,
            full,
            deltas,
        })
    }

    pub fn text(&self) -> String {
        let e = |e: &Entry| {
            format!(
                "\"bundle\": {}, \"size\": {}, \"sha256\": {}",
                quote(&e.bundle),
                e.size,
                quote(&e.sha256)
            )
        };
        let deltas: Vec<String> = self
            .deltas
            .iter()
            .map(|(from, d)| format!("    {{\"from\": {}, {}}}", quote(from), e(d)))
            .collect();
        format!(
            "{{\n  \"schema\": {SCHEMA},\n  \"image\": {},\n  \"arch\": {},\n  \"latest\": {{\"version\": {}, \"roothash\": {}, {}}},\n  \"deltas\": [{}{}{}]\n}}\n",
            quote(&self.image),
            quote(&self.arch),
            quote(&self.version),
            quote(&self.roothash),
            e(&self.full),
            if deltas.is_empty() { "" } else { "\n" },
            deltas.join(",\n"),
            if deltas.is_empty() { "" } else { "\n  " },
        )
    }

    /// The bundle a machine running `roothash` should fetch: its delta if the channel has
    /// one, else the full bundle.
    pub fn pick(&self, roothash: &str) -> &Entry {
        self.deltas
            .iter()
            .find(|(from, _)| from == roothash)
            .map_or(&self.full, |(_, e)| e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reboot_windows() {
        assert_eq!(Reboot::parse("now"), Ok(Reboot::Now));
        let w = Reboot::parse("02:00-04:30").unwrap();
        assert_eq!(w, Reboot::Window(120, 270));
        assert_eq!(w.text(), "02:00-04:30");
        assert!(w.allows(3 * 3600) && !w.allows(5 * 3600) && !w.allows(86_400 + 3600));
        let wrap = Reboot::parse("23:00-01:00").unwrap();
        assert!(wrap.allows(23 * 3600 + 5) && wrap.allows(1800) && !wrap.allows(2 * 3600));
        for bad in [
            "sometimes",
            "2:00-04:00",
            "25:00-01:00",
            "01:00-01:00",
            "01:00",
        ] {
            assert!(Reboot::parse(bad).is_err(), "{bad}");
        }
        assert!(!Reboot::Never.allows(0));
        let l = Reboot::parse("etcd-lock").unwrap();
        assert_eq!(l, Reboot::EtcdLock);
        assert_eq!(l.text(), "etcd-lock");
        assert!(!l.allows(0), "the lock decides, not the clock");
    }

    #[test]
    fn policy_round_trips() {
        let mut p = Policy::default();
        p.set("channel", "http://10.0.2.100:8080/stable/", "t")
            .unwrap();
        p.set("check-interval", "600", "t").unwrap();
        p.set("reboot", "03:00-05:00", "t").unwrap();
        assert_eq!(Policy::parse(&p.text()), Ok(p.clone()));
        for (k, v) in [
            ("channel", "https://x/"),
            ("channel", "ftp://x"),
            ("check-interval", "-1"),
            ("check-interval", "99999999"),
            ("reboot", "later"),
            ("interval", "1"),
        ] {
            assert!(Policy::default().set(k, v, "t").is_err(), "{k}={v}");
        }
    }

    #[test]
    fn index_round_trips_and_picks_the_delta() {
        let h = |c: char| core::iter::repeat_n(c, 64).collect::<String>();
        let e = |n: &str| Entry {
            bundle: n.into(),
            size: 10,
            sha256: h('c'),
        };
        let i = Index {
            image: "berth".into(),
            arch: "x86_64".into(),
            version: "0.2.0".into(),
            roothash: h('a'),
            full: e("berth-0.2.0.bundle"),
            deltas: alloc::vec![(h('b'), e("berth-0.2.0-from-bbbb.bundle"))],
        };
        assert_eq!(Index::parse(&i.text()), Ok(i.clone()));
        assert_eq!(i.pick(&h('b')).bundle, "berth-0.2.0-from-bbbb.bundle");
        assert_eq!(i.pick(&h('d')).bundle, "berth-0.2.0.bundle");
        let no_delta = Index {
            deltas: alloc::vec![],
            ..i.clone()
        };
        assert_eq!(Index::parse(&no_delta.text()), Ok(no_delta));
        let bad = i.text().replace("berth-0.2.0.bundle", "../../etc/passwd");
        assert!(Index::parse(&bad)
            .unwrap_err()
            .message()
            .contains("file name"));
    }
}
