//! `berth publish aws`: upload `disk.raw` to an EBS snapshot with the EBS direct APIs and
//! register it as an AMI (x86_64, UEFI, ENA, IMDSv2), optionally copy it to other regions and
//! share it; incrementally when the previous publish's record is given. Anything this run
//! created is deleted again if a later step fails.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use berth_aws::*;
//! let creds = resolve_credentials()?;
//! let region = resolve_region(None)?;
//! let endpoints = Endpoints::resolve(None)?;
//! let disk = disk_in(std::path::Path::new("out/qemu"))?;
//! let req = PublishRequest::new(disk, "berth-1.0.0", "1.0.0", &region);
//! let record = publish(&req, &creds, &endpoints, None)?;
//! record.write(std::path::Path::new("out/qemu/aws-publish.json"))?;
//! # Ok(()) }
//! ```
//!
//! No AWS SDK: SigV4 ([`sigv4`]), the HTTP door ([`http`]), EC2's XML ([`xml`]) are small
//! and written here, so tests see and control every request.

pub mod blocks;
pub mod config;
pub mod ebs;
pub mod ec2;
pub mod http;
mod publish;
pub mod record;
pub mod sigv4;
pub mod time;
pub mod xml;

pub use config::{
    parse_tag, resolve_credentials, resolve_credentials_from, resolve_region, resolve_region_from,
    Credentials, Endpoint, Endpoints, Env, NoCredentials, ProcessEnv,
};
pub use http::{ApiError, RetryPolicy};
pub use publish::{
    disk_in, publish, DiskTooLarge, Interrupted, PublishRequest, DEFAULT_PARALLELISM,
    SNAPSHOT_LIMIT_BYTES,
};
pub use record::{CopiedImage, PreviousPublish, PublishRecord};
