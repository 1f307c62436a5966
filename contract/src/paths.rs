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
/// The fw_cfg sysfs driver (relative to `/usr/lib/modules/<kver>/`), which berth-init loads
/// itself when it looks for a machine config: the Debian cloud kernel has it as a module.
pub const FW_CFG_MODULE: &str = "kernel/drivers/firmware/qemu_fw_cfg.ko";
/// Filesystem modules a config drive may need, in load order (dependencies first), loaded by
/// berth-init when it finds one. Missing ones are built in, or not needed.
pub const DRIVE_MODULES: &[&str] = &[
    "kernel/fs/fat/fat.ko",
    "kernel/fs/fat/vfat.ko",
    "kernel/fs/nls/nls_cp437.ko",
    "kernel/fs/nls/nls_ascii.ko",
    "kernel/fs/isofs/isofs.ko",
];
/// The image's container services (JSON, [`crate::service`]).
pub const SERVICES: &str = crate::service::SERVICES_FILE;
/// SSH public keys baked into the image for the admin container (one per line).
pub const IMAGE_AUTHORIZED_KEYS: &str = "/etc/berth/ssh/authorized_keys";
/// The admin container's `~/.ssh`: the image's keys and the machine config's, joined at boot.
pub const ADMIN_SSH_DIR: &str = "/run/berth/ssh";
/// The admin container's host keys, made on its first start and kept.
pub const ADMIN_HOST_KEYS: &str = "/var/lib/berth/admin/hostkeys";
/// Container services' logs: `NAME.log`, rotated to `NAME.log.1`.
pub const SERVICE_LOG_DIR: &str = "/var/log/berth";
/// PID 1's view of the services, for `berthctl services` (one line each, tab-separated).
pub const SERVICE_STATE: &str = "/run/berth/services";
/// OCI archives imported at boot.
pub const IMAGES_DIR: &str = "/usr/share/berth/images";
/// berth-init in the root (PID 1 of the main stage).
pub const INIT: &str = "/usr/sbin/init";
/// Where the initrd stage mounts the root before switching to it.
pub const SYSROOT: &str = "/sysroot";

/// The release key machines check update bundles with (a `berth-ed25519 <hex>` line).
pub const UPDATE_KEY: &str = "/usr/share/berth/update/release.pub";
/// Present when the image accepts unsigned bundles (a profile without a key said so).
pub const UPDATE_ALLOW_UNSIGNED: &str = "/usr/share/berth/update/allow-unsigned";
/// The image's boot-health policy ([`crate::health::Policy`]).
pub const HEALTH_POLICY: &str = "/usr/share/berth/health";
/// Boot-health records on the state partition: per slot, why its last boot failed
/// (`slot-<x>`) and how many of its boots in a row were not good (`streak-<x>`).
pub const HEALTH_DIR: &str = "/var/lib/berth/health";
/// The image's update policy ([`crate::channel::Policy`]).
pub const UPDATE_POLICY: &str = "/usr/share/berth/update/policy";
/// The policy in effect (the image's with the machine config's `update` over it), written by
/// PID 1 at boot for berthctl.
pub const UPDATE_POLICY_RUN: &str = "/run/berth/update-policy";
/// Present (holding the version) when an update was applied and waits for its reboot.
pub const UPDATE_PENDING: &str = "/run/berth/update-pending";
/// Present while this machine holds the cluster's reboot lock (`berth_contract::lock`): the
/// holder's name and the version it rebooted for, one per line. On /var, so it outlives the
/// reboot it was taken for.
pub const REBOOT_LOCK: &str = "/var/lib/berth/update/reboot-lock";
