//! Paths of the contract: on the ESP (absolute within the FAT volume), in the initramfs and in
//! the root filesystem.

use alloc::format;
use alloc::string::String;

use crate::{EntryName, Slot};

/// The removable-media path UEFI firmware boots without any NVRAM entry (first boot, clouds):
/// systemd-boot goes here.
pub const ESP_LOADER: &str = "/EFI/BOOT/BOOTX64.EFI";
pub const LOADER_CONF: &str = "/loader/loader.conf";
/// Boot entries, one per slot (see [`crate::entry`]).
pub const ENTRIES_DIR: &str = "/loader/entries";

/// A slot's kernel on the ESP.
pub fn slot_kernel(slot: Slot) -> String {
    format!("/berth/{slot}/vmlinuz")
}

/// A slot's initramfs on the ESP.
pub fn slot_initrd(slot: Slot) -> String {
    format!("/berth/{slot}/initrd")
}

/// An entry's path on the ESP.
pub fn entry(name: &EntryName) -> String {
    format!("{ENTRIES_DIR}/{}", name.file_name())
}

/// Marks the initrd stage (systemd's convention); also holds the image version.
pub const INITRD_RELEASE: &str = "/etc/initrd-release";
/// Modules to load, one path per line relative to `/usr/lib/modules/<kver>/`, dependencies
/// first: in the initramfs for the initrd stage, in the root for the main stage.
pub const MODULE_LIST: &str = "/etc/berth/modules";
/// Services: `name TAB oneshot|daemon TAB image-ref [TAB args]`, one per line.
pub const SERVICES: &str = "/etc/berth/services";
/// OCI archives imported at boot.
pub const IMAGES_DIR: &str = "/usr/share/berth/images";
/// berth-init in the root (PID 1 of the main stage).
pub const INIT: &str = "/usr/sbin/init";
/// Where the initrd stage mounts the root before switching to it.
pub const SYSROOT: &str = "/sysroot";
