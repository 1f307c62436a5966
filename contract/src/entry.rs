//! systemd-boot boot entries for the slots: their file names (with boot counting), their text,
//! and `loader.conf`.
//!
//! Boot counting (systemd's "Automatic Boot Assessment"): an entry named
//! `berth-a+LEFT[-DONE].conf` has LEFT tries left and DONE used. Each time systemd-boot boots
//! it, it renames it to `+(LEFT-1)-(DONE+1)`; an entry with no tries left sorts last. The
//! booted system *blesses* a good boot by renaming the entry to `berth-a.conf`, which stops the
//! counting.

use alloc::format;
use alloc::string::String;
use core::fmt;

use crate::paths;
use crate::{BootArgs, Error, Result, Slot};

/// The `sort-key` of every berth entry: entries then order by version, newest first.
pub const SORT_KEY: &str = "berth";

/// A boot-counting state: tries left and tries done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tries {
    pub left: u32,
    pub done: u32,
}

/// The file name of a slot's entry in `loader/entries/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryName {
    pub slot: Slot,
    /// `None`: blessed (or counting off).
    pub tries: Option<Tries>,
}

impl EntryName {
    /// A fresh entry with `tries` tries (0: no counting, already blessed).
    pub fn new(slot: Slot, tries: u32) -> EntryName {
        EntryName {
            slot,
            tries: (tries > 0).then_some(Tries {
                left: tries,
                done: 0,
            }),
        }
    }

    /// `berth-a.conf`, `berth-a+3.conf`, `berth-a+2-1.conf`.
    pub fn file_name(&self) -> String {
        match self.tries {
            None => format!("berth-{}.conf", self.slot),
            Some(Tries { left, done: 0 }) => format!("berth-{}+{left}.conf", self.slot),
            Some(Tries { left, done }) => format!("berth-{}+{left}-{done}.conf", self.slot),
        }
    }

    /// Recognises a berth entry's file name; anything else (another OS's entry, a temporary
    /// file) is `None`.
    pub fn parse(name: &str) -> Option<EntryName> {
        let rest = name.strip_prefix("berth-")?.strip_suffix(".conf")?;
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit());
        let (slot, counter) = match rest.split_once('+') {
            Some((s, c)) => (s, Some(c)),
            None => (rest, None),
        };
        let slot: Slot = slot.parse().ok()?;
        let tries = match counter {
            None => None,
            Some(c) => {
                let (left, done) = c.split_once('-').unwrap_or((c, "0"));
                if !digits(left) || !digits(done) {
                    return None;
                }
                Some(Tries {
                    left: left.parse().ok()?,
                    done: done.parse().ok()?,
                })
            }
        };
        Some(EntryName { slot, tries })
    }

    /// The name after blessing: no counter.
    pub fn blessed(&self) -> EntryName {
        EntryName {
            tries: None,
            ..*self
        }
    }

    pub fn is_blessed(&self) -> bool {
        self.tries.is_none()
    }

    /// No tries left: systemd-boot sorts it last, and the booted slot reports a rollback.
    pub fn is_bad(&self) -> bool {
        matches!(self.tries, Some(Tries { left: 0, .. }))
    }

    /// The name systemd-boot gives the entry when it boots it (one try used); a blessed or
    /// bad entry keeps its name.
    pub fn tried(&self) -> EntryName {
        match self.tries {
            Some(Tries { left, done }) if left > 0 => EntryName {
                tries: Some(Tries {
                    left: left - 1,
                    done: done + 1,
                }),
                ..*self
            },
            _ => *self,
        }
    }
}

impl fmt::Display for EntryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file_name())
    }
}

/// A slot's boot entry: what the file says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootEntry {
    pub args: BootArgs,
}

impl BootEntry {
    /// The entry's text (Boot Loader Specification type #1). `version` with the shared
    /// `sort-key` makes systemd-boot pick the newest slot first.
    pub fn text(&self) -> String {
        let (v, slot) = (&self.args.version, self.args.slot);
        format!(
            "title berth {v} (slot {slot})\nsort-key {SORT_KEY}\nversion {v}\nlinux {}\ninitrd {}\noptions {}\n",
            paths::slot_kernel(slot),
            paths::slot_initrd(slot),
            self.args
        )
    }

    /// Reads an entry berth wrote: the kernel and initrd must be the slot's, the options a
    /// valid berth command line for that slot and version.
    pub fn parse(text: &str) -> Result<BootEntry> {
        let mut options = None;
        let (mut linux, mut initrd, mut version) = (None, None, None);
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let v = v.trim();
            match k {
                "options" => options = Some(v),
                "linux" => linux = Some(v),
                "initrd" => initrd = Some(v),
                "version" => version = Some(v),
                _ => {}
            }
        }
        let options =
            options.ok_or_else(|| Error::Invalid("boot entry has no options line".into()))?;
        let args = BootArgs::parse(options)?;
        let slot = args.slot;
        for (key, got, want) in [
            ("linux", linux, paths::slot_kernel(slot)),
            ("initrd", initrd, paths::slot_initrd(slot)),
            ("version", version, args.version.clone()),
        ] {
            if got != Some(want.as_str()) {
                return Err(Error::Invalid(format!(
                    "boot entry of slot {slot}: {key} is {got:?}, expected {want:?}"
                )));
            }
        }
        Ok(BootEntry { args })
    }
}

/// The entry systemd-boot boots by default among berth's entries (`boot_entry_compare` in
/// systemd-boot, for entries that all share [`SORT_KEY`]): entries with no tries left last;
/// then the newest `version` first; then the file name descending; then more tries left, fewer
/// tries done. `entries` are (name, version); returns the index of the winner.
pub fn default_entry(entries: &[(EntryName, String)]) -> Option<usize> {
    use core::cmp::Ordering;
    let key = |i: usize, j: usize| -> Ordering {
        let (a, av) = &entries[i];
        let (b, bv) = &entries[j];
        // "Less" sorts first.
        a.is_bad()
            .cmp(&b.is_bad())
            .then_with(|| crate::bundle::version_cmp(bv, av))
            .then_with(|| b.file_name().cmp(&a.file_name()))
            .then_with(|| {
                let left = |e: &EntryName| e.tries.map_or(u32::MAX, |t| t.left);
                left(b).cmp(&left(a))
            })
            .then_with(|| {
                let done = |e: &EntryName| e.tries.map_or(0, |t| t.done);
                done(a).cmp(&done(b))
            })
    };
    (0..entries.len()).min_by(|&i, &j| key(i, j))
}

/// `loader/loader.conf`: the menu timeout in seconds, and nothing systemd-boot would add on
/// its own (no auto entries, no editor).
pub fn loader_conf(timeout: u32) -> String {
    format!("timeout {timeout}\nconsole-mode keep\neditor no\nauto-entries no\nauto-firmware no\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Guid;
    use alloc::string::ToString;
    use alloc::vec;
    use alloc::vec::Vec;

    #[test]
    fn the_default_entry_follows_systemd_boot() {
        let e = |n: &str, v: &str| (EntryName::parse(n).unwrap(), v.to_string());
        // A fresh update (tries left) with a newer version beats the blessed old slot.
        let v = vec![e("berth-a.conf", "0.1.0"), e("berth-b+3.conf", "0.2.0")];
        assert_eq!(default_entry(&v), Some(1));
        // Both blessed: the newest version, whichever slot holds it (no sort-key/version,
        // B would always win by file name).
        let v = vec![e("berth-b.conf", "0.1.0"), e("berth-a.conf", "0.2.0")];
        assert_eq!(default_entry(&v), Some(1));
        // A bad entry (no tries left) sorts last even with a newer version: the rollback.
        let v = vec![e("berth-a.conf", "0.1.0"), e("berth-b+0-3.conf", "0.2.0")];
        assert_eq!(default_entry(&v), Some(0));
        assert_eq!(default_entry(&[]), None);
    }

    #[test]
    fn names_through_every_boot_counting_state() {
        for slot in Slot::ALL {
            let mut n = EntryName::new(slot, 3);
            let mut seen = Vec::new();
            loop {
                let name = n.file_name();
                assert_eq!(EntryName::parse(&name), Some(n), "{name}");
                seen.push(name);
                if n.is_bad() {
                    break;
                }
                assert_eq!(n.blessed().file_name(), format!("berth-{slot}.conf"));
                n = n.tried();
            }
            assert_eq!(
                seen,
                [
                    format!("berth-{slot}+3.conf"),
                    format!("berth-{slot}+2-1.conf"),
                    format!("berth-{slot}+1-2.conf"),
                    format!("berth-{slot}+0-3.conf"),
                ]
            );
            assert_eq!(n.tried(), n, "a bad entry stays bad");
            let b = n.blessed();
            assert!(b.is_blessed() && !b.is_bad());
            assert_eq!(b.tried(), b);
            assert_eq!(EntryName::parse(&b.to_string()), Some(b));
        }
        assert_eq!(EntryName::new(Slot::A, 0).file_name(), "berth-a.conf");
    }

    #[test]
    fn foreign_names_are_not_entries() {
        for bad in [
            "berth-c.conf",
            "berth-a+x.conf",
            "berth-a+3",
            "berth-a+-1.conf",
            "berth-a+1-.conf",
            "debian.conf",
            "berth-a+3.conf.tmp",
            "berth-a+99999999999.conf",
        ] {
            assert_eq!(EntryName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn entry_text_round_trips() {
        let e = BootEntry {
            args: BootArgs {
                slot: Slot::B,
                version: "0.2.0".into(),
                root: Guid::from_bytes([1; 16]),
                verity: Guid::from_bytes([2; 16]),
                roothash: "0f".repeat(32),
                state: Guid::from_bytes([3; 16]),
                after_ready: None,
                extra: vec!["console=ttyS0".into()],
            },
        };
        let t = e.text();
        assert!(t.starts_with("title berth 0.2.0 (slot b)\nsort-key berth\nversion 0.2.0\nlinux /berth/b/vmlinuz\ninitrd /berth/b/initrd\noptions berth.slot=b "), "{t}");
        assert_eq!(BootEntry::parse(&t).unwrap(), e);
        let wrong = t.replace("linux /berth/b/", "linux /berth/a/");
        assert!(BootEntry::parse(&wrong)
            .unwrap_err()
            .to_string()
            .contains("linux"));
        assert!(BootEntry::parse("title x\n").is_err());
    }

    #[test]
    fn loader_conf_text() {
        assert_eq!(
            loader_conf(0),
            "timeout 0\nconsole-mode keep\neditor no\nauto-entries no\nauto-firmware no\n"
        );
    }
}
