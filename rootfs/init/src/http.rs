//! A small HTTP/1.1 client for update channels (`http://` only: the bundles carry their own
//! signature, and a TLS stack does not belong in PID 1's binary). One GET, no redirects, a
//! body with Content-Length or up to the connection's end; connect and read timeouts bound
//! every wait.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::{fail, Ctx, Result};

const CONNECT: Duration = Duration::from_secs(10);
const READ: Duration = Duration::from_secs(60);

/// (host:port, path) of an `http://` URL.
fn split(url: &str) -> Result<(String, String)> {
    if let Err(m) = berth_contract::channel::check_url(url) {
        fail!("{m}");
    }
    let rest = &url["http://".len()..];
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let host = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    Ok((host, path.to_string()))
}

/// A response body being read.
pub struct Body {
    inner: Box<dyn Read>,
    pub length: Option<u64>,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

/// GETs `url`; a status other than 200 is an error naming it.
pub fn get(url: &str) -> Result<Body> {
    let (host, path) = split(url)?;
    let addr = host
        .to_socket_addrs()
        .ctx(|| format!("resolving {host}"))?
        .next()
        .ok_or_else(|| crate::Error(format!("resolving {host}: no address")))?;
    let s = TcpStream::connect_timeout(&addr, CONNECT).ctx(|| format!("connecting to {url}"))?;
    s.set_read_timeout(Some(READ))
        .ctx(|| "setting a read timeout")?;
    s.set_write_timeout(Some(READ))
        .ctx(|| "setting a write timeout")?;
    let mut w = s.try_clone().ctx(|| "cloning the socket")?;
    // One write: a server may answer and close as soon as it has the request line.
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: berthctl\r\nConnection: close\r\n\r\n"
    );
    w.write_all(req.as_bytes())
        .ctx(|| format!("sending the request for {url}"))?;
    let mut r = BufReader::with_capacity(1 << 20, s);
    let mut line = String::new();
    r.read_line(&mut line)
        .ctx(|| format!("reading the response to GET {url}"))?;
    let status = line.split_whitespace().nth(1).unwrap_or("");
    if !line.starts_with("HTTP/1.") {
        fail!("GET {url}: not an HTTP response ({:?})", line.trim());
    }
    if status != "200" {
        fail!("GET {url}: the server answered {}", line.trim());
    }
    let mut length = None;
    let mut n = 0;
    loop {
        line.clear();
        r.read_line(&mut line)
            .ctx(|| format!("reading the headers of {url}"))?;
        n += 1;
        if n > 200 {
            fail!("GET {url}: more than 200 header lines");
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                length = Some(
                    v.parse::<u64>()
                        .ctx(|| format!("GET {url}: Content-Length {v:?}"))?,
                );
            } else if k == "transfer-encoding" && !v.eq_ignore_ascii_case("identity") {
                fail!("GET {url}: transfer encoding {v:?} is not supported (serve files with a Content-Length)");
            }
        }
    }
    let inner: Box<dyn Read> = match length {
        Some(len) => Box::new(r.take(len)),
        None => Box::new(r),
    };
    Ok(Body { inner, length })
}

/// GETs a small document (an index) whole, bounded to `max` bytes.
pub fn get_text(url: &str, max: u64) -> Result<String> {
    let b = get(url)?;
    if b.length.is_some_and(|l| l > max) {
        fail!(
            "GET {url}: {} bytes, more than the {max} an index may have",
            b.length.unwrap_or(0)
        );
    }
    let mut text = String::new();
    b.take(max + 1)
        .read_to_string(&mut text)
        .ctx(|| format!("reading {url}"))?;
    if text.len() as u64 > max {
        fail!("GET {url}: more than the {max} bytes an index may have");
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        assert_eq!(
            split("http://10.0.2.100:8080/ch/channel.json").unwrap(),
            ("10.0.2.100:8080".into(), "/ch/channel.json".into())
        );
        assert_eq!(
            split("http://example").unwrap(),
            ("example:80".into(), "/".into())
        );
        assert!(split("https://x/").is_err());
    }

    #[test]
    fn reads_a_response_from_a_local_server() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            for reply in [
                "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello and more",
                "HTTP/1.0 404 Not Found\r\n\r\n",
            ] {
                let (mut c, _) = l.accept().unwrap();
                let (mut req, mut buf) = (Vec::new(), [0u8; 1024]);
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = c.read(&mut buf).unwrap();
                    assert!(n > 0, "the request ended early");
                    req.extend_from_slice(&buf[..n]);
                }
                assert!(req.starts_with(b"GET /x HTTP/1.1\r\nHost: 127.0.0.1:"));
                c.write_all(reply.as_bytes()).unwrap();
            }
        });
        let url = format!("http://127.0.0.1:{port}/x");
        assert_eq!(get_text(&url, 100).unwrap(), "hello");
        let e = get_text(&url, 100).unwrap_err();
        assert!(e.0.contains("404 Not Found"), "{e}");
        t.join().unwrap();
    }
}
