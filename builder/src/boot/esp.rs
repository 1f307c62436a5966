//! The ESP's contents: systemd-boot, `loader.conf`, and slot A's kernel, initrd and boot entry
//! (names, text and command line from the contract).

use std::sync::Arc;

use anyhow::{Context, Result};
use berth_contract::entry::loader_conf;
use berth_contract::paths;
use berth_contract::{BootArgs, BootEntry, EntryName, Guid, Slot};

use crate::fsimage::fat::FatFile;
use crate::fsimage::manifest::{Entry, ImagePath, Kind};
use crate::profile::Profile;

/// Where systemd-boot-efi ships the loader.
const SYSTEMD_BOOT_EFI: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";

/// Takes the systemd-boot EFI binary from the boot package's data.
pub fn systemd_boot_efi(entries: &[(ImagePath, Entry)], package: &str) -> Result<Arc<Vec<u8>>> {
    let want = ImagePath::new(SYSTEMD_BOOT_EFI)?;
    entries
        .iter()
        .find_map(|(p, e)| match &e.kind {
            Kind::File(d) if *p == want => Some(d.clone()),
            _ => None,
        })
        .with_context(|| format!("boot package {package} has no {SYSTEMD_BOOT_EFI}: is boot.package a systemd-boot EFI package?"))
}

/// The boot arguments of a slot's boot entry (the contract's `BootArgs`): the slot's partitions
/// and root hash, then the profile's `kernel.cmdline`. Checked to read back as written.
pub fn boot_args(
    profile: &Profile,
    slot: Slot,
    root: Guid,
    verity: Guid,
    state: Guid,
    roothash: &str,
) -> Result<BootArgs> {
    let args = BootArgs {
        slot,
        version: profile.image.version.clone(),
        root,
        verity,
        roothash: roothash.to_string(),
        state,
        after_ready: None,
        extra: berth_contract::cmdline::extra_words(&profile.kernel.cmdline),
    };
    args.validate().with_context(|| {
        format!(
            "{}: keys `image.version` and `kernel.cmdline` must make a valid kernel command line",
            profile.path.display()
        )
    })?;
    Ok(args)
}

/// The boot entry's file name: `berth-a+3.conf` while it has tries left (boot counting), or
/// `berth-a.conf` when counting is off.
pub fn entry_name(slot: Slot, tries: u32) -> String {
    EntryName::new(slot, tries).file_name()
}

/// Everything on the ESP for a disk whose slot A holds this build.
pub fn esp_files(
    profile: &Profile,
    loader: Arc<Vec<u8>>,
    vmlinuz: Arc<Vec<u8>>,
    initrd: Arc<Vec<u8>>,
    args: &BootArgs,
) -> Vec<FatFile> {
    let slot = args.slot;
    let entry = BootEntry { args: args.clone() };
    let f = |p: &str, d: Arc<Vec<u8>>| FatFile {
        path: p.to_string(),
        data: d,
    };
    vec![
        f(paths::ESP_LOADER, loader),
        f(
            paths::LOADER_CONF,
            Arc::new(loader_conf(profile.boot.timeout).into_bytes()),
        ),
        f(
            &paths::entry(&EntryName::new(slot, profile.boot.tries)),
            Arc::new(entry.text().into_bytes()),
        ),
        f(&paths::slot_kernel(slot), vmlinuz),
        f(&paths::slot_initrd(slot), initrd),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_follow_boot_counting() {
        assert_eq!(entry_name(Slot::A, 3), "berth-a+3.conf");
        assert_eq!(entry_name(Slot::B, 0), "berth-b.conf");
    }
}
