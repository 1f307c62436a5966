//! Helpers every phase uses: the one door to subprocesses, the printer, sizes, sparse copies,
//! content-derived digests and the all-or-nothing output directory.

pub mod cmd;
pub mod digest;
pub mod keys;
pub mod output;
pub mod printer;
pub mod sparse;
pub mod units;
