//! First-boot provisioning (Ignition's semantics): the machine config is read once, from the
//! first source that has one, checked whole (the contract's parser, as `berth config check`
//! does on the host), applied, and kept at /var/lib/berth/config.json; later boots use the
//! kept copy. A config that cannot be read or applied stops the boot with a
//! `berth: FATAL: provisioning: <source>: <line:col: key: why>` line: the machine comes up as
//! configured or not at all.
//!
//! Sources, in order: QEMU fw_cfg `opt/org.berth/config`; a config drive (a vfat or iso9660
//! volume labelled `cidata`, cloud-init's NoCloud convention) holding the config as
//! `user-data`. The first source that has a config wins; others that also have one are named
//! in a warning. On EC2, with none of these, once the network is up: IMDSv2 user-data, with the
//! hostname and SSH keys from the instance metadata where the config does not set them
//! ([`from_imds`]). With no source at all the image's defaults apply.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use berth_contract::config::{
    MachineConfig, APPLIED, AUTHORIZED_KEYS, FW_CFG_NAME, MAX_CONFIG_BYTES,
};
use berth_contract::paths::{DRIVE_MODULES, FW_CFG_MODULE};

use crate::{fail, say, sys, Ctx, Result};

const FW_CFG_SYSFS: &str = "/sys/firmware/qemu_fw_cfg";

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
    let mut found = Vec::new();
    if let Some(c) = fw_cfg()? {
        found.push(c);
    }
    if let Some(c) = config_drive()? {
        found.push(c);
    }
    let mut found = found.into_iter();
    let Some((source, text)) = found.next() else {
        return Ok(None);
    };
    for (other, _) in found {
        crate::warn!("{other} also holds a machine config; {source} comes first and wins");
    }
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

/// EC2: the config from IMDSv2 user-data (404: none), completed with the metadata's hostname
/// (up to the first dot, as Afterburn does) and SSH keys where it sets none; applied and kept
/// like any other. Called after the network is up, when no local source had a config.
pub fn from_imds() -> Result<Option<MachineConfig>> {
    let source = "EC2 IMDSv2";
    let ctx = |e: crate::Error| crate::Error(format!("{source}: {}", e.0));
    let s = crate::imds::Session::open().map_err(ctx)?;
    let mut c = match s.get("/latest/user-data").map_err(ctx)? {
        Some(text) if !text.trim().is_empty() => MachineConfig::parse(&text)
            .map_err(|e| crate::Error(format!("{source}: user-data: {e}")))?,
        _ => MachineConfig::default(),
    };
    if c.hostname.is_none() {
        if let Some(h) = s.get("/latest/meta-data/hostname").map_err(ctx)? {
            let h = h.trim().split('.').next().unwrap_or("").to_string();
            if berth_contract::config::valid_hostname(&h) {
                c.hostname = Some(h);
            }
        }
    }
    if c.ssh_authorized_keys.is_empty() {
        // `0=my-key` lines; each key's text is at public-keys/<n>/openssh-key.
        let list = s
            .get("/latest/meta-data/public-keys/")
            .map_err(ctx)?
            .unwrap_or_default();
        for line in list.lines() {
            let Some(n) = line
                .split('=')
                .next()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()) && !n.is_empty())
            else {
                continue;
            };
            if let Some(k) = s
                .get(&format!("/latest/meta-data/public-keys/{n}/openssh-key"))
                .map_err(ctx)?
            {
                c.ssh_authorized_keys.push(k.trim().to_string());
            }
        }
    }
    // What is kept is what the machine runs with: checked again, as any config is.
    let text = c.to_json();
    let c = MachineConfig::parse(&text).map_err(|e| crate::Error(format!("{source}: {e}")))?;
    apply(&c).map_err(|e| crate::Error(format!("{source}: applying: {e}")))?;
    if let Some(h) = &c.hostname {
        sys::sethostname(h).ctx(|| format!("sethostname {h:?}"))?;
        say!(
            "hostname {}",
            crate::read_trim("/proc/sys/kernel/hostname")?
        );
    }
    write_atomic(APPLIED, text.as_bytes(), 0o600, 0, 0)?;
    sys::sync();
    say!(
        "provisioned from {source}: hostname={} files={} ssh-keys={} network={}{}",
        c.hostname.as_deref().unwrap_or("(image)"),
        c.files.len(),
        c.ssh_authorized_keys.len(),
        c.network.len(),
        if c.network.is_empty() {
            ""
        } else {
            " (network settings apply from the next boot)"
        }
    );
    Ok(Some(c))
}

/// The label a config drive carries (NoCloud's), compared without case.
const CIDATA: &str = "cidata";
const DRIVE_MNT: &str = "/run/berth/cidata";

/// The filesystem type and label of a volume from its first 40 KiB, if it is vfat or iso9660.
pub fn volume_label(head: &[u8]) -> Option<(&'static str, String)> {
    let text = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .trim_end_matches([' ', '\0'])
            .to_string()
    };
    // iso9660: the primary volume descriptor is sector 16 (2048-byte sectors).
    if head.len() >= 32768 + 72 && head[32768] == 1 && &head[32769..32774] == b"CD001" {
        return Some(("iso9660", text(&head[32768 + 40..32768 + 72])));
    }
    if head.len() >= 512 && head[510..512] == [0x55, 0xAA] {
        // FAT32 keeps the extended boot record at 0x40, FAT12/16 at 0x24; both say "FAT".
        if &head[0x52..0x55] == b"FAT" && head[0x42] == 0x29 {
            return Some(("vfat", text(&head[0x47..0x52])));
        }
        if &head[0x36..0x39] == b"FAT" && head[0x26] == 0x29 {
            return Some(("vfat", text(&head[0x2B..0x36])));
        }
    }
    None
}

/// The config on a volume labelled `cidata`, if the machine has one.
fn config_drive() -> Result<Option<(String, String)>> {
    let mut names: Vec<String> = fs::read_dir("/sys/class/block")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.retain(|n| {
        !["loop", "ram", "dm-", "zram"]
            .iter()
            .any(|p| n.starts_with(p))
    });
    names.sort();
    for name in names {
        let dev = format!("/dev/{name}");
        let mut head = vec![0u8; 40 * 1024];
        let n = match fs::File::open(&dev).and_then(|mut f| {
            let mut n = 0;
            while n < head.len() {
                match f.read(&mut head[n..])? {
                    0 => break,
                    k => n += k,
                }
            }
            Ok(n)
        }) {
            Ok(n) => n,
            Err(_) => continue,
        };
        let Some((fstype, label)) = volume_label(&head[..n]) else {
            continue;
        };
        if !label.eq_ignore_ascii_case(CIDATA) {
            continue;
        }
        let source = format!("config drive {dev} ({fstype}, label {label})");
        return read_drive(&dev, fstype, &source).map(|t| Some((source.clone(), t)));
    }
    Ok(None)
}

fn read_drive(dev: &str, fstype: &str, source: &str) -> Result<String> {
    let kver = crate::read_trim("/proc/sys/kernel/osrelease")?;
    for m in DRIVE_MODULES {
        if let Ok(f) = fs::File::open(format!("/usr/lib/modules/{kver}/{m}")) {
            use std::os::fd::AsRawFd;
            let _ = sys::finit_module(f.as_raw_fd()); // EEXIST: loaded already
        }
    }
    fs::create_dir_all(DRIVE_MNT).ctx(|| format!("mkdir -p {DRIVE_MNT}"))?;
    let flags = sys::MS_RDONLY | sys::MS_NOSUID | sys::MS_NODEV | sys::MS_NOEXEC;
    crate::initrd::mount(dev, DRIVE_MNT, fstype, flags, "")
        .map_err(|e| crate::Error(format!("{source}: {e}")))?;
    let path = format!("{DRIVE_MNT}/user-data");
    let read = fs::metadata(&path)
        .map_err(|e| crate::Error(format!("{source}: no user-data ({e}): the config drive must hold the machine config as user-data")))
        .and_then(|m| {
            if m.len() > MAX_CONFIG_BYTES as u64 {
                fail!("{source}: user-data is {} bytes; at most {MAX_CONFIG_BYTES} are accepted", m.len());
            }
            let bytes = fs::read(&path).ctx(|| format!("{source}: reading user-data"))?;
            String::from_utf8(bytes).map_err(|e| {
                crate::Error(format!(
                    "{source}: user-data is not UTF-8 text at byte {} (a machine config is a JSON document)",
                    e.utf8_error().valid_up_to()
                ))
            })
        });
    let _ = sys::umount(DRIVE_MNT, 0);
    read
}

/// The image's services (`/etc/berth/services.json`) with the config's merged in: a config
/// service replaces the image's of the same name, the others come after. Checked as a whole
/// (every depends-on names a service, no cycles).
pub fn services(c: Option<&MachineConfig>) -> Result<Vec<berth_contract::service::Service>> {
    use berth_contract::service;
    let image = match fs::read_to_string(service::SERVICES_FILE) {
        Ok(text) => service::parse_file(&text)
            .map_err(|e| crate::Error(format!("{}: {e}", service::SERVICES_FILE)))?,
        Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
        Err(e) => fail!("reading {}: {e}", service::SERVICES_FILE),
    };
    let extra = c.map(|c| &c.services[..]).unwrap_or_default();
    service::merge(&image, extra).map_err(|e| crate::Error(format!("services: {e}")))
}

/// Writes the config's files, hostname and SSH keys. Everything was checked by the parser
/// (paths under /etc and /var, modes, owners), so what fails here is the disk. Its services
/// must fit the image's (checked before anything is written).
fn apply(c: &MachineConfig) -> Result<()> {
    services(Some(c))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_of_iso9660_and_both_fat_layouts() {
        let mut iso = vec![0u8; 40 * 1024];
        iso[32768] = 1;
        iso[32769..32774].copy_from_slice(b"CD001");
        iso[32768 + 40..32768 + 72].copy_from_slice(b"cidata                          ");
        assert_eq!(volume_label(&iso), Some(("iso9660", "cidata".to_string())));

        let mut fat32 = vec![0u8; 512];
        fat32[510..512].copy_from_slice(&[0x55, 0xAA]);
        fat32[0x42] = 0x29;
        fat32[0x47..0x52].copy_from_slice(b"CIDATA     ");
        fat32[0x52..0x5A].copy_from_slice(b"FAT32   ");
        assert_eq!(volume_label(&fat32), Some(("vfat", "CIDATA".to_string())));

        let mut fat16 = vec![0u8; 512];
        fat16[510..512].copy_from_slice(&[0x55, 0xAA]);
        fat16[0x26] = 0x29;
        fat16[0x2B..0x36].copy_from_slice(b"CIDATA     ");
        fat16[0x36..0x3E].copy_from_slice(b"FAT12   ");
        assert_eq!(volume_label(&fat16), Some(("vfat", "CIDATA".to_string())));

        assert_eq!(volume_label(&[0u8; 4096]), None);
        assert_eq!(volume_label(&fat16[..100]), None);
    }
}
