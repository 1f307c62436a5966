//! Content-derived identifiers and file digests: every UUID, seed and salt in an image comes
//! from here, so the same inputs give the same bytes.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// Derives 16 bytes from a label and a digest (UUIDs, seeds): content-addressed, never random.
pub fn derive16(label: &str, digest: &[u8]) -> [u8; 16] {
    let h = Sha256::new()
        .chain_update(label.as_bytes())
        .chain_update(digest)
        .finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&h[..16]);
    // Mark as an RFC 4122 version-4-shaped UUID so tools print it normally.
    out[6] = (out[6] & 0x0f) | 0x40;
    out[8] = (out[8] & 0x3f) | 0x80;
    out
}

/// SHA-256 of a file, as lower-case hex.
pub fn sha256_file(p: &Path) -> Result<String> {
    // Holes are hashed as zeros without reading them (util::sparse): disk images are mostly holes.
    let mut h = Sha256::new();
    crate::util::sparse::for_each_chunk(p, &mut |c| h.update(c))?;
    Ok(hex::encode(h.finalize()))
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` of 16 bytes in text order.
pub fn uuid_string(u: &[u8; 16]) -> String {
    let h = hex::encode(u);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Hashes a host tree as the overlay reader sees it: sorted names, the execute bit (the only
/// mode bit an overlay keeps), file contents and symlink targets. An unreadable entry is an
/// error, as it is for the build.
pub fn hash_tree(h: &mut Sha256, dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut entries = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let m = fs::symlink_metadata(&p).with_context(|| format!("reading {}", p.display()))?;
        let name = e.file_name();
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_encoded_bytes());
        h.update([u8::from(m.permissions().mode() & 0o111 != 0)]);
        if m.is_dir() {
            h.update(b"d");
            hash_tree(h, &p)?;
            h.update(b"..");
        } else if m.file_type().is_symlink() {
            let t = fs::read_link(&p).with_context(|| format!("reading {}", p.display()))?;
            h.update(b"l");
            h.update(t.as_os_str().as_encoded_bytes());
        } else {
            let data = fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
            h.update(b"f");
            h.update((data.len() as u64).to_le_bytes());
            h.update(data);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_rfc4122_shaped_and_label_dependent() {
        let a = derive16("disk", b"img");
        assert_eq!(a, derive16("disk", b"img"));
        assert_ne!(a, derive16("esp", b"img"));
        assert_eq!(a[6] >> 4, 4, "version 4 nibble");
        assert_eq!(a[8] >> 6, 0b10, "RFC 4122 variant");
        assert_eq!(
            uuid_string(&std::array::from_fn(|i| i as u8)),
            "00010203-0405-0607-0809-0a0b0c0d0e0f"
        );
    }

    #[test]
    fn file_digest_is_sha256() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), b"abc").unwrap();
        assert_eq!(
            sha256_file(f.path()).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
