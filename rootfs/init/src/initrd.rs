//! The initrd stage (README.md, "Stages"): from the initramfs to the real root, top to bottom.
//! Any error ends here as `berth: FATAL: ...` and a reboot (main.rs), so boot counting can
//! fall back to the other slot.

use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_contract::layout::STATE_INDEX;
use berth_contract::paths::{INIT, MODULE_LIST, SYSROOT};
use berth_contract::verity::Superblock;

use crate::gpt;
use crate::{cmdline, dm, fail, main_stage, say, sys, warn, Ctx, Result};

/// How long to wait for devices: virtio_blk and device-mapper create them asynchronously.
const DEVICE_WAIT: Duration = Duration::from_secs(10);
const ROOT_DM_NAME: &str = "root";
const ROOT_DEV: &str = "/dev/mapper/root";
/// `_IOW('f', 16, __u64)`.
const EXT4_IOC_RESIZE_FS: libc::c_ulong = 0x4008_6610;

pub fn run() -> Result<()> {
    mount_api()?;
    main_stage::ensure_console();
    let c = cmdline::read()?;
    for w in &c.warnings {
        warn!("{w}");
    }
    let keys = c.boot_args()?;
    // Which kernel booted: `quiet` hides the kernel's own banner.
    if let Ok(release) = crate::read_trim("/proc/sys/kernel/osrelease") {
        say!("initrd: kernel release={release}");
    }
    let n = load_modules(MODULE_LIST)?;
    say!("initrd: modules loaded n={n}");

    let parts = gpt::wait_for(&[keys.root, keys.verity], DEVICE_WAIT)?;
    let (root, hash) = (&parts[0], &parts[1]);
    let (root_dev, hash_dev) = (format!("/dev/{}", root.dev), format!("/dev/{}", hash.dev));
    // The root's partitions appeared; the state partition is on the same disk by then.
    let state = gpt::wait_for(&[keys.state], Duration::from_secs(1)).map(|mut v| v.remove(0));

    let mut sb = vec![0u8; 4096];
    File::open(&hash_dev)
        .and_then(|f| f.read_exact_at(&mut sb, 0))
        .ctx(|| format!("reading the verity superblock from {hash_dev}"))?;
    let sb =
        Superblock::decode(&sb).ctx(|| format!("reading the verity superblock from {hash_dev}"))?;
    let root_sectors = gpt::dev_sectors(&root.dev)?;
    if sb.data_sectors() > root_sectors {
        fail!(
            "checking the verity superblock of {hash_dev}: it covers {} sectors but {root_dev} has {root_sectors}",
            sb.data_sectors()
        );
    }
    wait_path("/dev/mapper/control")?;
    let params = sb.table_params(&root_dev, &hash_dev, &keys.roothash);
    let (major, minor) = dm::create(ROOT_DM_NAME, sb.data_sectors(), "verity", &params)?;
    // No udev here: make the /dev/mapper/<name> node ourselves (devtmpfs only makes dm-N).
    match sys::mknod_block(ROOT_DEV, major, minor) {
        Err(e) if e.kind() != ErrorKind::AlreadyExists => {
            fail!("mknod {ROOT_DEV} (block {major}:{minor}): {e}")
        }
        _ => {}
    }
    say!("initrd: verity root={ROOT_DEV} roothash={}", keys.roothash);
    mount(ROOT_DEV, "/sysroot", "ext4", sys::MS_RDONLY, "")?;

    // The state partition: a missing, unreadable or unmountable one must not stop the boot
    // (every boot would fail the same way): the machine comes up degraded, /var on a tmpfs.
    let degraded = match state.and_then(|st| mount_state(&st)) {
        Ok(()) => None,
        Err(e) => {
            let why = e.0;
            say!("DEGRADED: state partition unusable: {why}; /var is a tmpfs (nothing written there persists), the boot is not blessed, the failed-boot count is not kept");
            let _ = sys::umount("/sysroot/var", sys::MNT_DETACH);
            mount(
                "tmpfs",
                "/sysroot/var",
                "tmpfs",
                sys::MS_NOSUID | sys::MS_NODEV,
                "mode=0755",
            )?;
            prepare_state("/sysroot/var")?;
            Some(why)
        }
    };
    if let Some(why) = &degraded {
        let _ = fs::create_dir_all("/run/berth");
        let _ = fs::write(crate::health::DEGRADED, format!("{why}\n"));
    }
    // The image's health policy: a slot that keeps failing is not booted again as is, and a
    // hung boot is rebooted by the watchdog. A problem reading the ESP here must not make a
    // boot fail that would otherwise work: it is a warning.
    let policy = crate::health::policy(SYSROOT);
    if degraded.is_none() {
        if let Err(e) = crate::health::initrd_check(SYSROOT, keys.slot, &keys.version, &policy) {
            warn!("checking slot {}'s failed boots: {e}", keys.slot);
        }
    }
    crate::watchdog::arm(&policy)?;
    mount(
        "overlay",
        "/sysroot/etc",
        "overlay",
        0,
        "lowerdir=/sysroot/etc,upperdir=/sysroot/var/lib/berth/etc/upper,workdir=/sysroot/var/lib/berth/etc/work",
    )?;
    switch_root(SYSROOT, INIT)
}

/// Grows (first boot on a bigger disk), mounts and prepares the state partition at
/// /sysroot/var. Errors say which device and what failed.
fn mount_state(state: &gpt::Found) -> Result<()> {
    let disk = format!("/dev/{}", state.disk);
    let mut table = state.table.clone();
    let grown = match state.entry.index {
        STATE_INDEX => table.grow_last(STATE_INDEX, gpt::dev_sectors(&state.disk)?),
        _ => None,
    };
    if grown.is_some() {
        let entry = table.find(state.entry.guid).cloned();
        gpt::write(&disk, &table, entry.as_ref())?;
    }
    let state_dev = format!("/dev/{}", state.dev);
    mount(&state_dev, "/sysroot/var", "ext4", 0, "")?;
    if let Some((old_last, new_last)) = grown {
        let first = state.entry.first_lba;
        let (old, new) = (
            (old_last - first + 1) * gpt::SECTOR,
            (new_last - first + 1) * gpt::SECTOR,
        );
        resize_ext4("/sysroot/var", new)?;
        say!("initrd: state grown from {old} to {new}");
    }
    prepare_state("/sysroot/var").ctx(|| format!("preparing {state_dev}"))
}

pub fn mount(
    src: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Result<()> {
    sys::mount(src, target, fstype, flags, data).ctx(|| {
        let t = if fstype.is_empty() {
            String::new()
        } else {
            format!(" -t {fstype}")
        };
        let o = if data.is_empty() {
            String::new()
        } else {
            format!(" -o {data}")
        };
        format!("mount{t}{o} {src} {target} (flags {flags:#x})")
    })
}

/// /dev, /proc, /sys, /run; already mounted (EBUSY) is fine.
fn mount_api() -> Result<()> {
    let (nosuid, noexec, nodev) = (sys::MS_NOSUID, sys::MS_NOEXEC, sys::MS_NODEV);
    for (src, target, fstype, flags, data) in [
        ("devtmpfs", "/dev", "devtmpfs", nosuid, "mode=0755"),
        ("proc", "/proc", "proc", nosuid | noexec | nodev, ""),
        ("sysfs", "/sys", "sysfs", nosuid | noexec | nodev, ""),
        ("tmpfs", "/run", "tmpfs", nosuid | nodev, "mode=0755"),
    ] {
        let _ = fs::create_dir_all(target);
        match sys::mount(src, target, fstype, flags, data) {
            Err(e) if e.raw_os_error() != Some(libc::EBUSY) => {
                fail!("mount -t {fstype} {src} {target}: {e}")
            }
            _ => {}
        }
    }
    Ok(())
}

/// Loads the modules listed in `list` (paths relative to /usr/lib/modules/<kver>/, in order).
/// A module the kernel already has is fine; one that fails to load is a warning, since the
/// step that needs it will fail with a clearer message (and some, like CPU-specific crypto,
/// legitimately refuse).
pub fn load_modules(list: &str) -> Result<usize> {
    let text = match fs::read_to_string(list) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
        r => r.ctx(|| format!("reading {list}"))?,
    };
    let kver = crate::read_trim("/proc/sys/kernel/osrelease")?;
    let mut n = 0;
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let path = format!("/usr/lib/modules/{kver}/{line}");
        let f = File::open(&path).ctx(|| format!("opening module {path}"))?;
        match sys::finit_module(f.as_raw_fd()) {
            Ok(()) => n += 1,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => n += 1,
            Err(e) => warn!("finit_module {path}: {e}"),
        }
    }
    Ok(n)
}

fn wait_path(p: &str) -> Result<()> {
    let start = Instant::now();
    while !Path::new(p).exists() {
        if start.elapsed() > DEVICE_WAIT {
            fail!(
                "waiting {}s for {p}: it never appeared (module not loaded?)",
                DEVICE_WAIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Online resize of the ext4 mounted at `mnt` to `bytes` (in its own block size).
fn resize_ext4(mnt: &str, bytes: u64) -> Result<()> {
    let f = File::open(mnt).ctx(|| format!("opening {mnt}"))?;
    let bs = f
        .metadata()
        .ctx(|| format!("stat {mnt}"))?
        .blksize()
        .max(1024);
    let blocks = bytes / bs;
    sys::ioctl_u64(f.as_raw_fd(), EXT4_IOC_RESIZE_FS, blocks)
        .ctx(|| format!("EXT4_IOC_RESIZE_FS {mnt} to {blocks} blocks of {bs} bytes"))
}

/// Space kept free on /var for berth's own records (boot count, health, the /etc overlay)
/// and for the services to start again: containerd runs with every capability, so ext4's
/// reserved blocks do not stop it (or a privileged container) filling the disk. Released when
/// a record cannot be written for want of space or when less than the reserve is left to
/// processes without CAP_SYS_RESOURCE (a container cannot start then: seen, the admin
/// container failing on a full /var); made again once there is room for it four times over.
const RESERVE: &str = "lib/berth/reserve";
const RESERVE_BYTES: usize = 8 << 20;

/// The state partition's skeleton and boot counter (the main stage prints it).
fn prepare_state(var: &str) -> Result<()> {
    for d in [
        "lib/berth/etc/upper",
        "lib/berth/etc/work",
        "lib/containerd",
        "log",
    ] {
        let p = format!("{var}/{d}");
        fs::create_dir_all(&p).ctx(|| format!("mkdir -p {p}"))?;
    }
    let p = format!("{var}/lib/berth/boot-count");
    let n: u64 = fs::read_to_string(&p)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let reserve = format!("{var}/{RESERVE}");
    let write = || -> std::io::Result<()> {
        let tmp = format!("{p}.tmp");
        fs::write(&tmp, format!("{}\n", n + 1))?;
        File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, &p)
    };
    let release = || {
        if fs::remove_file(&reserve).is_ok() {
            warn!(
                "the state partition is full: released berth's {} MiB reserve; free space on /var",
                RESERVE_BYTES >> 20
            );
        }
    };
    match write() {
        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
            release();
            write().ctx(|| format!("writing {p}"))?;
        }
        r => r.ctx(|| format!("writing {p}"))?,
    }
    let available = || {
        File::open(var)
            .and_then(|f| sys::available_bytes(f.as_raw_fd()))
            .unwrap_or(u64::MAX)
    };
    if available() < RESERVE_BYTES as u64 {
        release();
    }
    if fs::metadata(&reserve).is_err() && available() >= 4 * RESERVE_BYTES as u64 {
        let made = File::create(&reserve).and_then(|mut f| {
            std::io::Write::write_all(&mut f, &vec![0u8; RESERVE_BYTES]).and_then(|()| f.sync_all())
        });
        if made.is_err() {
            let _ = fs::remove_file(&reserve);
        }
    }
    Ok(())
}

/// switch_root without pivot_root (the initramfs root cannot be pivoted away): move the API
/// filesystems and the new root over `/`, chroot into it and exec its init as PID 1.
fn switch_root(new_root: &str, init: &str) -> Result<()> {
    for d in ["/dev", "/proc", "/sys", "/run"] {
        mount(d, &format!("{new_root}{d}"), "", sys::MS_MOVE, "")?;
    }
    std::env::set_current_dir(new_root).ctx(|| format!("chdir {new_root}"))?;
    mount(".", "/", "", sys::MS_MOVE, "")?;
    sys::chroot(".").ctx(|| format!("chroot {new_root}"))?;
    std::env::set_current_dir("/").ctx(|| "chdir / in the new root")?;
    let e = std::process::Command::new(init).exec();
    fail!("exec {init} in the new root: {e}")
}
