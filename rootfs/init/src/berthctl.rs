//! `berthctl`: the admin side of berth-init. `poweroff` / `reboot` signal PID 1 (busybox init's
//! convention: SIGUSR2 powers off, SIGTERM reboots); `status` reports the booted slot;
//! `config show` prints the machine config the machine was provisioned with.

use crate::{cmdline, esp, sys};

const USAGE: &str = "usage: berthctl poweroff | reboot | status | config show";

/// Runs the command in `args` (without the program name); returns the exit code.
pub fn main(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("poweroff") => signal_init(sys::SIGUSR2, "poweroff"),
        Some("reboot") => signal_init(sys::SIGTERM, "reboot"),
        Some("status") => status(),
        Some("config") if args.get(1).map(String::as_str) == Some("show") => config_show(),
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

/// Prints the machine config this machine was provisioned with (as it was given).
fn config_show() -> i32 {
    use berth_contract::config::APPLIED;
    match std::fs::read_to_string(APPLIED) {
        Ok(text) => {
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
            0
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("berthctl: no machine config was applied (the image's defaults are in use)");
            1
        }
        Err(e) => {
            eprintln!("berthctl: config show: reading {APPLIED}: {e}");
            1
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
