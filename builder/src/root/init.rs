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
    // In a source tree, always build it (cargo makes this a no-op when nothing changed), so the
    // image never carries a stale init.
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
    Ok((p, data))
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
