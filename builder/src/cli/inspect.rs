//! `berth inspect`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use berth::fetch::{self, lock};
use berth::util::printer::{Mode, Printer};
use berth::{inspect, profile, root};

/// Show the fully resolved profile (after `extends`) and what the root filesystem will hold.
#[derive(Args)]
pub struct InspectArgs {
    #[arg(default_value = super::DEFAULT_PROFILE)]
    profile: PathBuf,
    /// Also fetch the packages, list every file of the root filesystem, and show its biggest
    /// contributors by package and by directory (a kernel built from source is built, or taken
    /// from the cache, first).
    #[arg(long)]
    files: bool,
}

pub fn run(a: InspectArgs, cache: PathBuf, printer: &Printer) -> Result<()> {
    let p = profile::load(&a.profile)?;
    let lock_path = lock::path_for(&p.path);
    let lock = if lock_path.is_file() {
        Some(lock::Lock::read(&lock_path)?)
    } else {
        None
    };
    let rootfs = if a.files {
        let lock = fetch::lock_for(&p, &cache, printer)?;
        let init = root::init::locate(p.init.path.as_deref(), &cache)?;
        let mut packages = fetch::packages(&p, &lock, &cache, printer)?;
        berth::kernel::stage(&p, &mut packages, &cache, printer)?;
        Some(root::assemble(&p, &packages, &init, printer)?)
    } else {
        None
    };
    if printer.mode() == Mode::Json {
        printer.json(&inspect::document(
            &p,
            lock.as_ref(),
            &lock_path,
            rootfs.as_ref(),
        ));
    } else {
        printer.result(&inspect::render(
            &p,
            lock.as_ref(),
            &lock_path,
            rootfs.as_ref(),
        ));
    }
    Ok(())
}
