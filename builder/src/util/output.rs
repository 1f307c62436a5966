//! Writing outputs all-or-nothing: everything goes to a staging directory beside the output
//! directory, which replaces the old output only when complete. A failure, or Ctrl-C/SIGTERM,
//! removes the staging directory and leaves the previous output as it was.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};

/// Staging directories alive in this process, removed by the signal handler.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Removes every staging directory this process has alive: for the binary's signal handler,
/// which then exits (the library never does), so an interrupted build leaves nothing behind.
pub fn remove_live_staging() {
    let dirs = LIVE.lock().map(|v| v.clone()).unwrap_or_default();
    for d in dirs {
        let _ = fs::remove_dir_all(&d);
    }
}

pub struct Staging {
    dir: PathBuf,
    target: PathBuf,
    committed: bool,
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
        let dir = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir)
                .with_context(|| format!("removing stale {}", dir.display()))?;
        }
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        if let Ok(mut v) = LIVE.lock() {
            v.push(dir.clone());
        }
        Ok(Staging {
            dir,
            target: target.to_path_buf(),
            committed: false,
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
        assert_eq!(
            fs::read_dir(d.path()).unwrap().count(),
            1,
            "no staging left behind"
        );
        let s = Staging::new(&target).unwrap();
        fs::write(s.file("new"), "2").unwrap();
        s.commit().unwrap();
        assert!(target.join("new").exists() && !target.join("old").exists());
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
