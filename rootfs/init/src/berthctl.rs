//! `berthctl`: the admin side of berth-init. `poweroff` / `reboot` signal PID 1 (busybox init's
//! convention: SIGUSR2 powers off, SIGTERM reboots); `status` reports the booted slot;
//! `services` the container services as PID 1 sees them; `logs NAME` prints a service's log;
//! `config show` prints the machine config the machine was provisioned with.

use crate::{cmdline, esp, sys};

const USAGE: &str = "usage: berthctl poweroff | reboot | status [--json] | services | logs NAME | config show | hostname NAME
       | update apply FILE|URL|- [--allow-downgrade] [--reboot] | update check [--channel URL] [--apply] [--reboot] | rollback
       | lock status | lock take [--wait] [--for VERSION] | lock release [--wait]";

/// Runs the command in `args` (without the program name); returns the exit code.
pub fn main(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("poweroff") => signal_init(sys::SIGUSR2, "poweroff"),
        Some("reboot") => signal_init(sys::SIGTERM, "reboot"),
        Some("status") => status(&args[1..]),
        Some("config") if args.get(1).map(String::as_str) == Some("show") => config_show(),
        Some("services") => services(),
        Some("update") if args.get(1).map(String::as_str) == Some("apply") => {
            update_apply(&args[2..])
        }
        Some("update") if args.get(1).map(String::as_str) == Some("check") => {
            update_check(&args[2..])
        }
        Some("rollback") => rollback(),
        Some("lock") => crate::lock::main(&args[1..]),
        Some("hostname") => match args.get(1) {
            Some(name) if args.len() == 2 => hostname(name),
            _ => {
                eprintln!("usage: berthctl hostname NAME");
                2
            }
        },
        Some("logs") => match args.get(1) {
            Some(name) if args.len() == 2 => logs(name),
            _ => {
                eprintln!("usage: berthctl logs NAME (see `berthctl services` for the names)");
                2
            }
        },
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

fn status(args: &[String]) -> i32 {
    let json = match args {
        [] => false,
        [j] if j == "--json" => true,
        _ => {
            eprintln!("usage: berthctl status [--json]");
            return 2;
        }
    };
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
    let list = match esp::entries_with_roothash() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("berthctl: status: reading the boot entries: {e}");
            return 1;
        }
    };
    let plain: Vec<_> = list.iter().map(|(n, v, _)| (*n, v.clone())).collect();
    let next = berth_contract::entry::default_entry(&plain);
    let lines = |p: &str| -> Vec<String> {
        std::fs::read_to_string(format!("/proc/1/root{p}"))
            .map(|t| t.lines().map(str::to_string).collect())
            .unwrap_or_default()
    };
    let last_update = lines(crate::update::LAST_UPDATE);
    // The newest rollback report of either slot.
    let rollback = berth_contract::Slot::ALL
        .iter()
        .filter_map(|s| {
            let p = format!(
                "/proc/1/root{}/slot-{s}.reported",
                berth_contract::paths::HEALTH_DIR
            );
            let m = std::fs::metadata(&p).and_then(|m| m.modified()).ok()?;
            let t = std::fs::read_to_string(&p).ok()?;
            let mut l = t.lines();
            Some((
                m,
                *s,
                l.next()?.to_string(),
                l.next().unwrap_or("").to_string(),
            ))
        })
        .max_by_key(|r| r.0);
    let q = berth_contract::json::quote;
    let degraded = crate::health::degraded();
    if json {
        let mut slots = Vec::new();
        for s in berth_contract::Slot::ALL {
            let i = (0..list.len()).find(|i| list[*i].0.slot == s);
            let booted = c.slot == Some(s);
            slots.push(match i {
                None => format!("{{\"slot\": \"{s}\", \"entry\": null, \"booted\": {booted}, \"boots-next\": false}}"),
                Some(i) => {
                    let (n, v, h) = &list[i];
                    let (state, left, done) = match n.tries {
                        None => ("blessed", 0, 0),
                        Some(t) if t.left == 0 => ("bad", 0, t.done),
                        Some(t) => ("trying", t.left, t.done),
                    };
                    format!(
                        "{{\"slot\": \"{s}\", \"entry\": {}, \"version\": {}, \"roothash\": {}, \"state\": \"{state}\", \"tries-left\": {left}, \"tries-done\": {done}, \"booted\": {booted}, \"boots-next\": {}}}",
                        q(&n.file_name()),
                        q(v),
                        h.as_deref().map_or("null".to_string(), q),
                        next == Some(i)
                    )
                }
            });
        }
        let update = match last_update.as_slice() {
            [v, s, t, ..] => format!(
                "{{\"version\": {}, \"slot\": {}, \"time\": {}}}",
                q(v),
                q(s),
                t.parse::<u64>().unwrap_or(0)
            ),
            _ => "null".into(),
        };
        let rb = match &rollback {
            Some((_, s, v, why)) => format!(
                "{{\"slot\": \"{s}\", \"version\": {}, \"reason\": {}}}",
                q(v),
                q(why)
            ),
            None => "null".into(),
        };
        println!(
            "{{\"booted\": {{\"slot\": {}, \"version\": {}, \"blessed\": {}}}, \"degraded\": {}, \"slots\": [{}], \"last-update\": {update}, \"last-rollback\": {rb}}}",
            c.slot.map_or("null".to_string(), |s| format!("\"{s}\"")),
            c.version.as_deref().map_or("null".to_string(), q),
            state != "not-yet",
            degraded.as_deref().map_or("null".to_string(), q),
            slots.join(", ")
        );
        return 0;
    }
    println!(
        "slot={} version={} entry={name} blessed={}",
        c.slot.map_or("unknown", |s| s.as_str()),
        c.version.as_deref().unwrap_or("unknown"),
        if state == "not-yet" { "no" } else { "yes" }
    );
    if let Some(why) = &degraded {
        println!("DEGRADED: state partition unusable ({why}); /var is a tmpfs and nothing there persists");
    }
    for s in berth_contract::Slot::ALL {
        let i = (0..list.len()).find(|i| list[*i].0.slot == s);
        let desc = match i {
            None => "no boot entry (empty, or being written)".to_string(),
            Some(i) => {
                let (n, v, _) = &list[i];
                let state = match n.tries {
                    None => "blessed".to_string(),
                    Some(t) if t.left == 0 => format!("bad (tries done {})", t.done),
                    Some(t) => format!("tries left {}, done {}", t.left, t.done),
                };
                format!(
                    "version {v}, {} ({state}){}",
                    n.file_name(),
                    if next == Some(i) { ", boots next" } else { "" }
                )
            }
        };
        let booted = if c.slot == Some(s) { ", booted" } else { "" };
        let root = i
            .and_then(|i| list[i].2.as_deref())
            .map_or(String::new(), |h| {
                format!(", root {}", &h[..h.len().min(16)])
            });
        println!("  slot {s}: {desc}{booted}{root}");
    }
    if let [v, s, t, ..] = last_update.as_slice() {
        println!("last update: version {v} into slot {s} at {t} (Unix time)");
    }
    if let Some((_, s, v, why)) = &rollback {
        println!("last rollback: from {v} in slot {s}: {why}");
    }
    0
}

fn update_apply(args: &[String]) -> i32 {
    let mut source = None;
    let (mut downgrade, mut reboot) = (false, false);
    for a in args {
        match a.as_str() {
            "--allow-downgrade" => downgrade = true,
            "--reboot" => reboot = true,
            s if source.is_none() && (s == "-" || !s.starts_with('-')) => {
                source = Some(s.to_string())
            }
            other => {
                eprintln!("berthctl: update apply: unexpected {other:?}; usage: berthctl update apply FILE|URL|- [--allow-downgrade] [--reboot]");
                return 2;
            }
        }
    }
    let Some(source) = source else {
        eprintln!("usage: berthctl update apply FILE|URL|- [--allow-downgrade] [--reboot]");
        return 2;
    };
    match crate::update::apply(&source, downgrade) {
        Ok((slot, version)) => {
            println!(
                "update applied: version {version} in slot {slot}; it boots next{}",
                if reboot {
                    "; rebooting"
                } else {
                    " (berthctl reboot)"
                }
            );
            if reboot {
                return signal_init(sys::SIGTERM, "reboot");
            }
            0
        }
        Err(e) => {
            eprintln!("berthctl: update apply: {e}");
            1
        }
    }
}

fn update_check(args: &[String]) -> i32 {
    const USE: &str = "usage: berthctl update check [--channel URL] [--apply] [--reboot]";
    let (mut channel, mut apply, mut reboot) = (None, false, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--apply" => apply = true,
            "--reboot" => reboot = true,
            "--channel" => match it.next() {
                Some(u) => channel = Some(u.clone()),
                None => {
                    eprintln!("{USE}");
                    return 2;
                }
            },
            other => {
                eprintln!("berthctl: update check: unexpected {other:?}; {USE}");
                return 2;
            }
        }
    }
    use crate::channel::Outcome;
    match crate::channel::check(channel.as_deref(), apply) {
        Ok(Outcome::UpToDate { running, latest }) => {
            println!("up to date: running {running}; the channel's latest is {latest}");
            0
        }
        Ok(Outcome::RolledBack { version, why }) => {
            println!("not updating: this machine rolled back from {version} ({why}); waiting for a newer version");
            0
        }
        Ok(Outcome::Available {
            version,
            bundle,
            size,
        }) => {
            println!("update available: {version} ({bundle}, {size} bytes); --apply to apply it");
            0
        }
        Ok(Outcome::Applied { slot, version }) => {
            println!("update applied: version {version} in slot {slot}; it boots next");
            if reboot {
                return signal_init(sys::SIGTERM, "reboot");
            }
            0
        }
        Err(e) => {
            eprintln!("berthctl: update check: {e}");
            1
        }
    }
}

fn rollback() -> i32 {
    match esp::rollback() {
        Ok(msg) => {
            println!("{msg}");
            0
        }
        Err(e) => {
            eprintln!("berthctl: rollback: {e}");
            1
        }
    }
}

/// The table of /run/berth/services (written by PID 1 whenever a service changes).
fn services() -> i32 {
    use berth_contract::paths::SERVICE_STATE;
    let text = match std::fs::read_to_string(SERVICE_STATE) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("berthctl: services: reading {SERVICE_STATE}: {e} (PID 1 writes it once the services are started)");
            return 1;
        }
    };
    let rows: Vec<Vec<&str>> =
        std::iter::once(vec!["NAME", "KIND", "STATE", "RESTARTS", "PID", "DETAIL"])
            .chain(text.lines().map(|l| l.splitn(6, '\t').collect()))
            .collect();
    let width = |c: usize| {
        rows.iter()
            .map(|r| r.get(c).map_or(0, |s| s.len()))
            .max()
            .unwrap_or(0)
    };
    let w: Vec<usize> = (0..5).map(width).collect();
    for r in &rows {
        let cell = |c: usize| r.get(c).copied().unwrap_or("");
        println!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {:>w4$}  {}",
            cell(0),
            cell(1),
            cell(2),
            cell(3),
            cell(4),
            cell(5),
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3],
            w4 = w[4]
        );
    }
    0
}

fn logs(name: &str) -> i32 {
    use std::io::Write;
    if !berth_contract::service::valid_name(name) {
        eprintln!("berthctl: logs: {name:?} is not a service name");
        return 2;
    }
    match crate::logs::read(name) {
        Ok(bytes) => {
            let _ = std::io::stdout().write_all(&bytes);
            0
        }
        Err(e) => {
            eprintln!(
                "berthctl: logs: {}: {e} (see `berthctl services` for the names)",
                crate::logs::path(name)
            );
            1
        }
    }
}

/// Sets the machine's host name now and for later boots: `/etc/hostname` of PID 1's root (the
/// host's, also from the admin container, which shares PID 1's PID namespace) and the host
/// name of PID 1's UTS namespace.
fn hostname(name: &str) -> i32 {
    use std::os::fd::AsRawFd;
    if !berth_contract::config::valid_hostname(name) {
        eprintln!("berthctl: hostname: {name:?} is not a host name (letters, digits, inner `-`; labels of at most 63 separated by `.`)");
        return 2;
    }
    let etc = "/proc/1/root/etc";
    let tmp = format!("{etc}/.hostname.berthctl");
    let written = std::fs::write(&tmp, format!("{name}\n"))
        .and_then(|()| std::fs::rename(&tmp, format!("{etc}/hostname")));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        eprintln!("berthctl: hostname: writing {etc}/hostname: {e}");
        return 1;
    }
    let set = std::fs::File::open("/proc/1/ns/uts").and_then(|ns| {
        sys::setns(ns.as_raw_fd(), libc::CLONE_NEWUTS)?;
        sys::sethostname(name)
    });
    match set {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("berthctl: hostname: setting it in PID 1's UTS namespace: {e} (it applies from the next boot)");
            1
        }
    }
}
