//! The main stage (README.md, "Stages"): PID 1 in the real root, top to bottom. Essential steps
//! (filesystems, containerd) fail the boot; optional ones (network, a service, blessing) warn.

use std::fs::{self, OpenOptions};
use std::os::fd::AsRawFd;
use std::time::Duration;

use berth_contract::channel::Reboot;
use berth_contract::config::{Addressing, Interface, Nic};
use berth_contract::paths;

use crate::cmdline::{self, Halt};
use crate::initrd::{load_modules, mount};
use crate::services::{self, Supervisor};
use crate::shutdown::shutdown;
use crate::units::{self, Units};
use crate::{dm, health, net, power, provision, say, sys, warn, Ctx, Result};

const SIGNALS: [libc::c_int; 4] = [sys::SIGCHLD, sys::SIGTERM, sys::SIGINT, sys::SIGUSR2];

/// Makes fds 0-2 the console if the kernel could not open it for us (no /dev/console node in
/// the initramfs before devtmpfs is mounted).
pub fn ensure_console() {
    if sys::fd_is_open(1) && sys::fd_is_open(2) {
        return;
    }
    if let Ok(c) = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    {
        for fd in 0..3 {
            let _ = sys::dup2(c.as_raw_fd(), fd);
        }
    }
}

/// One line of /proc/self/mountinfo (proc(5)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mount {
    pub devno: String,
    pub mountpoint: String,
    pub options: String,
    pub fstype: String,
    pub source: String,
}

/// Undoes mountinfo's octal escapes (`\040` is a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let (mut out, mut i) = (Vec::new(), 0);
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(std::str::from_utf8(o).ok()?, 8).ok());
        match (b[i], oct) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            Some(Mount {
                devno: f.get(2)?.to_string(),
                mountpoint: unescape(f.get(4)?),
                options: f.get(5)?.to_string(),
                fstype: r.first()?.to_string(),
                source: unescape(r.get(1)?),
            })
        })
        .collect()
}

pub fn mountinfo() -> Result<Vec<Mount>> {
    Ok(parse_mountinfo(
        &fs::read_to_string("/proc/self/mountinfo").ctx(|| "reading /proc/self/mountinfo")?,
    ))
}

fn mounted_at(mounts: &[Mount], p: &str) -> Option<Mount> {
    mounts.iter().rev().find(|m| m.mountpoint == p).cloned()
}

/// API filesystems not already there (the initrd moved /dev /proc /sys /run in; a direct boot
/// would not have).
fn mount_api() -> Result<()> {
    if fs::metadata("/proc/self").is_err() {
        mount(
            "proc",
            "/proc",
            "proc",
            sys::MS_NOSUID | sys::MS_NOEXEC | sys::MS_NODEV,
            "",
        )?;
    }
    let (nosuid, noexec, nodev) = (sys::MS_NOSUID, sys::MS_NOEXEC, sys::MS_NODEV);
    for (src, target, fstype, flags, data) in [
        ("sysfs", "/sys", "sysfs", nosuid | noexec | nodev, ""),
        ("devtmpfs", "/dev", "devtmpfs", nosuid, "mode=0755"),
        ("tmpfs", "/run", "tmpfs", nosuid | nodev, "mode=0755"),
        (
            "cgroup2",
            "/sys/fs/cgroup",
            "cgroup2",
            nosuid | noexec | nodev,
            "nsdelegate",
        ),
        (
            "devpts",
            "/dev/pts",
            "devpts",
            nosuid | noexec,
            "gid=5,mode=0620,ptmxmode=0666",
        ),
        ("tmpfs", "/dev/shm", "tmpfs", nosuid | nodev, "mode=1777"),
        ("tmpfs", "/tmp", "tmpfs", nosuid | nodev, "mode=1777"),
    ] {
        if mounted_at(&mountinfo()?, target).is_none() {
            let _ = fs::create_dir_all(target);
            mount(src, target, fstype, flags, data)?;
        }
    }
    Ok(())
}

/// `root ro=.. verity=.. device=..` from mountinfo and the device-mapper table.
fn root_line(mounts: &[Mount]) -> String {
    let Some(root) = mounted_at(mounts, "/") else {
        return "root ro=unknown verity=unknown device=unknown".into();
    };
    let ro = root.options.split(',').any(|o| o == "ro");
    let dm_name = fs::read_to_string(format!("/sys/dev/block/{}/dm/name", root.devno));
    let verity = match dm_name {
        Ok(n) => match dm::target_types(n.trim()) {
            Ok(t) => t.iter().any(|t| t == "verity"),
            Err(e) => {
                warn!("{e}");
                false
            }
        },
        Err(_) => false,
    };
    let yn = |b: bool| if b { "yes" } else { "no" };
    format!(
        "root ro={} verity={} device={}",
        yn(ro),
        yn(verity),
        root.source
    )
}

/// `state size=<bytes of the /var device> boot-count=<n>`.
fn state_line(mounts: &[Mount]) -> String {
    let size = mounted_at(mounts, "/var")
        .and_then(|m| fs::read_to_string(format!("/sys/dev/block/{}/size", m.devno)).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or("unknown".into(), |s| (s * 512).to_string());
    let count = crate::read_trim("/var/lib/berth/boot-count").unwrap_or_else(|_| "unknown".into());
    format!("state size={size} boot-count={count}")
}

/// /etc/machine-id is empty in the image; the first boot makes one and the /etc overlay
/// (upper on the state partition) keeps it.
fn machine_id() -> Result<()> {
    let p = "/etc/machine-id";
    if fs::read_to_string(p)
        .map(|s| s.trim().len() == 32)
        .unwrap_or(false)
    {
        return Ok(());
    }
    let id = crate::read_trim("/proc/sys/kernel/random/uuid")?.replace('-', "");
    fs::write(p, format!("{id}\n")).ctx(|| format!("writing {p}"))
}

fn version(c: &cmdline::Cmdline) -> String {
    c.version.clone().unwrap_or_else(|| {
        fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("IMAGE_VERSION=")
                        .map(|v| v.trim_matches('"').to_string())
                })
            })
            .unwrap_or_else(|| "unknown".into())
    })
}

pub fn run() -> Result<()> {
    // Queue the shutdown signals and SIGCHLD for the main loop (children get a clean mask).
    sys::block_signals(&SIGNALS).ctx(|| "sigprocmask(SIG_BLOCK)")?;
    crate::watchdog::adopt();
    mount_api()?;
    ensure_console();
    if let Err(e) = sys::disable_cad() {
        warn!("reboot(RB_DISABLE_CAD): {e}");
    }
    let c = cmdline::read()?;
    // From here to ready the watchdog is petted on the side, up to the ready-deadline.
    let policy = health::policy("/");
    {
        let (slot, v, deadline) = (c.slot, version(&c), policy.ready_deadline);
        crate::watchdog::until_ready(policy, move || {
            if let Some(slot) = slot {
                health::deadline_passed(slot, &v, deadline);
            }
        });
    }
    let mounts = mountinfo()?;
    say!("{}", root_line(&mounts));
    say!("{}", state_line(&mounts));

    let config = match provision::run() {
        Ok(c) => c,
        Err(e) => crate::stop_pid1(&format!("provisioning: {e}")),
    };
    match crate::read_trim("/etc/hostname") {
        Ok(h) if !h.is_empty() => {
            sys::sethostname(&h).ctx(|| format!("sethostname {h:?}"))?;
            say!(
                "hostname {}",
                crate::read_trim("/proc/sys/kernel/hostname")?
            );
        }
        _ => {}
    }
    machine_id()?;
    net::loopback_up()?;
    // resolv.conf lives in /run (DHCP writes it); /etc/resolv.conf must exist for
    // `ctr run --net-host`, which bind-mounts it into containers.
    let _ = fs::write("/run/resolv.conf", "");
    if fs::symlink_metadata("/etc/resolv.conf").is_err() {
        if let Err(e) = std::os::unix::fs::symlink("../run/resolv.conf", "/etc/resolv.conf") {
            warn!("symlink /etc/resolv.conf -> ../run/resolv.conf: {e}");
        }
    }
    let nics = config
        .as_ref()
        .map(|c| c.network.clone())
        .unwrap_or_default();
    if let Err(e) = network(&nics) {
        crate::stop_pid1(&format!("provisioning: network: {e}"));
    }
    let config = match config {
        None if crate::imds::on_ec2() => match provision::from_imds() {
            Ok(c) => c,
            Err(e) => crate::stop_pid1(&format!("provisioning: {e}")),
        },
        c => c,
    };
    // The image's services with the config's merged in (checked when the config was applied).
    let list = match provision::services(config.as_ref()) {
        Ok(l) => l,
        Err(e) => crate::stop_pid1(&format!("provisioning: {e}")),
    };
    // The ESP lock berthctl (on the host or in the admin container) shares with PID 1.
    drop(crate::esp::lock());
    if let Err(e) = units::prepare_admin() {
        warn!("preparing the admin container's keys: {e}");
    }
    // Containers need these modules (bridge, veth, netfilter), containerd's start does not:
    // they load on the side while containerd starts.
    let modules = std::thread::spawn(|| load_modules(paths::MODULE_LIST));
    services::prefetch(services::BINARIES);
    let mut sup = Supervisor::default();
    services::start_containerd(&mut sup)?;
    services::import_images(&mut sup, paths::IMAGES_DIR, c.slot)?;
    match modules.join() {
        Ok(Ok(n)) => say!("modules loaded n={n}"),
        Ok(Err(e)) => warn!("{e}"),
        Err(_) => warn!("the module loading thread panicked"),
    }
    power::watch();
    if let (Some(slot), false) = (c.slot, c.after_ready.is_some()) {
        health::started(slot, &version(&c));
    }
    let mut units = Units::new(list);
    units.start_all(&mut sup);
    let (up, n) = units.count_up();
    say!("services up={up}/{n}");
    for w in units.not_up() {
        warn!("required service {w}");
    }

    let problems = units.not_up();
    let degraded = health::degraded();
    match (c.state, c.slot) {
        _ if degraded.is_some() => warn!(
            "DEGRADED ({}): this boot is not blessed; repair the state partition and reboot",
            degraded.as_deref().unwrap_or("")
        ),
        (Some(_), Some(slot)) => {
            health::boot_outcome(slot, &version(&c), &problems, &mut sup);
            health::report_rollback(slot);
        }
        _ => warn!("berth.state or berth.slot missing from the kernel command line; not blessing"),
    }
    crate::watchdog::ready();
    if let Some(slot) = c.slot {
        health::reached_ready(slot);
    }
    let good_at = sys::uptime() + Duration::from_secs(policy.stable_after.into());
    let mut good = false;
    // The update policy in effect (the image's, the config's over it), for berthctl and for
    // the automatic channel checks.
    let mut updates = crate::channel::policy();
    if let Some(o) = config.as_ref().and_then(|c| c.update.as_ref()) {
        o.apply(&mut updates);
    }
    let _ = fs::write(paths::UPDATE_POLICY_RUN, updates.text());
    let every = Duration::from_secs(updates.check_interval.into());
    let mut next_check =
        (updates.channel.is_some() && !every.is_zero()).then(|| sys::uptime() + every);
    let (mut announced, mut checking) = (false, None);
    let (mut locking, mut next_lock_try) = (None, None);
    say!(
        "ready slot={} version={}",
        c.slot.map_or("unknown", |s| s.as_str()),
        version(&c)
    );

    match services::containerd_version() {
        Ok(v) => say!("containerd version={v}"),
        Err(e) => warn!("{e}"),
    }

    after_lock_reboot(&version(&c), c.slot);

    if let Some(how) = c.after_ready {
        shutdown(how, &mut sup);
    }
    loop {
        match sys::wait_signal(&SIGNALS, Duration::from_secs(1)) {
            Some(sys::SIGUSR2) => shutdown(Halt::Poweroff, &mut sup),
            Some(sys::SIGTERM | sys::SIGINT) => shutdown(Halt::Reboot, &mut sup),
            _ => {}
        }
        crate::watchdog::pet();
        if next_check.is_some_and(|t| sys::uptime() >= t) {
            next_check = Some(sys::uptime() + every);
            if checking.is_none_or(|pid| sys::kill(pid, 0).is_err()) {
                checking = check_channel();
            }
        }
        if let Ok(v) = fs::read_to_string(paths::UPDATE_PENDING) {
            let v = v.trim();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if updates.reboot == Reboot::EtcdLock {
                // Held (the record is written before `lock take` says so and exits: wait
                // for that, so its line comes first and nothing is cut off).
                let child_done = locking.is_none_or(|pid| sys::kill(pid, 0).is_err());
                if child_done && crate::lock::held().is_some_and(|(_, for_v)| for_v == v) {
                    say!("rebooting into the applied update {v} (reboot policy etcd-lock: this machine holds the cluster's reboot lock)");
                    shutdown(Halt::Reboot, &mut sup);
                }
                if !announced {
                    announced = true;
                    say!("update {v} applied; it reboots once it holds the cluster's reboot lock");
                }
                // One `berthctl lock take --wait` at a time; started again (not too often)
                // if it gave up.
                if locking.is_none_or(|pid| sys::kill(pid, 0).is_err())
                    && next_lock_try.is_none_or(|t| sys::uptime() >= t)
                {
                    next_lock_try = Some(sys::uptime() + Duration::from_secs(10));
                    locking = spawn_berthctl(&["lock", "take", "--wait", "--for", v]);
                }
            } else if updates.reboot.allows(now) {
                say!(
                    "rebooting into the applied update {v} (reboot policy {})",
                    updates.reboot.text()
                );
                shutdown(Halt::Reboot, &mut sup);
            } else if !announced {
                announced = true;
                say!(
                    "update {v} applied; it reboots in the window {}",
                    updates.reboot.text()
                );
            }
        }
        if !good && sys::uptime() >= good_at {
            good = true;
            health::boot_was_good();
            say!("boot counted good: ready for {} s", policy.stable_after);
        }
        sup.reap();
        sup.tick();
        units.poll(&mut sup);
    }
}

/// One automatic channel check: `berthctl update check --apply` as a child (reaped with the
/// others), its lines on the console; returns its PID (the caller starts no second one while
/// it runs, and none once an update is pending).
fn check_channel() -> Option<i32> {
    if fs::metadata(paths::UPDATE_PENDING).is_ok() {
        return None;
    }
    spawn_berthctl(&["update", "check", "--apply"])
}

/// `berthctl ARGS` as a child of PID 1 (reaped with the others), its lines on the console.
fn spawn_berthctl(args: &[&str]) -> Option<i32> {
    use std::os::unix::process::CommandExt;
    match std::process::Command::new("/proc/self/exe")
        .arg0("berthctl")
        .args(args)
        .spawn()
    {
        Ok(c) => Some(c.id() as i32),
        Err(e) => {
            warn!("starting berthctl {}: {e}", args.join(" "));
            None
        }
    }
}

/// Ready: if this machine holds the cluster's reboot lock (it took it to reboot into an
/// update), release it when this boot is that update and blessed; keep it, saying so, when
/// this boot is another version (it rolled back, or never got there): no other machine should
/// reboot into a release that failed here.
fn after_lock_reboot(running: &str, slot: Option<berth_contract::Slot>) {
    let Some((holder, for_v)) = crate::lock::held() else {
        return;
    };
    let blessed = slot.is_some_and(|slot| {
        crate::esp::entries()
            .is_ok_and(|l| l.iter().any(|(e, _)| e.slot == slot && e.tries.is_none()))
    });
    if !for_v.is_empty() && for_v == running && blessed {
        say!("{holder} is up on {running} and blessed: releasing the cluster's reboot lock");
        spawn_berthctl(&["lock", "release", "--wait"]);
    } else if for_v.is_empty() {
        say!("{holder} holds the cluster's reboot lock (taken by hand); `berthctl lock release` frees it");
    } else {
        say!("{holder} holds the cluster's reboot lock for {for_v}, but this boot runs {running}{}: keeping it, so no other machine reboots into {for_v}; `berthctl lock release` frees it", if blessed { "" } else { " (not blessed)" });
    }
}

/// The network as configured: DHCP on the first NIC without a config; otherwise each entry
/// (a missing named NIC or a static address that cannot be set is an error; a DHCP that
/// gets no lease is a warning, as without a config).
fn network(nics: &[Nic]) -> Result<()> {
    let dhcp = |nic: &str| match net::dhcp(nic) {
        Ok(l) => say!(
            "network {nic} address={} router={}",
            fmt_ip(l.addr),
            fmt_ip(l.router)
        ),
        Err(e) => warn!("{e}; continuing without a network"),
    };
    if nics.is_empty() {
        match net::first_ethernet() {
            None => warn!("no ethernet interface; continuing without a network"),
            Some(nic) => dhcp(&nic),
        }
        return Ok(());
    }
    for n in nics {
        let name = match &n.interface {
            Interface::First => match net::first_ethernet() {
                Some(nic) => nic,
                None => crate::fail!(
                    "the config names the first NIC, but there is no ethernet interface"
                ),
            },
            Interface::Named(s) if net::exists(s) => s.clone(),
            Interface::Named(s) => {
                crate::fail!("the config names interface {s}, which this machine does not have")
            }
        };
        match &n.addressing {
            Addressing::Dhcp => dhcp(&name),
            Addressing::Static {
                address,
                prefix,
                gateway,
                dns,
            } => {
                net::static_address(&name, *address, *prefix, *gateway, dns)?;
                let ip = berth_contract::config::ipv4_text;
                say!(
                    "network {name} address={}/{prefix} router={} static",
                    ip(address),
                    gateway.as_ref().map_or("none".to_string(), ip)
                );
            }
        }
    }
    Ok(())
}

fn fmt_ip(a: Option<std::net::Ipv4Addr>) -> String {
    a.map_or("none".into(), |a| a.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo() {
        let text = "\
22 1 254:0 / / ro,relatime shared:1 - ext4 /dev/mapper/root ro\n\
23 22 0:5 / /dev rw,nosuid master:2 - devtmpfs devtmpfs rw,size=4k\n\
30 22 254:6 / /var rw,relatime - ext4 /dev/vda6 rw\n\
31 22 0:40 / /etc rw - overlay overlay rw,lowerdir=/sysroot/etc\n\
40 22 0:41 / /mnt/with\\040space rw - tmpfs tmp\\040fs rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 5);
        let root = mounted_at(&m, "/").unwrap();
        assert_eq!(
            (
                root.devno.as_str(),
                root.source.as_str(),
                root.fstype.as_str()
            ),
            ("254:0", "/dev/mapper/root", "ext4")
        );
        assert!(root.options.split(',').any(|o| o == "ro"));
        assert_eq!(m[4].mountpoint, "/mnt/with space");
        assert_eq!(m[4].source, "tmp fs");
        assert_eq!(mounted_at(&m, "/var").unwrap().devno, "254:6");
    }
}
