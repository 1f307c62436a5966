//! `berth clean`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use berth::util::printer::Printer;

/// Remove cached build results (and the initramfs images and zstd copies of packages made for
/// them), keeping the downloaded packages and the berth-init build
/// unless --all. Prints what was freed. (Each build keeps only the 16 most recently used
/// results, or BERTH_CACHE_KEEP, and drops those unused for 30 days.)
#[derive(Args)]
pub struct CleanArgs {
    /// Also remove the package cache (debs, apt lists) and the berth-init build.
    #[arg(long)]
    all: bool,
}

pub fn run(a: CleanArgs, cache: PathBuf, printer: &Printer) -> Result<()> {
    let freed = berth::cache::clean(&cache, a.all)?;
    printer.info(&format!(
        "removed {} from {}",
        berth::units::Bytes(freed),
        cache.display()
    ));
    printer.result(&cache.display().to_string());
    printer.json(&serde_json::json!({ "cache-dir": cache, "freed-bytes": freed }));
    Ok(())
}
