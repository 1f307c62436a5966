//! Booting berth images in QEMU: shared by `berth run` and the vm-tests.
//!
//! UEFI (OVMF) by default, or direct kernel boot; KVM only when it can work (the CPU shows
//! vmx/svm and /dev/kvm opens), TCG otherwise; user-mode networking always with `restrict=on`,
//! so a guest reaches nothing but the host ports it is given; the disk a throw-away snapshot
//! unless asked otherwise.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use anyhow::{bail, Context, Result};

use crate::util::cmd::find_tool;

/// OVMF firmware pairs, most specific first (Debian's `ovmf` package ships all of these), in
/// `BERTH_OVMF_DIR` or else /usr/share/OVMF.
const OVMF_PAIRS: &[(&str, &str)] = &[
    ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
    ("OVMF_CODE.fd", "OVMF_VARS.fd"),
];
const OVMF_DIR: &str = "/usr/share/OVMF";
/// Enough for containerd plus a few containers; TCG guests do not get faster with more.
pub const DEFAULT_MEMORY_MIB: u32 = 1024;
pub const DEFAULT_CPUS: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

/// KVM only when the CPU advertises virtualisation *and* /dev/kvm can be opened: on machines
/// where /dev/kvm exists without vmx/svm, QEMU would hang.
pub fn detect_accel() -> Accel {
    let cpu = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let has_virt = cpu
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    let opens = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if has_virt && opens {
        Accel::Kvm
    } else {
        Accel::Tcg
    }
}

#[derive(Clone, Debug)]
pub enum Boot {
    /// OVMF -> systemd-boot on the ESP -> the slot's entry.
    Uefi,
    /// Kernel + initrd + command line given to QEMU directly.
    Direct {
        kernel: PathBuf,
        initrd: PathBuf,
        cmdline: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFormat {
    Raw,
    Qcow2,
    Vmdk,
}

impl DiskFormat {
    /// From the file's first bytes (qcow2 and vmdk magic), raw otherwise.
    pub fn detect(path: &Path) -> Result<DiskFormat> {
        use std::io::Read;
        let mut magic = [0u8; 4];
        let mut f = fs::File::open(path)
            .with_context(|| format!("opening disk image {}", path.display()))?;
        let n = f.read(&mut magic)?;
        Ok(match &magic[..n] {
            b"QFI\xfb" => DiskFormat::Qcow2,
            b"KDMV" => DiskFormat::Vmdk,
            _ => DiskFormat::Raw,
        })
    }

    fn name(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vmdk => "vmdk",
        }
    }
}

#[derive(Clone, Debug)]
pub struct VmConfig {
    pub disk: PathBuf,
    pub format: DiskFormat,
    pub boot: Boot,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Write to the disk image itself instead of a throw-away snapshot.
    pub persist: bool,
    /// (host port on 127.0.0.1, guest port) TCP forwards.
    pub forwards: Vec<(u16, u16)>,
    /// Where the serial console goes: `None` = this terminal (interactive), `Some` = a file
    /// (tests) and nothing on the terminal.
    pub console_file: Option<PathBuf>,
    /// Also copy the interactive console to this file.
    pub console_log: Option<PathBuf>,
    /// Exit instead of rebooting when the guest reboots.
    pub no_reboot: bool,
    /// A machine config handed to the guest through fw_cfg (`opt/org.berth/config`).
    pub machine_config: Option<PathBuf>,
    /// A QMP control socket (unix), e.g. for `system_powerdown`.
    pub qmp: Option<PathBuf>,
    /// More disks, read-only raw images on virtio-blk after the boot disk (a `cidata` config
    /// drive, say).
    pub extra_drives: Vec<PathBuf>,
    /// SMBIOS fields (`type=1,manufacturer=…`), e.g. to look like a cloud's machine.
    pub smbios: Vec<String>,
    /// Guest connections to `(guest address, guest port)` are handed, one program per
    /// connection on its stdin/stdout, to the host command given (QEMU user networking's
    /// `guestfwd=…-cmd:…`; `restrict=on` still blocks everything else).
    pub guest_forwards: Vec<(std::net::Ipv4Addr, u16, String)>,
    /// The user network's addressing (`net=`, `host=`, `dhcpstart=`, `dns=`, comma-separated,
    /// as QEMU takes them), e.g. to put 169.254.169.254 inside it like a cloud's metadata
    /// service. `None`: QEMU's 10.0.2.0/24.
    pub user_net: Option<String>,
    pub accel: Accel,
    pub disk_bus: DiskBus,
    /// A second NIC on a VDE switch (`vde_switch --sock DIR`), with this MAC: a cluster's
    /// network, which touches no host interface.
    pub vde: Option<(PathBuf, String)>,
}

/// How the disk is attached: virtio-blk (QEMU's and libvirt's usual), or a disk on a virtio-scsi
/// controller (what berth's VirtualBox box uses, and GCE).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DiskBus {
    #[default]
    VirtioBlk,
    VirtioScsi,
    /// An NVMe controller (what EC2 Nitro instances present EBS volumes as).
    Nvme,
}

impl VmConfig {
    pub fn new(disk: &Path) -> Result<VmConfig> {
        Ok(VmConfig {
            disk: disk.to_path_buf(),
            format: DiskFormat::detect(disk)?,
            boot: Boot::Uefi,
            memory_mib: DEFAULT_MEMORY_MIB,
            cpus: DEFAULT_CPUS,
            persist: false,
            forwards: Vec::new(),
            console_file: None,
            console_log: None,
            no_reboot: false,
            machine_config: None,
            qmp: None,
            extra_drives: Vec::new(),
            smbios: Vec::new(),
            guest_forwards: Vec::new(),
            user_net: None,
            accel: detect_accel(),
            disk_bus: DiskBus::default(),
            vde: None,
        })
    }
}

/// Checks QEMU (and OVMF for UEFI boots) are installed, naming the Debian package otherwise.
pub fn check_host(boot: &Boot) -> Result<PathBuf> {
    // BERTH_QEMU picks another QEMU build (and lets tests see the "not installed" path).
    let qemu = match std::env::var_os("BERTH_QEMU") {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => find_tool("qemu-system-x86_64"),
    }
    .context("qemu-system-x86_64 is not installed: `apt-get install qemu-system-x86`")?;
    if matches!(boot, Boot::Uefi) {
        ovmf()?;
    }
    Ok(qemu)
}

fn ovmf() -> Result<(PathBuf, PathBuf)> {
    let dir = std::env::var_os("BERTH_OVMF_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(OVMF_DIR));
    OVMF_PAIRS
        .iter()
        .map(|(c, v)| (dir.join(c), dir.join(v)))
        .find(|(c, v)| c.is_file() && v.is_file())
        .context(
            "UEFI firmware (OVMF) is not installed: `apt-get install ovmf` (or boot with --direct)",
        )
}

/// The QEMU command for `cfg`. `work` is a directory for the firmware's writable variable store.
/// Less memory than this and the kernel, containerd and the initramfs do not fit.
pub const MIN_MEMORY_MIB: u32 = 128;
/// QEMU's q35 machine takes at most this many vCPUs without extra options.
pub const MAX_CPUS: u32 = 255;

/// A path as a value inside a QEMU option string (`file=…,format=…`): QEMU's option parser
/// splits at commas and reads `,,` as a literal comma, so commas are doubled; otherwise a
/// path like `log,file=/etc/x` would inject options.
pub fn opt_path(p: &Path) -> Result<String> {
    let s = p.to_str().with_context(|| {
        format!(
            "{} is not valid UTF-8, which QEMU options cannot carry",
            p.display()
        )
    })?;
    if s.contains('\n') {
        bail!("{s:?} contains a newline, which QEMU options cannot carry");
    }
    Ok(s.replace(',', ",,"))
}

/// Checks the numbers a user gives before QEMU sees them.
fn check_config(cfg: &VmConfig) -> Result<()> {
    if cfg.memory_mib < MIN_MEMORY_MIB {
        bail!(
            "--memory {}: a berth guest needs at least {MIN_MEMORY_MIB} MiB",
            cfg.memory_mib
        );
    }
    if !(1..=MAX_CPUS).contains(&cfg.cpus) {
        bail!("--cpus {}: give 1 to {MAX_CPUS}", cfg.cpus);
    }
    for (host, guest) in &cfg.forwards {
        if *host == 0 || *guest == 0 {
            bail!("--forward {host}:{guest}: ports are 1-65535");
        }
    }
    Ok(())
}

pub fn command(cfg: &VmConfig, work: &Path) -> Result<Command> {
    check_config(cfg)?;
    let qemu = check_host(&cfg.boot)?;
    let mut c = Command::new(qemu);
    c.args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-machine",
        "q35",
    ]);
    match cfg.accel {
        Accel::Kvm => c.args(["-accel", "kvm", "-cpu", "host"]),
        // No CMPXCHG16B under TCG: with two vCPUs, QEMU 7.2's multi-threaded TCG livelocked
        // guests in SLUB's cmpxchg_double fast path (both vCPUs stuck in kmem_cache_alloc,
        // soft lockups, no progress for minutes) in about 1 boot in 25 here; without the
        // feature the kernel takes its locked path, and 40 boots in a row came up.
        Accel::Tcg => c.args(["-accel", "tcg", "-cpu", "max,-cx16"]),
    };
    c.arg("-m")
        .arg(cfg.memory_mib.to_string())
        .arg("-smp")
        .arg(cfg.cpus.to_string());
    match &cfg.boot {
        Boot::Uefi => {
            let (code, vars) = ovmf()?;
            let my_vars = work.join("OVMF_VARS.fd");
            fs::copy(&vars, &my_vars)
                .with_context(|| format!("copying {} to {}", vars.display(), my_vars.display()))?;
            c.arg("-drive").arg(format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={}",
                opt_path(&code)?
            ));
            c.arg("-drive").arg(format!(
                "if=pflash,format=raw,unit=1,file={}",
                opt_path(&my_vars)?
            ));
        }
        Boot::Direct {
            kernel,
            initrd,
            cmdline,
        } => {
            c.arg("-kernel")
                .arg(kernel)
                .arg("-initrd")
                .arg(initrd)
                .arg("-append")
                .arg(cmdline);
        }
    }
    let drive = format!(
        "file={},format={},snapshot={},cache=unsafe",
        opt_path(&cfg.disk)?,
        cfg.format.name(),
        if cfg.persist { "off" } else { "on" }
    );
    match cfg.disk_bus {
        DiskBus::VirtioBlk => c.arg("-drive").arg(format!("{drive},if=virtio")),
        DiskBus::VirtioScsi => c
            .args(["-device", "virtio-scsi-pci,id=scsi0", "-drive"])
            .arg(format!("{drive},if=none,id=disk0"))
            .args(["-device", "scsi-hd,drive=disk0,bus=scsi0.0"]),
        DiskBus::Nvme => c
            .arg("-drive")
            .arg(format!("{drive},if=none,id=disk0"))
            .args(["-device", "nvme,drive=disk0,serial=berth0"]),
    };
    for d in &cfg.extra_drives {
        c.arg("-drive").arg(format!(
            "file={},format=raw,if=virtio,readonly=on",
            opt_path(d)?
        ));
    }
    let mut net = "user,id=n0,restrict=on".to_string();
    if let Some(n) = &cfg.user_net {
        for kv in n.split(',') {
            let key = kv.split('=').next().unwrap_or("");
            if !["net", "host", "dhcpstart", "dns"].contains(&key) || !kv.contains('=') {
                bail!(
                    "user network option {kv:?}: only net=, host=, dhcpstart= and dns= may be set"
                );
            }
        }
        net.push(',');
        net.push_str(n);
    }
    for (host, guest) in &cfg.forwards {
        net.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
    }
    for (addr, port, cmd) in &cfg.guest_forwards {
        if cmd.contains(['\n', '\0']) {
            bail!("guest forward command {cmd:?} contains a control character");
        }
        // QEMU reads ",," as a literal comma inside an option value.
        let cmd = cmd.replace(',', ",,");
        net.push_str(&format!(",guestfwd=tcp:{addr}:{port}-cmd:{cmd}"));
    }
    for s in &cfg.smbios {
        if s.contains(['\n', '\0']) {
            bail!("SMBIOS field {s:?} contains a control character");
        }
        c.arg("-smbios").arg(s);
    }
    c.args(["-netdev", &net, "-device", "virtio-net-pci,netdev=n0"]);
    if let Some((sock, mac)) = &cfg.vde {
        let ok = mac.len() == 17
            && mac
                .split(':')
                .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()));
        if !ok {
            bail!("cluster NIC MAC {mac:?} is not six hex bytes separated by `:`");
        }
        c.arg("-netdev")
            .arg(format!("vde,id=c0,sock={}", opt_path(sock)?));
        c.arg("-device")
            .arg(format!("virtio-net-pci,netdev=c0,mac={mac}"));
    }
    c.args(["-device", "virtio-rng-pci"]);
    match (&cfg.console_file, &cfg.console_log) {
        (Some(f), _) => {
            c.arg("-chardev")
                .arg(format!("file,id=con,path={}", opt_path(f)?));
            c.args(["-serial", "chardev:con", "-monitor", "none"]);
        }
        (None, Some(log)) => {
            c.arg("-chardev").arg(format!(
                "stdio,id=con,mux=on,signal=on,logfile={}",
                opt_path(log)?
            ));
            c.args([
                "-serial",
                "chardev:con",
                "-mon",
                "chardev=con,mode=readline",
            ]);
        }
        (None, None) => {
            c.args([
                "-chardev",
                "stdio,id=con,mux=on,signal=on",
                "-serial",
                "chardev:con",
                "-mon",
                "chardev=con,mode=readline",
            ]);
        }
    }
    if let Some(mc) = &cfg.machine_config {
        c.arg("-fw_cfg").arg(format!(
            "name={},file={}",
            berth_contract::config::FW_CFG_NAME,
            opt_path(mc)?
        ));
    }
    if let Some(q) = &cfg.qmp {
        c.arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", opt_path(q)?));
    }
    if cfg.no_reboot {
        c.arg("-no-reboot");
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct_cfg(dir: &Path, disk_name: &str) -> VmConfig {
        let disk = dir.join(disk_name);
        fs::write(&disk, vec![0u8; 4096]).unwrap();
        let mut cfg = VmConfig::new(&disk).unwrap();
        cfg.boot = Boot::Direct {
            kernel: "k".into(),
            initrd: "i".into(),
            cmdline: "c".into(),
        };
        cfg
    }

    /// Regression (option injection): a comma in a path berth puts into a QEMU option is
    /// doubled, so QEMU reads it as part of the path.
    #[test]
    fn commas_in_paths_are_escaped_not_parsed() {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = direct_cfg(d.path(), "disk,file=x.raw");
        cfg.console_log = Some(d.path().join("log,logfile=/etc/x"));
        if let Err(e) = check_host(&cfg.boot) {
            // No QEMU on a developer's machine: skip. CI installs it (ci/install-deps).
            assert!(std::env::var_os("CI").is_none(), "{e:#}");
            return;
        }
        let c = command(&cfg, d.path()).unwrap();
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let drive = args.iter().find(|a| a.starts_with("file=")).unwrap();
        assert!(drive.contains("disk,,file=x.raw,format="), "{drive}");
        let chardev = args.iter().find(|a| a.contains("logfile=")).unwrap();
        assert!(chardev.ends_with("log,,logfile=/etc/x"), "{chardev}");
        assert_eq!(opt_path(Path::new("a,b,,c")).unwrap(), "a,,b,,,,c");
        assert!(opt_path(Path::new("a\nb")).is_err());
    }

    /// Regression: `--memory 0`, `--cpus 0` and port 0 went to QEMU unchecked.
    #[test]
    fn numbers_are_checked_before_qemu_starts() {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = direct_cfg(d.path(), "disk.raw");
        cfg.memory_mib = 0;
        assert!(command(&cfg, d.path())
            .unwrap_err()
            .to_string()
            .contains("--memory 0"));
        cfg.memory_mib = 512;
        cfg.cpus = 0;
        assert!(command(&cfg, d.path())
            .unwrap_err()
            .to_string()
            .contains("--cpus 0"));
        cfg.cpus = 1;
        cfg.forwards = vec![(0, 80)];
        assert!(command(&cfg, d.path())
            .unwrap_err()
            .to_string()
            .contains("--forward 0:80"));
    }

    #[test]
    fn network_is_always_restricted_and_forwards_bind_loopback() {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = direct_cfg(d.path(), "disk.raw");
        cfg.forwards = vec![(2222, 22)];
        cfg.accel = Accel::Tcg;
        let Ok(c) = command(&cfg, d.path()) else {
            return;
        }; // no QEMU on this host
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let net = args.iter().find(|a| a.starts_with("user,")).unwrap();
        assert!(net.contains("restrict=on"), "{net}");
        assert!(net.contains("hostfwd=tcp:127.0.0.1:2222-:22"), "{net}");
        assert!(args.iter().any(|a| a.contains("snapshot=on")));
        assert!(args.windows(2).any(|w| w[0] == "-accel" && w[1] == "tcg"));
    }

    #[test]
    fn formats_are_detected_by_magic() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x");
        fs::write(&p, b"QFI\xfb....").unwrap();
        assert_eq!(DiskFormat::detect(&p).unwrap(), DiskFormat::Qcow2);
        fs::write(&p, b"\0\0\0\0").unwrap();
        assert_eq!(DiskFormat::detect(&p).unwrap(), DiskFormat::Raw);
    }
}

/// How a foreground guest ended.
pub struct Ended {
    pub status: ExitStatus,
    /// The signal (SIGINT, SIGTERM or SIGHUP) that asked berth to stop, if one did.
    pub signal: Option<i32>,
}

/// Runs QEMU in the foreground until it exits. SIGINT, SIGTERM and SIGHUP sent to berth are
/// passed on to QEMU as SIGTERM, its clean shutdown (a `--persist` disk is flushed), so stopping
/// `berth run` never leaves a guest running behind it.
pub fn run_foreground(cmd: &mut Command) -> Result<Ended> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    use std::sync::atomic::{AtomicI32, Ordering};
    use std::sync::Arc;

    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("installing the SIGINT/SIGTERM handlers")?;
    let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;
    let pid = child.id();
    let got = Arc::new(AtomicI32::new(0));
    let handle = signals.handle();
    let forwarder = {
        let got = Arc::clone(&got);
        std::thread::spawn(move || {
            for sig in signals.forever() {
                got.store(sig, Ordering::SeqCst);
                if let Err(e) = signal::terminate(pid) {
                    tracing::warn!("passing signal {sig} on to QEMU (pid {pid}): {e}");
                }
            }
        })
    };
    let status = child.wait();
    // Stop forwarding before the pid can be reused by another process.
    handle.close();
    let _ = forwarder.join();
    let status = status.context("waiting for qemu-system-x86_64")?;
    let signal = Some(got.load(Ordering::SeqCst)).filter(|&s| s != 0);
    Ok(Ended { status, signal })
}

/// The one syscall std lacks here: sending SIGTERM (`Child::kill` only sends SIGKILL).
mod signal {
    #![allow(unsafe_code)]

    pub fn terminate(pid: u32) -> std::io::Result<()> {
        let pid = libc::pid_t::try_from(pid)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: kill(2) takes two integers and touches no memory of ours.
        if unsafe { libc::kill(pid, libc::SIGTERM) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}
