//! First-boot provisioning (Ignition's semantics): the machine config is read once, from the
//! first source that has one, checked whole (the contract's parser, as `berth config check`
//! does on the host), applied, and kept at /var/lib/berth/config.json; later boots use the
//! kept copy. A config that cannot be read or applied stops the boot with a
//! `berth: FATAL: provisioning: <source>: <line:col: key: why>` line: the machine comes up as
//! configured or not at all.
//!
//! Sources, in order: QEMU fw_cfg `opt/org.berth/config`. (The `cidata` config drive and EC2
//! IMDSv2 come next; with no source at all the image's defaults apply.)

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use berth_contract::config::{
    MachineConfig, APPLIED, AUTHORIZED_KEYS, FW_CFG_NAME, MAX_CONFIG_BYTES,
};

use crate::{fail, say, sys, Ctx, Result};

const FW_CFG_SYSFS: &str = "/sys/firmware/qemu_fw_cfg";
/// The fw_cfg sysfs driver; the Debian cloud kernel has it as a module.
const FW_CFG_MODULE: &str = "kernel/drivers/firmware/qemu_fw_cfg.ko";

/// The config this machine runs with: the one applied on an earlier boot, or one read and
/// applied now, or none (the image's defaults). An error is fatal for the boot.
pub fn run() -> Result<Option<MachineConfig>> {
    match fs::read_to_string(APPLIED) {
        Ok(text) => {
            let c = MachineConfig::parse(&text).map_err(|e| {
                crate::Error(format!("{APPLIED} (applied on an earlier boot): {e}"))
            })?;
            return Ok(Some(c));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => fail!("reading {APPLIED}: {e}"),
    }
    let Some((source, text)) = fw_cfg()? else {
        return Ok(None);
    };
    let c = MachineConfig::parse(&text).map_err(|e| crate::Error(format!("{source}: {e}")))?;
    apply(&c).map_err(|e| crate::Error(format!("{source}: applying: {e}")))?;
    write_atomic(APPLIED, text.as_bytes(), 0o600, 0, 0)?;
    sys::sync();
    say!(
        "provisioned from {source}: hostname={} files={} ssh-keys={} network={}",
        c.hostname.as_deref().unwrap_or("(image)"),
        c.files.len(),
        c.ssh_authorized_keys.len(),
        c.network.len()
    );
    Ok(Some(c))
}

/// The config in QEMU's fw_cfg, if the machine has the device and the entry.
fn fw_cfg() -> Result<Option<(String, String)>> {
    if !Path::new(FW_CFG_SYSFS).exists() {
        let kver = crate::read_trim("/proc/sys/kernel/osrelease")?;
        let path = format!("/usr/lib/modules/{kver}/{FW_CFG_MODULE}");
        if let Ok(f) = fs::File::open(&path) {
            use std::os::fd::AsRawFd;
            // ENODEV (no fw_cfg device: not QEMU) and EEXIST are both fine here.
            let _ = sys::finit_module(f.as_raw_fd());
        }
    }
    let dir = format!("{FW_CFG_SYSFS}/by_name/{FW_CFG_NAME}");
    let source = format!("fw_cfg {FW_CFG_NAME}");
    let size = match fs::read_to_string(format!("{dir}/size")) {
        Ok(s) => s.trim().parse::<usize>().unwrap_or(usize::MAX),
        Err(_) => return Ok(None),
    };
    if size > MAX_CONFIG_BYTES {
        fail!("{source}: the config is {size} bytes; at most {MAX_CONFIG_BYTES} are accepted");
    }
    let mut bytes = Vec::with_capacity(size);
    fs::File::open(format!("{dir}/raw"))
        .and_then(|f| f.take(MAX_CONFIG_BYTES as u64 + 1).read_to_end(&mut bytes))
        .ctx(|| format!("{source}: reading {dir}/raw"))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        crate::Error(format!(
            "{source}: not UTF-8 text at byte {} (a machine config is a JSON document)",
            e.utf8_error().valid_up_to()
        ))
    })?;
    Ok(Some((source, text)))
}

/// Writes the config's files, hostname and SSH keys. Everything was checked by the parser
/// (paths under /etc and /var, modes, owners), so what fails here is the disk.
fn apply(c: &MachineConfig) -> Result<()> {
    for f in &c.files {
        write_atomic(&f.path, f.content.as_bytes(), f.mode, f.uid, f.gid)
            .map_err(|e| crate::Error(format!("file {}: {e}", f.path)))?;
    }
    if let Some(h) = &c.hostname {
        write_atomic("/etc/hostname", format!("{h}\n").as_bytes(), 0o644, 0, 0)?;
    }
    if !c.ssh_authorized_keys.is_empty() {
        let text: String = c
            .ssh_authorized_keys
            .iter()
            .map(|k| format!("{k}\n"))
            .collect();
        write_atomic(AUTHORIZED_KEYS, text.as_bytes(), 0o600, 0, 0)?;
    }
    Ok(())
}

/// Writes `path` whole or not at all: a temporary file beside it, fsynced, renamed over it.
/// Missing parent directories are made (0755, root).
fn write_atomic(path: &str, data: &[u8], mode: u32, uid: u32, gid: u32) -> Result<()> {
    let p = Path::new(path);
    if let Some(dir) = p.parent() {
        fs::create_dir_all(dir).ctx(|| format!("mkdir -p {}", dir.display()))?;
    }
    let tmp = format!("{path}.berth-tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .ctx(|| format!("creating {tmp}"))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .ctx(|| format!("writing {tmp}"))?;
    std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
        .ctx(|| format!("chown {uid}:{gid} {tmp}"))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
        .ctx(|| format!("chmod {mode:o} {tmp}"))?;
    fs::rename(&tmp, path).ctx(|| format!("renaming {tmp} to {path}"))
}
