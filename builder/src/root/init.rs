//! Finding (or building) the static `berth-init` the image boots.
//!
//! berth-init must be a static executable (it runs before any library is reachable). The gnu
//! target links glibc statically only with `-C target-feature=+crt-static`, which cargo cannot set
//! for one package of a workspace without also breaking proc-macros; so it is built with
//! `cargo rustc -- -C target-feature=+crt-static`, which applies the flag to the final binary only.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::root::elf;
use crate::util::cmd::Cmd;

/// Where this berth's source tree is (when run from a checkout), to build berth-init from.
const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The berth-init the image boots: where it came from and its bytes.
pub struct Init {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

/// Finds berth-init. Order: an explicit path (flag or profile); in a source tree, a build of
/// rootfs/init into the cache; else a static `berth-init` installed next to the running
/// `berth`.
pub fn locate(explicit: Option<&Path>, cache_dir: &Path) -> Result<Init> {
    let (path, bytes) = find(explicit, cache_dir)?;
    Ok(Init { path, bytes })
}

fn find(explicit: Option<&Path>, cache_dir: &Path) -> Result<(PathBuf, Vec<u8>)> {
    if let Some(p) = explicit {
        let data = std::fs::read(p)
            .with_context(|| format!("reading the init program {}", p.display()))?;
        check_static(p, &data)?;
        return Ok((p.to_path_buf(), data));
    }
    let ws = Path::new(WORKSPACE);
    if !ws.join("rootfs/init/Cargo.toml").is_file() {
        // An installed berth: take the static berth-init installed beside it.
        if let Some(p) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("berth-init")))
        {
            if let Ok(data) = std::fs::read(&p) {
                check_static(&p, &data)?;
                return Ok((p, data));
            }
        }
        bail!(
            "no berth-init found: pass --init PATH (a static berth-init), set `init.path` in the profile, or install a static berth-init next to the berth executable"
        );
    }
    // In a source tree: the init built from exactly these sources (and this compiler) is kept
    // under their hash, so a build whose init sources did not change does not run cargo at all
    // (its no-op check alone costs a second); otherwise cargo builds it, and the image never
    // carries a stale init.
    let key = source_key(ws)?;
    let kept = cache_dir.join("init").join(&key[..32]).join("berth-init");
    if let Ok(data) = std::fs::read(&kept) {
        if check_static(&kept, &data).is_ok() {
            return Ok((kept, data));
        }
    }
    let target = cache_dir.join("init-build");
    Cmd::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "rustc",
            "--quiet",
            "--release",
            "--locked",
            "-p",
            "berth-init",
            "--bin",
            "berth-init",
            "--target-dir",
        ])
        .arg(&target)
        .args(["--", "-C", "target-feature=+crt-static"])
        .cwd(ws)
        .output()
        .context(
            "building berth-init from the source tree (cargo rustc -p berth-init); without a \
             Rust toolchain, pass --init PATH (a static berth-init) or set `init.path` in the profile",
        )?;
    let p = target.join("release/berth-init");
    let data = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
    check_static(&p, &data)?;
    keep(&kept, &data);
    Ok((p, data))
}

/// What the init is built from: its crate, the contract crate, the workspace manifest and lock,
/// and the compiler's version.
fn source_key(ws: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for dir in ["rootfs/init", "contract/src"] {
        h.update(dir.as_bytes());
        crate::util::digest::hash_tree(&mut h, &ws.join(dir))?;
    }
    for f in ["Cargo.toml", "Cargo.lock", "contract/Cargo.toml"] {
        let data = std::fs::read(ws.join(f)).with_context(|| format!("reading {f}"))?;
        h.update(f.as_bytes());
        h.update((data.len() as u64).to_le_bytes());
        h.update(data);
    }
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    h.update(Cmd::new(rustc).arg("-vV").stdout().unwrap_or_default());
    Ok(hex::encode(h.finalize()))
}

/// Keeps a built init under its source key (a temporary file renamed into place). Best
/// effort: without it the next build runs cargo again.
fn keep(kept: &Path, data: &[u8]) {
    let Some(dir) = kept.parent() else { return };
    let r = std::fs::create_dir_all(dir).and_then(|()| {
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(&mut tmp, data)?;
        tmp.persist(kept).map(|_| ()).map_err(|e| e.error)
    });
    if let Err(e) = r {
        tracing::warn!("keeping berth-init in {}: {e}", dir.display());
    }
}

fn check_static(p: &Path, data: &[u8]) -> Result<()> {
    let deps = elf::deps(data).with_context(|| format!("init program {}", p.display()))?;
    if deps.interp.is_some() || !deps.needed.is_empty() {
        bail!(
            "init program {} is dynamically linked (needs {:?}): PID 1 in the initramfs has no libraries; build it static",
            p.display(),
            deps.needed
        );
    }
    Ok(())
}
