//! berth: build, run and publish minimal, immutable, A/B-updatable Linux machine images.
//!
//! The build is a chain of plain functions from one typed artifact to the next (see
//! [`build::build`]); each module here is one stage or one format.

pub mod deb;
pub mod ext4;
pub mod manifest;
pub mod verity;
