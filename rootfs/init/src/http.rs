//! A small HTTP/1.1 client for update channels (`http://` only: the bundles carry their own
//! signature, and a TLS stack does not belong in PID 1's binary), and for the reboot lock's
//! JSON requests to the local etcd member. One request per connection, no redirects, a body
//! with Content-Length or up to the connection's end (chunked only for a POST's small
//! answer); connect and read timeouts bound every wait.

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

/// A response's head read: the reader at the body, its length, whether it is chunked.
struct Head {
    r: BufReader<TcpStream>,
    length: Option<u64>,
    chunked: bool,
}

/// Sends `METHOD url` (a JSON `body` for a POST) and reads the status line and headers; a
/// status other than 200 is an error naming the request.
fn request(method: &str, url: &str, body: Option<&str>, read: Duration) -> Result<Head> {
    let (host, path) = split(url)?;
    let addr = host
        .to_socket_addrs()
        .ctx(|| format!("resolving {host}"))?
        .next()
        .ok_or_else(|| crate::Error(format!("resolving {host}: no address")))?;
    let s = TcpStream::connect_timeout(&addr, CONNECT.min(read))
        .ctx(|| format!("connecting to {url}"))?;
    s.set_read_timeout(Some(read))
        .ctx(|| "setting a read timeout")?;
    s.set_write_timeout(Some(read))
        .ctx(|| "setting a write timeout")?;
    let mut w = s.try_clone().ctx(|| "cloning the socket")?;
    // One write: a server may answer and close as soon as it has the request line.
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: berthctl\r\nConnection: close\r\n"
    );
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        ));
    } else {
        req.push_str("\r\n");
    }
    w.write_all(req.as_bytes())
        .ctx(|| format!("sending the request for {url}"))?;
    let mut r = BufReader::with_capacity(1 << 20, s);
    let (length, chunked) = read_head(&mut r, &format!("{method} {url}"))?;
    Ok(Head { r, length, chunked })
}

/// The longest status, header or chunk-size line read: a server must not be able to grow the
/// memory of PID 1 (or berthctl) without bound by never sending a newline.
const MAX_LINE: u64 = 8192;
/// The most header lines read.
const MAX_HEADERS: usize = 200;

/// Reads one line of at most [`MAX_LINE`] bytes into `line` (cleared first); 0 at the end.
fn read_line(r: &mut impl BufRead, line: &mut String, what: &str) -> Result<usize> {
    line.clear();
    let n = r
        .by_ref()
        .take(MAX_LINE)
        .read_line(line)
        .ctx(|| format!("reading the response to {what}"))?;
    if n as u64 == MAX_LINE && !line.ends_with('\n') {
        fail!("{what}: a line of the response is longer than {MAX_LINE} bytes");
    }
    Ok(n)
}

/// Reads a response's status line and headers from `r` (`what` is the request, for errors):
/// the Content-Length, and whether the body is chunked. A status other than 200 is an error.
pub fn read_head(r: &mut impl BufRead, what: &str) -> Result<(Option<u64>, bool)> {
    let mut line = String::new();
    read_line(r, &mut line, what)?;
    if !line.starts_with("HTTP/1.") {
        fail!("{what}: not an HTTP response ({:?})", line.trim());
    }
    let status = line.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        fail!("{what}: the server answered {}", line.trim());
    }
    let (mut length, mut chunked) = (None, false);
    for _ in 0..=MAX_HEADERS {
        if read_line(r, &mut line, what)? == 0 {
            fail!("{what}: the connection closed within the headers");
        }
        let l = line.trim_end();
        if l.is_empty() {
            return Ok((length, chunked));
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                length = Some(
                    v.parse::<u64>()
                        .ctx(|| format!("{what}: Content-Length {v:?}"))?,
                );
            } else if k == "transfer-encoding" {
                if v.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                } else if !v.eq_ignore_ascii_case("identity") {
                    fail!("{what}: transfer encoding {v:?} is not supported");
                }
            }
        }
    }
    fail!("{what}: more than {MAX_HEADERS} header lines")
}

/// Reads a chunked body of at most `max` bytes from `r`.
pub fn read_chunked(r: &mut impl BufRead, max: u64, what: &str) -> Result<Vec<u8>> {
    let (mut raw, mut line) = (Vec::new(), String::new());
    loop {
        if read_line(r, &mut line, what)? == 0 {
            fail!("{what}: the connection closed within the chunked answer");
        }
        let size = line.trim().split(';').next().unwrap_or("");
        let size = u64::from_str_radix(size, 16)
            .ctx(|| format!("{what}: chunk size {:?}", line.trim()))?;
        if size == 0 {
            return Ok(raw);
        }
        if size > max.saturating_sub(raw.len() as u64) {
            fail!("{what}: an answer of more than {max} bytes");
        }
        let before = raw.len() as u64;
        r.by_ref()
            .take(size)
            .read_to_end(&mut raw)
            .ctx(|| format!("reading {what}"))?;
        if raw.len() as u64 - before < size {
            fail!("{what}: the connection closed within a chunk");
        }
        read_line(r, &mut line, what)?;
    }
}

/// GETs `url`; a status other than 200 is an error naming it.
pub fn get(url: &str) -> Result<Body> {
    let h = request("GET", url, None, READ)?;
    if h.chunked {
        fail!("GET {url}: a chunked response (serve files with a Content-Length)");
    }
    let inner: Box<dyn Read> = match h.length {
        Some(len) => Box::new(h.r.take(len)),
        None => Box::new(h.r),
    };
    Ok(Body {
        inner,
        length: h.length,
    })
}

/// POSTs the JSON `body` to `url` and returns the answer (at most `max` bytes, chunked or
/// not), every wait bounded by `timeout`.
pub fn post_text(url: &str, body: &str, max: u64, timeout: Duration) -> Result<String> {
    let h = request("POST", url, Some(body), timeout)?;
    let mut r = h.r;
    let raw = if h.chunked {
        read_chunked(&mut r, max, &format!("POST {url}"))?
    } else {
        if h.length.is_some_and(|l| l > max) {
            fail!("POST {url}: an answer of more than {max} bytes");
        }
        let mut raw = Vec::new();
        r.take(h.length.unwrap_or(max + 1).min(max + 1))
            .read_to_end(&mut raw)
            .ctx(|| format!("reading POST {url}"))?;
        if raw.len() as u64 > max {
            fail!("POST {url}: an answer of more than {max} bytes");
        }
        raw
    };
    String::from_utf8(raw).map_err(|_| crate::Error(format!("POST {url}: the answer is not UTF-8")))
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

    /// A hostile server: a header line without end (memory grew without bound), a chunk size
    /// of 2^64 - 1 (the length check overflowed), a response cut within its headers (taken as
    /// complete).
    #[test]
    fn hostile_responses_are_errors() {
        let mut long = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        long.resize(64 * 1024, b'a');
        let e = read_head(&mut &long[..], "GET /x").unwrap_err();
        assert!(e.0.contains("longer than 8192 bytes"), "{e}");
        let e = read_head(
            &mut &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"[..],
            "GET /x",
        );
        assert!(e.unwrap_err().0.contains("closed within the headers"));
        let e = read_chunked(&mut &b"ffffffffffffffff\r\nab"[..], 100, "POST /x").unwrap_err();
        assert!(e.0.contains("more than 100 bytes"), "{e}");
        let e = read_chunked(&mut &b"5\r\nab"[..], 100, "POST /x").unwrap_err();
        assert!(e.0.contains("closed within a chunk"), "{e}");
        let mut ok = &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1;e=x\r\nc\r\n0\r\n\r\n"[..];
        assert_eq!(read_head(&mut ok, "POST /x").unwrap(), (None, true));
        assert_eq!(read_chunked(&mut ok, 100, "POST /x").unwrap(), b"abc");
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
