//! `berth build`: the recipe, top to bottom. Each stage is a plain function from one typed
//! artifact to the next (DESIGN.md, "The build pipeline"); the plumbing of each lives in the
//! stage's own module.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use crate::artifacts::{self, BuildManifest};
use crate::formats::{self, Format, FormatCtx};
use crate::profile::{self, Profile};
use crate::root::init::{self, Init};
use crate::units::Bytes;
use crate::util::output::{self, Staging};
use crate::util::printer::Printer;
use crate::{boot, cache, disk, fetch, kernel, outdir, root, update};

pub struct BuildOptions {
    pub profile: PathBuf,
    pub out: Option<PathBuf>,
    pub cache_dir: PathBuf,
    pub init: Option<PathBuf>,
    /// Build even if a cached result for the same inputs exists (packages are still cached).
    pub no_cache: bool,
    /// Formats to derive from disk.raw instead of the profile's `outputs.formats`.
    pub formats: Option<Vec<Format>>,
    /// The release key that signs update.bundle (`berth keygen`); without one the bundle is
    /// unsigned.
    pub signing_key: Option<PathBuf>,
    /// An earlier build's output directory: also write update-delta.bundle, holding only the
    /// chunks that differ from it.
    pub delta_from: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct BuildResult {
    pub out_dir: PathBuf,
    pub cached: bool,
    pub artifacts: Vec<PathBuf>,
    pub roothash: String,
}

pub fn build(opts: &BuildOptions, p: &Printer) -> Result<BuildResult> {
    let started = std::time::Instant::now();
    let profile = load_profile(&opts.profile, p)?;
    let out_dir = opts
        .out
        .clone()
        .unwrap_or_else(|| outdir::default_out(&profile));
    output::check_target(&out_dir, outdir::MANIFEST)?;
    cache::check_dir(&opts.cache_dir)?;
    let lock = fetch::lock_for(&profile, &opts.cache_dir, p)?;
    let init = locate_init(opts, &profile, p)?;
    let formats = formats::plan(opts.formats.as_deref().unwrap_or(&profile.outputs.formats))?;
    let signing = update::signing(&profile, opts.signing_key.as_deref(), p)?;
    let base = opts
        .delta_from
        .as_deref()
        .map(update::Base::read)
        .transpose()?;
    let key = cache::key(&cache::Inputs {
        profile: &profile,
        lock: &lock,
        init: &init.bytes,
        formats: &formats,
        builder: &cache::builder_digest()?,
        signing: signing.as_ref().map(|k| k.verifying_key().to_bytes()),
        delta_base: base.as_ref().map(|b| b.roothash),
    })?;
    let names = outdir::output_names(&formats, base.is_some());
    let out = Staging::new(
        &opts
            .out
            .clone()
            .unwrap_or_else(|| outdir::default_out(&profile)),
    )?;
    if !opts.no_cache {
        if let Some(m) = cache::reuse(&opts.cache_dir, &key, &names, out.path(), p)? {
            write_metrics(out.path(), &names, true, started, p);
            return commit(out, &names, &m, true);
        }
    }

    let mut packages = fetch::packages(&profile, &lock, &opts.cache_dir, p)?;
    kernel::stage(&profile, &mut packages, &opts.cache_dir, p)?;
    let rootfs = root::assemble(&profile, &packages, &init, p)?;
    let root = root::image::root_image(&profile, &rootfs, out.path(), p)?;
    let verity = root::image::verity(&root, out.path(), p)?;
    // --no-cache makes everything again, the initramfs too.
    let initramfs_cache = (!opts.no_cache).then_some(opts.cache_dir.as_path());
    let boot = boot::files(
        &profile,
        &packages,
        &rootfs,
        &init,
        out.path(),
        initramfs_cache,
        p,
    )?;
    let disk = disk::write(&profile, &root, &verity, &boot, out.path(), p)?;
    // disk.raw's SHA-256 is the longest hash of a build (its holes count: 2.5 GiB of mostly
    // zeros for the default profile), so it runs on a thread of its own while the bundles and
    // the formats are written, instead of in the manifest stage after them.
    let final_names: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| *n != outdir::MANIFEST && *n != outdir::SHA256SUMS)
        .collect();
    let (bundle_sums, disk_sum, pending) = std::thread::scope(|s| -> Result<_> {
        let disk_sum = s.spawn(|| outdir::FileSum::of(out.path(), outdir::DISK));
        let bundle_sums = update::bundles(
            &profile,
            &verity,
            signing.as_ref(),
            base.as_ref(),
            out.path(),
            p,
        )?;
        formats::write_all(
            &formats,
            &format_ctx(&profile, &disk, &verity, out.path()),
            p,
        )?;
        // Every output but manifest.json and SHA256SUMS is final: into the cache with them
        // while disk.raw is still being hashed.
        let pending = cache::begin_store(&opts.cache_dir, &key, out.path(), &final_names);
        let disk_sum = disk_sum
            .join()
            .map_err(|_| anyhow::anyhow!("hashing {} panicked", outdir::DISK))??;
        Ok((bundle_sums, disk_sum, pending))
    })?;
    let record = artifacts::record(&profile, &lock, &rootfs, &verity, &boot, &disk, &formats);
    let known = [root.sum, verity.sum]
        .into_iter()
        .chain(boot.sums)
        .chain(bundle_sums)
        .chain([disk_sum])
        .collect();
    let manifest = finish(out.path(), record, &names, known, p)?;
    pending.finish(out.path(), &[outdir::MANIFEST, outdir::SHA256SUMS]);
    write_metrics(out.path(), &names, false, started, p);
    commit(out, &names, &manifest, false)
}

/// `build-metrics.json`: seconds per stage and the size of every output (apparent and
/// allocated: disk images are sparse). Beside manifest.json but not in SHA256SUMS, since
/// timings differ between identical builds. Best effort: a failure to write it is a warning.
fn write_metrics(
    out: &Path,
    names: &[&str],
    cached: bool,
    started: std::time::Instant,
    p: &Printer,
) {
    use std::os::unix::fs::MetadataExt;
    let stages: Vec<serde_json::Value> = p
        .timings()
        .into_iter()
        .map(|(name, d)| serde_json::json!({"stage": name, "seconds": (d.as_secs_f64() * 1000.0).round() / 1000.0}))
        .collect();
    let sizes: Vec<serde_json::Value> = names
        .iter()
        .filter_map(|n| {
            let m = std::fs::metadata(out.join(n)).ok()?;
            Some(serde_json::json!({"file": n, "bytes": m.len(), "allocated": m.blocks() * 512}))
        })
        .collect();
    let doc = serde_json::json!({
        "cached": cached,
        "total-seconds": (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        "stages": stages,
        "files": sizes,
    });
    let path = out.join(outdir::BUILD_METRICS);
    let text = serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n";
    if let Err(e) = std::fs::write(&path, text) {
        tracing::warn!("writing {}: {e}", path.display());
    }
}

fn load_profile(path: &Path, p: &Printer) -> Result<Profile> {
    let step = p.step("load profile");
    let profile = profile::load(path)?;
    step.done(&format!("{} {}", profile.image.name, profile.image.version));
    Ok(profile)
}

fn locate_init(opts: &BuildOptions, profile: &Profile, p: &Printer) -> Result<Init> {
    let step = p.step("berth-init");
    let explicit = opts.init.as_deref().or(profile.init.path.as_deref());
    let init = init::locate(explicit, &opts.cache_dir)?;
    step.done(&format!(
        "{} ({})",
        init.path.display(),
        Bytes(init.bytes.len() as u64)
    ));
    Ok(init)
}

/// What the format writers derive their files from.
fn format_ctx<'a>(
    profile: &'a Profile,
    disk: &'a disk::Disk,
    verity: &root::image::Verity,
    out: &'a Path,
) -> FormatCtx<'a> {
    FormatCtx {
        out_dir: out,
        disk: &disk.path,
        image_name: &profile.image.name,
        version: &profile.image.version,
        mtime: profile.image.source_date_epoch,
        disk_size: disk.layout.disk_size().get(),
        seed: verity.info.root_hash,
        qcow2_compressed: profile.outputs.qcow2_compressed,
        ssh_user: profile.admin.as_ref().map(|a| a.user.as_str()),
    }
}

fn finish(
    out: &Path,
    record: BuildManifest,
    names: &[&str],
    known: Vec<outdir::FileSum>,
    p: &Printer,
) -> Result<BuildManifest> {
    let step = p.step("manifest.json");
    let (manifest, _) = artifacts::finish(out, record, names, known)?;
    step.done("and SHA256SUMS");
    Ok(manifest)
}

fn commit(
    out: Staging,
    names: &[&str],
    manifest: &BuildManifest,
    cached: bool,
) -> Result<BuildResult> {
    let dir = out.commit()?;
    Ok(BuildResult {
        artifacts: names.iter().map(|f| dir.join(f)).collect(),
        out_dir: dir,
        cached,
        roothash: manifest.verity.roothash.clone(),
    })
}
