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

use berth_contract::{EntryName, Slot};

use crate::services::Supervisor;
use crate::{esp, say, warn};

const DIR: &str = "/var/lib/berth/health";

fn record(slot: Slot) -> String {
    format!("{DIR}/slot-{slot}")
}

fn write(slot: Slot, text: &str) {
    let _ = fs::create_dir_all(DIR);
    let p = record(slot);
    let tmp = format!("{p}.tmp");
    if fs::write(&tmp, text)
        .and_then(|()| fs::rename(&tmp, &p))
        .is_ok()
    {
        crate::sys::sync();
    }
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
pub fn boot_outcome(
    state: berth_contract::Guid,
    slot: Slot,
    version: &str,
    problems: &[String],
    sup: &mut Supervisor,
) {
    if problems.is_empty() {
        match esp::bless(state, slot) {
            Ok(Some((old, new))) => say!("blessed {old} -> {new}"),
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
