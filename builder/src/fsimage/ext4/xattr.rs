//! Extended attributes: in the spare 96 bytes of a 256-byte inode when they fit, otherwise in
//! one external block (shared between inodes with identical attributes).
//!
//! Both places hold a list of `ext4_xattr_entry` (name index, name suffix, value offset/size,
//! hash) ended by 4 zero bytes, with the values packed down from the end. POSIX ACLs are given
//! in the VFS format (`system.posix_acl_access`, version 2) and stored in ext4's own compact
//! format, as the kernel does.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

use super::csum;
use super::layout::BLOCK_SIZE;

pub const MAGIC: u32 = 0xEA02_0000;
/// Offset of the in-inode attribute area (128 + i_extra_isize 32).
pub const IBODY_OFFSET: usize = 160;
/// Bytes from [`IBODY_OFFSET`] to the end of the inode.
pub const IBODY_SIZE: usize = 256 - IBODY_OFFSET;
const BLOCK_HEADER: usize = 32;
const BS: usize = BLOCK_SIZE as usize;

/// One attribute in on-disk form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Attr {
    pub index: u8,
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

/// Where an inode's attributes go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Placement {
    /// The in-inode area (exactly [`IBODY_SIZE`] bytes) if the attributes fit there.
    pub ibody: Option<Vec<u8>>,
    /// The attributes for an external block otherwise.
    pub block: Option<Vec<Attr>>,
}

/// Name prefixes and their indexes; whole names first, then the longest prefixes.
const PREFIXES: &[(&str, u8, bool)] = &[
    ("system.posix_acl_access", 2, true),
    ("system.posix_acl_default", 3, true),
    ("system.richacl", 8, true),
    ("user.", 1, false),
    ("trusted.", 4, false),
    ("security.", 6, false),
    ("system.", 7, false),
];

fn pad4(n: usize) -> usize {
    n.next_multiple_of(4)
}

fn entry_size(a: &Attr) -> usize {
    pad4(16 + a.name.len())
}

/// Splits a full attribute name into its on-disk index and suffix.
fn split_name(full: &str) -> Result<(u8, &[u8])> {
    for &(prefix, index, whole) in PREFIXES {
        if whole && full == prefix {
            return Ok((index, b""));
        }
        if !whole && full.len() > prefix.len() && full.starts_with(prefix) {
            return Ok((index, &full.as_bytes()[prefix.len()..]));
        }
    }
    bail!("unsupported attribute namespace (ext4 stores user., trusted., security., system. and POSIX ACLs)")
}

/// Converts a VFS POSIX ACL (`posix_acl_xattr_header` version 2, 8-byte entries) into ext4's
/// disk format (version 1; 4-byte entries except named users and groups).
fn acl_to_disk(v: &[u8]) -> Result<Vec<u8>> {
    if v.len() < 4 || !(v.len() - 4).is_multiple_of(8) || v[..4] != 2u32.to_le_bytes() {
        bail!("not a version 2 POSIX ACL ({} bytes)", v.len());
    }
    let mut out = 1u32.to_le_bytes().to_vec();
    for e in v[4..].chunks_exact(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        out.extend_from_slice(&e[..4]);
        match tag {
            0x02 | 0x08 => out.extend_from_slice(&e[4..8]),
            0x01 | 0x04 | 0x10 | 0x20 => {}
            t => bail!("unknown POSIX ACL tag {t:#x}"),
        }
    }
    Ok(out)
}

/// Turns a manifest entry's attributes into on-disk attributes in the order the kernel keeps
/// them (index, name length, name).
pub fn to_disk(xattrs: &BTreeMap<String, Vec<u8>>) -> Result<Vec<Attr>> {
    let mut out = Vec::with_capacity(xattrs.len());
    for (full, value) in xattrs {
        let (index, name) =
            split_name(full).with_context(|| format!("extended attribute {full:?}"))?;
        if name.len() > 255 {
            bail!("extended attribute {full:?}: name longer than 255 bytes");
        }
        let value = if index == 2 || index == 3 {
            acl_to_disk(value).with_context(|| format!("extended attribute {full:?}"))?
        } else {
            value.clone()
        };
        out.push(Attr {
            index,
            name: name.to_vec(),
            value,
        });
    }
    out.sort_by(|a, b| (a.index, a.name.len(), &a.name).cmp(&(b.index, b.name.len(), &b.name)));
    Ok(out)
}

/// Chooses in-inode or block storage; errors if even a block cannot hold them.
pub fn place(attrs: Vec<Attr>) -> Result<Placement> {
    if attrs.is_empty() {
        return Ok(Placement::default());
    }
    let need: usize = attrs
        .iter()
        .map(|a| entry_size(a) + pad4(a.value.len()))
        .sum::<usize>()
        + 4;
    if 4 + need <= IBODY_SIZE {
        let mut area = vec![0u8; IBODY_SIZE];
        area[..4].copy_from_slice(&MAGIC.to_le_bytes());
        // Offsets in the inode are relative to the first entry, just after the magic.
        write_entries(&mut area[4..], &attrs, 0, false);
        return Ok(Placement {
            ibody: Some(area),
            block: None,
        });
    }
    if BLOCK_HEADER + need > BS {
        bail!(
            "extended attributes need {} bytes; at most {} fit in one 4 KiB block",
            need,
            BS - BLOCK_HEADER
        );
    }
    Ok(Placement {
        ibody: None,
        block: Some(attrs),
    })
}

/// Writes entries from the start of `area` and values down from its end; `base` is added to
/// value offsets (the block header size for blocks). With `hash`, entries get their hashes.
fn write_entries(area: &mut [u8], attrs: &[Attr], base: usize, hash: bool) {
    let mut off = base;
    let mut vend = area.len();
    for a in attrs {
        let vstart = vend - pad4(a.value.len());
        area[vstart..vstart + a.value.len()].copy_from_slice(&a.value);
        let e = &mut area[off..off + entry_size(a)];
        e[0] = a.name.len() as u8;
        e[1] = a.index;
        let voff = if a.value.is_empty() { 0 } else { vstart };
        e[2..4].copy_from_slice(&(voff as u16).to_le_bytes());
        e[8..12].copy_from_slice(&(a.value.len() as u32).to_le_bytes());
        if hash {
            let h = entry_hash(&a.name, &area[vstart..vstart + pad4(a.value.len())]);
            area[off + 12..off + 16].copy_from_slice(&h.to_le_bytes());
        }
        area[off + 16..off + 16 + a.name.len()].copy_from_slice(&a.name);
        off += entry_size(a);
        if !a.value.is_empty() {
            vend = vstart;
        }
    }
}

/// `ext4_xattr_hash_entry`: the name bytes, then the zero-padded value as little-endian words.
fn entry_hash(name: &[u8], padded_value: &[u8]) -> u32 {
    let mut h = 0u32;
    for &c in name {
        h = (h << 5) ^ (h >> 27) ^ u32::from(c);
    }
    for w in padded_value.chunks_exact(4) {
        h = (h << 16) ^ (h >> 16) ^ u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
    }
    h
}

/// Encodes an attribute block at disk block `blocknr` referenced by `refcount` inodes.
pub fn encode_block(attrs: &[Attr], blocknr: u64, refcount: u32, fs_seed: u32) -> Vec<u8> {
    let mut b = vec![0u8; BS];
    write_entries(&mut b, attrs, BLOCK_HEADER, true);
    // Block hash: rotate-and-xor of the entry hashes (`ext4_xattr_rehash`).
    let mut h = 0u32;
    let mut off = BLOCK_HEADER;
    for a in attrs {
        let eh = u32::from_le_bytes(b[off + 12..off + 16].try_into().unwrap_or_default());
        h = (h << 16) ^ (h >> 16) ^ eh;
        off += entry_size(a);
    }
    b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    b[4..8].copy_from_slice(&refcount.to_le_bytes());
    b[8..12].copy_from_slice(&1u32.to_le_bytes());
    b[12..16].copy_from_slice(&h.to_le_bytes());
    let c = csum::raw(csum::raw(fs_seed, &blocknr.to_le_bytes()), &b);
    b[16..20].copy_from_slice(&c.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect()
    }

    #[test]
    fn names_map_to_indexes_and_sort_like_the_kernel() {
        let a = to_disk(&attrs(&[
            ("user.zz", b"1"),
            ("security.capability", b"c"),
            ("user.a", b"2"),
        ]))
        .unwrap();
        let got: Vec<(u8, &[u8])> = a.iter().map(|a| (a.index, &a.name[..])).collect();
        assert_eq!(got, [(1, &b"a"[..]), (1, b"zz"), (6, b"capability")]);
        assert!(to_disk(&attrs(&[("bogus.x", b"")])).is_err());
        assert!(to_disk(&attrs(&[("user.", b"")])).is_err());
    }

    #[test]
    fn small_attributes_go_in_the_inode() {
        let p = place(to_disk(&attrs(&[("user.k", b"hello")])).unwrap()).unwrap();
        let area = p.ibody.unwrap();
        assert_eq!(&area[..4], &MAGIC.to_le_bytes());
        // Entry at 4: name_len 1, index 1, value at the end of the area (offset from entry 0).
        assert_eq!((area[4], area[5]), (1, 1));
        let voff = u16::from_le_bytes([area[6], area[7]]) as usize;
        assert_eq!(voff, IBODY_SIZE - 4 - 8);
        assert_eq!(&area[4 + voff..4 + voff + 5], b"hello");
        assert_eq!(&area[4 + 20..4 + 24], &[0, 0, 0, 0]); // end of entries
    }

    #[test]
    fn big_attributes_go_to_a_block_with_hashes() {
        let p = place(to_disk(&attrs(&[("user.big", &[7u8; 200])])).unwrap()).unwrap();
        let a = p.block.unwrap();
        let b = encode_block(&a, 1234, 1, 99);
        let voff = u16::from_le_bytes([b[34], b[35]]) as usize;
        assert_eq!(voff, 4096 - 200);
        let eh = u32::from_le_bytes(b[44..48].try_into().unwrap());
        assert_eq!(eh, entry_hash(b"big", &[7u8; 200]));
        assert_eq!(u32::from_le_bytes(b[12..16].try_into().unwrap()), eh);
        assert!(place(to_disk(&attrs(&[("user.huge", &[0u8; 5000])])).unwrap()).is_err());
    }

    #[test]
    fn acl_is_converted_to_ext4_format() {
        let mut v = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (1u16, 7u16, 0u32),
            (2, 5, 1000),
            (4, 5, 0),
            (0x10, 5, 0),
            (0x20, 4, 0),
        ] {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        let d = acl_to_disk(&v).unwrap();
        assert_eq!(d.len(), 4 + 4 + 8 + 4 + 4 + 4);
        assert_eq!(&d[8..16], &[2, 0, 5, 0, 0xe8, 3, 0, 0]);
    }
}
