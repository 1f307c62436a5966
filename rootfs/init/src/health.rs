//! Health-gated blessing and the rollback report (DESIGN.md, "A/B updates").
//!
//! A boot is healthy when every required service is up (containerd serving is a condition of
//! getting that far). Only a healthy boot blesses its entry. An unhealthy boot of a counting
//! entry (a new slot on trial) records why on /var, which both slots share, and reboots, so
//! systemd-boot counts the try; once the tries are used up it boots the other slot, whose boot
//! finds that record, prints `berth: rollback from <version>: <reason>` once, and keeps it as
//! reported. A boot that never gets this far (a hang) leaves the record it wrote when it
//! started: "did not reach ready".

use std::fs;
use std::sync::Mutex;

use berth_contract::health::Policy;
use berth_contract::paths::{HEALTH_DIR, HEALTH_POLICY};
use berth_contract::{EntryName, Slot};

use crate::services::Supervisor;
use crate::{esp, say, warn, Result};

const DIR: &str = HEALTH_DIR;

/// Present (holding the reason) when the boot runs degraded: the state partition could not be
/// used and /var is a tmpfs. Such a boot is not blessed and counts no failed boots.
pub const DEGRADED: &str = "/run/berth/degraded";

pub fn degraded() -> Option<String> {
    fs::read_to_string(DEGRADED)
        .ok()
        .map(|s| s.trim().to_string())
}

fn record(slot: Slot) -> String {
    format!("{DIR}/slot-{slot}")
}

/// Counts the boots of a slot in a row that were not good (the initrd adds one at every boot;
/// a good boot removes the file).
fn streak(root: &str, slot: Slot) -> String {
    format!("{root}{DIR}/streak-{slot}")
}

/// The image's policy under `root` (`/sysroot` in the initrd, `/` after); a missing file (an
/// image from before the policy) means the defaults, a damaged one too, with a warning.
pub fn policy(root: &str) -> Policy {
    let p = format!("{}{HEALTH_POLICY}", root.trim_end_matches('/'));
    match fs::read_to_string(&p) {
        Ok(t) => Policy::parse(&t).unwrap_or_else(|e| {
            warn!("{p}: {e}; using the default health policy");
            Policy::default()
        }),
        Err(_) => Policy::default(),
    }
}

fn write(slot: Slot, text: &str) {
    write_under("", slot, text)
}

fn write_under(root: &str, slot: Slot, text: &str) {
    let _ = fs::create_dir_all(format!("{root}{DIR}"));
    let p = format!("{root}{}", record(slot));
    let tmp = format!("{p}.tmp");
    if fs::write(&tmp, text)
        .and_then(|()| fs::rename(&tmp, &p))
        .is_ok()
    {
        crate::sys::sync();
    }
}

/// Initrd stage, with the state partition at `{root}/var`: counts this boot of `slot` as not
/// (yet) good, and acts when the slot has used up its failed boots: falls back to the other
/// slot if it has a usable entry (the reboot leads there), stops the machine if not. A slot
/// on trial (its entry still counting tries) is left to systemd-boot's counting.
pub fn initrd_check(root: &str, slot: Slot, version: &str, policy: &Policy) -> Result<()> {
    let p = streak(root, slot);
    let n: u32 = fs::read_to_string(&p)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
        + 1;
    put(&p, n)?;
    if n <= policy.failed_boots {
        return Ok(());
    }
    let failed = n - 1;
    let list = esp::entries()?;
    let trial = list
        .iter()
        .any(|(e, _)| e.slot == slot && e.tries.is_some_and(|t| t.left > 0));
    if trial {
        return Ok(());
    }
    let why = format!("{failed} boots in a row did not come up and stay up");
    let other_ok = list.iter().any(|(e, _)| e.slot == !slot && !e.is_bad());
    if other_ok {
        write_under(
            root,
            slot,
            &format!(
                "{version}
{why}
"
            ),
        );
        let msg = esp::rollback()?;
        put(&p, 0)?;
        crate::sys::sync();
        say!("initrd: slot {slot} version {version}: {why}; falling back: {msg}");
        crate::sys::sync();
        let e = crate::sys::reboot(crate::sys::RB_AUTOBOOT);
        crate::fail!("reboot(RB_AUTOBOOT): {e}");
    }
    // One more try at the next power-on, not an endless loop.
    put(&p, policy.failed_boots - 1)?;
    crate::stop_pid1(&format!(
        "slot {slot} version {version}: {why}, and slot {} holds no good version to fall back to; stopping here (powering the machine on again gives it one more try)",
        !slot
    ))
}

fn put(p: &str, n: u32) -> Result<()> {
    crate::durable::replace(p, format!("{n}\n").as_bytes())
}

/// The slot whose boot reached ready (set once the boot outcome is decided).
static READY_SLOT: Mutex<Option<Slot>> = Mutex::new(None);

pub fn reached_ready(slot: Slot) {
    if let Ok(mut s) = READY_SLOT.lock() {
        *s = Some(slot);
    }
}

/// The boot was good (ready for the policy's stable-after, or an orderly shutdown after ready):
/// its slot's count of failed boots starts over.
pub fn boot_was_good() {
    let slot = READY_SLOT.lock().ok().and_then(|mut s| s.take());
    if let Some(slot) = slot {
        if fs::remove_file(streak("", slot)).is_ok() {
            crate::sys::sync();
        }
    }
}

/// The expired ready-deadline, on the record: what the other slot reports after a rollback.
pub fn deadline_passed(slot: Slot, version: &str, deadline: u32) {
    write(
        slot,
        &format!("{version}\nits boot did not reach ready within {deadline} s; the watchdog rebooted it\n"),
    );
}

/// The main stage begins: what the record says if this boot never finishes.
pub fn started(slot: Slot, version: &str) {
    write(
        slot,
        &format!("{version}\nits boot did not reach ready (hung or crashed)\n"),
    );
}

/// After the services started: bless a healthy boot; reboot an unhealthy trial boot (the boot
/// loader counts it); leave a blessed slot's entry alone.
pub fn boot_outcome(slot: Slot, version: &str, problems: &[String], sup: &mut Supervisor) {
    if problems.is_empty() {
        match esp::bless(slot) {
            Ok(Some((old, new))) => {
                say!("blessed {old} -> {new}");
                let _ = fs::remove_file(streak("", slot));
            }
            Ok(None) => {}
            Err(e) => warn!("blessing the boot entry: {e}"),
        }
        let _ = fs::remove_file(record(slot));
        return;
    }
    let why = format!("required services not up: {}", problems.join("; "));
    // A trial: this slot's entry is counting, and a reboot leads somewhere: a try left, or
    // (on the last try, which systemd-boot already counted down to +0) another usable slot.
    let trial = esp::entries()
        .map(|l| {
            let other_ok = l.iter().any(|(n, _)| n.slot == !slot && !n.is_bad());
            l.iter()
                .any(|(n, _)| n.slot == slot && n.tries.is_some_and(|t| t.left > 0 || other_ok))
        })
        .unwrap_or(false);
    if trial {
        write(slot, &format!("{version}\n{why}\n"));
        say!("boot of slot {slot} version {version} is not healthy ({why}); rebooting: the boot loader counts this try");
        crate::shutdown::shutdown(crate::cmdline::Halt::Reboot, sup);
    }
    warn!("{why}; no reboot: slot {slot} is blessed, or nothing else would boot");
    let _ = fs::remove_file(record(slot));
}

/// On the slot that booted: if the other slot's entry is bad (its tries used up) and it left a
/// record, say so once.
pub fn report_rollback(slot: Slot) {
    let other = !slot;
    let Ok(text) = fs::read_to_string(record(other)) else {
        return;
    };
    let bad = esp::entries()
        .map(|l| {
            l.iter()
                .any(|(n, _): &(EntryName, String)| n.slot == other && n.is_bad())
        })
        .unwrap_or(false);
    if !bad {
        return;
    }
    let mut lines = text.lines();
    let version = lines.next().unwrap_or("unknown");
    let why = lines.next().unwrap_or("unknown");
    say!("rollback from {version}: {why}");
    let _ = fs::rename(record(other), format!("{}.reported", record(other)));
}
