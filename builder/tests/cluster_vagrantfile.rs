//! `berth cluster vagrantfile`: the Vagrantfile it writes passes `vagrant validate` with
//! vagrant-libvirt (every key a real setting), each node config is a valid machine config
//! with the node's address and the whole peer list, and bad input is refused.

use std::fs;
use std::process::Command;

mod common;

#[test]
fn the_cluster_vagrantfile_passes_vagrant_validate() {
    if !common::have("vagrant") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let files = berth::cluster::vagrantfile("lab", 3, "berth/berth-cluster-vagrant", 768).unwrap();
    assert_eq!(files.len(), 4);
    for (name, text) in &files {
        fs::write(d.path().join(name), text).unwrap();
    }
    for i in 1..=3 {
        let text = fs::read_to_string(d.path().join(format!("lab-{i}.json"))).unwrap();
        let c = berth_contract::config::MachineConfig::parse(&text).unwrap();
        assert_eq!(c.hostname.as_deref(), Some(format!("lab-{i}").as_str()));
        assert!(text.contains(&format!("10.77.0.{}/24", 10 + i)), "{text}");
        assert!(c.files[0].content.contains("lab-1=http://10.77.0.11:2380,lab-2=http://10.77.0.12:2380,lab-3=http://10.77.0.13:2380"));
    }
    let home = d.path().join("vagrant-home");
    let out = Command::new("vagrant")
        .arg("validate")
        .current_dir(d.path())
        .env("VAGRANT_HOME", &home)
        .env("VAGRANT_DEFAULT_PROVIDER", "libvirt")
        .env("VAGRANT_CHECKPOINT_DISABLE", "1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("validated successfully"),
        "{text}"
    );

    // validate is not a rubber stamp: a setting vagrant-libvirt does not have fails it.
    let vf = d.path().join("Vagrantfile");
    let bad = fs::read_to_string(&vf)
        .unwrap()
        .replace("lv.cpus = 1", "lv.cpus = 1\n        lv.cpu_count = 1");
    fs::write(&vf, bad).unwrap();
    let out = Command::new("vagrant")
        .arg("validate")
        .current_dir(d.path())
        .env("VAGRANT_HOME", &home)
        .env("VAGRANT_DEFAULT_PROVIDER", "libvirt")
        .env("VAGRANT_CHECKPOINT_DISABLE", "1")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "an unknown libvirt setting passed vagrant validate"
    );

    for (n, name, want) in [
        (0, "lab", "at least one"),
        (3, "Lab", "cluster name"),
        (1000, "lab", "at most 32"),
    ] {
        let e = berth::cluster::vagrantfile(name, n, "b", 768)
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{n} {name}: {e}");
    }
}
