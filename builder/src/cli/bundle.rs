//! `berth keygen` and `berth bundle inspect|verify`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use berth::update;
use berth::util::printer::Printer;
use berth_contract::bundle::Source;
use clap::{Args, Subcommand};

/// Make a release key pair for signing update bundles: NAME.key (secret, mode 0600; keep it
/// off the machines) and NAME.pub (name it in a profile's `[update] public-key`), in the
/// current directory. Existing files are never overwritten.
#[derive(Args)]
pub struct KeygenArgs {
    /// The key's name (NAME.key, NAME.pub).
    #[arg(default_value = "berth")]
    name: String,
}

pub fn keygen(a: KeygenArgs, printer: &Printer) -> Result<()> {
    let (secret, public) = update::keygen(std::path::Path::new("."), &a.name)?;
    printer.info(&format!(
        "wrote {} (secret: keep it safe) and {} (put it in the profile: [update] public-key = \"{}\")",
        secret.display(),
        public.display(),
        public.display()
    ));
    printer.result(&public.display().to_string());
    printer.json(&serde_json::json!({"secret": secret, "public": public}));
    Ok(())
}

/// Look into update bundles before they are published.
#[derive(Subcommand)]
pub enum BundleCommand {
    /// Show what a bundle holds: image, version, payloads and their chunks, signature.
    Inspect(InspectArgs),
    /// Check a bundle as a machine would: the signature against KEY, every chunk against the
    /// signed header, the end of the file. Exits non-zero, saying what is wrong.
    Verify(VerifyArgs),
}

#[derive(Args)]
pub struct InspectArgs {
    bundle: PathBuf,
}

#[derive(Args)]
pub struct VerifyArgs {
    bundle: PathBuf,
    /// The release key's public half (NAME.pub) the image trusts.
    #[arg(long, value_name = "PUB", required_unless_present = "allow_unsigned")]
    key: Option<PathBuf>,
    /// Check an unsigned bundle, as an image with `update.allow-unsigned` would.
    #[arg(long)]
    allow_unsigned: bool,
}

pub fn run(c: BundleCommand, printer: &Printer) -> Result<()> {
    match c {
        BundleCommand::Inspect(a) => {
            let what = a.bundle.display().to_string();
            let mut f =
                std::fs::File::open(&a.bundle).with_context(|| format!("opening {what}"))?;
            let o = update::open(&mut f, &what)?;
            let h = &o.header;
            let payloads: Vec<serde_json::Value> = h
                .payloads
                .iter()
                .map(|p| {
                    let count =
                        |f: fn(&Source) -> bool| p.chunks.iter().filter(|c| f(&c.source)).count();
                    let data = count(|s| *s == Source::Data);
                    let running = count(|s| *s == Source::Running);
                    let bytes: u64 = (0..p.chunks.len())
                        .map(|i| p.data_len(i, h.chunk_size))
                        .sum();
                    serde_json::json!({
                        "kind": p.kind.name(), "size": p.size, "chunks": p.chunks.len(),
                        "chunks-in-bundle": data, "chunks-from-running-slot": running,
                        "chunks-of-pieces": p.chunks.len() - data - running, "data-bytes": bytes,
                    })
                })
                .collect();
            let signer = o.signature.as_ref().map(|(_, k)| hex::encode(k.as_bytes()));
            let doc = serde_json::json!({
                "image": h.image, "version": h.version, "architecture": h.arch,
                "roothash": hex::encode(h.roothash),
                "delta-from-roothash": h.base.map(hex::encode),
                "cmdline": h.cmdline, "tries": h.tries, "chunk-size": h.chunk_size,
                "data-bytes": h.data_bytes(), "signed-by": signer, "payloads": payloads,
            });
            printer.json(&doc);
            printer.result(&format!(
                "{} {} ({}), roothash {}, {}{}",
                h.image,
                h.version,
                h.arch,
                hex::encode(h.roothash),
                match &signer {
                    Some(k) => format!("signed by {k}"),
                    None => "unsigned".into(),
                },
                match h.base {
                    Some(b) => format!(", delta from roothash {}", hex::encode(b)),
                    None => String::new(),
                }
            ));
            for p in &payloads {
                printer.result(&format!(
                    "  {:<7} {:>11} bytes  {} chunks in the bundle, {} from the running slot, {} of pieces ({} bytes carried)",
                    p["kind"].as_str().unwrap_or(""),
                    p["size"],
                    p["chunks-in-bundle"],
                    p["chunks-from-running-slot"],
                    p["chunks-of-pieces"],
                    p["data-bytes"]
                ));
            }
            Ok(())
        }
        BundleCommand::Verify(a) => {
            let key = a.key.as_deref().map(update::read_public).transpose()?;
            let (h, n) = update::verify(&a.bundle, key.as_ref(), a.allow_unsigned)?;
            printer.result(&format!(
                "{}: good: {} {}, {} bytes of chunks checked",
                a.bundle.display(),
                h.image,
                h.version,
                n
            ));
            printer.json(&serde_json::json!({"bundle": a.bundle, "image": h.image, "version": h.version, "checked-bytes": n}));
            Ok(())
        }
    }
}
