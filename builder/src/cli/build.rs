//! `berth build`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use berth::build::{self, BuildOptions};
use berth::formats::Format;
use berth::util::printer::Printer;

/// Build an image: disk.raw (GPT, ESP, slots A/B, state), root.ext4, root.verity, vmlinuz,
/// initrd, update.bundle, manifest.json and SHA256SUMS, plus the formats asked for, in the
/// output directory.
///
/// Uses the lock file next to the profile (PROFILE with .lock instead of .toml); without one,
/// resolves the packages and writes it. Outputs replace the previous ones only when complete;
/// a build with the same inputs as an earlier one reuses its result.
#[derive(Args)]
pub struct BuildArgs {
    /// The image profile.
    #[arg(default_value = super::DEFAULT_PROFILE)]
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
    formats: Vec<Format>,
    /// The release key (NAME.key from `berth keygen`) that signs update.bundle; it must be the
    /// pair of the profile's update.public-key.
    #[arg(long, value_name = "FILE", env = "BERTH_SIGNING_KEY")]
    signing_key: Option<PathBuf>,
    /// An earlier build's output directory: also write update-delta.bundle, holding only the
    /// chunks of the root and verity tree that changed since.
    #[arg(long, value_name = "OLD_IMAGE_DIR")]
    delta_from: Option<PathBuf>,
}

pub fn run(a: BuildArgs, cache_dir: PathBuf, printer: &Printer) -> Result<()> {
    super::remove_staging_on_signals()?;
    let started = Instant::now();
    let r = build::build(
        &BuildOptions {
            profile: a.profile,
            out: a.out,
            cache_dir,
            init: a.init,
            no_cache: a.no_cache,
            formats: (!a.formats.is_empty()).then_some(a.formats),
            signing_key: a.signing_key,
            delta_from: a.delta_from,
        },
        printer,
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
    printer.json(&serde_json::to_value(&r).context("serialising the result")?);
    Ok(())
}
