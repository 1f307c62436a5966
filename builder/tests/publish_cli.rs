//! `berth publish` end to end through the CLI: `publish aws` against moto's server on
//! 127.0.0.1 (EBS direct + EC2), `publish vagrant` read back by `vagrant box add`.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn berth(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
    c.args(args);
    for k in [
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_EC2",
        "AWS_ENDPOINT_URL_EBS",
    ] {
        c.env_remove(k);
    }
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().expect("running berth")
}

/// berth with test AWS credentials, stderr piped (for tests that signal it mid-run).
fn spawn_berth(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running berth")
}

struct Moto {
    child: Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// moto's server on a free loopback port (bounded wait until it answers).
fn moto() -> Moto {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 -m moto.server (pip install 'moto[server]')");
    let m = Moto {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    m
}

/// A small image directory: a 24 MiB disk.raw with some data and a manifest.json.
fn image_dir(dir: &Path) -> PathBuf {
    let img = dir.join("img");
    std::fs::create_dir_all(&img).unwrap();
    let mut disk = vec![0u8; 24 << 20];
    for (i, b) in disk
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| (i >> 19) % 3 == 0)
    {
        *b = (i.wrapping_mul(2654435761) >> 13) as u8;
    }
    std::fs::write(img.join("disk.raw"), &disk).unwrap();
    std::fs::write(
        img.join("manifest.json"),
        common::manifest_json("berth-cli-test", "1.2.3", "00"),
    )
    .unwrap();
    img
}

#[test]
fn publish_aws_registers_an_ami_and_the_second_run_sends_only_changes() {
    let m = moto();
    let tmp = tempfile::tempdir().unwrap();
    let img = image_dir(tmp.path());
    let env = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
    ];
    let args = [
        "publish",
        "aws",
        img.to_str().unwrap(),
        "--endpoint-url",
        &m.url,
        "--tag",
        "team=infra platform",
    ];
    let o = berth(&args, &env);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ami = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(ami.starts_with("ami-"), "stdout: {ami}");
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(img.join("aws-publish.json")).unwrap()).unwrap();
    let tags = rec["tags"].to_string();
    assert!(
        tags.contains("team") && tags.contains("infra platform") && tags.contains("berth:version"),
        "{tags}"
    );
    // A tag AWS would refuse is a usage error before anything is sent.
    let o = berth(
        &["publish", "aws", img.to_str().unwrap(), "--tag", "aws:x=y"],
        &env,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("reserved by AWS"));
    assert_eq!(rec["blocks_sent"], rec["blocks_nonzero"], "{rec}");
    assert!(rec["blocks_sent"].as_u64().unwrap() > 0);

    // Change one block; the next publish sends only it.
    let mut disk = std::fs::read(img.join("disk.raw")).unwrap();
    disk[5 << 20] ^= 0xff;
    std::fs::write(img.join("disk.raw"), disk).unwrap();
    let o = berth(
        &[
            "-q",
            "publish",
            "aws",
            img.to_str().unwrap(),
            "--endpoint-url",
            &m.url,
        ],
        &env,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(img.join("aws-publish.json")).unwrap()).unwrap();
    assert_eq!(rec["blocks_sent"], 1, "{rec}");
}

#[test]
fn publish_aws_without_credentials_or_disk_fails_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image_dir(tmp.path());
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let o = berth(
        &[
            "publish",
            "aws",
            img.to_str().unwrap(),
            "--endpoint-url",
            "http://127.0.0.1:9",
        ],
        &[
            ("HOME", home.to_str().unwrap()),
            ("AWS_ACCESS_KEY_ID", ""),
            ("AWS_SECRET_ACCESS_KEY", ""),
            ("AWS_REGION", "us-east-1"),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("AWS_ACCESS_KEY_ID"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::remove_file(img.join("disk.raw")).unwrap();
    let o = berth(
        &["publish", "aws", img.to_str().unwrap()],
        &[
            ("AWS_ACCESS_KEY_ID", "x"),
            ("AWS_SECRET_ACCESS_KEY", "y"),
            ("AWS_REGION", "us-east-1"),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("disk.raw"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn publish_vagrant_catalog_is_accepted_by_vagrant() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("img");
    std::fs::create_dir_all(&img).unwrap();
    std::fs::write(
        img.join("manifest.json"),
        common::manifest_json("berth-cli-test", "1.2.3", "00"),
    )
    .unwrap();
    // A minimal libvirt box (the formats tests cover real ones).
    let stage = tmp.path().join("stage");
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::write(
        stage.join("metadata.json"),
        r#"{"provider":"libvirt","format":"qcow2","virtual_size":1}"#,
    )
    .unwrap();
    std::fs::write(
        stage.join("Vagrantfile"),
        "Vagrant.configure(\"2\") do |c| end\n",
    )
    .unwrap();
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(stage.join("box.img"))
        .arg("1M")
        .status();
    if !st.is_ok_and(|s| s.success()) {
        std::fs::write(stage.join("box.img"), b"").unwrap();
    }
    let st = Command::new("tar")
        .args(["-czf"])
        .arg(img.join("berth-libvirt.box"))
        .args(["-C"])
        .arg(&stage)
        .args(["metadata.json", "Vagrantfile", "box.img"])
        .status()
        .unwrap();
    assert!(st.success());
    let catalog = tmp.path().join("catalog.json");
    let url = format!("file://{}", tmp.path().join("served").display());
    let o = berth(
        &[
            "publish",
            "vagrant",
            img.to_str().unwrap(),
            "--catalog",
            catalog.to_str().unwrap(),
            "--url-base",
            &url,
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cat: serde_json::Value = serde_json::from_slice(&std::fs::read(&catalog).unwrap()).unwrap();
    assert_eq!(cat["name"], "berth/berth-cli-test");
    assert_eq!(cat["versions"][0]["version"], "1.2.3");
    assert_eq!(cat["versions"][0]["providers"][0]["name"], "libvirt");
    // Serve it where the catalog says, and let Vagrant itself read the catalog.
    let served = tmp.path().join("served/1.2.3");
    std::fs::create_dir_all(&served).unwrap();
    std::fs::copy(
        img.join("berth-libvirt.box"),
        served.join("berth-libvirt.box"),
    )
    .unwrap();
    if !common::require_tool("vagrant", "vagrant") {
        return;
    }
    let vh = tmp.path().join("vagrant-home");
    let o = Command::new("vagrant")
        .args(["box", "add", "--provider", "libvirt"])
        .arg(&catalog)
        .env("VAGRANT_HOME", &vh)
        .env("VAGRANT_CHECKPOINT_DISABLE", "1")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "vagrant box add: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let o = Command::new("vagrant")
        .args(["box", "list"])
        .env("VAGRANT_HOME", &vh)
        .env("VAGRANT_CHECKPOINT_DISABLE", "1")
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&o.stdout);
    assert!(
        list.contains("berth/berth-cli-test") && list.contains("1.2.3"),
        "{list}"
    );
}

/// Ctrl-C during the upload: berth stops at the next block, deletes the snapshot it started,
/// says so, and exits 130; the publish record is not written.
#[test]
fn sigint_during_publish_aws_deletes_the_snapshot_and_exits_130() {
    use std::io::{BufRead, BufReader};
    let m = moto();
    let tmp = tempfile::tempdir().unwrap();
    let img = image_dir(tmp.path());
    // 128 MiB with data in every 512 KiB block: hundreds of uploads, one at a time.
    let disk: Vec<u8> = (0..128u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 | 1)
        .collect();
    std::fs::write(img.join("disk.raw"), disk).unwrap();
    let img_arg = img.to_str().unwrap();
    let mut child = spawn_berth(&[
        "-v",
        "publish",
        "aws",
        img_arg,
        "--endpoint-url",
        &m.url,
        "--parallel",
        "1",
    ]);
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = err.read_line(&mut line).unwrap();
        assert!(n > 0, "berth ended before uploading:\n{seen}");
        seen.push_str(&line);
        if line.contains("uploading") {
            break;
        }
    }
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(130),
        "status {status}; stderr:\n{seen}{rest}"
    );
    assert!(
        rest.contains("interrupted") && rest.contains("deleted snapshot snap-"),
        "stderr:\n{seen}{rest}"
    );
    assert!(!img.join("aws-publish.json").exists());
}

/// Regression (BAD-3): against an endpoint that accepts connections and never answers, the
/// publish says what it waits for, and SIGTERM stops it at once (it used to sit through 8 × 120 s
/// read timeouts, ignoring the signal) with exit 130 and nothing left in the account.
#[test]
fn sigterm_stops_a_publish_waiting_on_a_silent_endpoint() {
    use std::io::{BufRead, BufReader};
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming().flatten() {
            held.push(s);
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let img = image_dir(tmp.path());
    let img_arg = img.to_str().unwrap();
    let mut child = spawn_berth(&["publish", "aws", img_arg, "--endpoint-url", &url]);
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = String::new();
    let give_up = Instant::now() + Duration::from_secs(60);
    while !seen.contains("waiting for") {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(l) => seen.push_str(&(l + "\n")),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => panic!("berth ended before waiting:\n{seen}"),
        }
        if Instant::now() > give_up {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no 'waiting for' within 60 s:\n{seen}");
        }
    }
    assert!(seen.contains(&url.replace("http://", "")), "{seen}");
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    // Bounded: a publish that ignores the signal is killed and the test fails.
    let stop_by = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > stop_by {
            let _ = child.kill();
            let _ = child.wait();
            panic!("berth publish aws still ran 20 s after SIGTERM:\n{seen}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(2)) {
        seen.push_str(&(l + "\n"));
    }
    assert_eq!(status.code(), Some(130), "status {status}; stderr:\n{seen}");
    assert!(
        seen.contains("interrupted") && seen.contains("nothing had been created"),
        "stderr:\n{seen}"
    );
    assert!(!img.join("aws-publish.json").exists());
}
