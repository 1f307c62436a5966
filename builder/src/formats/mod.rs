//! Output formats: every file here is derived from `disk.raw` and is reproducible bit for bit.
//!
//! Same `disk.raw` + same [`FormatCtx`] => same bytes, whatever the machine's thread count.
//! Nothing random goes in: identifiers (VMDK CID, VHD and OVF UUIDs) are derived from
//! [`FormatCtx::seed`], times from [`FormatCtx::mtime`]. How each format gets there:
//!
//! | format | writer | deterministic because |
//! |---|---|---|
//! | `disk.raw.zst` | ours ([`zst`]) | fixed-size chunks, one zstd frame each, compressed in parallel, written in order |
//! | `disk.qcow2` | `qemu-img convert` ([`qcow2`]) | qemu-img writes in order (no `-W`), no timestamps or ids in qcow2 |
//! | `disk.vmdk` | ours ([`vmdk`]) | qemu-img puts a random CID in the descriptor; ours is derived |
//! | `disk.vhd` | ours ([`vhd`]) | footer timestamp from mtime, UUID derived |
//! | `*.box` | ours ([`vagrant`]) | tar: sorted, fixed mtime/owner; gzip: header mtime 0, fixed level |
//!
//! Output formats are the one place in berth where a format -> function table pays (STYLE.md §1):
//! [`write`] is that table.

pub mod qcow2;
pub mod vagrant;
pub mod vhd;
pub mod vmdk;
pub mod zst;

use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::util::cmd::Tool;

/// One output format. Serialized (profile `[outputs]`, `--format`, manifest.json) by its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Format {
    #[serde(rename = "raw.zst")]
    RawZst,
    #[serde(rename = "qcow2")]
    Qcow2,
    #[serde(rename = "vmdk")]
    Vmdk,
    #[serde(rename = "vhd")]
    Vhd,
    #[serde(rename = "vagrant-libvirt")]
    VagrantLibvirt,
    #[serde(rename = "vagrant-virtualbox")]
    VagrantVirtualbox,
}

impl Format {
    /// Every format, in build order (a box comes after the disk format it packs).
    pub const ALL: [Format; 6] = [
        Format::RawZst,
        Format::Qcow2,
        Format::Vmdk,
        Format::Vhd,
        Format::VagrantLibvirt,
        Format::VagrantVirtualbox,
    ];

    /// The name used in profiles, on the command line and in manifest.json.
    pub fn name(self) -> &'static str {
        match self {
            Format::RawZst => "raw.zst",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vhd => "vhd",
            Format::VagrantLibvirt => "vagrant-libvirt",
            Format::VagrantVirtualbox => "vagrant-virtualbox",
        }
    }

    /// The file this format is written to, inside the output directory.
    pub fn file_name(self) -> &'static str {
        match self {
            Format::RawZst => "disk.raw.zst",
            Format::Qcow2 => "disk.qcow2",
            Format::Vmdk => "disk.vmdk",
            Format::Vhd => "disk.vhd",
            Format::VagrantLibvirt => "berth-libvirt.box",
            Format::VagrantVirtualbox => "berth-virtualbox.box",
        }
    }

    /// The format whose file this one packs (a box's disk), if any. [`write`] reuses that file
    /// when it is already in the output directory and makes a temporary one otherwise.
    pub fn needs(self) -> Option<Format> {
        match self {
            Format::VagrantLibvirt => Some(Format::Qcow2),
            Format::VagrantVirtualbox => Some(Format::Vmdk),
            _ => None,
        }
    }

    /// Host tools this format needs (checked before any work starts: [`required_tools`]).
    fn tools(self) -> &'static [Tool] {
        const QEMU_IMG: Tool = Tool {
            name: "qemu-img",
            reason: "write qcow2 images (berth-libvirt.box holds one)",
            debian_package: "qemu-utils",
        };
        match self {
            Format::Qcow2 | Format::VagrantLibvirt => &[QEMU_IMG],
            _ => &[],
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown output format `{0}`: valid formats are raw.zst, qcow2, vmdk, vhd, vagrant-libvirt, vagrant-virtualbox")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Format, UnknownFormat> {
        Format::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| UnknownFormat(s.to_string()))
    }
}

/// The host tools the given formats need, for [`crate::util::cmd::check_tools`] before the build starts.
pub fn required_tools(formats: &[Format]) -> Vec<Tool> {
    let mut names = Vec::new();
    let mut tools = Vec::new();
    for t in formats.iter().flat_map(|f| f.tools()) {
        if !names.contains(&t.name) {
            names.push(t.name);
            tools.push(Tool {
                name: t.name,
                reason: t.reason,
                debian_package: t.debian_package,
            });
        }
    }
    tools
}

/// The formats deduplicated and in build order (dependencies first), for looping over [`write`].
pub fn build_order(formats: &[Format]) -> Vec<Format> {
    let mut v = formats.to_vec();
    v.sort();
    v.dedup();
    v
}

/// The formats a build writes, in build order, after checking that the host has the tools they
/// need (before any work starts).
pub fn plan(requested: &[Format]) -> Result<Vec<Format>> {
    let formats = build_order(requested);
    crate::util::cmd::check_tools(&required_tools(&formats))?;
    Ok(formats)
}

/// The derived-formats stage: writes each format from `ctx.disk`, in build order.
pub fn write_all(
    formats: &[Format],
    ctx: &FormatCtx,
    printer: &crate::util::printer::Printer,
) -> Result<Vec<PathBuf>> {
    let mut written = Vec::with_capacity(formats.len());
    for f in formats {
        let step = printer.step(f.file_name());
        let p = write(*f, ctx, printer.bytes_bar(ctx.disk_size, f.file_name()))?;
        let size = fs::metadata(&p)
            .with_context(|| format!("reading {}", p.display()))?
            .len();
        step.done(&format!("{}", crate::units::Bytes(size)));
        written.push(p);
    }
    Ok(written)
}

/// Everything a format writer needs. All fields are inputs of the output bytes: two calls with
/// equal contexts (and equal `disk.raw`) write equal files.
#[derive(Clone, Debug)]
pub struct FormatCtx<'a> {
    /// Where the format files go (the build's staging directory).
    pub out_dir: &'a Path,
    /// The raw disk image everything is derived from.
    pub disk: &'a Path,
    /// Image name and version (box metadata, OVF names).
    pub image_name: &'a str,
    pub version: &'a str,
    /// SOURCE_DATE_EPOCH: the only time written anywhere (VHD footer, tar entries).
    pub mtime: i64,
    /// Size of `disk` in bytes (checked against the file).
    pub disk_size: u64,
    /// Content-derived seed for identifiers (the verity root hash is a good one): each writer
    /// derives its own with a distinct label, see [`derive_id`].
    pub seed: [u8; 32],
    /// qcow2: compress clusters (`qemu-img convert -c`, zlib). Smaller, slower to write; reads
    /// are slower too, and a guest's writes go to uncompressed clusters anyway.
    pub qcow2_compressed: bool,
    /// The admin container's login user, if the image has one (the boxes' `ssh.username`).
    pub ssh_user: Option<&'a str>,
}

impl FormatCtx<'_> {
    fn check_disk(&self) -> Result<()> {
        let len = fs::metadata(self.disk)
            .with_context(|| format!("reading {}", self.disk.display()))?
            .len();
        if len != self.disk_size {
            bail!(
                "{} is {len} bytes but the build says the disk is {} bytes",
                self.disk.display(),
                self.disk_size
            );
        }
        if len % SECTOR != 0 {
            bail!(
                "{} is {len} bytes, not a whole number of 512-byte sectors",
                self.disk.display()
            );
        }
        Ok(())
    }
}

pub(crate) const SECTOR: u64 = 512;
pub(crate) const MIB: u64 = 1 << 20;

/// Writes `fmt` into `ctx.out_dir` and returns the file's path. The file appears only when
/// complete (written to a temporary name, then renamed). A box reuses the disk format it packs
/// if that file is already in `out_dir` (so call in [`build_order`]) and otherwise makes it in
/// a temporary file that is removed afterwards; the box bytes are the same either way.
pub fn write(fmt: Format, ctx: &FormatCtx, progress: Option<ProgressBar>) -> Result<PathBuf> {
    ctx.check_disk()?;
    let progress = Progress(progress);
    let dest = ctx.out_dir.join(fmt.file_name());
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", fmt.file_name()))
        .tempfile_in(ctx.out_dir)
        .with_context(|| format!("creating a temporary file in {}", ctx.out_dir.display()))?;
    let result = match fmt {
        Format::RawZst => zst::write(ctx, tmp.path(), &progress),
        Format::Qcow2 => qcow2::write(ctx, tmp.path(), &progress),
        Format::Vmdk => vmdk::write(ctx, tmp.path(), &progress),
        Format::Vhd => vhd::write(ctx, tmp.path(), &progress),
        Format::VagrantLibvirt => vagrant::write_libvirt(ctx, tmp.path(), &progress),
        Format::VagrantVirtualbox => vagrant::write_virtualbox(ctx, tmp.path(), &progress),
    };
    result.with_context(|| format!("writing {} from {}", dest.display(), ctx.disk.display()))?;
    progress.finish();
    crate::util::output::persist(tmp, &dest)?;
    Ok(dest)
}

/// The file of format `fmt` for packing into a box: the one in `out_dir` if [`write`] already
/// made it, else a fresh temporary one (kept alive by the returned guard).
pub(crate) fn disk_file_for(
    fmt: Format,
    ctx: &FormatCtx,
    progress: &Progress,
) -> Result<(PathBuf, Option<tempfile::TempPath>)> {
    let existing = ctx.out_dir.join(fmt.file_name());
    if existing.is_file() {
        return Ok((existing, None));
    }
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", fmt.file_name()))
        .tempfile_in(ctx.out_dir)?
        .into_temp_path();
    match fmt {
        Format::Qcow2 => qcow2::write(ctx, &tmp, progress)?,
        Format::Vmdk => vmdk::write(ctx, &tmp, progress)?,
        other => bail!("{other} is not a disk format a box can hold"),
    }
    Ok((tmp.to_path_buf(), Some(tmp)))
}

/// Derives a 16-byte identifier (UUID-shaped) for `label` from the build's seed.
pub fn derive_id(label: &str, seed: &[u8; 32]) -> [u8; 16] {
    crate::util::digest::derive16(label, seed)
}

/// An optional progress bar; every writer counts the bytes of disk.raw it has read.
pub(crate) struct Progress(Option<ProgressBar>);

impl Progress {
    pub(crate) fn start(&self, len: u64) {
        if let Some(b) = &self.0 {
            b.set_length(len);
            b.set_position(0);
        }
    }

    pub(crate) fn inc(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// True if `b` is all zero bytes. Compares against a zero block (a memcmp), which stays fast
/// in debug builds where a byte loop over a 2.5 GiB image would not.
pub(crate) fn is_zero(b: &[u8]) -> bool {
    const ZEROS: [u8; 4096] = [0; 4096];
    b.chunks(ZEROS.len()).all(|c| c == &ZEROS[..c.len()])
}

/// Worker threads for the parallel writers. The output never depends on this number.
pub(crate) fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_valid_ones() {
        for f in Format::ALL {
            assert_eq!(f.name().parse::<Format>().unwrap(), f);
            assert_eq!(f.to_string(), f.name());
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(json, format!("\"{}\"", f.name()));
            assert_eq!(serde_json::from_str::<Format>(&json).unwrap(), f);
        }
        let e = "qcow".parse::<Format>().unwrap_err().to_string();
        assert!(
            e.contains("qcow2") && e.contains("vagrant-virtualbox"),
            "{e}"
        );
    }

    #[test]
    fn build_order_puts_disks_before_the_boxes_that_pack_them() {
        let order = build_order(&[
            Format::VagrantVirtualbox,
            Format::Vmdk,
            Format::VagrantLibvirt,
            Format::Qcow2,
            Format::Vmdk,
        ]);
        assert_eq!(
            order,
            [
                Format::Qcow2,
                Format::Vmdk,
                Format::VagrantLibvirt,
                Format::VagrantVirtualbox
            ]
        );
        for f in Format::ALL {
            if let Some(dep) = f.needs() {
                assert!(dep < f, "{dep} must sort before {f}");
            }
        }
    }

    #[test]
    fn tools_are_listed_once() {
        let t = required_tools(&[Format::Qcow2, Format::VagrantLibvirt, Format::Vhd]);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].name, "qemu-img");
        assert!(required_tools(&[Format::Vmdk, Format::RawZst]).is_empty());
    }

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0u8; 10000]));
        let mut b = vec![0u8; 10000];
        b[9999] = 1;
        assert!(!is_zero(&b));
        assert!(is_zero(&[]));
    }
}
