//! Machine configs on the host: reading one the way a machine would (the contract's parser),
//! for `berth config check` and before `berth run --config` hands one to QEMU.

use std::path::Path;

use anyhow::{bail, Context, Result};
use berth_contract::config::{
    ipv4_text as ip, Addressing, Interface, MachineConfig, MAX_CONFIG_BYTES,
};

/// Reads and checks `path`; errors are `PATH:LINE:COL: key ...: why`.
pub fn read(path: &Path) -> Result<MachineConfig> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("reading machine config {}", path.display()))?;
    if meta.len() > MAX_CONFIG_BYTES as u64 {
        bail!(
            "{}: the config is {} bytes; at most {MAX_CONFIG_BYTES} are accepted",
            path.display(),
            meta.len()
        );
    }
    let bytes = std::fs::read(path)
        .with_context(|| format!("reading machine config {}", path.display()))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}: not UTF-8 text at byte {} (a machine config is a JSON document)",
            path.display(),
            e.valid_up_to()
        )
    })?;
    MachineConfig::parse(text).map_err(|e| anyhow::anyhow!("{}:{e}", path.display()))
}

/// One line per setting, for people.
pub fn summary(c: &MachineConfig) -> String {
    let mut out = Vec::new();
    out.push(format!(
        "hostname: {}",
        c.hostname.as_deref().unwrap_or("(the image's)")
    ));
    if c.network.is_empty() {
        out.push("network: DHCP on the first NIC".to_string());
    }
    for n in &c.network {
        let nic = match &n.interface {
            Interface::First => "the first NIC".to_string(),
            Interface::Named(s) => s.clone(),
        };
        let how = match &n.addressing {
            Addressing::Dhcp => "DHCP".to_string(),
            Addressing::Static {
                address,
                prefix,
                gateway,
                dns,
            } => {
                format!(
                    "{}/{prefix} gateway {} dns [{}]",
                    ip(address),
                    gateway.as_ref().map_or("none".to_string(), ip),
                    dns.iter().map(ip).collect::<Vec<_>>().join(", ")
                )
            }
        };
        out.push(format!("network {nic}: {how}"));
    }
    out.push(format!("ssh keys: {}", c.ssh_authorized_keys.len()));
    for f in &c.files {
        out.push(format!(
            "file {} ({:04o} {}:{}, {} bytes)",
            f.path,
            f.mode,
            f.uid,
            f.gid,
            f.content.len()
        ));
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_the_file_name_and_binary_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.json");
        std::fs::write(&p, "{\"version\": 1, \"nope\": 1}").unwrap();
        let e = format!("{:#}", read(&p).unwrap_err());
        assert!(
            e.starts_with(&format!("{}:1:24: key `nope`", p.display())),
            "{e}"
        );
        std::fs::write(&p, [0xff, 0xfe, 0, 1]).unwrap();
        assert!(format!("{:#}", read(&p).unwrap_err()).contains("not UTF-8"));
        std::fs::write(&p, "{\"version\": 1, \"hostname\": \"n1\"}").unwrap();
        let c = read(&p).unwrap();
        assert!(summary(&c).contains("hostname: n1"));
        assert!(format!("{:#}", read(&d.path().join("missing")).unwrap_err()).contains("missing"));
    }
}
