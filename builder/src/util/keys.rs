//! Release keys for update bundles (`berth keygen NAME`): `NAME.key` (the ed25519 secret,
//! 0600) and `NAME.pub`, one line each:
//!
//! ```text
//! berth-ed25519-secret <64 hex digits>
//! berth-ed25519 <64 hex digits>
//! ```

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use ed25519_dalek::{SigningKey, VerifyingKey};

const PUB_TAG: &str = "berth-ed25519";
const SECRET_TAG: &str = "berth-ed25519-secret";
/// The environment variable naming the signing key when `--signing-key` is not given.
pub const SIGNING_KEY_ENV: &str = "BERTH_SIGNING_KEY";

fn parse_line(path: &Path, text: &str, tag: &str) -> Result<[u8; 32]> {
    let line = text.trim();
    let hexpart = line
        .strip_prefix(tag)
        .and_then(|r| r.strip_prefix(' '))
        .with_context(|| {
            format!(
                "{}: not a berth key file (expected one line \"{tag} <64 hex digits>\"; `berth keygen` writes them)",
                path.display()
            )
        })?;
    let bytes = hex::decode(hexpart.trim())
        .ok()
        .filter(|b| b.len() == 32)
        .with_context(|| format!("{}: the key is not 64 hex digits", path.display()))?;
    let mut k = [0u8; 32];
    k.copy_from_slice(&bytes);
    Ok(k)
}

pub fn read_public(path: &Path) -> Result<VerifyingKey> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("reading public key {}", path.display()))?;
    if text.trim_start().starts_with(SECRET_TAG) {
        bail!(
            "{}: this is a secret key; give the .pub file (the secret stays with whoever signs releases)",
            path.display()
        );
    }
    let k = parse_line(path, &text, PUB_TAG)?;
    VerifyingKey::from_bytes(&k)
        .map_err(|e| anyhow::anyhow!("{}: not an ed25519 public key: {e}", path.display()))
}

pub fn read_secret(path: &Path) -> Result<SigningKey> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("reading signing key {}", path.display()))?;
    Ok(SigningKey::from_bytes(&parse_line(
        path, &text, SECRET_TAG,
    )?))
}

/// The text of a public key file.
pub fn public_line(k: &VerifyingKey) -> String {
    format!("{PUB_TAG} {}\n", hex::encode(k.as_bytes()))
}

/// `berth keygen NAME`: writes `dir/NAME.key` (0600) and `dir/NAME.pub`; refuses to overwrite.
pub fn keygen(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf)> {
    ensure!(
        !name.is_empty()
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
        "key name {name:?}: use letters, digits, '.', '_' and '-' (it names NAME.key and NAME.pub)"
    );
    let (secret, public) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    );
    for p in [&secret, &public] {
        ensure!(
            !p.exists(),
            "{} exists already: keys are not overwritten (a lost release key cannot be replaced on machines that trust it)",
            p.display()
        );
    }
    let mut seed = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .context("reading /dev/urandom")?;
    let key = SigningKey::from_bytes(&seed);
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&secret)
        .with_context(|| format!("creating {}", secret.display()))?;
    f.write_all(format!("{SECRET_TAG} {}\n", hex::encode(seed)).as_bytes())?;
    f.sync_all()?;
    fs::write(&public, public_line(&key.verifying_key()))
        .with_context(|| format!("writing {}", public.display()))?;
    Ok((secret, public))
}
