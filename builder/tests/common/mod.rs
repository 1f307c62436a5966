//! Shared by the integration tests: what a test does when a tool or fixture it needs is
//! missing. On a developer's machine it skips with a message; under CI (`CI` set, as CI
//! systems do) or with `BERTH_REQUIRE_TOOLS=1` (which `ci/test` sets) it fails, naming the
//! tool and the package to install, so a test can never pass without having checked anything.

#![allow(dead_code)]

use std::path::PathBuf;

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
