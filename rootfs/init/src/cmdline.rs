//! The kernel command line's `berth.*` keys: the contract's [`Cmdline`] (which documents
//! them), read from /proc/cmdline.

pub use berth_contract::cmdline::{Cmdline, Halt};

use crate::Result;

pub fn read() -> Result<Cmdline> {
    Ok(Cmdline::parse(&crate::read_trim("/proc/cmdline")?))
}
