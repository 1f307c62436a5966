//! `berth run`: from what the user names (an image directory, a disk image or a profile) to the
//! files QEMU needs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::artifacts::BuildManifest;
use crate::disk::gpt;
use crate::outdir::{DISK, INITRD, MANIFEST, VMLINUZ};
pub mod qemu;

use qemu::{Boot, DiskFormat};

pub struct Target {
    pub disk: PathBuf,
    /// The image directory (kernel, initrd and manifest.json for --direct), if known.
    pub dir: Option<PathBuf>,
}

/// Resolves `arg`: a `.toml` profile means its default output directory; a directory means its
/// disk image; a file is the disk image. A raw disk must carry berth's GPT layout.
pub fn resolve(arg: &Path) -> Result<Target> {
    let dir = if arg.extension().is_some_and(|e| e == "toml") {
        let p = crate::profile::load(arg)?;
        let d = crate::outdir::default_out(&p);
        if !d.join(DISK).is_file() {
            bail!(
                "{} has not been built yet ({} does not exist): run `berth build {}` first",
                arg.display(),
                d.join(DISK).display(),
                arg.display()
            );
        }
        Some(d)
    } else if arg.is_dir() {
        Some(arg.to_path_buf())
    } else {
        None
    };
    let disk = match &dir {
        Some(d) => ["disk.raw", "disk.qcow2", "disk.vmdk"]
            .iter()
            .map(|f| d.join(f))
            .find(|p| p.is_file())
            .with_context(|| format!("{} holds no disk image (disk.raw, disk.qcow2): is it a berth output directory?", d.display()))?,
        None => {
            if !arg.is_file() {
                bail!("{} does not exist: give an image directory, a disk image or a profile", arg.display());
            }
            arg.to_path_buf()
        }
    };
    if DiskFormat::detect(&disk)? == DiskFormat::Raw {
        let mut f = std::fs::File::open(&disk)?;
        gpt::read(&mut f).with_context(|| format!("{} is not a berth disk", disk.display()))?;
    }
    let dir = dir.or_else(|| disk.parent().map(Path::to_path_buf));
    Ok(Target { disk, dir })
}

impl Target {
    /// Direct boot of slot A: the kernel, initrd and command line the build wrote beside the disk.
    pub fn direct_boot(&self, append: Option<&str>) -> Result<Boot> {
        let dir = self.dir.as_deref().unwrap_or(Path::new("."));
        let kernel = dir.join(VMLINUZ);
        let initrd = dir.join(INITRD);
        let manifest = dir.join(MANIFEST);
        for p in [&kernel, &initrd, &manifest] {
            if !p.is_file() {
                bail!(
                    "--direct needs {} (written by `berth build` beside the disk image)",
                    p.display()
                );
            }
        }
        let mut cmdline = BuildManifest::read(dir)?.boot.cmdline;
        if let Some(a) = append {
            cmdline.push(' ');
            cmdline.push_str(a);
        }
        Ok(Boot::Direct {
            kernel,
            initrd,
            cmdline,
        })
    }
}
