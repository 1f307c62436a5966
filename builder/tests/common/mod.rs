//! Shared by the integration tests: what a test does when a tool or fixture it needs is
//! missing. On a developer's machine it skips with a message; under CI (`CI` set, as CI
//! systems do) or with `BERTH_REQUIRE_TOOLS=1` (which `ci/test` sets) it fails, naming the
//! tool and the package to install, so a test can never pass without having checked anything.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where [`debian_deb`] keeps the packages it fetched, across test runs.
const DEBS: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/debs");

/// Whether a missing tool or fixture fails the test instead of skipping it.
pub fn strict() -> bool {
    let on = |v: &str| std::env::var(v).is_ok_and(|s| !s.is_empty() && s != "0" && s != "false");
    on("CI") || on("BERTH_REQUIRE_TOOLS")
}

/// `tool`'s path, found on `PATH` the way a shell would.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    if tool.contains('/') {
        let p = PathBuf::from(tool);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// True when `tool` is on `PATH`. When it is not: false (the caller returns, skipping) on a
/// developer's machine; a panic naming the tool and its Debian package under CI.
pub fn require_tool(tool: &str, package: &str) -> bool {
    require(
        find_tool(tool).is_some(),
        &format!("`{tool}` is not on PATH"),
        &format!("install the Debian package {package} (ci/install-deps does)"),
    )
}

/// [`require_tool`] with the Debian package that ships `tool`.
pub fn have(tool: &str) -> bool {
    let package = match tool {
        "sgdisk" => "gdisk",
        "sfdisk" => "fdisk",
        "qemu-img" => "qemu-utils",
        "e2fsck" | "debugfs" | "dumpe2fs" | "resize2fs" => "e2fsprogs",
        "fsck.fat" => "dosfstools",
        "mcopy" | "mdir" => "mtools",
        "veritysetup" => "cryptsetup-bin",
        "dpkg-deb" => "dpkg",
        "apt-get" => "apt",
        t => t,
    };
    require_tool(tool, package)
}

/// True when `present`. Otherwise false with a SKIP line, or (under CI) a panic saying what is
/// missing and how to get it.
pub fn require(present: bool, what: &str, hint: &str) -> bool {
    if present {
        return true;
    }
    if strict() {
        panic!("{what}: {hint}. Under CI a missing tool or fixture fails the test instead of skipping it");
    }
    eprintln!("SKIP: {what}: {hint}");
    false
}

/// A complete manifest.json for an image directory a test makes by hand (the publish tests,
/// which need only a disk and this), in the schema `berth::artifacts::BuildManifest` reads.
pub fn manifest_json(name: &str, version: &str, roothash: &str) -> String {
    serde_json::json!({
        "berth": "0.1.0",
        "image": {"name": name, "version": version, "source-date-epoch": 1, "hostname": name},
        "debian": {"suite": "bookworm", "architecture": "amd64"},
        "kernel": {"package": "linux", "version": "6.1", "vmlinuz": "/usr/lib/modules/6.1/vmlinuz",
                   "cmdline": "console=ttyS0", "modules": 0},
        "packages": [],
        "verity": {"roothash": roothash, "salt": "", "uuid": "00000000-0000-4000-8000-000000000000",
                   "hash-algorithm": "sha256", "data-block-size": 4096, "hash-block-size": 4096,
                   "data-blocks": 0},
        "sizes": {"root-slot": 0, "root-filesystem": 0, "root-verity": 0, "content": 0, "esp": 0, "state": 0},
        "boot": {"cmdline": "", "entry": "berth-a+3.conf", "loader": "systemd-boot-efi", "initrd-modules": 0},
        "disk": {"size": 0, "guid": "", "partitions": []},
        "formats": [],
        "artifacts": {},
        "rootfs": {"entries": 0, "files": []}
    })
    .to_string()
}

/// A real Debian package for the oracle tests, fetched once with the host's `apt-get download`
/// into the test's target directory (no root, no change to the host's apt state). `package`
/// may be a metapackage: its first `linux-image-*`-style dependency is taken when
/// `follow_depends` names the prefix. `None` (a skip; a failure under CI) when apt cannot get it.
pub fn debian_deb(package: &str, follow_depends: Option<&str>) -> Option<PathBuf> {
    let dir = Path::new(DEBS);
    fs::create_dir_all(dir).unwrap();
    let mut name = package.to_string();
    if let Some(prefix) = follow_depends {
        let out = Command::new("apt-cache")
            .args(["depends", "--important", package])
            .stdin(Stdio::null())
            .output();
        let text = out
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let dep = text.lines().find_map(|l| {
            l.trim()
                .strip_prefix("Depends: ")
                .filter(|d| d.starts_with(prefix))
                .map(str::to_string)
        });
        if !require(
            dep.is_some(),
            &format!("apt-cache depends {package} names no {prefix}* package"),
            "run `apt-get update` (ci/install-deps does)",
        ) {
            return None;
        }
        name = dep.unwrap();
    }
    let find = || -> Option<PathBuf> {
        let mut found: Vec<PathBuf> = fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n.starts_with(&format!("{name}_")) && n.ends_with(".deb")
            })
            .collect();
        found.sort();
        found.pop()
    };
    if let Some(p) = find() {
        return Some(p);
    }
    let out = Command::new("apt-get")
        .args(["download", &name])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output();
    let why = match &out {
        Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
        Err(e) => e.to_string(),
    };
    let got = find();
    require(
        got.is_some(),
        &format!("`apt-get download {name}` gave no package ({})", why.trim()),
        "the host's apt needs its package lists (`apt-get update`; ci/install-deps does)",
    )
    .then_some(got)
    .flatten()
}
