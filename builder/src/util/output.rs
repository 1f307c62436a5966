//! Writing outputs all-or-nothing: everything goes to a staging directory beside the output
//! directory, which replaces the old output only when complete. A failure, or Ctrl-C/SIGTERM,
//! removes the staging directory and leaves the previous output as it was.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};

/// Staging directories alive in this process, removed by the signal handler.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// Their lock files, removed by the signal handler too.
static LOCKS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Removes every staging directory this process has alive: for the binary's signal handler,
/// which then exits (the library never does), so an interrupted build leaves nothing behind.
pub fn remove_live_staging() {
    let dirs = LIVE.lock().map(|v| v.clone()).unwrap_or_default();
    for d in dirs {
        let _ = fs::remove_dir_all(&d);
    }
    let locks = LOCKS.lock().map(|v| v.clone()).unwrap_or_default();
    for l in locks {
        let _ = fs::remove_file(&l);
    }
}

/// A scratch directory that is not an output (a kernel build tree: ~2 GiB), which the signal
/// handler removes with the staging directories. It leaves the list when dropped; removing the
/// directory itself stays with its owner (a `TempDir`).
pub struct Scratch(PathBuf);

/// Registers `dir` for removal on SIGINT/SIGTERM/SIGHUP while the returned guard lives.
pub fn scratch(dir: &Path) -> Scratch {
    if let Ok(mut v) = LIVE.lock() {
        v.push(dir.to_path_buf());
    }
    Scratch(dir.to_path_buf())
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(mut v) = LIVE.lock() {
            v.retain(|d| d != &self.0);
        }
    }
}

pub struct Staging {
    dir: PathBuf,
    target: PathBuf,
    committed: bool,
    /// Held (flock) while this process writes `target`; removed and released on drop.
    lock: fs::File,
    lock_path: PathBuf,
}

/// Checks, before any work, that a build may replace `target`: it does not exist, or it is a
/// directory that is empty or holds a previous output (`marker`, e.g. manifest.json). Anything
/// else (a regular file, someone's directory) is refused, and nothing of it is moved.
pub fn check_target(target: &Path, marker: &str) -> Result<()> {
    let meta = match fs::symlink_metadata(target) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        r => r.with_context(|| format!("reading {}", target.display()))?,
    };
    if !meta.is_dir() {
        anyhow::bail!(
            "--out {}: exists and is not a directory; give a new path or a previous berth output directory",
            target.display()
        );
    }
    let empty = fs::read_dir(target)
        .with_context(|| format!("reading {}", target.display()))?
        .next()
        .is_none();
    if !empty && !target.join(marker).is_file() {
        anyhow::bail!(
            "--out {}: a non-empty directory that is not a berth output (no {marker}); berth replaces its output directory whole, so give a new path",
            target.display()
        );
    }
    Ok(())
}

/// Whether process `pid` is alive (on Linux: has a /proc entry).
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes `<parent>/.<name>.tmp-<pid>[.old]` left by builds whose process no longer runs
/// (killed with SIGKILL, or the machine went down).
fn remove_stale(parent: &Path, name: &str) {
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = file.strip_prefix(&prefix) else {
            continue;
        };
        let pid = rest.strip_suffix(".old").unwrap_or(rest);
        if let Ok(pid) = pid.parse::<u32>() {
            if pid != std::process::id() && !alive(pid) {
                match fs::remove_dir_all(e.path()) {
                    Ok(()) => tracing::info!("removed stale {}", e.path().display()),
                    Err(err) => {
                        tracing::warn!("could not remove stale {}: {err}", e.path().display())
                    }
                }
            }
        }
    }
}

impl Staging {
    /// Creates `<parent>/.<name>.tmp-<pid>` for `target`.
    pub fn new(target: &Path) -> Result<Staging> {
        let parent = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        // One writer per output directory: the lock says who holds it.
        let lock_path = parent.join(format!(".{name}.lock"));
        let mut lock = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        use std::os::unix::fs::MetadataExt;
        // Locked, and still the file at that path: a holder removes it before it unlocks, so
        // a lock taken on a just-removed file does not count.
        let ours = |f: &fs::File| {
            f.metadata().ok().map(|m| m.ino()) == fs::metadata(&lock_path).ok().map(|m| m.ino())
        };
        if lock.try_lock().is_err() || !ours(&lock) {
            let holder = fs::read_to_string(&lock_path).unwrap_or_default();
            anyhow::bail!(
                "another berth (pid {}) is writing {}; wait for it, or give another --out",
                holder.trim(),
                target.display()
            );
        }
        {
            use std::io::{Seek, Write};
            let _ = lock.set_len(0);
            let _ = lock.rewind();
            let _ = writeln!(lock, "{}", std::process::id());
        }
        remove_stale(parent, &name);
        let dir = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir)
                .with_context(|| format!("removing stale {}", dir.display()))?;
        }
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        if let Ok(mut v) = LIVE.lock() {
            v.push(dir.clone());
        }
        if let Ok(mut v) = LOCKS.lock() {
            v.push(lock_path.clone());
        }
        Ok(Staging {
            dir,
            target: target.to_path_buf(),
            committed: false,
            lock,
            lock_path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Replaces the target with the staged directory. The old output is moved aside first and
    /// removed after, so at no point is a half-written directory at the target path.
    pub fn commit(mut self) -> Result<PathBuf> {
        let old = self.dir.with_extension("old");
        let had_old = self.target.exists();
        if had_old {
            fs::rename(&self.target, &old)
                .with_context(|| format!("moving the previous {} aside", self.target.display()))?;
        }
        if let Err(e) = fs::rename(&self.dir, &self.target) {
            if had_old {
                let _ = fs::rename(&old, &self.target);
            }
            return Err(e)
                .with_context(|| format!("moving the new output into {}", self.target.display()));
        }
        self.committed = true;
        self.forget();
        if had_old {
            fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
        }
        Ok(self.target.clone())
    }

    fn forget(&self) {
        if let Ok(mut v) = LIVE.lock() {
            v.retain(|d| d != &self.dir);
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.dir);
            self.forget();
        }
        // Remove the lock file while still holding the lock (see `new`); closing releases it.
        let _ = fs::remove_file(&self.lock_path);
        if let Ok(mut v) = LOCKS.lock() {
            v.retain(|l| l != &self.lock_path);
        }
        let _ = &self.lock;
    }
}

/// Mode of every output file: readable by all, so a web server running as another user can
/// serve images, boxes, sums, locks and catalogs. (tempfile creates its files 0600.)
pub const OUTPUT_FILE_MODE: u32 = 0o644;

/// Moves a finished temporary file to `dest` with [`OUTPUT_FILE_MODE`].
pub fn persist<F>(tmp: tempfile::NamedTempFile<F>, dest: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(OUTPUT_FILE_MODE))
        .with_context(|| format!("setting the mode of {}", tmp.path().display()))?;
    tmp.persist(dest)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming into {}", dest.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (BAD-2): an existing regular file or a foreign directory at --out is refused
    /// and left alone; an empty directory or a previous output is fine.
    #[test]
    fn only_new_empty_or_previous_output_targets_are_accepted() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("file");
        fs::write(&file, "mine").unwrap();
        let e = check_target(&file, "manifest.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a directory"), "{e}");
        assert_eq!(fs::read_to_string(&file).unwrap(), "mine");
        let foreign = d.path().join("photos");
        fs::create_dir(&foreign).unwrap();
        fs::write(foreign.join("a.jpg"), "x").unwrap();
        assert!(check_target(&foreign, "manifest.json")
            .unwrap_err()
            .to_string()
            .contains("not a berth output"));
        let empty = d.path().join("empty");
        fs::create_dir(&empty).unwrap();
        check_target(&empty, "manifest.json").unwrap();
        fs::write(foreign.join("manifest.json"), "{}").unwrap();
        check_target(&foreign, "manifest.json").unwrap();
        check_target(&d.path().join("new"), "manifest.json").unwrap();
    }

    /// Regression (BAD-6, BAD-7): staging left by a dead process is removed by the next one;
    /// a second writer of the same output is refused naming the first one's pid.
    #[test]
    fn stale_staging_goes_and_a_second_writer_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("out");
        // A pid that is not running (pid_max is at most 2^22).
        let stale = d.path().join(".out.tmp-4194304999");
        fs::create_dir(&stale).unwrap();
        fs::write(stale.join("disk.raw"), "x").unwrap();
        let s = Staging::new(&target).unwrap();
        assert!(!stale.exists(), "stale staging was not removed");
        let e = Staging::new(&target)
            .err()
            .expect("a second writer must be refused")
            .to_string();
        assert!(
            e.contains(&format!("another berth (pid {})", std::process::id())) && e.contains("out"),
            "{e}"
        );
        drop(s);
        Staging::new(&target).unwrap();
    }

    #[test]
    fn commit_replaces_and_drop_discards() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("out");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("old"), "1").unwrap();
        {
            let s = Staging::new(&target).unwrap();
            fs::write(s.file("half"), "x").unwrap();
        } // dropped: failure path
        assert!(target.join("old").exists());
        let left: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["out"], "no staging or lock file left behind");
        let s = Staging::new(&target).unwrap();
        fs::write(s.file("new"), "2").unwrap();
        s.commit().unwrap();
        assert!(target.join("new").exists() && !target.join("old").exists());
        assert_eq!(
            fs::read_dir(d.path()).unwrap().count(),
            1,
            "only the output"
        );
    }
}
