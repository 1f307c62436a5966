//! berth: build, run and publish minimal, immutable, A/B-updatable Linux machine images.
//!
//! The build is a chain of plain functions from one typed artifact to the next (see
//! [`build::build`]); each module here is one stage or one format.

pub mod apt;
pub mod boot;
pub mod build;
pub mod catalog;
pub mod cmd;
pub mod containers;
pub mod cpio;
pub mod deb;
pub mod debversion;
pub mod elf;
pub mod ext4;
pub mod fat;
pub mod formats;
pub mod gpt;
pub mod init;
pub mod kmod;
pub mod lock;
pub mod manifest;
pub mod oci;
pub mod output;
pub mod packages;
pub mod printer;
pub mod profile;
pub mod qemu;
pub mod rootfs;
pub mod run;
pub mod sparse;
pub mod units;
pub mod verity;
