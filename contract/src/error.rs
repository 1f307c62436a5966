//! The contract's one error type: small, `no_std`, and enough for a caller to branch on.

use alloc::string::String;
use core::fmt;

/// Why bytes or values do not meet the contract. The message names the structure and field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// Not a GPT disk at all (no protective MBR, no `EFI PART` signature).
    NotGpt(String),
    /// A GPT or a verity superblock that fails its own checks (CRC, sizes, signature).
    Corrupt(String),
    /// A sound GPT that is not berth's six-partition layout.
    NotBerth(String),
    /// A value the contract does not allow: a size, a GUID, a command-line key, an entry name.
    Invalid(String),
}

impl Error {
    /// The message without the kind's prefix.
    pub fn message(&self) -> &str {
        match self {
            Error::NotGpt(m) | Error::Corrupt(m) | Error::NotBerth(m) | Error::Invalid(m) => m,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotGpt(m) => write!(f, "not a GPT disk: {m}"),
            Error::Corrupt(m) => write!(f, "damaged: {m}"),
            Error::NotBerth(m) => write!(f, "a GPT disk, but not a berth layout: {m}"),
            Error::Invalid(m) => f.write_str(m),
        }
    }
}

impl core::error::Error for Error {}

pub type Result<T> = core::result::Result<T, Error>;
