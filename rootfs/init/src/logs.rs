//! Container services' logs: each service's stdout and stderr through a pipe to
//! `/var/log/berth/<name>.log`, rotated to `<name>.log.1` when it passes [`LIMIT`] (so a
//! service's logs take at most about twice that). One writer thread per running child; it ends when
//! the child's end of the pipe closes. A oneshot's lines also go to the console.

use std::fs::{self, File, OpenOptions};
use std::io::{PipeReader, Read, Write};

use berth_contract::paths::SERVICE_LOG_DIR;

use crate::warn;

/// A log file is rotated when it reaches this size.
pub const LIMIT: u64 = 1 << 20;

pub fn path(name: &str) -> String {
    format!("{SERVICE_LOG_DIR}/{name}.log")
}

fn open(p: &str) -> Option<File> {
    OpenOptions::new().create(true).append(true).open(p).ok()
}

/// Starts the thread that copies `r` to the service's log.
pub fn spawn_writer(name: &str, r: PipeReader, tee: bool) {
    let owned = name.to_string();
    let spawned = std::thread::Builder::new()
        .name(format!("log {name}"))
        .spawn(move || copy(&owned, r, tee));
    if let Err(e) = spawned {
        warn!("starting the log writer of {name}: {e}");
    }
}

fn copy(name: &str, r: PipeReader, tee: bool) {
    let _ = fs::create_dir_all(SERVICE_LOG_DIR);
    let p = path(name);
    let mut f = open(&p);
    let mut size = f
        .as_ref()
        .and_then(|f| f.metadata().ok())
        .map_or(0, |m| m.len());
    let mut r = r;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        if tee {
            for l in String::from_utf8_lossy(chunk).lines() {
                crate::say!("{name}| {l}");
            }
        }
        if size + n as u64 > LIMIT && size > 0 {
            // Rotate: the current file becomes .1 (replacing the older one).
            let _ = fs::rename(&p, format!("{p}.1"));
            f = open(&p);
            size = 0;
        }
        if let Some(file) = f.as_mut() {
            if file.write_all(chunk).is_ok() {
                size += n as u64;
            }
        }
    }
}

/// The service's log, older part first (what `berthctl logs NAME` prints).
pub fn read(name: &str) -> std::io::Result<Vec<u8>> {
    let p = path(name);
    let mut out = fs::read(format!("{p}.1")).unwrap_or_default();
    out.extend(fs::read(&p)?);
    Ok(out)
}
