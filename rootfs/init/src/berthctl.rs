//! `berthctl`: the admin side of berth-init. `poweroff` / `reboot` signal PID 1 (busybox init's
//! convention: SIGUSR2 powers off, SIGTERM reboots); `status` reports the booted slot.

use crate::{cmdline, esp, sys};

const USAGE: &str = "usage: berthctl poweroff | reboot | status";

/// Runs the command in `args` (without the program name); returns the exit code.
pub fn main(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("poweroff") => signal_init(sys::SIGUSR2, "poweroff"),
        Some("reboot") => signal_init(sys::SIGTERM, "reboot"),
        Some("status") => status(),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            0
        }
        _ => {
            eprintln!("{USAGE}");
            2
        }
    }
}

fn signal_init(sig: libc::c_int, what: &str) -> i32 {
    match sys::kill(1, sig) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("berthctl: {what}: signalling PID 1: {e}");
            1
        }
    }
}

fn status() -> i32 {
    let c = match cmdline::read() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berthctl: status: {e}");
            return 1;
        }
    };
    // PID 1 records the boot entry once it has blessed it (or found it blessed already).
    let entry = std::fs::read_to_string(esp::RECORD).unwrap_or_default();
    let (name, state) = entry
        .trim()
        .split_once(' ')
        .unwrap_or(("unknown", "not-yet"));
    println!(
        "slot={} version={} entry={name} blessed={}",
        c.slot.map_or("unknown", |s| s.as_str()),
        c.version.as_deref().unwrap_or("unknown"),
        if state == "not-yet" { "no" } else { "yes" }
    );
    0
}
