//! A recording, fault-injecting HTTP/1.1 proxy on 127.0.0.1 in front of moto: it keeps every
//! request berth sends (so tests can check parameters moto ignores) and can answer chosen
//! requests with an error instead of forwarding them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The API action: EC2's `Action=`, or the EBS operation from method and path.
    pub action: String,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Form parameters of an EC2 Query request, decoded.
    pub fn form(&self) -> Vec<(String, String)> {
        String::from_utf8_lossy(&self.body)
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect()
    }

    pub fn param(&self, name: &str) -> Option<String> {
        self.form()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn action_of(method: &str, path: &str, body: &[u8]) -> String {
    if let Some(a) = String::from_utf8_lossy(body)
        .split('&')
        .find_map(|kv| kv.strip_prefix("Action="))
    {
        return a.to_string();
    }
    let path = path.split('?').next().unwrap_or(path);
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segs.as_slice()) {
        ("POST", ["snapshots"]) => "StartSnapshot",
        ("PUT", ["snapshots", _, "blocks", _]) => "PutSnapshotBlock",
        ("GET", ["snapshots", _, "blocks", _]) => "GetSnapshotBlock",
        ("GET", ["snapshots", _, "blocks"]) => "ListSnapshotBlocks",
        ("POST", ["snapshots", "completion", _]) => "CompleteSnapshot",
        _ => "Unknown",
    }
    .to_string()
}

/// An injected answer.
pub struct Injected {
    pub status: u16,
    pub content_type: &'static str,
    pub extra_headers: Vec<(String, String)>,
    pub body: String,
}

impl Injected {
    /// An EC2-style XML error.
    pub fn ec2(status: u16, code: &str, message: &str) -> Injected {
        Injected {
            status,
            content_type: "text/xml",
            extra_headers: vec![],
            body: format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>injected</RequestID></Response>"),
        }
    }

    /// An EBS-style JSON error.
    pub fn ebs(status: u16, code: &str, message: &str) -> Injected {
        Injected {
            status,
            content_type: "application/json",
            extra_headers: vec![("x-amzn-ErrorType".into(), code.into())],
            body: format!("{{\"Message\":\"{message}\"}}"),
        }
    }
}

/// Decides, per request, whether to inject an answer; gets the request and how many earlier
/// requests had the same action.
pub type Fault = Box<dyn Fn(&Recorded, usize) -> Option<Injected> + Send + Sync>;

pub struct Proxy {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<Recorded>>>,
    fault: Arc<Mutex<Option<Fault>>>,
    delay: Arc<Mutex<Duration>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let fault: Arc<Mutex<Option<Fault>>> = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let delay = Arc::new(Mutex::new(Duration::ZERO));
        let thread = {
            let (log, fault, stop, delay) =
                (log.clone(), fault.clone(), stop.clone(), delay.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            let (log, fault) = (log.clone(), fault.clone());
                            let pause = *delay.lock().unwrap();
                            std::thread::spawn(move || {
                                std::thread::sleep(pause);
                                let _ = serve(conn, upstream, &log, &fault);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
        };
        Proxy {
            addr,
            log,
            fault,
            delay,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_fault(&self, f: Option<Fault>) {
        *self.fault.lock().unwrap() = f;
    }

    /// Holds each request this long before handling it: a stand-in for a WAN round trip.
    pub fn set_delay(&self, d: Duration) {
        *self.delay.lock().unwrap() = d;
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    pub fn of(&self, action: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.action == action)
            .collect()
    }

    pub fn clear(&self) {
        self.log.lock().unwrap().clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn serve(
    mut conn: TcpStream,
    upstream: SocketAddr,
    log: &Mutex<Vec<Recorded>>,
    fault: &Mutex<Option<Fault>>,
) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let rec = Recorded {
        action: action_of(&method, &path, &body),
        method,
        path,
        headers,
        body,
    };
    let (earlier, injected) = {
        let mut log = log.lock().unwrap();
        let earlier = log.iter().filter(|r| r.action == rec.action).count();
        log.push(rec.clone());
        (
            earlier,
            fault
                .lock()
                .unwrap()
                .as_ref()
                .and_then(|f| f(&rec, earlier)),
        )
    };
    let _ = earlier;
    if let Some(inj) = injected {
        let mut resp = format!(
            "HTTP/1.1 {} Injected\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            inj.status,
            inj.content_type,
            inj.body.len()
        );
        for (k, v) in &inj.extra_headers {
            resp.push_str(&format!("{k}: {v}\r\n"));
        }
        resp.push_str("\r\n");
        resp.push_str(&inj.body);
        conn.write_all(resp.as_bytes())?;
        return Ok(());
    }
    // Forward with Connection: close, read the whole answer, pass it back closing too.
    let mut up = TcpStream::connect(upstream)?;
    let mut out = format!("{request_line}\r\n");
    for (k, v) in &rec.headers {
        if !k.eq_ignore_ascii_case("connection") {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    up.write_all(out.as_bytes())?;
    up.write_all(&rec.body)?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    let (resp_head, resp_body) = match find(&answer, b"\r\n\r\n") {
        Some(i) => (
            String::from_utf8_lossy(&answer[..i]).into_owned(),
            &answer[i + 4..],
        ),
        None => (String::from_utf8_lossy(&answer).into_owned(), &[][..]),
    };
    let mut head = String::new();
    for (i, line) in resp_head.split("\r\n").enumerate() {
        if i > 0 && line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    conn.write_all(head.as_bytes())?;
    conn.write_all(resp_body)?;
    Ok(())
}
