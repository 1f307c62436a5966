//! `berth publish aws|vagrant`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use berth::artifacts::BuildManifest;
use berth::publish;
use berth::util::printer::Printer;

/// Ship a built image: an AWS AMI, a Vagrant box catalog, or an update channel.
#[derive(Subcommand)]
pub enum PublishCommand {
    Aws(AwsArgs),
    Vagrant(VagrantArgs),
    Channel(ChannelArgs),
}

/// Add the image's update bundles to a static update channel: DIR/channel.json plus the
/// bundles, for any static file server. Machines check it with `berthctl update check`
/// (or by themselves: the profile's `[update] channel` and `check-interval`).
///
/// The bundles are verified first (every chunk; the signature against --key when given);
/// versions only go up; channel.json is replaced last, so the channel is never half-written.
#[derive(Args)]
pub struct ChannelArgs {
    /// The channel directory (created if missing).
    channel: PathBuf,
    /// The image directory (with update.bundle, maybe update-delta.bundle, and manifest.json).
    image_dir: PathBuf,
    /// The release key's public half: the bundles must be signed by it.
    #[arg(long, value_name = "PUB")]
    key: Option<PathBuf>,
}

/// Upload disk.raw to an EBS snapshot (EBS direct APIs) and register a UEFI AMI.
///
/// Credentials and region come from the standard AWS environment variables and
/// ~/.aws/{credentials,config}. With a record of the previous publish (--record, default
/// IMAGE_DIR/aws-publish.json), only changed blocks are sent. On failure, the snapshot and
/// image this run created are deleted.
#[derive(Args)]
pub struct AwsArgs {
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
}

/// Add the image's Vagrant boxes to a box catalog (JSON for `vagrant box add URL`),
/// updated in place; copy the boxes to URL_BASE/<version>/ on your file server.
#[derive(Args)]
pub struct VagrantArgs {
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
}

pub fn run(c: PublishCommand, printer: &Printer) -> Result<()> {
    match c {
        PublishCommand::Aws(a) => aws(a, printer),
        PublishCommand::Vagrant(a) => vagrant(a, printer),
        PublishCommand::Channel(a) => channel(a, printer),
    }
}

fn channel(a: ChannelArgs, printer: &Printer) -> Result<()> {
    let key = a
        .key
        .as_deref()
        .map(berth::util::keys::read_public)
        .transpose()?;
    let p = publish::channel::publish(&a.channel, &a.image_dir, key.as_ref())?;
    printer.info(&format!(
        "{} now offers version {} ({})",
        p.index.display(),
        p.version,
        p.bundles.join(", ")
    ));
    printer.result(&p.index.display().to_string());
    printer.json(&serde_json::to_value(&p)?);
    Ok(())
}

fn aws(a: AwsArgs, printer: &Printer) -> Result<()> {
    let creds = berth_aws::resolve_credentials()?;
    let region = berth_aws::resolve_region(a.region.as_deref())?;
    let endpoints = berth_aws::Endpoints::resolve(a.endpoint_url.as_deref())?;
    let mut req = publish::aws_request(&a.image_dir, &region)?;
    let record_path = a
        .record
        .unwrap_or_else(|| a.image_dir.join("aws-publish.json"));
    req.copy_to_regions = a.copy_to;
    req.launch_permission_users = a.launch_permission;
    req.public = a.public;
    req.parallelism = a.parallel.max(1);
    req.tags = a.tags;
    if record_path.is_file() {
        req.previous = Some(berth_aws::PublishRecord::read(&record_path)?.previous()?);
    }
    let size = std::fs::metadata(&req.disk)
        .with_context(|| format!("reading {}", req.disk.display()))?
        .len();
    // Ctrl-C (or SIGTERM) stops the publish at the next block or poll, and what it created in
    // the account is deleted; a second one exits at once.
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, req.cancel.clone())
            .and_then(|_| signal_hook::flag::register(sig, req.cancel.clone()))
            .context("installing the SIGINT/SIGTERM handlers")?;
    }
    let rec = berth_aws::publish(&req, &creds, &endpoints, printer.bytes_bar(size, "upload"))?;
    rec.write(&record_path)?;
    printer.info(&format!(
        "published {} in {region}: snapshot {}, {} of {} blocks sent",
        rec.ami_id, rec.snapshot_id, rec.blocks_sent, rec.blocks_total
    ));
    printer.result(&rec.ami_id);
    printer.json(&serde_json::to_value(&rec)?);
    Ok(())
}

fn vagrant(a: VagrantArgs, printer: &Printer) -> Result<()> {
    let m = BuildManifest::read(&a.image_dir)?;
    let image = &m.image.name;
    let box_name = a.name.unwrap_or_else(|| format!("berth/{image}"));
    let cat = publish::catalog::publish(
        &a.catalog,
        &box_name,
        &format!("berth image {image}"),
        &m.image.version,
        &a.image_dir,
        &a.url_base,
    )?;
    printer.info(&format!(
        "{} now lists {} version(s) of {box_name}",
        a.catalog.display(),
        cat.versions.len()
    ));
    printer.result(&a.catalog.display().to_string());
    printer.json(&serde_json::to_value(&cat)?);
    Ok(())
}
