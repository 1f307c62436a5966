//! `SHA256SUMS`: one line per file, `<hex>  <name>`, sorted by name: the format `sha256sum -c`
//! checks, so a user verifies a download with the tool they already have.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::workers;

pub const SHA256SUMS: &str = "SHA256SUMS";

/// A file's name (relative to the output directory), size and SHA-256 (hex).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileSum {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// Hashes `files` (names inside `out_dir`; several at once) and writes `out_dir/SHA256SUMS`.
/// Returns the sums in the file's order, so a caller can put them in manifest.json without
/// hashing again.
pub fn write_sha256sums(out_dir: &Path, files: &[&str]) -> Result<Vec<FileSum>> {
    let mut names: Vec<&str> = files.to_vec();
    names.sort_unstable();
    names.dedup();
    for n in &names {
        if n.is_empty() || n.contains(['/', '\n', '\\']) || *n == SHA256SUMS {
            bail!(
                "cannot list `{n}` in {SHA256SUMS}: only plain file names of the output directory"
            );
        }
    }
    let sums = hash_all(out_dir, &names)?;
    let mut text = String::new();
    for s in &sums {
        text.push_str(&format!("{}  {}\n", s.sha256, s.name));
    }
    let mut tmp = tempfile::NamedTempFile::new_in(out_dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    let dest = out_dir.join(SHA256SUMS);
    tmp.persist(&dest)
        .with_context(|| format!("writing {}", dest.display()))?;
    Ok(sums)
}

fn hash_all(dir: &Path, names: &[&str]) -> Result<Vec<FileSum>> {
    let next = AtomicUsize::new(0);
    let mut results: Vec<Option<Result<FileSum>>> = (0..names.len()).map(|_| None).collect();
    let done: Vec<Vec<(usize, Result<FileSum>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers().min(names.len()))
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(name) = names.get(i) else { break };
                        mine.push((i, hash_file(dir, name)));
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
    for (i, r) in done.into_iter().flatten() {
        results[i] = Some(r);
    }
    results
        .into_iter()
        .zip(names)
        .map(|(r, n)| r.unwrap_or_else(|| bail!("hashing {n} did not finish")))
        .collect()
}

fn hash_file(dir: &Path, name: &str) -> Result<FileSum> {
    let p = dir.join(name);
    let size = fs::metadata(&p)
        .with_context(|| format!("reading {}", p.display()))?
        .len();
    Ok(FileSum {
        name: name.to_string(),
        size,
        sha256: crate::packages::sha256_file(&p)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_two_space_lines() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("b.txt"), b"abc").unwrap();
        fs::write(d.path().join("a.txt"), b"").unwrap();
        let sums = write_sha256sums(d.path(), &["b.txt", "a.txt", "b.txt"]).unwrap();
        assert_eq!(sums.len(), 2);
        let text = fs::read_to_string(d.path().join(SHA256SUMS)).unwrap();
        assert_eq!(
            text,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  a.txt\n\
             ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  b.txt\n"
        );
        assert_eq!(sums[1].size, 3);
    }

    #[test]
    fn missing_file_and_bad_names_are_errors() {
        let d = tempfile::tempdir().unwrap();
        let e = write_sha256sums(d.path(), &["nope"]).unwrap_err();
        assert!(format!("{e:#}").contains("nope"));
        assert!(write_sha256sums(d.path(), &["../x"]).is_err());
        assert!(!d.path().join(SHA256SUMS).exists());
    }
}
