//! EC2's instance metadata service, IMDSv2: a session token first (`PUT /latest/api/token`
//! with the TTL header), then every GET with the token. Plain HTTP/1.1 to 169.254.169.254:80,
//! each request bounded in time. As Ignition does: a reply below 500 is final (404 = absent),
//! connection failures and 5xx are retried with backoff until the deadline.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::{fail, Result};

const ADDR: &str = "169.254.169.254:80";
const HOST: &str = "169.254.169.254";
/// The longest TTL IMDS grants (6 h); the token is used within seconds anyway.
const TOKEN_TTL: &str = "21600";
/// How long the metadata service may take to answer at all (it can lag the NIC at boot).
const DEADLINE: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest reply read (user-data is at most 16 KiB on EC2; configs at most 256 KiB).
const MAX_REPLY: u64 = 512 * 1024;

/// Whether this machine is an EC2 instance (Nitro: DMI vendor; Xen: the hypervisor UUID).
pub fn on_ec2() -> bool {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    read("/sys/class/dmi/id/sys_vendor").contains("Amazon EC2")
        || read("/sys/class/dmi/id/bios_vendor").contains("Amazon EC2")
        || read("/sys/hypervisor/uuid").starts_with("ec2")
}

/// A reply: status and body.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Parses an HTTP/1.x reply (status line, headers, body by Content-Length or to the end).
pub fn parse_reply(raw: &[u8]) -> Option<Reply> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status: u16 = parts.next()?.parse().ok()?;
    let mut body = raw[end + 4..].to_vec();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                let n: usize = v.trim().parse().ok()?;
                if body.len() < n {
                    return None;
                }
                body.truncate(n);
            }
        }
    }
    Some(Reply { status, body })
}

fn once(method: &str, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Reply> {
    let addr: SocketAddr = ADDR.parse().map_err(std::io::Error::other)?;
    let mut s = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT)?;
    s.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    s.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "PUT" {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.take(MAX_REPLY).read_to_end(&mut raw)?;
    parse_reply(&raw).ok_or_else(|| std::io::Error::other("not an HTTP reply"))
}

/// One request, retried on connection errors and 5xx until the deadline.
fn request(method: &str, path: &str, headers: &[(&str, &str)], deadline: Instant) -> Result<Reply> {
    let mut wait = Duration::from_millis(100);
    loop {
        let why = match once(method, path, headers) {
            Ok(r) if r.status < 500 => return Ok(r),
            Ok(r) => format!("HTTP {}", r.status),
            Err(e) => e.to_string(),
        };
        if Instant::now() + wait > deadline {
            fail!(
                "{method} http://{HOST}{path}: {why} (gave up after {}s)",
                DEADLINE.as_secs()
            );
        }
        std::thread::sleep(wait);
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// A session with the metadata service.
pub struct Session {
    token: String,
    deadline: Instant,
}

impl Session {
    pub fn open() -> Result<Session> {
        let deadline = Instant::now() + DEADLINE;
        let r = request(
            "PUT",
            "/latest/api/token",
            &[("X-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL)],
            deadline,
        )?;
        if r.status != 200 {
            fail!(
                "PUT http://{HOST}/latest/api/token: HTTP {} (IMDSv2 refused a session token)",
                r.status
            );
        }
        let token = String::from_utf8(r.body)
            .unwrap_or_default()
            .trim()
            .to_string();
        if token.is_empty() || token.contains(['\r', '\n']) {
            fail!("PUT http://{HOST}/latest/api/token: not a token");
        }
        Ok(Session { token, deadline })
    }

    /// `GET path` with the token: `None` for 404 (absent), the text for 200, an error else.
    pub fn get(&self, path: &str) -> Result<Option<String>> {
        let r = request(
            "GET",
            path,
            &[("X-aws-ec2-metadata-token", &self.token)],
            self.deadline.max(Instant::now() + REQUEST_TIMEOUT),
        )?;
        match r.status {
            200 => String::from_utf8(r.body)
                .map(Some)
                .map_err(|_| crate::Error(format!("GET http://{HOST}{path}: not UTF-8 text"))),
            404 => Ok(None),
            s => fail!("GET http://{HOST}{path}: HTTP {s}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_with_and_without_length() {
        let r = parse_reply(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\nhello, and more")
            .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        let r = parse_reply(b"HTTP/1.0 404 Not Found\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body.len()), (404, 0));
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").is_none());
        assert!(parse_reply(b"SSH-2.0-x\r\n\r\n").is_none());
        assert!(parse_reply(b"HTTP/1.1 200 OK").is_none());
    }
}
