//! Power cuts during `berthctl update apply`, in real QEMU + OVMF + systemd-boot: QEMU is
//! killed (SIGKILL: whatever the guest had not written to its disk is lost) at each named step
//! of an apply (by default one step on each side of the commit point; every step with
//! `BERTH_POWERCUT_STEPS=all`), and, with `BERTH_POWERCUT_RANDOM=N`, at N random moments spread
//! over the apply (a random fraction, up to 1.1, of how long the same bundle took to apply
//! uncut; the first apply of each bundle runs to its end to measure that). After every cut the
//! disk must boot a good slot: the old one, or (only once the entry was written, the commit
//! point) the new one; never neither. `benches/powercut.sh` runs the full set.

use std::fs;
use std::time::{Duration, Instant};

use berth::run::qemu::{Boot, VmConfig};
use berth_vm_tests::{
    build_profile_delta, free_port, ssh, ssh_key, ssh_spawn, test_image, Guest, READY_UEFI,
    SHUTDOWN,
};

/// The apply's named steps (`rootfs/init/src/update.rs`, `STEPS`), in order; a cut at any
/// before `after-entry` must leave the old slot booting.
const STEPS: [&str; 6] = [
    "start",
    "mid-payload",
    "after-verity",
    "after-kernel",
    "before-entry",
    "after-entry",
];

/// One cut of each kind: before the commit point (the old slot must boot) and after it (the
/// new one may). `BERTH_POWERCUT_STEPS=all` (benches/powercut.sh) cuts at all six.
const CI_STEPS: [&str; 2] = ["mid-payload", "after-entry"];

#[derive(Debug, Clone, Copy)]
enum Cut {
    Step(&'static str),
    /// At this many thousandths of the apply's measured duration (0..1100: some land just
    /// after its end, the moment an apply's last sync is done).
    Permille(u64),
}

/// xorshift64*: enough to spread cut times, seeded and printed so a run can be repeated.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// "berth: ready slot=a version=0.1.0" -> ("a", "0.1.0").
fn slot_version(line: &str) -> (String, String) {
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} in {line:?}"))
            .to_string()
    };
    (field("slot="), field("version="))
}

#[test]
fn a_power_cut_anywhere_in_an_apply_leaves_a_disk_that_boots_a_good_slot() {
    let v1 = test_image();
    // The same build of 0.2.0 the update test makes, with its delta from 0.1.0 (a third of the
    // bytes: each cut streams less).
    let v2 = build_profile_delta("vm-test-v2.toml", Some(vec![]), Some(v1.dir.clone())).unwrap();
    let random = env_u64("BERTH_POWERCUT_RANDOM", 0);
    let seed = env_u64(
        "BERTH_POWERCUT_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
            | 1,
    );
    let mut rng = Rng(seed);
    // CI cuts once on each side of the commit point; benches/powercut.sh cuts at every step.
    let steps: Vec<&'static str> = match std::env::var("BERTH_POWERCUT_STEPS").as_deref() {
        Ok("all") => STEPS.to_vec(),
        Ok(list) => list
            .split(',')
            .map(|w| {
                *STEPS.iter().find(|s| **s == w.trim()).unwrap_or_else(|| {
                    panic!("BERTH_POWERCUT_STEPS: {w:?} is not one of {STEPS:?} (or all)")
                })
            })
            .collect(),
        Err(_) => CI_STEPS.to_vec(),
    };
    let mut plan: Vec<Cut> = steps.iter().map(|s| Cut::Step(s)).collect();
    plan.extend((0..random).map(|_| Cut::Permille(rng.next() % 1100)));
    eprintln!("power cuts: {} planned (seed {seed}): {plan:?}", plan.len());

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
    let mut g = boot("powercut-0");
    let line = g.wait_for("berth: ready slot=", READY_UEFI).unwrap();
    let (mut slot, mut version) = slot_version(&line);
    let (mut good, mut to_new, mut during) = (0, 0, 0);
    // How long an uncut apply of each bundle took: [the delta to 0.2.0, the full 0.1.0].
    let mut took: [Option<Duration>; 2] = [None, None];
    for (i, cut) in plan.iter().enumerate() {
        // Cut only a boot that counts as good, so the cuts do not add up to failed boots.
        g.wait_for("berth: boot counted good", Duration::from_secs(180))
            .unwrap();
        let (kind, bundle, flags, new_version) = if version == "0.1.0" {
            (0, v2.dir.join("update-delta.bundle"), "", "0.2.0")
        } else {
            (
                1,
                v1.dir.join("update.bundle"),
                " --allow-downgrade",
                "0.1.0",
            )
        };
        let pause = match cut {
            Cut::Step(s) => format!("BERTH_UPDATE_PAUSE_AT={s} "),
            Cut::Permille(_) => String::new(),
        };
        let out = work.path().join(format!("apply-{i}.out"));
        let mut child = ssh_spawn(
            port,
            "admin",
            &key,
            &format!("{pause}berthctl update apply -{flags}"),
            &bundle,
            &out,
        )
        .unwrap();
        let started = Instant::now();
        match cut {
            Cut::Step(s) => loop {
                let text = fs::read_to_string(&out).unwrap_or_default();
                if text.contains(&format!("paused at {s}")) {
                    break;
                }
                if let Some(st) = child.try_wait().unwrap() {
                    panic!("cut {i}: the apply ended ({st}) before step {s}: {text}");
                }
                assert!(
                    started.elapsed() < Duration::from_secs(1200),
                    "cut {i}: no step {s} within 20 minutes: {text}"
                );
                std::thread::sleep(Duration::from_millis(100));
            },
            Cut::Permille(p) => {
                // Unmeasured: this apply runs to its end and measures the bundle.
                let at = took[kind].map(|d| d * *p as u32 / 1000);
                loop {
                    if child.try_wait().unwrap().is_some() {
                        if at.is_none_or(|at| started.elapsed() < at) {
                            took[kind] = Some(started.elapsed());
                        }
                        break;
                    }
                    if at.is_some_and(|at| started.elapsed() >= at) {
                        break;
                    }
                    assert!(
                        started.elapsed() < Duration::from_secs(1200),
                        "cut {i}: the apply did not end within 20 minutes"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        let cut_at = started.elapsed();
        let ended = child.try_wait().unwrap().is_some();
        g.power_cut().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let applied = fs::read_to_string(&out).unwrap_or_default();
        drop(g);

        g = boot(&format!("powercut-{}", i + 1));
        let line = g
            .wait_for("berth: ready slot=", READY_UEFI)
            .unwrap_or_else(|e| panic!("cut {i} ({cut:?}) left a disk that does not boot: {e:#}\napply said: {applied}"));
        let (s, v) = slot_version(&line);
        let old = s == slot && v == version;
        let new = s != slot && v == new_version;
        let may_be_new = !matches!(cut, Cut::Step(st) if *st != "after-entry");
        assert!(
            old || (new && may_be_new),
            "cut {i} ({cut:?}) while slot {slot} ran {version}: booted slot {s} version {v}\napply said: {applied}"
        );
        good += 1;
        if new {
            to_new += 1;
            g.wait_for("berth: blessed", Duration::from_secs(1))
                .unwrap();
        }
        if !ended {
            during += 1;
        }
        eprintln!(
            "cut {i} ({cut:?}) {:.1} s into the apply of {} (uncut: {}){}: boots slot {s} version {v}",
            cut_at.as_secs_f64(),
            bundle.file_name().unwrap_or_default().to_string_lossy(),
            took[kind].map_or("not measured yet".into(), |d| format!("{:.1} s", d.as_secs_f64())),
            if ended { ", after it ended" } else { "" },
        );
        (slot, version) = (s, v);
    }
    eprintln!(
        "power cuts: {} cuts ({during} while the apply ran), {good} good boots ({to_new} into the new version)",
        plan.len()
    );
    assert_eq!(good, plan.len());
    let _ = ssh(
        port,
        "admin",
        &key,
        "berthctl poweroff",
        Duration::from_secs(60),
    );
    g.wait_exit(SHUTDOWN).unwrap();
}
