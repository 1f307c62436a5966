//! `berth cluster` in real QEMU: three nodes of profiles/cluster.toml on a vde_switch, etcd
//! formed from their machine configs; replication across nodes; a node killed and started
//! again catches up; `down` leaves no process, `destroy` no file.

use std::process::Command;
use std::time::Duration;

use berth::cluster::{self, Cluster, UpOptions};
use berth_vm_tests::{build_profile, run_bounded};

fn ssh(c: &Cluster, node: &str, cmd: &str) -> (i32, String) {
    let n = c.node(node).unwrap();
    let mut s = cluster::ssh_command(c, n);
    s.args(["-o", "BatchMode=yes"]).arg("--").arg(cmd);
    run_bounded(&mut s, Duration::from_secs(120)).unwrap()
}

fn etcdctl(c: &Cluster, node: &str, args: &str) -> String {
    let (code, out) = ssh(c, node, &format!("etcdctl {args}"));
    assert_eq!(code, 0, "etcdctl {args} on {node}: {out}");
    out
}

/// [`etcdctl`] for a write made while a member is down: the two left may be electing a leader
/// (and on a loaded host, emulated members miss heartbeats), and etcd answers "request timed
/// out" / "leader changed" then; a client retries, as etcd's own do. Five tries, each bounded.
fn etcdctl_retrying(c: &Cluster, node: &str, args: &str) -> String {
    let mut last = String::new();
    for attempt in 1..=5 {
        let (code, out) = ssh(c, node, &format!("etcdctl {args}"));
        if code == 0 {
            return out;
        }
        let transient = ["request timed out", "leader changed", "no leader"]
            .iter()
            .any(|m| out.contains(m));
        assert!(transient, "etcdctl {args} on {node}: {out}");
        eprintln!(
            "cluster: etcdctl {args}: try {attempt} failed ({})",
            out.lines().last().unwrap_or_default()
        );
        last = out;
        std::thread::sleep(Duration::from_secs(5));
    }
    panic!("etcdctl {args} on {node} failed 5 times: {last}");
}

#[test]
fn three_nodes_form_an_etcd_cluster_that_survives_a_killed_node() {
    let img = build_profile("cluster.toml", Some(vec![])).unwrap();
    let root = tempfile::tempdir().unwrap();
    let say = |m: &str| eprintln!("cluster: {m}");
    let mut c = cluster::create(
        root.path(),
        &UpOptions {
            name: "t".into(),
            nodes: 3,
            image_dir: img.dir.clone(),
            memory_mib: cluster::DEFAULT_MEMORY_MIB,
            cpus: 1,
            ssh_user: "admin".into(),
        },
    )
    .unwrap();
    struct Down<'a>(&'a std::path::Path);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            if let Ok(mut c) = Cluster::load(self.0) {
                let _ = cluster::down(&mut c, Duration::from_secs(5), &|_| {});
            }
        }
    }
    let _down = Down(&c.dir.clone());
    let started = std::time::Instant::now();
    cluster::wait_ready(&c, &[0, 1, 2], Duration::from_secs(1200), &say).unwrap();
    eprintln!(
        "cluster: 3 nodes ready, etcd healthy, after {:.0} s",
        started.elapsed().as_secs_f64()
    );
    // A second cluster of the same name is refused; so is a node that does not exist.
    let e = cluster::create(
        root.path(),
        &UpOptions {
            name: "t".into(),
            nodes: 1,
            image_dir: img.dir.clone(),
            memory_mib: 256,
            cpus: 1,
            ssh_user: "admin".into(),
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("cluster t exists"), "{e:#}");
    assert!(c.node("t-9").unwrap_err().to_string().contains("no node"));

    let health = etcdctl(&c, "t-1", "endpoint health --cluster");
    assert_eq!(health.matches("is healthy").count(), 3, "{health}");
    etcdctl(&c, "t-1", "put k1 written-on-node-1");
    assert_eq!(
        etcdctl(&c, "t-3", "get k1 --print-value-only").trim(),
        "written-on-node-1"
    );

    // Node 2's power is cut: writes through node 1 still succeed (two of three).
    let pid = c.nodes[1].pid.unwrap();
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cluster::alive(Some(pid), &c.dir) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = cluster::status(&c);
    assert_eq!(st[1].state, "dead", "{st:?}");
    // A leader lost with node 2 is re-elected within etcd's election timeout (5 s here);
    // etcdctl's default 5 s per command could end before that.
    etcdctl_retrying(
        &c,
        "t-1",
        "--command-timeout=60s put k2 written-while-node-2-was-down",
    );
    // Started again, it catches up.
    c.nodes[1].pid = Some(cluster::start_node(&c, &c.nodes[1]).unwrap());
    c.save().unwrap();
    cluster::wait_ready(&c, &[1], Duration::from_secs(900), &say).unwrap();
    assert_eq!(
        etcdctl(&c, "t-2", "get k2 --print-value-only").trim(),
        "written-while-node-2-was-down"
    );
    let st = cluster::status(&c);
    assert!(
        st.iter()
            .all(|n| n.state == "running" && n.slot.as_deref() == Some("a")),
        "{st:?}"
    );

    // down: no QEMU and no switch left; destroy: no files.
    let pids: Vec<u32> = c
        .nodes
        .iter()
        .filter_map(|n| n.pid)
        .chain(c.switch_pid)
        .collect();
    cluster::down(&mut c, Duration::from_secs(180), &say).unwrap();
    for p in pids {
        assert!(
            !cluster::alive(Some(p), &c.dir),
            "process {p} still runs after down"
        );
    }
    assert!(cluster::status(&c).iter().all(|n| n.state == "stopped"));
    std::fs::remove_dir_all(&c.dir).unwrap();
    let e = Cluster::load(&c.dir).unwrap_err();
    assert!(e.to_string().contains("no cluster at"), "{e:#}");
}
