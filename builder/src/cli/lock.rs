//! `berth lock`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use berth::fetch::{self, lock};
use berth::profile;
use berth::util::printer::Printer;

/// Resolve the profile's packages to exact versions + SHA-256 and write the lock file.
#[derive(Args)]
pub struct LockArgs {
    #[arg(default_value = super::DEFAULT_PROFILE)]
    profile: PathBuf,
    /// Only check that the lock is current; exit 1 if resolving now gives another lock.
    #[arg(long)]
    check: bool,
}

pub fn run(a: LockArgs, cache: PathBuf, printer: &Printer) -> Result<()> {
    let p = profile::load(&a.profile)?;
    let step = printer.step("resolve packages");
    berth::cache::check_dir(&cache)?;
    let l = fetch::resolve_lock(&p, &cache)?;
    step.done(&format!("{} packages", l.packages.len()));
    let path = lock::path_for(&p.path);
    if a.check {
        fetch::check_lock(&p, &l, &a.profile)?;
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
    Ok(())
}
