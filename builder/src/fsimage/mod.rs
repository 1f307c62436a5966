//! Leaf writers from a manifest or bytes to filesystem images: ext4, FAT, cpio and the dm-verity
//! hash tree. They know nothing of profiles.

pub mod cpio;
pub mod ext4;
pub mod fat;
pub mod manifest;
pub mod verity;
