//! 256-byte inodes: the 128-byte `ext4_inode` core, 32 bytes of extra fields (nanosecond
//! timestamps, creation time, checksum high half) and 96 bytes for in-inode attributes.

use anyhow::{bail, Result};

use super::csum;
use super::layout::INODE_SIZE;
use super::xattr;

/// `i_flags`: the inode's blocks are mapped by an extent tree.
pub const EXTENTS_FL: u32 = 0x0008_0000;
/// `i_extra_isize`: the extra fields this writer fills (through `i_projid`).
const EXTRA_ISIZE: u16 = 32;

/// Everything that goes into one inode.
#[derive(Debug, Clone)]
pub struct Inode {
    /// `st_mode`: type and permission bits.
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// atime, ctime, mtime and crtime (seconds; nanoseconds are 0).
    pub time: i64,
    pub links: u16,
    /// Blocks in 512-byte units, tree and attribute blocks included.
    pub sectors: u64,
    pub flags: u32,
    pub block: [u8; 60],
    pub file_acl: u64,
    /// In-inode attribute area ([`xattr::IBODY_SIZE`] bytes) or none.
    pub ibody: Option<Vec<u8>>,
}

impl Default for Inode {
    fn default() -> Self {
        Inode {
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            time: 0,
            links: 0,
            sectors: 0,
            flags: 0,
            block: [0; 60],
            file_acl: 0,
            ibody: None,
        }
    }
}

/// Splits seconds into the 32-bit field and the 2 epoch bits of the `_extra` field, as
/// `ext4_encode_extra_time` does (nanoseconds 0). Representable: 1901-12-13 to 2446-05-10.
pub fn encode_time(secs: i64) -> Result<(u32, u32)> {
    const MIN: i64 = i32::MIN as i64;
    const MAX: i64 = (3i64 << 32) + i32::MAX as i64;
    if !(MIN..=MAX).contains(&secs) {
        bail!("timestamp {secs} is outside what ext4 can store ({MIN}..={MAX})");
    }
    let low = secs as i32;
    let epoch = ((secs - i64::from(low)) >> 32) as u32 & 3;
    Ok((low as u32, epoch))
}

/// Device number in `i_block`, as the kernel writes it: the old 16-bit encoding in word 0 when
/// major and minor fit in 8 bits, else the new 32-bit encoding in word 1.
pub fn encode_dev(major: u32, minor: u32) -> Result<[u8; 60]> {
    if major >= 1 << 12 || minor >= 1 << 20 {
        bail!("device number {major}:{minor} does not fit Linux's 12-bit major / 20-bit minor");
    }
    let mut b = [0u8; 60];
    if major < 256 && minor < 256 {
        b[0..4].copy_from_slice(&((major << 8) | minor).to_le_bytes());
    } else {
        let new = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
        b[4..8].copy_from_slice(&new.to_le_bytes());
    }
    Ok(b)
}

fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

impl Inode {
    /// The on-disk bytes of inode number `ino`, checksummed with `fs_seed`.
    pub fn encode(&self, ino: u32, fs_seed: u32) -> Result<[u8; INODE_SIZE as usize]> {
        let mut b = [0u8; INODE_SIZE as usize];
        let (t, t_extra) = encode_time(self.time)?;
        if self.sectors >= 1 << 48 {
            bail!(
                "inode {ino}: {} sectors exceed the 48-bit i_blocks",
                self.sectors
            );
        }
        put16(&mut b, 0x00, self.mode);
        put16(&mut b, 0x02, self.uid as u16);
        put32(&mut b, 0x04, self.size as u32);
        for off in [0x08, 0x0C, 0x10] {
            put32(&mut b, off, t); // atime, ctime, mtime
        }
        put16(&mut b, 0x18, self.gid as u16);
        put16(&mut b, 0x1A, self.links);
        put32(&mut b, 0x1C, self.sectors as u32);
        put32(&mut b, 0x20, self.flags);
        b[0x28..0x64].copy_from_slice(&self.block);
        put32(&mut b, 0x68, self.file_acl as u32);
        put32(&mut b, 0x6C, (self.size >> 32) as u32);
        put16(&mut b, 0x74, (self.sectors >> 32) as u16);
        put16(&mut b, 0x76, (self.file_acl >> 32) as u16);
        put16(&mut b, 0x78, (self.uid >> 16) as u16);
        put16(&mut b, 0x7A, (self.gid >> 16) as u16);
        put16(&mut b, 0x80, EXTRA_ISIZE);
        for off in [0x84, 0x88, 0x8C, 0x94] {
            put32(&mut b, off, t_extra); // ctime, mtime, atime, crtime extra
        }
        put32(&mut b, 0x90, t); // crtime
        if let Some(area) = &self.ibody {
            if area.len() != xattr::IBODY_SIZE {
                bail!(
                    "inode {ino}: in-inode attribute area is {} bytes",
                    area.len()
                );
            }
            b[xattr::IBODY_OFFSET..].copy_from_slice(area);
        }
        // Generation is always 0.
        let c = csum::raw(csum::inode_seed(fs_seed, ino, 0), &b);
        put16(&mut b, 0x7C, c as u16);
        put16(&mut b, 0x82, (c >> 16) as u16);
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// mke2fs's root inode (inode 2) and the superblock it came with.
    const MKE2FS_INODE2: &[u8; 256] = include_bytes!("testdata/mke2fs-inode2.bin");
    const MKE2FS_SB: &[u8; 1024] = include_bytes!("testdata/mke2fs-sb.bin");

    #[test]
    fn root_inode_matches_mke2fs_byte_for_byte() {
        let r = MKE2FS_INODE2;
        let time = i64::from(u32::from_le_bytes(r[0x10..0x14].try_into().unwrap()));
        let ino = Inode {
            mode: 0o40755,
            links: 3,
            size: 4096,
            time,
            sectors: 8,
            flags: EXTENTS_FL,
            block: r[0x28..0x64].try_into().unwrap(),
            ..Default::default()
        };
        let uuid: [u8; 16] = MKE2FS_SB[0x68..0x78].try_into().unwrap();
        let got = ino.encode(2, csum::fs_seed(&uuid)).unwrap();
        assert_eq!(&got[..], &r[..]);
    }

    #[test]
    fn times_use_epoch_bits_past_2038() {
        assert_eq!(encode_time(0).unwrap(), (0, 0));
        assert_eq!(encode_time(-1).unwrap(), (u32::MAX, 0));
        assert_eq!(encode_time(1 << 31).unwrap(), (1 << 31, 1));
        assert!(encode_time(i64::MAX).is_err());
    }

    #[test]
    fn device_numbers_use_old_and_new_encodings() {
        let b = encode_dev(1, 3).unwrap();
        assert_eq!(&b[..8], &[3, 1, 0, 0, 0, 0, 0, 0]);
        let b = encode_dev(259, 0x12345).unwrap();
        let new = u32::from_le_bytes(b[4..8].try_into().unwrap());
        assert_eq!(&b[..4], &[0, 0, 0, 0]);
        assert_eq!(new, 0x45 | (259 << 8) | (0x12300 << 12));
        assert!(encode_dev(4096, 0).is_err());
    }

    #[test]
    fn high_uid_and_gid_halves() {
        let i = Inode {
            mode: 0o100644,
            uid: 0x0001_0002,
            gid: 0x0003_0004,
            ..Default::default()
        };
        let b = i.encode(12, 0).unwrap();
        assert_eq!((b[2], b[0x18], b[0x78], b[0x7A]), (2, 4, 1, 3));
    }
}
