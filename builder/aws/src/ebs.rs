//! EBS direct APIs (REST + JSON): write a snapshot block by block, and read one back.

use base64::Engine;
use serde::Deserialize;

use crate::config::Endpoint;
use crate::http::{ApiError, Call, Client};

pub struct Ebs<'a> {
    pub http: &'a Client,
    pub endpoint: Endpoint,
    pub region: String,
}

#[derive(Debug, Clone, Default)]
pub struct StartSnapshot<'a> {
    pub volume_size_gib: u64,
    pub parent_snapshot_id: Option<&'a str>,
    pub description: &'a str,
    pub tags: &'a [(String, String)],
    pub client_token: &'a str,
    pub timeout_minutes: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Started {
    pub snapshot_id: String,
    #[serde(default)]
    pub block_size: Option<u64>,
    #[serde(default)]
    pub status: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListBlocks {
    #[serde(default)]
    blocks: Vec<ListedBlock>,
    #[serde(default)]
    next_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListedBlock {
    // A number from AWS; moto sends a string.
    block_index: serde_json::Value,
    #[serde(default)]
    block_token: Option<String>,
}

fn bad_body(action: &'static str, ep: &Endpoint, status: u16, why: String) -> ApiError {
    ApiError {
        action,
        endpoint: ep.to_string(),
        status: Some(status),
        code: "UnexpectedResponse".into(),
        message: why,
        attempts: 1,
    }
}

impl Ebs<'_> {
    fn call<'b>(&'b self, action: &'static str, method: &'static str, path: String) -> Call<'b> {
        Call {
            action,
            service: "ebs",
            region: &self.region,
            endpoint: &self.endpoint,
            method,
            path,
            query: Vec::new(),
            headers: Vec::new(),
            body: &[],
            body_sha256: None,
        }
    }

    pub fn start_snapshot(&self, req: &StartSnapshot) -> Result<Started, ApiError> {
        let mut body = serde_json::json!({
            "VolumeSize": req.volume_size_gib,
            "ClientToken": req.client_token,
            "Timeout": req.timeout_minutes,
            "Description": req.description,
        });
        if let Some(p) = req.parent_snapshot_id {
            body["ParentSnapshotId"] = p.into();
        }
        if !req.tags.is_empty() {
            body["Tags"] = req
                .tags
                .iter()
                .map(|(k, v)| serde_json::json!({"Key": k, "Value": v}))
                .collect();
        }
        let body = serde_json::to_vec(&body).expect("JSON of plain values");
        let mut call = self.call("StartSnapshot", "POST", "/snapshots".into());
        call.headers
            .push(("content-type".into(), "application/json".into()));
        call.body = &body;
        let r = self.http.send(&call)?;
        serde_json::from_slice(&r.body).map_err(|e| {
            bad_body(
                "StartSnapshot",
                &self.endpoint,
                r.status,
                format!("unreadable answer ({e}): {}", r.text()),
            )
        })
    }

    /// Writes one 512 KiB block; `sha256` is the block's digest (sent as `x-amz-Checksum` and
    /// reused as the signed payload hash).
    pub fn put_block(
        &self,
        snapshot_id: &str,
        index: u64,
        data: &[u8],
        sha256: [u8; 32],
        progress_percent: Option<u8>,
    ) -> Result<(), ApiError> {
        let mut call = self.call(
            "PutSnapshotBlock",
            "PUT",
            format!("/snapshots/{snapshot_id}/blocks/{index}"),
        );
        call.headers = vec![
            ("content-type".into(), "application/octet-stream".into()),
            ("x-amz-data-length".into(), data.len().to_string()),
            (
                "x-amz-checksum".into(),
                base64::engine::general_purpose::STANDARD.encode(sha256),
            ),
            ("x-amz-checksum-algorithm".into(), "SHA256".into()),
        ];
        if let Some(p) = progress_percent {
            call.headers
                .push(("x-amz-progress".into(), p.min(100).to_string()));
        }
        call.body = data;
        call.body_sha256 = Some(sha256);
        self.http.send(&call).map(|_| ())
    }

    /// Seals the snapshot; returns the status EBS reports (`pending` or `completed`).
    pub fn complete(&self, snapshot_id: &str, changed_blocks: u64) -> Result<String, ApiError> {
        let mut call = self.call(
            "CompleteSnapshot",
            "POST",
            format!("/snapshots/completion/{snapshot_id}"),
        );
        call.headers.push((
            "x-amz-changedblockscount".into(),
            changed_blocks.to_string(),
        ));
        let r = self.http.send(&call)?;
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        Ok(v.get("Status")
            .and_then(|s| s.as_str())
            .unwrap_or("pending")
            .to_string())
    }

    /// Every block the snapshot holds: (index, block token), following pages.
    pub fn list_blocks(&self, snapshot_id: &str) -> Result<Vec<(u64, String)>, ApiError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut call = self.call(
                "ListSnapshotBlocks",
                "GET",
                format!("/snapshots/{snapshot_id}/blocks"),
            );
            call.query.push(("maxResults".into(), "10000".into()));
            if let Some(t) = &token {
                call.query.push(("pageToken".into(), t.clone()));
            }
            let r = self.http.send(&call)?;
            let page: ListBlocks = serde_json::from_slice(&r.body).map_err(|e| {
                bad_body(
                    "ListSnapshotBlocks",
                    &self.endpoint,
                    r.status,
                    e.to_string(),
                )
            })?;
            for b in page.blocks {
                let index = match &b.block_index {
                    serde_json::Value::Number(n) => n.as_u64(),
                    serde_json::Value::String(s) => s.parse().ok(),
                    _ => None,
                }
                .ok_or_else(|| {
                    bad_body(
                        "ListSnapshotBlocks",
                        &self.endpoint,
                        r.status,
                        format!("bad BlockIndex {}", b.block_index),
                    )
                })?;
                out.push((index, b.block_token.unwrap_or_default()));
            }
            match page.next_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        out.sort();
        Ok(out)
    }

    pub fn get_block(
        &self,
        snapshot_id: &str,
        index: u64,
        token: &str,
    ) -> Result<Vec<u8>, ApiError> {
        let mut call = self.call(
            "GetSnapshotBlock",
            "GET",
            format!("/snapshots/{snapshot_id}/blocks/{index}"),
        );
        call.query.push(("blockToken".into(), token.into()));
        Ok(self.http.send(&call)?.body)
    }
}
