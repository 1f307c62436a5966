//! Boot health beyond boot counting, in real QEMU + OVMF + systemd-boot: a new slot that hangs
//! before ready is rebooted by the watchdog and rolled back; a blessed slot that keeps failing
//! after ready is not booted forever.

use std::fs;
use std::time::Duration;

use berth::run::qemu::{Boot, VmConfig};
use berth_vm_tests::{
    build_profile_delta, free_port, ssh, ssh_key, ssh_with_input, test_image, Guest, READY_DIRECT,
    READY_UEFI, SHUTDOWN,
};

fn config_with_key(dir: &std::path::Path, public: &str) -> std::path::PathBuf {
    let config = dir.join("config.json");
    fs::write(
        &config,
        format!(r#"{{"version": 1, "ssh-authorized-keys": ["{public}"]}}"#),
    )
    .unwrap();
    config
}

/// 0.4.0 waits an hour for a service that never gets ready: past its ready-deadline (60 s) the
/// watchdog (softdog, 30 s) reboots it; with its one try used up, systemd-boot boots slot A,
/// which says why.
#[test]
fn a_new_slot_that_hangs_is_rebooted_by_the_watchdog_and_rolled_back() {
    let v1 = test_image();
    let hang =
        build_profile_delta("vm-test-hang.toml", Some(vec![]), Some(v1.dir.clone())).unwrap();
    let work = tempfile::tempdir().unwrap();
    let key = ssh_key(work.path()).unwrap();
    let port = free_port().unwrap();
    let config = config_with_key(work.path(), &key.public);
    let disk = v1.disk_copy(work.path()).unwrap();
    let boot = |name: &str| {
        let mut cfg = VmConfig::new(&disk).unwrap();
        cfg.boot = Boot::Uefi;
        cfg.persist = true;
        cfg.forwards = vec![(port, 22)];
        cfg.machine_config = Some(config.clone());
        Guest::start(name, cfg).unwrap()
    };
    let mut g = boot("hang-v1");
    g.wait_for("berth: ready slot=a version=0.1.0", READY_UEFI)
        .unwrap();
    let armed = g
        .wait_for("berth: initrd: watchdog armed", Duration::from_secs(1))
        .unwrap();
    assert!(armed.contains("timeout=60s ready-deadline=300s"), "{armed}");
    let (code, out) = ssh_with_input(
        port,
        "admin",
        &key,
        "berthctl update apply - --reboot",
        &hang.dir.join("update-delta.bundle"),
        Duration::from_secs(900),
    )
    .unwrap();
    assert_eq!(code, 0, "{out}");
    g.wait_exit(SHUTDOWN).unwrap();
    drop(g);

    // The trial boot: hung in the services, never ready; the watchdog ends it.
    let mut g = boot("hang-v4");
    let armed = g
        .wait_for("berth: initrd: watchdog armed", READY_UEFI)
        .unwrap();
    assert!(armed.contains("timeout=30s ready-deadline=60s"), "{armed}");
    g.wait_for(
        "(ready-deadline); the watchdog reboots",
        Duration::from_secs(120),
    )
    .unwrap();
    let fired = g
        .wait_for("softdog: Initiating system reboot", Duration::from_secs(60))
        .unwrap();
    assert!(!fired.is_empty());
    g.wait_exit(Duration::from_secs(30)).unwrap();
    let c = g.console();
    assert!(
        c.contains("berth: initrd: verity root=") && !c.contains("berth: ready"),
        "{c}"
    );
    drop(g);

    let mut g = boot("hang-back");
    g.wait_for("berth: ready slot=a version=0.1.0", READY_UEFI)
        .unwrap();
    let line = g
        .wait_for("berth: rollback from 0.4.0:", Duration::from_secs(30))
        .unwrap();
    assert!(
        line.contains("did not reach ready within 60 s; the watchdog rebooted it"),
        "{line}"
    );
    let (code, status) = ssh(
        port,
        "admin",
        &key,
        "berthctl status",
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(code, 0, "{status}");
    assert!(
        status.contains("slot a: version 0.1.0, berth-a.conf (blessed), boots next, booted")
            && status.contains("slot b: version 0.4.0, berth-b+0-1.conf (bad"),
        "{status}"
    );
    let _ = ssh(
        port,
        "admin",
        &key,
        "berthctl poweroff",
        Duration::from_secs(60),
    );
    g.wait_exit(SHUTDOWN).unwrap();
}

/// A fresh disk (slot A only) whose root has a corrupted block that only a read after ready
/// touches: dm-verity restarts the machine each time. After three such boots the initrd stops
/// the machine with a message instead of booting it again; the next power-on gets one more try.
#[test]
fn a_blessed_slot_that_keeps_failing_stops_instead_of_looping() {
    let img = test_image();
    let work = tempfile::tempdir().unwrap();
    let key = ssh_key(work.path()).unwrap();
    let port = free_port().unwrap();
    let config = config_with_key(work.path(), &key.public);
    let disk = img.disk_copy(work.path()).unwrap();
    // A file no boot reads (vm-test.toml's): only the read below touches its block.
    let unread = "/usr/share/berth-test/unread";
    let bmap = std::process::Command::new("debugfs")
        .args(["-R", &format!("bmap {unread} 0")])
        .arg(img.dir.join("root.ext4"))
        .output()
        .unwrap();
    let block: u64 = String::from_utf8_lossy(&bmap.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("debugfs bmap {unread}: {bmap:?}"));
    let part = img.manifest.partition("root-a").unwrap();
    {
        use std::io::{Read, Seek, SeekFrom, Write};
        let off = part.offset + block * 4096 + 7;
        let mut f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&disk)
            .unwrap();
        let mut b = [0u8; 1];
        f.seek(SeekFrom::Start(off)).unwrap();
        f.read_exact(&mut b).unwrap();
        b[0] ^= 0x10;
        f.seek(SeekFrom::Start(off)).unwrap();
        f.write_all(&b).unwrap();
    }
    let boot = |name: &str| {
        let mut cfg = VmConfig::new(&disk).unwrap();
        cfg.boot = img.direct("").unwrap();
        cfg.persist = true;
        cfg.forwards = vec![(port, 22)];
        cfg.machine_config = Some(config.clone());
        Guest::start(name, cfg).unwrap()
    };
    for n in 1..=3 {
        let mut g = boot(&format!("keeps-failing-{n}"));
        g.wait_for("berth: ready slot=a", READY_DIRECT).unwrap();
        // The read crashes the machine (restart_on_corruption); ssh sees the connection drop.
        let _ = ssh(
            port,
            "admin",
            &key,
            &format!("cat /proc/1/root{unread} > /dev/null"),
            Duration::from_secs(60),
        );
        let restart = g
            .wait_for("Restarting system", Duration::from_secs(60))
            .unwrap();
        assert!(restart.contains("dm-verity"), "{restart}");
        g.wait_exit(Duration::from_secs(30)).unwrap();
        assert!(
            !g.console().contains("boot counted good"),
            "boot {n} was counted good before it failed"
        );
    }
    let mut g = boot("keeps-failing-stop");
    let stop = g
        .wait_for("berth: FATAL: slot a version 0.1.0: 3 boots in a row did not come up and stay up, and slot b holds no good version", READY_DIRECT)
        .unwrap();
    assert!(stop.contains("one more try"), "{stop}");
    let st = g.wait_exit(SHUTDOWN).unwrap();
    assert!(st.success(), "the stop powers off: {st}");
    assert!(!g.console().contains("berth: ready"));
    drop(g);
    // Powered on again: one more try, which comes up (nothing reads the block this time).
    let mut g = boot("keeps-failing-retry");
    g.wait_for("berth: ready slot=a", READY_DIRECT).unwrap();
    let _ = ssh(
        port,
        "admin",
        &key,
        "berthctl poweroff",
        Duration::from_secs(60),
    );
    g.wait_exit(SHUTDOWN).unwrap();
}

/// The state partition damaged (its ext4 superblock zeroed), missing (its GPT entry deleted)
/// or full: every boot still reaches ready. The first two come up degraded (/var on a tmpfs,
/// not blessed, `berthctl status` says so); a full /var releases berth's reserve for its own
/// records and boots normally.
#[test]
fn a_broken_missing_or_full_state_partition_still_boots() {
    let img = test_image();
    let work = tempfile::tempdir().unwrap();
    let key = ssh_key(work.path()).unwrap();
    let port = free_port().unwrap();
    let config = config_with_key(work.path(), &key.public);
    let state = img.manifest.partition("state").unwrap();
    let t = Duration::from_secs(120);
    let boot = |name: &str, disk: &std::path::Path| {
        let mut cfg = VmConfig::new(disk).unwrap();
        cfg.boot = img.direct("").unwrap();
        cfg.persist = true;
        cfg.forwards = vec![(port, 22)];
        cfg.machine_config = Some(config.clone());
        Guest::start(name, cfg).unwrap()
    };
    let degraded_boot = |name: &str, disk: &std::path::Path, want: &str| {
        let mut g = boot(name, disk);
        let line = g
            .wait_for("berth: DEGRADED: state partition unusable:", READY_DIRECT)
            .unwrap();
        assert!(
            line.contains(want) && line.contains("/var is a tmpfs"),
            "{line}"
        );
        g.wait_for("berth: ready slot=a", READY_DIRECT).unwrap();
        let (code, status) = ssh(port, "admin", &key, "berthctl status", t).unwrap();
        assert_eq!(code, 0, "{status}");
        assert!(
            status.contains("DEGRADED: state partition unusable"),
            "{status}"
        );
        let (_, js) = ssh(port, "admin", &key, "berthctl status --json", t).unwrap();
        assert!(
            js.contains("\"degraded\": \"") && js.contains("\"blessed\": false"),
            "{js}"
        );
        assert!(!g.console().contains("berth: blessed"));
        let _ = ssh(port, "admin", &key, "berthctl poweroff", t);
        g.wait_exit(SHUTDOWN).unwrap();
    };

    // Damaged: the primary superblock zeroed.
    let disk = img.disk_copy(work.path()).unwrap();
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::OpenOptions::new().write(true).open(&disk).unwrap();
        f.seek(SeekFrom::Start(state.offset)).unwrap();
        f.write_all(&[0u8; 8192]).unwrap();
    }
    degraded_boot("state-damaged", &disk, "mount -t ext4");
    fs::remove_file(&disk).unwrap();

    // Missing: its partition entry deleted.
    let disk = img.disk_copy(work.path()).unwrap();
    let out = std::process::Command::new("sgdisk")
        .args(["-d", "6"])
        .arg(&disk)
        .output()
        .expect("sgdisk (Debian gdisk)");
    assert!(out.status.success(), "{out:?}");
    degraded_boot("state-missing", &disk, "not found");
    fs::remove_file(&disk).unwrap();

    // Full: a container-side writer fills /var; the next boot still comes up, not degraded.
    let disk = img.disk_copy(work.path()).unwrap();
    let mut g = boot("state-fill", &disk);
    g.wait_for("berth: ready slot=a", READY_DIRECT).unwrap();
    let (_, out) = ssh(
        port,
        "admin",
        &key,
        "dd if=/dev/zero of=/proc/1/root/var/fill bs=1048576 2>&1; df /proc/1/root/var",
        Duration::from_secs(300),
    )
    .unwrap();
    assert!(out.contains("No space left"), "{out}");
    let _ = ssh(port, "admin", &key, "berthctl poweroff", t);
    g.wait_exit(SHUTDOWN).unwrap();
    drop(g);
    let mut g = boot("state-full", &disk);
    g.wait_for(
        "the state partition is full: released berth's 8 MiB reserve",
        READY_DIRECT,
    )
    .unwrap();
    g.wait_for("berth: ready slot=a", READY_DIRECT).unwrap();
    assert!(!g.console().contains("DEGRADED"), "{}", g.console());
    let _ = ssh(port, "admin", &key, "berthctl poweroff", t);
    g.wait_exit(SHUTDOWN).unwrap();
}
