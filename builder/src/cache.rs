//! The build cache: a build whose inputs are all the same as an earlier one's copies that
//! build's outputs instead of making them again.
//!
//! The key is a SHA-256 over everything that decides the output bytes: the resolved profile
//! (without where it lives on this machine), the lock, berth-init's bytes, every overlay file
//! (name, execute bit, content, symlink target), every `[[files]]` entry and source, the
//! formats, and the builder itself (the running executable's digest), so a change to any
//! writer (ext4, FAT, GPT, the command line, a format) is a new key even when no input moved.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::artifacts::BuildManifest;
use crate::fetch::lock::Lock;
use crate::formats::Format;
use crate::outdir::{hash_all, MANIFEST, SHA256SUMS};
use crate::profile::{self, Profile};
use crate::util::printer::Printer;
use crate::util::sparse;

/// Bumped when the cache's own layout changes (what a cache entry holds).
const CACHE_FORMAT: &str = "berth-build-v2";

/// The cache directory when none is given: `$XDG_CACHE_HOME/berth` (only an absolute
/// XDG_CACHE_HOME counts, as the XDG spec says), else `~/.cache/berth`, else under the
/// system's temporary directory.
pub fn default_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("berth")
}

/// A cache key: hex SHA-256 of the build's inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key(String);

impl Key {
    /// The first 12 hex digits, for messages.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What goes into a key; `builder` is the digest of the code that builds ([`builder_digest`]).
pub struct Inputs<'a> {
    pub profile: &'a Profile,
    pub lock: &'a Lock,
    pub init: &'a [u8],
    pub formats: &'a [Format],
    pub builder: &'a [u8; 32],
    /// The public half of the key signing the bundle (the signature follows from it).
    pub signing: Option<[u8; 32]>,
    /// The root hash of the build a delta bundle is made against.
    pub delta_base: Option<[u8; 32]>,
}

/// SHA-256 of the running executable: the builder's code, whatever changed in it. Computed
/// once per process (about 20 MB to read).
pub fn builder_digest() -> Result<[u8; 32]> {
    static DIGEST: OnceLock<std::result::Result<[u8; 32], String>> = OnceLock::new();
    DIGEST
        .get_or_init(|| {
            let exe =
                std::env::current_exe().map_err(|e| format!("finding berth's executable: {e}"))?;
            let bytes = fs::read(&exe).map_err(|e| format!("reading {}: {e}", exe.display()))?;
            Ok(Sha256::digest(bytes).into())
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// The key of a build with these inputs.
pub fn key(i: &Inputs<'_>) -> Result<Key> {
    let mut h = Sha256::new();
    let mut field = |name: &str, bytes: &[u8]| {
        // Length-prefixed, so no two different input sets hash the same byte stream.
        h.update(name.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field("format", CACHE_FORMAT.as_bytes());
    field("builder", i.builder);
    let formats: Vec<&str> = i.formats.iter().map(|f| f.name()).collect();
    field("formats", serde_json::to_string(&formats)?.as_bytes());
    // The resolved profile minus where it lives on this machine; overlays, files and the init
    // are hashed by content below.
    let mut v = serde_json::to_value(i.profile)?;
    if let Some(o) = v.as_object_mut() {
        for k in ["path", "sources", "overlays", "files", "init"] {
            o.remove(k);
        }
        // Where the release key and the OCI archives are on this machine does not matter;
        // their content (below) does.
        if let Some(u) = o.get_mut("update").and_then(|u| u.as_object_mut()) {
            u.remove("public-key");
        }
        if let Some(cs) = o.get_mut("containers").and_then(|c| c.as_array_mut()) {
            for c in cs {
                if let Some(src) = c.get_mut("source").and_then(|s| s.as_object_mut()) {
                    src.remove("archive");
                }
            }
        }
    }
    field("profile", v.to_string().as_bytes());
    field("lock", toml::to_string(i.lock)?.as_bytes());
    field("init", &Sha256::digest(i.init));
    for o in &i.profile.overlays {
        let mut t = Sha256::new();
        crate::util::digest::hash_tree(&mut t, &o.path)
            .with_context(|| format!("overlay {}", o.name))?;
        field("overlay", &t.finalize());
    }
    if let Some(k) = &i.profile.update.public_key {
        let data = fs::read(k).with_context(|| format!("reading {}", k.display()))?;
        field("update-key", &Sha256::digest(data));
    }
    if let Some(s) = i.signing {
        field("signing-key", &s);
    }
    if let Some(b) = i.delta_base {
        field("delta-base", &b);
    }
    for c in &i.profile.containers {
        if let profile::ImageSource::Archive(p) = &c.source {
            let mut t = Sha256::new();
            if p.is_dir() {
                crate::util::digest::hash_tree(&mut t, p)
                    .with_context(|| format!("[[containers]] {:?}", c.name))?;
            } else {
                t.update(crate::util::digest::sha256_file(p).with_context(|| {
                    format!("[[containers]] {:?}: reading {}", c.name, p.display())
                })?);
            }
            field("archive", &t.finalize());
        }
    }
    for f in &i.profile.files {
        let mut spec = serde_json::to_value(f)?;
        if let profile::FileSource::Source(p) = &f.what {
            // The source's content, not where it is on this machine.
            let data = fs::read(p)
                .with_context(|| format!("[[files]] {}: reading {}", f.path, p.display()))?;
            spec["what"] =
                serde_json::json!({ "source-sha256": hex::encode(Sha256::digest(data)) });
        }
        field("file", spec.to_string().as_bytes());
    }
    Ok(Key(hex::encode(h.finalize())))
}

/// Makes sure `dir` can hold the cache before any work: created if missing; an error naming
/// it (and `--cache-dir`/`BERTH_CACHE_DIR`) if it is not a directory or cannot be written,
/// instead of a bare errno from deep in a download or cargo's own error from the berth-init
/// build.
pub fn check_dir(dir: &Path) -> Result<()> {
    let hint = "give --cache-dir (or BERTH_CACHE_DIR) a writable directory";
    if let Ok(m) = fs::metadata(dir) {
        if !m.is_dir() {
            anyhow::bail!(
                "the cache directory {} is not a directory: {hint}",
                dir.display()
            );
        }
    }
    fs::create_dir_all(dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create the cache directory {}: {e}; {hint}",
            dir.display()
        )
    })?;
    tempfile::tempfile_in(dir).map(drop).map_err(|e| {
        anyhow::anyhow!(
            "cannot write to the cache directory {}: {e}; {hint}",
            dir.display()
        )
    })
}

/// Where the entry for `key` lives.
pub fn entry_dir(cache_dir: &Path, key: &Key) -> PathBuf {
    cache_dir.join("builds").join(&key.0[..32])
}

/// Copies a cached build's `names` into `staging` if the cache has an entry for `key`; returns
/// its manifest, or `None` for a miss.
pub fn reuse(
    cache_dir: &Path,
    key: &Key,
    names: &[&str],
    staging: &Path,
    printer: &Printer,
) -> Result<Option<BuildManifest>> {
    let dir = entry_dir(cache_dir, key);
    if !dir.join(MANIFEST).is_file() {
        return Ok(None);
    }
    let step = printer.step("reuse cached build");
    for f in names {
        sparse::copy(&dir.join(f), &staging.join(f))
            .with_context(|| format!("copying cached {f} from {}", dir.display()))?;
    }
    // A cache entry is checked before it is served: every file against the entry's
    // SHA256SUMS. A damaged one is dropped, with a warning, and the build runs instead.
    if let Err(e) = verify(staging, names) {
        tracing::warn!(
            "the cached build in {} is damaged ({e:#}); dropping it and building again",
            dir.display()
        );
        printer.info(&format!(
            "  cached build {} is damaged ({e:#}): building again",
            key.short()
        ));
        for f in names {
            let _ = fs::remove_file(staging.join(f));
        }
        let _ = fs::remove_dir_all(&dir);
        return Ok(None);
    }
    let m = BuildManifest::read(staging)?;
    mark_used(&dir);
    step.done(&format!("inputs unchanged ({}), checked", key.short()));
    Ok(Some(m))
}

/// Build results kept by default: the most recently used ones (a result is a few hundred MiB
/// of allocated blocks; 16 covers the profiles of this repository's tests). `BERTH_CACHE_KEEP`
/// sets another number (0: keep none but the one just stored).
pub const DEFAULT_KEEP: usize = 16;
/// A result nobody used for this long is removed whatever the count.
pub const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);
/// In each entry: its mtime is when a build last stored or reused it.
const USED: &str = ".used";

fn mark_used(dir: &Path) {
    if let Err(e) = fs::write(dir.join(USED), b"") {
        tracing::debug!("marking {} used: {e}", dir.display());
    }
}

/// How many build results to keep: `BERTH_CACHE_KEEP`, or [`DEFAULT_KEEP`].
pub fn keep_from_env() -> Result<usize> {
    match std::env::var("BERTH_CACHE_KEEP") {
        Err(_) => Ok(DEFAULT_KEEP),
        Ok(v) => v.trim().parse().map_err(|_| {
            anyhow::anyhow!("BERTH_CACHE_KEEP={v:?}: expected a number of cached build results to keep, like 16")
        }),
    }
}

/// Removes cached build results beyond the `keep` most recently used and those unused for
/// [`MAX_AGE`], never `current` (the one just stored or reused), and temporary directories of
/// stores that died more than an hour ago. Returns what was removed, oldest first.
pub fn evict(cache_dir: &Path, current: &Path, keep: usize) -> Result<Vec<PathBuf>> {
    let builds = cache_dir.join("builds");
    let Ok(rd) = fs::read_dir(&builds) else {
        return Ok(Vec::new());
    };
    let now = std::time::SystemTime::now();
    let age = |p: &Path| {
        fs::metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .unwrap_or_default()
    };
    let mut entries = Vec::new();
    let mut removed = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".tmp") {
            if age(&p) > std::time::Duration::from_secs(3600) && fs::remove_dir_all(&p).is_ok() {
                removed.push(p);
            }
            continue;
        }
        if p == current || !p.join(MANIFEST).is_file() {
            continue;
        }
        let used = if p.join(USED).exists() {
            age(&p.join(USED))
        } else {
            age(&p)
        };
        entries.push((used, p));
    }
    // Most recently used first; `current` counts as one of the kept.
    entries.sort();
    for (i, (used, p)) in entries.into_iter().enumerate() {
        if i + 1 >= keep.max(1) || used > MAX_AGE {
            fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
            removed.push(p);
        }
    }
    removed.reverse();
    Ok(removed)
}

/// Checks the files `names` in `dir` against `dir/SHA256SUMS`: each must be listed, with the
/// sum of its bytes.
fn verify(dir: &Path, names: &[&str]) -> Result<()> {
    let sums = fs::read_to_string(dir.join(SHA256SUMS)).context("reading SHA256SUMS")?;
    let listed: std::collections::BTreeMap<&str, &str> = sums
        .lines()
        .filter_map(|l| l.split_once("  ").map(|(h, n)| (n, h)))
        .collect();
    let files: Vec<&str> = names.iter().copied().filter(|n| *n != SHA256SUMS).collect();
    for (f, sum) in files.iter().zip(hash_all(dir, &files)?) {
        match listed.get(f) {
            None => anyhow::bail!("{f} is not in its SHA256SUMS"),
            Some(want) if *want != sum.sha256 => {
                anyhow::bail!("{f}: sha256 {}, SHA256SUMS says {want}", sum.sha256)
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Removes the cached build results under `cache_dir` (and with `all`, everything berth keeps
/// there: packages, apt state, the berth-init build). Returns the bytes freed (allocated
/// blocks, so sparse disk images count for what they take).
pub fn clean(cache_dir: &Path, all: bool) -> Result<u64> {
    fn usage(p: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let Ok(m) = fs::symlink_metadata(p) else {
            return 0;
        };
        let own = m.blocks() * 512;
        if !m.is_dir() {
            return own;
        }
        own + fs::read_dir(p)
            .map(|d| d.flatten().map(|e| usage(&e.path())).sum::<u64>())
            .unwrap_or(0)
    }
    if !cache_dir.exists() {
        return Ok(0);
    }
    let targets: Vec<PathBuf> = if all {
        fs::read_dir(cache_dir)
            .with_context(|| format!("reading {}", cache_dir.display()))?
            .flatten()
            .map(|e| e.path())
            .collect()
    } else {
        vec![
            cache_dir.join("builds"),
            cache_dir.join(crate::boot::initramfs::CACHE_DIR),
            cache_dir.join(crate::fetch::ZSTD_COPIES),
        ]
    };
    let mut freed = 0;
    for t in targets.iter().filter(|t| t.exists()) {
        freed += usage(t);
        if t.is_dir() {
            fs::remove_dir_all(t)
        } else {
            fs::remove_file(t)
        }
        .with_context(|| format!("removing {}", t.display()))?;
    }
    Ok(freed)
}

/// Keeps a copy of a finished build for the next one with the same key. Best effort: a full
/// disk only costs speed, so failures are warnings.
pub fn store(cache_dir: &Path, key: &Key, staged: &Path, names: &[&str]) {
    begin_store(cache_dir, key, staged, names).finish(staged, &[]);
}

/// A cache entry being written: outputs copied into a temporary directory beside the entry,
/// renamed into place by [`Pending::finish`]. A build starts it with its big outputs while it
/// still hashes disk.raw, and finishes it with manifest.json and SHA256SUMS, so copying into
/// the cache does not add to the build's time. Dropped unfinished, it leaves nothing.
pub struct Pending<'a> {
    cache_dir: &'a Path,
    dir: PathBuf,
    tmp: Option<tempfile::TempDir>,
}

/// Starts the cache entry for `key` with copies of `names` from `staged` (best effort: a
/// failure is a warning, and the entry is not made).
pub fn begin_store<'a>(
    cache_dir: &'a Path,
    key: &Key,
    staged: &Path,
    names: &[&str],
) -> Pending<'a> {
    let dir = entry_dir(cache_dir, key);
    let tmp = (|| -> Result<tempfile::TempDir> {
        let parent = dir.parent().context("cache path has no parent")?;
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let tmp = tempfile::tempdir_in(parent)?;
        copy_into(tmp.path(), staged, names)?;
        Ok(tmp)
    })();
    let tmp = match tmp {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(
                "could not cache the build result in {}: {e:#}",
                dir.display()
            );
            None
        }
    };
    Pending {
        cache_dir,
        dir,
        tmp,
    }
}

fn copy_into(tmp: &Path, staged: &Path, names: &[&str]) -> Result<()> {
    for f in names {
        sparse::copy(&staged.join(f), &tmp.join(f))?;
    }
    Ok(())
}

impl Pending<'_> {
    /// Copies the last `names` in, puts the entry in place, and trims the cache.
    pub fn finish(self, staged: &Path, names: &[&str]) {
        let Some(tmp) = self.tmp else { return };
        let dir = &self.dir;
        let placed = copy_into(tmp.path(), staged, names).and_then(|()| {
            let tmp = tmp.keep();
            if fs::rename(&tmp, dir).is_err() {
                fs::remove_dir_all(&tmp)?; // another build stored the same result first
            }
            Ok(())
        });
        if let Err(e) = placed {
            tracing::warn!(
                "could not cache the build result in {}: {e:#}",
                dir.display()
            );
            return;
        }
        mark_used(dir);
        let evicted = keep_from_env().and_then(|keep| evict(self.cache_dir, dir, keep));
        match evicted {
            Ok(gone) => {
                for p in gone {
                    tracing::info!(
                        "removed the least recently used cached build {}",
                        p.display()
                    );
                }
            }
            Err(e) => tracing::warn!("trimming the build cache: {e:#}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Regression (BAD-10): a file, or a directory that cannot be written, as the cache is an
    /// error naming it.
    #[test]
    fn a_cache_dir_that_cannot_hold_the_cache_is_named() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("file");
        fs::write(&f, "x").unwrap();
        let e = check_dir(&f).unwrap_err().to_string();
        assert!(
            e.contains("file is not a directory") && e.contains("--cache-dir"),
            "{e}"
        );
        let e = check_dir(&f.join("sub")).unwrap_err().to_string();
        assert!(e.contains("cannot create the cache directory"), "{e}");
        check_dir(&d.path().join("new/cache")).unwrap();
        assert!(d.path().join("new/cache").is_dir());
        // Read-only: only meaningful without CAP_DAC_OVERRIDE (root writes anyway).
        let ro = d.path().join("ro");
        fs::create_dir(&ro).unwrap();
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
        if fs::write(ro.join("probe"), "").is_err() {
            let e = check_dir(&ro).unwrap_err().to_string();
            assert!(e.contains("cannot write to the cache directory"), "{e}");
        }
    }

    /// Regression (BAD-10, the cache grew without limit): beyond `keep`, the least recently
    /// used results go; a reuse counts as a use; the current one and non-entries stay.
    #[test]
    fn eviction_keeps_the_most_recently_used_results() {
        let c = tempfile::tempdir().unwrap();
        let builds = c.path().join("builds");
        let entry = |n: &str, ago: u64| {
            let d = builds.join(n);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join(MANIFEST), "{}").unwrap();
            fs::write(d.join(USED), "").unwrap();
            let t = std::time::SystemTime::now() - std::time::Duration::from_secs(ago);
            fs::File::open(d.join(USED))
                .unwrap()
                .set_modified(t)
                .unwrap();
            d
        };
        let old = entry("a-old", 3000);
        let mid = entry("b-mid", 2000);
        let new = entry("c-new", 1000);
        let ancient = entry("d-ancient", MAX_AGE.as_secs() + 10);
        let current = entry("e-current", 5000);
        fs::create_dir_all(builds.join("not-an-entry")).unwrap();
        // Keep 3: current + the two most recently used.
        let gone = evict(c.path(), &current, 3).unwrap();
        assert_eq!(gone, [ancient.clone(), old.clone()]);
        assert!(mid.is_dir() && new.is_dir() && current.is_dir());
        assert!(builds.join("not-an-entry").is_dir());
        // A reuse of mid makes new the oldest.
        mark_used(&mid);
        let gone = evict(c.path(), &current, 2).unwrap();
        assert_eq!(gone, [new]);
        assert!(mid.is_dir() && current.is_dir());
        // keep 0 still keeps the current one.
        assert_eq!(evict(c.path(), &current, 0).unwrap(), [mid]);
        assert!(current.is_dir());
        assert!(evict(&c.path().join("none"), &current, 1)
            .unwrap()
            .is_empty());
    }

    /// A profile with one overlay and one sourced file, in a temporary directory.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            fs::create_dir_all(d.join("overlays/extra/etc")).unwrap();
            fs::write(d.join("overlays/extra/etc/motd"), "hi\n").unwrap();
            fs::create_dir_all(d.join("profiles")).unwrap();
            fs::write(d.join("profiles/motd.src"), "from source\n").unwrap();
            Fixture { dir }
        }

        fn write_profile(&self, version: &str) -> PathBuf {
            let p = self.dir.path().join("profiles/p.toml");
            fs::write(
                &p,
                format!(
                    "schema = 1\noverlays = [\"extra\"]\n[image]\nname = \"t\"\nversion = \"{version}\"\nsource-date-epoch = 1\n\
                     [[files]]\npath = \"/etc/issue\"\nsource = \"motd.src\"\n"
                ),
            )
            .unwrap();
            p
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }
    }

    fn lock() -> Lock {
        Lock {
            lock_version: 1,
            suite: "bookworm".into(),
            architecture: "amd64".into(),
            roots: vec!["x".into()],
            packages: vec![],
        }
    }

    fn key_of(profile: &Profile, init: &[u8], formats: &[Format], builder: &[u8; 32]) -> Key {
        key(&Inputs {
            profile,
            lock: &lock(),
            init,
            formats,
            builder,
            signing: None,
            delta_base: None,
        })
        .unwrap()
    }

    #[test]
    fn every_input_class_changes_the_key() {
        let fx = Fixture::new();
        let p = profile::load(&fx.write_profile("1.0")).unwrap();
        let base = key_of(&p, b"init", &[], &[0; 32]);
        assert_eq!(base, key_of(&p, b"init", &[], &[0; 32]), "deterministic");
        let mut changed = Vec::new();

        // A profile key.
        let p2 = profile::load(&fx.write_profile("1.1")).unwrap();
        changed.push(("profile key", key_of(&p2, b"init", &[], &[0; 32])));
        fx.write_profile("1.0");
        // An overlay byte.
        fs::write(fx.path("overlays/extra/etc/motd"), "hI\n").unwrap();
        changed.push(("overlay byte", key_of(&p, b"init", &[], &[0; 32])));
        fs::write(fx.path("overlays/extra/etc/motd"), "hi\n").unwrap();
        assert_eq!(key_of(&p, b"init", &[], &[0; 32]), base, "restored");
        // An overlay mode (the execute bit is what the image keeps).
        let motd = fx.path("overlays/extra/etc/motd");
        fs::set_permissions(&motd, fs::Permissions::from_mode(0o755)).unwrap();
        changed.push(("overlay mode", key_of(&p, b"init", &[], &[0; 32])));
        fs::set_permissions(&motd, fs::Permissions::from_mode(0o644)).unwrap();
        // A [[files]] source's content.
        fs::write(fx.path("profiles/motd.src"), "from source!\n").unwrap();
        changed.push(("file source", key_of(&p, b"init", &[], &[0; 32])));
        fs::write(fx.path("profiles/motd.src"), "from source\n").unwrap();
        // The init's bytes, the formats, the builder.
        changed.push(("init byte", key_of(&p, b"inIt", &[], &[0; 32])));
        changed.push((
            "format list",
            key_of(&p, b"init", &[Format::Qcow2], &[0; 32]),
        ));
        changed.push(("builder", key_of(&p, b"init", &[], &[1; 32])));
        // The bundle's signing key and a delta's base.
        let with = |signing, delta_base| {
            key(&Inputs {
                profile: &p,
                lock: &lock(),
                init: b"init",
                formats: &[],
                builder: &[0; 32],
                signing,
                delta_base,
            })
            .unwrap()
        };
        changed.push(("signing key", with(Some([5; 32]), None)));
        changed.push(("delta base", with(None, Some([6; 32]))));

        assert_eq!(key_of(&p, b"init", &[], &[0; 32]), base, "all restored");
        for (what, k) in &changed {
            assert_ne!(*k, base, "{what} did not change the key");
        }
        for (i, (a, ka)) in changed.iter().enumerate() {
            for (b, kb) in &changed[i + 1..] {
                assert_ne!(ka, kb, "{a} and {b} gave the same key");
            }
        }
    }

    #[test]
    fn clean_removes_builds_and_with_all_everything() {
        let d = tempfile::tempdir().unwrap();
        let c = d.path().join("cache");
        fs::create_dir_all(c.join("builds/abc")).unwrap();
        fs::write(c.join("builds/abc/disk.raw"), vec![1u8; 100_000]).unwrap();
        fs::create_dir_all(c.join("debs")).unwrap();
        fs::write(c.join("debs/x.deb"), b"deb").unwrap();
        let freed = clean(&c, false).unwrap();
        assert!(freed >= 100_000, "{freed}");
        assert!(!c.join("builds").exists() && c.join("debs/x.deb").exists());
        assert!(clean(&c, true).unwrap() > 0);
        assert_eq!(fs::read_dir(&c).unwrap().count(), 0);
        assert_eq!(clean(&d.path().join("none"), true).unwrap(), 0);
    }

    /// `berth clean` removes what is made for builds (results, initramfs images, zstd copies
    /// of packages), and keeps the packages unless --all.
    #[test]
    fn clean_removes_what_builds_make_and_keeps_the_packages() {
        let d = tempfile::tempdir().unwrap();
        let made = [
            "builds",
            crate::boot::initramfs::CACHE_DIR,
            crate::fetch::ZSTD_COPIES,
        ];
        for dir in made.iter().chain(&["debs"]) {
            fs::create_dir_all(d.path().join(dir)).unwrap();
            fs::write(d.path().join(dir).join("f"), "x").unwrap();
        }
        assert!(clean(d.path(), false).unwrap() > 0);
        for dir in made {
            assert!(!d.path().join(dir).exists(), "{dir}");
        }
        assert!(d.path().join("debs/f").exists());
        clean(d.path(), true).unwrap();
        assert!(!d.path().join("debs").exists());
    }

    #[test]
    fn the_builder_digest_is_the_running_executable() {
        let d = builder_digest().unwrap();
        let exe = fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(d, <[u8; 32]>::from(Sha256::digest(exe)));
    }

    #[test]
    fn an_unreadable_overlay_entry_is_an_error() {
        let fx = Fixture::new();
        let p = profile::load(&fx.write_profile("1.0")).unwrap();
        std::os::unix::fs::symlink("x", fx.path("overlays/extra/etc/link")).unwrap();
        // Symlinks are fine (their target is hashed, not followed).
        key_of(&p, b"i", &[], &[0; 32]);
        fs::remove_dir_all(fx.path("overlays/extra")).unwrap();
        let e = key(&Inputs {
            profile: &p,
            lock: &lock(),
            init: b"i",
            formats: &[],
            builder: &[0; 32],
            signing: None,
            delta_base: None,
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains("overlay extra"), "{e:#}");
    }
}
