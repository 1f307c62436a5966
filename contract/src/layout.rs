//! berth's disk layout (DESIGN.md "Disk layout"): the pure plan of where each partition goes.

use alloc::format;
use alloc::vec::Vec;

use crate::dps::{
    ATTR_NO_AUTO, ATTR_READ_ONLY, ESP_TYPE, ROOT_VERITY_X86_64_TYPE, ROOT_X86_64_TYPE, VAR_TYPE,
};
use crate::units::{Bytes, MIB, SECTOR};
use crate::{Error, Guid, Result, Slot};

/// Where partitions start: 1 MiB keeps every partition aligned for 4 KiB-sector and
/// SSD/erase-block backing stores, and is what sgdisk/parted/systemd-repart use.
pub const ALIGN: u64 = MIB;

/// Partition names in entry order.
pub const PARTITION_NAMES: [&str; 6] = [
    "esp",
    "root-a",
    "root-a-verity",
    "root-b",
    "root-b-verity",
    "state",
];

/// Type GUIDs in entry order.
pub const PARTITION_TYPES: [Guid; 6] = [
    ESP_TYPE,
    ROOT_X86_64_TYPE,
    ROOT_VERITY_X86_64_TYPE,
    ROOT_X86_64_TYPE,
    ROOT_VERITY_X86_64_TYPE,
    VAR_TYPE,
];

/// 1-based GPT entry numbers (`/dev/vda2` is 2) of the fixed partitions.
pub const ESP_INDEX: u32 = 1;
pub const STATE_INDEX: u32 = 6;

/// 1-based GPT entry number of a slot's root partition; its verity partition is the next one.
pub fn root_index(slot: Slot) -> u32 {
    match slot {
        Slot::A => 2,
        Slot::B => 4,
    }
}

/// 1-based GPT entry number of a slot's verity partition.
pub fn verity_index(slot: Slot) -> u32 {
    root_index(slot) + 1
}

/// The attributes berth gives a slot's root and verity partitions when `active` boots.
pub fn slot_attributes(slot: Slot, active: Slot) -> u64 {
    ATTR_READ_ONLY | if slot == active { 0 } else { ATTR_NO_AUTO }
}

/// What the disk should hold. Sizes are the minimum each partition must hold; see [`plan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSpec {
    pub esp: Bytes,
    /// Size of each root partition (both slots are the same size, so either can take an update).
    pub root_slot: Bytes,
    /// Size of each verity partition.
    pub verity_slot: Bytes,
    /// Initial size of the state partition; berth-init grows it to the end of the disk.
    pub state: Bytes,
    pub disk_guid: Guid,
    /// Unique partition GUIDs in partition order: esp, root-a, root-a-verity, root-b,
    /// root-b-verity, state. For the slot written at build time, pass the pair
    /// [`roothash_partuuids`] derives from its root hash; the others should be derived from
    /// build inputs so the image stays reproducible.
    pub part_guids: [Guid; 6],
    /// The slot that boots; the other gets [`ATTR_NO_AUTO`].
    pub active: Slot,
}

/// One partition of a planned (or read) disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionPlan {
    /// 1-based GPT entry number (`/dev/vda2` is index 2).
    pub index: u32,
    /// GPT partition name (stored UTF-16LE): one of [`PARTITION_NAMES`].
    pub name: &'static str,
    pub type_guid: Guid,
    pub guid: Guid,
    pub first_lba: u64,
    /// Inclusive, as GPT stores it.
    pub last_lba: u64,
    pub attributes: u64,
}

impl PartitionPlan {
    /// Byte offset of the partition on the disk: where its contents go.
    pub fn offset(&self) -> Bytes {
        Bytes(self.first_lba * SECTOR)
    }

    pub fn size(&self) -> Bytes {
        Bytes((self.last_lba - self.first_lba + 1) * SECTOR)
    }
}

/// A complete berth disk layout. Only [`plan`] and [`DiskLayout::from_table`] make one, so it
/// always has the six berth partitions in order, inside the disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskLayout {
    pub(crate) disk_size: Bytes,
    pub(crate) disk_guid: Guid,
    pub(crate) active: Slot,
    pub(crate) partitions: Vec<PartitionPlan>,
}

impl DiskLayout {
    /// The disk's size as the GPT describes it (the backup header is its last sector).
    pub fn disk_size(&self) -> Bytes {
        self.disk_size
    }

    pub fn disk_guid(&self) -> Guid {
        self.disk_guid
    }

    /// The slot without the no-auto attribute.
    pub fn active(&self) -> Slot {
        self.active
    }

    /// All six partitions in entry order.
    pub fn partitions(&self) -> &[PartitionPlan] {
        &self.partitions
    }

    /// The partition with that GPT name, e.g. `"root-b"`.
    pub fn partition(&self, name: &str) -> Option<&PartitionPlan> {
        self.partitions.iter().find(|p| p.name == name)
    }

    pub fn esp(&self) -> &PartitionPlan {
        &self.partitions[(ESP_INDEX - 1) as usize]
    }

    pub fn root(&self, slot: Slot) -> &PartitionPlan {
        &self.partitions[(root_index(slot) - 1) as usize]
    }

    pub fn verity(&self, slot: Slot) -> &PartitionPlan {
        &self.partitions[(verity_index(slot) - 1) as usize]
    }

    pub fn state(&self) -> &PartitionPlan {
        &self.partitions[(STATE_INDEX - 1) as usize]
    }

    /// Last LBA of the disk, where the backup header lives.
    pub fn last_lba(&self) -> u64 {
        self.disk_size.get() / SECTOR - 1
    }
}

/// The attributes berth gives entry `index` (1-based) when `active` boots.
fn attributes_for(index: u32, active: Slot) -> u64 {
    Slot::ALL
        .into_iter()
        .find(|&s| index == root_index(s) || index == verity_index(s))
        .map_or(0, |s| slot_attributes(s, active))
}

/// Plans the disk: where each partition goes and what the GPT says about it.
///
/// ```text
///  LBA 0        protective MBR (one 0xEE partition covering the disk)
///  LBA 1        primary GPT header
///  LBA 2..=33   primary entry array (128 entries x 128 bytes)
///  ...          unused up to 1 MiB
///  1 MiB      +--------------------+
///             | 1 esp              |  >= spec.esp
///             +--------------------+  every start is 1 MiB aligned
///             | 2 root-a           |  >= spec.root_slot    read-only, no-auto unless A is active
///             | 3 root-a-verity    |  >= spec.verity_slot  read-only, no-auto unless A is active
///             | 4 root-b           |  same size as root-a  read-only, no-auto unless B is active
///             | 5 root-b-verity    |  same as root-a-verity
///             | 6 state            |  >= spec.state (grown to the disk's end on first boot)
///             +--------------------+  end of state, 1 MiB aligned
///             | 1 MiB tail: unused |
///             |  backup entries    |  last LBA - 32 ..= last LBA - 1
///             |  backup header     |  last LBA
///             +--------------------+  disk_size = end of state + 1 MiB
/// ```
///
/// Each size must be a non-zero whole number of sectors; a partition's size is then rounded up
/// to a whole MiB, so the next one starts aligned and no gaps appear between partitions (a
/// caller can size the verity partition from the hash tree's exact size). The output depends
/// only on `spec`.
pub fn plan(spec: &DiskSpec) -> Result<DiskLayout> {
    for (what, size) in [
        ("esp", spec.esp),
        ("root slot", spec.root_slot),
        ("verity slot", spec.verity_slot),
        ("state", spec.state),
    ] {
        if size.get() == 0 {
            return Err(Error::Invalid(format!(
                "the {what} partition size is zero: give it at least 1 MiB"
            )));
        }
        if size.get() % SECTOR != 0 {
            return Err(Error::Invalid(format!(
                "the {what} partition size {size} ({} bytes) is not a whole number of {SECTOR}-byte sectors",
                size.get()
            )));
        }
    }
    if spec.disk_guid.is_nil() {
        return Err(Error::Invalid(
            "the disk GUID is the nil GUID: derive one from the build inputs".into(),
        ));
    }
    let mut seen: Vec<Guid> = alloc::vec![spec.disk_guid];
    for (name, g) in PARTITION_NAMES.iter().zip(&spec.part_guids) {
        if g.is_nil() {
            return Err(Error::Invalid(format!(
                "partition {name}: its GUID is the nil GUID, which GPT reserves for unused entries"
            )));
        }
        if seen.contains(g) {
            return Err(Error::Invalid(format!(
                "partition {name}: GUID {g} is used twice on the disk; PARTUUID= lookups need unique GUIDs"
            )));
        }
        seen.push(*g);
    }

    let sizes = [
        spec.esp,
        spec.root_slot,
        spec.verity_slot,
        spec.root_slot,
        spec.verity_slot,
        spec.state,
    ];
    let too_big =
        || Error::Invalid("the partition sizes add up to more than a disk can address".into());
    let mut start = ALIGN;
    let mut partitions = Vec::with_capacity(6);
    for (i, size) in sizes.into_iter().enumerate() {
        let len = size
            .get()
            .checked_next_multiple_of(ALIGN)
            .ok_or_else(too_big)?;
        let end = start.checked_add(len).ok_or_else(too_big)?;
        let index = i as u32 + 1;
        partitions.push(PartitionPlan {
            index,
            name: PARTITION_NAMES[i],
            type_guid: PARTITION_TYPES[i],
            guid: spec.part_guids[i],
            first_lba: start / SECTOR,
            last_lba: end / SECTOR - 1,
            attributes: attributes_for(index, spec.active),
        });
        start = end;
    }
    let disk_size = start.checked_add(ALIGN).ok_or_else(too_big)?;
    Ok(DiskLayout {
        disk_size: Bytes(disk_size),
        disk_guid: spec.disk_guid,
        active: spec.active,
        partitions,
    })
}

/// The partition UUIDs DPS pairs with a verity root hash: the root partition's is the first 128
/// bits of the hash, the verity partition's the last 128 bits, as `(root, verity)`.
///
/// The bytes are taken verbatim in text order (the hash's first byte is the UUID's first two hex
/// digits), with no RFC 4122 version/variant bits forced in: systemd's image dissection
/// (`dissect_image`) copies the hash bytes into an `sd_id128_t` and compares it with the
/// partition UUID as it prints, so any bit set here would break the match. For a SHA-256 root
/// hash they can only collide or be nil with negligible probability; [`plan`] still refuses
/// both.
pub fn roothash_partuuids(roothash: &[u8; 32]) -> (Guid, Guid) {
    let mut root = [0u8; 16];
    let mut verity = [0u8; 16];
    root.copy_from_slice(&roothash[..16]);
    verity.copy_from_slice(&roothash[16..]);
    (Guid::from_bytes(root), Guid::from_bytes(verity))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    fn guid(n: u8) -> Guid {
        Guid::from_bytes([n; 16])
    }

    pub(crate) fn spec() -> DiskSpec {
        DiskSpec {
            esp: Bytes::mib(256),
            root_slot: Bytes::mib(1024),
            verity_slot: Bytes::mib(16),
            state: Bytes::mib(256),
            disk_guid: guid(0xd0),
            part_guids: [guid(1), guid(2), guid(3), guid(4), guid(5), guid(6)],
            active: Slot::A,
        }
    }

    #[test]
    fn partitions_in_order_aligned_and_contiguous() {
        let l = plan(&spec()).unwrap();
        let names: Vec<_> = l.partitions().iter().map(|p| p.name).collect();
        assert_eq!(names, PARTITION_NAMES);
        assert_eq!(
            l.partitions().iter().map(|p| p.index).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 6]
        );
        assert_eq!(l.esp().first_lba, 2048);
        for p in l.partitions() {
            assert_eq!(p.offset().get() % ALIGN, 0, "{} start", p.name);
            assert_eq!(p.size().get() % ALIGN, 0, "{} size", p.name);
        }
        for w in l.partitions().windows(2) {
            assert_eq!(
                w[0].last_lba + 1,
                w[1].first_lba,
                "{} -> {}",
                w[0].name,
                w[1].name
            );
        }
        let types: Vec<_> = l.partitions().iter().map(|p| p.type_guid).collect();
        assert_eq!(types, PARTITION_TYPES);
        assert_eq!(
            l.partitions().iter().map(|p| p.guid).collect::<Vec<_>>(),
            spec().part_guids
        );
        assert_eq!(l.disk_guid(), guid(0xd0));
        assert_eq!(l.root(Slot::B).index, root_index(Slot::B));
        assert_eq!(l.verity(Slot::A).index, verity_index(Slot::A));
        assert_eq!(l.state().index, STATE_INDEX);
    }

    #[test]
    fn sizes_and_disk_size() {
        let l = plan(&spec()).unwrap();
        assert_eq!(l.esp().size(), Bytes::mib(256));
        assert_eq!(l.root(Slot::A).size(), Bytes::mib(1024));
        assert_eq!(l.root(Slot::B).size(), l.root(Slot::A).size());
        assert_eq!(l.verity(Slot::A).size(), Bytes::mib(16));
        assert_eq!(l.verity(Slot::B).size(), l.verity(Slot::A).size());
        assert_eq!(l.state().size(), Bytes::mib(256));
        // 1 MiB lead-in + partitions + 1 MiB tail.
        assert_eq!(
            l.disk_size(),
            Bytes::mib(1 + 256 + 2 * (1024 + 16) + 256 + 1)
        );
        assert_eq!(
            (l.state().last_lba + 1) * SECTOR + ALIGN,
            l.disk_size().get()
        );
        assert_eq!(l.last_lba(), l.disk_size().get() / SECTOR - 1);
        assert_eq!(l.partition("root-b-verity"), Some(l.verity(Slot::B)));
        assert_eq!(l.partition("root-c"), None);
    }

    #[test]
    fn unaligned_sizes_round_up_to_whole_mib() {
        // A verity tree is sized by the data; 8 MiB + 4 KiB must still leave the next start aligned.
        let s = DiskSpec {
            verity_slot: Bytes(8 * MIB + 4096),
            ..spec()
        };
        let l = plan(&s).unwrap();
        assert_eq!(l.verity(Slot::A).size(), Bytes::mib(9));
        assert_eq!(l.verity(Slot::B).size(), Bytes::mib(9));
        assert_eq!(l.root(Slot::B).offset().get() % ALIGN, 0);
    }

    #[test]
    fn attributes_follow_the_active_slot() {
        let a = plan(&spec()).unwrap();
        assert_eq!(a.esp().attributes, 0);
        assert_eq!(a.state().attributes, 0);
        assert_eq!(a.root(Slot::A).attributes, ATTR_READ_ONLY);
        assert_eq!(a.verity(Slot::A).attributes, ATTR_READ_ONLY);
        assert_eq!(a.root(Slot::B).attributes, ATTR_READ_ONLY | ATTR_NO_AUTO);
        assert_eq!(a.verity(Slot::B).attributes, ATTR_READ_ONLY | ATTR_NO_AUTO);
        assert_eq!(a.active(), Slot::A);

        let b = plan(&DiskSpec {
            active: Slot::B,
            ..spec()
        })
        .unwrap();
        assert_eq!(b.active(), Slot::B);
        assert_eq!(b.root(Slot::A).attributes, ATTR_READ_ONLY | ATTR_NO_AUTO);
        assert_eq!(b.verity(Slot::A).attributes, ATTR_READ_ONLY | ATTR_NO_AUTO);
        assert_eq!(b.root(Slot::B).attributes, ATTR_READ_ONLY);
        assert_eq!(b.verity(Slot::B).attributes, ATTR_READ_ONLY);
        // Only the attributes differ.
        for (pa, pb) in a.partitions().iter().zip(b.partitions()) {
            assert_eq!(
                (pa.first_lba, pa.last_lba, pa.guid),
                (pb.first_lba, pb.last_lba, pb.guid)
            );
        }
    }

    #[test]
    fn rejects_zero_and_partial_sector_sizes() {
        let err = |s: DiskSpec| plan(&s).unwrap_err().to_string();
        let e = err(DiskSpec {
            esp: Bytes(0),
            ..spec()
        });
        assert!(e.contains("esp") && e.contains("zero"), "{e}");
        let e = err(DiskSpec {
            state: Bytes(0),
            ..spec()
        });
        assert!(e.contains("state") && e.contains("zero"), "{e}");
        let e = err(DiskSpec {
            root_slot: Bytes(MIB + 1),
            ..spec()
        });
        assert!(e.contains("root slot") && e.contains("sectors"), "{e}");
        let e = err(DiskSpec {
            verity_slot: Bytes(1000),
            ..spec()
        });
        assert!(e.contains("verity slot") && e.contains("1000 bytes"), "{e}");
        let e = err(DiskSpec {
            root_slot: Bytes(u64::MAX / 2 - 511),
            ..spec()
        });
        assert!(e.contains("more than a disk"), "{e}");
    }

    #[test]
    fn rejects_nil_and_duplicate_guids() {
        let mut s = spec();
        s.part_guids[3] = Guid::NIL;
        let e = plan(&s).unwrap_err().to_string();
        assert!(e.contains("root-b") && e.contains("nil"), "{e}");
        let mut s = spec();
        s.part_guids[4] = s.part_guids[2];
        let e = plan(&s).unwrap_err().to_string();
        assert!(e.contains("root-b-verity") && e.contains("twice"), "{e}");
        let e = plan(&DiskSpec {
            disk_guid: Guid::NIL,
            ..spec()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("disk GUID"), "{e}");
    }

    #[test]
    fn roothash_halves_become_partuuids_verbatim() {
        let h: [u8; 32] = core::array::from_fn(|i| i as u8);
        let (root, verity) = roothash_partuuids(&h);
        assert_eq!(root.to_string(), "00010203-0405-0607-0809-0a0b0c0d0e0f");
        assert_eq!(verity.to_string(), "10111213-1415-1617-1819-1a1b1c1d1e1f");
    }
}
