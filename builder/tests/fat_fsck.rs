//! Oracle test: the FAT32 volumes `berth::fsimage::fat::write` produces, judged by `fsck.fat`
//! (dosfstools) and read back by mtools and by `berth::fsimage::fat::read_dir_tree`.
//!
//! A realistic ESP tree (systemd-boot, loader.conf, a boot-counting entry, an 8 MiB kernel and
//! a 20 MiB initrd, a directory of 300 files that spans several clusters, an empty file) at
//! 64 MiB and 256 MiB: `fsck.fat -n -v` exits 0 and prints only its usual report; `minfo` sees
//! FAT32; `mdir`/`mtype`/`mcopy` return every name (case kept) and every byte; writing twice
//! gives the same bytes. Then a boot-counting `rename` (also one that must grow the directory)
//! keeps the volume clean. Skipped, with a message, when a tool is missing.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use berth::fsimage::fat::{self, FatFile, FatOptions};
use berth::units::MIB;
use sha2::{Digest, Sha256};

fn have(tool: &str, package: &str) -> bool {
    common::require_tool(tool, package)
}

/// Runs a tool; returns (success, stdout, stderr).
fn run(tool: &str, args: &[&str]) -> (bool, Vec<u8>, String) {
    let out = Command::new(tool)
        .args(args)
        .env("LC_ALL", "C.UTF-8")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {tool}: {e}"));
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run_ok(tool: &str, args: &[&str]) -> Vec<u8> {
    let (ok, stdout, stderr) = run(tool, args);
    assert!(
        ok,
        "{tool} {args:?} failed:\n{}\n{stderr}",
        String::from_utf8_lossy(&stdout)
    );
    stdout
}

/// Deterministic pseudo-random bytes (xorshift64*).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn esp_tree() -> Vec<FatFile> {
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("/EFI/BOOT/BOOTX64.EFI".into(), noise(1, 100 * 1024 + 17)),
        (
            "/loader/loader.conf".into(),
            b"timeout 3\ndefault berth-*\nconsole-mode keep\n".to_vec(),
        ),
        (
            "/loader/entries/berth-a+3.conf".into(),
            b"title berth (a)\nlinux /berth/a/vmlinuz\ninitrd /berth/a/initrd\noptions berth.slot=a console=ttyS0\n".to_vec(),
        ),
        ("/berth/a/vmlinuz".into(), noise(2, 8 * MIB as usize)),
        ("/berth/a/initrd".into(), noise(3, 20 * MIB as usize)),
        ("/loader/random-seed".into(), Vec::new()),
        ("/berth/b/README.TXT".into(), b"slot b is empty\n".to_vec()),
    ];
    // 300 entries of mixed kinds: exact 8.3 names, lower-case 8.3 names, long names that
    // share a basis name (numeric tails up to ~300). Well over one 512-byte cluster.
    for i in 0..300 {
        let name = match i % 3 {
            0 => format!("/many/F{i:04}.DAT"),
            1 => format!("/many/f{i:04}.dat"),
            _ => format!("/many/Some Long Name, number {i}.data"),
        };
        files.push((name, noise(100 + i, (i as usize * 37) % 3000)));
    }
    files
        .into_iter()
        .map(|(path, data)| FatFile {
            path,
            data: Arc::new(data),
        })
        .collect()
}

fn opts(size: u64) -> FatOptions {
    FatOptions {
        size,
        label: "BERTH-ESP".into(),
        volume_id: 0x5EED_CAFE,
        mtime: 1_717_171_717,
    }
}

fn write_image(files: &[FatFile], size: u64, path: &Path) {
    let mut f = File::create(path).unwrap();
    fat::write(files, &opts(size), &mut f).unwrap();
    assert_eq!(f.metadata().unwrap().len(), size);
}

fn sha(path: &Path) -> String {
    hex::encode(Sha256::digest(fs::read(path).unwrap()))
}

/// `fsck.fat -n -v`: exit 0 and nothing but the report lines a clean volume gets.
fn fsck_clean(img: &Path) -> String {
    let (ok, stdout, stderr) = run("fsck.fat", &["-n", "-v", img.to_str().unwrap()]);
    let out = format!("{}{stderr}", String::from_utf8_lossy(&stdout));
    assert!(ok, "fsck.fat failed:\n{out}");
    let expected = [
        "fsck.fat ",
        "Checking we can access the last sector of the filesystem",
        "Boot sector contents:",
        "System ID ",
        "Media byte 0xf8 (hard disk)",
        "Volume ID is ",
        "Volume label is ",
        "Checking for unused clusters.",
        "Checking free cluster summary.",
        "Checking for bad clusters.",
        "Root directory start at cluster 2 (arbitrary size)",
        "First FAT starts at byte ",
        "Data area starts at byte ",
        "Starting check/repair pass.",
        "Starting verification pass.",
    ];
    let report_tail = [
        " bytes per logical sector",
        " bytes per cluster",
        " reserved sectors",
        " FATs, 32 bit entries",
        " sectors)",
        " data clusters (",
        " sectors/track, ",
        " hidden sectors",
        " sectors total",
    ];
    for line in out.lines() {
        let l = line.trim();
        let known = l.is_empty()
            || expected.iter().any(|p| l.starts_with(p.trim()))
            || report_tail.iter().any(|t| l.contains(t.trim()))
            || (l.starts_with(img.to_str().unwrap()) && l.contains(" files, "));
        assert!(known, "unexpected fsck.fat line {l:?} in:\n{out}");
    }
    out
}

/// All files of the image, via `mcopy -s` into a directory: path -> bytes.
fn mtools_tree(img: &Path, into: &Path) -> BTreeMap<String, Vec<u8>> {
    run_ok(
        "mcopy",
        &[
            "-s",
            "-n",
            "-i",
            img.to_str().unwrap(),
            "::/",
            into.to_str().unwrap(),
        ],
    );
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_str().unwrap();
                out.insert(format!("/{rel}"), fs::read(&p).unwrap());
            }
        }
    }
    walk(into, into, &mut out);
    out
}

fn expected(files: &[FatFile]) -> BTreeMap<String, Vec<u8>> {
    files
        .iter()
        .map(|f| (f.path.clone(), f.data.to_vec()))
        .collect()
}

#[test]
fn esp_images_pass_fsck_and_read_back() {
    if !have("fsck.fat", "dosfstools") || !have("mcopy", "mtools") {
        return;
    }
    let files = esp_tree();
    let want = expected(&files);
    let tmp = tempfile::tempdir().unwrap();
    for size in [64 * MIB, 256 * MIB] {
        let img = tmp.path().join(format!("esp-{}.img", size / MIB));
        let img_s = img.to_str().unwrap();
        write_image(&files, size, &img);

        let report = fsck_clean(&img);
        eprintln!("{report}");

        let info = String::from_utf8(run_ok("minfo", &["-i", img_s, "::"])).unwrap();
        assert!(info.contains("FAT32"), "minfo:\n{info}");

        // Top-level listing, names with their case.
        let dir = String::from_utf8(run_ok("mdir", &["-i", img_s, "::/"])).unwrap();
        for name in ["EFI", "loader", "berth", "many"] {
            assert!(
                dir.lines().any(|l| l.split_whitespace().any(|w| w == name)),
                "{name} missing from mdir:\n{dir}"
            );
        }
        assert!(dir.contains("BERTH-ESP"), "label missing from mdir:\n{dir}");
        let entries =
            String::from_utf8(run_ok("mdir", &["-b", "-i", img_s, "::/loader/entries"])).unwrap();
        assert!(entries.contains("berth-a+3.conf"), "{entries}");

        let conf = run_ok("mtype", &["-i", img_s, "::/loader/loader.conf"]);
        assert_eq!(conf, *want["/loader/loader.conf"]);
        let initrd = tmp.path().join("initrd");
        run_ok(
            "mcopy",
            &[
                "-n",
                "-i",
                img_s,
                "::/berth/a/initrd",
                initrd.to_str().unwrap(),
            ],
        );
        assert!(fs::read(&initrd).unwrap() == want["/berth/a/initrd"]);

        let out = tmp.path().join(format!("mcopy-{}", size / MIB));
        fs::create_dir(&out).unwrap();
        let got = mtools_tree(&img, &out);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "names as mtools sees them"
        );
        assert!(got == want, "contents as mtools sees them");

        let mut f = File::open(&img).unwrap();
        let ours: BTreeMap<String, Vec<u8>> =
            fat::read_dir_tree(&mut f).unwrap().into_iter().collect();
        assert!(ours == want, "contents as read_dir_tree sees them");

        // Reproducible: the same input gives the same bytes.
        let again = tmp.path().join("again.img");
        write_image(&files, size, &again);
        assert_eq!(sha(&img), sha(&again));
        fs::remove_file(&again).unwrap();
    }
}

#[test]
fn volume_at_partition_offset() {
    if !have("fsck.fat", "dosfstools") {
        return;
    }
    let files = esp_tree();
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk.img");
    let mut f = File::create(&disk).unwrap();
    f.seek(SeekFrom::Start(MIB)).unwrap();
    fat::write(&files, &opts(40 * MIB), &mut f).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 41 * MIB);
    // fsck.fat has no offset option: read the partition through our reader, and check the
    // carved-out volume.
    let mut r = File::open(&disk).unwrap();
    r.seek(SeekFrom::Start(MIB)).unwrap();
    assert_eq!(fat::read_dir_tree(&mut r).unwrap().len(), files.len());
    let part = tmp.path().join("part.img");
    fs::write(&part, &fs::read(&disk).unwrap()[MIB as usize..]).unwrap();
    fsck_clean(&part);
}

#[test]
fn too_small_volume_says_how_big() {
    let mut files = esp_tree();
    files.push(FatFile {
        path: "/berth/b/initrd".into(),
        data: Arc::new(vec![0; 20 * MIB as usize]),
    });
    let mut out = std::io::Cursor::new(Vec::new());
    let err = fat::write(&files, &opts(33 * MIB), &mut out).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("make it at least"), "{msg}");
    match err.downcast_ref::<fat::FatError>() {
        Some(fat::FatError::TooSmall { min, .. }) => {
            let mut out = std::io::Cursor::new(Vec::new());
            fat::write(&files, &opts(*min), &mut out).unwrap();
            let mut out = std::io::Cursor::new(Vec::new());
            assert!(fat::write(&files, &opts(*min - MIB), &mut out).is_err());
        }
        other => panic!("expected TooSmall, got {other:?}"),
    }
}

#[test]
fn bless_rename_keeps_volume_clean() {
    if !have("fsck.fat", "dosfstools") || !have("mcopy", "mtools") {
        return;
    }
    let files = esp_tree();
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("esp.img");
    let img_s = img.to_str().unwrap();
    write_image(&files, 64 * MIB, &img);

    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    fat::rename(&mut f, "/loader/entries/berth-a+3.conf", "berth-a+2-1.conf").unwrap();
    fsck_clean(&img);
    let listing =
        String::from_utf8(run_ok("mdir", &["-b", "-i", img_s, "::/loader/entries"])).unwrap();
    assert!(listing.contains("berth-a+2-1.conf"), "{listing}");
    assert!(!listing.contains("berth-a+3.conf"), "{listing}");

    // A 200-character name needs 17 slots; a 512-byte directory cluster has 16, so the
    // directory grows by a cluster (FAT, FSInfo free count and all).
    let long = format!("berth-a-{}.conf", "x".repeat(187));
    f.seek(SeekFrom::Start(0)).unwrap();
    fat::rename(&mut f, "/loader/entries/berth-a+2-1.conf", &long).unwrap();
    let report = fsck_clean(&img);
    eprintln!("{report}");
    let content = run_ok(
        "mtype",
        &["-i", img_s, &format!("::/loader/entries/{long}")],
    );
    assert_eq!(content, *files[2].data);

    f.seek(SeekFrom::Start(0)).unwrap();
    let names: Vec<String> = fat::read_dir_tree(&mut f)
        .unwrap()
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p.starts_with("/loader/entries/"))
        .collect();
    assert_eq!(names, [format!("/loader/entries/{long}")]);
}
