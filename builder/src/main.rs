//! The `berth` command.
//!
//! Exit codes: 0 success; 1 the work failed (the message says why); 2 bad command line (clap);
//! 130/143 interrupted by SIGINT/SIGTERM (outputs left as they were).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use berth::build::{self, BuildOptions};
use berth::lock::{self, Lock};
use berth::printer::{Mode, Printer};
use berth::profile;

/// The default image definition, relative to the repository root.
const DEFAULT_PROFILE: &str = "profiles/qemu.toml";

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Build, run and publish minimal, immutable, A/B-updatable Linux machine images",
    long_about = "berth builds a read-only, dm-verity protected root filesystem holding only a kernel, \
berth-init and a container runtime (containerd + runc) from Debian packages, reproducibly and without root."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// Print only results (paths), no progress or step timings.
    #[arg(short, long, global = true, conflicts_with = "json")]
    quiet: bool,
    /// More diagnostics on stderr (-v: debug, -vv: trace, including every command run).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Machine-readable output: one JSON document on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// Where fetched packages and cached build results live [default: $XDG_CACHE_HOME/berth].
    #[arg(long, global = true, env = "BERTH_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Build an image: root.ext4 + root.verity + manifest.json in the output directory.
    ///
    /// Uses the lock file next to the profile (PROFILE with .lock instead of .toml); without one,
    /// resolves the packages and writes it. Outputs replace the previous ones only when complete.
    Build {
        /// The image profile.
        #[arg(default_value = DEFAULT_PROFILE)]
        profile: PathBuf,
        /// Output directory [default: out/<image name>].
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// A static berth-init to put in the image [default: the profile's init.path, or
        /// berth-init next to this executable, or built from the source tree].
        #[arg(long)]
        init: Option<PathBuf>,
        /// Rebuild even when a cached result for the same inputs exists.
        #[arg(long)]
        no_cache: bool,
        /// Also write these formats, derived from disk.raw (instead of the profile's
        /// outputs.formats): raw.zst, qcow2, vmdk, vhd, vagrant-libvirt, vagrant-virtualbox;
        /// repeatable or comma-separated.
        #[arg(long = "format", value_name = "FORMAT", value_delimiter = ',')]
        formats: Vec<berth::formats::Format>,
    },
    /// Show the fully resolved profile (after `extends`) and what the root filesystem will hold.
    Inspect {
        #[arg(default_value = DEFAULT_PROFILE)]
        profile: PathBuf,
        /// Also fetch the packages and list every file of the root filesystem.
        #[arg(long)]
        files: bool,
    },
    /// Boot an image in QEMU with the serial console on this terminal (Ctrl-A X quits).
    ///
    /// UEFI (OVMF + systemd-boot) by default; --direct boots slot A's kernel and initrd without
    /// firmware. The disk is a throw-away snapshot unless --persist. Networking is QEMU user
    /// mode with restrict=on: the guest reaches nothing but the ports given with --forward.
    /// Exits with QEMU's status when the guest powers off.
    Run {
        /// An image directory (out/<name>), a disk image (disk.raw, disk.qcow2) or a profile
        /// (.toml: its default output directory).
        #[arg(default_value = DEFAULT_PROFILE)]
        image: PathBuf,
        /// Boot the kernel and initrd directly (faster; skips firmware and boot loader).
        #[arg(long)]
        direct: bool,
        /// With --direct: extra kernel command line (e.g. "berth.after-ready=poweroff").
        #[arg(long, requires = "direct", value_name = "ARGS")]
        append: Option<String>,
        /// Write to the disk image instead of a snapshot.
        #[arg(long)]
        persist: bool,
        /// Forward 127.0.0.1:HOST to the guest's port GUEST (TCP); repeatable.
        #[arg(long, value_name = "HOST:GUEST", value_parser = parse_forward)]
        forward: Vec<(u16, u16)>,
        /// Guest memory in MiB.
        #[arg(long, default_value_t = berth::qemu::DEFAULT_MEMORY_MIB)]
        memory: u32,
        /// Guest CPUs.
        #[arg(long, default_value_t = berth::qemu::DEFAULT_CPUS)]
        cpus: u32,
        /// Also write the console to this file.
        #[arg(long, value_name = "FILE")]
        console_log: Option<PathBuf>,
        /// Exit when the guest reboots instead of booting again.
        #[arg(long)]
        no_reboot: bool,
    },
    /// Ship a built image: an AWS AMI, or a Vagrant box catalog.
    #[command(subcommand)]
    Publish(Publish),
    /// Resolve the profile's packages to exact versions + SHA-256 and write the lock file.
    Lock {
        #[arg(default_value = DEFAULT_PROFILE)]
        profile: PathBuf,
        /// Only check that the lock is current; exit 1 if resolving now gives another lock.
        #[arg(long)]
        check: bool,
    },
}

#[derive(Subcommand)]
enum Publish {
    /// Upload disk.raw to an EBS snapshot (EBS direct APIs) and register a UEFI AMI.
    ///
    /// Credentials and region come from the standard AWS environment variables and
    /// ~/.aws/{credentials,config}. With a record of the previous publish (--record, default
    /// IMAGE_DIR/aws-publish.json), only changed blocks are sent. On failure, the snapshot and
    /// image this run created are deleted.
    Aws {
        /// The image directory (with disk.raw and manifest.json).
        image_dir: PathBuf,
        /// Region [default: AWS_REGION, AWS_DEFAULT_REGION, or ~/.aws/config].
        #[arg(long)]
        region: Option<String>,
        /// Send EC2 and EBS requests to this endpoint (e.g. a local emulator).
        #[arg(long, value_name = "URL")]
        endpoint_url: Option<String>,
        /// Also copy the AMI to these regions; repeatable.
        #[arg(long = "copy-to", value_name = "REGION")]
        copy_to: Vec<String>,
        /// Let these AWS accounts launch the AMI; repeatable.
        #[arg(long = "launch-permission", value_name = "ACCOUNT")]
        launch_permission: Vec<String>,
        /// Make the AMI public.
        #[arg(long)]
        public: bool,
        /// Where the record of this publish is read (for incremental uploads) and written.
        #[arg(long, value_name = "FILE")]
        record: Option<PathBuf>,
        /// Parallel block uploads.
        #[arg(long, default_value_t = berth_aws::DEFAULT_PARALLELISM)]
        parallel: usize,
        /// Tag the snapshot and the AMI with KEY=VALUE; repeatable (berth:image and
        /// berth:version are always added).
        #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = berth_aws::parse_tag)]
        tags: Vec<(String, String)>,
    },
    /// Add the image's Vagrant boxes to a box catalog (JSON for `vagrant box add URL`),
    /// updated in place; copy the boxes to URL_BASE/<version>/ on your file server.
    Vagrant {
        /// The image directory (with berth-libvirt.box and/or berth-virtualbox.box).
        image_dir: PathBuf,
        /// The catalog file to create or update.
        #[arg(long)]
        catalog: PathBuf,
        /// Where the boxes will be served from (e.g. https://boxes.example.com/berth).
        #[arg(long, value_name = "URL")]
        url_base: String,
        /// Box name in the catalog [default: berth/<image name>].
        #[arg(long)]
        name: Option<String>,
    },
}

fn image_manifest(dir: &std::path::Path) -> Result<serde_json::Value> {
    let p = dir.join("manifest.json");
    let text = std::fs::read(&p).with_context(|| {
        format!(
            "{} is not a berth image directory (no manifest.json)",
            dir.display()
        )
    })?;
    serde_json::from_slice(&text).with_context(|| format!("reading {}", p.display()))
}

fn parse_forward(s: &str) -> Result<(u16, u16), String> {
    let (h, g) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected HOST:GUEST ports, like 8080:80"))?;
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("{s:?}: {p:?} is not a port number (1-65535)"))
    };
    Ok((port(h)?, port(g)?))
}

fn cache_dir(g: &Global) -> PathBuf {
    if let Some(d) = &g.cache_dir {
        return d.clone();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("berth")
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "berth=debug,info",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn run(cli: Cli) -> Result<()> {
    let mode = if cli.global.json {
        Mode::Json
    } else if cli.global.quiet {
        Mode::Quiet
    } else {
        Mode::Normal
    };
    let printer = Printer::new(mode);
    let cache = cache_dir(&cli.global);
    match cli.command {
        Command::Build {
            profile,
            out,
            init,
            no_cache,
            formats,
        } => {
            let started = std::time::Instant::now();
            let r = build::build(
                &BuildOptions {
                    profile,
                    out,
                    cache_dir: cache,
                    init,
                    no_cache,
                    formats: (!formats.is_empty()).then_some(formats),
                },
                &printer,
            )?;
            printer.info(&format!(
                "built {} in {:.1}s{}",
                r.out_dir.display(),
                started.elapsed().as_secs_f64(),
                if r.cached {
                    " (inputs unchanged: reused the cached result)"
                } else {
                    ""
                }
            ));
            for a in &r.artifacts {
                printer.result(&a.display().to_string());
            }
            printer.json(&serde_json::to_value(&r)?);
        }
        Command::Inspect { profile, files } => {
            let p = profile::load(&profile)?;
            let lock_path = lock::path_for(&p.path);
            let lock = if lock_path.is_file() {
                Some(Lock::read(&lock_path)?)
            } else {
                None
            };
            let mut doc = json!({ "profile": p, "lock": lock_path, "packages": lock.as_ref().map(|l| &l.packages) });
            if files {
                let lock = build::lock_for(&p, &cache, &printer)?;
                let (_, init) = berth::init::locate(p.init.path.as_deref(), &cache)?;
                let (rootfs, _) = build::assemble_rootfs(&p, &lock, &cache, &init, &printer)?;
                let list: Vec<_> = rootfs
                    .manifest
                    .iter()
                    .map(|(path, e)| {
                        format!(
                            "{} {:04o} {}:{} {}",
                            e.kind.name(),
                            e.mode,
                            e.uid,
                            e.gid,
                            path
                        )
                    })
                    .collect();
                doc["rootfs"] = json!({ "kernel": rootfs.kernel, "entries": list });
            }
            if mode == Mode::Json {
                printer.json(&doc);
            } else {
                printer.result(&render_inspect(&p, lock.as_ref(), &lock_path, &doc));
            }
        }
        Command::Run {
            image,
            direct,
            append,
            persist,
            forward,
            memory,
            cpus,
            console_log,
            no_reboot,
        } => {
            let target = berth::run::resolve(&image)?;
            let mut cfg = berth::qemu::VmConfig::new(&target.disk)?;
            if direct {
                cfg.boot = target.direct_boot(append.as_deref())?;
            }
            cfg.persist = persist;
            cfg.forwards = forward;
            cfg.memory_mib = memory;
            cfg.cpus = cpus;
            cfg.console_log = console_log;
            cfg.no_reboot = no_reboot;
            let work = tempfile::tempdir().context("creating a temporary directory")?;
            let mut cmd = berth::qemu::command(&cfg, work.path())?;
            printer.info(&format!(
                "booting {} ({}, {:?}{}); Ctrl-A X quits",
                target.disk.display(),
                if direct { "direct kernel boot" } else { "UEFI" },
                cfg.accel,
                if persist {
                    ", persistent"
                } else {
                    ", snapshot"
                }
            ));
            let ended = berth::qemu::run_foreground(&mut cmd)?;
            drop(work);
            if let Some(sig) = ended.signal {
                std::process::exit(128 + sig);
            }
            if !ended.status.success() {
                anyhow::bail!("QEMU exited with {}", ended.status);
            }
        }
        Command::Publish(Publish::Aws {
            image_dir,
            region,
            endpoint_url,
            copy_to,
            launch_permission,
            public,
            record,
            parallel,
            tags,
        }) => {
            let m = image_manifest(&image_dir)?;
            let name = m["image"]["name"].as_str().unwrap_or("berth").to_string();
            let version = m["image"]["version"].as_str().unwrap_or("0").to_string();
            let disk = berth_aws::disk_in(&image_dir)?;
            let creds = berth_aws::resolve_credentials()?;
            let region = berth_aws::resolve_region(region.as_deref())?;
            let endpoints = berth_aws::Endpoints::resolve(endpoint_url.as_deref())?;
            let record_path = record.unwrap_or_else(|| image_dir.join("aws-publish.json"));
            let mut req = berth_aws::PublishRequest::new(
                disk.clone(),
                &format!("{name}-{version}"),
                &version,
                &region,
            );
            req.description = format!(
                "berth {name} {version} (roothash {})",
                m["verity"]["roothash"].as_str().unwrap_or("")
            );
            req.copy_to_regions = copy_to;
            req.launch_permission_users = launch_permission;
            req.public = public;
            req.parallelism = parallel.max(1);
            req.tags = tags;
            if record_path.is_file() {
                req.previous = Some(berth_aws::PublishRecord::read(&record_path)?.previous()?);
            }
            let size = std::fs::metadata(&disk)?.len();
            // Ctrl-C (or SIGTERM) stops the publish at the next block or poll, and what it
            // created in the account is deleted; a second one exits at once.
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register_conditional_shutdown(sig, 130, req.cancel.clone())
                    .and_then(|_| signal_hook::flag::register(sig, req.cancel.clone()))
                    .context("installing the SIGINT/SIGTERM handlers")?;
            }
            let rec =
                berth_aws::publish(&req, &creds, &endpoints, printer.bytes_bar(size, "upload"))?;
            rec.write(&record_path)?;
            printer.info(&format!(
                "published {} in {region}: snapshot {}, {} of {} blocks sent",
                rec.ami_id, rec.snapshot_id, rec.blocks_sent, rec.blocks_total
            ));
            printer.result(&rec.ami_id);
            printer.json(&serde_json::to_value(&rec)?);
        }
        Command::Publish(Publish::Vagrant {
            image_dir,
            catalog,
            url_base,
            name,
        }) => {
            let m = image_manifest(&image_dir)?;
            let image = m["image"]["name"].as_str().unwrap_or("berth");
            let version = m["image"]["version"]
                .as_str()
                .context("manifest.json has no image.version")?;
            let box_name = name.unwrap_or_else(|| format!("berth/{image}"));
            let cat = berth::catalog::publish(
                &catalog,
                &box_name,
                &format!("berth image {image}"),
                version,
                &image_dir,
                &url_base,
            )?;
            printer.info(&format!(
                "{} now lists {} version(s) of {box_name}",
                catalog.display(),
                cat.versions.len()
            ));
            printer.result(&catalog.display().to_string());
            printer.json(&serde_json::to_value(&cat)?);
        }
        Command::Lock { profile, check } => {
            let p = profile::load(&profile)?;
            let step = printer.step("resolve packages");
            let l = build::resolve_lock(&p, &cache)?;
            step.done(&format!("{} packages", l.packages.len()));
            let path = lock::path_for(&p.path);
            if check {
                if !path.is_file() {
                    anyhow::bail!(
                        "{} does not exist yet: run `berth lock {}` to create it",
                        path.display(),
                        profile.display()
                    );
                }
                let old = Lock::read(&path)?;
                if old != l {
                    anyhow::bail!(
                        "{} is out of date: run `berth lock {}`",
                        path.display(),
                        profile.display()
                    );
                }
                printer.result(&format!("{} is up to date", path.display()));
            } else {
                l.write(&path)
                    .with_context(|| format!("writing {}", path.display()))?;
                for pkg in &l.packages {
                    printer.info(&format!(
                        "  {:<36} {:<28} {}",
                        pkg.name, pkg.version, pkg.role
                    ));
                }
                printer.result(&path.display().to_string());
            }
            printer.json(&serde_json::to_value(&l)?);
        }
    }
    Ok(())
}

/// `berth inspect` for people: the resolved profile as TOML, then packages, then the rootfs.
fn render_inspect(
    p: &profile::Profile,
    lock: Option<&Lock>,
    lock_path: &std::path::Path,
    doc: &serde_json::Value,
) -> String {
    let mut out = String::from("# resolved profile (after extends, with defaults)\n");
    match toml::to_string_pretty(p) {
        Ok(t) => out.push_str(&t),
        Err(_) => out.push_str(&serde_json::to_string_pretty(p).unwrap_or_default()),
    }
    out.push_str(&format!("\n# packages ({})\n", lock_path.display()));
    match lock {
        Some(l) => {
            for pkg in &l.packages {
                out.push_str(&format!(
                    "{:<36} {:<28} {}\n",
                    pkg.name, pkg.version, pkg.role
                ));
            }
        }
        None => {
            out.push_str("(no lock yet: `berth lock` or the first `berth build` resolves them)\n")
        }
    }
    out.push_str("\n# root filesystem\n");
    out.push_str(&format!(
        "runtime binaries (with their shared-library closure): {}\n",
        p.runtime
            .binaries
            .iter()
            .map(|b| b.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    ));
    out.push_str(&format!(
        "kernel: {} (modules: {})\n",
        p.kernel.package,
        p.kernel
            .modules
            .as_ref()
            .map_or("all".to_string(), |m| m.join(" "))
    ));
    out.push_str(&format!("init: {}\n", berth::rootfs::INIT_PATH));
    for o in &p.overlays {
        out.push_str(&format!("overlay {}: {}\n", o.name, o.path.display()));
    }
    for f in &p.files {
        out.push_str(&format!("file {}: {:?}\n", f.path, f.what));
    }
    if let Some(entries) = doc["rootfs"]["entries"].as_array() {
        out.push_str(&format!("\n# every entry ({})\n", entries.len()));
        for e in entries {
            out.push_str(e.as_str().unwrap_or_default());
            out.push('\n');
        }
    }
    out
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.global.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<berth_aws::Interrupted>().is_some() {
                // The shell's convention for "stopped by SIGINT".
                return ExitCode::from(130);
            }
            ExitCode::from(1)
        }
    }
}
