//! Sizes as a newtype, so a count of sectors is never added to a count of bytes by accident.
//! The type is the contract's (its layout plan speaks in it); profiles parse it through serde.

pub use berth_contract::units::{Bytes, GIB, KIB, MIB};
