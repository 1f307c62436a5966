//! Small records on /var that must be whole or absent after a power cut: berth-init's boot
//! counts, the reboot lock it holds, the images it imported.

use std::fs;
use std::path::Path;

use crate::{Ctx, Result};

/// Writes `data` to `path` whole or not at all: a temporary file beside it, fsynced, renamed
/// over it (missing parent directories are made). The rename is not synced here; a caller
/// whose record must survive the next moment (a reboot it is about to make) syncs after.
pub fn replace(path: &str, data: &[u8]) -> Result<()> {
    if let Some(d) = Path::new(path).parent() {
        fs::create_dir_all(d).ctx(|| format!("mkdir -p {}", d.display()))?;
    }
    let tmp = format!("{path}.tmp");
    fs::write(&tmp, data).ctx(|| format!("writing {tmp}"))?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .ctx(|| format!("fsync {tmp}"))?;
    fs::rename(&tmp, path).ctx(|| format!("renaming {tmp} to {path}"))
}
