//! The boot watchdog (`berth_contract::health`): the initrd arms the kernel's softdog with the
//! image's timeout and hands the descriptor to the main stage through the environment; the main
//! stage pets it from a helper thread until the boot is ready or its ready-deadline passes
//! (then the watchdog reboots a hung boot), and from the main loop after ready (so a hung PID 1
//! reboots too). An orderly shutdown disarms it (magic close), so a poweroff stays a poweroff.

use std::fs::OpenOptions;
use std::os::fd::{IntoRawFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

use berth_contract::health::Policy;

use crate::{say, sys, warn, Ctx, Result};

/// The descriptor's number, from the initrd stage to the main stage across the exec.
const ENV: &str = "BERTH_WATCHDOG_FD";
const DEVICE: &str = "/dev/watchdog";

static FD: AtomicI32 = AtomicI32::new(-1);
static READY: AtomicBool = AtomicBool::new(false);

/// Initrd stage: opens the watchdog (softdog, loaded with the initrd's modules) and sets its
/// timeout. No watchdog device is a warning: the boot goes on without one.
pub fn arm(policy: &Policy) -> Result<()> {
    if policy.watchdog == 0 {
        return Ok(());
    }
    let start = Instant::now();
    while !Path::new(DEVICE).exists() && start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let f = match OpenOptions::new().write(true).open(DEVICE) {
        Ok(f) => f,
        Err(e) => {
            warn!("opening {DEVICE}: {e}; booting without a watchdog (a hung boot will not reboot by itself)");
            return Ok(());
        }
    };
    let fd = f.into_raw_fd();
    let got = sys::watchdog_set_timeout(fd, policy.watchdog as i32)
        .ctx(|| format!("setting the timeout of {DEVICE} to {} s", policy.watchdog))?;
    sys::set_cloexec(fd, false).ctx(|| format!("keeping {DEVICE} open across exec"))?;
    std::env::set_var(ENV, fd.to_string());
    say!(
        "initrd: watchdog armed timeout={got}s ready-deadline={}s",
        policy.ready_deadline
    );
    Ok(())
}

/// Main stage: takes the descriptor the initrd left (none: no watchdog), out of the
/// environment and out of reach of children.
pub fn adopt() {
    let Some(fd) = std::env::var(ENV)
        .ok()
        .and_then(|v| v.parse::<RawFd>().ok())
    else {
        return;
    };
    std::env::remove_var(ENV);
    if sys::set_cloexec(fd, true).is_ok() {
        FD.store(fd, Ordering::SeqCst);
    }
}

pub fn pet() {
    let fd = FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let _ = sys::write_fd(fd, b"\0");
    }
}

/// Pets from a helper thread until [`ready`] or until `deadline` seconds of uptime; past the
/// deadline it stops, runs `expired` and says so, and the watchdog reboots the machine.
pub fn until_ready(policy: Policy, expired: impl FnOnce() + Send + 'static) {
    if FD.load(Ordering::SeqCst) < 0 {
        return;
    }
    std::thread::spawn(move || loop {
        if READY.load(Ordering::SeqCst) {
            return;
        }
        let deadline = u64::from(policy.ready_deadline);
        if deadline > 0 && sys::uptime().as_secs() >= deadline {
            expired();
            say!(
                "boot did not reach ready within {deadline} s (ready-deadline); the watchdog reboots the machine in {} s",
                policy.watchdog
            );
            return;
        }
        pet();
        std::thread::sleep(Duration::from_secs(1));
    });
}

/// The boot is ready: the main loop pets from now on.
pub fn ready() {
    pet();
    READY.store(true, Ordering::SeqCst);
}

/// Stops the watchdog (magic close), for an orderly shutdown or a deliberate stop.
pub fn disarm() {
    let fd = FD.swap(-1, Ordering::SeqCst);
    if fd >= 0 {
        let _ = sys::write_fd(fd, b"V");
        sys::close_fd(fd);
    }
}
