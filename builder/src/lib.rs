//! berth: build, run and publish minimal, immutable, A/B-updatable Linux machine images.
//!
//! The modules follow the build pipeline (DESIGN.md, "The build pipeline"); [`build::build`]
//! reads as the recipe:
//!
//! - [`profile`]: the image definition, raw -> validated;
//! - [`fetch`]: lock, apt, packages;
//! - [`root`]: the root filesystem manifest (binaries, ELF closure, kernel modules, init,
//!   containers);
//! - [`fsimage`]: leaf writers (ext4, FAT, cpio, dm-verity);
//! - [`boot`]: initramfs and ESP contents;
//! - [`disk`]: the GPT disk image;
//! - [`formats`]: formats derived from `disk.raw`;
//! - [`artifacts`]: file names, the typed `manifest.json`, SHA256SUMS;
//! - [`cache`]: the build cache's key, reuse and store;
//! - [`run`]: booting images in QEMU; [`publish`]: box catalogs;
//! - [`util`]: the subprocess door, printer, sizes, digests, sparse copies, staging.
//!
//! The on-disk contract shared with berth-init is the `berth-contract` crate.

pub mod artifacts;
pub mod boot;
pub mod build;
pub mod cache;
pub mod disk;
pub mod fetch;
pub mod formats;
pub mod fsimage;
pub mod inspect;
pub mod profile;
pub mod publish;
pub mod root;
pub mod run;
pub mod util;

/// Sizes are used everywhere; `crate::units` is shorter than `crate::util::units`.
pub use util::units;
