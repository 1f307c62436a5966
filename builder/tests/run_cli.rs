//! `berth run` on bad input: each a clear error, exit code 1, nothing started.

use std::path::Path;
use std::process::{Command, Output};

fn berth(args: &[&str], envs: &[(&str, &str)], cwd: &Path) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
    c.args(args).current_dir(cwd);
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().expect("running berth")
}

fn fails_with(o: &Output, want: &[&str]) {
    assert_eq!(o.status.code(), Some(1), "status {}", o.status);
    let err = String::from_utf8_lossy(&o.stderr);
    for w in want {
        assert!(err.contains(w), "error should mention {w:?}:\n{err}");
    }
}

/// A file with berth's GPT layout is enough for `run` to get as far as QEMU and firmware.
fn fake_berth_disk(dir: &Path) -> std::path::PathBuf {
    use berth::gpt::{self, DiskSpec, Guid, Slot};
    use berth::units::Bytes;
    let g = |n: u8| Guid::from_bytes([n; 16]);
    let layout = gpt::plan(&DiskSpec {
        esp: Bytes::mib(64),
        root_slot: Bytes::mib(64),
        verity_slot: Bytes::mib(1),
        state: Bytes::mib(16),
        disk_guid: g(1),
        part_guids: [g(2), g(3), g(4), g(5), g(6), g(7)],
        active: Slot::A,
    })
    .unwrap();
    let p = dir.join("disk.raw");
    let mut f = std::fs::File::create(&p).unwrap();
    f.set_len(layout.disk_size().get()).unwrap();
    gpt::write(&layout, &mut f).unwrap();
    p
}

#[test]
fn a_file_that_is_not_a_berth_disk_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("random.img");
    std::fs::write(&p, vec![0x5au8; 1 << 20]).unwrap();
    fails_with(
        &berth(&["run", p.to_str().unwrap()], &[], d.path()),
        &["random.img", "is not a berth disk"],
    );
}

#[test]
fn a_missing_image_or_an_unbuilt_profile_says_what_to_do() {
    let d = tempfile::tempdir().unwrap();
    fails_with(
        &berth(&["run", "nope/disk.raw"], &[], d.path()),
        &["nope/disk.raw does not exist"],
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for sub in ["profiles", "overlays"] {
        let st = Command::new("cp")
            .arg("-r")
            .arg(repo.join(sub))
            .arg(d.path())
            .status()
            .unwrap();
        assert!(st.success());
    }
    fails_with(
        &berth(&["run", "profiles/qemu.toml"], &[], d.path()),
        &["has not been built yet", "berth build profiles/qemu.toml"],
    );
}

#[test]
fn missing_qemu_or_ovmf_names_the_debian_package() {
    let d = tempfile::tempdir().unwrap();
    let disk = fake_berth_disk(d.path());
    let disk = disk.to_str().unwrap();
    fails_with(
        &berth(
            &["run", disk],
            &[("BERTH_QEMU", "/nonexistent/qemu-system-x86_64")],
            d.path(),
        ),
        &[
            "qemu-system-x86_64 is not installed",
            "apt-get install qemu-system-x86",
        ],
    );
    fails_with(
        &berth(
            &["run", disk],
            &[("BERTH_OVMF_DIR", "/nonexistent")],
            d.path(),
        ),
        &["OVMF", "apt-get install ovmf"],
    );
}

#[test]
fn bad_forward_is_a_usage_error() {
    let d = tempfile::tempdir().unwrap();
    let o = berth(&["run", "x", "--forward", "80"], &[], d.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("HOST:GUEST"));
}
