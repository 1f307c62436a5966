//! `berth run`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use berth::run::{self, qemu};
use berth::util::printer::Printer;

/// Boot an image in QEMU with the serial console on this terminal (Ctrl-A X quits).
///
/// UEFI (OVMF + systemd-boot) by default; --direct boots slot A's kernel and initrd without
/// firmware. The disk is a throw-away snapshot unless --persist. Networking is QEMU user
/// mode with restrict=on: the guest reaches nothing but the ports given with --forward.
/// Exits with QEMU's status when the guest powers off.
#[derive(Args)]
pub struct RunArgs {
    /// An image directory (out/<name>), a disk image (disk.raw, disk.qcow2) or a profile
    /// (.toml: its default output directory).
    #[arg(default_value = super::DEFAULT_PROFILE)]
    image: PathBuf,
    /// Boot the kernel and initrd directly (faster; skips firmware and boot loader).
    #[arg(long)]
    direct: bool,
    /// With --direct: extra kernel command line (e.g. "berth.after-ready=poweroff").
    #[arg(long, requires = "direct", value_name = "ARGS")]
    append: Option<String>,
    /// Write to the disk image instead of a snapshot.
    #[arg(long)]
    persist: bool,
    /// Forward 127.0.0.1:HOST to the guest's port GUEST (TCP); repeatable.
    #[arg(long, value_name = "HOST:GUEST", value_parser = parse_forward)]
    forward: Vec<(u16, u16)>,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = qemu::DEFAULT_MEMORY_MIB)]
    memory: u32,
    /// Guest CPUs.
    #[arg(long, default_value_t = qemu::DEFAULT_CPUS)]
    cpus: u32,
    /// Also write the console to this file.
    #[arg(long, value_name = "FILE")]
    console_log: Option<PathBuf>,
    /// Exit when the guest reboots instead of booting again.
    #[arg(long)]
    no_reboot: bool,
    /// Give the guest this machine config (JSON; checked first, as `berth config check`
    /// does) through QEMU fw_cfg as opt/org.berth/config; the image applies it on first boot.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Attach a raw image read-only as another virtio disk (e.g. a `cidata` config drive);
    /// repeatable.
    #[arg(long = "drive", value_name = "IMAGE")]
    drives: Vec<PathBuf>,
}

fn parse_forward(s: &str) -> Result<(u16, u16), String> {
    let (h, g) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected HOST:GUEST ports, like 8080:80"))?;
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{s:?}: {p:?} is not a port number (1-65535)"))
    };
    Ok((port(h)?, port(g)?))
}

/// Returns the signal that stopped QEMU, if one did (the caller exits with 128 + it).
pub fn run(a: RunArgs, printer: &Printer) -> Result<Option<i32>> {
    if let Some(c) = &a.config {
        berth::config::read(c)?;
    }
    let target = run::resolve(&a.image)?;
    let mut cfg = qemu::VmConfig::new(&target.disk)?;
    if a.direct {
        cfg.boot = target.direct_boot(a.append.as_deref())?;
    }
    cfg.persist = a.persist;
    cfg.forwards = a.forward;
    cfg.memory_mib = a.memory;
    cfg.cpus = a.cpus;
    cfg.console_log = a.console_log;
    cfg.no_reboot = a.no_reboot;
    cfg.machine_config = a.config;
    for d in &a.drives {
        if !d.is_file() {
            anyhow::bail!("--drive {}: no such file", d.display());
        }
    }
    cfg.extra_drives = a.drives;
    let work = tempfile::tempdir().context("creating a temporary directory")?;
    let mut cmd = qemu::command(&cfg, work.path())?;
    printer.info(&format!(
        "booting {} ({}, {:?}{}); Ctrl-A X quits",
        target.disk.display(),
        if a.direct {
            "direct kernel boot"
        } else {
            "UEFI"
        },
        cfg.accel,
        if a.persist {
            ", persistent"
        } else {
            ", snapshot"
        }
    ));
    let ended = qemu::run_foreground(&mut cmd)?;
    drop(work);
    if let Some(sig) = ended.signal {
        return Ok(Some(sig));
    }
    if !ended.status.success() {
        anyhow::bail!("QEMU exited with {}", ended.status);
    }
    Ok(None)
}
