//! Sizes as a newtype, so a count of sectors is never added to a count of bytes by accident.

use alloc::format;
use alloc::string::String;
use core::fmt;
use core::str::FromStr;

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;

/// GPT's logical block size. berth images are always 512-byte-sector disks: QEMU, Vagrant
/// providers and EC2 all present them that way.
pub const SECTOR: u64 = 512;

/// A size in bytes. Parses `"512MiB"`, `"1G"`, `"4096"`, `"64 KiB"` (binary units; `k/M/G/T`
/// and their `iB` forms both mean powers of 1024, as disk tools do).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes(pub u64);

impl Bytes {
    pub const fn mib(n: u64) -> Bytes {
        Bytes(n * MIB)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    /// Rounds up to a multiple of `align` (which must be non-zero).
    pub fn align_up(self, align: u64) -> Bytes {
        Bytes(self.0.div_ceil(align) * align)
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b >= GIB && b.is_multiple_of(GIB) {
            write!(f, "{}GiB", b / GIB)
        } else if b >= MIB && b.is_multiple_of(MIB) {
            write!(f, "{}MiB", b / MIB)
        } else if b >= MIB {
            write!(f, "{:.1}MiB", b as f64 / MIB as f64)
        } else if b >= KIB && b.is_multiple_of(KIB) {
            write!(f, "{}KiB", b / KIB)
        } else {
            write!(f, "{b}B")
        }
    }
}

impl FromStr for Bytes {
    type Err = String;

    fn from_str(s: &str) -> core::result::Result<Self, Self::Err> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let bad = || {
            format!("invalid size {s:?}: expected a number with an optional unit, like \"512MiB\", \"2GiB\" or \"4096\"")
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        let mult = match unit.trim() {
            "" | "B" => 1,
            "K" | "k" | "KiB" | "KB" => KIB,
            "M" | "MiB" | "MB" => MIB,
            "G" | "GiB" | "GB" => GIB,
            "T" | "TiB" | "TB" => 1024 * GIB,
            _ => return Err(bad()),
        };
        n.checked_mul(mult)
            .map(Bytes)
            .ok_or_else(|| format!("size {s:?} is too large"))
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> core::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: a number of bytes or a string like \"512MiB\"")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> core::result::Result<Bytes, E> {
                Ok(Bytes(n))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> core::result::Result<Bytes, E> {
                u64::try_from(n)
                    .map(Bytes)
                    .map_err(|_| E::custom(format!("size {n} is negative")))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> core::result::Result<Bytes, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> core::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Days since 1970-01-01 to (year, month 1–12, day 1–31), proleptic Gregorian (Howard
/// Hinnant's `civil_from_days`). One copy for every date berth writes: build timestamps, FAT
/// and tar times, SigV4 dates.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn parses_units_and_rejects_garbage() {
        assert_eq!("512MiB".parse::<Bytes>().unwrap(), Bytes(512 * MIB));
        assert_eq!("1G".parse::<Bytes>().unwrap(), Bytes(GIB));
        assert_eq!("4096".parse::<Bytes>().unwrap(), Bytes(4096));
        assert_eq!("64 KiB".parse::<Bytes>().unwrap(), Bytes(64 * KIB));
        assert!("12 parsecs"
            .parse::<Bytes>()
            .unwrap_err()
            .contains("512MiB"));
        assert!("MiB".parse::<Bytes>().is_err());
        assert!("99999999999999T"
            .parse::<Bytes>()
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn displays_round_units() {
        assert_eq!(Bytes(512 * MIB).to_string(), "512MiB");
        assert_eq!(Bytes(2 * GIB).to_string(), "2GiB");
        assert_eq!(Bytes(1536 * KIB).to_string(), "1.5MiB");
        assert_eq!(Bytes(10).to_string(), "10B");
        assert_eq!(Bytes(5000).align_up(4096), Bytes(8192));
        for b in [Bytes(0), Bytes(4096), Bytes::mib(3), Bytes(5 * GIB)] {
            assert_eq!(b.to_string().parse::<Bytes>().unwrap(), b);
        }
    }

    #[test]
    fn civil_dates_around_leap_days_and_eras() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        // 2000-02-29 (a leap day of a century divisible by 400), 2100-03-01 (2100 is no leap year).
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(47_541), (2100, 3, 1));
        assert_eq!(civil_from_days(1_767_225_600 / 86_400), (2026, 1, 1));
    }
}
