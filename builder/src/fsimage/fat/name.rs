//! File names: which long names FAT accepts, 8.3 short names (exact or generated with a
//! `~N` numeric tail) and the VFAT long-name (LFN) slots that carry the real name.
//!
//! Rules follow Microsoft's "FAT: General Overview of On-Disk Format" (fatgen103) §6–7, with
//! the refinements Windows and Linux vfat share: a name that differs from a valid 8.3 name only
//! in case gets that 8.3 name as its short name (no tail) plus an LFN for the case; anything
//! lossier gets a `~N` tail, the lowest N free in the directory.

use std::collections::HashSet;

/// Longest long name, in UTF-16 code units (fatgen103 §7).
pub const MAX_LONG_NAME: usize = 255;

/// UTF-16 units per LFN slot.
const UNITS_PER_SLOT: usize = 13;

/// Byte offsets of the 13 UTF-16 units inside an LFN slot (Name1, Name2, Name3).
const LFN_UNIT_OFFSETS: [usize; UNITS_PER_SLOT] = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];

/// Attribute byte marking an LFN slot (READ_ONLY | HIDDEN | SYSTEM | VOLUME_ID).
pub const ATTR_LONG_NAME: u8 = 0x0F;

/// Flag on the ordinal of the last (first stored) LFN slot.
const LAST_LONG_ENTRY: u8 = 0x40;

/// Characters allowed in a short name besides `A-Z` and `0-9` (fatgen103 §6.1). Bytes above
/// 0x7F are allowed by the spec too, but their meaning depends on the OEM code page, so berth
/// never puts one in a short name.
const SHORT_SPECIALS: &[u8] = b"!#$%&'()-@^_`{}~";

/// Characters no FAT long name may contain (fatgen103 §7, plus what Linux vfat rejects).
const LONG_FORBIDDEN: &str = "\"*/:<>?\\|";

fn short_char_ok(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit() || SHORT_SPECIALS.contains(&b)
}

/// Checks one path component as a FAT long name; the error says why it is not one.
pub fn check_long_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty path component".into());
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} cannot be a file or directory name"));
    }
    let units = name.encode_utf16().count();
    if units > MAX_LONG_NAME {
        return Err(format!(
            "name {name:?} is {units} UTF-16 units long; FAT allows at most {MAX_LONG_NAME}"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| (c as u32) < 0x20 || c == '\x7f' || LONG_FORBIDDEN.contains(c))
    {
        return Err(format!(
            "name {name:?} contains {c:?}; FAT names may not contain control characters or any of {LONG_FORBIDDEN}"
        ));
    }
    if name.ends_with('.') || name.ends_with(' ') {
        return Err(format!(
            "name {name:?} ends with '.' or a space, which Windows and Linux vfat strip"
        ));
    }
    Ok(())
}

/// The on-disk short name if `name` is already a valid upper-case 8.3 name (then it needs no
/// LFN), else `None`.
pub fn exact_short_name(name: &str) -> Option<[u8; 11]> {
    let (base, ext) = match name.rfind('.') {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => (name, ""),
    };
    let fits = !base.is_empty()
        && base.len() <= 8
        && ext.len() <= 3
        && !(name.contains('.') && ext.is_empty())
        && base.bytes().chain(ext.bytes()).all(short_char_ok);
    fits.then(|| pack(base.as_bytes(), ext.as_bytes()))
}

/// Whether `name` must be stored with LFN slots (it is not a valid upper-case 8.3 name).
pub fn needs_long_name(name: &str) -> bool {
    exact_short_name(name).is_none()
}

fn pack(base: &[u8], ext: &[u8]) -> [u8; 11] {
    let mut out = [b' '; 11];
    out[..base.len()].copy_from_slice(base);
    out[8..8 + ext.len()].copy_from_slice(ext);
    out
}

/// A short name for `name` that is not in `taken`.
///
/// An exact 8.3 name is kept. A name that is an 8.3 name except for case (`loader`,
/// `BootX64.efi`) keeps its upper-cased form (`LOADER`, `BOOTX64.EFI`) when free. Otherwise
/// the fatgen103 basis name (upper-cased, spaces and leading/embedded periods dropped, other
/// invalid characters turned into `_`, base cut to 8 and extension to 3) gets the lowest free
/// numeric tail: `berth-a+3.conf` -> `BERTH-~1.CON`. Deterministic for a given `taken`.
pub fn short_name_for(name: &str, taken: &HashSet<[u8; 11]>) -> Option<[u8; 11]> {
    if let Some(s) = exact_short_name(&name.to_ascii_uppercase()) {
        if !taken.contains(&s) {
            return Some(s);
        }
    }
    let (base, ext) = basis_name(name);
    for n in 1..=999_999u32 {
        let tail = format!("~{n}");
        let keep = base.len().min(8 - tail.len());
        let mut b = base[..keep].to_vec();
        b.extend_from_slice(tail.as_bytes());
        let candidate = pack(&b, &ext);
        if !taken.contains(&candidate) {
            return Some(candidate);
        }
    }
    None
}

/// fatgen103 §7.2 "Basis-Name Generation", as Windows does it (embedded periods before the
/// last one are dropped rather than ending the base).
fn basis_name(name: &str) -> (Vec<u8>, Vec<u8>) {
    let trimmed = name.trim_start_matches(['.', ' ']);
    let (base, ext) = match trimmed.rfind('.') {
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => (trimmed, ""),
    };
    let map = |s: &str, max: usize| -> Vec<u8> {
        s.chars()
            .filter(|&c| c != ' ' && c != '.')
            .map(|c| {
                let u = c.to_ascii_uppercase();
                if u.is_ascii() && short_char_ok(u as u8) {
                    u as u8
                } else {
                    b'_'
                }
            })
            .take(max)
            .collect()
    };
    let mut b = map(base, 8);
    if b.is_empty() {
        b.push(b'_');
    }
    (b, map(ext, 3))
}

/// The LFN checksum of a short name (fatgen103 §7.2, `ChkSum`): a rotate-right-and-add over
/// the 11 name bytes. Every LFN slot carries it, tying the slots to their short entry.
pub fn lfn_checksum(short: &[u8; 11]) -> u8 {
    short
        .iter()
        .fold(0u8, |sum, &b| sum.rotate_right(1).wrapping_add(b))
}

/// The LFN slots for `name`, in on-disk order (highest ordinal, flagged last, first), each
/// carrying `short`'s checksum. The name is NUL-terminated unless it fills the last slot
/// exactly; the rest is padded with 0xFFFF.
pub fn lfn_slots(name: &str, short: &[u8; 11]) -> Vec<[u8; 32]> {
    let units: Vec<u16> = name.encode_utf16().collect();
    let count = units.len().div_ceil(UNITS_PER_SLOT);
    let sum = lfn_checksum(short);
    (1..=count)
        .rev()
        .map(|ord| {
            let mut e = [0u8; 32];
            e[0] = ord as u8 | if ord == count { LAST_LONG_ENTRY } else { 0 };
            e[11] = ATTR_LONG_NAME;
            e[13] = sum;
            for (i, &off) in LFN_UNIT_OFFSETS.iter().enumerate() {
                let idx = (ord - 1) * UNITS_PER_SLOT + i;
                let unit = match idx.cmp(&units.len()) {
                    std::cmp::Ordering::Less => units[idx],
                    std::cmp::Ordering::Equal => 0,
                    std::cmp::Ordering::Greater => 0xFFFF,
                };
                e[off..off + 2].copy_from_slice(&unit.to_le_bytes());
            }
            e
        })
        .collect()
}

/// Number of LFN slots `name` takes (0 if it is an exact short name).
pub fn slot_count(name: &str) -> usize {
    if needs_long_name(name) {
        name.encode_utf16().count().div_ceil(UNITS_PER_SLOT)
    } else {
        0
    }
}

/// Accumulates LFN slots while scanning a directory and yields the long name once the short
/// entry they belong to arrives. Slots out of sequence or with a wrong checksum are dropped,
/// as Linux and Windows do, leaving the short name.
#[derive(Default)]
pub struct LfnAssembler {
    /// (ordinal expected next, checksum, units so far by slot)
    pending: Option<(u8, u8, Vec<[u16; UNITS_PER_SLOT]>)>,
}

impl LfnAssembler {
    pub fn push_slot(&mut self, e: &[u8]) {
        let ord = e[0] & 0x1F;
        let mut units = [0u16; UNITS_PER_SLOT];
        for (u, &off) in units.iter_mut().zip(LFN_UNIT_OFFSETS.iter()) {
            *u = u16::from_le_bytes([e[off], e[off + 1]]);
        }
        if e[0] & LAST_LONG_ENTRY != 0 {
            self.pending = (ord >= 1).then(|| (ord - 1, e[13], vec![units]));
            return;
        }
        self.pending = match self.pending.take() {
            Some((next, sum, mut parts)) if next == ord && next >= 1 && sum == e[13] => {
                parts.push(units);
                Some((ord - 1, sum, parts))
            }
            _ => None,
        };
    }

    /// The long name for the short entry `short`, if complete slots precede it.
    pub fn finish(&mut self, short: &[u8; 11]) -> Option<String> {
        let (next, sum, parts) = self.pending.take()?;
        if next != 0 || sum != lfn_checksum(short) {
            return None;
        }
        let units: Vec<u16> = parts
            .iter()
            .rev()
            .flatten()
            .copied()
            .take_while(|&u| u != 0)
            .collect();
        String::from_utf16(&units).ok()
    }

    pub fn reset(&mut self) {
        self.pending = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(b: &[u8; 11]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    #[test]
    fn exact_short_names_need_no_lfn() {
        assert_eq!(s(&exact_short_name("BOOTX64.EFI").unwrap()), "BOOTX64 EFI");
        assert_eq!(s(&exact_short_name("EFI").unwrap()), "EFI        ");
        assert_eq!(s(&exact_short_name("A~1_$.X").unwrap()), "A~1_$   X  ");
        for name in [
            "loader",
            "Boot.efi",
            "ABCDEFGHI",
            "A.ABCD",
            "A.B.C",
            ".A",
            "A B",
            "A+B",
        ] {
            assert!(exact_short_name(name).is_none(), "{name}");
            assert!(needs_long_name(name), "{name}");
        }
    }

    #[test]
    fn generated_short_names() {
        let mut taken = HashSet::new();
        let gen = |n: &str, t: &HashSet<[u8; 11]>| s(&short_name_for(n, t).unwrap());
        // Case-only difference: the upper-cased name, no tail.
        assert_eq!(gen("loader", &taken), "LOADER     ");
        assert_eq!(gen("loader.conf", &taken), "LOADER~1CON");
        assert_eq!(gen("BootX64.efi", &taken), "BOOTX64 EFI");
        // Lossy: basis name plus the lowest free tail.
        assert_eq!(gen("berth-a+3.conf", &taken), "BERTH-~1CON");
        taken.insert(*b"BERTH-~1CON");
        assert_eq!(gen("berth-a+3.conf", &taken), "BERTH-~2CON");
        assert_eq!(gen("entries", &taken), "ENTRIES    ");
        assert_eq!(gen(".hidden file.tar.gz", &taken), "HIDDEN~1GZ ");
        assert_eq!(gen("vmlinuz-6.1.0", &taken), "VMLINU~10  ");
        assert_eq!(gen("é.txt", &taken), "_~1     TXT");
        taken.insert(*b"LOADER     ");
        assert_eq!(gen("loader", &taken), "LOADER~1   ");
        for n in 1..=9 {
            taken.insert(pack(format!("FILE-0~{n}").as_bytes(), b"EFI"));
        }
        assert_eq!(gen("file-0001.efi", &taken), "FILE-~10EFI");
    }

    #[test]
    fn long_name_checks() {
        assert!(check_long_name("berth-a+3.conf").is_ok());
        assert!(check_long_name("ünïcødé name").is_ok());
        for bad in ["", ".", "..", "a:b", "a*", "trailing.", "space ", "tab\t"] {
            assert!(check_long_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_long_name(&"x".repeat(255)).is_ok());
        let err = check_long_name(&"x".repeat(256)).unwrap_err();
        assert!(err.contains("256 UTF-16 units"), "{err}");
    }

    #[test]
    fn lfn_checksum_matches_mtools() {
        // `mcopy berth-a+3.conf` (mtools 4.0) writes short name `BERTH-~1CON` with LFN
        // checksum 0xEA, the same short name this module generates.
        assert_eq!(lfn_checksum(b"BERTH-~1CON"), 0xEA);
    }

    #[test]
    fn lfn_checksum_matches_reference() {
        // The fatgen103 ChkSum loop, written out as the spec does.
        fn reference(name: &[u8; 11]) -> u8 {
            let mut sum: u8 = 0;
            for &b in name {
                sum = (if sum & 1 != 0 { 0x80u8 } else { 0 })
                    .wrapping_add(sum >> 1)
                    .wrapping_add(b);
            }
            sum
        }
        for n in [
            b"LOADER~1CON",
            b"BERTH-~1CON",
            b"           ",
            b"BOOTX64 EFI",
        ] {
            assert_eq!(lfn_checksum(n), reference(n));
        }
    }

    #[test]
    fn lfn_slots_round_trip() {
        let short = *b"BERTH-~1CON";
        let name = "berth-a+3.conf"; // 14 units: two slots
        let slots = lfn_slots(name, &short);
        assert_eq!(slots.len(), 2);
        assert_eq!(slots[0][0], 0x42);
        assert_eq!(slots[1][0], 0x01);
        assert!(slots
            .iter()
            .all(|e| e[11] == ATTR_LONG_NAME && e[13] == lfn_checksum(&short)));
        // Unit 14 (index 1 in slot 2) is the NUL, then 0xFFFF padding.
        assert_eq!(&slots[0][1..5], &[b'f', 0, 0, 0]);
        assert_eq!(&slots[0][5..7], &[0xFF, 0xFF]);
        let mut asm = LfnAssembler::default();
        slots.iter().for_each(|e| asm.push_slot(e));
        assert_eq!(asm.finish(&short).as_deref(), Some(name));
        // A wrong checksum drops the long name.
        slots.iter().for_each(|e| asm.push_slot(e));
        assert_eq!(asm.finish(b"BERTH-~2CON"), None);
        // Exactly 13 units: one slot, no terminator, no padding.
        let slots = lfn_slots("abcdefghijklm", &short);
        assert_eq!(slots.len(), 1);
        assert_eq!(&slots[0][30..32], &[b'm', 0]);
        assert_eq!(slot_count("abcdefghijklm"), 1);
        assert_eq!(slot_count("EFI"), 0);
    }
}
