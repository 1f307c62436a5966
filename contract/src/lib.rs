//! The on-disk contract between `berth build` (which writes a disk) and berth-init (which boots
//! it, blesses it and, with updates, rewrites half of it). One description of the disk, used by
//! both sides, so the two cannot disagree without a unit test here noticing.
//!
//! - [`Guid`], [`crc32`], the partition types and attribute bits ([`dps`]), [`Slot`];
//! - the disk layout plan ([`plan`], [`DiskLayout`]) and the GPT codec with the edits the init
//!   makes ([`gpt::Table`]: grow the last partition, set a slot's GUIDs, mark a slot
//!   active/inactive);
//! - the dm-verity superblock ([`verity::Superblock`]);
//! - the kernel command line ([`BootArgs`], [`Cmdline`]);
//! - boot entry names and text ([`EntryName`], [`BootEntry`]);
//! - the paths both sides use ([`paths`]).
//!
//! No I/O and no dependencies: `no_std` with `alloc`, since the static init links it. Errors
//! are one small enum, [`Error`]. The prose of the contract (console lines, stages) is in
//! `rootfs/init/README.md`.

#![no_std]

extern crate alloc;

pub mod bundle;
pub mod channel;
pub mod cmdline;
pub mod config;
mod crc32;
pub mod dps;
pub mod entry;
mod error;
pub mod gpt;
mod guid;
pub mod health;
pub mod json;
pub mod layout;
pub mod lock;
pub mod paths;
mod schema;
pub mod service;
mod slot;
pub mod units;
pub mod verity;

pub use cmdline::{BootArgs, Cmdline, Halt};
pub use crc32::crc32;
pub use entry::{BootEntry, EntryName, Tries};
pub use error::{Error, Result};
pub use guid::Guid;
pub use layout::{plan, roothash_partuuids, DiskLayout, DiskSpec, PartitionPlan};
pub use slot::Slot;
pub use units::{Bytes, SECTOR};
