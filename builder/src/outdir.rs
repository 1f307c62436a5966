//! The output directory's contract: the file names a build writes, the default directory, and
//! the SHA-256 sums (hashing, several files at once, and `SHA256SUMS` in the format
//! `sha256sum -c` checks). Low in the module graph: every stage names its files from here.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::formats::Format;
use crate::profile::Profile;
use crate::util::digest::sha256_file;

pub const DISK: &str = "disk.raw";
pub const ROOT_IMAGE: &str = "root.ext4";
pub const ROOT_VERITY: &str = "root.verity";
pub const VMLINUZ: &str = "vmlinuz";
pub const INITRD: &str = "initrd";
pub const MANIFEST: &str = "manifest.json";
pub const SHA256SUMS: &str = "SHA256SUMS";
/// The update bundle (`berth_contract::bundle`): what `berthctl update apply` takes.
pub const UPDATE_BUNDLE: &str = "update.bundle";
/// With `--delta-from`: the bundle holding only what changed since that build.
pub const DELTA_BUNDLE: &str = "update-delta.bundle";
/// Seconds per stage and output sizes (`berth build`); not in SHA256SUMS, as timings vary.
pub const BUILD_METRICS: &str = "build-metrics.json";
/// The files every build writes, in the order they are listed.
pub const FIXED: &[&str] = &[
    DISK,
    ROOT_IMAGE,
    ROOT_VERITY,
    VMLINUZ,
    INITRD,
    UPDATE_BUNDLE,
    MANIFEST,
];

/// The default output directory: `out/<image name>/` in the current directory.
pub fn default_out(profile: &Profile) -> PathBuf {
    PathBuf::from("out").join(&profile.image.name)
}

/// Every file a build with these formats writes: the fixed artifacts, the derived formats, and
/// SHA256SUMS last.
pub fn output_names(formats: &[Format], delta: bool) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = FIXED.to_vec();
    if delta {
        v.push(DELTA_BUNDLE);
    }
    v.extend(formats.iter().map(|f| f.file_name()));
    v.push(SHA256SUMS);
    v
}

/// A file's name (relative to the output directory), size and SHA-256 (hex).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

impl FileSum {
    /// Hashes `dir/name`.
    pub fn of(dir: &Path, name: &str) -> Result<FileSum> {
        let p = dir.join(name);
        let size = fs::metadata(&p)
            .with_context(|| format!("reading {}", p.display()))?
            .len();
        Ok(FileSum {
            name: name.to_string(),
            size,
            sha256: sha256_file(&p)?,
        })
    }

    /// The sum of bytes already in memory (vmlinuz, initrd), without reading them back.
    pub fn of_bytes(name: &str, data: &[u8]) -> FileSum {
        FileSum {
            name: name.to_string(),
            size: data.len() as u64,
            sha256: hex::encode(Sha256::digest(data)),
        }
    }
}

/// Hashes `names` in `dir`, several at once (disk.raw is most of the bytes; the others are
/// hashed on the other workers meanwhile). Results are in the order of `names`.
pub fn hash_all(dir: &Path, names: &[&str]) -> Result<Vec<FileSum>> {
    let next = AtomicUsize::new(0);
    let workers = crate::formats::workers().min(names.len()).max(1);
    let done: Vec<Vec<(usize, Result<FileSum>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(name) = names.get(i) else { break };
                        mine.push((i, FileSum::of(dir, name)));
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut results: Vec<Option<Result<FileSum>>> = (0..names.len()).map(|_| None).collect();
    for (i, r) in done.into_iter().flatten() {
        results[i] = Some(r);
    }
    results
        .into_iter()
        .zip(names)
        .map(|(r, n)| r.unwrap_or_else(|| bail!("hashing {n} did not finish")))
        .collect()
}

/// Writes `dir/SHA256SUMS` from sums already computed: `<hex>  <name>` lines sorted by name.
pub fn write_sha256sums(dir: &Path, sums: &[FileSum]) -> Result<()> {
    let mut sorted: Vec<&FileSum> = sums.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    sorted.dedup_by(|a, b| a.name == b.name);
    let mut text = String::new();
    for s in sorted {
        let n = &s.name;
        if n.is_empty() || n.contains(['/', '\n', '\\']) || n == SHA256SUMS {
            bail!(
                "cannot list `{n}` in {SHA256SUMS}: only plain file names of the output directory"
            );
        }
        text.push_str(&format!("{}  {n}\n", s.sha256));
    }
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    crate::util::output::persist(tmp, &dir.join(SHA256SUMS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_are_sorted_two_space_lines() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("b.txt"), b"abc").unwrap();
        fs::write(d.path().join("a.txt"), b"").unwrap();
        let sums = hash_all(d.path(), &["b.txt", "a.txt"]).unwrap();
        assert_eq!(sums[0].size, 3);
        write_sha256sums(d.path(), &sums).unwrap();
        let text = fs::read_to_string(d.path().join(SHA256SUMS)).unwrap();
        assert_eq!(
            text,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  a.txt\n\
             ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  b.txt\n"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(d.path().join(SHA256SUMS))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644, "{mode:o}");
    }

    #[test]
    fn missing_file_and_bad_names_are_errors() {
        let d = tempfile::tempdir().unwrap();
        let e = hash_all(d.path(), &["nope"]).unwrap_err();
        assert!(format!("{e:#}").contains("nope"));
        let bad = FileSum::of_bytes("../x", b"");
        assert!(write_sha256sums(d.path(), &[bad]).is_err());
        assert!(!d.path().join(SHA256SUMS).exists());
    }
}
