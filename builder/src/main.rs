//! The `berth` command: parse, set up logging, dispatch to the verb (`cli/`), map the outcome
//! to an exit code.
//!
//! Exit codes: 0 success; 1 the work failed (the message says why); 2 bad command line (clap);
//! 130/143 interrupted by SIGINT/SIGTERM (outputs left as they were).

mod cli;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use berth::util::printer::{Mode, Printer};
use cli::{Cli, Command};

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

/// Runs the verb; `Ok(Some(sig))` when a guest's QEMU was stopped by a signal.
fn run(cli: Cli) -> Result<Option<i32>> {
    let mode = if cli.global.json {
        Mode::Json
    } else if cli.global.quiet {
        Mode::Quiet
    } else {
        Mode::Normal
    };
    let printer = Printer::new(mode);
    let cache = cli.global.cache_dir();
    match cli.command {
        Command::Build(a) => cli::build::run(a, cache, &printer)?,
        Command::Inspect(a) => cli::inspect::run(a, cache, &printer)?,
        Command::Run(a) => return cli::run::run(a, &printer),
        Command::Publish(c) => cli::publish::run(c, &printer)?,
        Command::Config(c) => cli::config::run(c, &printer)?,
        Command::Clean(a) => cli::clean::run(a, cache, &printer)?,
        Command::Lock(a) => cli::lock::run(a, cache, &printer)?,
        Command::Keygen(a) => cli::bundle::keygen(a, &printer)?,
        Command::Bundle(c) => cli::bundle::run(c, &printer)?,
        Command::Cluster(c) => {
            let code = cli::cluster::run(c, &cache, &printer)?;
            if code != 0 {
                // `cluster ssh NODE CMD` exits with the command's status.
                std::process::exit(code);
            }
        }
    }
    Ok(None)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.global.verbose);
    let json = cli.global.json;
    match run(cli) {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(sig)) => ExitCode::from(u8::try_from(128 + sig).unwrap_or(1)),
        Err(e) => {
            eprintln!("error: {e:#}");
            // The shell's convention for "stopped by SIGINT" when a publish was interrupted.
            let code = if e.downcast_ref::<berth_aws::Interrupted>().is_some() {
                130
            } else {
                1
            };
            if json {
                // With --json, a failure is a document too: what failed, the cause chain, the
                // exit code (which stays non-zero).
                let doc = serde_json::json!({
                    "error": {
                        "message": e.to_string(),
                        "causes": e.chain().skip(1).map(|c| c.to_string()).collect::<Vec<_>>(),
                        "exit-code": code,
                    }
                });
                Printer::new(Mode::Json).json(&doc);
            }
            ExitCode::from(code)
        }
    }
}
