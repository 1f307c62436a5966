//! `berth publish aws` end to end against moto's server on 127.0.0.1: blocks read back equal
//! the disk's, the image is registered, incremental publishes send only changed blocks, and
//! failures leave nothing behind. Where moto ignores a parameter (most of RegisterImage,
//! ParentSnapshotId, checksums), the request berth sent is checked instead, through a
//! recording proxy.
//!
//! Needs `pip install 'moto[server]'` (moto >= 5 brings boto3, used as an independent oracle).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine;
use berth_aws::blocks::BLOCK_SIZE;
use berth_aws::ebs::Ebs;
use berth_aws::http::Client;
use berth_aws::*;
use common::proxy::{Injected, Proxy};
use common::*;
use sha2::{Digest, Sha256};

const BLOCKS: u64 = 40; // 20 MiB
const DATA: &[u64] = &[0, 1, 2, 7, 12, 13, 20, 21, 33, 39];

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        ..RetryPolicy::default()
    }
}

fn request(disk: &std::path::Path, name: &str) -> PublishRequest {
    let mut req = PublishRequest::new(disk, name, "1.0.0", REGION);
    req.parallelism = 4;
    req.retry = fast_retry();
    req.wait_timeout = Duration::from_secs(30);
    req.tags = vec![("test-run".into(), name.into())];
    req
}

/// Every block of `snapshot` through berth's own EBS client: index -> data.
fn read_back(url: &str, snapshot: &str) -> BTreeMap<u64, Vec<u8>> {
    let http = Client::new(creds(), fast_retry(), 1);
    let ebs = Ebs {
        http: &http,
        endpoint: Endpoint::parse(url).unwrap(),
        region: REGION.into(),
    };
    ebs.list_blocks(snapshot)
        .unwrap()
        .into_iter()
        .map(|(i, token)| (i, ebs.get_block(snapshot, i, &token).unwrap()))
        .collect()
}

/// The disk equals `blocks` (absent = zero).
fn assert_same(disk: &[u8], blocks: &BTreeMap<u64, Vec<u8>>) {
    let n = disk.len() as u64 / BLOCK_SIZE;
    for i in 0..n {
        let want = read_disk_block(disk, i);
        match blocks.get(&i) {
            Some(got) => assert!(got.as_slice() == want, "block {i} differs from the disk"),
            None => assert!(
                want.iter().all(|&b| b == 0),
                "block {i} missing but not zero"
            ),
        }
    }
    assert!(blocks.keys().all(|&i| i < n), "blocks past the disk end");
}

#[test]
fn publish_reads_back_and_registers() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let disk_path = synthetic_disk(dir.path(), BLOCKS, DATA, 1);
    let disk = std::fs::read(&disk_path).unwrap();
    let mut req = request(&disk_path, "berth-readback-1.0.0");
    req.copy_to_regions = vec!["us-west-2".into()];
    req.launch_permission_users = vec!["111122223333".into()];
    let rec = publish(&req, &creds(), &moto.endpoints(), None).unwrap();

    assert_eq!(rec.blocks_total, BLOCKS);
    assert_eq!(rec.blocks_nonzero, DATA.len() as u64);
    assert_eq!(
        rec.blocks_sent,
        DATA.len() as u64,
        "zero blocks are skipped"
    );
    assert_eq!(rec.bytes_sent, DATA.len() as u64 * BLOCK_SIZE);
    assert_eq!(rec.volume_size_gib, 1);
    assert_eq!(rec.parent_snapshot_id, None);
    assert!(
        rec.snapshot_id.starts_with("snap-") && rec.ami_id.starts_with("ami-"),
        "{rec:?}"
    );

    // Read back through berth's client...
    let blocks = read_back(&moto.url(), &rec.snapshot_id);
    assert_eq!(blocks.keys().copied().collect::<Vec<_>>(), DATA);
    assert_same(&disk, &blocks);
    // ...and through boto3, which shares no code with berth.
    let seen = oracle(&moto.url(), REGION, &["blocks", &rec.snapshot_id]);
    let seen = seen.as_object().unwrap();
    assert_eq!(seen.len(), DATA.len());
    for &i in DATA {
        let want = hex::encode(Sha256::digest(read_disk_block(&disk, i)));
        assert_eq!(seen[&i.to_string()][0], BLOCK_SIZE, "block {i} length");
        assert_eq!(seen[&i.to_string()][1], want.as_str(), "block {i} content");
        assert_eq!(
            rec.block_sha256s[i as usize].as_deref(),
            Some(want.as_str())
        );
    }

    let images = oracle(&moto.url(), REGION, &["images", &req.image_name]);
    let images = images.as_array().unwrap();
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(images[0]["id"], rec.ami_id.as_str());
    assert_eq!(images[0]["state"], "available");
    // moto's RegisterImage keeps only Name and Description (it makes up its own root
    // snapshot), so the mapping to our snapshot is checked on the request instead, in
    // requests_carry_every_required_parameter.
    // The copy exists in the other region.
    assert_eq!(rec.copies.len(), 1);
    let copies = oracle(&moto.url(), "us-west-2", &["images", &req.image_name]);
    assert_eq!(copies[0]["id"], rec.copies[0].ami_id.as_str());

    // The record round-trips and can seed an incremental publish.
    let path = dir.path().join("aws-publish.json");
    rec.write(&path).unwrap();
    let again = PublishRecord::read(&path).unwrap();
    assert_eq!(again, rec);
    assert_eq!(
        again.previous().unwrap().blocks.nonzero(),
        DATA.len() as u64
    );
}

#[test]
fn incremental_publish_sends_only_changed_blocks() {
    let moto = Moto::start();
    let proxy = Proxy::start(moto.addr);
    let ep = Endpoints::single(&proxy.url()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let disk_path = synthetic_disk(dir.path(), BLOCKS, DATA, 2);
    let first = publish(&request(&disk_path, "berth-incr-1"), &creds(), &ep, None).unwrap();
    assert_eq!(first.blocks_sent, DATA.len() as u64);

    // Change a few bytes in block 12, put data into zero block 30, zero out block 33.
    let mut disk = std::fs::read(&disk_path).unwrap();
    let at = (12 * BLOCK_SIZE + 4096) as usize;
    disk[at..at + 3].copy_from_slice(b"new");
    disk[(30 * BLOCK_SIZE + 17) as usize] = 0xAB;
    let z = (33 * BLOCK_SIZE) as usize;
    disk[z..z + BLOCK_SIZE as usize].fill(0);
    std::fs::write(&disk_path, &disk).unwrap();

    proxy.clear();
    let mut req = request(&disk_path, "berth-incr-2");
    req.previous = Some(first.previous().unwrap());
    let second = publish(&req, &creds(), &ep, None).unwrap();
    assert_eq!(second.blocks_sent, 3, "{second:?}");
    assert_eq!(second.bytes_sent, 3 * BLOCK_SIZE);
    assert_eq!(
        second.parent_snapshot_id.as_deref(),
        Some(first.snapshot_id.as_str())
    );
    println!(
        "incremental: {} bytes sent vs {} for the full publish",
        second.bytes_sent, first.bytes_sent
    );

    // What went on the wire: ParentSnapshotId, the three blocks (one of them zeros), and
    // ChangedBlocksCount = 3.
    let start = &proxy.of("StartSnapshot")[0];
    let body: serde_json::Value = serde_json::from_slice(&start.body).unwrap();
    assert_eq!(body["ParentSnapshotId"], first.snapshot_id.as_str());
    let mut sent: Vec<u64> = proxy
        .of("PutSnapshotBlock")
        .iter()
        .map(|r| r.path.rsplit('/').next().unwrap().parse().unwrap())
        .collect();
    sent.sort();
    assert_eq!(sent, [12, 30, 33]);
    let complete = &proxy.of("CompleteSnapshot")[0];
    assert_eq!(complete.header("x-amz-changedblockscount"), Some("3"));

    // moto ignores ParentSnapshotId, so its child snapshot holds only the sent blocks: lay
    // them over the parent's, as EBS does, and compare with the new disk.
    let mut blocks = read_back(&moto.url(), &first.snapshot_id);
    let child = read_back(&moto.url(), &second.snapshot_id);
    assert_eq!(child.keys().copied().collect::<Vec<_>>(), [12, 30, 33]);
    assert!(
        child[&33].iter().all(|&b| b == 0),
        "a block zeroed since the parent is sent as zeros"
    );
    blocks.extend(child);
    assert_same(&disk, &blocks);

    // Nothing changed: nothing sent.
    let mut req = request(&disk_path, "berth-incr-3");
    req.previous = Some(second.previous().unwrap());
    let third = publish(&req, &creds(), &ep, None).unwrap();
    assert_eq!(third.blocks_sent, 0);
}

#[test]
fn requests_carry_every_required_parameter() {
    let moto = Moto::start();
    let proxy = Proxy::start(moto.addr);
    let dir = tempfile::tempdir().unwrap();
    let disk_path = synthetic_disk(dir.path(), 8, &[0, 3, 5], 3);
    let mut req = request(&disk_path, "berth-params-1.0.0");
    req.description = "berth 1.0.0 (params test)".into();
    req.tags.push(("owner".into(), "platform team".into()));
    req.launch_permission_users = vec!["111122223333".into()];
    req.public = true;
    let rec = publish(
        &req,
        &creds(),
        &Endpoints::single(&proxy.url()).unwrap(),
        None,
    )
    .unwrap();

    let reg = proxy.of("RegisterImage");
    assert_eq!(reg.len(), 1);
    let reg = &reg[0];
    for (k, v) in [
        ("Name", "berth-params-1.0.0"),
        ("Description", "berth 1.0.0 (params test)"),
        ("Architecture", "x86_64"),
        ("VirtualizationType", "hvm"),
        ("RootDeviceName", "/dev/xvda"),
        ("BlockDeviceMapping.1.DeviceName", "/dev/xvda"),
        (
            "BlockDeviceMapping.1.Ebs.SnapshotId",
            rec.snapshot_id.as_str(),
        ),
        ("BlockDeviceMapping.1.Ebs.VolumeType", "gp3"),
        ("BlockDeviceMapping.1.Ebs.DeleteOnTermination", "true"),
        ("BlockDeviceMapping.1.Ebs.VolumeSize", "1"),
        ("EnaSupport", "true"),
        ("SriovNetSupport", "simple"),
        ("BootMode", "uefi"),
        ("ImdsSupport", "v2.0"),
        ("TagSpecification.1.ResourceType", "image"),
    ] {
        assert_eq!(reg.param(k).as_deref(), Some(v), "RegisterImage {k}");
    }
    let tags: Vec<(String, String)> = (1..=4)
        .map(|i| {
            (
                reg.param(&format!("TagSpecification.1.Tag.{i}.Key"))
                    .unwrap(),
                reg.param(&format!("TagSpecification.1.Tag.{i}.Value"))
                    .unwrap(),
            )
        })
        .collect();
    assert!(
        tags.contains(&("owner".into(), "platform team".into())),
        "{tags:?}"
    );
    assert!(
        tags.contains(&("berth:version".into(), "1.0.0".into())),
        "{tags:?}"
    );
    let auth = reg.header("authorization").unwrap();
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDTESTING/"),
        "{auth}"
    );
    assert!(
        auth.contains("/us-east-1/ec2/aws4_request, SignedHeaders=content-type;host;x-amz-date,"),
        "{auth}"
    );

    // StartSnapshot: size, timeout, idempotency token, tags.
    let start: serde_json::Value =
        serde_json::from_slice(&proxy.of("StartSnapshot")[0].body).unwrap();
    assert_eq!(start["VolumeSize"], 1);
    assert_eq!(start["Timeout"], 60);
    assert_eq!(start["ClientToken"].as_str().unwrap().len(), 64);
    assert!(start["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["Key"] == "owner" && t["Value"] == "platform team"));
    assert!(start.get("ParentSnapshotId").is_none());

    // PutSnapshotBlock: checksum headers match the body; the signature covers them.
    let puts = proxy.of("PutSnapshotBlock");
    assert_eq!(puts.len(), 3);
    for p in &puts {
        assert_eq!(p.body.len() as u64, BLOCK_SIZE);
        let sum = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&p.body));
        assert_eq!(p.header("x-amz-checksum"), Some(sum.as_str()));
        assert_eq!(p.header("x-amz-checksum-algorithm"), Some("SHA256"));
        assert_eq!(p.header("x-amz-data-length"), Some("524288"));
        let auth = p.header("authorization").unwrap();
        assert!(auth.contains("/us-east-1/ebs/aws4_request"), "{auth}");
        assert!(
            auth.contains("x-amz-checksum;x-amz-checksum-algorithm;x-amz-data-length;x-amz-date"),
            "{auth}"
        );
    }
    assert_eq!(
        proxy.of("CompleteSnapshot")[0].header("x-amz-changedblockscount"),
        Some("3")
    );

    // Exactly one Host header, the one signed.
    for r in proxy.requests() {
        let hosts: Vec<_> = r
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("host"))
            .collect();
        assert_eq!(hosts.len(), 1, "{:?}", r.headers);
        assert_eq!(hosts[0].1, proxy.addr.to_string());
    }

    // Every signature equals botocore's for the same request (moto does not check them).
    read_back(&proxy.url(), &rec.snapshot_id); // adds GETs with a query string
    let reqs = proxy.requests();
    let mut kinds: Vec<&str> = reqs.iter().map(|r| r.action.as_str()).collect();
    kinds.sort();
    kinds.dedup();
    assert!(
        kinds.contains(&"ListSnapshotBlocks") && kinds.contains(&"PutSnapshotBlock"),
        "{kinds:?}"
    );
    let input: Vec<serde_json::Value> = reqs
        .iter()
        .map(|r| {
            let auth = r.header("authorization").unwrap();
            let signed: Vec<&str> = auth
                .split("SignedHeaders=")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap()
                .split(';')
                .collect();
            let headers: serde_json::Map<String, serde_json::Value> = r
                .headers
                .iter()
                .filter(|(k, _)| signed.contains(&k.to_ascii_lowercase().as_str()))
                .map(|(k, v)| (k.clone(), v.as_str().into()))
                .collect();
            let service = if r.body.starts_with(b"Action=") {
                "ec2"
            } else {
                "ebs"
            };
            serde_json::json!({
                "key": "AKIDTESTING", "secret": "testing-secret", "service": service,
                "method": r.method, "path": r.path, "headers": headers,
                "body": base64::engine::general_purpose::STANDARD.encode(&r.body),
                "amz_date": r.header("x-amz-date").unwrap(),
            })
        })
        .collect();
    let want = oracle_with_input(
        &proxy.url(),
        REGION,
        &["sign"],
        &serde_json::to_vec(&input).unwrap(),
    );
    assert_eq!(want.as_array().unwrap().len(), reqs.len());
    for (r, want) in reqs.iter().zip(want.as_array().unwrap()) {
        let got = r
            .header("authorization")
            .unwrap()
            .rsplit("Signature=")
            .next()
            .unwrap();
        assert_eq!(
            got,
            want.as_str().unwrap(),
            "{} {} {}",
            r.action,
            r.method,
            r.path
        );
    }

    // Launch permissions: the account and the public group.
    let modify = &proxy.of("ModifyImageAttribute")[0];
    assert_eq!(modify.param("ImageId"), Some(rec.ami_id.clone()));
    assert_eq!(
        modify.param("LaunchPermission.Add.1.UserId").as_deref(),
        Some("111122223333")
    );
    assert_eq!(
        modify.param("LaunchPermission.Add.2.Group").as_deref(),
        Some("all")
    );
}

/// Publishes through a proxy that injects `fault`; asserts the run fails naming `action`, and
/// that no snapshot or image from the run is left.
fn assert_cleans_up(
    fault: common::proxy::Fault,
    name: &str,
    action: &str,
    want_in_error: &[&str],
) -> Proxy {
    let moto = Moto::start();
    let proxy = Proxy::start(moto.addr);
    proxy.set_fault(Some(fault));
    let dir = tempfile::tempdir().unwrap();
    let disk_path = synthetic_disk(dir.path(), BLOCKS, DATA, 4);
    let mut req = request(&disk_path, name);
    req.launch_permission_users = vec!["111122223333".into()];
    let err = publish(
        &req,
        &creds(),
        &Endpoints::single(&proxy.url()).unwrap(),
        None,
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains(action), "{msg}");
    for w in want_in_error {
        assert!(msg.contains(w), "{w:?} not in: {msg}");
    }
    let started = proxy.of("StartSnapshot");
    assert_eq!(started.len(), 1);
    let deletes = proxy.of("DeleteSnapshot");
    assert_eq!(deletes.len(), 1, "{msg}");
    let snap = deletes[0].param("SnapshotId").unwrap();
    assert!(
        msg.contains("cleaned up: ") && msg.contains(&format!("deleted snapshot {snap}")),
        "{msg}"
    );
    // Independent check: no snapshot with this run's tag, no image with its name.
    let snaps = oracle(&moto.url(), REGION, &["snapshots", "test-run", name]);
    assert_eq!(snaps, serde_json::json!([]), "snapshots left: {snaps}");
    let images = oracle(&moto.url(), REGION, &["images", name]);
    assert_eq!(images, serde_json::json!([]), "images left: {images}");
    drop(moto);
    proxy
}

#[test]
fn failed_register_deletes_the_snapshot() {
    let proxy = assert_cleans_up(
        Box::new(|r, _| {
            (r.action == "RegisterImage")
                .then(|| Injected::ec2(400, "InvalidAMIName.Malformed", "AMI names must be valid"))
        }),
        "berth-fail-register",
        "RegisterImage failed with HTTP 400: InvalidAMIName.Malformed: AMI names must be valid",
        &[],
    );
    assert!(proxy.of("DeregisterImage").is_empty());
}

#[test]
fn failed_upload_deletes_the_snapshot() {
    // The 6th block and every later one fail with 500: retried 3 times, then the run stops.
    let proxy = assert_cleans_up(
        Box::new(|r, n| (r.action == "PutSnapshotBlock" && n >= 5).then(|| Injected::ebs(500, "InternalServerException", "injected"))),
        "berth-fail-upload",
        "PutSnapshotBlock failed with HTTP 500: InternalServerException: injected (after 3 attempts)",
        &["block "],
    );
    assert!(proxy.of("CompleteSnapshot").is_empty());
    assert!(proxy.of("RegisterImage").is_empty());
}

#[test]
fn failure_after_register_deregisters_the_image() {
    let proxy = assert_cleans_up(
        Box::new(|r, _| {
            (r.action == "ModifyImageAttribute")
                .then(|| Injected::ec2(400, "InvalidAMIAttributeItemValue", "no such account"))
        }),
        "berth-fail-share",
        "ModifyImageAttribute failed with HTTP 400",
        &["deregistered image ami-"],
    );
    assert_eq!(proxy.of("DeregisterImage").len(), 1);
}

#[test]
fn throttling_and_5xx_are_retried() {
    let moto = Moto::start();
    let proxy = Proxy::start(moto.addr);
    // The first 3 block uploads are throttled, RegisterImage gets one 503.
    proxy.set_fault(Some(Box::new(|r, n| match r.action.as_str() {
        "PutSnapshotBlock" if n < 3 => Some(Injected::ebs(429, "ThrottlingException", "slow down")),
        "RegisterImage" if n == 0 => Some(Injected::ec2(
            503,
            "RequestLimitExceeded",
            "Request limit exceeded.",
        )),
        _ => None,
    })));
    let dir = tempfile::tempdir().unwrap();
    let disk_path = synthetic_disk(dir.path(), BLOCKS, DATA, 5);
    let disk = std::fs::read(&disk_path).unwrap();
    let mut req = request(&disk_path, "berth-retry");
    req.retry.max_attempts = 5;
    let rec = publish(
        &req,
        &creds(),
        &Endpoints::single(&proxy.url()).unwrap(),
        None,
    )
    .unwrap();
    assert_eq!(proxy.of("PutSnapshotBlock").len(), DATA.len() + 3);
    assert_eq!(proxy.of("RegisterImage").len(), 2);
    assert_same(&disk, &read_back(&moto.url(), &rec.snapshot_id));
}

#[test]
fn bad_input_fails_before_touching_the_account() {
    let dir = tempfile::tempdir().unwrap();

    // No credentials anywhere.
    let mut env = BTreeMap::new();
    env.insert("HOME".to_string(), dir.path().to_str().unwrap().to_string());
    let err = resolve_credentials_from(&env).unwrap_err();
    assert!(err.downcast_ref::<NoCredentials>().is_some());
    let msg = format!("{err:#}");
    for want in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        ".aws/credentials (does not exist)",
        ".aws/config (does not exist)",
    ] {
        assert!(msg.contains(want), "{want:?} not in: {msg}");
    }

    // A region that is not one.
    let err = resolve_region_from(Some("us-east"), &env).unwrap_err();
    assert!(
        format!("{err:#}").contains("\"us-east\" is not an AWS region name"),
        "{err:#}"
    );

    // An image directory without disk.raw; a disk path that does not exist.
    let err = disk_in(dir.path()).unwrap_err();
    assert!(format!("{err:#}").contains("has no disk.raw"), "{err:#}");
    let err = disk_in(&dir.path().join("nope")).unwrap_err();
    assert!(
        format!("{err:#}").contains("not an image directory"),
        "{err:#}"
    );

    // The rest must not send a single request: a proxy that answers nothing counts them.
    let moto_stand_in = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = Proxy::start(moto_stand_in.local_addr().unwrap());
    let ep = Endpoints::single(&proxy.url()).unwrap();
    let missing = dir.path().join("disk.raw");
    let err = publish(&request(&missing, "berth-missing"), &creds(), &ep, None).unwrap_err();
    assert!(
        format!("{err:#}").contains("disk.raw: cannot publish a disk that is not there"),
        "{err:#}"
    );

    let disk_path = synthetic_disk(dir.path(), 4, &[0], 6);
    let mut req = request(&disk_path, "berth-bad-region");
    req.region = "moon-base-1".into();
    let err = publish(&req, &creds(), &ep, None).unwrap_err();
    assert!(
        format!("{err:#}").contains("is not an AWS region name"),
        "{err:#}"
    );
    let mut req = request(&disk_path, "bad:name");
    req.copy_to_regions = vec!["eu-west-1".into()];
    let err = publish(&req, &creds(), &ep, None).unwrap_err();
    assert!(
        format!("{err:#}").contains("not a valid AMI name"),
        "{err:#}"
    );

    // Too many tags, or one AWS would refuse.
    let mut req = request(&disk_path, "berth-many-tags");
    req.tags = (0..49).map(|i| (format!("k{i}"), "v".into())).collect();
    let err = publish(&req, &creds(), &ep, None).unwrap_err();
    assert!(
        format!("{err:#}")
            .contains("51 tags (with berth:image and berth:version): AWS allows at most 50"),
        "{err:#}"
    );
    req.tags = vec![("aws:created-by".into(), "me".into())];
    let err = publish(&req, &creds(), &ep, None).unwrap_err();
    assert!(format!("{err:#}").contains("reserved by AWS"), "{err:#}");

    // Larger than a snapshot can be: a sparse 65 TiB file (tmpfs allows it; ext4 stops at 16).
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let big = shm.path().join("disk.raw");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(65 << 40)
        .unwrap();
    let err = publish(&request(&big, "berth-huge"), &creds(), &ep, None).unwrap_err();
    assert!(err.downcast_ref::<DiskTooLarge>().is_some(), "{err:#}");
    assert!(
        format!("{err:#}").contains("65.0 TiB): EBS direct snapshots hold at most 64 TiB"),
        "{err:#}"
    );
    assert!(proxy.requests().is_empty(), "{:?}", proxy.requests());

    // An endpoint that refuses connections: a prompt, clear error; nothing was created.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let ep = Endpoints::single(&format!("http://{closed}")).unwrap();
    let t = Instant::now();
    let err = publish(&request(&disk_path, "berth-refused"), &creds(), &ep, None).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&format!(
            "StartSnapshot got no response from http://{closed}"
        )),
        "{msg}"
    );
    assert!(
        msg.contains("nothing had been created in the account"),
        "{msg}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn cancel_during_upload_stops_and_deletes_the_snapshot() {
    use std::sync::atomic::Ordering;
    let moto = Moto::start();
    let proxy = Proxy::start(moto.addr);
    let dir = tempfile::tempdir().unwrap();
    let disk_path = synthetic_disk(dir.path(), BLOCKS, DATA, 4);
    let mut req = request(&disk_path, "berth-cancel-upload");
    req.parallelism = 1;
    // What a Ctrl-C does: the CLI's signal handler sets the flag, here while the 4th block is
    // on its way.
    let cancel = req.cancel.clone();
    proxy.set_fault(Some(Box::new(move |r, n| {
        if r.action == "PutSnapshotBlock" && n >= 3 {
            cancel.store(true, Ordering::SeqCst);
        }
        None
    })));
    let err = publish(
        &req,
        &creds(),
        &Endpoints::single(&proxy.url()).unwrap(),
        None,
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(err.downcast_ref::<Interrupted>().is_some(), "{msg}");
    assert!(msg.ends_with("interrupted"), "{msg}");
    let sent = proxy.of("PutSnapshotBlock").len();
    assert_eq!(sent, 4, "blocks sent after the cancel: {msg}");
    assert!(proxy.of("CompleteSnapshot").is_empty());
    assert!(proxy.of("RegisterImage").is_empty());
    let deletes = proxy.of("DeleteSnapshot");
    assert_eq!(deletes.len(), 1, "{msg}");
    let snap = deletes[0].param("SnapshotId").unwrap();
    assert!(msg.contains(&format!("deleted snapshot {snap}")), "{msg}");
    let snaps = oracle(
        &moto.url(),
        REGION,
        &["snapshots", "test-run", "berth-cancel-upload"],
    );
    assert_eq!(snaps, serde_json::json!([]), "snapshots left: {snaps}");
}
