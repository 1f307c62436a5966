//! Every output format, checked by the field's own tools: `qemu-img check`/`compare`/`info`,
//! `zstd -d`, `tar`, `sha256sum -c`, `ruby -c` and, where installed, `vagrant box add`.
//!
//! The main test runs on a small synthetic disk (64 MiB + 4 KiB: not a whole MiB, not a whole
//! VMDK grain) and writes everything twice to compare bytes. `real_disk_formats` does one run
//! on a real built image named by $BERTH_FORMATS_DISK (e.g. out/berth-qemu/disk.raw), and prints the
//! sizes and times of each format.
//!
//! Needs: qemu-utils, zstd, coreutils, tar, gzip; optional: vagrant (ruby comes with it).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use berth::formats::{self, Format, FormatCtx};
use serde::Deserialize;
use sha2::{Digest, Sha256};

mod common;

const MIB: u64 = 1 << 20;
const SMALL_DISK: u64 = 64 * MIB + 4096;
const MTIME: i64 = 1_700_000_000;

use common::have;

/// Runs a tool (tests may use Command directly; library code goes through berth::util::cmd::Cmd).
fn run(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", args[0]));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn must(dir: &Path, args: &[&str]) -> String {
    let (ok, text) = run(dir, args);
    assert!(ok, "`{}` failed:\n{text}", args.join(" "));
    text
}

fn sha256(p: &Path) -> String {
    let mut f = fs::File::open(p).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// A sparse disk with data in a few places: random bytes, text, and a tail at the very end.
fn synthetic_disk(path: &Path, size: u64) {
    let mut f = fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    let text: Vec<u8> = b"berth immutable image ".repeat(100_000);
    let regions: Vec<(u64, Vec<u8>)> = vec![
        (0, noise(MIB as usize)),
        (10 * MIB + 12_345 * 512, noise(3 * MIB as usize)),
        (33 * MIB, text[..2 * MIB as usize].to_vec()),
        (40 * MIB + 65_536 * 3, noise(512)),
        (size - 4096, noise(4096)),
    ];
    for (off, data) in regions {
        f.seek(SeekFrom::Start(off)).unwrap();
        f.write_all(&data).unwrap();
    }
    f.sync_all().unwrap();
}

fn ctx<'a>(out: &'a Path, disk: &'a Path, size: u64, compressed: bool) -> FormatCtx<'a> {
    FormatCtx {
        out_dir: out,
        disk,
        image_name: "test",
        version: "0.1.0",
        mtime: MTIME,
        disk_size: size,
        seed: [0x42; 32],
        qcow2_compressed: compressed,
        ssh_user: None,
    }
}

#[derive(Deserialize, Debug)]
struct ImgInfo {
    format: String,
    #[serde(rename = "virtual-size")]
    virtual_size: u64,
    #[serde(rename = "format-specific")]
    format_specific: Option<FormatSpecific>,
}

#[derive(Deserialize, Debug)]
struct FormatSpecific {
    #[serde(rename = "type")]
    kind: String,
    data: serde_json::Value,
}

fn info(dir: &Path, file: &str, fmt: &str) -> ImgInfo {
    let json = must(dir, &["qemu-img", "info", "--output=json", "-f", fmt, file]);
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("qemu-img info {file}: {e}\n{json}"))
}

/// Reads and checks a VHD footer; returns (current size, (c, h, s)).
fn parse_vhd_footer(path: &Path) -> (u64, (u16, u8, u8)) {
    let mut f = fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let mut b = [0u8; 512];
    f.seek(SeekFrom::Start(len - 512)).unwrap();
    f.read_exact(&mut b).unwrap();
    let be32 = |o: usize| u32::from_be_bytes(b[o..o + 4].try_into().unwrap());
    let be64 = |o: usize| u64::from_be_bytes(b[o..o + 8].try_into().unwrap());
    assert_eq!(&b[0..8], b"conectix");
    assert_eq!(be32(8), 2, "features");
    assert_eq!(be32(12), 0x0001_0000, "version");
    assert_eq!(be64(16), u64::MAX, "data offset of a fixed disk");
    assert_eq!(i64::from(be32(24)), MTIME - 946_684_800, "timestamp");
    assert_eq!(&b[28..32], b"win ", "creator: a current-size writer");
    assert_eq!(be64(40), be64(48), "original == current size");
    assert_eq!(be32(60), 2, "disk type fixed");
    let sum = b
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |a, (_, x)| a.wrapping_add(u32::from(*x)));
    assert_eq!(be32(64), !sum, "checksum");
    assert_ne!(&b[68..84], &[0u8; 16], "unique id");
    assert_eq!(b[84], 0, "saved state");
    assert_eq!(len - 512, be64(48), "data size == current size");
    let chs = (u16::from_be_bytes([b[56], b[57]]), b[58], b[59]);
    (be64(48), chs)
}

/// The VHD specification's CHS algorithm, written out again from the spec's pseudo-code as an
/// oracle (qemu-img cannot serve: with force_size it writes the maximum geometry instead).
fn spec_chs(total: u64) -> (u16, u8, u8) {
    let total = total.min(65535 * 16 * 255);
    let (mut spt, mut heads, mut cth);
    if total >= 65535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cth = total / spt;
    } else {
        spt = 17;
        cth = total / spt;
        heads = cth.div_ceil(1024);
        if heads < 4 {
            heads = 4;
        }
        if cth >= heads * 1024 || heads > 16 {
            spt = 31;
            heads = 16;
            cth = total / spt;
        }
        if cth >= heads * 1024 {
            spt = 63;
            heads = 16;
            cth = total / spt;
        }
    }
    ((cth / heads) as u16, heads as u8, spt as u8)
}

/// A tiny XML well-formedness check: tags nest and close (no XML crate in the workspace).
fn check_xml_nesting(xml: &str) {
    let mut stack: Vec<&str> = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let end = rest.find('>').expect("unclosed tag");
        let tag = &rest[..end];
        rest = &rest[end + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        let name = tag
            .trim_start_matches('/')
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap();
        if tag.starts_with('/') {
            assert_eq!(stack.pop(), Some(name), "mismatched </{name}>");
        } else if !tag.ends_with('/') {
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "unclosed elements: {stack:?}");
}

fn write_all(c: &FormatCtx) -> BTreeMap<Format, (PathBuf, f64)> {
    let mut out = BTreeMap::new();
    for f in formats::build_order(&Format::ALL) {
        let t = Instant::now();
        let p = formats::write(f, c, None).unwrap_or_else(|e| panic!("{f}: {e:#}"));
        assert_eq!(p, c.out_dir.join(f.file_name()));
        out.insert(f, (p, t.elapsed().as_secs_f64()));
    }
    out
}

/// The oracle checks shared by the small and the real disk.
fn check_formats(dir: &Path, disk: &str, size: u64) {
    // qcow2 and vmdk: clean and equal to the raw disk.
    must(dir, &["qemu-img", "check", "-f", "qcow2", "disk.qcow2"]);
    must(dir, &["qemu-img", "check", "-f", "vmdk", "disk.vmdk"]);
    for (file, fmt) in [
        ("disk.qcow2", "qcow2"),
        ("disk.vmdk", "vmdk"),
        ("disk.vhd", "vpc"),
    ] {
        let text = must(
            dir,
            &["qemu-img", "compare", "-f", "raw", "-F", fmt, disk, file],
        );
        assert!(text.contains("Images are identical"), "{file}: {text}");
    }
    let q = info(dir, "disk.qcow2", "qcow2");
    assert_eq!((q.format.as_str(), q.virtual_size), ("qcow2", size));
    let v = info(dir, "disk.vmdk", "vmdk");
    assert_eq!((v.format.as_str(), v.virtual_size), ("vmdk", size));
    let fs_ = v.format_specific.expect("vmdk format-specific data");
    assert_eq!(fs_.kind, "vmdk");
    assert_eq!(fs_.data["create-type"], "streamOptimized", "{:?}", fs_.data);
    assert_eq!(fs_.data["extents"][0]["compressed"], true);
    // The VHD: whole MiB, qemu agrees on the size, footer valid, geometry as qemu computes it.
    let rounded = size.div_ceil(MIB) * MIB;
    let h = info(dir, "disk.vhd", "vpc");
    assert_eq!((h.format.as_str(), h.virtual_size), ("vpc", rounded));
    let (cur, chs) = parse_vhd_footer(&dir.join("disk.vhd"));
    assert_eq!(cur, rounded);
    assert_eq!(chs, spec_chs(rounded / 512), "CHS geometry");
    let (c, h, sp) = chs;
    assert!(u64::from(c) * u64::from(h) * u64::from(sp) <= rounded / 512);
    // raw.zst decompresses to the disk.
    if have("zstd") {
        must(
            dir,
            &["zstd", "-q", "-d", "-f", "disk.raw.zst", "-o", "unzstd.raw"],
        );
        assert_eq!(sha256(&dir.join("unzstd.raw")), sha256(&dir.join(disk)));
        fs::remove_file(dir.join("unzstd.raw")).unwrap();
    }
    check_boxes(dir, size);
}

fn check_boxes(dir: &Path, size: u64) {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct LibvirtMeta {
        provider: String,
        format: String,
        virtual_size: u64,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct VboxMeta {
        provider: String,
    }
    let list = must(dir, &["tar", "-tzvf", "berth-libvirt.box"]);
    let names: Vec<&str> = list
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    assert_eq!(names, ["Vagrantfile", "box.img", "metadata.json"], "{list}");
    assert!(
        list.lines().all(|l| l.contains("0/0")),
        "owner 0/0:\n{list}"
    );
    let list = must(dir, &["tar", "-tzf", "berth-virtualbox.box"]);
    assert_eq!(
        list.lines().collect::<Vec<_>>(),
        ["Vagrantfile", "box.ovf", "disk.vmdk", "metadata.json"]
    );

    let lv = dir.join("unpacked-libvirt");
    let vb = dir.join("unpacked-virtualbox");
    for (d, b) in [(&lv, "berth-libvirt.box"), (&vb, "berth-virtualbox.box")] {
        let _ = fs::remove_dir_all(d);
        fs::create_dir(d).unwrap();
        must(d, &["tar", "-xzf", &format!("../{b}")]);
        assert!(d.join("Vagrantfile").is_file());
        if have("ruby") {
            must(d, &["ruby", "-c", "Vagrantfile"]);
        }
    }
    let m: LibvirtMeta =
        serde_json::from_slice(&fs::read(lv.join("metadata.json")).unwrap()).unwrap();
    assert_eq!(
        (m.provider.as_str(), m.format.as_str()),
        ("libvirt", "qcow2")
    );
    assert_eq!(m.virtual_size, size.div_ceil(1 << 30));
    assert_eq!(sha256(&lv.join("box.img")), sha256(&dir.join("disk.qcow2")));
    let vf = fs::read_to_string(lv.join("Vagrantfile")).unwrap();
    assert!(
        vf.contains("libvirt.loader") && vf.contains("disabled: true"),
        "{vf}"
    );

    let m: VboxMeta = serde_json::from_slice(&fs::read(vb.join("metadata.json")).unwrap()).unwrap();
    assert_eq!(m.provider, "virtualbox");
    assert_eq!(
        sha256(&vb.join("disk.vmdk")),
        sha256(&dir.join("disk.vmdk"))
    );
    let ovf = fs::read_to_string(vb.join("box.ovf")).unwrap();
    check_xml_nesting(&ovf);
    let vmdk_size = fs::metadata(vb.join("disk.vmdk")).unwrap().len();
    for needle in [
        "<Envelope ovf:version=\"1.0\"".to_string(),
        format!("<File ovf:id=\"file1\" ovf:href=\"disk.vmdk\" ovf:size=\"{vmdk_size}\"/>"),
        format!("ovf:capacity=\"{size}\""),
        "vmdk.html#streamOptimized".into(),
        "<VirtualSystem ovf:id=\"berth-test\">".into(),
        "<rasd:ResourceType>3</rasd:ResourceType>".into(),
        "<rasd:VirtualQuantity>1024</rasd:VirtualQuantity>".into(),
        "<rasd:ResourceSubType>VirtioSCSI</rasd:ResourceSubType>".into(),
        "<rasd:HostResource>/disk/vmdisk1</rasd:HostResource>".into(),
        "vmw:key=\"firmware\" vmw:value=\"efi\"".into(),
    ] {
        assert!(ovf.contains(&needle), "box.ovf lacks {needle}:\n{ovf}");
    }
    let vf = fs::read_to_string(vb.join("Vagrantfile")).unwrap();
    assert!(vf.contains("\"--firmware\", \"efi\""), "{vf}");
    fs::remove_dir_all(&lv).unwrap();
    fs::remove_dir_all(&vb).unwrap();
}

fn check_sums(dir: &Path, files: &[&str]) {
    let sums = berth::outdir::hash_all(dir, files).unwrap();
    assert_eq!(sums.len(), files.len());
    berth::outdir::write_sha256sums(dir, &sums).unwrap();
    let text = must(dir, &["sha256sum", "-c", "SHA256SUMS"]);
    assert_eq!(text.matches(": OK").count(), files.len(), "{text}");
}

#[test]
fn every_format_validates_and_is_reproducible() {
    if !have("qemu-img") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let disk = dir.join("disk.raw");
    synthetic_disk(&disk, SMALL_DISK);
    let a = dir.join("a");
    let b = dir.join("b");
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    let written_a = write_all(&ctx(&a, &disk, SMALL_DISK, false));

    // Twice, other directory, boxes first (their disks then come from temporary files): same bytes.
    let cb = ctx(&b, &disk, SMALL_DISK, false);
    for f in [Format::VagrantVirtualbox, Format::VagrantLibvirt] {
        formats::write(f, &cb, None).unwrap();
    }
    for f in Format::ALL {
        if f.needs().is_none() {
            formats::write(f, &cb, None).unwrap();
        }
    }
    let leftovers: Vec<_> = fs::read_dir(&b)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    for (f, (p, _)) in &written_a {
        assert_eq!(
            sha256(p),
            sha256(&b.join(f.file_name())),
            "{f} differs between two runs"
        );
    }

    fs::copy(&disk, a.join("disk.raw")).unwrap();
    check_formats(&a, "disk.raw", SMALL_DISK);

    // Compressed qcow2: deterministic too, and still equal to the disk.
    let c = dir.join("c");
    let d = dir.join("d");
    for o in [&c, &d] {
        fs::create_dir(o).unwrap();
        formats::write(Format::Qcow2, &ctx(o, &disk, SMALL_DISK, true), None).unwrap();
    }
    assert_eq!(sha256(&c.join("disk.qcow2")), sha256(&d.join("disk.qcow2")));
    must(&c, &["qemu-img", "check", "-f", "qcow2", "disk.qcow2"]);
    let raw = disk.to_string_lossy().into_owned();
    must(
        &c,
        &[
            "qemu-img",
            "compare",
            "-f",
            "raw",
            "-F",
            "qcow2",
            &raw,
            "disk.qcow2",
        ],
    );

    let mut names: Vec<&str> = Format::ALL.iter().map(|f| f.file_name()).collect();
    names.push("disk.raw");
    check_sums(&a, &names);

    vagrant_box_add(&a);
}

#[test]
fn a_wrong_disk_size_is_an_error_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk.raw");
    fs::write(&disk, vec![0u8; 4096]).unwrap();
    let out = tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    let e = formats::write(Format::Vhd, &ctx(&out, &disk, 8192, false), None).unwrap_err();
    assert!(format!("{e:#}").contains("4096 bytes"), "{e:#}");
    assert_eq!(fs::read_dir(&out).unwrap().count(), 0);
}

/// `vagrant box add` both boxes into a private VAGRANT_HOME, list them, remove them.
fn vagrant_box_add(dir: &Path) {
    if !have("vagrant") {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let vh = home.path().to_string_lossy().into_owned();
    let vagrant = |args: &[&str]| -> (bool, String) {
        let out = Command::new("vagrant")
            .args(args)
            .current_dir(dir)
            .env("VAGRANT_HOME", &vh)
            .env("VAGRANT_CHECKPOINT_DISABLE", "1")
            .env("VAGRANT_NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    for (name, file, provider) in [
        ("berth-test-libvirt", "berth-libvirt.box", "libvirt"),
        (
            "berth-test-virtualbox",
            "berth-virtualbox.box",
            "virtualbox",
        ),
    ] {
        let (ok, text) = vagrant(&["box", "add", "--name", name, "--provider", provider, file]);
        assert!(ok, "vagrant box add {file}:\n{text}");
        let (ok, list) = vagrant(&["box", "list"]);
        assert!(
            ok && list.contains(name) && list.contains(provider),
            "{list}"
        );
        let (ok, text) = vagrant(&["box", "remove", "--force", "--provider", provider, name]);
        assert!(ok, "vagrant box remove {name}:\n{text}");
    }
}

/// A measurement, run on request: `BERTH_FORMATS_DISK=out/berth-qemu/disk.raw cargo test
/// --test formats_qemu_img real_disk_formats -- --ignored --nocapture`. The synthetic-disk
/// tests above cover every format.
#[test]
#[ignore = "measurement on a real disk: set BERTH_FORMATS_DISK and pass --ignored"]
fn real_disk_formats() {
    let disk = std::env::var_os("BERTH_FORMATS_DISK")
        .map(PathBuf::from)
        .unwrap_or_default();
    assert!(
        disk.is_file(),
        "{:?} is not a disk image: set BERTH_FORMATS_DISK to a built disk.raw",
        disk.display()
    );
    assert!(
        have("qemu-img"),
        "qemu-img is needed (apt-get install qemu-utils)"
    );
    let size = fs::metadata(&disk).unwrap().len();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let abs = fs::canonicalize(&disk).unwrap();
    std::os::unix::fs::symlink(&abs, out.join("disk.raw")).unwrap();
    let written = write_all(&ctx(out, &abs, size, false));
    println!("formats of {} ({} bytes):", disk.display(), size);
    for (f, (p, secs)) in &written {
        let m = fs::metadata(p).unwrap();
        use std::os::unix::fs::MetadataExt;
        println!(
            "  {:<22} {:>12} bytes ({:>7.1} MiB, {:>7.1} MiB allocated) {:>6.1}s",
            f.file_name(),
            m.len(),
            m.len() as f64 / MIB as f64,
            (m.blocks() * 512) as f64 / MIB as f64,
            secs
        );
    }
    let t = Instant::now();
    check_formats(out, "disk.raw", size);
    println!("  checks: {:.1}s", t.elapsed().as_secs_f64());
    // Reproducible on the real disk too (the two writers of our own that do most work).
    let again = out.join("again");
    fs::create_dir(&again).unwrap();
    for f in [Format::Vmdk, Format::RawZst] {
        formats::write(f, &ctx(&again, &abs, size, false), None).unwrap();
        assert_eq!(
            sha256(&out.join(f.file_name())),
            sha256(&again.join(f.file_name())),
            "{f}"
        );
    }
}
