//! The ACPI power button: a press (QEMU's `system_powerdown`, `virsh shutdown`, `vagrant
//! halt`, an EC2 stop) leads to the same clean poweroff as `berthctl poweroff`. The kernel's
//! ACPI button driver reports it as KEY_POWER on an input device named "Power Button"; a
//! thread per such device reads its evdev node and signals PID 1 (SIGUSR2, poweroff).

use std::fs;
use std::io::Read;
use std::time::{Duration, Instant};

use crate::{say, sys, warn};

/// `struct input_event` on 64-bit Linux: a timeval (16 bytes), type u16, code u16, value i32.
const EVENT_SIZE: usize = 24;
const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;
/// The button's evdev node appears (devtmpfs) shortly after the modules load.
const DEVICE_WAIT: Duration = Duration::from_secs(5);

/// Whether a raw event is the power key going down.
pub fn is_power_press(ev: &[u8; EVENT_SIZE]) -> bool {
    let kind = u16::from_ne_bytes([ev[16], ev[17]]);
    let code = u16::from_ne_bytes([ev[18], ev[19]]);
    let value = i32::from_ne_bytes([ev[20], ev[21], ev[22], ev[23]]);
    kind == EV_KEY && code == KEY_POWER && value == 1
}

/// The evdev nodes of the input devices named "Power Button".
fn buttons() -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir("/sys/class/input")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with("event"))
                .filter(|n| {
                    fs::read_to_string(format!("/sys/class/input/{n}/device/name"))
                        .is_ok_and(|s| s.trim() == "Power Button")
                })
                .map(|n| format!("/dev/input/{n}"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Starts the watchers (after the main stage's modules, `button` and `evdev`, are loaded), on
/// a thread of their own: the boot does not wait for the device.
pub fn watch() {
    std::thread::spawn(watch_buttons);
}

fn watch_buttons() {
    let start = Instant::now();
    let nodes = loop {
        let found: Vec<String> = buttons()
            .into_iter()
            .filter(|n| std::path::Path::new(n).exists())
            .collect();
        if !found.is_empty() || start.elapsed() > DEVICE_WAIT {
            break found;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if nodes.is_empty() {
        warn!("no ACPI power button (modules button, evdev); a power-button shutdown will not be clean");
        return;
    }
    say!("power button {}", nodes.join(" "));
    for node in nodes {
        std::thread::spawn(move || {
            let mut f = match fs::File::open(&node) {
                Ok(f) => f,
                Err(e) => return warn!("opening {node}: {e}"),
            };
            let mut ev = [0u8; EVENT_SIZE];
            loop {
                if let Err(e) = f.read_exact(&mut ev) {
                    return warn!("reading {node}: {e}");
                }
                if is_power_press(&ev) {
                    say!("power button pressed");
                    if let Err(e) = sys::kill(1, sys::SIGUSR2) {
                        warn!("signalling PID 1 for poweroff: {e}");
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_power_key_going_down_counts() {
        let ev = |kind: u16, code: u16, value: i32| {
            let mut e = [0u8; EVENT_SIZE];
            e[16..18].copy_from_slice(&kind.to_ne_bytes());
            e[18..20].copy_from_slice(&code.to_ne_bytes());
            e[20..24].copy_from_slice(&value.to_ne_bytes());
            e
        };
        assert!(is_power_press(&ev(EV_KEY, KEY_POWER, 1)));
        assert!(!is_power_press(&ev(EV_KEY, KEY_POWER, 0)), "release");
        assert!(!is_power_press(&ev(0, 0, 0)), "EV_SYN");
        assert!(!is_power_press(&ev(EV_KEY, 30, 1)), "another key");
    }
}
