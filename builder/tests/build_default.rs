//! End to end: `berth build` of the default profile, checked with the field's own tools.
//!
//! These tests run the real pipeline: apt fetches real Debian packages (through berth's private
//! apt state), the root is written by our ext4 writer and checked by `e2fsck -fn`, read back
//! with `debugfs rdump` and compared file by file with manifest.json, and the verity tree is
//! checked by `veritysetup verify`. The profile tree is copied to a temporary directory so the
//! lock file they create never lands in the repository.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn berth(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .current_dir(cwd)
        .env_remove("BERTH_CACHE_DIR")
        .output()
        .expect("running berth")
}

fn ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `berth build PROFILE --out OUT --cache-dir CACHE [extra…]` run in `ws`.
fn build(ws: &Path, profile: &str, out: &Path, cache: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "build",
        profile,
        "--out",
        out.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    berth(&args, ws)
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            copy_tree(&e.path(), &dst);
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(e.path()).unwrap(), dst).unwrap();
        } else {
            fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// A scratch copy of profiles/ and overlays/ (no lock file).
fn workspace(dir: &Path) -> PathBuf {
    copy_tree(&repo().join("profiles"), &dir.join("profiles"));
    copy_tree(&repo().join("overlays"), &dir.join("overlays"));
    for e in fs::read_dir(dir.join("profiles")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "lock") {
            fs::remove_file(p).unwrap();
        }
    }
    dir.to_path_buf()
}

struct Built {
    _tmp: tempfile::TempDir,
    ws: PathBuf,
    cache: PathBuf,
    out: PathBuf,
    manifest: serde_json::Value,
}

/// The one cold build the other tests share (it is the slow part).
fn built() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let ws = workspace(tmp.path());
        let cache = tmp.path().join("cache-a");
        let out = tmp.path().join("out-a");
        let o = build(&ws, "profiles/qemu.toml", &out, &cache, &[]);
        ok(&o, "berth build");
        let manifest =
            serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
        Built {
            _tmp: tmp,
            ws,
            cache,
            out,
            manifest,
        }
    })
}

fn sha256(p: &Path) -> String {
    hex::encode(Sha256::digest(fs::read(p).unwrap()))
}

#[test]
fn default_profile_builds_and_e2fsck_is_clean() {
    let b = built();
    for f in berth::outdir::output_names(&[], false) {
        assert!(b.out.join(f).is_file(), "{f} missing");
    }
    let o = Command::new("e2fsck")
        .args(["-fn"])
        .arg(b.out.join("root.ext4"))
        .output()
        .unwrap();
    ok(&o, "e2fsck -fn root.ext4");
    // The manifest says what it holds, with the artifacts' real hashes.
    let m = &b.manifest;
    assert_eq!(m["image"]["name"], "berth-qemu");
    for f in ["root.ext4", "root.verity"] {
        assert_eq!(
            m["artifacts"][f]["sha256"].as_str().unwrap(),
            sha256(&b.out.join(f)),
            "{f}"
        );
    }
    let names: Vec<&str> = m["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for want in ["containerd", "runc", "libc6", "libseccomp2"] {
        assert!(names.contains(&want), "{want} not in {names:?}");
    }
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("linux-image-") && n.ends_with("-cloud-amd64")),
        "{names:?}"
    );
}

#[test]
fn every_manifest_file_reads_back_from_the_image() {
    let b = built();
    let dump = tempfile::tempdir().unwrap();
    let o = Command::new("debugfs")
        .args(["-R", &format!("rdump / {}", dump.path().display())])
        .arg(b.out.join("root.ext4"))
        .output()
        .unwrap();
    ok(&o, "debugfs rdump");
    let files = b.manifest["rootfs"]["files"].as_array().unwrap();
    // The runtime, its libraries, berth-init, the kept modules, config: 118 for qemu.toml.
    assert!(files.len() > 80, "only {} entries", files.len());
    let mut checked = 0;
    for f in files {
        let path = f["path"].as_str().unwrap();
        if path == "/" {
            continue;
        }
        let host = dump.path().join(path.trim_start_matches('/'));
        let meta =
            fs::symlink_metadata(&host).unwrap_or_else(|e| panic!("{path}: not in the image: {e}"));
        let mode = u32::from_str_radix(f["mode"].as_str().unwrap(), 8).unwrap();
        match f["kind"].as_str().unwrap() {
            "file" => {
                assert!(meta.is_file(), "{path}");
                assert_eq!(
                    sha256(&host),
                    f["sha256"].as_str().unwrap(),
                    "{path}: content"
                );
                assert_eq!(meta.permissions().mode() & 0o7777, mode, "{path}: mode");
            }
            "dir" => {
                assert!(meta.is_dir(), "{path}");
                // rdump creates directories without setuid/setgid/sticky bits: read those from
                // the inode itself.
                assert_eq!(
                    meta.permissions().mode() & 0o777,
                    mode & 0o777,
                    "{path}: mode"
                );
                if mode & 0o7000 != 0 {
                    assert_eq!(
                        debugfs_mode(&b.out.join("root.ext4"), path),
                        mode,
                        "{path}: mode"
                    );
                }
            }
            "symlink" => {
                assert_eq!(
                    fs::read_link(&host).unwrap().to_str().unwrap(),
                    f["target"].as_str().unwrap(),
                    "{path}"
                );
            }
            k => panic!("{path}: unexpected kind {k} in the default image"),
        }
        // rdump restores owners when run as root (CI is); as a user everything is the user's.
        if nix_is_root() {
            assert_eq!(
                u64::from(meta.uid()),
                f["uid"].as_u64().unwrap(),
                "{path}: uid"
            );
            assert_eq!(
                u64::from(meta.gid()),
                f["gid"].as_u64().unwrap(),
                "{path}: gid"
            );
        }
        checked += 1;
    }
    // Nothing in the image that the manifest does not list.
    let mut on_disk = 0;
    count(dump.path(), &mut on_disk);
    assert_eq!(
        on_disk,
        checked + 1,
        "image holds entries manifest.json does not list (lost+found counts as 1)"
    );
}

fn count(dir: &Path, n: &mut usize) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        *n += 1;
        if e.file_type().unwrap().is_dir() {
            count(&e.path(), n);
        }
    }
}

/// The permission bits of `path` as `debugfs stat` prints them (`Mode:  01777`).
fn debugfs_mode(image: &Path, path: &str) -> u32 {
    let o = Command::new("debugfs")
        .args(["-R", &format!("stat {path}")])
        .arg(image)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let mode = text
        .split("Mode:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("debugfs prints Mode:");
    u32::from_str_radix(mode, 8).unwrap() & 0o7777
}

fn nix_is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

#[test]
fn image_holds_the_runtime_and_its_library_closure() {
    let b = built();
    let files = b.manifest["rootfs"]["files"].as_array().unwrap();
    let has = |p: &str| files.iter().any(|f| f["path"] == p);
    for p in [
        "/usr/bin/containerd",
        "/usr/bin/containerd-shim-runc-v2",
        "/usr/bin/ctr",
        "/usr/sbin/runc",
        "/usr/sbin/berth-init",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib64/ld-linux-x86-64.so.2",
        "/usr/lib/x86_64-linux-gnu/libseccomp.so.2",
        "/etc/os-release",
        "/etc/containerd/config.toml",
        "/etc/motd",
        "/lib",
    ] {
        assert!(has(p), "{p} missing from the image");
    }
    let kver = b.manifest["kernel"]["version"].as_str().unwrap();
    // The kernel is on the ESP only: one copy, not a second one in the root.
    assert!(!has(&format!("/usr/lib/modules/{kver}/vmlinuz")));
    assert!(has(&format!(
        "/usr/lib/modules/{kver}/kernel/drivers/block/virtio_blk.ko"
    )));
    // Only the modules a boot can load: the two lists' closure and berth-init's own (fw_cfg,
    // config-drive filesystems); a driver no list names (btrfs) is not carried, nor its dir.
    for m in [
        "kernel/drivers/firmware/qemu_fw_cfg.ko",
        "kernel/fs/isofs/isofs.ko",
        "kernel/net/bridge/br_netfilter.ko",
        "kernel/drivers/watchdog/softdog.ko",
    ] {
        assert!(has(&format!("/usr/lib/modules/{kver}/{m}")), "{m} missing");
    }
    assert!(!has(&format!("/usr/lib/modules/{kver}/kernel/fs/btrfs")));
    let kept = b.manifest["kernel"]["modules"].as_u64().unwrap();
    assert!((20..120).contains(&kept), "{kept} modules kept");
    // Only what was asked for: no package manager, no shell, no docs.
    for p in [
        "/usr/bin/apt",
        "/usr/bin/dpkg",
        "/bin/sh",
        "/usr/bin/bash",
        "/usr/share/doc",
    ] {
        assert!(!has(p), "{p} should not be in the image");
    }
    let osr = files
        .iter()
        .find(|f| f["path"] == "/etc/os-release")
        .unwrap();
    assert!(osr["size"].as_u64().unwrap() > 0);
    // Every timestamp is SOURCE_DATE_EPOCH: debugfs shows the root inode's mtime.
    let o = Command::new("debugfs")
        .args(["-R", "stat /usr/bin/containerd"])
        .arg(b.out.join("root.ext4"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let sde = b.manifest["image"]["source-date-epoch"].as_i64().unwrap();
    assert!(
        text.contains(&format!("mtime: 0x{sde:08x}")),
        "mtime is not SOURCE_DATE_EPOCH ({sde:#x}):\n{text}"
    );
}

fn verity_verify(data: &Path, hash: &Path, root: &str) -> Output {
    Command::new("veritysetup")
        .arg("verify")
        .arg(data)
        .arg(hash)
        .arg(root)
        .output()
        .unwrap()
}

#[test]
fn veritysetup_verifies_and_one_flipped_byte_fails() {
    let b = built();
    let root = b.manifest["verity"]["roothash"].as_str().unwrap();
    ok(
        &verity_verify(&b.out.join("root.ext4"), &b.out.join("root.verity"), root),
        "veritysetup verify",
    );
    // Flip one byte of a file's data in a copy of the image.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("root.ext4");
    fs::copy(b.out.join("root.ext4"), &copy).unwrap();
    let o = Command::new("debugfs")
        .args(["-R", "bmap /etc/os-release 0"])
        .arg(&copy)
        .output()
        .unwrap();
    let block: u64 = String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .expect("bmap gives a block number");
    let mut img = fs::read(&copy).unwrap();
    img[(block * 4096) as usize] ^= 0x01;
    fs::write(&copy, &img).unwrap();
    let o = verity_verify(&copy, &b.out.join("root.verity"), root);
    assert!(
        !o.status.success(),
        "veritysetup verify passed on a corrupted image"
    );
}

#[test]
fn second_build_with_other_cache_and_out_is_identical() {
    let b = built();
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache-b");
    let out = tmp.path().join("out-b");
    let o = build(&b.ws, "profiles/qemu.toml", &out, &cache, &["-q"]);
    ok(&o, "second berth build");
    for f in berth::outdir::output_names(&[], false) {
        assert_eq!(
            sha256(&out.join(f)),
            sha256(&b.out.join(f)),
            "{f} differs between two builds"
        );
    }
}

#[test]
fn warm_rebuild_reuses_the_cached_result_and_quiet_prints_only_paths() {
    let b = built();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out-c");
    let o = build(&b.ws, "profiles/qemu.toml", &out, &b.cache, &["-q"]);
    ok(&o, "warm build");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        berth::outdir::output_names(&[], false).len(),
        "quiet mode prints the result paths only: {stdout:?}"
    );
    assert!(lines.iter().all(|l| Path::new(l).is_file()), "{lines:?}");
    assert!(
        o.stderr.is_empty(),
        "quiet mode wrote to stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        sha256(&out.join("root.ext4")),
        sha256(&b.out.join("root.ext4"))
    );
    // --json gives a document that says it was cached.
    let o = build(&b.ws, "profiles/qemu.toml", &out, &b.cache, &["--json"]);
    ok(&o, "json build");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is JSON");
    assert_eq!(v["cached"], true);
    assert_eq!(v["roothash"], b.manifest["verity"]["roothash"]);
    // build-metrics.json: the stages with their seconds, each output's size; outside
    // SHA256SUMS (timings differ between identical builds).
    for (dir, cached) in [(&b.out, false), (&out, true)] {
        let m: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join("build-metrics.json")).unwrap()).unwrap();
        assert_eq!(m["cached"], cached, "{m}");
        let stages: Vec<&str> = m["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["stage"].as_str().unwrap())
            .collect();
        assert!(stages.contains(&"load profile"), "{stages:?}");
        if !cached {
            for want in [
                "assemble rootfs",
                "write root.ext4",
                "dm-verity",
                "disk.raw",
            ] {
                assert!(stages.contains(&want), "{want} not in {stages:?}");
            }
        }
        let disk = m["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["file"] == "disk.raw")
            .unwrap();
        assert_eq!(
            disk["bytes"].as_u64().unwrap(),
            fs::metadata(dir.join("disk.raw")).unwrap().len()
        );
        assert!(disk["allocated"].as_u64().unwrap() < disk["bytes"].as_u64().unwrap());
        let sums = fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
        assert!(!sums.contains("build-metrics.json"), "{sums}");
    }
}

/// Writes a variant of the default profile and returns its path.
fn variant(b: &Built, name: &str, extra: &str) -> PathBuf {
    let p = b.ws.join("profiles").join(format!("{name}.toml"));
    fs::write(&p, format!("schema = 1\nextends = \"qemu.toml\"\n{extra}")).unwrap();
    // Same packages as the default: reuse its lock.
    let lock = b.ws.join("profiles/qemu.lock");
    if lock.is_file() && !extra.contains("[runtime]") {
        fs::copy(lock, p.with_extension("lock")).unwrap();
    }
    p
}

fn fails_cleanly(b: &Built, profile: &Path, want: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = build(&b.ws, profile.to_str().unwrap(), &out, &b.cache, &[]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected failure, got {}",
        o.status
    );
    let err = String::from_utf8_lossy(&o.stderr);
    for w in want {
        assert!(err.contains(w), "error should mention {w:?}:\n{err}");
    }
    assert!(!out.exists(), "a failed build left {}", out.display());
    let leftovers: Vec<_> = fs::read_dir(tmp.path()).unwrap().collect();
    assert!(
        leftovers.is_empty(),
        "a failed build left files: {leftovers:?}"
    );
}

#[test]
fn bad_input_unknown_key_and_wrong_type() {
    let b = built();
    let p = variant(b, "bad-key", "[disk]\nroot-szie = \"1GiB\"\n");
    fails_cleanly(
        b,
        &p,
        &["bad-key.toml:4:1", "unknown field `root-szie`", "root-size"],
    );
    let p = variant(b, "bad-type", "[image]\nsource-date-epoch = \"today\"\n");
    fails_cleanly(b, &p, &["bad-type.toml:4:21", "invalid type"]);
}

#[test]
fn bad_input_missing_package() {
    let b = built();
    let p = variant(
        b,
        "bad-pkg",
        "[runtime]\npackages = [\"containerd\", \"berth-no-such-package\"]\n",
    );
    fails_cleanly(b, &p, &["\"berth-no-such-package\"", "runtime.packages"]);
}

#[test]
fn bad_input_lock_hash_mismatch() {
    let b = built();
    let p = variant(b, "bad-lock", "");
    let lock = p.with_extension("lock");
    let text = fs::read_to_string(&lock).unwrap();
    // Change runc's hash (last hex digit) in the lock.
    let i = text.find("name = \"runc\"").unwrap();
    let j = i + text[i..].find("sha256 = \"").unwrap() + "sha256 = \"".len();
    let mut bytes = text.into_bytes();
    bytes[j] = if bytes[j] == b'0' { b'1' } else { b'0' };
    fs::write(&lock, bytes).unwrap();
    fails_cleanly(b, &p, &["package runc", "SHA-256", "lock file says"]);
}

#[test]
fn bad_input_missing_overlay() {
    let b = built();
    let p = variant(b, "bad-overlay", "overlays = [\"no-such-overlay\"]\n");
    fails_cleanly(
        b,
        &p,
        &[
            "bad-overlay.toml",
            "overlay \"no-such-overlay\" not found",
            "overlays/no-such-overlay",
        ],
    );
}

#[test]
fn bad_input_rootfs_larger_than_root_size() {
    let b = built();
    let p = variant(b, "too-small", "[disk]\nroot-size = \"64MiB\"\n");
    fails_cleanly(b, &p, &["too-small.toml", "disk.root-size", "64MiB"]);
}

#[test]
fn interrupted_build_leaves_previous_output_untouched() {
    let b = built();
    let p = variant(b, "interrupted", "[image]\nversion = \"9.9.9\"\n");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    // A previous output (berth replaces only its own output directories).
    fs::write(out.join("previous"), "keep me").unwrap();
    fs::write(out.join("manifest.json"), "{}").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "build",
            p.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--cache-dir",
            b.cache.to_str().unwrap(),
            "-q",
        ])
        .current_dir(&b.ws)
        .spawn()
        .unwrap();
    // Wait (bounded) until the staging directory appears, i.e. the build is writing.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let staging = loop {
        let found = fs::read_dir(tmp.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy().starts_with(".out.tmp-"));
        if let Some(s) = found {
            break s.path();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "build never started writing"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "build ended before it could be interrupted"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "exit code after SIGINT");
    assert_eq!(fs::read_to_string(out.join("previous")).unwrap(), "keep me");
    assert_eq!(fs::read_dir(&out).unwrap().count(), 2);
    assert!(
        !staging.exists(),
        "staging directory {} left behind",
        staging.display()
    );
    let beside: Vec<String> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(beside, ["out"], "stray files beside the output");
}

/// Bytes `[offset, offset+len)` of `file`, written to a new file in `dir`.
fn extract(file: &Path, offset: u64, len: u64, dir: &Path, name: &str) -> PathBuf {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = fs::File::open(file).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf).unwrap();
    let p = dir.join(name);
    fs::write(&p, buf).unwrap();
    p
}

#[test]
fn disk_raw_has_a_valid_gpt_esp_slots_and_state() {
    let b = built();
    let disk = b.out.join("disk.raw");
    let o = Command::new("sgdisk")
        .arg("-v")
        .arg(&disk)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains("No problems found"),
        "sgdisk -v:\n{text}"
    );

    let parts = b.manifest["disk"]["partitions"].as_array().unwrap();
    let part = |name: &str| {
        let p = parts
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no partition {name}"));
        (
            p["offset"].as_u64().unwrap(),
            p["size"].as_u64().unwrap(),
            p["partuuid"].as_str().unwrap().to_string(),
        )
    };
    let names: Vec<&str> = parts.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "esp",
            "root-a",
            "root-a-verity",
            "root-b",
            "root-b-verity",
            "state"
        ]
    );
    let tmp = tempfile::tempdir().unwrap();

    // Slot A holds exactly root.ext4 and root.verity; its PARTUUIDs are the root hash halves.
    let roothash = b.manifest["verity"]["roothash"].as_str().unwrap();
    for (name, file) in [("root-a", "root.ext4"), ("root-a-verity", "root.verity")] {
        let (off, size, uuid) = part(name);
        let want = fs::read(b.out.join(file)).unwrap();
        assert!(want.len() as u64 <= size);
        let got = extract(&disk, off, want.len() as u64, tmp.path(), name);
        assert!(
            fs::read(&got).unwrap() == want,
            "{name} does not hold {file}"
        );
        let half = if name == "root-a" {
            &roothash[..32]
        } else {
            &roothash[32..]
        };
        assert_eq!(
            uuid.replace('-', ""),
            half,
            "{name} PARTUUID is not its root hash half"
        );
    }
    // sgdisk agrees on the root partition's type and read-only attribute.
    let o = Command::new("sgdisk")
        .args(["-i", "2"])
        .arg(&disk)
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&o.stdout).to_lowercase();
    assert!(
        info.contains("4f68bce3-e8cd-4db1-96e7-fbcaf984b709"),
        "{info}"
    );
    assert!(
        info.contains("1000000000000000"),
        "root-a should be read-only (bit 60): {info}"
    );

    // The ESP is clean FAT and holds systemd-boot, the loader config and slot A's entry.
    let (off, size, _) = part("esp");
    let esp = extract(&disk, off, size, tmp.path(), "esp.img");
    let o = Command::new("fsck.fat")
        .args(["-n"])
        .arg(&esp)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "fsck.fat -n: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let files = berth::fsimage::fat::read_dir_tree(&mut fs::File::open(&esp).unwrap()).unwrap();
    let get = |p: &str| {
        files
            .iter()
            .find(|(n, _)| n.trim_start_matches('/') == p.trim_start_matches('/'))
            .map(|(_, d)| d.clone())
    };
    assert!(
        get("EFI/BOOT/BOOTX64.EFI").is_some_and(|d| d.starts_with(b"MZ")),
        "no systemd-boot"
    );
    assert_eq!(
        get("berth/a/vmlinuz").unwrap(),
        fs::read(b.out.join("vmlinuz")).unwrap()
    );
    assert_eq!(
        get("berth/a/initrd").unwrap(),
        fs::read(b.out.join("initrd")).unwrap()
    );
    let entry =
        String::from_utf8(get("loader/entries/berth-a+3.conf").expect("counting boot entry"))
            .unwrap();
    assert!(
        entry.contains(&format!("berth.roothash={roothash}")),
        "{entry}"
    );
    assert!(entry.contains("linux /berth/a/vmlinuz"), "{entry}");

    // The state partition is an empty, clean, journaled ext4.
    let (off, size, _) = part("state");
    let state = extract(&disk, off, size, tmp.path(), "state.img");
    let o = Command::new("e2fsck")
        .args(["-fn"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "e2fsck state: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let o = Command::new("dumpe2fs")
        .args(["-h"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("has_journal"));
}

#[test]
fn initramfs_holds_init_and_the_boot_modules_in_load_order() {
    let b = built();
    let z = Command::new("zstd")
        .args(["-dc"])
        .arg(b.out.join("initrd"))
        .output()
        .unwrap();
    assert!(z.status.success(), "initrd is not zstd");
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("initrd.cpio"), &z.stdout).unwrap();
    let x = Command::new("sh")
        .arg("-c")
        .arg("cpio -idm --no-absolute-filenames < initrd.cpio 2>/dev/null")
        .current_dir(tmp.path())
        .status()
        .unwrap();
    assert!(x.success(), "cpio could not extract the initramfs");
    let init = fs::read(tmp.path().join("init")).unwrap();
    let files = b.manifest["rootfs"]["files"].as_array().unwrap();
    let init_sha = files
        .iter()
        .find(|f| f["path"] == "/usr/sbin/berth-init")
        .unwrap()["sha256"]
        .as_str()
        .unwrap();
    assert_eq!(
        hex::encode(Sha256::digest(&init)),
        init_sha,
        "/init is not the root's berth-init"
    );
    assert!(tmp.path().join("etc/initrd-release").is_file());
    let kver = b.manifest["kernel"]["version"].as_str().unwrap();
    let list = fs::read_to_string(tmp.path().join("etc/berth/modules")).unwrap();
    let mods: Vec<&str> = list.lines().collect();
    for want in ["virtio_blk.ko", "dm-verity.ko", "overlay.ko"] {
        assert!(
            mods.iter().any(|m| m.ends_with(want)),
            "{want} not in {mods:?}"
        );
    }
    // Each module's dependencies (modinfo's own reading) come before it.
    for (i, m) in mods.iter().enumerate() {
        let path = tmp.path().join(format!("usr/lib/modules/{kver}/{m}"));
        assert!(path.is_file(), "{m} listed but not in the initramfs");
        let o = Command::new("modinfo")
            .args(["-F", "depends"])
            .arg(&path)
            .output()
            .unwrap();
        for dep in String::from_utf8_lossy(&o.stdout)
            .trim()
            .split(',')
            .filter(|d| !d.is_empty())
        {
            let dep = dep.replace('-', "_");
            let pos = mods.iter().position(|x| {
                let base = x
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .trim_end_matches(".ko")
                    .replace('-', "_");
                base == dep
            });
            assert!(
                pos.is_some_and(|p| p < i),
                "{m} needs {dep}, which is not loaded before it"
            );
        }
    }
}

/// Regression (stale cache): a change to the builder alone, with every input the same, must
/// not reuse the cached image. A copy of berth with one extra byte is "another builder": its
/// build of the same profile into the same cache is not a cache hit, and gives the same bytes.
#[test]
fn a_builder_only_change_misses_the_cache() {
    let b = built();
    let tmp = tempfile::tempdir().unwrap();
    let exe = tmp.path().join("berth-changed");
    let mut bytes = fs::read(env!("CARGO_BIN_EXE_berth")).unwrap();
    bytes.push(0);
    fs::write(&exe, bytes).unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let out = tmp.path().join("out");
    let run = |exe: &Path| {
        Command::new(exe)
            .args(["build", "profiles/qemu.toml", "--json", "--out"])
            .arg(&out)
            .arg("--cache-dir")
            .arg(&b.cache)
            .current_dir(&b.ws)
            .env_remove("BERTH_CACHE_DIR")
            .output()
            .unwrap()
    };
    let same = run(Path::new(env!("CARGO_BIN_EXE_berth")));
    ok(&same, "build with the same berth");
    let v: serde_json::Value = serde_json::from_slice(&same.stdout).unwrap();
    assert_eq!(v["cached"], true, "the same builder reuses the cache");
    let changed = run(&exe);
    ok(&changed, "build with a changed berth");
    let v: serde_json::Value = serde_json::from_slice(&changed.stdout).unwrap();
    assert_eq!(
        v["cached"], false,
        "a changed builder must not reuse the cache"
    );
    assert_eq!(
        sha256(&out.join("disk.raw")),
        sha256(&b.out.join("disk.raw"))
    );
}

/// Regression (BAD-1): a corrupted cached build was reused and reported as success. Eight
/// bytes of root.verity changed in the cache entry: the next build says the entry is damaged,
/// builds again, and its output passes `sha256sum -c`.
#[test]
fn a_corrupted_cache_entry_is_dropped_and_rebuilt() {
    let b = built();
    let tmp = tempfile::tempdir().unwrap();
    // A private copy of the shared cache, so the other tests keep a good one.
    let cache = tmp.path().join("cache");
    copy_tree(&b.cache, &cache);
    let entry = fs::read_dir(cache.join("builds"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("root.verity").is_file())
        .expect("a cache entry");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(entry.join("root.verity"))
            .unwrap();
        f.seek(SeekFrom::Start(8192)).unwrap();
        f.write_all(&[0xAB; 8]).unwrap();
    }
    let out = tmp.path().join("out");
    let o = build(&b.ws, "profiles/qemu.toml", &out, &cache, &["--json"]);
    ok(&o, "build over a damaged cache entry");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["cached"], false, "a damaged entry was served");
    let check = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&out)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    assert_eq!(
        sha256(&out.join("root.verity")),
        sha256(&b.out.join("root.verity"))
    );
}

/// Regression: `berth inspect | head -1` panicked on the closed pipe; it must exit 0 quietly.
#[test]
fn inspect_into_a_closed_pipe_exits_zero() {
    let b = built();
    let o2 = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "'{}' inspect profiles/qemu.toml --files --cache-dir '{}' | head -1; exit ${{PIPESTATUS[0]}}",
            env!("CARGO_BIN_EXE_berth"),
            b.cache.display()
        ))
        .current_dir(&b.ws)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o2.stderr);
    assert_eq!(String::from_utf8_lossy(&o2.stdout).lines().count(), 1);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        o2.status.code(),
        Some(0),
        "berth's exit status; stderr: {err}"
    );
}

/// Regression (BAD-2): `--out` naming an existing file is refused before any work, and the
/// file is left as it was (it used to be hidden as `.NAME.old` behind a build directory).
#[test]
fn out_naming_a_regular_file_is_refused_and_left_alone() {
    let b = built();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("notes.txt");
    fs::write(&file, "my notes").unwrap();
    let o = build(&b.ws, "profiles/qemu.toml", &file, &b.cache, &[]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("notes.txt") && err.contains("not a directory"),
        "{err}"
    );
    assert_eq!(fs::read_to_string(&file).unwrap(), "my notes");
    let names: Vec<String> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["notes.txt"], "nothing else may appear");
}

/// Outputs are readable by others (a web server serving them runs as another user).
#[test]
fn outputs_are_0644_and_the_directory_0755() {
    let b = built();
    for f in berth::outdir::output_names(&[], false) {
        let mode = fs::metadata(b.out.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{f}: {mode:o}");
    }
    let mode = fs::metadata(&b.out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755, "{}: {mode:o}", b.out.display());
    let lock = fs::metadata(b.ws.join("profiles/qemu.lock"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(lock, 0o644, "the lock file: {lock:o}");
}
