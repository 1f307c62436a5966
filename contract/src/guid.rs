//! GUIDs as GPT stores them and as `PARTUUID=` prints them.

use alloc::format;
use core::fmt;
use core::str::FromStr;

use crate::{Error, Result};

/// A GUID, held in the byte order of its text form (`00112233-4455-...` is `[0x00, 0x11, ...]`,
/// RFC 4122 / `sd_id128_t` order).
///
/// GPT stores the first three fields little-endian ("mixed-endian"): use
/// [`Guid::to_disk_bytes`] / [`Guid::from_disk_bytes`] at the on-disk boundary and nowhere else.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Guid([u8; 16]);

impl Guid {
    /// The all-zero GUID: an unused GPT entry has this type.
    pub const NIL: Guid = Guid([0; 16]);

    /// From bytes in text order (as [`Guid::as_bytes`] returns them).
    pub const fn from_bytes(b: [u8; 16]) -> Guid {
        Guid(b)
    }

    /// The bytes in text order.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Parses at compile time, for the type-GUID constants; a malformed literal fails the build.
    pub const fn from_str_const(s: &str) -> Guid {
        match parse_bytes(s.as_bytes()) {
            Some(b) => Guid(b),
            None => panic!("malformed GUID literal"),
        }
    }

    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (hex digits in either case).
    pub fn parse(s: &str) -> Result<Guid> {
        match parse_bytes(s.as_bytes()) {
            Some(b) => Ok(Guid(b)),
            None => Err(Error::Invalid(format!(
                "invalid GUID {s:?}: expected 32 hex digits grouped 8-4-4-4-12, like \
                 \"4f68bce3-e8cd-4db1-96e7-fbcaf984b709\""
            ))),
        }
    }

    pub fn is_nil(&self) -> bool {
        self.0 == [0; 16]
    }

    /// The 16 bytes GPT stores: first three fields little-endian, the last 8 bytes as-is.
    pub fn to_disk_bytes(&self) -> [u8; 16] {
        swap_fields(self.0)
    }

    /// Inverse of [`Guid::to_disk_bytes`].
    pub fn from_disk_bytes(b: [u8; 16]) -> Guid {
        Guid(swap_fields(b))
    }
}

/// Reverses the 4-, 2- and 2-byte leading fields; its own inverse.
fn swap_fields(mut b: [u8; 16]) -> [u8; 16] {
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

const fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// `const` so the type-GUID constants are checked by the compiler.
const fn parse_bytes(s: &[u8]) -> Option<[u8; 16]> {
    if s.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut i = 0; // index into s
    let mut n = 0; // nibbles written
    while i < 36 {
        let c = s[i];
        if i == 8 || i == 13 || i == 18 || i == 23 {
            if c != b'-' {
                return None;
            }
        } else {
            let v = match hex_val(c) {
                Some(v) => v,
                None => return None,
            };
            out[n / 2] |= if n % 2 == 0 { v << 4 } else { v };
            n += 1;
        }
        i += 1;
    }
    Some(out)
}

/// Lowercase `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, as `PARTUUID=` and systemd print it.
impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

impl FromStr for Guid {
    type Err = Error;

    fn from_str(s: &str) -> Result<Guid> {
        Guid::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn text_round_trip_any_case() {
        let g = Guid::parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93B").unwrap();
        assert_eq!(g.to_string(), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        assert_eq!(g.as_bytes()[0], 0xC1);
        assert_eq!(g.to_string().parse::<Guid>().unwrap(), g);
        assert_eq!(
            Guid::from_str_const("c12a7328-f81f-11d2-ba4b-00a0c93ec93b"),
            g
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "c12a7328f81f11d2ba4b00a0c93ec93b",
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93",
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93bb",
            "c12a7328-f81f-11d2-ba4b_00a0c93ec93b",
            "g12a7328-f81f-11d2-ba4b-00a0c93ec93b",
        ] {
            let e = Guid::parse(bad).unwrap_err().to_string();
            assert!(e.contains("8-4-4-4-12"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn disk_bytes_are_mixed_endian() {
        // The ESP type GUID as it appears in a hex dump of any GPT disk.
        let g = Guid::parse("c12a7328-f81f-11d2-ba4b-00a0c93ec93b").unwrap();
        let disk = [
            0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
            0xc9, 0x3b,
        ];
        assert_eq!(g.to_disk_bytes(), disk);
        assert_eq!(Guid::from_disk_bytes(disk), g);
        let b: [u8; 16] = core::array::from_fn(|i| i as u8 * 17);
        assert_eq!(
            Guid::from_disk_bytes(Guid::from_bytes(b).to_disk_bytes()),
            Guid::from_bytes(b)
        );
    }
}
