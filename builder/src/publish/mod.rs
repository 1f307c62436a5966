//! Shipping built images: the AWS publish request made from an image directory (the upload
//! itself is the berth-aws crate), and the Vagrant box catalog.

pub mod catalog;
pub mod channel;

use std::path::Path;

use anyhow::Result;

use crate::artifacts::BuildManifest;

/// The AMI publish of the image in `image_dir`: its disk, `NAME-VERSION` as the AMI name and
/// a description naming the root hash, all from manifest.json.
pub fn aws_request(image_dir: &Path, region: &str) -> Result<berth_aws::PublishRequest> {
    let m = BuildManifest::read(image_dir)?;
    let disk = berth_aws::disk_in(image_dir)?;
    let (name, version) = (&m.image.name, &m.image.version);
    let mut req =
        berth_aws::PublishRequest::new(disk, &format!("{name}-{version}"), version, region);
    req.description = format!("berth {name} {version} (roothash {})", m.verity.roothash);
    Ok(req)
}
