//! Mutation fuzzing of the host-side parsers that read what a user or a mirror controls: ELF
//! files (the shared-library closure), kernel modules' .modinfo, .deb packages (ar, control
//! and data tarballs), Debian control stanzas and versions, OCI/docker-save archives, and
//! profiles (TOML). Seeds are real files: host executables, a .deb made by dpkg-deb, a
//! docker-save archive made here. The harness is contract/tests/harness (time per target:
//! `BERTH_FUZZ_SECONDS`, default 1; benches/fuzz.sh runs longer).

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;

mod common;
#[path = "../../contract/tests/harness/mod.rs"]
mod harness;

use harness::fuzz;

fn host_elves() -> Vec<Vec<u8>> {
    ["/bin/true", "/usr/bin/env", "/bin/busybox"]
        .iter()
        .filter_map(|p| fs::read(p).ok())
        .collect()
}

#[test]
fn elf_files_and_module_info() {
    let seeds = host_elves();
    assert!(!seeds.is_empty(), "no host ELF executables to seed with");
    fuzz("elf-deps", seeds.clone(), |b| {
        let _ = berth::root::elf::is_elf(b);
        let _ = berth::root::elf::deps(b);
    });
    fuzz("kmod-modinfo", seeds, |b| {
        let _ = berth::root::kmod::find_section(b, ".modinfo");
        let _ = berth::root::kmod::modinfo(b);
    });
}

#[test]
fn control_stanzas_and_versions() {
    let stanza = b"Package: containerd\nVersion: 1.6.20~ds1-1+b1\nArchitecture: amd64\nDepends: libc6 (>= 2.34), runc (>= 1.0.0~rc2~)\nDescription: daemon\n multi-line\n .\n more\n\nPackage: runc\nVersion: 1:1.1.5+ds1-1\n".to_vec();
    fuzz("deb-control", vec![stanza], |b| {
        let _ = berth::fetch::deb::parse_stanzas(&String::from_utf8_lossy(b));
    });
    let pairs = b"1.6.20~ds1-1+b1\n1:1.1.5+ds1-1\n2.36-9+deb12u4\n0~rc1\n".to_vec();
    fuzz("deb-version", vec![pairs], |b| {
        let t = String::from_utf8_lossy(b);
        let v: Vec<&str> = t.lines().collect();
        for w in v.windows(2) {
            let (a, b) = (w[0], w[1]);
            let ab = berth::fetch::debversion::compare(a, b);
            assert_eq!(
                ab.reverse(),
                berth::fetch::debversion::compare(b, a),
                "{a:?} vs {b:?}"
            );
            assert!(berth::fetch::debversion::compare(a, a).is_eq(), "{a:?}");
        }
    });
}

/// Writes each input to a file and hands the path to `f` (the readers take paths).
fn via_file(dir: &Path, name: &str, b: &[u8], f: impl Fn(&Path)) {
    let p = dir.join(name);
    fs::File::create(&p)
        .and_then(|mut w| w.write_all(b))
        .unwrap();
    f(&p);
}

#[test]
fn deb_packages() {
    if !common::have("dpkg-deb") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let pkg = d.path().join("pkg");
    fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
    fs::create_dir_all(pkg.join("usr/bin")).unwrap();
    fs::write(
        pkg.join("DEBIAN/control"),
        "Package: fuzz\nVersion: 1.0\nArchitecture: amd64\nMaintainer: t <t@t>\nDescription: t\n",
    )
    .unwrap();
    fs::write(pkg.join("usr/bin/hello"), "#!/bin/sh\necho hi\n").unwrap();
    let deb = d.path().join("fuzz.deb");
    let st = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "--build"])
        .arg(&pkg)
        .arg(&deb)
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    let seed = fs::read(&deb).unwrap();
    berth::fetch::deb::Deb::read(&deb).expect("the seed .deb reads");
    let work = d.path().to_path_buf();
    fuzz("deb-file", vec![seed], move |b| {
        via_file(&work, "in.deb", b, |p| {
            let _ = berth::fetch::deb::Deb::read(p);
        })
    });
}

fn tar_with(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut t = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, name, &data[..]).unwrap();
    }
    t.into_inner().unwrap()
}

fn sha(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

#[test]
fn oci_archives() {
    let layer = tar_with(&[("www/index.html", b"hello\n".to_vec())]);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["/bin/sh"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{}"]}}}}"#,
        sha(&layer)
    );
    let cfg_name = format!("{}.json", sha(config.as_bytes()));
    let manifest = format!(
        r#"[{{"Config":"{cfg_name}","RepoTags":["fuzz:1"],"Layers":["layer/layer.tar"]}}]"#
    );
    let archive = tar_with(&[
        ("manifest.json", manifest.into_bytes()),
        (&cfg_name, config.into_bytes()),
        ("layer/layer.tar", layer),
    ]);
    let d = tempfile::tempdir().unwrap();
    let seed_path = d.path().join("seed.tar");
    fs::write(&seed_path, &archive).unwrap();
    berth::root::oci_import::import(&seed_path, "fuzz:1").expect("the seed archive imports");
    let work = d.path().to_path_buf();
    fuzz("oci-archive", vec![archive], move |b| {
        via_file(&work, "in.tar", b, |p| {
            let _ = berth::root::oci_import::import(p, "fuzz:1");
        })
    });
}

#[test]
fn profiles() {
    let seed = br#"schema = 1
[image]
name = "t"
version = "1.0"
source-date-epoch = 1700000000

[boot]
tries = 3
watchdog = 30

[update]
channel = "http://10.0.2.100:8080/"
reboot = "02:00-04:00"

[[files]]
path = "/etc/motd"
content = "hi"
mode = "0644"

[[containers]]
name = "web"
packages = ["busybox-static"]
command = ["/bin/busybox", "httpd", "-f"]
ready = { tcp = 80 }
"#
    .to_vec();
    let d = tempfile::tempdir().unwrap();
    let work = d.path().to_path_buf();
    fuzz("profile", vec![seed], move |b| {
        via_file(&work, "p.toml", b, |p| {
            let _ = berth::profile::load(p);
        })
    });
}
