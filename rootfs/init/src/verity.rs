//! The dm-verity v1 superblock at offset 0 of the hash partition (cryptsetup's `struct
//! verity_sb`, little-endian, as builder/src/verity.rs writes it) and the table line the
//! kernel's verity target takes.

use crate::{fail, Result};

/// What the init needs from the superblock to build the verity table.
#[derive(Debug, PartialEq, Eq)]
pub struct Superblock {
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub data_blocks: u64,
    pub salt: Vec<u8>,
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// Parses `b` (at least the first 512 bytes of the hash partition).
///
/// ```text
///  0 signature "verity\0\0"   8 version u32 (1)   12 hash_type u32 (1: salt first)
/// 16 uuid[16]   32 algorithm[32] ("sha256", NUL-padded)   64 data_block_size u32
/// 68 hash_block_size u32   72 data_blocks u64   80 salt_size u16   82 pad[6]   88 salt[256]
/// ```
pub fn parse(b: &[u8]) -> Result<Superblock> {
    let what = "reading the verity superblock";
    if b.len() < 512 || &b[0..8] != b"verity\0\0" {
        fail!("{what}: no \"verity\" signature at offset 0 of the hash partition");
    }
    let (version, hash_type) = (u32_at(b, 8), u32_at(b, 12));
    if version != 1 || hash_type != 1 {
        fail!("{what}: version {version} hash type {hash_type}; only 1/1 is supported");
    }
    let alg_end = b[32..64].iter().position(|&c| c == 0).unwrap_or(32);
    if &b[32..32 + alg_end] != b"sha256" {
        fail!(
            "{what}: algorithm {:?}; only sha256 is supported",
            String::from_utf8_lossy(&b[32..32 + alg_end])
        );
    }
    let (dbs, hbs) = (u32_at(b, 64), u32_at(b, 68));
    if !dbs.is_power_of_two()
        || !hbs.is_power_of_two()
        || !(512..=65536).contains(&dbs)
        || !(512..=65536).contains(&hbs)
    {
        fail!("{what}: block sizes data {dbs} / hash {hbs} are invalid");
    }
    let data_blocks = u64::from(u32_at(b, 72)) | (u64::from(u32_at(b, 76)) << 32);
    let salt_size = usize::from(u16::from_le_bytes([b[80], b[81]]));
    if salt_size > 256 {
        fail!("{what}: salt size {salt_size} exceeds 256");
    }
    Ok(Superblock {
        data_block_size: dbs,
        hash_block_size: hbs,
        data_blocks,
        salt: b[88..88 + salt_size].to_vec(),
    })
}

impl Superblock {
    /// Size of the verified data in 512-byte sectors (the dm table's length).
    pub fn data_sectors(&self) -> u64 {
        self.data_blocks * u64::from(self.data_block_size / 512)
    }

    /// The verity target's parameters (Documentation/admin-guide/device-mapper/verity.rst):
    /// the hash tree starts one hash block in, after this superblock. A corrupted block makes
    /// the kernel restart the machine, so boot counting can fall back to the other slot.
    pub fn table_params(&self, data_dev: &str, hash_dev: &str, roothash: &str) -> String {
        let salt: String = if self.salt.is_empty() {
            "-".into()
        } else {
            self.salt.iter().map(|b| format!("{b:02x}")).collect()
        };
        format!(
            "1 {data_dev} {hash_dev} {} {} {} 1 sha256 {roothash} {salt} 1 restart_on_corruption",
            self.data_block_size, self.hash_block_size, self.data_blocks
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn sb(data_blocks: u64, salt: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[0..8].copy_from_slice(b"verity\0\0");
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        b[12..16].copy_from_slice(&1u32.to_le_bytes());
        b[32..38].copy_from_slice(b"sha256");
        b[64..68].copy_from_slice(&4096u32.to_le_bytes());
        b[68..72].copy_from_slice(&4096u32.to_le_bytes());
        b[72..80].copy_from_slice(&data_blocks.to_le_bytes());
        b[80..82].copy_from_slice(&(salt.len() as u16).to_le_bytes());
        b[88..88 + salt.len()].copy_from_slice(salt);
        b
    }

    #[test]
    fn parses_and_builds_the_table() {
        let s = parse(&sb(0x1_0000_0003, &[0xab, 0x01])).unwrap();
        assert_eq!(s.data_blocks, 0x1_0000_0003);
        assert_eq!(s.data_sectors(), 0x1_0000_0003 * 8);
        let s = parse(&sb(256, &[0xab, 0x01])).unwrap();
        assert_eq!(
            s.table_params("/dev/vda2", "/dev/vda3", "00ff"),
            "1 /dev/vda2 /dev/vda3 4096 4096 256 1 sha256 00ff ab01 1 restart_on_corruption"
        );
        let mut bad = sb(1, &[]);
        bad[32..38].copy_from_slice(b"sha512");
        assert!(parse(&bad).unwrap_err().0.contains("sha512"));
        assert!(parse(&[0u8; 512]).is_err());
        assert_eq!(
            parse(&sb(1, &[]))
                .unwrap()
                .table_params("a", "b", "h")
                .split(' ')
                .nth(9),
            Some("-")
        );
    }

    /// veritysetup is the oracle, when installed: its superblock parses to what it was told.
    #[test]
    fn reads_what_veritysetup_writes() {
        let dir = std::env::temp_dir().join(format!("berth-init-verity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (data, hash) = (dir.join("data"), dir.join("hash"));
        std::fs::write(&data, vec![7u8; 5 * 4096]).unwrap();
        let out = Command::new("veritysetup")
            .args(["format", "--salt=00112233aabb"])
            .arg(&data)
            .arg(&hash)
            .output();
        match out {
            Ok(o) if o.status.success() => {
                let s = parse(&std::fs::read(&hash).unwrap()).unwrap();
                assert_eq!(
                    (s.data_blocks, s.data_block_size, s.hash_block_size),
                    (5, 4096, 4096)
                );
                assert_eq!(s.salt, [0x00, 0x11, 0x22, 0x33, 0xaa, 0xbb]);
            }
            _ => eprintln!("veritysetup unavailable; skipped"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
