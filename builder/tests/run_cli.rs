//! `berth run`: bad input gets a clear error (exit code 1, nothing started); stopping it stops the guest.

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
    use berth::disk::gpt::{self, DiskSpec, Guid, Slot};
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

/// Stopping `berth run` stops its guest: SIGTERM to berth reaches QEMU as SIGTERM (QEMU's clean
/// shutdown), and berth exits 128 + 15 once QEMU is gone. A stand-in QEMU records what it got.
#[test]
fn sigterm_to_berth_run_stops_qemu() {
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, Instant};

    let d = tempfile::tempdir().unwrap();
    let disk = fake_berth_disk(d.path());
    let ovmf = d.path().join("ovmf");
    std::fs::create_dir(&ovmf).unwrap();
    std::fs::write(ovmf.join("OVMF_CODE.fd"), b"code").unwrap();
    std::fs::write(ovmf.join("OVMF_VARS.fd"), b"vars").unwrap();
    let started = d.path().join("started");
    let got = d.path().join("got");
    let qemu = d.path().join("fake-qemu");
    std::fs::write(
        &qemu,
        format!(
            "#!/bin/sh\ntrap 'echo TERM > {got}; exit 0' TERM\necho $$ > {started}\n\
             i=0; while [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\necho timeout > {got}\n",
            got = got.display(),
            started = started.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&qemu, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["run", disk.to_str().unwrap()])
        .env("BERTH_QEMU", &qemu)
        .env("BERTH_OVMF_DIR", &ovmf)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !started.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "fake QEMU never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143), "berth run status {status}");
    assert_eq!(std::fs::read_to_string(&got).unwrap().trim(), "TERM");
    let qpid = std::fs::read_to_string(&started).unwrap();
    assert!(
        !Path::new(&format!("/proc/{}", qpid.trim())).exists(),
        "the fake QEMU (pid {}) is still running",
        qpid.trim()
    );
}

/// `berth config check`: a good config is ok (exit 0), a bad one names FILE:LINE:COL and the
/// key (exit 1); `berth run --config` checks the config before anything starts.
#[test]
fn config_check_and_run_refuse_a_bad_machine_config() {
    let d = tempfile::tempdir().unwrap();
    let good = d.path().join("good.json");
    std::fs::write(
        &good,
        r#"{"version": 1, "hostname": "n1", "files": [{"path": "/etc/motd", "content": "hi"}]}"#,
    )
    .unwrap();
    let o = berth(&["config", "check", good.to_str().unwrap()], &[], d.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("good.json: ok"));
    assert!(String::from_utf8_lossy(&o.stderr).contains("file /etc/motd (0644 0:0, 2 bytes)"));

    let bad = d.path().join("bad.json");
    std::fs::write(
        &bad,
        "{\"version\": 1,\n  \"files\": [{\"path\": \"/usr/x\"}]}",
    )
    .unwrap();
    let want = format!("{}:2:22: key `files[0].path`", bad.display());
    fails_with(
        &berth(&["config", "check", bad.to_str().unwrap()], &[], d.path()),
        &[&want, "under /etc/ or /var/"],
    );
    let disk = fake_berth_disk(d.path());
    fails_with(
        &berth(
            &[
                "run",
                disk.to_str().unwrap(),
                "--config",
                bad.to_str().unwrap(),
            ],
            &[],
            d.path(),
        ),
        &[&want],
    );
}

/// Regression (BAD-9): with --json, a failure is a JSON document on stdout, and the exit code
/// stays non-zero.
#[test]
fn json_failures_are_a_document_on_stdout() {
    let d = tempfile::tempdir().unwrap();
    let o = berth(&["--json", "run", "nope/disk.raw"], &[], d.path());
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is JSON");
    assert_eq!(v["error"]["exit-code"], 1);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nope/disk.raw"),
        "{v}"
    );
    assert!(v["error"]["causes"].is_array());
}
