//! Partition types and attribute bits of the Discoverable Partitions Specification (DPS,
//! x86-64) and the UEFI spec, as berth uses them.

use crate::Guid;

/// EFI System Partition (UEFI spec).
pub const ESP_TYPE: Guid = Guid::from_str_const("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
/// DPS "Root Partition (x86-64)".
pub const ROOT_X86_64_TYPE: Guid = Guid::from_str_const("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709");
/// DPS "Root Verity Partition (x86-64)".
pub const ROOT_VERITY_X86_64_TYPE: Guid =
    Guid::from_str_const("2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5");
/// DPS "Variable Data Partition" (`/var`).
pub const VAR_TYPE: Guid = Guid::from_str_const("4D21B016-B534-45C2-A9FB-5C16E091FD2D");

/// DPS bit 60: mount read-only. Set on root and verity partitions (DPS recommends it
/// unconditionally for verity partitions).
pub const ATTR_READ_ONLY: u64 = 1 << 60;
/// DPS bit 63: no auto-discovery. Set on the inactive slot, so a DPS-following OS (or
/// `systemd-dissect`) picks the active slot's root.
pub const ATTR_NO_AUTO: u64 = 1 << 63;
/// UEFI bit 0, "required partition". Not set by berth: the UEFI spec means it for partitions
/// whose removal breaks the platform (OEM/recovery), DPS does not use it, systemd-repart and
/// mkosi do not set it on the ESP, and firmware finds the ESP by its type GUID alone.
pub const ATTR_REQUIRED: u64 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_bits_are_the_specs() {
        // The DPS table gives the masks in hex; compare with its literals, not with a shift.
        assert_eq!(ATTR_READ_ONLY, 0x1000_0000_0000_0000);
        assert_eq!(ATTR_NO_AUTO, 0x8000_0000_0000_0000);
        assert_eq!(ATTR_REQUIRED, 0x0000_0000_0000_0001);
        // And the type GUIDs' first bytes as `sfdisk --list-types` prints them.
        assert_eq!(ESP_TYPE.as_bytes()[..4], [0xc1, 0x2a, 0x73, 0x28]);
        assert_eq!(ROOT_X86_64_TYPE.as_bytes()[..4], [0x4f, 0x68, 0xbc, 0xe3]);
        assert_eq!(
            ROOT_VERITY_X86_64_TYPE.as_bytes()[..4],
            [0x2c, 0x73, 0x57, 0xed]
        );
        assert_eq!(VAR_TYPE.as_bytes()[..4], [0x4d, 0x21, 0xb0, 0x16]);
    }
}
