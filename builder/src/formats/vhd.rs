//! `disk.vhd`: a fixed VHD, i.e. the raw disk, zero-padded to a whole MiB (Azure accepts only
//! whole-MiB virtual sizes), followed by a 512-byte footer (Microsoft "Virtual Hard Disk Image
//! Format Specification" 1.0, "Hard Disk Footer Format").
//!
//! We write it ourselves because qemu-img's footer carries the current time and a random UUID.
//! Here the timestamp is SOURCE_DATE_EPOCH and the UUID is derived from the build's seed. The
//! copy keeps holes: all-zero MiB chunks of disk.raw are skipped with a seek, not written.
//!
//! ```text
//!   0                      disk.raw bytes                     rounded size   +512
//!   |-------------------------------------------------|000000|   footer   |
//! ```

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{derive_id, is_zero, read_full, FormatCtx, Progress, MIB, SECTOR};

pub const FOOTER_SIZE: usize = 512;
/// Seconds from the Unix epoch to the VHD epoch, 2000-01-01T00:00:00Z.
pub const VHD_EPOCH: i64 = 946_684_800;
/// The creator application field. It is not just a label: readers pick the disk size by it.
/// Virtual PC sized disks by CHS geometry, Hyper-V by the footer's current size, and qemu before
/// 10.0 uses CHS for every creator it does not know as a current-size writer ("win ", "qem2",
/// "d2v ", "tap", "CTXS"). CHS cannot express most whole-MiB sizes, so with our own tag
/// ("brth") qemu 7.2/8.2 (Debian 12, Ubuntu 24.04) would see the disk up to ~1 MiB short and
/// lose the backup GPT. So we write Hyper-V's tag, as Azure expects a Hyper-V-style fixed VHD.
pub const CREATOR_APP: [u8; 4] = *b"win ";
/// Creator version: major.minor of berth in the spec's 16.16 layout.
pub const CREATOR_VERSION: u32 = 0x0001_0000;
/// Creator host OS: "Wi2k" (Windows) is what Hyper-V and Azure tooling write; readers ignore it.
pub const CREATOR_HOST_OS: [u8; 4] = *b"Wi2k";
pub const DISK_TYPE_FIXED: u32 = 2;
/// The largest disk CHS can describe (65535 cylinders, 16 heads, 255 sectors per track).
const MAX_CHS_SECTORS: u64 = 65535 * 16 * 255;

/// The virtual size of the VHD for a raw disk of `raw_size` bytes: rounded up to a whole MiB.
pub fn vhd_size(raw_size: u64) -> u64 {
    raw_size.div_ceil(MIB) * MIB
}

/// CHS geometry (cylinders, heads, sectors per track) for `total_sectors`, by the algorithm in
/// the VHD specification's appendix ("CHS Calculation").
pub fn geometry(total_sectors: u64) -> (u16, u8, u8) {
    let total = total_sectors.min(MAX_CHS_SECTORS);
    let (spt, heads, cyl_times_heads);
    if total >= 65535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cyl_times_heads = total / spt;
    } else {
        let mut s = 17;
        let mut cth = total / s;
        let mut h = cth.div_ceil(1024).max(4);
        if cth >= h * 1024 || h > 16 {
            s = 31;
            h = 16;
            cth = total / s;
        }
        if cth >= h * 1024 {
            s = 63;
            h = 16;
            cth = total / s;
        }
        spt = s;
        heads = h;
        cyl_times_heads = cth;
    }
    // Bounded by the clamp above: cylinders <= 65535, heads <= 16, spt <= 255.
    ((cyl_times_heads / heads) as u16, heads as u8, spt as u8)
}

/// The footer for a fixed VHD of `size` bytes (a whole number of sectors).
pub fn footer(size: u64, mtime: i64, uuid: [u8; 16]) -> [u8; FOOTER_SIZE] {
    let mut f = [0u8; FOOTER_SIZE];
    f[0..8].copy_from_slice(b"conectix");
    f[8..12].copy_from_slice(&2u32.to_be_bytes()); // features: "reserved" bit, always set
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes()); // file format version 1.0
    f[16..24].copy_from_slice(&u64::MAX.to_be_bytes()); // data offset: none for fixed disks
    let ts = (mtime - VHD_EPOCH).clamp(0, u32::MAX as i64) as u32;
    f[24..28].copy_from_slice(&ts.to_be_bytes());
    f[28..32].copy_from_slice(&CREATOR_APP);
    f[32..36].copy_from_slice(&CREATOR_VERSION.to_be_bytes());
    f[36..40].copy_from_slice(&CREATOR_HOST_OS);
    f[40..48].copy_from_slice(&size.to_be_bytes()); // original size
    f[48..56].copy_from_slice(&size.to_be_bytes()); // current size
    let (c, h, s) = geometry(size / SECTOR);
    f[56..58].copy_from_slice(&c.to_be_bytes());
    f[58] = h;
    f[59] = s;
    f[60..64].copy_from_slice(&DISK_TYPE_FIXED.to_be_bytes());
    // f[64..68]: checksum, below. f[68..84]: unique id. f[84]: saved state 0. Rest reserved 0.
    f[68..84].copy_from_slice(&uuid);
    let sum = checksum(&f);
    f[64..68].copy_from_slice(&sum.to_be_bytes());
    f
}

/// The footer checksum: ones' complement of the byte sum with the checksum field taken as zero.
pub fn checksum(footer: &[u8; FOOTER_SIZE]) -> u32 {
    let sum = footer
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |a, (_, b)| a.wrapping_add(u32::from(*b)));
    !sum
}

pub(crate) fn write(ctx: &FormatCtx, dest: &Path, progress: &Progress) -> Result<()> {
    let size = vhd_size(ctx.disk_size);
    let mut src =
        fs::File::open(ctx.disk).with_context(|| format!("opening {}", ctx.disk.display()))?;
    let mut out = fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    progress.start(ctx.disk_size);
    let mut buf = vec![0u8; MIB as usize];
    let mut copied = 0u64;
    loop {
        let n = read_full(&mut src, &mut buf).context("reading the disk")?;
        if n == 0 {
            break;
        }
        if is_zero(&buf[..n]) {
            out.seek(SeekFrom::Current(n as i64))?;
        } else {
            out.write_all(&buf[..n])?;
        }
        copied += n as u64;
        progress.inc(n as u64);
    }
    if copied != ctx.disk_size {
        bail!(
            "{} changed while being read ({copied} bytes, expected {})",
            ctx.disk.display(),
            ctx.disk_size
        );
    }
    out.set_len(size)?;
    out.seek(SeekFrom::Start(size))?;
    out.write_all(&footer(
        size,
        ctx.mtime,
        derive_id("berth-vhd-uuid", &ctx.seed),
    ))?;
    out.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_follows_the_spec() {
        // Small disk: 17 sectors per track, at least 4 heads.
        assert_eq!(geometry(20480), (301, 4, 17)); // 10 MiB
                                                   // 64 MiB: heads grow past 4, still 17 spt.
        let (c, h, s) = geometry(131072);
        assert_eq!((h, s), (8, 17));
        assert_eq!(c as u64, 131072 / 17 / 8);
        // 2.5 GiB-ish (berth's test disk): 63 sectors per track, 16 heads.
        assert_eq!(geometry(5283840), (5241, 16, 63));
        // Beyond 127 GiB: the maximum geometry.
        assert_eq!(geometry(1 << 40), (65535, 16, 255));
    }

    #[test]
    fn footer_fields_and_checksum() {
        let f = footer(64 * MIB, VHD_EPOCH + 1000, [7u8; 16]);
        assert_eq!(&f[0..8], b"conectix");
        assert_eq!(u32::from_be_bytes(f[24..28].try_into().unwrap()), 1000);
        assert_eq!(u64::from_be_bytes(f[48..56].try_into().unwrap()), 64 * MIB);
        assert_eq!(u32::from_be_bytes(f[60..64].try_into().unwrap()), 2);
        assert_eq!(
            u32::from_be_bytes(f[64..68].try_into().unwrap()),
            checksum(&f)
        );
        assert_eq!(f[84], 0);
        // Times before 2000 clamp to the VHD epoch instead of wrapping.
        let f = footer(MIB, 0, [0; 16]);
        assert_eq!(u32::from_be_bytes(f[24..28].try_into().unwrap()), 0);
    }

    #[test]
    fn size_rounds_up_to_whole_mib() {
        assert_eq!(vhd_size(MIB), MIB);
        assert_eq!(vhd_size(MIB + 512), 2 * MIB);
        assert_eq!(vhd_size(2_705_326_080), 2_705_326_080);
    }
}
