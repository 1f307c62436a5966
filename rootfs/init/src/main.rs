//! berth-init: PID 1 of berth images, twice (README.md is the contract):
//! - initrd stage: PID 1 with /etc/initrd-release: find the partitions, set up dm-verity,
//!   mount root and state, switch root, exec /usr/sbin/init (this program again);
//! - main stage: PID 1 without it: API filesystems, network, containerd, services, ready line,
//!   reap children, shut down on signals;
//! - invoked as `berthctl` (or not as PID 1): the admin tool.
//!
//! No async runtime, no argument parser, no allocator games: plain blocking code, one file per
//! concept. Every failure names what was tried (`Ctx::ctx`).

mod berthctl;
mod channel;
mod cmdline;
mod dm;
mod durable;
mod esp;
#[cfg(test)]
mod fuzz;
mod gpt;
mod health;
mod http;
mod imds;
mod initrd;
mod lock;
mod logs;
mod main_stage;
mod net;
mod power;
mod provision;
mod services;
mod shutdown;
mod sys;
mod units;
mod update;
mod watchdog;

use std::fmt;
use std::time::Duration;

/// A failure, already worded "<what was tried>: <why>".
#[derive(Debug)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// The contract's errors already say what is wrong with which structure.
impl From<berth_contract::Error> for Error {
    fn from(e: berth_contract::Error) -> Error {
        Error(e.to_string())
    }
}

/// `.ctx(|| format!("mounting {x}"))` turns any error into "mounting x: <error>".
pub trait Ctx<T> {
    fn ctx<S: fmt::Display>(self, what: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: fmt::Display> Ctx<T> for std::result::Result<T, E> {
    fn ctx<S: fmt::Display>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error(format!("{}: {e}", what())))
    }
}

/// `Err(Error(...))` with format arguments.
#[macro_export]
macro_rules! fail {
    ($($t:tt)*) => { return Err($crate::Error(format!($($t)*))) };
}

/// One console line with the `berth: ` prefix (the vm-tests read these).
#[macro_export]
macro_rules! say {
    ($($t:tt)*) => { $crate::console(format_args!($($t)*)) };
}

/// Writes one `berth: ` line. Errors are ignored on purpose: `println!` would panic on a
/// console write error, and PID 1 must not die of a log line.
pub fn console(args: fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "berth: {args}");
}

/// A non-fatal problem: said loudly, then boot goes on.
#[macro_export]
macro_rules! warn {
    ($($t:tt)*) => { $crate::console(format_args!("warning: {}", format_args!($($t)*))) };
}

/// Reads a small text file, trimmed.
pub fn read_trim(path: &str) -> Result<String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .ctx(|| format!("reading {path}"))
}

/// As PID 1 a failure must not just exit (the kernel would panic with "Attempted to kill
/// init"): say what failed, give the console 10 s to be read, then reboot so systemd-boot's
/// boot counting can fall back to the other slot.
pub fn die_pid1(msg: &str) -> ! {
    say!("FATAL: {msg}");
    say!("FATAL: berth-init cannot continue; rebooting in 10 s");
    sys::sync();
    std::thread::sleep(Duration::from_secs(10));
    let e = sys::reboot(sys::RB_AUTOBOOT);
    say!("FATAL: reboot(RB_AUTOBOOT): {e}; halting here");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Stops the boot for good: a config that cannot be applied will not apply on the next boot
/// either, so rebooting would only loop. Says what failed, gives the console 10 s, then
/// powers off (an operator sees a stopped machine and its console log).
pub fn stop_pid1(msg: &str) -> ! {
    say!("FATAL: {msg}");
    say!("FATAL: the machine cannot come up as configured; powering off in 10 s");
    watchdog::disarm();
    sys::sync();
    std::thread::sleep(Duration::from_secs(10));
    let e = sys::reboot(sys::RB_POWER_OFF);
    say!("FATAL: reboot(RB_POWER_OFF): {e}; halting here");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// The workspace profile cannot say `panic = "abort"` for this crate alone, so a hook does
/// what abort would mean for PID 1: a panic must never unwind out of main (exiting PID 1
/// panics the kernel). The hook prints the FATAL line and, as PID 1, reboots after 10 s; it
/// never returns there. Elsewhere (berthctl) the default unwinding exit with status 101 is fine.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = format!("panic: {info}");
        if std::process::id() == 1 {
            die_pid1(&msg);
        }
        eprintln!("berth: FATAL: {msg}");
    }));
}

fn main() {
    install_panic_hook();
    let args: Vec<String> = std::env::args().collect();
    let argv0 = args.first().map(String::as_str).unwrap_or("berth-init");
    let name = argv0.rsplit('/').next().unwrap_or(argv0);
    if name == "berthctl" || std::process::id() != 1 {
        std::process::exit(berthctl::main(args.get(1..).unwrap_or(&[])));
    }
    main_stage::ensure_console();
    let initrd = std::path::Path::new("/etc/initrd-release").exists();
    let r = if initrd {
        initrd::run()
    } else {
        main_stage::run()
    };
    // Both stages only return on failure (the initrd stage execs, the main stage reboots).
    // In the main stage only essential steps fail (optional ones warn and go on): rebooting an
    // unblessed boot lets boot counting fall back to the other slot, as in the initrd.
    match r {
        Err(e) => die_pid1(&e.0),
        Ok(()) => die_pid1("the stage returned, which it never should"),
    }
}
