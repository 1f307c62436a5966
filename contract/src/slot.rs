//! The two A/B root slots.

use alloc::format;
use core::fmt;
use core::ops::Not;
use core::str::FromStr;

use crate::{Error, Result};

/// An A/B root slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    /// `"a"` / `"b"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }
}

/// `!slot` is the other slot.
impl Not for Slot {
    type Output = Slot;

    fn not(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
}

/// `a` / `b`, as in partition names, `berth.slot=` and boot entry names.
impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Slot {
    type Err = Error;

    fn from_str(s: &str) -> Result<Slot> {
        match s {
            "a" => Ok(Slot::A),
            "b" => Ok(Slot::B),
            _ => Err(Error::Invalid(format!(
                "{s:?} is not a slot: expected \"a\" or \"b\""
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn slots_flip_print_and_parse() {
        assert_eq!(!Slot::A, Slot::B);
        assert_eq!(!!Slot::B, Slot::B);
        assert_eq!(format!("root-{}", Slot::A), "root-a");
        for s in Slot::ALL {
            assert_eq!(s.to_string().parse::<Slot>().unwrap(), s);
        }
        assert!("c"
            .parse::<Slot>()
            .unwrap_err()
            .to_string()
            .contains("\"a\" or \"b\""));
        assert!("A".parse::<Slot>().is_err());
    }
}
