//! berth: build, run and publish minimal, immutable, A/B-updatable Linux machine images.
//!
//! The modules follow the build pipeline (DESIGN.md, "The build pipeline"); [`build::build`]
//! reads as the recipe:
//!
//! - [`profile`]: the image definition, raw -> validated;
//! - [`fetch`]: lock, apt, packages;
//! - [`kernel`]: kernels built from source with `kernel-config/` fragments;
//! - [`root`]: the root filesystem manifest (binaries, ELF closure, kernel modules, init,
//!   containers);
//! - [`fsimage`]: leaf writers (ext4, FAT, cpio, dm-verity);
//! - [`boot`]: initramfs and ESP contents;
//! - [`disk`]: the GPT disk image;
//! - [`formats`]: formats derived from `disk.raw`;
//! - [`outdir`]: the output directory's file names and SHA-256 sums;
//! - [`artifacts`]: the typed `manifest.json` and the last stage that writes it;
//! - [`cache`]: the build cache's key, reuse and store;
//! - [`config`]: machine configs on the host (`berth config check`, `berth run --config`);
//! - [`run`]: booting images in QEMU; [`publish`]: box catalogs;
//! - [`util`]: the subprocess door, printer, sizes, digests, sparse copies, staging.
//!
//! The on-disk contract shared with berth-init is the `berth-contract` crate.

pub mod artifacts;
pub mod boot;
pub mod build;
pub mod cache;
pub mod cluster;
pub mod config;
pub mod disk;
pub mod fetch;
pub mod formats;
pub mod fsimage;
pub mod inspect;
pub mod kernel;
pub mod outdir;
pub mod profile;
pub mod publish;
pub mod root;
pub mod run;
pub mod update;
pub mod util;

/// Sizes are used everywhere; `crate::units` is shorter than `crate::util::units`.
pub use util::units;
