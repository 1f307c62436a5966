//! The kernel command line's `berth.*` keys, written into a slot's boot entry by `berth build`
//! (and by `berthctl update`) and read by berth-init from `/proc/cmdline`.
//!
//! | key | example | meaning |
//! |---|---|---|
//! | `berth.slot` | `a` | the slot this entry boots (`a` or `b`) |
//! | `berth.version` | `0.1.0` | image version of that slot |
//! | `berth.root` | `PARTUUID=4f3c…` | the slot's root partition (GPT unique partition GUID, lower-case) |
//! | `berth.verity` | `PARTUUID=9a1b…` | the slot's verity hash partition |
//! | `berth.roothash` | 64 hex digits | dm-verity root hash of the slot |
//! | `berth.state` | `PARTUUID=…` | the state partition |
//! | `berth.after-ready` | `poweroff` / `reboot` | optional: once ready, shut down cleanly (CI smoke tests) |
//!
//! Unknown `berth.*` keys and malformed values are warnings for the init (it boots what it can
//! and says what it ignored), and errors for [`BootArgs::parse`].

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::str::FromStr;

use crate::{Error, Guid, Result, Slot};

/// What `berth.after-ready` asks for once the machine is ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Halt {
    Poweroff,
    Reboot,
}

impl Halt {
    pub fn name(self) -> &'static str {
        match self {
            Halt::Poweroff => "poweroff",
            Halt::Reboot => "reboot",
        }
    }
}

impl FromStr for Halt {
    type Err = Error;

    fn from_str(s: &str) -> Result<Halt> {
        match s {
            "poweroff" => Ok(Halt::Poweroff),
            "reboot" => Ok(Halt::Reboot),
            _ => Err(Error::Invalid(format!(
                "{s:?} is not \"poweroff\" or \"reboot\""
            ))),
        }
    }
}

/// A slot's boot arguments: what its boot entry's `options` line says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootArgs {
    pub slot: Slot,
    pub version: String,
    pub root: Guid,
    pub verity: Guid,
    /// 64 lower-case hex digits.
    pub roothash: String,
    pub state: Guid,
    pub after_ready: Option<Halt>,
    /// The other words of the line (`console=ttyS0 panic=10 …`), in order.
    pub extra: Vec<String>,
}

/// What the init read from a command line: every key it understood, and what it ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cmdline {
    pub slot: Option<Slot>,
    pub version: Option<String>,
    pub root: Option<Guid>,
    pub verity: Option<Guid>,
    pub roothash: Option<String>,
    pub state: Option<Guid>,
    pub after_ready: Option<Halt>,
    /// The words that are not `berth.*` keys, in order.
    pub extra: Vec<String>,
    /// Unknown `berth.*` keys and malformed values, one message each.
    pub warnings: Vec<String>,
}

/// Splits like the kernel does: on whitespace, with double quotes protecting spaces (the
/// quotes themselves are dropped).
pub fn words(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(core::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn is_roothash(v: &str) -> bool {
    v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Cmdline {
    /// Reads every word; never fails (see [`Cmdline::warnings`]).
    pub fn parse(line: &str) -> Cmdline {
        let mut c = Cmdline::default();
        for w in words(line) {
            let Some(key) = w.strip_prefix("berth.") else {
                c.extra.push(w);
                continue;
            };
            let (k, v) = key.split_once('=').unwrap_or((key, ""));
            let full = format!("berth.{k}");
            let partuuid =
                |warnings: &mut Vec<String>| match v.strip_prefix("PARTUUID=").map(Guid::parse) {
                    Some(Ok(g)) => Some(g),
                    _ => {
                        warnings.push(format!("{full}={v:?} is not PARTUUID=<guid>; ignored"));
                        None
                    }
                };
            match k {
                "root" => c.root = partuuid(&mut c.warnings),
                "verity" => c.verity = partuuid(&mut c.warnings),
                "state" => c.state = partuuid(&mut c.warnings),
                "slot" if v.parse::<Slot>().is_ok() => c.slot = v.parse().ok(),
                // What BootArgs::validate allows: a quoted version with a space in it would not
                // read back as it was (the fuzzer's find).
                "version"
                    if !v.is_empty() && !v.contains(|c: char| c.is_whitespace() || c == '"') =>
                {
                    c.version = Some(v.into())
                }
                "roothash" if is_roothash(v) => c.roothash = Some(v.to_ascii_lowercase()),
                "after-ready" if v.parse::<Halt>().is_ok() => c.after_ready = v.parse().ok(),
                "slot" | "version" | "roothash" | "after-ready" => c
                    .warnings
                    .push(format!("{full}={v:?} is not a valid value; ignored")),
                _ => c
                    .warnings
                    .push(format!("unknown kernel command line key {full}; ignored")),
            }
        }
        c
    }

    /// The boot arguments, if every key the initrd stage needs is there.
    pub fn boot_args(&self) -> Result<BootArgs> {
        let mut missing = Vec::new();
        for (key, present) in [
            ("berth.slot", self.slot.is_some()),
            ("berth.version", self.version.is_some()),
            ("berth.root", self.root.is_some()),
            ("berth.verity", self.verity.is_some()),
            ("berth.roothash", self.roothash.is_some()),
            ("berth.state", self.state.is_some()),
        ] {
            if !present {
                missing.push(key);
            }
        }
        match (self.slot, &self.version, self.root, self.verity, &self.roothash, self.state) {
            (Some(slot), Some(version), Some(root), Some(verity), Some(roothash), Some(state)) => {
                Ok(BootArgs {
                    slot,
                    version: version.clone(),
                    root,
                    verity,
                    roothash: roothash.clone(),
                    state,
                    after_ready: self.after_ready,
                    extra: self.extra.clone(),
                })
            }
            _ => Err(Error::Invalid(format!(
                "the kernel command line lacks {} (or has them malformed): the boot entry is broken",
                missing.join(", ")
            ))),
        }
    }
}

impl BootArgs {
    /// Parses a command line strictly: every `berth.*` key must be known and well-formed, and
    /// the required ones present.
    pub fn parse(line: &str) -> Result<BootArgs> {
        let c = Cmdline::parse(line);
        if let Some(w) = c.warnings.first() {
            return Err(Error::Invalid(w.replace("; ignored", "")));
        }
        c.boot_args()
    }

    /// Checks that the line will read back as it was written: no word may hold a double
    /// quote, the version no whitespace, and the extra words no `berth.*` key.
    pub fn validate(&self) -> Result<()> {
        if self.version.is_empty() || self.version.chars().any(|c| c.is_whitespace() || c == '"') {
            return Err(Error::Invalid(format!(
                "version {:?} cannot go on a kernel command line: it must be non-empty, without spaces or quotes",
                self.version
            )));
        }
        if !is_roothash(&self.roothash) || self.roothash.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(Error::Invalid(format!(
                "root hash {:?} is not 64 lower-case hex digits",
                self.roothash
            )));
        }
        for w in &self.extra {
            if w.contains('"') || w.is_empty() {
                return Err(Error::Invalid(format!(
                    "kernel command line word {w:?}: empty words and double quotes cannot be passed"
                )));
            }
            if w.starts_with("berth.") {
                return Err(Error::Invalid(format!(
                    "kernel command line word {w:?}: berth.* keys are set by berth itself"
                )));
            }
        }
        Ok(())
    }
}

/// The `berth.*` keys first, then the extra words (quoted where they hold whitespace).
impl fmt::Display for BootArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "berth.slot={} berth.version={} berth.root=PARTUUID={} berth.verity=PARTUUID={} berth.roothash={} berth.state=PARTUUID={}",
            self.slot, self.version, self.root, self.verity, self.roothash, self.state
        )?;
        if let Some(h) = self.after_ready {
            write!(f, " berth.after-ready={}", h.name())?;
        }
        for w in &self.extra {
            if w.chars().any(char::is_whitespace) {
                write!(f, " \"{w}\"")?;
            } else {
                write!(f, " {w}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for BootArgs {
    type Err = Error;

    fn from_str(s: &str) -> Result<BootArgs> {
        BootArgs::parse(s)
    }
}

/// Splits a profile's `kernel.cmdline` into the words [`BootArgs::extra`] holds.
pub fn extra_words(s: &str) -> Vec<String> {
    words(s).into_iter().map(|w| w.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (fuzz, cmdline): `berth.version=0.2"0 b.2"0` read as the version "0.20 b.20",
    /// which berth writes back as two words, so the line did not survive a round trip.
    #[test]
    fn a_version_with_a_quoted_space_is_not_taken() {
        let line = "berth.slot=b berth.version=0.2\"0 b.2\"0 berth.root=PARTUUID=01010101-0101-0101-0101-010101010101 berth.verity=PARTUUID=02020202-0202-0202-0202-020202020202 berth.roothash=abababababababababababababababababababababababababababababababab berth.state=PARTUUID=03030303-0303-0303-0303-030303030303 console=ttyS0";
        let e = BootArgs::parse(line).unwrap_err().to_string();
        assert!(
            e.contains("berth.version") && e.contains("not a valid value"),
            "{e}"
        );
        let c = Cmdline::parse(line);
        assert_eq!(c.version, None);
    }
    use alloc::vec;

    fn args() -> BootArgs {
        BootArgs {
            slot: Slot::B,
            version: "1.2.3-rc1".into(),
            root: Guid::parse("4f3c0000-1111-2222-3333-444455556666").unwrap(),
            verity: Guid::parse("9a1b0000-1111-2222-3333-444455556666").unwrap(),
            roothash: "ab".repeat(32),
            state: Guid::parse("00000000-0000-0000-0000-000000000006").unwrap(),
            after_ready: None,
            extra: vec!["console=ttyS0".into(), "panic=10".into(), "quiet".into()],
        }
    }

    #[test]
    fn parse_display_round_trip() {
        let a = args();
        a.validate().unwrap();
        assert_eq!(BootArgs::parse(&a.to_string()).unwrap(), a);
        for (slot, halt, extra) in [
            (Slot::A, Some(Halt::Poweroff), vec![]),
            (
                Slot::B,
                Some(Halt::Reboot),
                vec!["init=/x".to_string(), "a b".to_string()],
            ),
        ] {
            let b = BootArgs {
                slot,
                after_ready: halt,
                extra,
                ..args()
            };
            assert_eq!(b.to_string().parse::<BootArgs>().unwrap(), b);
        }
        // The builder's line, exactly.
        assert!(a
            .to_string()
            .starts_with("berth.slot=b berth.version=1.2.3-rc1 berth.root=PARTUUID=4f3c0000-"));
        assert!(a.to_string().ends_with(" console=ttyS0 panic=10 quiet"));
    }

    #[test]
    fn parses_what_a_boot_loader_passes() {
        let h = "ab".repeat(32);
        let c = Cmdline::parse(&format!(
            "initrd=\\berth\\a\\initrd console=ttyS0 berth.slot=a berth.version=0.1.0 \
             berth.root=PARTUUID=4f3c0000-1111-2222-3333-444455556666 \
             berth.verity=PARTUUID=9A1B0000-1111-2222-3333-444455556666 berth.roothash={} \
             berth.state=PARTUUID=00000000-0000-0000-0000-000000000006 berth.after-ready=poweroff \
             berth.colour=blue \"quoted arg=x y\"",
            h.to_uppercase()
        ));
        assert_eq!(c.slot, Some(Slot::A));
        assert_eq!(c.version.as_deref(), Some("0.1.0"));
        assert_eq!(
            c.verity.unwrap().to_string(),
            "9a1b0000-1111-2222-3333-444455556666"
        );
        assert_eq!(c.roothash.as_deref(), Some(h.as_str()));
        assert_eq!(c.after_ready, Some(Halt::Poweroff));
        assert_eq!(
            c.warnings,
            vec!["unknown kernel command line key berth.colour; ignored"]
        );
        assert_eq!(
            c.extra,
            [
                "initrd=\\berth\\a\\initrd",
                "console=ttyS0",
                "quoted arg=x y"
            ]
        );
        let b = c.boot_args().unwrap();
        assert_eq!(b.slot, Slot::A);
        // Strict parsing refuses the unknown key.
        let e = BootArgs::parse(
            &b.to_string()
                .replace(" console", " berth.colour=blue console"),
        );
        assert!(e.unwrap_err().to_string().contains("berth.colour"));
    }

    #[test]
    fn bad_values_warn_and_missing_keys_fail() {
        let c = Cmdline::parse(
            "berth.slot=c berth.root=/dev/vda2 berth.roothash=xyz berth.after-ready=halt",
        );
        assert_eq!((c.slot, c.root, c.after_ready), (None, None, None));
        assert_eq!(c.warnings.len(), 4, "{:?}", c.warnings);
        let e = c.boot_args().unwrap_err().to_string();
        assert!(
            e.contains("berth.roothash") && e.contains("berth.state"),
            "{e}"
        );
        assert!(!e.contains("berth.after-ready"), "{e}");
        assert_eq!(words(r#"a "b c" d"#), ["a", "b c", "d"]);
    }

    #[test]
    fn validate_refuses_lines_that_would_not_read_back() {
        assert!(BootArgs {
            version: "1 2".into(),
            ..args()
        }
        .validate()
        .is_err());
        assert!(BootArgs {
            roothash: "AB".repeat(32),
            ..args()
        }
        .validate()
        .is_err());
        assert!(BootArgs {
            extra: vec!["berth.slot=a".into()],
            ..args()
        }
        .validate()
        .is_err());
        assert!(BootArgs {
            extra: vec!["a\"b".into()],
            ..args()
        }
        .validate()
        .is_err());
    }
}
