//! Oracle tests for the initramfs and image formats, judged by the field's own tools:
//!
//! - `berth::fsimage::cpio`: GNU `cpio -idmu` extracts our newc archive into the same tree (contents,
//!   modes, owners, times, symlinks, hard links, devices), `cpio -tv` lists it, and the zstd /
//!   gzip initramfs decompress with `zstd -d` / `gzip -d` into an archive `cpio -t` reads.
//! - `berth::root::kmod`: on the real Debian cloud kernel package, our closure agrees with
//!   `modinfo -F depends` and `modprobe --show-depends`, and our `modules.dep` with `depmod`'s.
//! - `berth::root::oci`: the archive is reproducible, `tar -tvf` lists the layout, digests and sizes
//!   hold, the documents carry the OCI spec's required fields, and (as root, with the cached
//!   containerd package) a throw-away `containerd` imports it and `ctr images ls` shows it.
//!
//! Each test skips, printing why, when its tool or input is missing; under CI it fails instead
//! (tests/common). The Debian packages are fetched with the host's `apt-get download`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth::fsimage::cpio::{self, Compression};
use berth::fsimage::manifest::{Entry, ImagePath, Kind, Manifest};
use berth::root::oci::{self, OciImage};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn p(s: &str) -> ImagePath {
    ImagePath::new(s).unwrap()
}

use common::have;

fn is_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Runs a shell command line; panics with its output if it fails. Returns stdout.
fn sh(cmdline: &str, dir: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmdline)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmdline}: {e}"));
    assert!(
        out.status.success(),
        "{cmdline} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

use common::debian_deb;

// ---------------------------------------------------------------------------------------------
// cpio

const T: i64 = 1_700_000_000;

fn initramfs_manifest(with_devices: bool) -> Manifest {
    let mut m = Manifest::new(T);
    m.insert(
        p("/init"),
        Entry::file(b"\x7fELF fake init".to_vec(), 0o755, T),
    )
    .unwrap();
    m.insert(p("/etc/initrd-release"), Entry::file(vec![], 0o644, T))
        .unwrap();
    m.insert(
        p("/etc/berth/modules"),
        Entry::file(
            b"kernel/fs/fat/fat.ko\nkernel/fs/fat/vfat.ko\n".to_vec(),
            0o644,
            T,
        ),
    )
    .unwrap();
    // Sizes around the 4-byte padding boundary.
    for n in 0..6 {
        let data: Vec<u8> = (0..n * 3 + 1).map(|i| b'a' + (i % 26) as u8).collect();
        m.insert(
            p(&format!("/usr/share/pad/f{n}{}", "x".repeat(n))),
            Entry::file(data, 0o600, T - 60),
        )
        .unwrap();
    }
    let mut big = Vec::new();
    for i in 0..200_000u32 {
        big.extend_from_slice(&i.to_le_bytes());
    }
    m.insert(
        p("/usr/lib/modules/k/kernel/big.ko"),
        Entry::file(big, 0o644, T),
    )
    .unwrap();
    let mut owned = Entry::file(b"owned".to_vec(), 0o4750, T);
    owned.uid = 1234;
    owned.gid = 5678;
    m.insert(p("/usr/bin/suid"), owned).unwrap();
    m.insert(
        p("/usr/bin/data"),
        Entry::file(b"shared".to_vec(), 0o755, T),
    )
    .unwrap();
    m.insert(
        p("/usr/bin/alias"),
        Entry::new(Kind::Hardlink(p("/usr/bin/data")), 0o755, T),
    )
    .unwrap();
    m.insert(p("/bin"), Entry::symlink("usr/bin", T)).unwrap();
    m.insert(p("/sbin/init"), Entry::symlink("/init", T))
        .unwrap();
    for d in ["/dev", "/proc", "/sys", "/run", "/sysroot"] {
        m.insert(p(d), Entry::dir(0o755, T)).unwrap();
    }
    m.insert(p("/tmp"), Entry::dir(0o1777, T)).unwrap();
    if with_devices {
        m.insert(
            p("/dev/console"),
            Entry::new(Kind::CharDev { major: 5, minor: 1 }, 0o600, T),
        )
        .unwrap();
        m.insert(
            p("/dev/vda"),
            Entry::new(
                Kind::BlockDev {
                    major: 254,
                    minor: 0,
                },
                0o660,
                T,
            ),
        )
        .unwrap();
        m.insert(p("/run/initctl"), Entry::new(Kind::Fifo, 0o600, T))
            .unwrap();
    }
    m
}

/// Compares an extracted tree with the manifest: every entry exists with its kind, mode, data,
/// link target, time (except symlinks and directories written into later) and, as root, owner.
fn compare_tree(m: &Manifest, root: &Path) {
    let mut inode_of: BTreeMap<ImagePath, u64> = BTreeMap::new();
    for (path, e) in m.iter() {
        if path.is_root() {
            continue;
        }
        let host = root.join(&path.as_str()[1..]);
        let md =
            fs::symlink_metadata(&host).unwrap_or_else(|err| panic!("{path} not extracted: {err}"));
        let ft = md.file_type();
        match &e.kind {
            Kind::Dir => assert!(ft.is_dir(), "{path}"),
            Kind::File(d) => {
                assert!(ft.is_file(), "{path}");
                assert_eq!(&fs::read(&host).unwrap(), &**d, "{path} content");
            }
            Kind::Hardlink(t) => {
                assert!(ft.is_file(), "{path}");
                let target = root.join(&t.as_str()[1..]);
                assert_eq!(
                    md.ino(),
                    fs::metadata(&target).unwrap().ino(),
                    "{path} is not a hard link of {t}"
                );
                inode_of.insert(path.clone(), md.ino());
            }
            Kind::Symlink(t) => {
                assert!(ft.is_symlink(), "{path}");
                assert_eq!(fs::read_link(&host).unwrap().to_str(), Some(t.as_str()));
            }
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                if matches!(e.kind, Kind::CharDev { .. }) {
                    assert!(ft.is_char_device(), "{path}");
                } else {
                    assert!(ft.is_block_device(), "{path}");
                }
                let rdev = md.rdev();
                let (maj, min) = (
                    ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff),
                    (rdev & 0xff) | ((rdev >> 12) & !0xff),
                );
                assert_eq!((maj, min), (u64::from(*major), u64::from(*minor)), "{path}");
            }
            Kind::Fifo => assert!(ft.is_fifo(), "{path}"),
            Kind::Socket => assert!(ft.is_socket(), "{path}"),
        }
        if !matches!(e.kind, Kind::Symlink(_)) {
            assert_eq!(
                md.permissions().mode() & 0o7777,
                u32::from(e.mode),
                "{path} mode"
            );
        }
        if !matches!(e.kind, Kind::Symlink(_) | Kind::Dir) {
            assert_eq!(md.mtime(), e.mtime, "{path} mtime");
        }
        if is_root() {
            assert_eq!((md.uid(), md.gid()), (e.uid, e.gid), "{path} owner");
        }
    }
}

#[test]
fn gnu_cpio_extracts_what_write_newc_writes() {
    if !have("cpio") {
        return;
    }
    // Device nodes need root (CAP_MKNOD) to extract.
    let devices = is_root();
    if !devices {
        eprintln!("note: not root: device nodes and owners are not checked");
    }
    let m = initramfs_manifest(devices);
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("initrd.cpio");
    let mut bytes = Vec::new();
    cpio::write_newc(&m, &mut bytes).unwrap();
    fs::write(&archive, &bytes).unwrap();
    let mut again = Vec::new();
    cpio::write_newc(&m, &mut again).unwrap();
    assert_eq!(bytes, again, "write_newc is not deterministic");

    let out = tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    sh(
        &format!(
            "cpio -idmu --no-absolute-filenames --quiet < {}",
            archive.display()
        ),
        &out,
    );
    compare_tree(&m, &out);

    // `cpio -tv`: every name, in manifest order, with symlink targets.
    let listing = sh(
        &format!("cpio -tv --quiet < {}", archive.display()),
        tmp.path(),
    );
    let lines: Vec<&str> = listing.lines().collect();
    let expected: Vec<&ImagePath> = m.iter().map(|(p, _)| p).filter(|p| !p.is_root()).collect();
    assert_eq!(lines.len(), expected.len(), "{listing}");
    for (line, path) in lines.iter().zip(&expected) {
        let name = &path.as_str()[1..];
        match &m.get(path).unwrap().kind {
            Kind::Symlink(t) => assert!(line.ends_with(&format!("{name} -> {t}")), "{line}"),
            _ => assert!(line.ends_with(name), "{line} vs {name}"),
        }
    }
    assert!(
        lines.iter().any(|l| l.starts_with("-rwsr-x---")),
        "{listing}"
    );
}

#[test]
fn compressed_initramfs_decompresses_with_zstd_and_gzip() {
    if !have("cpio") || !have("zstd") || !have("gzip") {
        return;
    }
    let m = initramfs_manifest(false);
    let tmp = tempfile::tempdir().unwrap();
    let expected: Vec<String> = m
        .iter()
        .filter(|(p, _)| !p.is_root())
        .map(|(p, _)| p.as_str()[1..].to_string())
        .collect();
    for (comp, tool) in [(Compression::Zstd, "zstd"), (Compression::Gzip, "gzip")] {
        let mut bytes = Vec::new();
        cpio::write_initramfs(&m, &mut bytes, comp).unwrap();
        let mut again = Vec::new();
        cpio::write_initramfs(&m, &mut again, comp).unwrap();
        assert_eq!(bytes, again, "{comp:?} output is not deterministic");
        let file = tmp.path().join(format!("initrd.{tool}"));
        fs::write(&file, &bytes).unwrap();
        // `zstd -t` also verifies the frame's content checksum.
        sh(&format!("{tool} -t {}", file.display()), tmp.path());
        let listing = sh(
            &format!("{tool} -dc {} | cpio -t --quiet", file.display()),
            tmp.path(),
        );
        let names: Vec<&str> = listing.lines().collect();
        assert_eq!(names, expected, "{comp:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// kmod

/// The kernel package read into a merged-/usr manifest, and its kernel version.
fn kernel_manifest(deb: &Path) -> (Manifest, String) {
    let entries = berth::fetch::deb::read_data(deb).unwrap();
    let mut m = Manifest::new(0);
    let mut kver = None;
    for (path, mut e) in entries {
        let path = berth::root::rootfs::usrmerge(&path);
        if path.is_root() || (e.kind == Kind::Dir && m.contains(&path)) {
            continue;
        }
        if let Kind::Hardlink(t) = &e.kind {
            e.kind = Kind::Hardlink(berth::root::rootfs::usrmerge(t));
        }
        if let Some(rest) = path.as_str().strip_prefix("/usr/lib/modules/") {
            if let Some((v, _)) = rest.split_once('/') {
                kver = Some(v.to_string());
            }
        }
        m.insert(path, e).unwrap();
    }
    (
        m,
        kver.expect("the kernel package has /lib/modules/<kver>/"),
    )
}

#[test]
fn module_closure_and_modules_dep_agree_with_kmod_on_the_debian_kernel() {
    let Some(deb) = debian_deb("linux-image-cloud-amd64", Some("linux-image-")) else {
        return;
    };
    let (modinfo, depmod, modprobe) = (
        "/usr/sbin/modinfo",
        "/usr/sbin/depmod",
        "/usr/sbin/modprobe",
    );
    if !common::require(
        Path::new(modinfo).exists() && Path::new(depmod).exists(),
        "modinfo/depmod are not in /usr/sbin",
        "install the Debian package kmod (ci/install-deps does)",
    ) {
        return;
    }
    let (m, kver) = kernel_manifest(&deb);
    let idx = berth::root::kmod::index(&m, &kver).unwrap();
    assert!(
        idx.modules().count() > 1000,
        "{} modules",
        idx.modules().count()
    );

    let tmp = tempfile::tempdir().unwrap();
    sh(
        &format!("dpkg-deb -x {} {}", deb.display(), tmp.path().display()),
        tmp.path(),
    );
    let moddir = tmp.path().join("lib/modules").join(&kver);

    let wanted = [
        "virtio_blk",
        "virtio_net",
        "dm_verity",
        "overlay",
        "vfat",
        "ext4",
    ];
    let order = idx.load_order(&wanted).unwrap();
    eprintln!("load order: {order:?}");
    assert!(
        idx.is_builtin("ext4"),
        "ext4 is built into the Debian cloud kernel"
    );
    assert!(!order.iter().any(|p| p.contains("/ext4")));
    // Every module's `modinfo -F depends` appears before it.
    let name_of = |rel: &str| {
        let f = rel.rsplit('/').next().unwrap();
        f.split(".ko").next().unwrap().replace('-', "_")
    };
    let mut loaded: BTreeSet<String> = BTreeSet::new();
    for rel in &order {
        let deps = sh(
            &format!("{modinfo} -F depends {}", moddir.join(rel).display()),
            tmp.path(),
        );
        for d in deps.trim().split(',').filter(|d| !d.is_empty()) {
            let d = d.replace('-', "_");
            assert!(
                loaded.contains(&d),
                "{rel} needs {d}, which is not loaded before it: {order:?}"
            );
        }
        assert!(loaded.insert(name_of(rel)), "{rel} twice");
    }
    for w in &wanted[..5] {
        assert!(loaded.contains(*w), "{w} missing from {order:?}");
    }
    let err = idx.load_order(&["virtio_blkk"]).unwrap_err().to_string();
    assert!(err.contains("did you mean virtio_blk"), "{err}");

    // depmod on the extracted copy: our modules.dep must list the same dependencies.
    sh(
        &format!("{depmod} -b {} {kver}", tmp.path().display()),
        tmp.path(),
    );
    let theirs = fs::read_to_string(moddir.join("modules.dep")).unwrap();
    let parse = |text: &str| -> BTreeMap<String, Vec<String>> {
        text.lines()
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                (
                    k.to_string(),
                    v.split_whitespace().map(str::to_string).collect(),
                )
            })
            .collect()
    };
    let ours_text = idx.modules_dep();
    let (ours, theirs) = (parse(&ours_text), parse(&theirs));
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "modules.dep lists different modules"
    );
    let (mut same_order, mut shown) = (0, 0);
    for (k, v) in &ours {
        let mut a = v.clone();
        let mut b = theirs[k].clone();
        if a == b {
            same_order += 1;
        } else {
            shown += 1;
            if shown <= 3 {
                eprintln!("order differs: {k}\n  ours:   {a:?}\n  depmod: {b:?}");
            }
        }
        a.sort();
        b.sort();
        assert_eq!(a, b, "{k}: dependencies differ from depmod's");
    }
    eprintln!(
        "modules.dep: {} modules, dependency sets all equal, {same_order} lines in depmod's exact order",
        ours.len()
    );
    // Where depmod's order differs it is among modules that do not depend on each other (depmod
    // orders those by symbol-table order, which `.modinfo` does not record); ours must still be a
    // valid modprobe order: every module listed before (to the left of) what it depends on.
    let path_of: BTreeMap<&str, &str> = idx
        .modules()
        .map(|m| (m.name.as_str(), m.path.as_str()))
        .collect();
    let deps_of: BTreeMap<&str, Vec<&str>> = idx
        .modules()
        .map(|m| {
            (
                m.path.as_str(),
                m.depends.iter().map(|d| path_of[d.as_str()]).collect(),
            )
        })
        .collect();
    for (k, line) in &ours {
        for (i, d) in line.iter().enumerate() {
            for dd in &deps_of[d.as_str()] {
                let at = line.iter().position(|x| x == dd).unwrap();
                assert!(at > i, "{k}: {d} is listed after its dependency {dd}");
            }
        }
    }

    // modprobe resolves the same closure from depmod's index.
    if Path::new(modprobe).exists() {
        let mut theirs: BTreeSet<String> = BTreeSet::new();
        for w in wanted {
            let out = sh(
                &format!(
                    "{modprobe} -d {} -S {kver} --show-depends {w}",
                    tmp.path().display()
                ),
                tmp.path(),
            );
            for line in out.lines() {
                if let Some(path) = line.strip_prefix("insmod ") {
                    let path = path.split_whitespace().next().unwrap();
                    let rel = path.split(&format!("/{kver}/")).nth(1).unwrap();
                    theirs.insert(rel.to_string());
                }
            }
        }
        let ours: BTreeSet<String> = order.iter().cloned().collect();
        assert_eq!(ours, theirs, "closure differs from modprobe --show-depends");
    }
}

// ---------------------------------------------------------------------------------------------
// oci

fn hello_image() -> OciImage {
    let mut m = Manifest::new(T);
    m.insert(
        p("/bin/hello"),
        Entry::file(b"#!/bin/sh\necho hello\n".to_vec(), 0o755, T),
    )
    .unwrap();
    m.insert(p("/etc/hostname"), Entry::file(b"box\n".to_vec(), 0o644, T))
        .unwrap();
    m.insert(p("/bin/sh"), Entry::symlink("hello", T)).unwrap();
    m.insert(p("/tmp"), Entry::dir(0o1777, T)).unwrap();
    let mut owned = Entry::file(b"data".to_vec(), 0o640, T + 999);
    owned.uid = 1000;
    owned.gid = 1000;
    m.insert(p("/home/user/file"), owned).unwrap();
    OciImage {
        name: "docker.io/berth/hello:latest".into(),
        rootfs: m,
        entrypoint: vec!["/bin/hello".into()],
        cmd: vec!["world".into()],
        env: vec!["PATH=/bin".into()],
    }
}

fn sha256_hex(d: &[u8]) -> String {
    hex::encode(Sha256::digest(d))
}

fn descriptor_ok(d: &Value, media_type: &str, dir: &Path) -> Vec<u8> {
    assert_eq!(d["mediaType"], media_type, "{d}");
    let digest = d["digest"].as_str().unwrap();
    let hexd = digest.strip_prefix("sha256:").expect("sha256 digest");
    assert_eq!(hexd.len(), 64);
    let blob = fs::read(dir.join("blobs/sha256").join(hexd)).unwrap();
    assert_eq!(d["size"].as_u64().unwrap(), blob.len() as u64, "{d}");
    assert_eq!(
        sha256_hex(&blob),
        hexd,
        "blob content does not match its name"
    );
    blob
}

#[test]
fn oci_archive_layout_digests_and_spec_fields() {
    let img = hello_image();
    let mut a = Vec::new();
    let digest = oci::write_archive(&img, T, &mut a).unwrap();
    let mut b = Vec::new();
    assert_eq!(oci::write_archive(&img, T, &mut b).unwrap(), digest);
    assert_eq!(a, b, "archive bytes differ between two runs");

    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("hello.tar");
    fs::write(&archive, &a).unwrap();
    let listing = sh(&format!("tar -tvf {}", archive.display()), tmp.path());
    eprintln!("{listing}");
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.split_whitespace().last().unwrap())
        .collect();
    assert_eq!(names.len(), 7, "{listing}");
    assert!(names.contains(&"oci-layout") && names.contains(&"index.json"));
    assert!(names.contains(&"blobs/sha256/"));
    assert!(
        listing
            .lines()
            .all(|l| l.contains("0/0") && l.contains("2023-11-14")),
        "{listing}"
    );

    let out = tmp.path().join("x");
    fs::create_dir(&out).unwrap();
    sh(&format!("tar -xf {}", archive.display()), &out);
    let layout: Value = serde_json::from_slice(&fs::read(out.join("oci-layout")).unwrap()).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");

    let index: Value = serde_json::from_slice(&fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], oci::MEDIA_TYPE_INDEX);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1);
    let md = &manifests[0];
    assert_eq!(md["digest"], digest.as_str());
    assert_eq!(
        md["annotations"]["io.containerd.image.name"],
        "docker.io/berth/hello:latest"
    );
    assert_eq!(
        md["annotations"]["org.opencontainers.image.ref.name"],
        "latest"
    );
    assert_eq!(md["platform"]["architecture"], "amd64");
    assert_eq!(md["platform"]["os"], "linux");
    let manifest: Value =
        serde_json::from_slice(&descriptor_ok(md, oci::MEDIA_TYPE_MANIFEST, &out)).unwrap();

    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], oci::MEDIA_TYPE_MANIFEST);
    let config: Value = serde_json::from_slice(&descriptor_ok(
        &manifest["config"],
        oci::MEDIA_TYPE_CONFIG,
        &out,
    ))
    .unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    let layer = descriptor_ok(&layers[0], oci::MEDIA_TYPE_LAYER_GZIP, &out);

    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    assert_eq!(config["rootfs"]["type"], "layers");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/bin/hello"])
    );
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["world"]));
    assert_eq!(config["config"]["Env"], serde_json::json!(["PATH=/bin"]));
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&layer[..])
        .read_to_end(&mut raw)
        .unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"],
        serde_json::json!([format!("sha256:{}", sha256_hex(&raw))])
    );

    // The layer itself, as GNU tar sees it.
    let layer_file = tmp.path().join("layer.tar");
    fs::write(&layer_file, &raw).unwrap();
    let listing = sh(
        &format!("tar --numeric-owner -tvf {}", layer_file.display()),
        tmp.path(),
    );
    eprintln!("{listing}");
    assert!(listing.contains("-rwxr-xr-x 0/0") && listing.contains("bin/hello"));
    assert!(listing.contains("bin/sh -> hello"));
    assert!(listing.contains("drwxrwxrwt 0/0"));
    assert!(listing.contains("-rw-r----- 1000/1000") && listing.contains("home/user/file"));
    assert!(
        !listing.contains("2023-11-15"),
        "mtime not clamped:\n{listing}"
    );
}

/// Kills the containerd we started (by its own pid) when the test ends, however it ends.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn containerd_imports_the_archive() {
    if !common::require(
        is_root(),
        "containerd import needs root",
        "run the tests as root (CI does)",
    ) {
        return;
    }
    let Some(deb) = debian_deb("containerd", None) else {
        return;
    };
    let tmp = tempfile::Builder::new()
        .prefix("ctrd")
        .tempdir_in("/tmp")
        .unwrap();
    let dir = tmp.path();
    sh(&format!("dpkg-deb -x {} pkg", deb.display()), dir);
    let containerd = dir.join("pkg/usr/bin/containerd");
    let ctr = dir.join("pkg/usr/bin/ctr");
    let sock = dir.join("c.sock");
    let config = dir.join("config.toml");
    // No CRI (it wants CNI and more), a private root/state, and the socket in the temp dir.
    fs::write(
        &config,
        format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{1}\"\n",
            dir.display(),
            sock.display()
        ),
    )
    .unwrap();
    let log = fs::File::create(dir.join("containerd.log")).unwrap();
    let child = Command::new(&containerd)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut daemon = Daemon(child);
    let start = Instant::now();
    let ctr_cmd = |args: &str| {
        format!(
            "{} --address {} -n berth {args}",
            ctr.display(),
            sock.display()
        )
    };
    loop {
        let up = Command::new("sh")
            .arg("-c")
            .arg(ctr_cmd("version"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if up {
            break;
        }
        if let Ok(Some(status)) = daemon.0.try_wait() {
            let log = fs::read_to_string(dir.join("containerd.log")).unwrap_or_default();
            panic!("containerd exited ({status}) before answering:\n{log}");
        }
        if start.elapsed() > Duration::from_secs(30) {
            let log = fs::read_to_string(dir.join("containerd.log")).unwrap_or_default();
            panic!("containerd did not answer within 30 s:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    let img = hello_image();
    let archive = dir.join("hello.tar");
    let mut f = fs::File::create(&archive).unwrap();
    let digest = oci::write_archive(&img, T, &mut f).unwrap();
    f.flush().unwrap();
    drop(f);
    // The native snapshotter works on any filesystem; unpacking checks the layer's diff_id.
    let out = sh(
        &ctr_cmd(&format!(
            "images import --snapshotter native {}",
            archive.display()
        )),
        dir,
    );
    eprintln!("ctr images import: {out}");
    let ls = sh(&ctr_cmd("images ls"), dir);
    eprintln!("ctr images ls:\n{ls}");
    let line = ls
        .lines()
        .find(|l| l.starts_with("docker.io/berth/hello:latest "))
        .unwrap_or_else(|| panic!("image not listed:\n{ls}"));
    assert!(line.contains(&digest), "{line} lacks {digest}");
    assert!(line.contains("linux/amd64"), "{line}");
    let check = sh(&ctr_cmd("images check"), dir);
    eprintln!("ctr images check:\n{check}");
    assert!(
        check
            .lines()
            .any(|l| l.starts_with("docker.io/berth/hello:latest") && l.contains("complete")),
        "{check}"
    );
    // The unpacked snapshot holds the layer's files.
    let snaps = sh(&ctr_cmd("snapshots --snapshotter native ls"), dir);
    assert!(
        snaps.lines().count() >= 2,
        "no snapshot after unpack:\n{snaps}"
    );
}
