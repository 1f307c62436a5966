//! The command line: global flags, one file per verb (its arguments and a `run` that calls
//! the library), and the signal handling that belongs to the process.

pub mod build;
pub mod bundle;
pub mod clean;
pub mod cluster;
pub mod config;
pub mod inspect;
pub mod lock;
pub mod publish;
pub mod run;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

/// The default image definition, relative to the repository root.
pub const DEFAULT_PROFILE: &str = "profiles/qemu.toml";

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Build, run and publish minimal, immutable, A/B-updatable Linux machine images",
    long_about = "berth builds a read-only, dm-verity protected root filesystem holding only a kernel, \
berth-init and a container runtime (containerd + runc) from Debian packages, reproducibly and without root, \
and packages it as an A/B-partitioned UEFI disk: raw, qcow2, VMDK, VHD, Vagrant boxes, AWS AMIs."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args)]
pub struct Global {
    /// Print only results (paths), no progress or step timings.
    #[arg(short, long, global = true, conflicts_with = "json")]
    pub quiet: bool,
    /// More diagnostics on stderr (-v: debug, -vv: trace, including every command run).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Machine-readable output: one JSON document on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Where fetched packages and cached build results live [default: $XDG_CACHE_HOME/berth].
    #[arg(long, global = true, env = "BERTH_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum Command {
    Build(build::BuildArgs),
    Inspect(inspect::InspectArgs),
    Run(run::RunArgs),
    #[command(subcommand)]
    Publish(publish::PublishCommand),
    #[command(subcommand)]
    Config(config::ConfigCommand),
    Clean(clean::CleanArgs),
    Lock(lock::LockArgs),
    Keygen(bundle::KeygenArgs),
    #[command(subcommand)]
    Bundle(bundle::BundleCommand),
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
}

impl Global {
    pub fn cache_dir(&self) -> PathBuf {
        if let Some(d) = &self.cache_dir {
            // Absolute: the cache's paths go to apt (run in its own directory) and into
            // configuration files, where a relative one would name something else.
            return std::path::absolute(d).unwrap_or_else(|_| d.clone());
        }
        berth::cache::default_dir()
    }
}

/// SIGINT/SIGTERM/SIGHUP during a build: remove the staging directories (the previous output
/// stays as it was), say so, and exit with 128 + the signal, the shell's convention.
pub fn remove_staging_on_signals() -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("installing the SIGINT/SIGTERM/SIGHUP handlers")?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            berth::util::output::remove_live_staging();
            eprintln!("berth: interrupted; nothing was written to the output directory");
            std::process::exit(128 + sig);
        }
    });
    Ok(())
}
