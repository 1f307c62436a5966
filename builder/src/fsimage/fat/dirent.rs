//! The 32-byte short directory entry and the DOS date/time it carries.

/// Entry attribute bits (fatgen103 §6).
pub const ATTR_VOLUME_ID: u8 = 0x08;
pub const ATTR_DIRECTORY: u8 = 0x10;
pub const ATTR_ARCHIVE: u8 = 0x20;

/// Bytes of one directory entry.
pub const ENTRY: usize = 32;

/// First name byte of a deleted entry.
pub const DELETED: u8 = 0xE5;

/// `DIR_NTRes` bits Windows NT and Linux use for a lower-case base name / extension of an
/// otherwise valid 8.3 name. berth writes LFNs instead, but reads both.
const CASE_LOWER_BASE: u8 = 0x08;
const CASE_LOWER_EXT: u8 = 0x10;

/// A timestamp as FAT stores it. FAT stamps are "local time" with no zone; berth renders them
/// in UTC so an image never depends on the builder's time zone (Linux shows them shifted by
/// the reader's zone unless mounted with `tz=UTC`; firmware does not care).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DosTime {
    /// Bits 15–9 year since 1980, 8–5 month, 4–0 day.
    pub date: u16,
    /// Bits 15–11 hours, 10–5 minutes, 4–0 seconds / 2.
    pub time: u16,
    /// Creation-time refinement in 10 ms units (0–199): the odd second.
    pub tenths: u8,
}

impl DosTime {
    /// Converts Unix seconds (UTC). FAT dates run from 1980-01-01 to 2107-12-31; times outside
    /// are clamped to the nearest end (a SOURCE_DATE_EPOCH of 0 becomes 1980-01-01 00:00:00).
    pub fn from_unix(secs: i64) -> DosTime {
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = crate::units::civil_from_days(days);
        if y < 1980 {
            return DosTime {
                date: (1 << 5) | 1,
                time: 0,
                tenths: 0,
            };
        }
        if y > 2107 {
            return DosTime {
                date: (127 << 9) | (12 << 5) | 31,
                time: (23 << 11) | (59 << 5) | 29,
                tenths: 100,
            };
        }
        let (h, min, s) = (sod / 3600, sod / 60 % 60, sod % 60);
        DosTime {
            date: (((y - 1980) as u16) << 9) | ((m as u16) << 5) | d as u16,
            time: ((h as u16) << 11) | ((min as u16) << 5) | (s / 2) as u16,
            tenths: ((s % 2) * 100) as u8,
        }
    }
}

/// A short (8.3) directory entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShortEntry {
    pub name: [u8; 11],
    pub attr: u8,
    /// `DIR_NTRes`: case bits.
    pub case: u8,
    pub cluster: u32,
    pub size: u32,
    pub time: DosTime,
}

impl ShortEntry {
    pub fn new(name: [u8; 11], attr: u8, cluster: u32, size: u32, time: DosTime) -> Self {
        ShortEntry {
            name,
            attr,
            case: 0,
            cluster,
            size,
            time,
        }
    }

    /// The 32 on-disk bytes. Creation, write and access stamps are all `time` (access is a
    /// date only).
    pub fn encode(&self) -> [u8; ENTRY] {
        let mut e = [0u8; ENTRY];
        e[..11].copy_from_slice(&self.name);
        e[11] = self.attr;
        e[12] = self.case;
        e[13] = self.time.tenths;
        e[14..16].copy_from_slice(&self.time.time.to_le_bytes());
        e[16..18].copy_from_slice(&self.time.date.to_le_bytes());
        e[18..20].copy_from_slice(&self.time.date.to_le_bytes());
        e[20..22].copy_from_slice(&((self.cluster >> 16) as u16).to_le_bytes());
        e[22..24].copy_from_slice(&self.time.time.to_le_bytes());
        e[24..26].copy_from_slice(&self.time.date.to_le_bytes());
        e[26..28].copy_from_slice(&(self.cluster as u16).to_le_bytes());
        e[28..32].copy_from_slice(&self.size.to_le_bytes());
        e
    }

    /// Parses an entry; the timestamp returned is the write time.
    pub fn decode(e: &[u8]) -> ShortEntry {
        let u16_at = |o: usize| u16::from_le_bytes([e[o], e[o + 1]]);
        let mut name = [0u8; 11];
        name.copy_from_slice(&e[..11]);
        ShortEntry {
            name,
            attr: e[11],
            case: e[12],
            cluster: (u32::from(u16_at(20)) << 16) | u32::from(u16_at(26)),
            size: u32::from_le_bytes([e[28], e[29], e[30], e[31]]),
            time: DosTime {
                date: u16_at(24),
                time: u16_at(22),
                tenths: 0,
            },
        }
    }

    pub fn is_dir(&self) -> bool {
        self.attr & ATTR_DIRECTORY != 0
    }

    /// The name as Linux shows an entry without LFN: `BASE.EXT`, honouring the NT case bits.
    /// Bytes above 0x7F (OEM code page, never written by berth) are read as Latin-1.
    pub fn display_name(&self) -> String {
        let mut raw = self.name;
        if raw[0] == 0x05 {
            raw[0] = DELETED; // fatgen103: 0x05 stands for a leading 0xE5 byte.
        }
        let part = |b: &[u8], lower: bool| -> String {
            let s: String = b.iter().map(|&c| c as char).collect();
            let s = s.trim_end_matches(' ');
            if lower {
                s.to_ascii_lowercase()
            } else {
                s.to_string()
            }
        };
        let base = part(&raw[..8], self.case & CASE_LOWER_BASE != 0);
        let ext = part(&raw[8..], self.case & CASE_LOWER_EXT != 0);
        if ext.is_empty() {
            base
        } else {
            format!("{base}.{ext}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dos_time_encoding() {
        // 2024-02-29 13:37:43 UTC
        let t = DosTime::from_unix(1_709_213_863);
        assert_eq!(t.date, ((2024 - 1980) << 9) | (2 << 5) | 29);
        assert_eq!(t.time, (13 << 11) | (37 << 5) | 21);
        assert_eq!(t.tenths, 100);
        // 1980-01-01 00:00:00 UTC, the FAT epoch.
        let t = DosTime::from_unix(315_532_800);
        assert_eq!((t.date, t.time, t.tenths), (0x0021, 0, 0));
        // Before it (SOURCE_DATE_EPOCH=0) clamps to it.
        assert_eq!(DosTime::from_unix(0), t);
        assert_eq!(DosTime::from_unix(-1), t);
        // 2107-12-31 23:59:58 is the last representable even second; later clamps there.
        let last = DosTime::from_unix(4_354_819_198);
        assert_eq!(last.date, (127 << 9) | (12 << 5) | 31);
        assert_eq!(last.time, (23 << 11) | (59 << 5) | 29);
        assert_eq!(DosTime::from_unix(i64::MAX / 2).date, last.date);
        // 2000-03-01: a leap-century boundary.
        let t = DosTime::from_unix(951_868_800);
        assert_eq!(t.date, (20 << 9) | (3 << 5) | 1);
    }

    #[test]
    fn short_entry_round_trip() {
        let t = DosTime::from_unix(1_700_000_000);
        let e = ShortEntry::new(*b"BOOTX64 EFI", ATTR_ARCHIVE, 0x0012_3456, 102_400, t);
        let b = e.encode();
        assert_eq!(&b[20..22], &[0x12, 0x00]);
        assert_eq!(&b[26..28], &[0x56, 0x34]);
        assert_eq!(&b[14..18], &b[22..26], "create == write stamp");
        let d = ShortEntry::decode(&b);
        assert_eq!(
            (d.cluster, d.size, d.time.date, d.time.time),
            (0x0012_3456, 102_400, t.date, t.time)
        );
        assert_eq!(d.display_name(), "BOOTX64.EFI");
        let mut lower = d;
        lower.case = CASE_LOWER_BASE;
        assert_eq!(lower.display_name(), "bootx64.EFI");
    }
}
