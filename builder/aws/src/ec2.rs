//! The EC2 Query API calls berth makes (form-encoded POST, XML answers).

use crate::config::Endpoint;
use crate::http::{ApiError, Call, Client};
use crate::sigv4::uri_encode;
use crate::xml;

/// The EC2 API version every call names.
const API_VERSION: &str = "2016-11-15";

pub struct Ec2<'a> {
    pub http: &'a Client,
    pub endpoint: Endpoint,
    pub region: String,
}

/// Parameters for RegisterImage beyond the fixed ones (x86_64, hvm, UEFI, ENA, IMDSv2).
pub struct RegisterImage<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub snapshot_id: &'a str,
    pub volume_size_gib: u64,
    pub tags: &'a [(String, String)],
}

#[derive(Debug, Clone)]
pub struct ImageState {
    pub state: String,
    pub snapshot_ids: Vec<String>,
    pub reason: Option<String>,
}

/// `a=b&c=d` as a form body (same encoding as the signed query strings).
pub fn form(params: &[(String, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", uri_encode(k, false), uri_encode(v, false)))
        .collect::<Vec<_>>()
        .join("&")
}

fn p(k: impl Into<String>, v: impl Into<String>) -> (String, String) {
    (k.into(), v.into())
}

/// The full parameter list berth sends to RegisterImage (public for the tests that check it).
pub fn register_image_params(r: &RegisterImage) -> Vec<(String, String)> {
    let mut ps = vec![
        p("Name", r.name),
        p("Description", r.description),
        p("Architecture", "x86_64"),
        p("VirtualizationType", "hvm"),
        p("RootDeviceName", "/dev/xvda"),
        p("BlockDeviceMapping.1.DeviceName", "/dev/xvda"),
        p("BlockDeviceMapping.1.Ebs.SnapshotId", r.snapshot_id),
        p(
            "BlockDeviceMapping.1.Ebs.VolumeSize",
            r.volume_size_gib.to_string(),
        ),
        p("BlockDeviceMapping.1.Ebs.VolumeType", "gp3"),
        p("BlockDeviceMapping.1.Ebs.DeleteOnTermination", "true"),
        p("EnaSupport", "true"),
        p("SriovNetSupport", "simple"),
        p("BootMode", "uefi"),
        p("ImdsSupport", "v2.0"),
    ];
    // Only ResourceType=image is valid here (RegisterImage rejects others); the snapshot got
    // the same tags at StartSnapshot.
    if !r.tags.is_empty() {
        ps.push(p("TagSpecification.1.ResourceType", "image"));
        for (i, (k, v)) in r.tags.iter().enumerate() {
            ps.push(p(format!("TagSpecification.1.Tag.{}.Key", i + 1), k));
            ps.push(p(format!("TagSpecification.1.Tag.{}.Value", i + 1), v));
        }
    }
    ps
}

impl Ec2<'_> {
    pub fn call(
        &self,
        action: &'static str,
        params: &[(String, String)],
    ) -> Result<String, ApiError> {
        let mut all = vec![p("Action", action), p("Version", API_VERSION)];
        all.extend_from_slice(params);
        let body = form(&all);
        let call = Call {
            action,
            service: "ec2",
            region: &self.region,
            endpoint: &self.endpoint,
            method: "POST",
            path: "/".into(),
            query: Vec::new(),
            headers: vec![p(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )],
            body: body.as_bytes(),
            body_sha256: None,
        };
        Ok(self.http.send(&call)?.text())
    }

    fn missing(&self, action: &'static str, what: &str, doc: &str) -> ApiError {
        ApiError {
            action,
            endpoint: self.endpoint.to_string(),
            status: Some(200),
            code: "UnexpectedResponse".into(),
            message: format!(
                "no {what} in the answer: {}",
                doc.chars().take(300).collect::<String>()
            ),
            attempts: 1,
        }
    }

    /// (status, progress, state message) of one snapshot; `None` if EC2 does not know it.
    pub fn snapshot_state(
        &self,
        id: &str,
    ) -> Result<Option<(String, String, Option<String>)>, ApiError> {
        let doc = match self.call("DescribeSnapshots", &[p("SnapshotId.1", id)]) {
            Ok(d) => d,
            Err(e) if e.code == "InvalidSnapshot.NotFound" => return Ok(None),
            Err(e) => return Err(e),
        };
        let set = xml::elements(&doc, "snapshotSet");
        let Some(item) = set
            .first()
            .and_then(|s| xml::elements(s, "item").into_iter().next())
        else {
            return Ok(None);
        };
        let status = xml::first(item, "status")
            .ok_or_else(|| self.missing("DescribeSnapshots", "status", &doc))?;
        Ok(Some((
            status,
            xml::first(item, "progress").unwrap_or_default(),
            xml::first(item, "stateMessage"),
        )))
    }

    pub fn register_image(&self, r: &RegisterImage) -> Result<String, ApiError> {
        let doc = self.call("RegisterImage", &register_image_params(r))?;
        xml::first(&doc, "imageId").ok_or_else(|| self.missing("RegisterImage", "imageId", &doc))
    }

    pub fn image_state(&self, id: &str) -> Result<Option<ImageState>, ApiError> {
        let doc = match self.call("DescribeImages", &[p("ImageId.1", id)]) {
            Ok(d) => d,
            Err(e) if e.code == "InvalidAMIID.NotFound" => return Ok(None),
            Err(e) => return Err(e),
        };
        let set = xml::elements(&doc, "imagesSet");
        let Some(item) = set
            .first()
            .and_then(|s| xml::elements(s, "item").into_iter().next())
        else {
            return Ok(None);
        };
        Ok(Some(ImageState {
            state: xml::first(item, "imageState").unwrap_or_default(),
            snapshot_ids: xml::all(item, "snapshotId"),
            reason: xml::first(item, "stateReason").and_then(|r| xml::first(&r, "message")),
        }))
    }

    pub fn deregister_image(&self, id: &str) -> Result<(), ApiError> {
        self.call("DeregisterImage", &[p("ImageId", id)])
            .map(|_| ())
    }

    pub fn delete_snapshot(&self, id: &str) -> Result<(), ApiError> {
        self.call("DeleteSnapshot", &[p("SnapshotId", id)])
            .map(|_| ())
    }

    /// Copies `source_image` from `source_region` into this client's region.
    pub fn copy_image(
        &self,
        source_region: &str,
        source_image: &str,
        name: &str,
        description: &str,
        client_token: &str,
    ) -> Result<String, ApiError> {
        let doc = self.call(
            "CopyImage",
            &[
                p("SourceRegion", source_region),
                p("SourceImageId", source_image),
                p("Name", name),
                p("Description", description),
                p("ClientToken", client_token),
                p("CopyImageTags", "true"),
            ],
        )?;
        xml::first(&doc, "imageId").ok_or_else(|| self.missing("CopyImage", "imageId", &doc))
    }

    pub fn add_launch_permissions(
        &self,
        image: &str,
        users: &[String],
        public: bool,
    ) -> Result<(), ApiError> {
        let mut ps = vec![p("ImageId", image)];
        let mut n = 0;
        for u in users {
            n += 1;
            ps.push(p(format!("LaunchPermission.Add.{n}.UserId"), u));
        }
        if public {
            n += 1;
            ps.push(p(format!("LaunchPermission.Add.{n}.Group"), "all"));
        }
        if n == 0 {
            return Ok(());
        }
        self.call("ModifyImageAttribute", &ps).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_params_are_complete() {
        let tags = vec![("berth:version".to_string(), "1.2 beta".to_string())];
        let ps = register_image_params(&RegisterImage {
            name: "berth-1.2",
            description: "d",
            snapshot_id: "snap-1",
            volume_size_gib: 3,
            tags: &tags,
        });
        let body = form(&ps);
        for want in [
            "Architecture=x86_64",
            "VirtualizationType=hvm",
            "RootDeviceName=%2Fdev%2Fxvda",
            "BlockDeviceMapping.1.Ebs.SnapshotId=snap-1",
            "EnaSupport=true",
            "SriovNetSupport=simple",
            "BootMode=uefi",
            "ImdsSupport=v2.0",
            "TagSpecification.1.ResourceType=image",
            "TagSpecification.1.Tag.1.Value=1.2%20beta",
        ] {
            assert!(body.contains(want), "{want} not in {body}");
        }
    }
}
