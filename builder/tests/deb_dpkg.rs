//! Oracle tests for `berth::fetch::deb`, judged by dpkg itself: the host's dpkg status file parses as
//! deb822, and packages built with `dpkg-deb --build` in every compression dpkg offers read
//! back as `dpkg-deb -c` lists them.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use berth::fetch::deb::{self, Deb};
use berth::fsimage::manifest::{ImagePath, Kind};

fn ip(s: &str) -> ImagePath {
    ImagePath::new(s).unwrap()
}

/// The host's dpkg status file is a large real deb822 file: every stanza must parse and have a
/// Package field.
#[test]
fn host_dpkg_status_parses() {
    let path = Path::new("/var/lib/dpkg/status");
    if !common::require(
        path.is_file(),
        "/var/lib/dpkg/status is missing",
        "run on Debian or Ubuntu",
    ) {
        return;
    }
    let text = fs::read_to_string(path).unwrap();
    let stanzas = deb::parse_stanzas(&text);
    let packages = text.lines().filter(|l| l.starts_with("Package:")).count();
    assert!(packages > 50, "{packages} packages");
    assert_eq!(stanzas.len(), packages);
    assert!(stanzas
        .iter()
        .all(|s| s.get("package").is_some() && s.get("Status").is_some()));
}

/// A package tree with what a real one holds: nested directories, files of several sizes and
/// modes, a relative and an absolute symlink, and a hard link.
fn package_tree(root: &Path) {
    fs::create_dir_all(root.join("DEBIAN")).unwrap();
    fs::write(
        root.join("DEBIAN/control"),
        "Package: berth-test\nVersion: 1.2-3\nArchitecture: amd64\nMaintainer: berth <berth@localhost>\nDescription: test package\n",
    )
    .unwrap();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("usr/share/doc/berth-test")).unwrap();
    fs::write(root.join("usr/bin/tool"), vec![0x7f; 70_000]).unwrap();
    fs::set_permissions(root.join("usr/bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("usr/share/doc/berth-test/README"), "hello\n").unwrap();
    fs::write(root.join("usr/share/doc/berth-test/empty"), "").unwrap();
    symlink("tool", root.join("usr/bin/tool-alias")).unwrap();
    symlink("/usr/bin/tool", root.join("usr/bin/tool-abs")).unwrap();
    fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool-hard")).unwrap();
}

#[test]
fn debs_built_by_dpkg_deb_read_as_dpkg_deb_lists_them() {
    if !common::require_tool("dpkg-deb", "dpkg") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    package_tree(&tree);
    for z in ["xz", "zstd", "gzip", "none"] {
        let path = tmp.path().join(format!("berth-test-{z}.deb"));
        let o = Command::new("dpkg-deb")
            .args(["--root-owner-group", "--build", &format!("-Z{z}")])
            .arg(&tree)
            .arg(&path)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "dpkg-deb -Z{z}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        compare_with_dpkg_deb(&path);
    }
}

/// A real package of the image's runtime, fetched with the host's `apt-get download`.
#[test]
fn the_runc_package_reads_as_dpkg_deb_lists_it() {
    if !common::require_tool("dpkg-deb", "dpkg") || !common::require_tool("apt-get", "apt") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new("apt-get")
        .args(["download", "runc"])
        .current_dir(tmp.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let deb = fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"));
    if !common::require(
        deb.is_some(),
        &format!(
            "`apt-get download runc` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        "the host's apt needs its package lists (ci/install-deps runs apt-get update)",
    ) {
        return;
    }
    compare_with_dpkg_deb(&deb.unwrap());
}

fn compare_with_dpkg_deb(path: &Path) {
    let deb = Deb::read(path).unwrap();
    assert!(deb.control.get("Package").is_some_and(|p| !p.is_empty()));
    assert!(deb.control.get("Version").is_some());
    let out = Command::new("dpkg-deb")
        .arg("-c")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let listing = String::from_utf8_lossy(&out.stdout);

    let mut theirs = Vec::new();
    for line in listing.lines() {
        // drwxr-xr-x root/root         0 2022-12-26 15:30 ./usr/
        let mut rest = line;
        let mut fields = Vec::new();
        for _ in 0..5 {
            let t = rest.trim_start();
            let end = t.find(' ').unwrap();
            fields.push(&t[..end]);
            rest = &t[end..];
        }
        let name = rest.trim_start();
        let (name, target) = if let Some((n, t)) = name.split_once(" -> ") {
            (n, Some(t))
        } else if let Some((n, t)) = name.split_once(" link to ") {
            (n, Some(t))
        } else {
            (name, None)
        };
        theirs.push((
            fields[0].to_string(),
            fields[2].to_string(),
            ip(name),
            target.map(str::to_string),
        ));
    }
    assert_eq!(theirs.len(), deb.data.len(), "entry count vs dpkg-deb -c");
    for ((p, e), (mode, size, name, target)) in deb.data.iter().zip(&theirs) {
        assert_eq!(p, name);
        let (ty, expected_size, expected_target) = match &e.kind {
            Kind::Dir => ('d', 0, None),
            Kind::File(d) => ('-', d.len(), None),
            Kind::Symlink(t) => ('l', 0, Some(t.clone())),
            Kind::Hardlink(t) => ('h', 0, Some(format!(".{t}"))),
            Kind::CharDev { .. } => ('c', 0, None),
            Kind::BlockDev { .. } => ('b', 0, None),
            Kind::Fifo => ('p', 0, None),
            Kind::Socket => ('s', 0, None),
        };
        assert!(mode.starts_with(ty), "{p}: {mode} vs {ty}");
        if ty != 'c' && ty != 'b' {
            assert_eq!(size.parse::<usize>().ok(), Some(expected_size), "{p}: size");
        }
        if ty == 'l' {
            assert_eq!(target, &expected_target, "{p}: target");
        }
        if ty == 'h' {
            assert_eq!(
                target.as_deref().map(ip),
                expected_target.map(|t| ip(&t)),
                "{p}"
            );
        }
    }
}
