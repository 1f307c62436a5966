//! What a publish produced, as JSON: what the user reads, and what the next publish of the
//! same image reads to upload only the blocks that changed.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::blocks::{BlockMap, BLOCK_SIZE};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CopiedImage {
    pub region: String,
    pub ami_id: String,
}

/// The JSON record of one publish. Field names are stable: later versions of berth read
/// records written by earlier ones.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PublishRecord {
    pub image_name: String,
    pub version: String,
    pub description: String,
    pub region: String,
    pub snapshot_id: String,
    pub ami_id: String,
    /// The snapshot this one was built on (incremental publish), if any.
    pub parent_snapshot_id: Option<String>,
    pub copies: Vec<CopiedImage>,
    pub launch_permission_users: Vec<String>,
    pub public: bool,
    pub tags: Vec<(String, String)>,
    pub disk_bytes: u64,
    pub volume_size_gib: u64,
    pub block_size: u64,
    pub blocks_total: u64,
    pub blocks_nonzero: u64,
    pub blocks_sent: u64,
    pub bytes_sent: u64,
    /// Hex SHA-256 of each 512 KiB block of the disk, `null` for an all-zero block.
    pub block_sha256s: Vec<Option<String>>,
    pub started_at: String,
    pub finished_at: String,
    pub upload_seconds: f64,
}

/// The previous publish an incremental one builds on: its snapshot and block hashes.
#[derive(Clone, Debug)]
pub struct PreviousPublish {
    pub snapshot_id: String,
    pub region: String,
    pub blocks: BlockMap,
}

impl PublishRecord {
    pub fn read(path: &Path) -> Result<PublishRecord> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading publish record {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("parsing publish record {}", path.display()))
    }

    /// Writes the record next to `path` and renames it into place, so a reader never sees
    /// half a record.
    pub fn write(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).expect("record serializes");
        std::fs::write(&tmp, text + "\n").with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    }

    pub fn previous(&self) -> Result<PreviousPublish> {
        if self.block_size != BLOCK_SIZE {
            bail!(
                "record of {} has block size {}, expected {BLOCK_SIZE}",
                self.snapshot_id,
                self.block_size
            );
        }
        let hashes = self
            .block_sha256s
            .iter()
            .enumerate()
            .map(|(i, h)| match h {
                None => Ok(None),
                Some(h) => {
                    let mut out = [0u8; 32];
                    hex::decode_to_slice(h, &mut out)
                        .with_context(|| format!("block_sha256s[{i}] is not a SHA-256: {h:?}"))?;
                    Ok(Some(out))
                }
            })
            .collect::<Result<Vec<_>>>()?;
        if hashes.len() as u64 != BlockMap::blocks(self.disk_bytes) {
            bail!(
                "record of {} lists {} blocks for a {}-byte disk",
                self.snapshot_id,
                hashes.len(),
                self.disk_bytes
            );
        }
        Ok(PreviousPublish {
            snapshot_id: self.snapshot_id.clone(),
            region: self.region.clone(),
            blocks: BlockMap {
                disk_bytes: self.disk_bytes,
                hashes,
            },
        })
    }
}
