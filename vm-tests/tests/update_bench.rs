//! The update benchmark (run by `benches/update.sh`; ignored in the test suite): bundle bytes,
//! full against delta, for a one-package change; `berthctl update apply` of the full bundle
//! against `dd` writing the same root and verity bytes to the same partitions through the same
//! SSH pipe, in one run; the apply of the delta bundle to the same slot; and seconds from the
//! start of an apply to `berth: ready slot=b` and to the new entry being blessed.

use std::fs;
use std::time::{Duration, Instant};

use berth::run::qemu::{Boot, VmConfig};
use berth_vm_tests::{
    build_profile_delta, free_port, ssh, ssh_key, ssh_with_input, test_image, Guest, READY_UEFI,
    SHUTDOWN,
};

fn size(p: &std::path::Path) -> u64 {
    fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

#[test]
#[ignore = "a benchmark: benches/update.sh runs it"]
fn update_benchmark() {
    let v1 = test_image();
    let pkg = build_profile_delta("vm-test-pkg.toml", Some(vec![]), Some(v1.dir.clone())).unwrap();
    let (full, delta) = (
        size(&pkg.dir.join("update.bundle")),
        size(&pkg.dir.join("update-delta.bundle")),
    );
    println!(
        "bundle bytes for a one-package change (the hello package added to a container image): full {full}, delta {delta} (delta/full {:.3})",
        delta as f64 / full as f64
    );

    let work = tempfile::tempdir().unwrap();
    let key = ssh_key(work.path()).unwrap();
    let port = free_port().unwrap();
    let config = work.path().join("config.json");
    fs::write(
        &config,
        format!(
            r#"{{"version": 1, "ssh-authorized-keys": ["{}"]}}"#,
            key.public
        ),
    )
    .unwrap();
    let disk = v1.disk_copy(work.path()).unwrap();
    let boot = |name: &str| {
        let mut cfg = VmConfig::new(&disk).unwrap();
        cfg.boot = Boot::Uefi;
        cfg.persist = true;
        cfg.forwards = vec![(port, 22)];
        cfg.machine_config = Some(config.clone());
        Guest::start(name, cfg).unwrap()
    };
    let t = Duration::from_secs(1800);
    let mut g = boot("bench-v1");
    g.wait_for("berth: ready slot=a version=0.1.0", READY_UEFI)
        .unwrap();

    // Pipes a file from the host into a command on the guest; the seconds it took.
    let pipe = |cmd: &str, file: &std::path::Path| {
        let s = Instant::now();
        let (code, out) = ssh_with_input(port, "admin", &key, cmd, file, t).unwrap();
        assert_eq!(code, 0, "{cmd}: {out}");
        s.elapsed()
    };

    // dd: the new root and verity images, raw, into slot B's partitions (vda4, vda5).
    let mut dd = Duration::ZERO;
    let mut raw = 0;
    for (file, part) in [("root.ext4", "/dev/vda4"), ("root.verity", "/dev/vda5")] {
        let f = pkg.dir.join(file);
        raw += size(&f);
        dd += pipe(&format!("dd of={part} bs=1048576 conv=fsync 2>&1"), &f);
    }
    // The delta bundle, without a reboot: unchanged blocks come from the running slot A.
    let apply_delta = pipe(
        "berthctl update apply -",
        &pkg.dir.join("update-delta.bundle"),
    );
    // The full bundle over it: the same bytes plus kernel and initrd, each chunk checked
    // before it is written, then read back and checked again.
    let s = Instant::now();
    let apply = pipe(
        "berthctl update apply - --reboot",
        &pkg.dir.join("update.bundle"),
    );
    g.wait_exit(SHUTDOWN).unwrap();
    drop(g);
    let mut g = boot("bench-v2");
    // berth-init blesses the entry, then prints the ready line: wait for them in that order,
    // so each time is when its line appeared.
    g.wait_for("berth: blessed", READY_UEFI).unwrap();
    let blessed = s.elapsed();
    g.wait_for("berth: ready slot=b version=0.1.1", READY_UEFI)
        .unwrap();
    let ready = s.elapsed();
    println!(
        "apply of the full bundle ({full} bytes): {:.1} s; dd of the same root+verity ({raw} bytes) over the same pipe: {:.1} s (apply/dd {:.2})",
        apply.as_secs_f64(),
        dd.as_secs_f64(),
        apply.as_secs_f64() / dd.as_secs_f64()
    );
    println!(
        "apply of the delta bundle ({delta} bytes) to the same slot: {:.1} s (delta/full {:.2})",
        apply_delta.as_secs_f64(),
        apply_delta.as_secs_f64() / apply.as_secs_f64()
    );
    println!(
        "from the start of the apply: blessed after {:.1} s, ready slot=b after {:.1} s",
        blessed.as_secs_f64(),
        ready.as_secs_f64()
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
