//! Volume geometry (pure layout math) and the reserved region: boot sector with the FAT32 BPB,
//! FSInfo sector, and their backups.
//!
//! ```text
//!  sector 0      1        6        7       32                 32+F          32+2F
//!  | boot/BPB | FSInfo | .. | boot copy | FSInfo copy | .. | FAT 1 (F sectors) | FAT 2 | clusters 2.. |
//!  |<------------------ 32 reserved sectors ---------------->|                          ^ root dir
//! ```

use super::FatError;

/// Bytes per sector. berth disks are 512-byte-sector disks (see `gpt::SECTOR`).
pub const SECTOR: u64 = 512;
/// Reserved sectors before the first FAT: fatgen103's (and mkfs.fat's) FAT32 value.
pub const RESERVED_SECTORS: u32 = 32;
/// Two FATs, as every FAT driver expects; the second is a mirror.
pub const FAT_COUNT: u32 = 2;
/// The root directory's first cluster.
pub const ROOT_CLUSTER: u32 = 2;
pub const FSINFO_SECTOR: u32 = 1;
pub const BACKUP_BOOT_SECTOR: u32 = 6;
/// "Fixed (non-removable) media".
pub const MEDIA: u8 = 0xF8;
/// Fewer clusters than this make a volume FAT16 by the spec's only rule (cluster count),
/// whatever the BPB says; Windows and fsck.fat then distrust a FAT32 BPB.
pub const MIN_CLUSTERS: u32 = 65_525;
/// Cluster numbers 0x0FFFFFF7 and up are reserved (bad cluster, end of chain).
pub const MAX_CLUSTERS: u32 = 0x0FFF_FFF5 - 1;
/// End-of-chain marker written by berth.
pub const EOC: u32 = 0x0FFF_FFFF;

/// Where everything is on a FAT32 volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub total_sectors: u32,
    pub sectors_per_cluster: u32,
    /// Sectors per FAT copy.
    pub fat_sectors: u32,
    /// Data clusters (numbered 2 ..= clusters + 1).
    pub clusters: u32,
}

/// Sectors per cluster for a volume of `total` sectors: fatgen103's `DskTableFAT32`, which is
/// also what `mkfs.fat -F 32` and Windows `format` pick. Up to 260 MB that is 512-byte
/// clusters: 4 KiB clusters on a 64 MiB ESP would give ~16 000 clusters, a FAT16 count, so the
/// volume would not be valid FAT32. `None` below 66 600 sectors (~32.5 MiB).
pub fn sectors_per_cluster(total: u64) -> Option<u32> {
    const TABLE: [(u64, u32); 5] = [
        (532_480, 1),     // <= 260 MB: 512 B
        (16_777_216, 8),  // <= 8 GB: 4 KiB
        (33_554_432, 16), // <= 16 GB: 8 KiB
        (67_108_864, 32), // <= 32 GB: 16 KiB
        (u64::MAX, 64),   // larger: 32 KiB
    ];
    if total <= 66_600 {
        return None;
    }
    TABLE
        .iter()
        .find(|(max, _)| total <= *max)
        .map(|&(_, spc)| spc)
}

impl Geometry {
    /// Lays out a volume of `size` bytes. Fails if `size` is not whole sectors, exceeds FAT32's
    /// 2 TiB, or is too small to hold the 65 525 clusters FAT32 needs.
    pub fn plan(size: u64) -> Result<Geometry, FatError> {
        if !size.is_multiple_of(SECTOR) {
            return Err(FatError::Unaligned { size });
        }
        let total = u32::try_from(size / SECTOR).map_err(|_| FatError::TooLarge { size })?;
        Geometry::for_sectors(total).ok_or_else(|| FatError::BelowFat32Minimum {
            size,
            min: min_fat32_size(),
        })
    }

    /// The layout of a `total`-sector volume, `None` if it would have too few clusters.
    fn for_sectors(total: u32) -> Option<Geometry> {
        let spc = sectors_per_cluster(u64::from(total))?;
        // The FAT needs one 4-byte entry per cluster plus the two reserved ones. Start from
        // fatgen103's estimate (never too big), grow until the FAT covers every cluster left
        // after it, then until the data area starts on a cluster boundary (as mkfs.fat aligns
        // it) so 4 KiB clusters sit 4 KiB-aligned.
        let entries_per_sector = SECTOR as u32 / 4;
        let after_reserved = total.checked_sub(RESERVED_SECTORS)?;
        let mut fat = (after_reserved + 2 * spc).div_ceil(entries_per_sector * spc + FAT_COUNT);
        let covers = |fat: u32| {
            let data = after_reserved.saturating_sub(FAT_COUNT * fat);
            data / spc + 2 <= fat * entries_per_sector
        };
        while !covers(fat) || !(RESERVED_SECTORS + FAT_COUNT * fat).is_multiple_of(spc) {
            fat += 1;
        }
        let data = after_reserved.checked_sub(FAT_COUNT * fat)?;
        let clusters = (data / spc).min(MAX_CLUSTERS);
        if clusters < MIN_CLUSTERS {
            return None;
        }
        debug_assert!(clusters + 2 <= fat * entries_per_sector);
        Some(Geometry {
            total_sectors: total,
            sectors_per_cluster: spc,
            fat_sectors: fat,
            clusters,
        })
    }

    pub fn cluster_bytes(&self) -> u64 {
        u64::from(self.sectors_per_cluster) * SECTOR
    }

    pub fn size(&self) -> u64 {
        u64::from(self.total_sectors) * SECTOR
    }

    /// Byte offset (from the volume start) of FAT copy `copy`.
    pub fn fat_offset(&self, copy: u32) -> u64 {
        u64::from(RESERVED_SECTORS + copy * self.fat_sectors) * SECTOR
    }

    /// Byte offset (from the volume start) of cluster `cluster` (>= 2).
    pub fn cluster_offset(&self, cluster: u32) -> u64 {
        let data = u64::from(RESERVED_SECTORS + FAT_COUNT * self.fat_sectors) * SECTOR;
        data + u64::from(cluster - 2) * self.cluster_bytes()
    }
}

/// The smallest whole-MiB size [`Geometry::plan`] accepts (33 MiB).
pub fn min_fat32_size() -> u64 {
    let mib = crate::units::MIB;
    (1..)
        .map(|n| n * mib)
        .find(|&s| Geometry::for_sectors((s / SECTOR) as u32).is_some())
        .unwrap_or(mib)
}

/// What the boot sector says besides the geometry.
pub struct BootParams<'a> {
    pub geometry: &'a Geometry,
    /// Sectors before the volume on its disk (`BPB_HiddSec`).
    pub hidden_sectors: u32,
    pub volume_id: u32,
    /// Space-padded, or `NO NAME    `.
    pub label: [u8; 11],
}

/// Boot sector with the FAT32 BPB (fatgen103 §3.1, §3.3).
pub fn boot_sector(p: &BootParams) -> [u8; SECTOR as usize] {
    let g = p.geometry;
    let mut s = [0u8; SECTOR as usize];
    s[0..3].copy_from_slice(&[0xEB, 0x58, 0x90]); // jmp short to the boot code at 0x5A; nop
    s[3..11].copy_from_slice(b"MSWIN4.1"); // the OEM name fatgen103 recommends for compatibility
    s[11..13].copy_from_slice(&(SECTOR as u16).to_le_bytes());
    s[13] = g.sectors_per_cluster as u8;
    s[14..16].copy_from_slice(&(RESERVED_SECTORS as u16).to_le_bytes());
    s[16] = FAT_COUNT as u8;
    // 17..19 root entry count, 19..21 16-bit total sectors: 0 on FAT32.
    s[21] = MEDIA;
    // 22..24 16-bit FAT size: 0 marks FAT32.
    // CHS geometry, unused by anything modern, but mtools refuses a volume whose sector count
    // is not a multiple of the sectors per track: 32 divides every whole-MiB size.
    s[24..26].copy_from_slice(&32u16.to_le_bytes());
    s[26..28].copy_from_slice(&64u16.to_le_bytes());
    s[28..32].copy_from_slice(&p.hidden_sectors.to_le_bytes());
    s[32..36].copy_from_slice(&g.total_sectors.to_le_bytes());
    s[36..40].copy_from_slice(&g.fat_sectors.to_le_bytes());
    // 40..42 ext flags 0: FATs mirrored; 42..44 version 0.0.
    s[44..48].copy_from_slice(&ROOT_CLUSTER.to_le_bytes());
    s[48..50].copy_from_slice(&(FSINFO_SECTOR as u16).to_le_bytes());
    s[50..52].copy_from_slice(&(BACKUP_BOOT_SECTOR as u16).to_le_bytes());
    s[64] = 0x80; // drive number: hard disk
    s[66] = 0x29; // extended boot signature: the next three fields are valid
    s[67..71].copy_from_slice(&p.volume_id.to_le_bytes());
    s[71..82].copy_from_slice(&p.label);
    s[82..90].copy_from_slice(b"FAT32   ");
    // Boot code for a BIOS that boots the ESP by mistake: int 18h ("no bootable disk, try the
    // next device"), then halt.
    s[90..94].copy_from_slice(&[0xCD, 0x18, 0xEB, 0xFE]);
    s[510] = 0x55;
    s[511] = 0xAA;
    s
}

/// FSInfo sector (fatgen103 §5): free cluster count and where to start looking for one.
pub fn fsinfo_sector(free: u32, next_free: u32) -> [u8; SECTOR as usize] {
    let mut s = [0u8; SECTOR as usize];
    s[0..4].copy_from_slice(&0x4161_5252u32.to_le_bytes());
    s[484..488].copy_from_slice(&0x6141_7272u32.to_le_bytes());
    s[488..492].copy_from_slice(&free.to_le_bytes());
    s[492..496].copy_from_slice(&next_free.to_le_bytes());
    s[508..512].copy_from_slice(&0xAA55_0000u32.to_le_bytes());
    s
}

/// Whether `s` is an FSInfo sector.
pub fn is_fsinfo(s: &[u8]) -> bool {
    s[0..4] == 0x4161_5252u32.to_le_bytes() && s[484..488] == 0x6141_7272u32.to_le_bytes()
}

/// Reads the geometry back from a boot sector, rejecting what this module does not handle
/// (non-512-byte sectors, FAT12/16, a root directory elsewhere than cluster 2 is fine).
pub fn parse_boot_sector(s: &[u8]) -> anyhow::Result<(Geometry, u32)> {
    use anyhow::ensure;
    let u16_at = |o: usize| u16::from_le_bytes([s[o], s[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([s[o], s[o + 1], s[o + 2], s[o + 3]]);
    ensure!(
        s[510] == 0x55 && s[511] == 0xAA,
        "no boot sector signature (0x55AA)"
    );
    ensure!(
        u64::from(u16_at(11)) == SECTOR,
        "{}-byte sectors; only 512 is supported",
        u16_at(11)
    );
    ensure!(
        u16_at(22) == 0 && u32_at(36) != 0,
        "not FAT32 (16-bit FAT size is set)"
    );
    let spc = u32::from(s[13]);
    ensure!(spc.is_power_of_two(), "bad sectors per cluster {spc}");
    let reserved = u32::from(u16_at(14));
    let fats = u32::from(s[16]);
    ensure!(
        reserved == RESERVED_SECTORS || reserved > 0,
        "no reserved sectors"
    );
    ensure!(fats >= 1, "no FATs");
    let total = if u16_at(19) != 0 {
        u32::from(u16_at(19))
    } else {
        u32_at(32)
    };
    let fat_sectors = u32_at(36);
    // Only berth's own layout (32 reserved sectors, 2 FATs) is modelled by `Geometry`.
    ensure!(
        reserved == RESERVED_SECTORS && fats == FAT_COUNT,
        "{reserved} reserved sectors and {fats} FATs; expected {RESERVED_SECTORS} and {FAT_COUNT}"
    );
    let data = total
        .checked_sub(reserved + fats * fat_sectors)
        .ok_or_else(|| anyhow::anyhow!("FATs extend past the end of the volume"))?;
    let clusters = (data / spc).min(fat_sectors * (SECTOR as u32 / 4) - 2);
    Ok((
        Geometry {
            total_sectors: total,
            sectors_per_cluster: spc,
            fat_sectors,
            clusters,
        },
        u32_at(44),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::MIB;

    #[test]
    fn geometry_matches_mkfs_fat() {
        // `mkfs.fat -F 32 -C img 65536` (dosfstools 4.2): 512 B clusters, 1009-sector FATs,
        // 129 022 clusters. Ours is the same.
        let g = Geometry::plan(64 * MIB).unwrap();
        assert_eq!(g.sectors_per_cluster, 1);
        assert_eq!(g.fat_sectors, 1009);
        assert_eq!(g.clusters, 129_022);
        // 256 MiB: mkfs.fat gives 4033-sector FATs, 516 190 clusters.
        let g = Geometry::plan(256 * MIB).unwrap();
        assert_eq!(
            (g.sectors_per_cluster, g.fat_sectors, g.clusters),
            (1, 4033, 516_190)
        );
        // 1 GiB: 4 KiB clusters, data area cluster-aligned.
        let g = Geometry::plan(1024 * MIB).unwrap();
        assert_eq!(g.sectors_per_cluster, 8);
        assert_eq!(g.cluster_offset(2) % g.cluster_bytes(), 0);
        assert!(g.clusters >= MIN_CLUSTERS);
        assert!(g.clusters + 2 <= g.fat_sectors * 128);
    }

    #[test]
    fn too_small_says_how_big() {
        assert_eq!(min_fat32_size(), 33 * MIB);
        assert!(Geometry::plan(33 * MIB).is_ok());
        let err = Geometry::plan(32 * MIB).unwrap_err().to_string();
        assert!(err.contains("34603008"), "{err}");
        assert!(Geometry::plan(33 * MIB + 1).is_err());
    }

    #[test]
    fn bpb_fields() {
        let g = Geometry::plan(64 * MIB).unwrap();
        let s = boot_sector(&BootParams {
            geometry: &g,
            hidden_sectors: 2048,
            volume_id: 0xDEAD_BEEF,
            label: *b"BERTH-ESP  ",
        });
        let u16_at = |o: usize| u16::from_le_bytes([s[o], s[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(s[o..o + 4].try_into().unwrap());
        assert_eq!(u16_at(11), 512);
        assert_eq!(s[13], 1);
        assert_eq!(u16_at(14), 32);
        assert_eq!(s[16], 2);
        assert_eq!((u16_at(17), u16_at(19), u16_at(22)), (0, 0, 0));
        assert_eq!(s[21], 0xF8);
        assert_eq!(u32_at(28), 2048);
        assert_eq!(u32_at(32), 131_072);
        assert_eq!(u32_at(36), 1009);
        assert_eq!(u32_at(44), 2);
        assert_eq!((u16_at(48), u16_at(50)), (1, 6));
        assert_eq!(s[66], 0x29);
        assert_eq!(u32_at(67), 0xDEAD_BEEF);
        assert_eq!(&s[71..82], b"BERTH-ESP  ");
        assert_eq!(&s[82..90], b"FAT32   ");
        assert_eq!(&s[510..], &[0x55, 0xAA]);
        let (back, root) = parse_boot_sector(&s).unwrap();
        assert_eq!((back, root), (g, 2));

        let f = fsinfo_sector(1000, 77);
        assert!(is_fsinfo(&f));
        assert_eq!(u32::from_le_bytes(f[488..492].try_into().unwrap()), 1000);
        assert_eq!(u32::from_le_bytes(f[492..496].try_into().unwrap()), 77);
        assert_eq!(&f[508..], &[0, 0, 0x55, 0xAA]);
    }
}
