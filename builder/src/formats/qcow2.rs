//! `disk.qcow2`: written by `qemu-img convert`, which is deterministic for qcow2.
//!
//! qcow2 holds no timestamps or identifiers, and `qemu-img convert` without `-W` writes clusters
//! strictly in guest order, so cluster allocation (and with `-c`, the compressed cluster layout)
//! is a function of the input alone; the tests convert twice and compare. Every option that has
//! a default which a newer qemu might change is pinned here. The bytes do depend on the host's
//! qemu-img version (Debian 12: 7.2).

use std::path::Path;

use anyhow::Result;

use super::{FormatCtx, Progress};
use crate::util::cmd::Cmd;

/// qcow2 creation options, all pinned: v3 (compat 1.1), 64 KiB clusters, no lazy refcounts, and
/// zlib for compressed clusters (zstd clusters are unreadable to qemu < 5.1 and to most
/// non-qemu readers).
pub const CREATE_OPTIONS: &str =
    "compat=1.1,cluster_size=65536,lazy_refcounts=off,compression_type=zlib";

pub(crate) fn write(ctx: &FormatCtx, dest: &Path, progress: &Progress) -> Result<()> {
    progress.start(ctx.disk_size);
    let mut cmd = Cmd::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2", "-o", CREATE_OPTIONS])
        // The default since qemu 2.x, but say it: zero runs of >= 4 KiB stay unallocated.
        .args(["-S", "4k"]);
    if ctx.qcow2_compressed {
        cmd = cmd.arg("-c");
    }
    cmd.arg(ctx.disk).arg(dest).output()?;
    progress.inc(ctx.disk_size);
    Ok(())
}
