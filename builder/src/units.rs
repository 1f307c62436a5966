//! Sizes as a newtype, so a count of sectors is never added to a count of bytes by accident.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;

/// A size in bytes. Parses `"512MiB"`, `"1G"`, `"4096"`, `"64 KiB"` (binary units; `k/M/G/T`
/// and their `iB` forms both mean powers of 1024, as disk tools do).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes(pub u64);

impl Bytes {
    pub const fn mib(n: u64) -> Bytes {
        Bytes(n * MIB)
    }

    pub fn get(self) -> u64 {
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
        if b >= GIB && b % GIB == 0 {
            write!(f, "{}GiB", b / GIB)
        } else if b >= MIB && b % MIB == 0 {
            write!(f, "{}MiB", b / MIB)
        } else if b >= MIB {
            write!(f, "{:.1}MiB", b as f64 / MIB as f64)
        } else if b >= KIB && b % KIB == 0 {
            write!(f, "{}KiB", b / KIB)
        } else {
            write!(f, "{b}B")
        }
    }
}

impl FromStr for Bytes {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
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

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(Bytes(n)),
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
