//! `berth config check`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use berth::util::printer::Printer;

/// Machine configs: the per-machine settings a berth image applies on first boot.
#[derive(Subcommand)]
pub enum ConfigCommand {
    Check(CheckArgs),
}

/// Check a machine config the way a machine would read it: strict JSON, known keys only,
/// values that can be applied. Errors are FILE:LINE:COL, the key, and what would be valid;
/// the exit code is 1 then.
///
/// The schema (version 1): hostname; network (per NIC: "interface", "dhcp": true or a static
/// "address": "a.b.c.d/prefix", "gateway", "dns"); ssh-authorized-keys; files under /etc or
/// /var ("path", "content", "mode", "uid", "gid"). See README.md, "Machine configs".
#[derive(Args)]
pub struct CheckArgs {
    /// The config file (JSON).
    file: PathBuf,
}

pub fn run(c: ConfigCommand, printer: &Printer) -> Result<()> {
    match c {
        ConfigCommand::Check(a) => {
            let cfg = berth::config::read(&a.file)?;
            printer.info(&berth::config::summary(&cfg));
            printer.result(&format!("{}: ok", a.file.display()));
            printer.json(&serde_json::json!({ "file": a.file, "ok": true }));
            Ok(())
        }
    }
}
