//! The publish recipe: scan -> StartSnapshot -> PutSnapshotBlock x N -> CompleteSnapshot ->
//! wait -> RegisterImage -> CopyImage -> launch permissions, with everything this run created
//! deleted again when a step fails.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use crate::blocks::{self, BlockMap, BLOCK_SIZE};
use crate::config::{check_region, Credentials, Endpoints};
use crate::ebs::{Ebs, StartSnapshot};
use crate::ec2::{Ec2, RegisterImage};
use crate::http::{Client, RetryPolicy};
use crate::record::{CopiedImage, PreviousPublish, PublishRecord};
use crate::time::AmzTime;

/// EBS direct APIs write snapshots of volumes up to 64 TiB (the largest EBS volume).
pub const SNAPSHOT_LIMIT_BYTES: u64 = 64 << 40;
/// Concurrent PutSnapshotBlock requests. EBS direct throttles per snapshot well above this;
/// 8 keeps a 1 Gbit/s link busy (8 x 512 KiB in flight) without many retries.
pub const DEFAULT_PARALLELISM: usize = 8;
/// StartSnapshot's Timeout (minutes without a written block before EBS gives up on the
/// snapshot); AWS's own default.
pub const SNAPSHOT_TIMEOUT_MINUTES: u32 = 60;
/// How long to wait for the snapshot to complete and images to become available: large
/// snapshots take minutes, copies to far regions longer.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(45 * 60);

const GIB: u64 = 1 << 30;
/// Tags per EC2/EBS resource.
const MAX_TAGS: usize = 50;

/// The disk is larger than an EBS snapshot can be.
#[derive(Debug, thiserror::Error)]
#[error("{} is {bytes} bytes ({:.1} TiB): EBS direct snapshots hold at most 64 TiB", path.display(), *bytes as f64 / (1u64 << 40) as f64)]
pub struct DiskTooLarge {
    pub path: PathBuf,
    pub bytes: u64,
}

/// The publish was asked to stop (Ctrl-C: [`PublishRequest::cancel`] was set); what it had
/// created is deleted, as for any failure.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

#[derive(Clone, Debug)]
pub struct PublishRequest {
    /// The raw disk image (`disk.raw` of an image directory; see [`disk_in`]).
    pub disk: PathBuf,
    /// AMI name: unique per account and region, 3-128 characters of `A-Za-z0-9 ()[]./-'@_`.
    pub image_name: String,
    pub description: String,
    /// Tags for the snapshot and the image; `berth:image` and `berth:version` are added.
    pub tags: Vec<(String, String)>,
    pub version: String,
    pub region: String,
    pub copy_to_regions: Vec<String>,
    /// 12-digit account IDs allowed to launch the image (and its copies).
    pub launch_permission_users: Vec<String>,
    /// Make the image (and copies) launchable by everyone.
    pub public: bool,
    pub parallelism: usize,
    /// The previous publish of this image: only changed blocks are sent.
    pub previous: Option<PreviousPublish>,
    pub retry: RetryPolicy,
    /// Bound on each wait (snapshot completion, image availability).
    pub wait_timeout: Duration,
    /// Set it (from a signal handler, say) to stop the publish at the next block or poll; the
    /// run then deletes what it created and fails with [`Interrupted`].
    pub cancel: Arc<AtomicBool>,
}

impl PublishRequest {
    pub fn new(disk: impl Into<PathBuf>, image_name: &str, version: &str, region: &str) -> Self {
        PublishRequest {
            disk: disk.into(),
            image_name: image_name.into(),
            description: format!("berth {version}"),
            tags: Vec::new(),
            version: version.into(),
            region: region.into(),
            copy_to_regions: Vec::new(),
            launch_permission_users: Vec::new(),
            public: false,
            parallelism: DEFAULT_PARALLELISM,
            previous: None,
            retry: RetryPolicy::default(),
            wait_timeout: DEFAULT_WAIT,
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Fails with [`Interrupted`] once `cancel` is set.
    fn check_cancel(&self) -> Result<()> {
        if self.cancel.load(Ordering::SeqCst) {
            return Err(Interrupted.into());
        }
        Ok(())
    }

    fn all_tags(&self) -> Vec<(String, String)> {
        let mut tags = self.tags.clone();
        for (k, v) in [
            ("berth:image", &self.image_name),
            ("berth:version", &self.version),
        ] {
            if !tags.iter().any(|(tk, _)| tk == k) {
                tags.push((k.to_string(), v.clone()));
            }
        }
        tags
    }
}

/// `IMAGE_DIR/disk.raw`, or an error saying the directory has none.
pub fn disk_in(image_dir: &Path) -> Result<PathBuf> {
    if !image_dir.is_dir() {
        bail!("{} is not an image directory (it does not exist or is not a directory): pass the output directory of `berth build`", image_dir.display());
    }
    let disk = image_dir.join("disk.raw");
    if !disk.is_file() {
        bail!("{} has no disk.raw: build the image with `berth build` first (AWS publishing uploads the raw disk)", image_dir.display());
    }
    Ok(disk)
}

fn valid_ami_name(n: &str) -> bool {
    (3..=128).contains(&n.len())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(c))
}

/// Checks everything that can be checked without a request; returns the disk's size.
fn validate(req: &PublishRequest) -> Result<u64> {
    check_region(&req.region, "region")?;
    for r in &req.copy_to_regions {
        check_region(r, "--copy-to")?;
        if *r == req.region {
            bail!("--copy-to {r}: that is the region the image is published in");
        }
    }
    if !valid_ami_name(&req.image_name) {
        bail!("image name {:?} is not a valid AMI name: 3-128 characters of letters, digits and ()[] ./-'@_", req.image_name);
    }
    if req.description.len() > 255 {
        bail!(
            "description is {} characters; AMI descriptions hold at most 255",
            req.description.len()
        );
    }
    for u in &req.launch_permission_users {
        if u.len() != 12 || !u.bytes().all(|b| b.is_ascii_digit()) {
            bail!("launch permission {u:?} is not an AWS account ID (12 digits)");
        }
    }
    if req.parallelism == 0 {
        bail!("parallelism must be at least 1");
    }
    let tags = req.all_tags();
    if tags.len() > MAX_TAGS {
        bail!(
            "{} tags (with berth:image and berth:version): AWS allows at most {MAX_TAGS} per snapshot or image",
            tags.len()
        );
    }
    for (k, v) in &req.tags {
        crate::config::parse_tag(&format!("{k}={v}")).map_err(|e| anyhow!("tag {e}"))?;
    }
    let meta = std::fs::metadata(&req.disk).with_context(|| {
        format!(
            "{}: cannot publish a disk that is not there (build it with `berth build`)",
            req.disk.display()
        )
    })?;
    if !meta.is_file() {
        bail!("{} is not a regular file", req.disk.display());
    }
    if meta.len() == 0 {
        bail!("{} is empty", req.disk.display());
    }
    check_size(&req.disk, meta.len())?;
    Ok(meta.len())
}

fn check_size(path: &Path, bytes: u64) -> Result<(), DiskTooLarge> {
    if bytes > SNAPSHOT_LIMIT_BYTES {
        return Err(DiskTooLarge {
            path: path.to_owned(),
            bytes,
        });
    }
    Ok(())
}

/// What this run has created so far, for cleanup.
#[derive(Default)]
struct Created {
    snapshot: Option<String>,
    image: Option<String>,
    copies: Vec<CopiedImage>,
}

struct Ctx<'a> {
    req: &'a PublishRequest,
    http: Client,
    endpoints: &'a Endpoints,
    progress: Option<&'a ProgressBar>,
}

impl Ctx<'_> {
    fn ec2(&self, region: &str) -> Ec2<'_> {
        Ec2 {
            http: &self.http,
            endpoint: self.endpoints.ec2(region),
            region: region.into(),
        }
    }

    fn ebs(&self) -> Ebs<'_> {
        Ebs {
            http: &self.http,
            endpoint: self.endpoints.ebs(&self.req.region),
            region: self.req.region.clone(),
        }
    }
}

/// Publishes `req.disk` as an AMI. On failure after the first request, deletes whatever this
/// run created and says in the error what was (or could not be) deleted.
pub fn publish(
    req: &PublishRequest,
    creds: &Credentials,
    endpoints: &Endpoints,
    progress: Option<ProgressBar>,
) -> Result<PublishRecord> {
    let disk_bytes = validate(req)?;
    let ctx = Ctx {
        req,
        http: Client::new(creds.clone(), req.retry.clone(), req.parallelism)
            .with_cancel(req.cancel.clone())
            .with_progress(progress.clone()),
        endpoints,
        progress: progress.as_ref(),
    };
    let mut created = Created::default();
    match run(&ctx, disk_bytes, &mut created) {
        Ok(r) => Ok(r),
        Err(e) => {
            // Deleting goes on after a cancel (that is its point), with a few quick tries.
            if let Some(p) = &progress {
                p.set_message("cleaning up what this run created");
            }
            let cleaner = Ctx {
                http: Client::new(creds.clone(), RetryPolicy::cleanup(), 1),
                ..ctx
            };
            let report = cleanup(&cleaner, &created);
            let interrupted = req.cancel.load(Ordering::SeqCst)
                || e.downcast_ref::<crate::http::ApiError>()
                    .is_some_and(|a| a.is_interrupted());
            let e = if interrupted && e.downcast_ref::<Interrupted>().is_none() {
                anyhow::Error::new(Interrupted).context(e.to_string())
            } else {
                e
            };
            if let Some(p) = &progress {
                p.abandon_with_message("publish failed");
            }
            Err(e.context(format!(
                "publishing {} to {} failed; {report}",
                req.disk.display(),
                req.region
            )))
        }
    }
}

fn run(ctx: &Ctx, disk_bytes: u64, created: &mut Created) -> Result<PublishRecord> {
    let req = ctx.req;
    let started_at = AmzTime::now();
    let started_nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    if let Some(p) = ctx.progress {
        p.set_length(disk_bytes);
        p.set_position(0);
        p.set_message(format!("hashing {}", req.disk.display()));
    }
    let map = blocks::scan(&req.disk, req.parallelism.min(4), ctx.progress)?;
    if map.disk_bytes != disk_bytes {
        bail!("{} changed size while being read", req.disk.display());
    }
    let volume_gib = disk_bytes.div_ceil(GIB).max(1);
    let mut parent = usable_parent(req, volume_gib);
    let tags = req.all_tags();
    let ebs = ctx.ebs();

    let (started, plan) = loop {
        req.check_cancel()?;
        let plan = blocks::plan(&map, parent.map(|p| &p.blocks));
        // Idempotency token: the same content, parent and run give the same token, so an HTTP
        // retry of StartSnapshot cannot create a second snapshot. The run's start time is in
        // it because a token is bound to its first snapshot for hours: a new run after a
        // failed one (whose snapshot was deleted) must get a new snapshot.
        let mut h = Sha256::new();
        h.update(map.digest());
        h.update(
            parent
                .map(|p| p.snapshot_id.as_str())
                .unwrap_or("")
                .as_bytes(),
        );
        h.update(format!("\0{}\0{}\0{started_nanos}", req.image_name, req.version).as_bytes());
        let token = hex::encode(h.finalize());
        let start = ebs.start_snapshot(&StartSnapshot {
            volume_size_gib: volume_gib,
            parent_snapshot_id: parent.map(|p| p.snapshot_id.as_str()),
            description: &req.description,
            tags: &tags,
            client_token: &token,
            timeout_minutes: SNAPSHOT_TIMEOUT_MINUTES,
        });
        match start {
            Ok(s) => break (s, plan),
            Err(e) if parent.is_some() && e.code == "ResourceNotFoundException" => {
                tracing::warn!(
                    parent = parent.map(|p| p.snapshot_id.as_str()),
                    error = %e,
                    "the previous publish's snapshot is gone; uploading the whole disk"
                );
                parent = None;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let snapshot_id = started.snapshot_id.clone();
    created.snapshot = Some(snapshot_id.clone());
    if let Some(bs) = started.block_size {
        // moto reports 512 (bytes); AWS reports 524288. Only a real mismatch matters.
        if bs != BLOCK_SIZE && bs != 512 {
            bail!("StartSnapshot reports block size {bs}; berth writes {BLOCK_SIZE}-byte blocks");
        }
    }
    tracing::info!(snapshot = %snapshot_id, blocks = plan.len(), parent = ?parent.map(|p| &p.snapshot_id), "uploading");

    let t0 = Instant::now();
    upload(ctx, &ebs, &snapshot_id, &map, &plan)?;
    let upload_seconds = t0.elapsed().as_secs_f64();
    let bytes_sent = plan.len() as u64 * BLOCK_SIZE;
    req.check_cancel()?;

    if let Some(p) = ctx.progress {
        p.set_message(format!("waiting for {snapshot_id}"));
    }
    ebs.complete(&snapshot_id, plan.len() as u64)?;
    let ec2 = ctx.ec2(&req.region);
    wait_for(
        req,
        &format!("snapshot {snapshot_id} to complete"),
        || match ec2.snapshot_state(&snapshot_id)? {
            None => Ok(None),
            Some((s, _, _)) if s == "completed" => Ok(Some(())),
            Some((s, _, msg)) if s == "error" => Err(anyhow!(
                "snapshot {snapshot_id} ended in state error: {}",
                msg.unwrap_or_else(|| "no reason given".into())
            )),
            Some(_) => Ok(None),
        },
    )?;

    if let Some(p) = ctx.progress {
        p.set_message(format!("registering {}", req.image_name));
    }
    req.check_cancel()?;
    let ami = ec2.register_image(&RegisterImage {
        name: &req.image_name,
        description: &req.description,
        snapshot_id: &snapshot_id,
        volume_size_gib: volume_gib,
        tags: &tags,
    })?;
    created.image = Some(ami.clone());
    wait_available(&ec2, &ami, req)?;

    for region in &req.copy_to_regions {
        req.check_cancel()?;
        let target = ctx.ec2(region);
        let token = hex::encode(Sha256::digest(format!("{ami}\0{region}").as_bytes()));
        let copy =
            target.copy_image(&req.region, &ami, &req.image_name, &req.description, &token)?;
        created.copies.push(CopiedImage {
            region: region.clone(),
            ami_id: copy,
        });
    }
    for c in &created.copies {
        wait_available(&ctx.ec2(&c.region), &c.ami_id, req)?;
    }
    if req.public || !req.launch_permission_users.is_empty() {
        req.check_cancel()?;
        ec2.add_launch_permissions(&ami, &req.launch_permission_users, req.public)?;
        for c in &created.copies {
            ctx.ec2(&c.region).add_launch_permissions(
                &c.ami_id,
                &req.launch_permission_users,
                req.public,
            )?;
        }
    }
    if let Some(p) = ctx.progress {
        p.finish_with_message(format!("published {ami} in {}", req.region));
    }
    Ok(PublishRecord {
        image_name: req.image_name.clone(),
        version: req.version.clone(),
        description: req.description.clone(),
        region: req.region.clone(),
        snapshot_id,
        ami_id: ami,
        parent_snapshot_id: parent.map(|p| p.snapshot_id.clone()),
        copies: created.copies.clone(),
        launch_permission_users: req.launch_permission_users.clone(),
        public: req.public,
        tags,
        disk_bytes,
        volume_size_gib: volume_gib,
        block_size: BLOCK_SIZE,
        blocks_total: map.hashes.len() as u64,
        blocks_nonzero: map.nonzero(),
        blocks_sent: plan.len() as u64,
        bytes_sent,
        block_sha256s: map.hashes.iter().map(|h| h.map(hex::encode)).collect(),
        started_at: started_at.rfc3339(),
        finished_at: AmzTime::now().rfc3339(),
        upload_seconds,
    })
}

/// The previous publish, if an incremental upload on it is possible.
fn usable_parent(req: &PublishRequest, volume_gib: u64) -> Option<&PreviousPublish> {
    let p = req.previous.as_ref()?;
    if p.region != req.region {
        tracing::warn!(previous = %p.region, region = %req.region, "previous publish is in another region; uploading the whole disk");
        return None;
    }
    let parent_gib = p.blocks.disk_bytes.div_ceil(GIB).max(1);
    if parent_gib > volume_gib {
        // EBS requires a child snapshot at least as large as its parent.
        tracing::warn!(
            parent_gib,
            volume_gib,
            "disk shrank below the previous snapshot's size; uploading the whole disk"
        );
        return None;
    }
    Some(p)
}

/// Sends the planned blocks with `parallelism` workers; the first failure stops the others.
fn upload(ctx: &Ctx, ebs: &Ebs, snapshot: &str, map: &BlockMap, plan: &[u64]) -> Result<()> {
    let file =
        File::open(&ctx.req.disk).with_context(|| format!("opening {}", ctx.req.disk.display()))?;
    if let Some(p) = ctx.progress {
        p.set_length(plan.len() as u64 * BLOCK_SIZE);
        p.set_position(0);
        p.set_message(format!("uploading to {snapshot}"));
    }
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let fail = |e: anyhow::Error| {
        stop.store(true, Ordering::SeqCst);
        first_error.lock().expect("error slot").get_or_insert(e);
    };
    let total = plan.len() as u64;
    std::thread::scope(|s| {
        for _ in 0..ctx.req.parallelism.min(plan.len().max(1)) {
            s.spawn(|| {
                let mut buf = vec![0u8; BLOCK_SIZE as usize];
                loop {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if ctx.req.cancel.load(Ordering::SeqCst) {
                        return fail(Interrupted.into());
                    }
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&index) = plan.get(k as usize) else { return };
                    if let Err(e) = blocks::read_block(&file, map.disk_bytes, index, &mut buf) {
                        return fail(anyhow::Error::from(e).context(format!(
                            "reading block {index} of {}",
                            ctx.req.disk.display()
                        )));
                    }
                    let sha: [u8; 32] = Sha256::digest(&buf).into();
                    let expected = map.hashes.get(index as usize).copied().flatten();
                    let zero_now = expected.is_none();
                    if (zero_now && !blocks::is_zero(&buf)) || (!zero_now && expected != Some(sha)) {
                        return fail(anyhow!(
                            "{} changed while being published (block {index}): publish from a finished build",
                            ctx.req.disk.display()
                        ));
                    }
                    let pct = ((done.load(Ordering::Relaxed) * 100) / total.max(1)) as u8;
                    if let Err(e) = ebs.put_block(snapshot, index, &buf, sha, Some(pct)) {
                        return fail(anyhow::Error::from(e).context(format!("block {index}")));
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    if let Some(p) = ctx.progress {
                        p.inc(BLOCK_SIZE);
                    }
                }
            });
        }
    });
    match first_error.into_inner().expect("error slot") {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn wait_available(ec2: &Ec2, ami: &str, req: &PublishRequest) -> Result<()> {
    wait_for(
        req,
        &format!("image {ami} in {} to become available", ec2.region),
        || match ec2.image_state(ami)? {
            Some(s) if s.state == "available" => Ok(Some(())),
            Some(s) if s.state == "failed" || s.state == "error" || s.state == "invalid" => {
                Err(anyhow!(
                    "image {ami} in {} ended in state {}: {}",
                    ec2.region,
                    s.state,
                    s.reason.unwrap_or_else(|| "no reason given".into())
                ))
            }
            _ => Ok(None),
        },
    )
}

/// Polls `check` until it yields, errs, or `req.wait_timeout` passes (0.25 s, growing to 15 s
/// apart), or `req.cancel` is set.
fn wait_for<T>(
    req: &PublishRequest,
    what: &str,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let timeout = req.wait_timeout;
    let start = Instant::now();
    let mut pause = Duration::from_millis(250);
    loop {
        if let Some(v) = check()? {
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            bail!("gave up waiting for {what} after {:?}", timeout);
        }
        let until = Instant::now() + pause.min(timeout.saturating_sub(start.elapsed()));
        while Instant::now() < until {
            req.check_cancel()?;
            std::thread::sleep(
                Duration::from_millis(100).min(until.saturating_duration_since(Instant::now())),
            );
        }
        pause = (pause * 2).min(Duration::from_secs(15));
    }
}

/// Deletes what `created` lists, newest first; returns a sentence for the error message.
fn cleanup(ctx: &Ctx, created: &Created) -> String {
    let mut done = Vec::new();
    let mut left = Vec::new();
    for c in created.copies.iter().rev() {
        let ec2 = ctx.ec2(&c.region);
        let snaps = ec2
            .image_state(&c.ami_id)
            .ok()
            .flatten()
            .map(|s| s.snapshot_ids)
            .unwrap_or_default();
        match ec2.deregister_image(&c.ami_id) {
            Ok(()) => done.push(format!("deregistered image {} in {}", c.ami_id, c.region)),
            Err(e) => left.push(format!("image {} in {} ({e})", c.ami_id, c.region)),
        }
        for s in snaps {
            match ec2.delete_snapshot(&s) {
                Ok(()) => done.push(format!("deleted snapshot {s} in {}", c.region)),
                Err(e) => left.push(format!("snapshot {s} in {} ({e})", c.region)),
            }
        }
    }
    let ec2 = ctx.ec2(&ctx.req.region);
    if let Some(ami) = &created.image {
        match ec2.deregister_image(ami) {
            Ok(()) => done.push(format!("deregistered image {ami}")),
            Err(e) => left.push(format!("image {ami} ({e})")),
        }
    }
    if let Some(snap) = &created.snapshot {
        match ec2.delete_snapshot(snap) {
            Ok(()) => done.push(format!("deleted snapshot {snap}")),
            Err(e) => left.push(format!("snapshot {snap} ({e})")),
        }
    }
    match (done.is_empty(), left.is_empty()) {
        (true, true) => "nothing had been created in the account".into(),
        (_, true) => format!("cleaned up: {}", done.join(", ")),
        _ => format!(
            "cleaned up: {}; COULD NOT DELETE (remove by hand): {}",
            if done.is_empty() {
                "nothing".into()
            } else {
                done.join(", ")
            },
            left.join("; ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ami_names() {
        assert!(valid_ami_name("berth-1.0.0 (qemu) [x86_64]"));
        assert!(!valid_ami_name("ab"));
        assert!(!valid_ami_name("berth:1"));
        assert!(!valid_ami_name(&"a".repeat(129)));
    }

    #[test]
    fn snapshot_limit() {
        let p = Path::new("disk.raw");
        assert!(check_size(p, SNAPSHOT_LIMIT_BYTES).is_ok());
        let err = check_size(p, 65 << 40).unwrap_err();
        assert_eq!(
            err.to_string(),
            "disk.raw is 71468255805440 bytes (65.0 TiB): EBS direct snapshots hold at most 64 TiB"
        );
    }
}
