//! `berth cluster up|status|console|ssh|down|destroy`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};

use berth::cluster::{self, Cluster};
use berth::util::printer::Printer;

/// Boot several machines of one image as a cluster in QEMU: a private network between them
/// (a vde_switch on a unix socket; no host interface), SSH to each through 127.0.0.1, etcd
/// (profiles/cluster.toml) formed from per-node machine configs. The cluster's state lives in
/// a directory ($XDG_STATE_HOME/berth/clusters/NAME), so every verb works from any shell.
#[derive(Subcommand)]
pub enum ClusterCommand {
    Up(UpArgs),
    Status(NameArgs),
    Console(NodeArgs),
    Ssh(SshArgs),
    Down(NameArgs),
    Destroy(NameArgs),
    Vagrantfile(VagrantfileArgs),
    Update(UpdateArgs),
    #[command(hide = true)]
    ServeChannel(ServeChannelArgs),
}

/// Answer one HTTP request on stdin/stdout from a channel directory: what QEMU runs for each
/// node connection to the channel of `up --channel DIR` (not for use by hand).
#[derive(Args)]
pub struct ServeChannelArgs {
    dir: PathBuf,
}

/// Rolling update: one node at a time under an etcd-held reboot lock, apply the bundle, reboot,
/// wait until it is ready, blessed and its etcd member healthy, release; a node that rolls
/// back stops the rollout.
#[derive(Args)]
pub struct UpdateArgs {
    /// An update bundle (a full bundle, or a delta from the nodes' running root), or a channel
    /// directory (`berth publish channel DIR`): its latest release, each node getting the delta
    /// from the root it runs when the channel has one, else the full bundle.
    #[arg(value_name = "BUNDLE|CHANNEL")]
    bundle: PathBuf,
    #[arg(long)]
    name: Option<String>,
}

/// Write a multi-machine Vagrantfile for the same cluster (libvirt provider, a private
/// network, each node's machine config through fw_cfg) and the configs beside it. The box
/// must log in the way Vagrant expects: build it from profiles/cluster-vagrant.toml and add it
/// with `vagrant box add`.
#[derive(Args)]
pub struct VagrantfileArgs {
    #[arg(short = 'n', long = "nodes", default_value_t = 3)]
    nodes: u32,
    /// The cluster's name (its nodes are NAME-1 … NAME-N).
    #[arg(long, default_value = "berth")]
    name: String,
    /// The Vagrant box.
    #[arg(long = "box", default_value = "berth/berth-cluster-vagrant")]
    box_name: String,
    #[arg(long, default_value_t = cluster::DEFAULT_MEMORY_MIB)]
    memory: u32,
    /// Where to write (created if missing; an existing Vagrantfile there is replaced).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

/// Make and boot N nodes; returns when every node is ready (or says which one is stuck).
#[derive(Args)]
pub struct UpArgs {
    /// Number of nodes.
    #[arg(short = 'n', long = "nodes", default_value_t = 3)]
    nodes: u32,
    /// An image directory, or a profile (.toml: built first if needed).
    #[arg(default_value = "profiles/cluster.toml")]
    image: PathBuf,
    /// The cluster's name (its nodes are NAME-1 … NAME-N).
    #[arg(long, default_value = "berth")]
    name: String,
    /// Guest memory per node, MiB.
    #[arg(long, default_value_t = cluster::DEFAULT_MEMORY_MIB)]
    memory: u32,
    /// CPUs per node (1 under TCG: more starve each other on a small host).
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// The login user of the image's admin container.
    #[arg(long, default_value = "admin")]
    user: String,
    /// Serve this update channel directory (`berth publish channel DIR`) to every node at
    /// http://10.0.2.100:8080/ (through QEMU, not a host socket): the nodes check it and update
    /// themselves, rebooting one at a time under the cluster's reboot lock in etcd (their
    /// update policy becomes reboot = "etcd-lock").
    #[arg(long, value_name = "DIR")]
    channel: Option<PathBuf>,
    /// With --channel: seconds between each node's checks of the channel.
    #[arg(long, value_name = "SECS", default_value_t = 300, requires = "channel")]
    check_interval: u32,
}

#[derive(Args)]
pub struct NameArgs {
    /// The cluster [default: the only one, or `berth`].
    #[arg(long)]
    name: Option<String>,
}

/// Print a node's console log.
#[derive(Args)]
pub struct NodeArgs {
    /// NAME-N or N.
    node: String,
    #[arg(long)]
    name: Option<String>,
}

/// SSH into a node's admin container (a command, or a shell).
#[derive(Args)]
pub struct SshArgs {
    /// NAME-N or N.
    node: String,
    /// The command and its arguments (none: an interactive shell).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
    #[arg(long)]
    name: Option<String>,
}

fn load(name: Option<&str>) -> Result<Cluster> {
    let root = cluster::clusters_dir();
    Cluster::load(&cluster::locate(&root, name)?)
}

/// Returns the exit code (ssh's, for `ssh`).
pub fn run(c: ClusterCommand, cache_dir: &Path, printer: &Printer) -> Result<i32> {
    match c {
        ClusterCommand::Up(a) => up(a, cache_dir, printer).map(|()| 0),
        ClusterCommand::Status(a) => status(a, printer).map(|()| 0),
        ClusterCommand::Console(a) => {
            let c = load(a.name.as_deref())?;
            let n = c.node(&a.node)?;
            let text = std::fs::read(&n.console)?;
            use std::io::Write;
            std::io::stdout().write_all(&text)?;
            Ok(0)
        }
        ClusterCommand::Ssh(a) => {
            let c = load(a.name.as_deref())?;
            let n = c.node(&a.node)?;
            if !cluster::alive(n.pid, &c.dir) {
                bail!("{} is not running (`berth cluster status`)", n.name);
            }
            let mut cmd = cluster::ssh_command(&c, n);
            if !a.command.is_empty() {
                cmd.arg("--").args(&a.command);
            }
            Ok(cmd.status()?.code().unwrap_or(255))
        }
        ClusterCommand::Down(a) => {
            let mut c = load(a.name.as_deref())?;
            cluster::down(&mut c, Duration::from_secs(120), &|m| printer.info(m))?;
            printer.info(&format!("cluster {} is down", c.name));
            Ok(0)
        }
        ClusterCommand::ServeChannel(a) => {
            let stdin = std::io::stdin();
            let mut out = std::io::stdout().lock();
            cluster::serve::serve_connection(&a.dir, &mut stdin.lock(), &mut out)?;
            Ok(0)
        }
        ClusterCommand::Update(a) => {
            let c = load(a.name.as_deref())?;
            let v = cluster::rolling_update(&c, &a.bundle, &|m| printer.info(m))?;
            printer.info(&format!("cluster {}: every node runs {v}", c.name));
            Ok(0)
        }
        ClusterCommand::Vagrantfile(a) => {
            std::fs::create_dir_all(&a.dir)?;
            for (name, text) in cluster::vagrantfile(&a.name, a.nodes, &a.box_name, a.memory)? {
                let p = a.dir.join(&name);
                let tmp = a.dir.join(format!(".{name}.tmp"));
                std::fs::write(&tmp, text)?;
                std::fs::rename(&tmp, &p)?;
                printer.result(&p.display().to_string());
            }
            Ok(0)
        }
        ClusterCommand::Destroy(a) => {
            let mut c = load(a.name.as_deref())?;
            cluster::down(&mut c, Duration::from_secs(120), &|m| printer.info(m))?;
            std::fs::remove_dir_all(&c.dir)?;
            printer.info(&format!(
                "cluster {} destroyed ({} removed)",
                c.name,
                c.dir.display()
            ));
            Ok(0)
        }
    }
}

fn up(a: UpArgs, cache_dir: &Path, printer: &Printer) -> Result<()> {
    cluster::check_name(&a.name)?;
    cluster::check_size(a.nodes, a.memory)?;
    let image_dir = if a.image.extension().is_some_and(|e| e == "toml") {
        let r = berth::build::build(
            &berth::build::BuildOptions {
                profile: a.image.clone(),
                out: None,
                cache_dir: cache_dir.to_path_buf(),
                init: None,
                no_cache: false,
                formats: None,
                signing_key: None,
                delta_from: None,
            },
            printer,
        )?;
        r.out_dir
    } else {
        a.image.clone()
    };
    let root = cluster::clusters_dir();
    let c = cluster::create(
        &root,
        &cluster::UpOptions {
            name: a.name.clone(),
            nodes: a.nodes,
            image_dir,
            memory_mib: a.memory,
            cpus: a.cpus,
            ssh_user: a.user,
            channel: match a.channel {
                Some(dir) => {
                    let exe = std::env::current_exe()?;
                    Some(cluster::ChannelOptions {
                        dir,
                        usage: cluster::ChannelUse {
                            check_interval: a.check_interval,
                        },
                        server: vec![
                            exe.display().to_string(),
                            "cluster".into(),
                            "serve-channel".into(),
                        ],
                    })
                }
                None => None,
            },
        },
    )?;
    printer.info(&format!(
        "cluster {}: {} node(s) booting ({}); waiting for ready",
        c.name,
        c.nodes.len(),
        c.dir.display()
    ));
    let all: Vec<usize> = (0..c.nodes.len()).collect();
    cluster::wait_ready(&c, &all, cluster::READY_TIMEOUT, &|m| printer.info(m))?;
    printer.result(&c.dir.display().to_string());
    printer.json(&serde_json::json!({"name": c.name, "dir": c.dir, "nodes": cluster::status(&c)}));
    Ok(())
}

fn status(a: NameArgs, printer: &Printer) -> Result<()> {
    let root = cluster::clusters_dir();
    let dir = cluster::locate(&root, a.name.as_deref())?;
    let c = Cluster::load(&dir)?;
    let st = cluster::status(&c);
    printer.json(&serde_json::json!({"name": c.name, "nodes": st}));
    if !printer.is_json() {
        println!(
            "{:<14} {:<8} {:<12} {:<10} {:<5} {:<9} ETCD-PORT",
            "NODE", "STATE", "ADDRESS", "VERSION", "SLOT", "SSH-PORT"
        );
        for n in &st {
            println!(
                "{:<14} {:<8} {:<12} {:<10} {:<5} {:<9} {}",
                n.name,
                n.state,
                n.address,
                n.version.as_deref().unwrap_or("-"),
                n.slot.as_deref().unwrap_or("-"),
                n.ssh_port,
                n.etcd_port
            );
        }
    }
    Ok(())
}
