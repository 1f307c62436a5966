//! The image's boot-health policy (`[boot]` in a profile; DESIGN.md "A/B updates"): how long a
//! boot may take to reach ready, the watchdog that enforces it, and how many boots in a row a
//! slot may fail before the initrd stops trying it.
//!
//! - `ready-deadline`: seconds of uptime by which the main stage must reach ready. Until then a
//!   helper thread pets the watchdog; past the deadline it stops, and the watchdog reboots the
//!   machine (a hung boot cannot wait forever; systemd-boot counts the try). 0: no deadline.
//! - `watchdog`: the watchdog's timeout in seconds (the kernel's `softdog`, armed in the initrd;
//!   after ready PID 1's main loop pets it, so a hung PID 1 reboots too). 0: no watchdog.
//! - `stable-after`: a boot counts as good once it has been ready this long, or shut down
//!   cleanly after ready.
//! - `failed-boots`: a slot whose last this-many boots were not good is not booted again as is:
//!   the initrd falls back to the other slot if it holds a good version, or stops the machine
//!   with a message (each later power-on gets one more try). Counting entries (a new slot on
//!   trial) are left to systemd-boot's tries.
//!
//! The file (`paths::HEALTH_POLICY`) is `key=value` lines in that order.

use alloc::format;
use alloc::string::String;

use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub ready_deadline: u32,
    pub watchdog: u32,
    pub stable_after: u32,
    pub failed_boots: u32,
}

pub const DEFAULT: Policy = Policy {
    ready_deadline: 300,
    watchdog: 60,
    stable_after: 120,
    failed_boots: 3,
};

/// The longest value any key takes (a day): anything longer is a typo in a unit.
pub const MAX_SECONDS: u32 = 86_400;

const KEYS: [&str; 4] = ["ready-deadline", "watchdog", "stable-after", "failed-boots"];

impl Default for Policy {
    fn default() -> Policy {
        DEFAULT
    }
}

impl Policy {
    fn slot(&mut self, key: &str) -> Option<&mut u32> {
        Some(match key {
            "ready-deadline" => &mut self.ready_deadline,
            "watchdog" => &mut self.watchdog,
            "stable-after" => &mut self.stable_after,
            "failed-boots" => &mut self.failed_boots,
            _ => return None,
        })
    }

    /// Sets one key, checking its range; `what` names where the value came from.
    pub fn set(&mut self, key: &str, value: u64, what: &str) -> Result<()> {
        let Some(v) = self.slot(key) else {
            return Err(Error::Invalid(format!(
                "{what}: unknown key {key:?} (valid: {})",
                KEYS.join(", ")
            )));
        };
        let (lo, hi) = match key {
            "failed-boots" => (1, 100),
            _ => (0, u64::from(MAX_SECONDS)),
        };
        if value < lo || value > hi {
            return Err(Error::Invalid(format!(
                "{what}: {key} = {value} is out of range ({lo} to {hi})"
            )));
        }
        *v = value as u32;
        Ok(())
    }

    /// Checks that the values hold together: a watchdog whose timeout is longer than the
    /// deadline would still work, but a deadline shorter than the watchdog period cannot be
    /// noticed in time; both are fine. What cannot work: a deadline without a watchdog.
    pub fn check(&self, what: &str) -> Result<()> {
        if self.ready_deadline > 0 && self.watchdog == 0 {
            return Err(Error::Invalid(format!(
                "{what}: ready-deadline = {} needs a watchdog to enforce it (watchdog = 0 turns it off; set ready-deadline = 0 too)",
                self.ready_deadline
            )));
        }
        Ok(())
    }

    pub fn text(&self) -> String {
        format!(
            "ready-deadline={}\nwatchdog={}\nstable-after={}\nfailed-boots={}\n",
            self.ready_deadline, self.watchdog, self.stable_after, self.failed_boots
        )
    }

    /// Reads a policy file; keys it lacks keep their defaults.
    pub fn parse(text: &str) -> Result<Policy> {
        let mut p = DEFAULT;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let what = format!("health policy line {}", n + 1);
            let Some((k, v)) = line.split_once('=') else {
                return Err(Error::Invalid(format!("{what}: expected key=value")));
            };
            let v: u64 = v
                .trim()
                .parse()
                .map_err(|_| Error::Invalid(format!("{what}: {} is not a number", v.trim())))?;
            p.set(k.trim(), v, &what)?;
        }
        p.check("health policy")?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_defaults() {
        assert_eq!(Policy::parse(&DEFAULT.text()), Ok(DEFAULT));
        assert_eq!(Policy::parse(""), Ok(DEFAULT));
        let p = Policy::parse("watchdog=15\nready-deadline=45\n").unwrap();
        assert_eq!((p.watchdog, p.ready_deadline, p.failed_boots), (15, 45, 3));
    }

    #[test]
    fn refuses_what_cannot_work() {
        for (text, want) in [
            ("watchdog=x", "not a number"),
            ("failed-boots=0", "out of range"),
            ("stable-after=100000", "out of range"),
            ("deadline=3", "unknown key"),
            ("watchdog", "key=value"),
            ("watchdog=0", "needs a watchdog"),
        ] {
            let e = Policy::parse(text).unwrap_err();
            assert!(e.message().contains(want), "{text}: {e}");
        }
        assert!(Policy::parse("watchdog=0\nready-deadline=0").is_ok());
    }
}
