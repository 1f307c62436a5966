//! Boot health beyond boot counting, in real QEMU + OVMF + systemd-boot: a new slot that hangs
//! before ready is rebooted by the watchdog and rolled back; a blessed slot that keeps failing
//! after ready is not booted forever.

use std::fs;
use std::time::Duration;

use berth::run::qemu::{Boot, VmConfig};
use berth_vm_tests::{
    build_profile, free_port, ssh, ssh_key, ssh_with_input, test_image, Guest, READY_DIRECT,
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

/// 0.4.0 waits an hour for a service that never gets ready: past its ready-deadline (50 s) the
/// watchdog (softdog, 10 s) reboots it; with its one try used up, systemd-boot boots slot A,
/// which says why.
#[test]
fn a_new_slot_that_hangs_is_rebooted_by_the_watchdog_and_rolled_back() {
    let v1 = test_image();
    let hang = build_profile("vm-test-hang.toml", Some(vec![])).unwrap();
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
        &hang.dir.join("update.bundle"),
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
    assert!(armed.contains("timeout=10s ready-deadline=50s"), "{armed}");
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
        line.contains("did not reach ready within 50 s; the watchdog rebooted it"),
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
    // A module no boot loads: only the read below touches its blocks.
    let module = format!(
        "/usr/lib/modules/{}/kernel/fs/btrfs/btrfs.ko",
        img.manifest.kernel.version
    );
    let bmap = std::process::Command::new("debugfs")
        .args(["-R", &format!("bmap {module} 0")])
        .arg(img.dir.join("root.ext4"))
        .output()
        .unwrap();
    let block: u64 = String::from_utf8_lossy(&bmap.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("debugfs bmap {module}: {bmap:?}"));
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
            &format!("cat /proc/1/root{module} > /dev/null"),
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
