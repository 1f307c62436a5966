//! The update channel as the nodes of a `berth cluster up --channel DIR` see it: QEMU's
//! user network hands each guest connection to `http://10.0.2.100:8080/` to a fresh
//! `berth cluster serve-channel DIR` on its stdin and stdout (`guestfwd=…-cmd:…`), which
//! answers one GET or HEAD for a file in DIR. No socket listens on the host, so nothing but
//! the cluster's own nodes can reach the channel, and the nodes reach nothing else.

use std::fs;
use std::io::{self, BufRead, Read, Write};
use std::path::{Component, Path};

use anyhow::{Context, Result};

/// Where the nodes find the channel (inside QEMU's user network, 10.0.2.0/24).
pub const GUEST_ADDR: [u8; 4] = [10, 0, 2, 100];
pub const GUEST_PORT: u16 = 8080;

pub fn guest_url() -> String {
    let [a, b, c, d] = GUEST_ADDR;
    format!("http://{a}.{b}.{c}.{d}:{GUEST_PORT}/")
}

/// The file under `dir` a request path names: plain names only (no `..`, no absolute path,
/// no query), a regular file. `None`: 404.
fn resolve(dir: &Path, path: &str) -> Option<std::path::PathBuf> {
    let rel = path.strip_prefix('/')?;
    if rel.is_empty() || rel.contains(['?', '#', '%', '\\']) {
        return None;
    }
    let rel = Path::new(rel);
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    let p = dir.join(rel);
    // A symlink out of the directory is not served either.
    let (real, root) = (fs::canonicalize(&p).ok()?, fs::canonicalize(dir).ok()?);
    (real.starts_with(&root) && real.is_file()).then_some(real)
}

fn reply(out: &mut dyn Write, status: &str, body: &str) -> io::Result<()> {
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    out.flush()
}

/// Answers the one request on `input` from the files in `dir`.
pub fn serve_connection(dir: &Path, input: &mut dyn BufRead, out: &mut dyn Write) -> Result<()> {
    let mut line = String::new();
    (&mut *input)
        .take(8192)
        .read_line(&mut line)
        .context("reading the request line")?;
    // The headers: read (bounded) and ignored.
    let mut n = 0;
    loop {
        let mut h = String::new();
        if (&mut *input).take(8192).read_line(&mut h)? == 0 || h.trim_end().is_empty() {
            break;
        }
        n += 1;
        if n > 100 {
            reply(out, "400 Bad Request", "too many header lines\n")?;
            return Ok(());
        }
    }
    let mut f = line.split_whitespace();
    let (method, path, version) = (f.next(), f.next(), f.next());
    let (Some(method), Some(path), Some(v)) = (method, path, version) else {
        reply(out, "400 Bad Request", "not an HTTP request\n")?;
        return Ok(());
    };
    if !v.starts_with("HTTP/1.") {
        reply(out, "400 Bad Request", "not an HTTP/1 request\n")?;
        return Ok(());
    }
    if method != "GET" && method != "HEAD" {
        reply(out, "405 Method Not Allowed", "GET or HEAD\n")?;
        return Ok(());
    }
    let Some(file) = resolve(dir, path) else {
        reply(
            out,
            "404 Not Found",
            &format!("{path}: no such file in the channel\n"),
        )?;
        return Ok(());
    };
    let mut fh = fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?;
    let len = fh.metadata()?.len();
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    )?;
    if method == "GET" {
        io::copy(&mut fh, out).with_context(|| format!("sending {}", file.display()))?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(dir: &Path, req: &str) -> String {
        let mut out = Vec::new();
        serve_connection(dir, &mut io::Cursor::new(req.as_bytes()), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn serves_files_of_the_channel_and_nothing_else() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("channel");
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("channel.json"), "{}\n").unwrap();
        fs::write(dir.join("sub/x.bundle"), "bytes").unwrap();
        fs::write(t.path().join("secret"), "no").unwrap();
        std::os::unix::fs::symlink(t.path().join("secret"), dir.join("link")).unwrap();

        let r = ask(
            &dir,
            "GET /channel.json HTTP/1.1\r\nHost: 10.0.2.100\r\n\r\n",
        );
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(
            r.contains("Content-Length: 3\r\n") && r.ends_with("\r\n\r\n{}\n"),
            "{r}"
        );
        let r = ask(&dir, "GET /sub/x.bundle HTTP/1.1\r\n\r\n");
        assert!(r.ends_with("\r\n\r\nbytes"), "{r}");
        let r = ask(&dir, "HEAD /sub/x.bundle HTTP/1.1\r\n\r\n");
        assert!(
            r.contains("Content-Length: 5\r\n") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
        for bad in [
            "/../secret",
            "/sub/../../secret",
            "/link",
            "/",
            "/sub",
            "/missing",
            "//etc/passwd",
            "/channel.json?x=1",
        ] {
            let r = ask(&dir, &format!("GET {bad} HTTP/1.1\r\n\r\n"));
            assert!(r.starts_with("HTTP/1.1 404 "), "{bad}: {r}");
        }
        assert!(ask(&dir, "POST /channel.json HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405 "));
        assert!(ask(&dir, "hello\r\n\r\n").starts_with("HTTP/1.1 400 "));
        assert!(ask(&dir, "").starts_with("HTTP/1.1 400 "));
        assert_eq!(guest_url(), "http://10.0.2.100:8080/");
    }
}
