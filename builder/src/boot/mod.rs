//! The boot side of a build: the initramfs and the ESP's contents. What berth-init expects of
//! them is the contract (`berth_contract`) and `rootfs/init/README.md`. The stage here:
//! [`files`] (RootfsManifest -> BootFiles).

pub mod esp;
pub mod initramfs;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::fetch::Packages;
use crate::outdir::{FileSum, INITRD, VMLINUZ};
use crate::profile::Profile;
use crate::root::init::Init;
use crate::root::rootfs::RootfsManifest;
use crate::units::Bytes;
use crate::util::printer::Printer;

/// What the ESP gets for a slot, besides its entry: the kernel, the initramfs, the loader.
pub struct BootFiles {
    pub vmlinuz: Arc<Vec<u8>>,
    pub initrd: Arc<Vec<u8>>,
    /// systemd-boot's EFI binary.
    pub loader: Arc<Vec<u8>>,
    pub initrd_modules: usize,
    /// Sums of `vmlinuz` and `initrd`, written beside the disk for `berth run --direct`.
    pub sums: Vec<FileSum>,
}

/// RootfsManifest -> BootFiles: the initramfs (berth-init + the modules the boot needs), the
/// kernel from the root, systemd-boot from the boot package; `vmlinuz` and `initrd` are also
/// written to `out`. The compressed initramfs comes from `cache_dir` when it holds it.
pub fn files(
    profile: &Profile,
    packages: &Packages,
    rootfs: &RootfsManifest,
    init: &Init,
    out: &Path,
    cache_dir: Option<&Path>,
    printer: &Printer,
) -> Result<BootFiles> {
    let step = printer.step("initramfs");
    let (initrd, initrd_modules) = initramfs::initramfs(profile, rootfs, &init.bytes, cache_dir)?;
    let vmlinuz = rootfs.kernel.vmlinuz.clone();
    let boot_pkg = packages
        .boot
        .iter()
        .find(|d| d.name == profile.boot.package)
        .with_context(|| {
            format!(
                "boot package {} was not fetched (is the lock current?)",
                profile.boot.package
            )
        })?;
    let loader = esp::systemd_boot_efi(&boot_pkg.entries, &boot_pkg.name)?;
    for (name, data) in [(INITRD, &initrd[..]), (VMLINUZ, vmlinuz.as_slice())] {
        let p = out.join(name);
        fs::write(&p, data).with_context(|| format!("writing {}", p.display()))?;
    }
    let sums = vec![
        FileSum::of_bytes(VMLINUZ, &vmlinuz),
        FileSum::of_bytes(INITRD, &initrd),
    ];
    step.done(&format!(
        "{initrd_modules} modules, {}",
        Bytes(initrd.len() as u64)
    ));
    Ok(BootFiles {
        vmlinuz,
        initrd: Arc::new(initrd),
        loader,
        initrd_modules,
        sums,
    })
}
