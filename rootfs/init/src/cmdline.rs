//! The kernel command line's `berth.*` keys (README.md, "Kernel command line").

use crate::gpt::Guid;
use crate::{fail, Result};

/// What berth.after-ready asks for once the machine is ready (CI smoke tests).
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

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cmdline {
    pub slot: Option<String>,
    pub version: Option<String>,
    pub root: Option<Guid>,
    pub verity: Option<Guid>,
    pub roothash: Option<String>,
    pub state: Option<Guid>,
    pub after_ready: Option<Halt>,
    /// Lines to print: unknown `berth.*` keys, malformed values.
    pub warnings: Vec<String>,
}

/// Splits like the kernel does: on spaces, with double quotes protecting spaces.
fn words(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
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

fn partuuid(key: &str, v: &str, warnings: &mut Vec<String>) -> Option<Guid> {
    match v.strip_prefix("PARTUUID=").map(Guid::parse) {
        Some(Ok(g)) => Some(g),
        _ => {
            warnings.push(format!("{key}={v:?} is not PARTUUID=<guid>; ignored"));
            None
        }
    }
}

pub fn parse(line: &str) -> Cmdline {
    let mut c = Cmdline::default();
    for w in words(line) {
        let Some(key) = w.strip_prefix("berth.") else {
            continue;
        };
        let (k, v) = key.split_once('=').unwrap_or((key, ""));
        let full = format!("berth.{k}");
        match k {
            "slot" if v == "a" || v == "b" => c.slot = Some(v.into()),
            "version" if !v.is_empty() => c.version = Some(v.into()),
            "root" => c.root = partuuid(&full, v, &mut c.warnings),
            "verity" => c.verity = partuuid(&full, v, &mut c.warnings),
            "state" => c.state = partuuid(&full, v, &mut c.warnings),
            "roothash" if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) => {
                c.roothash = Some(v.to_ascii_lowercase())
            }
            "after-ready" if v == "poweroff" => c.after_ready = Some(Halt::Poweroff),
            "after-ready" if v == "reboot" => c.after_ready = Some(Halt::Reboot),
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

pub fn read() -> Result<Cmdline> {
    Ok(parse(&crate::read_trim("/proc/cmdline")?))
}

/// The keys the initrd stage cannot boot without.
pub struct BootKeys {
    pub root: Guid,
    pub verity: Guid,
    pub state: Guid,
    pub roothash: String,
}

impl Cmdline {
    pub fn boot_keys(&self) -> Result<BootKeys> {
        match (self.root, self.verity, self.state, &self.roothash) {
            (Some(root), Some(verity), Some(state), Some(h)) => Ok(BootKeys {
                root,
                verity,
                state,
                roothash: h.clone(),
            }),
            _ => fail!(
                "reading berth.root, berth.verity, berth.state and berth.roothash from the kernel \
                 command line: missing or malformed (the boot entry is broken)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_boot_entry_line() {
        let h = "ab".repeat(32);
        let c = parse(&format!(
            "initrd=\\berth\\a\\initrd console=ttyS0 berth.slot=a berth.version=0.1.0 \
             berth.root=PARTUUID=4f3c0000-1111-2222-3333-444455556666 \
             berth.verity=PARTUUID=9A1B0000-1111-2222-3333-444455556666 berth.roothash={} \
             berth.state=PARTUUID=00000000-0000-0000-0000-000000000006 berth.after-ready=poweroff \
             berth.colour=blue \"quoted arg=x y\"",
            h.to_uppercase()
        ));
        assert_eq!(c.slot.as_deref(), Some("a"));
        assert_eq!(c.version.as_deref(), Some("0.1.0"));
        assert_eq!(
            c.root.unwrap().to_string(),
            "4f3c0000-1111-2222-3333-444455556666"
        );
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
        assert!(c.boot_keys().is_ok());
    }

    #[test]
    fn bad_values_warn_and_missing_keys_fail() {
        let c =
            parse("berth.slot=c berth.root=/dev/vda2 berth.roothash=xyz berth.after-ready=halt");
        assert_eq!(c.slot, None);
        assert_eq!(c.root, None);
        assert_eq!(c.after_ready, None);
        assert_eq!(c.warnings.len(), 4, "{:?}", c.warnings);
        let e = c.boot_keys().err().unwrap();
        assert!(e.0.contains("berth.roothash"), "{e}");
        assert_eq!(words(r#"a "b c" d"#), ["a", "b c", "d"]);
    }
}
