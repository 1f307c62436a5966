//! Orderly poweroff/reboot: services in reverse order, then every process, then the writable
//! filesystems, then reboot(2). Each wait is bounded: a hung service cannot keep the machine up.

use std::time::{Duration, Instant};

use crate::cmdline::Halt;
use crate::main_stage::{mountinfo, Mount};
use crate::services::Supervisor;
use crate::{say, sys, warn};

const SERVICE_STOP: Duration = Duration::from_secs(10);
const TERM_GRACE: Duration = Duration::from_secs(2);

pub fn shutdown(how: Halt, sup: &mut Supervisor) -> ! {
    say!("stopping ({})", how.name());
    crate::watchdog::disarm();
    crate::health::boot_was_good();
    sup.stop_all(SERVICE_STOP);
    // Everything else (shims, containers, orphans): TERM, a grace period, then KILL.
    let _ = sys::kill(-1, sys::SIGTERM);
    wait_children(TERM_GRACE);
    let _ = sys::kill(-1, sys::SIGKILL);
    wait_children(Duration::from_secs(1));
    sys::sync();
    unmount_writable();
    if let Err(e) = sys::mount("", "/", "", sys::MS_REMOUNT | sys::MS_RDONLY, "") {
        warn!("remounting / read-only: {e}");
    }
    say!("unmounted /var, /etc; syncing; {}", how.name());
    sys::sync();
    let e = sys::reboot(match how {
        Halt::Poweroff => sys::RB_POWER_OFF,
        Halt::Reboot => sys::RB_AUTOBOOT,
    });
    crate::die_pid1(&format!("reboot(2) for {}: {e}", how.name()))
}

/// Reaps until no children are left or `limit` passes.
fn wait_children(limit: Duration) {
    let start = Instant::now();
    while start.elapsed() < limit {
        match sys::reap_any() {
            Ok(Some(_)) => continue,
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(_) => return, // ECHILD: nobody left
        }
    }
}

/// What to unmount, innermost first: /etc, /var, /tmp and whatever containerd left under them
/// or under /run (its overlay rootfs mounts keep /var busy).
pub fn unmount_order(mounts: &[Mount]) -> Vec<String> {
    let under = |p: &str, dir: &str| p == dir || p.starts_with(&format!("{dir}/"));
    mounts
        .iter()
        .rev()
        .map(|m| m.mountpoint.clone())
        .filter(|p| {
            under(p, "/etc") || under(p, "/var") || under(p, "/tmp") || p.starts_with("/run/")
        })
        .collect()
}

fn unmount_writable() {
    let mounts = mountinfo().unwrap_or_default();
    for p in unmount_order(&mounts) {
        let mut r = sys::umount(&p, 0);
        if matches!(&r, Err(e) if e.raw_os_error() == Some(libc::EBUSY)) {
            std::thread::sleep(Duration::from_millis(500));
            sys::sync();
            r = sys::umount(&p, 0);
        }
        match r {
            Ok(()) => {}
            // Gone already (a parent was detached) is fine.
            Err(e)
                if e.raw_os_error() == Some(libc::EINVAL)
                    || e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => match sys::umount(&p, sys::MNT_DETACH) {
                Ok(()) => {
                    warn!("umount {p}: {e}; detached it instead (MNT_DETACH), data was synced")
                }
                Err(e2) => warn!("umount {p}: {e}; MNT_DETACH too: {e2}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmounts_innermost_writable_first() {
        let m = |p: &str| Mount {
            mountpoint: p.into(),
            ..Mount::default()
        };
        let mounts = [
            m("/"),
            m("/dev"),
            m("/run"),
            m("/var"),
            m("/etc"),
            m("/tmp"),
            m("/run/containerd/x/rootfs"),
            m("/variable"),
        ];
        assert_eq!(
            unmount_order(&mounts),
            ["/run/containerd/x/rootfs", "/tmp", "/etc", "/var"]
        );
    }
}
