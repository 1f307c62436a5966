//! The root filesystem as a value: the in-memory manifest, assembled from the packages'
//! binaries and their ELF closure, the kernel modules, berth-init, overlays and containers.
//! The stages here: [`assemble`] (Packages -> RootfsManifest), then [`image::root_image`]
//! (-> RootImage, ext4) and [`image::verity`] (-> Verity).

pub mod admin;
pub mod containers;
pub mod elf;
pub mod image;
pub mod init;
pub mod kmod;
pub mod oci;
pub mod oci_import;
pub mod rootfs;

use anyhow::{Context, Result};

use crate::fetch::Packages;
use crate::profile::Profile;
use crate::units::Bytes;
use crate::util::printer::Printer;
use rootfs::RootfsManifest;

/// Packages + init -> the root's manifest: the kernel, the runtime's binaries with their
/// shared-library closure, the module lists, berth-init, overlays, files and containers.
pub fn assemble(
    profile: &Profile,
    packages: &Packages,
    init: &init::Init,
    printer: &Printer,
) -> Result<RootfsManifest> {
    let step = printer.step("assemble rootfs");
    let kernel_pkg = packages
        .kernel
        .iter()
        .find(|d| {
            d.entries
                .iter()
                .any(|(p, _)| p.as_str().starts_with("/boot/vmlinuz-"))
        })
        .with_context(|| {
            format!(
                "no package of kernel {} ships a /boot/vmlinuz-*",
                profile.kernel.package
            )
        })?;
    let mut rootfs = rootfs::assemble(profile, kernel_pkg, &packages.runtime, &init.bytes)?;
    kmod::add_module_files(profile, &mut rootfs)?;
    let for_images: Vec<&crate::fetch::PackageData> =
        packages.image.iter().chain(&packages.runtime).collect();
    containers::add_containers(profile, &for_images, &init.bytes, &mut rootfs)?;
    add_update_policy(profile, &mut rootfs)?;
    step.done(&format!(
        "{} entries, {} of files, kernel {}",
        rootfs.manifest.len(),
        Bytes(rootfs.manifest.content_bytes()),
        rootfs.kernel.version
    ));
    Ok(rootfs)
}

/// What machines check update bundles with: the release key, or the explicit consent to
/// unsigned bundles.
fn add_update_policy(profile: &Profile, rootfs: &mut RootfsManifest) -> Result<()> {
    use crate::fsimage::manifest::{Entry, ImagePath};
    use berth_contract::paths::{HEALTH_POLICY, UPDATE_ALLOW_UNSIGNED, UPDATE_KEY, UPDATE_POLICY};
    let sde = profile.image.source_date_epoch;
    rootfs.manifest.insert(
        ImagePath::new(UPDATE_POLICY)?,
        Entry::file(profile.update.policy().text(), 0o644, sde),
    )?;
    rootfs.manifest.insert(
        ImagePath::new(HEALTH_POLICY)?,
        Entry::file(profile.boot.health().text(), 0o644, sde),
    )?;
    if let Some(k) = &profile.update.public_key {
        let key = crate::util::keys::read_public(k)?;
        rootfs.manifest.insert(
            ImagePath::new(UPDATE_KEY)?,
            Entry::file(crate::util::keys::public_line(&key), 0o644, sde),
        )?;
    } else if profile.update.allow_unsigned {
        rootfs.manifest.insert(
            ImagePath::new(UPDATE_ALLOW_UNSIGNED)?,
            Entry::file(
                "unsigned update bundles are accepted (profile: update.allow-unsigned)\n",
                0o644,
                sde,
            ),
        )?;
    }
    Ok(())
}
