//! The dm-verity v1 superblock at offset 0 of a slot's verity partition (cryptsetup's `struct
//! verity_sb`), and the table line the kernel's verity target takes.
//!
//! ```text
//!  0 signature "verity\0\0"   8 version u32 (1)   12 hash_type u32 (1: salt first)
//! 16 uuid[16]   32 algorithm[32] ("sha256", NUL-padded)   64 data_block_size u32
//! 68 hash_block_size u32   72 data_blocks u64   80 salt_size u16   82 pad[6]   88 salt[256]
//! ```

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use crate::{Error, Result};

pub const SIGNATURE: &[u8; 8] = b"verity\0\0";
/// The superblock's defined bytes; it sits in the first hash block, zero-padded.
pub const SUPERBLOCK_SIZE: usize = 512;
pub const MAX_SALT_SIZE: usize = 256;
/// The only hash algorithm berth writes and the init accepts.
pub const ALGORITHM: &str = "sha256";

/// A verity superblock (version 1, hash type 1, sha256).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub uuid: [u8; 16],
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub data_blocks: u64,
    pub salt: Vec<u8>,
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn block_size_ok(n: u32) -> bool {
    n.is_power_of_two() && (512..=65536).contains(&n)
}

impl Superblock {
    /// The first hash block of the image: the superblock, zero-padded to `hash_block_size`.
    pub fn encode(&self) -> Result<Vec<u8>> {
        if self.salt.len() > MAX_SALT_SIZE {
            return Err(Error::Invalid(format!(
                "verity salt is {} bytes; the superblock holds at most {MAX_SALT_SIZE}",
                self.salt.len()
            )));
        }
        if !block_size_ok(self.data_block_size) || !block_size_ok(self.hash_block_size) {
            return Err(Error::Invalid(format!(
                "verity block sizes data {} / hash {} must be powers of two in 512..=65536",
                self.data_block_size, self.hash_block_size
            )));
        }
        let mut b = alloc::vec![0u8; self.hash_block_size as usize];
        b[0..8].copy_from_slice(SIGNATURE);
        b[8..12].copy_from_slice(&1u32.to_le_bytes()); // version
        b[12..16].copy_from_slice(&1u32.to_le_bytes()); // hash_type: 1 = normal (salt first)
        b[16..32].copy_from_slice(&self.uuid);
        b[32..32 + ALGORITHM.len()].copy_from_slice(ALGORITHM.as_bytes());
        b[64..68].copy_from_slice(&self.data_block_size.to_le_bytes());
        b[68..72].copy_from_slice(&self.hash_block_size.to_le_bytes());
        b[72..80].copy_from_slice(&self.data_blocks.to_le_bytes());
        b[80..82].copy_from_slice(&(self.salt.len() as u16).to_le_bytes());
        // 82..88: padding
        b[88..88 + self.salt.len()].copy_from_slice(&self.salt);
        Ok(b)
    }

    /// Parses the first bytes (at least 512) of a verity partition.
    pub fn decode(b: &[u8]) -> Result<Superblock> {
        let bad = |m: String| Err(Error::Corrupt(format!("verity superblock: {m}")));
        if b.len() < SUPERBLOCK_SIZE {
            return bad(format!("truncated ({} bytes)", b.len()));
        }
        if &b[0..8] != SIGNATURE {
            return bad("no \"verity\" signature at offset 0 of the hash partition".into());
        }
        let (version, hash_type) = (u32_at(b, 8), u32_at(b, 12));
        if version != 1 || hash_type != 1 {
            return bad(format!(
                "version {version} hash type {hash_type}; only 1/1 is supported"
            ));
        }
        let alg_end = b[32..64].iter().position(|&c| c == 0).unwrap_or(32);
        if &b[32..32 + alg_end] != ALGORITHM.as_bytes() {
            return bad(format!(
                "algorithm {:?}; only {ALGORITHM} is supported",
                String::from_utf8_lossy(&b[32..32 + alg_end])
            ));
        }
        let (dbs, hbs) = (u32_at(b, 64), u32_at(b, 68));
        if !block_size_ok(dbs) || !block_size_ok(hbs) {
            return bad(format!("block sizes data {dbs} / hash {hbs} are invalid"));
        }
        let data_blocks = u64::from(u32_at(b, 72)) | (u64::from(u32_at(b, 76)) << 32);
        let salt_size = usize::from(u16::from_le_bytes([b[80], b[81]]));
        if salt_size > MAX_SALT_SIZE {
            return bad(format!("salt size {salt_size} exceeds {MAX_SALT_SIZE}"));
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[16..32]);
        Ok(Superblock {
            uuid,
            data_block_size: dbs,
            hash_block_size: hbs,
            data_blocks,
            salt: b[88..88 + salt_size].to_vec(),
        })
    }

    /// Size of the verified data in 512-byte sectors (the dm table's length).
    pub fn data_sectors(&self) -> u64 {
        self.data_blocks * u64::from(self.data_block_size / 512)
    }

    /// The verity target's parameters (Documentation/admin-guide/device-mapper/verity.rst):
    /// the hash tree starts one hash block in, after this superblock. A corrupted block makes
    /// the kernel restart the machine, so boot counting can fall back to the other slot.
    pub fn table_params(&self, data_dev: &str, hash_dev: &str, roothash: &str) -> String {
        let mut salt = String::new();
        if self.salt.is_empty() {
            salt.push('-');
        }
        for b in &self.salt {
            let _ = write!(salt, "{b:02x}");
        }
        format!(
            "1 {data_dev} {hash_dev} {} {} {} 1 {ALGORITHM} {roothash} {salt} 1 restart_on_corruption",
            self.data_block_size, self.hash_block_size, self.data_blocks
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn sb(data_blocks: u64, salt: &[u8]) -> Superblock {
        Superblock {
            uuid: [7; 16],
            data_block_size: 4096,
            hash_block_size: 4096,
            data_blocks,
            salt: salt.to_vec(),
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        for s in [
            sb(0x1_0000_0003, &[0xab, 0x01]),
            sb(1, &[]),
            sb(77, &[9; 256]),
        ] {
            let b = s.encode().unwrap();
            assert_eq!(b.len(), 4096);
            assert_eq!(Superblock::decode(&b).unwrap(), s);
        }
        assert_eq!(sb(3, &[]).data_sectors(), 24);
    }

    #[test]
    fn table_line() {
        assert_eq!(
            sb(256, &[0xab, 0x01]).table_params("/dev/vda2", "/dev/vda3", "00ff"),
            "1 /dev/vda2 /dev/vda3 4096 4096 256 1 sha256 00ff ab01 1 restart_on_corruption"
        );
        assert_eq!(
            sb(1, &[]).table_params("a", "b", "h").split(' ').nth(9),
            Some("-")
        );
    }

    #[test]
    fn rejects_what_it_does_not_write() {
        let good = sb(1, &[1]).encode().unwrap();
        let mut b = good.clone();
        b[32..38].copy_from_slice(b"sha512");
        assert!(Superblock::decode(&b)
            .unwrap_err()
            .to_string()
            .contains("sha512"));
        assert!(Superblock::decode(&[0u8; 512])
            .unwrap_err()
            .to_string()
            .contains("signature"));
        let mut b = good.clone();
        b[8] = 2;
        assert!(Superblock::decode(&b)
            .unwrap_err()
            .to_string()
            .contains("version 2"));
        let mut b = good.clone();
        b[64..68].copy_from_slice(&3000u32.to_le_bytes());
        assert!(Superblock::decode(&b).is_err());
        let mut b = good;
        b[80..82].copy_from_slice(&300u16.to_le_bytes());
        assert!(Superblock::decode(&b)
            .unwrap_err()
            .to_string()
            .contains("300"));
        assert!(Superblock::decode(&[0u8; 100]).is_err());
        assert!(sb(1, &[0; 257]).encode().is_err());
    }
}
