//! `berth cluster`: N machines of one image on one private network, in QEMU (DESIGN.md,
//! "Clusters").
//!
//! A cluster is a directory (default `$XDG_STATE_HOME/berth/clusters/NAME`) holding
//! `cluster.json` (what `up` made), the SSH key the nodes trust, the switch's socket, and per
//! node a qcow2 overlay over the image's disk, its machine config, its console log, its QMP
//! socket and its UEFI variables. The verbs read that directory, so they work from any shell.
//!
//! The network: a `vde_switch` (Debian `vde2`) on a unix socket in the directory, one NIC per
//! node on it with a static address in 10.77.0.0/24; no host interface takes part. Each node
//! also has QEMU's user-mode NIC with `restrict=on`, for the SSH port forwarded to 127.0.0.1.
//! etcd (profiles/cluster.toml) gets its member name, peers and token from a file each node's
//! machine config writes on first boot.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use crate::run::qemu::{self, VmConfig};

pub mod serve;

/// The cluster network: node `i` (1-based) is 10.77.0.(10 + i).
pub const SUBNET: [u8; 3] = [10, 77, 0];
pub const MAX_NODES: u32 = 32;
/// Guest memory per node by default (MiB): etcd and containerd under TCG fit.
pub const DEFAULT_MEMORY_MIB: u32 = 768;
const STATE_FILE: &str = "cluster.json";
/// Each node's disk is the image's plus this much, for its state partition (a qcow2 overlay:
/// only what the node writes takes space).
const EXTRA_DISK: u64 = 2 << 30;
/// How long `up` waits for every node to reach ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(900);
/// etcd's config file on each node, written by its machine config (profiles/cluster.toml reads it).
pub const ETCD_CONFIG: &str = "/var/lib/etcd/etcd.conf.yml";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Node {
    pub name: String,
    pub index: u32,
    pub address: String,
    pub ssh_port: u16,
    /// The host port (on 127.0.0.1) forwarded to the node's etcd client port: a host-side
    /// client (`etcdctl --endpoints 127.0.0.1:PORT`, a test's writer) reaches each member
    /// without SSH. 0 for clusters made before it existed: no forward.
    #[serde(default)]
    pub etcd_port: u16,
    pub mac: String,
    pub disk: PathBuf,
    pub config: PathBuf,
    pub console: PathBuf,
    pub qmp: PathBuf,
    /// QEMU's PID while it runs.
    pub pid: Option<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    pub name: String,
    pub dir: PathBuf,
    /// The image directory the nodes were made from.
    pub image: PathBuf,
    pub base_disk: PathBuf,
    pub ssh_user: String,
    pub memory_mib: u32,
    pub cpus: u32,
    pub switch_pid: Option<u32>,
    /// `up --channel DIR`: the update channel directory served to every node (at
    /// [`serve::guest_url`]), whose nodes update themselves under the reboot lock.
    #[serde(default)]
    pub channel: Option<PathBuf>,
    /// The program (and its first arguments) QEMU runs, with the channel directory after
    /// them, for each node connection to the channel: `berth cluster serve-channel`.
    #[serde(default)]
    pub channel_server: Vec<String>,
    pub nodes: Vec<Node>,
}

/// Where clusters live: `$XDG_STATE_HOME/berth/clusters` (default ~/.local/state/…).
pub fn clusters_dir() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir)
        .join("berth/clusters")
}

/// A cluster name: like a host name label (it prefixes the nodes' host names).
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.ends_with('-');
    if !ok {
        bail!("cluster name {name:?}: use lower-case letters, digits and inner `-`, at most 40, starting with a letter");
    }
    Ok(())
}

/// The cluster `name`, or the only one there is (or `berth`) when `name` is `None`.
pub fn locate(root: &Path, name: Option<&str>) -> Result<PathBuf> {
    if let Some(n) = name {
        check_name(n)?;
        return Ok(root.join(n));
    }
    let mut found: Vec<String> = fs::read_dir(root)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().join(STATE_FILE).is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    match found.len() {
        1 => Ok(root.join(&found[0])),
        0 => Ok(root.join("berth")),
        _ => bail!(
            "there are {} clusters ({}): name one with --name",
            found.len(),
            found.join(", ")
        ),
    }
}

impl Cluster {
    pub fn load(dir: &Path) -> Result<Cluster> {
        let p = dir.join(STATE_FILE);
        let text = match fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "no cluster at {} (destroyed, or never made: `berth cluster up`)",
                dir.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
        };
        serde_json::from_str(&text).with_context(|| format!("reading {}", p.display()))
    }

    pub fn save(&self) -> Result<()> {
        let p = self.dir.join(STATE_FILE);
        let tmp = self.dir.join(format!(".{STATE_FILE}.tmp"));
        fs::write(&tmp, serde_json::to_string_pretty(self)? + "\n")
            .with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &p).with_context(|| format!("renaming to {}", p.display()))
    }

    pub fn node(&self, which: &str) -> Result<&Node> {
        self.nodes
            .iter()
            .find(|n| n.name == which || n.index.to_string() == which)
            .with_context(|| {
                format!(
                    "cluster {} has no node {which:?} (nodes: {})",
                    self.name,
                    self.nodes
                        .iter()
                        .map(|n| n.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }

    pub fn key(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }

    fn switch_sock(&self) -> PathBuf {
        self.dir.join("switch")
    }
}

/// Whether process `pid` runs and is the QEMU (or switch) we started (its command line
/// names our directory), not a later process that reused the PID.
pub fn alive(pid: Option<u32>, dir: &Path) -> bool {
    let Some(pid) = pid else { return false };
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            let c = String::from_utf8_lossy(&c);
            c.contains(&*dir.to_string_lossy())
        })
        .unwrap_or(false)
}

/// etcd's raft timing, five times its defaults (100 ms, 1 s): nodes are emulated (TCG) and
/// share two host cores, so a heartbeat can be late by hundreds of milliseconds, and with the
/// defaults the members kept electing leaders (seen: a write through a healthy member failing
/// with "context deadline exceeded" after another member was killed). etcd's tuning guide
/// asks for an election timeout of at least ten heartbeats.
const HEARTBEAT_MS: u32 = 500;
pub const ELECTION_MS: u32 = 5000;

/// The peers' etcd settings, as the file each node's config writes. Clients are served on
/// every address: loopback for the node's own etcdctl, the user NIC for the host's forwarded
/// port, the cluster NIC for the other nodes. (etcd takes its flags' defaults only without a
/// config file: in the file an unset `enable-grpc-gateway` is false, and the JSON API a
/// host-side client uses answers 404.)
pub fn etcd_config(cluster: &str, node: &Node, all: &[Node]) -> String {
    let peers: Vec<String> = all
        .iter()
        .map(|n| format!("{}=http://{}:2380", n.name, n.address))
        .collect();
    let a = &node.address;
    format!(
        "name: {name}\ndata-dir: /var/lib/etcd/data\ninitial-cluster: {peers}\ninitial-cluster-token: {cluster}\ninitial-cluster-state: new\nlisten-peer-urls: http://{a}:2380\ninitial-advertise-peer-urls: http://{a}:2380\nlisten-client-urls: http://0.0.0.0:2379\nadvertise-client-urls: http://{a}:2379\nheartbeat-interval: {HEARTBEAT_MS}\nelection-timeout: {ELECTION_MS}\nenable-grpc-gateway: true\n",
        name = node.name,
        peers = peers.join(",")
    )
}

/// How nodes of a cluster with a channel use it (`up --channel DIR --check-interval S`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelUse {
    /// Seconds between each node's checks.
    pub check_interval: u32,
}

/// A node's machine config: host name, the user NIC by DHCP and the cluster NIC static, the
/// cluster's SSH key, etcd's settings; with a channel, the update policy: check it, and
/// reboot only under the cluster's reboot lock.
pub fn node_config(
    cluster: &str,
    node: &Node,
    all: &[Node],
    ssh_public: Option<&str>,
    channel: Option<ChannelUse>,
) -> String {
    let q = berth_contract::json::quote;
    let update = channel.map_or(String::new(), |c| {
        format!(
            ", \"update\": {{\"channel\": {}, \"check-interval\": {}, \"reboot\": \"etcd-lock\"}}",
            q(&serve::guest_url()),
            c.check_interval
        )
    });
    format!(
        "{{\"version\": 1, \"hostname\": {}, \"network\": [{{\"interface\": \"eth0\", \"dhcp\": true}}, {{\"interface\": \"eth1\", \"address\": \"{}/24\"}}], \"ssh-authorized-keys\": [{}], \"files\": [{{\"path\": \"{ETCD_CONFIG}\", \"content\": {}}}]{update}}}\n",
        q(&node.name),
        node.address,
        ssh_public.map_or(String::new(), |k| q(k.trim())),
        q(&etcd_config(cluster, node, all))
    )
}

/// The nodes of cluster `name` as planned (names, addresses, MACs), before anything exists;
/// their files under `dir`.
pub fn plan(name: &str, n: u32, dir: &Path) -> Vec<Node> {
    (1..=n)
        .map(|i| {
            let node = format!("{name}-{i}");
            let ndir = dir.join(&node);
            Node {
                address: format!("{}.{}.{}.{}", SUBNET[0], SUBNET[1], SUBNET[2], 10 + i),
                ssh_port: 0,
                etcd_port: 0,
                mac: format!("52:54:00:be:{:02x}:{:02x}", (i >> 8) & 0xff, i & 0xff),
                disk: ndir.join("disk.qcow2"),
                config: ndir.join("config.json"),
                console: ndir.join("console.log"),
                qmp: ndir.join("qmp.sock"),
                pid: None,
                name: node,
                index: i,
            }
        })
        .collect()
}

/// `berth cluster vagrantfile`: a multi-machine Vagrantfile for the same cluster (libvirt,
/// a private network with the same static addresses, each node's machine config handed to
/// QEMU through fw_cfg) and the configs it names, as (file name, text).
pub fn vagrantfile(
    name: &str,
    n: u32,
    box_name: &str,
    memory_mib: u32,
) -> Result<Vec<(String, String)>> {
    check_name(name)?;
    check_size(n, memory_mib)?;
    let nodes = plan(name, n, Path::new(""));
    let mut files = Vec::new();
    for node in &nodes {
        let text = node_config(name, node, &nodes, None, None);
        berth_contract::config::MachineConfig::parse(&text)
            .map_err(|e| anyhow::anyhow!("the machine config made for {}: {e}", node.name))?;
        files.push((format!("{}.json", node.name), text));
    }
    let q = |s: &str| format!("{s:?}");
    let vf = format!(
        r#"# A {n}-node berth cluster, written by `berth cluster vagrantfile`. Each node gets its
# machine config ({name}-N.json beside this file) through QEMU fw_cfg; the cluster network is a
# libvirt network without DHCP or forwarding, addresses set by the machine configs.
#   vagrant up --provider libvirt
Vagrant.configure("2") do |config|
  config.vm.box = {box_q}
  (1..{n}).each do |i|
    config.vm.define "{name}-#{{i}}" do |node|
      node.vm.hostname = "{name}-#{{i}}"
      node.vm.network :private_network, ip: "{a}.{b}.{c}.#{{10 + i}}", auto_config: false,
        libvirt__network_name: {net_q}, libvirt__dhcp_enabled: false,
        libvirt__forward_mode: "none"
      node.vm.provider :libvirt do |lv|
        lv.memory = {memory_mib}
        lv.cpus = 1
        lv.qemuargs :value => "-fw_cfg"
        lv.qemuargs :value => "name={fw},file=#{{File.join(__dir__, "{name}-#{{i}}.json")}}"
      end
    end
  end
end
"#,
        box_q = q(box_name),
        net_q = q(&format!("berth-{name}")),
        a = SUBNET[0],
        b = SUBNET[1],
        c = SUBNET[2],
        fw = berth_contract::config::FW_CFG_NAME,
    );
    files.push(("Vagrantfile".into(), vf));
    Ok(files)
}

pub struct UpOptions {
    pub name: String,
    pub nodes: u32,
    pub image_dir: PathBuf,
    pub memory_mib: u32,
    pub cpus: u32,
    pub ssh_user: String,
    /// An update channel directory to serve to the nodes, and how they use it.
    pub channel: Option<ChannelOptions>,
}

pub struct ChannelOptions {
    pub dir: PathBuf,
    pub usage: ChannelUse,
    /// The server's program and first arguments (the directory follows): `[berth, "cluster",
    /// "serve-channel"]`, or another program calling [`serve::serve_connection`].
    pub server: Vec<String>,
}

/// MemAvailable from /proc/meminfo, in MiB.
fn available_mib() -> Option<u64> {
    let t = fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = t
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb / 1024)
}

/// Checks `-n` and the memory it needs before anything is made.
pub fn check_size(nodes: u32, memory_mib: u32) -> Result<()> {
    if nodes == 0 {
        bail!("-n 0: a cluster has at least one node");
    }
    let need = u64::from(nodes) * u64::from(memory_mib);
    if nodes > MAX_NODES {
        bail!(
            "-n {nodes}: at most {MAX_NODES} nodes (they would need {} MiB of memory, {memory_mib} MiB each)",
            need
        );
    }
    if let Some(avail) = available_mib() {
        if need > avail {
            bail!("-n {nodes} with --memory {memory_mib}: the nodes need {need} MiB, and this host has {avail} MiB available");
        }
    }
    Ok(())
}

fn tool(name: &str, package: &str) -> Result<PathBuf> {
    for dir in std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/bin".into(), "/usr/sbin".into()])
    {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("{name} is not installed (Debian package {package})")
}

/// Makes the cluster directory, the switch and the nodes, starts every node and returns the
/// cluster (the caller waits for ready).
pub fn create(root: &Path, o: &UpOptions) -> Result<Cluster> {
    check_name(&o.name)?;
    check_size(o.nodes, o.memory_mib)?;
    // Its error already says the directory is not a berth image.
    crate::artifacts::BuildManifest::read(&o.image_dir)?;
    let base = crate::run::resolve(&o.image_dir)?.disk;
    let vde = tool("vde_switch", "vde2")?;
    let qemu_img = tool("qemu-img", "qemu-utils")?;
    let keygen = tool("ssh-keygen", "openssh-client")?;
    let channel = match &o.channel {
        Some(ch) => {
            let u = ch.usage;
            if u.check_interval > berth_contract::channel::MAX_INTERVAL {
                bail!(
                    "--check-interval {}: at most {} s (a week)",
                    u.check_interval,
                    berth_contract::channel::MAX_INTERVAL
                );
            }
            let d = fs::canonicalize(&ch.dir)
                .ok()
                .filter(|d| d.is_dir())
                .ok_or_else(|| anyhow::anyhow!("--channel {}: not a directory (make it, then `berth publish channel` into it)", ch.dir.display()))?;
            // QEMU takes the guest forward's command as one option value, and GLib splits it
            // like a shell: keep to words that need no quoting.
            let plain =
                |w: &str| !w.is_empty() && !w.contains([' ', ',', '\'', '"', '\\', '\n', '\t']);
            let dtext = d.to_str().unwrap_or("");
            if !plain(dtext) || ch.server.is_empty() || !ch.server.iter().all(|w| plain(w)) {
                bail!("--channel {} (served by {:?}): the paths must not contain spaces, commas, quotes or backslashes", d.display(), ch.server.join(" "));
            }
            Some((d, u))
        }
        None => None,
    };
    let dir = root.join(&o.name);
    if dir.exists() {
        bail!(
            "cluster {} exists ({}): `berth cluster destroy --name {}` first, or pick another --name",
            o.name,
            dir.display(),
            o.name
        );
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let made = (|| -> Result<Cluster> {
        let mut c = Cluster {
            name: o.name.clone(),
            dir: dir.clone(),
            image: fs::canonicalize(&o.image_dir)?,
            base_disk: fs::canonicalize(&base)?,
            ssh_user: o.ssh_user.clone(),
            memory_mib: o.memory_mib,
            cpus: o.cpus,
            switch_pid: None,
            channel: channel.as_ref().map(|(d, _)| d.clone()),
            channel_server: o.channel.as_ref().map_or(Vec::new(), |c| c.server.clone()),
            nodes: Vec::new(),
        };
        let st = Command::new(&keygen)
            .args(["-q", "-t", "ed25519", "-N", "", "-C"])
            .arg(format!("berth-cluster-{}", o.name))
            .arg("-f")
            .arg(c.key())
            .stdin(Stdio::null())
            .status()
            .context("running ssh-keygen")?;
        if !st.success() {
            bail!("ssh-keygen failed ({st})");
        }
        let public = fs::read_to_string(c.key().with_extension("pub"))?;
        for mut n in plan(&o.name, o.nodes, &dir) {
            fs::create_dir_all(n.disk.parent().unwrap_or(&dir))?;
            n.ssh_port = free_port()?;
            n.etcd_port = free_port()?;
            c.nodes.push(n);
        }
        let all = c.nodes.clone();
        for n in &all {
            let fmt = if qemu::DiskFormat::detect(&c.base_disk)? == qemu::DiskFormat::Qcow2 {
                "qcow2"
            } else {
                "raw"
            };
            // Bigger than the image: the state partition grows into the rest on first boot
            // (containerd's images are unpacked there, etcd's data lives there).
            let size = virtual_size(&c.base_disk)? + EXTRA_DISK;
            let out = Command::new(&qemu_img)
                .args(["create", "-q", "-f", "qcow2", "-F", fmt, "-b"])
                .arg(&c.base_disk)
                .arg(&n.disk)
                .arg(size.to_string())
                .output()
                .context("running qemu-img create")?;
            if !out.status.success() {
                bail!(
                    "qemu-img create {}: {}",
                    n.disk.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            let text = node_config(
                &c.name,
                n,
                &all,
                Some(&public),
                channel.as_ref().map(|(_, u)| *u),
            );
            berth_contract::config::MachineConfig::parse(&text)
                .map_err(|e| anyhow::anyhow!("the machine config made for {}: {e}", n.name))?;
            fs::write(&n.config, text)?;
        }
        let st = Command::new(&vde)
            .arg("--sock")
            .arg(c.switch_sock())
            .arg("--daemon")
            .arg("--pidfile")
            .arg(dir.join("switch.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .context("starting vde_switch")?;
        if !st.success() {
            bail!("vde_switch --daemon failed ({st})");
        }
        // The daemon writes its pid file after the parent returned.
        let t = Instant::now();
        while c.switch_pid.is_none() && t.elapsed() < Duration::from_secs(5) {
            c.switch_pid = fs::read_to_string(dir.join("switch.pid"))
                .ok()
                .and_then(|s| s.trim().parse().ok());
            std::thread::sleep(Duration::from_millis(50));
        }
        if !alive(c.switch_pid, &dir) {
            bail!(
                "vde_switch did not start (no live pid in {})",
                dir.join("switch.pid").display()
            );
        }
        c.save()?;
        for i in 0..c.nodes.len() {
            let pid = start_node(&c, &c.nodes[i])?;
            c.nodes[i].pid = Some(pid);
            c.save()?;
        }
        Ok(c)
    })();
    match made {
        Ok(c) => Ok(c),
        Err(e) => {
            // Nothing half-made stays behind: stop what started, remove the directory.
            if let Ok(c) = Cluster::load(&dir) {
                let _ = kill_all(&c);
            }
            let _ = fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}

/// A port on 127.0.0.1 nothing listens on now (QEMU binds it when the node starts).
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A disk image's size as the guest sees it: a raw file's length, a qcow2's header field.
fn virtual_size(disk: &Path) -> Result<u64> {
    use std::io::Read;
    if qemu::DiskFormat::detect(disk)? == qemu::DiskFormat::Qcow2 {
        let mut h = [0u8; 32];
        fs::File::open(disk)?.read_exact(&mut h)?;
        return Ok(u64::from_be_bytes(h[24..32].try_into().unwrap_or_default()));
    }
    Ok(fs::metadata(disk)?.len())
}

/// Starts node `n`'s QEMU in its own process group (it outlives this berth); returns its PID.
pub fn start_node(c: &Cluster, n: &Node) -> Result<u32> {
    use std::os::unix::process::CommandExt;
    let mut cfg = VmConfig::new(&n.disk)?;
    cfg.persist = true;
    cfg.memory_mib = c.memory_mib;
    cfg.cpus = c.cpus;
    cfg.forwards = vec![(n.ssh_port, 22)];
    if n.etcd_port != 0 {
        cfg.forwards.push((n.etcd_port, 2379));
    }
    cfg.console_file = Some(n.console.clone());
    cfg.qmp = Some(n.qmp.clone());
    cfg.machine_config = Some(n.config.clone());
    cfg.vde = Some((c.switch_sock(), n.mac.clone()));
    if let Some(ch) = &c.channel {
        cfg.guest_forwards = vec![(
            serve::GUEST_ADDR.into(),
            serve::GUEST_PORT,
            format!("{} {}", c.channel_server.join(" "), ch.display()),
        )];
    }
    let ndir = n.disk.parent().unwrap_or(&c.dir).to_path_buf();
    let mut cmd = qemu::command(&cfg, &ndir)?;
    // A restarted node's log starts over (the old one is kept as console.log.1).
    if n.console.exists() {
        let _ = fs::rename(&n.console, n.console.with_extension("log.1"));
    }
    let err = fs::File::create(ndir.join("qemu.stderr"))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(err))
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting QEMU for {}", n.name))?;
    // spawn returns once the child began its exec, but the kernel fills in the new program's
    // argument area (what /proc/PID/cmdline reads, and [`alive`] checks) a moment later: seen
    // as `up` reporting "QEMU exited" 0.1 s after the start. Wait (bounded) for it.
    let t = Instant::now();
    while !alive(Some(child.id()), &c.dir) && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(child.id())
}

/// The last `berth: ready slot=X version=V` of a console log: (slot, version).
pub fn ready_of(console: &Path) -> Option<(String, String)> {
    let text = fs::read(console).ok()?;
    let text = String::from_utf8_lossy(&text);
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("berth: ready slot="))?;
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .map(str::to_string)
    };
    Some((field("slot=")?, field("version=")?))
}

/// Waits until every node in `which` has printed its ready line since it started (bounded by
/// `timeout`); `progress` gets a line each time a node comes up, and every 30 s.
pub fn wait_ready(
    c: &Cluster,
    which: &[usize],
    timeout: Duration,
    progress: &dyn Fn(&str),
) -> Result<()> {
    let start = Instant::now();
    let mut up = vec![false; c.nodes.len()];
    let mut last_note = Instant::now();
    loop {
        for &i in which {
            let n = &c.nodes[i];
            if up[i] {
                continue;
            }
            let text = fs::read(&n.console)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            if let Some(l) = text.lines().find(|l| l.contains("berth: FATAL")) {
                bail!(
                    "{} failed to boot: {l}\n(console log: {})",
                    n.name,
                    n.console.display()
                );
            }
            if text.contains("berth: ready slot=") {
                up[i] = true;
                progress(&format!(
                    "{} ready after {:.0} s",
                    n.name,
                    start.elapsed().as_secs_f64()
                ));
            } else if !alive(n.pid, &c.dir) {
                let stderr = n.disk.with_file_name("qemu.stderr");
                let said = fs::read_to_string(&stderr).unwrap_or_default();
                let last: Vec<&str> = said.lines().rev().take(5).collect();
                let last: Vec<&str> = last.into_iter().rev().collect();
                let tail = text
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("");
                bail!(
                    "{}: QEMU exited before the node was ready; it said: {:?}; the console's last line: {tail:?} (console log: {}, QEMU's messages: {})",
                    n.name,
                    last.join(" / "),
                    n.console.display(),
                    stderr.display()
                );
            }
        }
        if which.iter().all(|&i| up[i]) {
            return Ok(());
        }
        if start.elapsed() > timeout {
            let stuck: Vec<String> = which
                .iter()
                .filter(|&&i| !up[i])
                .map(|&i| {
                    format!(
                        "{} (console log {})",
                        c.nodes[i].name,
                        c.nodes[i].console.display()
                    )
                })
                .collect();
            bail!(
                "not ready within {} s: {}",
                timeout.as_secs(),
                stuck.join(", ")
            );
        }
        if last_note.elapsed() > Duration::from_secs(30) {
            last_note = Instant::now();
            let waiting: Vec<&str> = which
                .iter()
                .filter(|&&i| !up[i])
                .map(|&i| c.nodes[i].name.as_str())
                .collect();
            progress(&format!(
                "waiting for {} ({:.0} s)",
                waiting.join(", "),
                start.elapsed().as_secs_f64()
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// One QMP command to a node (`system_powerdown`).
pub fn qmp(sock: &Path, command: &str) -> Result<()> {
    use std::io::{BufRead, BufReader, Write};
    let s = std::os::unix::net::UnixStream::connect(sock)
        .with_context(|| format!("connecting to {}", sock.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut w = s;
    let mut line = String::new();
    r.read_line(&mut line)?;
    for cmd in ["qmp_capabilities", command] {
        writeln!(w, "{{\"execute\": \"{cmd}\"}}")?;
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                bail!("QMP at {} closed the connection", sock.display());
            }
            if line.contains("\"return\"") || line.contains("\"error\"") {
                break;
            }
        }
        if line.contains("\"error\"") {
            bail!("QMP {cmd}: {}", line.trim());
        }
    }
    Ok(())
}

fn kill(pid: Option<u32>, dir: &Path, sig: &str) {
    if let Some(p) = pid.filter(|_| alive(pid, dir)) {
        let _ = Command::new("kill")
            .args([sig, &p.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

fn kill_all(c: &Cluster) -> Result<()> {
    for n in &c.nodes {
        kill(n.pid, &c.dir, "-KILL");
    }
    kill(c.switch_pid, &c.dir, "-TERM");
    Ok(())
}

/// Powers every node off (ACPI, as a power button press: berth-init shuts down cleanly),
/// waits up to `grace` for the QEMUs to exit, kills what is left, then stops the switch.
pub fn down(c: &mut Cluster, grace: Duration, progress: &dyn Fn(&str)) -> Result<()> {
    for n in &c.nodes {
        if alive(n.pid, &c.dir) {
            if let Err(e) = qmp(&n.qmp, "system_powerdown") {
                progress(&format!("{}: {e:#}; killing it", n.name));
                kill(n.pid, &c.dir, "-KILL");
            }
        }
    }
    let start = Instant::now();
    while c.nodes.iter().any(|n| alive(n.pid, &c.dir)) && start.elapsed() < grace {
        std::thread::sleep(Duration::from_millis(300));
    }
    for n in &mut c.nodes {
        if alive(n.pid, &c.dir) {
            progress(&format!(
                "{} did not power off within {} s; killing it",
                n.name,
                grace.as_secs()
            ));
            kill(n.pid, &c.dir, "-KILL");
        }
        n.pid = None;
    }
    kill(c.switch_pid, &c.dir, "-TERM");
    let start = Instant::now();
    while alive(c.switch_pid, &c.dir) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
    }
    kill(c.switch_pid, &c.dir, "-KILL");
    c.switch_pid = None;
    c.save()
}

/// The `ssh` command line for node `n` (the cluster's key, no host-key bookkeeping: each
/// cluster's nodes make new host keys).
pub fn ssh_command(c: &Cluster, n: &Node) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.arg("-i")
        .arg(c.key())
        .args(["-p", &n.ssh_port.to_string()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=10",
        ])
        .arg(format!("{}@127.0.0.1", c.ssh_user));
    cmd
}

/// The reboot lock of a rolling update (locksmith's role: a semaphore with one holder), in
/// etcd: the key holds the holder's name while one node is being updated.
pub const LOCK_KEY: &str = berth_contract::lock::LOCK_KEY;
/// Every take and release of the lock, `<unix ms>-<node>` = `taken` | `released`: the record
/// that at most one node rebooted at a time.
pub const HISTORY_PREFIX: &str = berth_contract::lock::HISTORY_PREFIX;

/// `etcdctl txn` input taking the lock for `holder` if nobody holds it, and recording that in
/// the history in the same transaction (`berth_contract::lock::take_request`'s twin).
pub fn take_txn(holder: &str, unix_ms: u64) -> String {
    let h = berth_contract::lock::history_key(unix_ms, holder);
    format!("create(\"{LOCK_KEY}\") = \"0\"\n\nput {LOCK_KEY} {holder}\nput {h} taken\n\n\n")
}

/// `etcdctl txn` input releasing the lock if `holder` holds it, recording that too.
pub fn release_txn(holder: &str, unix_ms: u64) -> String {
    let h = berth_contract::lock::history_key(unix_ms, holder);
    format!("value(\"{LOCK_KEY}\") = \"{holder}\"\n\ndel {LOCK_KEY}\nput {h} released\n\n\n")
}

/// Runs `etcdctl ARGS` on node `n` (stdin: `input`), bounded; its output, or an error naming
/// the node.
fn etcdctl(c: &Cluster, n: &Node, args: &str, input: Option<&str>) -> Result<String> {
    use std::io::Write;
    let mut cmd = ssh_command(c, n);
    cmd.args(["-o", "BatchMode=yes", "--"])
        .arg(format!("etcdctl --command-timeout=20s {args}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("starting ssh")?;
    if let Some(mut si) = child.stdin.take() {
        si.write_all(input.unwrap_or("").as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "etcdctl {args} on {}: {}{}",
            n.name,
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(text)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Takes the reboot lock for `holder` through node `via`, waiting (bounded) while another
/// holds it.
pub fn take_lock(c: &Cluster, via: &Node, holder: &str, progress: &dyn Fn(&str)) -> Result<()> {
    let start = Instant::now();
    loop {
        let out = etcdctl(c, via, "txn", Some(&take_txn(holder, now_ms())))?;
        if out.lines().next() == Some("SUCCESS") {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(1800) {
            bail!("the reboot lock ({LOCK_KEY}) stayed held for 30 minutes; is a node stuck in an update?");
        }
        progress(&format!("{holder}: waiting for the reboot lock"));
        std::thread::sleep(Duration::from_secs(5));
    }
}

pub fn release_lock(c: &Cluster, via: &Node, holder: &str) -> Result<()> {
    let out = etcdctl(c, via, "txn", Some(&release_txn(holder, now_ms())))?;
    if out.lines().next() != Some("SUCCESS") {
        bail!("releasing the reboot lock: {holder} did not hold it");
    }
    Ok(())
}

/// How many lines of the console log start with `marker`.
fn count_lines(console: &Path, marker: &str) -> usize {
    fs::read(console)
        .map(|b| String::from_utf8_lossy(&b).matches(marker).count())
        .unwrap_or(0)
}

fn ready_lines(console: &Path) -> usize {
    count_lines(console, "berth: ready slot=")
}

/// What a rolling update applies: one bundle to every node, or the latest release of a channel
/// directory (`berth publish channel DIR`), where each node gets the delta from the root it
/// runs if the channel has one, else the full bundle.
enum Release {
    Bundle(PathBuf),
    Channel {
        dir: PathBuf,
        index: berth_contract::channel::Index,
    },
}

impl Release {
    /// Opens `source` (a bundle file or a channel directory); the release and its version.
    fn open(source: &Path) -> Result<(Release, String)> {
        use berth_contract::channel::{Index, INDEX_FILE};
        if !source.is_dir() {
            let mut f =
                fs::File::open(source).with_context(|| format!("opening {}", source.display()))?;
            let header = crate::update::open(&mut f, &source.display().to_string())?.header;
            return Ok((Release::Bundle(source.to_path_buf()), header.version));
        }
        let path = source.join(INDEX_FILE);
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "{} is a directory without {INDEX_FILE}: give an update bundle, or a channel made by `berth publish channel`",
                source.display()
            )
        })?;
        let index = Index::parse(&text).with_context(|| format!("reading {}", path.display()))?;
        let version = index.version.clone();
        Ok((
            Release::Channel {
                dir: source.to_path_buf(),
                index,
            },
            version,
        ))
    }

    /// The bundle for a node whose booted root hash is `running` (`None`: not known), checked
    /// against the channel's size and SHA-256 for a channel.
    fn bundle_for(&self, running: Option<&str>) -> Result<PathBuf> {
        let (dir, index) = match self {
            Release::Bundle(p) => return Ok(p.clone()),
            Release::Channel { dir, index } => (dir, index),
        };
        let entry = index.pick(running.unwrap_or(""));
        let path = dir.join(&entry.bundle);
        let sum = crate::util::digest::sha256_file(&path).with_context(|| {
            format!("reading {} (named by the channel's index)", path.display())
        })?;
        let size = fs::metadata(&path)?.len();
        ensure!(
            size == entry.size && sum == entry.sha256,
            "{}: {size} bytes with SHA-256 {sum}, but the channel's index says {} bytes, {}: the channel is damaged or being written",
            path.display(),
            entry.size,
            entry.sha256
        );
        Ok(path)
    }
}

/// The root hash of the slot node `n` booted, from `berthctl status --json` over SSH.
fn running_roothash(c: &Cluster, n: &Node) -> Result<Option<String>> {
    let out = ssh_command(c, n)
        .args(["-o", "BatchMode=yes", "--", "berthctl status --json"])
        .output()
        .context("running ssh")?;
    ensure!(
        out.status.success(),
        "{}: berthctl status: {}",
        n.name,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{}: berthctl status --json is not JSON", n.name))?;
    Ok(v["slots"].as_array().and_then(|slots| {
        slots
            .iter()
            .find(|s| s["booted"] == true)
            .and_then(|s| s["roothash"].as_str())
            .map(str::to_string)
    }))
}

/// `berth cluster update BUNDLE|CHANNEL`: one node at a time, under the reboot lock: apply the
/// bundle over SSH and reboot; wait until the node is ready on the new version, blessed, and
/// its etcd member healthy; release. A node that comes back on its old version (it rolled
/// back) stops the rollout, with its reason; the nodes after it stay untouched.
pub fn rolling_update(c: &Cluster, source: &Path, progress: &dyn Fn(&str)) -> Result<String> {
    let (release, version) = Release::open(source)?;
    for n in &c.nodes {
        if !alive(n.pid, &c.dir) || ready_of(&n.console).is_none() {
            bail!("{} is not running and ready (`berth cluster status`): a rolling update starts from a healthy cluster", n.name);
        }
    }
    let first = &c.nodes[0];
    etcdctl(c, first, "endpoint health", None).map_err(|e| {
        anyhow::anyhow!("the cluster's reboot lock lives in etcd, and etcd does not answer on {} ({e:#}): cluster update needs an image with etcd and etcdctl (profiles/cluster.toml)", first.name)
    })?;
    for (i, n) in c.nodes.iter().enumerate() {
        if ready_of(&n.console).is_some_and(|(_, v)| v == version) {
            progress(&format!("{} already runs {version}", n.name));
            continue;
        }
        let bundle = match &release {
            Release::Bundle(p) => p.clone(),
            Release::Channel { .. } => {
                let b = release.bundle_for(running_roothash(c, n)?.as_deref())?;
                progress(&format!(
                    "{}: {} from the channel",
                    n.name,
                    b.file_name().unwrap_or_default().to_string_lossy()
                ));
                b
            }
        };
        // The lock is taken and released through a node that stays up.
        let via = &c.nodes[if i == 0 { 1 % c.nodes.len() } else { 0 }];
        take_lock(c, via, &n.name, progress)?;
        let node_start = Instant::now();
        progress(&format!("{}: lock taken; applying {version}", n.name));
        let before = ready_lines(&n.console);
        let blessed_before = count_lines(&n.console, "berth: blessed ");
        let mut cmd = ssh_command(c, n);
        cmd.args([
            "-o",
            "BatchMode=yes",
            "--",
            "berthctl update apply - --reboot",
        ])
        .stdin(fs::File::open(&bundle)?);
        let out = cmd.output().context("running ssh")?;
        if !out.status.success() {
            let _ = release_lock(c, via, &n.name);
            bail!(
                "{}: the update was refused: {}{} (rollout stopped; nothing rebooted)",
                n.name,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        progress(&format!(
            "{}: applied in {:.0} s; rebooting",
            n.name,
            node_start.elapsed().as_secs_f64()
        ));
        let start = Instant::now();
        while ready_lines(&n.console) <= before {
            if start.elapsed() > READY_TIMEOUT {
                bail!("{}: not ready within {} s of its reboot (console log {}); the reboot lock stays held", n.name, READY_TIMEOUT.as_secs(), n.console.display());
            }
            if !alive(n.pid, &c.dir) {
                bail!(
                    "{}: QEMU exited during the update (console log {})",
                    n.name,
                    n.console.display()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let (slot, v) = ready_of(&n.console).unwrap_or_default();
        progress(&format!(
            "{}: ready on {v} in slot {slot} {:.0} s after its reboot",
            n.name,
            start.elapsed().as_secs_f64()
        ));
        if v != version {
            let text =
                String::from_utf8_lossy(&fs::read(&n.console).unwrap_or_default()).into_owned();
            let why = text
                .lines()
                .rev()
                .find(|l| l.contains("berth: rollback from"))
                .unwrap_or("no rollback line")
                .to_string();
            let _ = release_lock(c, via, &n.name);
            bail!(
                "{} came back on version {v} (slot {slot}), not {version}: {why}; rollout stopped, {} node(s) not updated",
                n.name,
                c.nodes.len() - i - 1
            );
        }
        // berth-init blesses a healthy trial boot (renames its boot entry, ending the boot
        // counting) before it says ready: without that line the next reboot could still
        // count down to a rollback, and the node is not done.
        if count_lines(&n.console, "berth: blessed ") <= blessed_before {
            bail!("{}: ready on {version} but its boot entry was not blessed (console log {}); the reboot lock stays held", n.name, n.console.display());
        }
        // Ready means its etcd member answered /health; check it as the cluster sees it.
        let start = Instant::now();
        loop {
            match etcdctl(c, n, "endpoint health", None) {
                Ok(_) => break,
                Err(e) if start.elapsed() > Duration::from_secs(300) => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_secs(2)),
            }
        }
        release_lock(c, via, &n.name)?;
        progress(&format!(
            "{}: {version} in slot {slot}, etcd healthy; lock released ({:.0} s)",
            n.name,
            node_start.elapsed().as_secs_f64()
        ));
    }
    Ok(version)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct NodeStatus {
    pub name: String,
    pub state: String,
    pub address: String,
    pub version: Option<String>,
    pub slot: Option<String>,
    pub ssh_port: u16,
    pub etcd_port: u16,
}

pub fn status(c: &Cluster) -> Vec<NodeStatus> {
    c.nodes
        .iter()
        .map(|n| {
            let running = alive(n.pid, &c.dir);
            let ready = ready_of(&n.console);
            let state = match (running, &ready, n.pid) {
                (true, Some(_), _) => "running",
                (true, None, _) => "booting",
                (false, _, Some(_)) => "dead",
                (false, _, None) => "stopped",
            };
            NodeStatus {
                name: n.name.clone(),
                state: state.into(),
                address: n.address.clone(),
                version: ready.as_ref().map(|r| r.1.clone()),
                slot: ready.map(|r| r.0),
                ssh_port: n.ssh_port,
                etcd_port: n.etcd_port,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: u32) -> Vec<Node> {
        plan("c", n, Path::new("/x"))
    }

    #[test]
    fn a_channel_release_gives_each_node_its_delta_or_the_full_bundle() {
        use berth_contract::channel::{Entry, Index, INDEX_FILE};
        let d = tempfile::tempdir().unwrap();
        let entry = |name: &str, body: &[u8]| {
            fs::write(d.path().join(name), body).unwrap();
            Entry {
                bundle: name.into(),
                size: body.len() as u64,
                sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body)),
            }
        };
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let index = Index {
            image: "berth-cluster".into(),
            arch: "x86_64".into(),
            version: "0.2.0".into(),
            roothash: "c".repeat(64),
            full: entry("full.bundle", b"the full bundle"),
            deltas: vec![(a.clone(), entry("delta-a.bundle", b"from a"))],
        };
        fs::write(d.path().join(INDEX_FILE), index.text()).unwrap();
        let (r, version) = Release::open(d.path()).unwrap();
        assert_eq!(version, "0.2.0");
        let name = |p: PathBuf| p.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(name(r.bundle_for(Some(&a)).unwrap()), "delta-a.bundle");
        assert_eq!(name(r.bundle_for(Some(&b)).unwrap()), "full.bundle");
        assert_eq!(name(r.bundle_for(None).unwrap()), "full.bundle");
        // A bundle that is not what the index says is refused, naming it.
        fs::write(d.path().join("full.bundle"), b"the full bundle, changed").unwrap();
        let e = r.bundle_for(None).unwrap_err().to_string();
        assert!(e.contains("full.bundle") && e.contains("damaged"), "{e}");
        // A directory that is not a channel.
        let empty = tempfile::tempdir().unwrap();
        let e = format!("{:#}", Release::open(empty.path()).err().unwrap());
        assert!(e.contains("without channel.json"), "{e}");
    }

    #[test]
    fn node_configs_are_valid_machine_configs_with_the_peer_list() {
        let all = nodes(3);
        let text = node_config(
            "c",
            &all[1],
            &all,
            Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBf3 test\n"),
            None,
        );
        let cfg = berth_contract::config::MachineConfig::parse(&text).unwrap();
        assert_eq!(cfg.hostname.as_deref(), Some("c-2"));
        assert!(cfg.update.is_none(), "no channel: the image's policy");
        // With a channel: check it, reboot under the lock.
        let with = node_config(
            "c",
            &all[1],
            &all,
            None,
            Some(ChannelUse { check_interval: 45 }),
        );
        let u = berth_contract::config::MachineConfig::parse(&with)
            .unwrap()
            .update
            .unwrap();
        let mut p = berth_contract::channel::Policy::default();
        u.apply(&mut p);
        assert_eq!(p.channel.as_deref(), Some("http://10.0.2.100:8080/"));
        assert_eq!(p.check_interval, 45);
        assert_eq!(p.reboot, berth_contract::channel::Reboot::EtcdLock);
        assert_eq!(cfg.network.len(), 2);
        let etcd = &cfg.files[0].content;
        assert!(etcd.contains("name: c-2\n"), "{etcd}");
        assert!(etcd.contains("initial-cluster: c-1=http://10.77.0.11:2380,c-2=http://10.77.0.12:2380,c-3=http://10.77.0.13:2380\n"), "{etcd}");
        // Every address of the node: loopback for its own etcdctl, the user NIC for the
        // host's forwarded port, the cluster NIC for the other members' clients.
        assert!(
            etcd.contains("listen-client-urls: http://0.0.0.0:2379\n"),
            "{etcd}"
        );
        assert!(
            etcd.contains("advertise-client-urls: http://10.77.0.12:2379\n"),
            "{etcd}"
        );
    }

    #[test]
    fn lock_transactions_compare_before_they_write() {
        assert_eq!(
            take_txn("c-2", 7),
            "create(\"berth/reboot-lock\") = \"0\"\n\nput berth/reboot-lock c-2\nput berth/reboot-history/7-c-2 taken\n\n\n"
        );
        assert_eq!(
            release_txn("c-2", 7),
            "value(\"berth/reboot-lock\") = \"c-2\"\n\ndel berth/reboot-lock\nput berth/reboot-history/7-c-2 released\n\n\n"
        );
    }

    #[test]
    fn bad_sizes_and_names_are_refused() {
        assert!(check_size(0, 768)
            .unwrap_err()
            .to_string()
            .contains("at least one"));
        let e = check_size(1000, 768).unwrap_err().to_string();
        assert!(e.contains("768000 MiB"), "{e}");
        for bad in ["", "Berth", "-x", "x-", "a b", &"x".repeat(41)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        check_name("lab-2").unwrap();
    }

    /// `berth cluster up -n 1 /etc` said "/etc is not a berth image directory: /etc is not a
    /// berth image directory (…)": the reason once, and nothing made.
    #[test]
    fn regression_an_image_that_is_not_one_is_named_once() {
        let d = tempfile::tempdir().unwrap();
        let o = UpOptions {
            name: "t".into(),
            nodes: 1,
            image_dir: d.path().join("img"),
            memory_mib: 256,
            cpus: 1,
            ssh_user: "admin".into(),
            channel: None,
        };
        let e = format!("{:#}", create(d.path(), &o).unwrap_err());
        assert_eq!(
            e.matches("is not a berth image directory").count(),
            1,
            "{e}"
        );
        assert!(!d.path().join("t").exists(), "a cluster directory was made");
    }

    #[test]
    fn ready_lines_and_locating_clusters() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("console.log");
        fs::write(
            &log,
            "x\nberth: ready slot=a version=0.1.0\nberth: ready slot=b version=0.2.0\n",
        )
        .unwrap();
        assert_eq!(ready_of(&log), Some(("b".into(), "0.2.0".into())));
        assert_eq!(locate(d.path(), None).unwrap(), d.path().join("berth"));
        for n in ["one", "two"] {
            fs::create_dir_all(d.path().join(n)).unwrap();
            fs::write(d.path().join(n).join(STATE_FILE), "{}").unwrap();
        }
        assert!(locate(d.path(), None)
            .unwrap_err()
            .to_string()
            .contains("one, two"));
        assert_eq!(locate(d.path(), Some("two")).unwrap(), d.path().join("two"));
    }
}
