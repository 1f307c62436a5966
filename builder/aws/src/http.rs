//! The one door to AWS: every request is signed here, sent with ureq, retried here on
//! throttling, 5xx and dropped connections, and every failure becomes an [`ApiError`] naming the
//! API action, the HTTP status and AWS's error code and message.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::config::{Credentials, Endpoint};
use crate::sigv4;
use crate::time::AmzTime;

/// How failed calls are retried.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubled each time, with full jitter.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Bound on one attempt, from connecting to the last byte of the answer.
    pub attempt_timeout: Duration,
    /// Bound on a call, all its attempts and pauses included: no retry starts after it.
    pub total_timeout: Duration,
}

impl Default for RetryPolicy {
    /// 8 attempts spaced 0.2 s .. 20 s: rides out EBS direct's per-snapshot throttling
    /// (PutSnapshotBlock is limited per snapshot) and short 5xx bursts. An attempt gets 60 s
    /// (a 512 KiB block at under 10 KiB/s is not worth waiting for) and a call 3 minutes: an
    /// endpoint that accepts connections and never answers is given up on within that, where
    /// it used to take 8 × 120 s of read timeouts.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(20),
            attempt_timeout: Duration::from_secs(60),
            total_timeout: Duration::from_secs(180),
        }
    }
}

impl RetryPolicy {
    /// For deleting what a failed or interrupted run created: a few quick tries, so that an
    /// endpoint that stopped answering does not hold the exit for long.
    pub fn cleanup() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            attempt_timeout: Duration::from_secs(15),
            total_timeout: Duration::from_secs(30),
            ..RetryPolicy::default()
        }
    }
}

/// How often a waiting call looks at the cancel flag.
const CANCEL_POLL: Duration = Duration::from_millis(100);
/// A call still waiting after this says so (progress message or log), and again as often.
const SLOW_NOTE: Duration = Duration::from_secs(10);

/// A failed AWS call. `status` is `None` when no HTTP response came back.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub action: &'static str,
    pub endpoint: String,
    pub status: Option<u16>,
    pub code: String,
    pub message: String,
    pub attempts: u32,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_interrupted() {
            return write!(
                f,
                "{} to {} stopped by a signal",
                self.action, self.endpoint
            );
        }
        match self.status {
            Some(s) => write!(f, "{} failed with HTTP {s}: ", self.action)?,
            None => write!(
                f,
                "{} got no response from {}: ",
                self.action, self.endpoint
            )?,
        }
        if !self.code.is_empty() {
            write!(f, "{}: ", self.code)?;
        }
        write!(f, "{}", self.message)?;
        if self.attempts > 1 {
            write!(f, " (after {} attempts)", self.attempts)?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

const INTERRUPTED: &str = "berth.Interrupted";

const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "SlowDown",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeoutException",
];

impl ApiError {
    /// The call was stopped by the client's cancel flag (Ctrl-C, SIGTERM).
    pub fn interrupted(call: &Call, attempts: u32) -> ApiError {
        ApiError {
            action: call.action,
            endpoint: call.endpoint.to_string(),
            status: None,
            code: INTERRUPTED.into(),
            message: "stopped: interrupted".into(),
            attempts,
        }
    }

    pub fn is_interrupted(&self) -> bool {
        self.code == INTERRUPTED && self.status.is_none()
    }

    fn retryable(&self, transport_retryable: bool) -> bool {
        match self.status {
            None => transport_retryable,
            Some(s) => s >= 500 || s == 429 || THROTTLING_CODES.contains(&self.code.as_str()),
        }
    }
}

/// A signed request about to be sent.
pub struct Call<'a> {
    pub action: &'static str,
    pub service: &'static str,
    pub region: &'a str,
    pub endpoint: &'a Endpoint,
    pub method: &'static str,
    pub path: String,
    pub query: Vec<(String, String)>,
    /// Extra headers to send and sign (besides host, x-amz-date and the token).
    pub headers: Vec<(String, String)>,
    pub body: &'a [u8],
    /// SHA-256 of `body` when the caller already has it (block uploads).
    pub body_sha256: Option<[u8; 32]>,
}

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Response bodies larger than this are refused (the largest legitimate one is a 512 KiB
/// block).
const MAX_BODY: u64 = 16 << 20;

#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    creds: Credentials,
    pub retry: RetryPolicy,
    /// Once set, a call in progress gives up within [`CANCEL_POLL`] (its attempt is left to
    /// end by its own timeout on a detached thread) and no new one starts.
    cancel: Option<Arc<AtomicBool>>,
    /// Where a slow call says what it is waiting for.
    progress: Option<indicatif::ProgressBar>,
}

/// A [`Call`] with everything owned, for an attempt on its own thread.
struct OwnedCall {
    action: &'static str,
    service: &'static str,
    region: String,
    endpoint: Endpoint,
    method: &'static str,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    body_sha256: Option<[u8; 32]>,
}

impl OwnedCall {
    fn new(c: &Call) -> OwnedCall {
        OwnedCall {
            action: c.action,
            service: c.service,
            region: c.region.to_string(),
            endpoint: c.endpoint.clone(),
            method: c.method,
            path: c.path.clone(),
            query: c.query.clone(),
            headers: c.headers.clone(),
            body: c.body.to_vec(),
            body_sha256: c.body_sha256,
        }
    }

    fn call(&self) -> Call<'_> {
        Call {
            action: self.action,
            service: self.service,
            region: &self.region,
            endpoint: &self.endpoint,
            method: self.method,
            path: self.path.clone(),
            query: self.query.clone(),
            headers: self.headers.clone(),
            body: &self.body,
            body_sha256: self.body_sha256,
        }
    }
}

impl Client {
    pub fn new(creds: Credentials, retry: RetryPolicy, connections: usize) -> Client {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout(retry.attempt_timeout)
            .max_idle_connections_per_host(connections.max(1) + 2)
            .redirects(0)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .build();
        Client {
            agent,
            creds,
            retry,
            cancel: None,
            progress: None,
        }
    }

    /// Calls give up (with [`ApiError::interrupted`]) once `flag` is set.
    pub fn with_cancel(mut self, flag: Arc<AtomicBool>) -> Client {
        self.cancel = Some(flag);
        self
    }

    /// A call waiting longer than 10 s says so in `bar`'s message.
    pub fn with_progress(mut self, bar: Option<indicatif::ProgressBar>) -> Client {
        self.progress = bar;
        self
    }

    fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::SeqCst))
    }

    /// Sends `call`, retrying per the policy within its total time; a non-2xx answer is an
    /// [`ApiError`], and so is a cancelled call ([`ApiError::is_interrupted`]).
    pub fn send(&self, call: &Call) -> Result<Response, ApiError> {
        let start = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            if self.cancelled() {
                return Err(ApiError::interrupted(call, attempt - 1));
            }
            match self.attempt(call, attempt, start) {
                Ok(r) => return Ok(r),
                Err((mut e, transport_retryable)) => {
                    e.attempts = attempt;
                    if e.is_interrupted()
                        || attempt >= self.retry.max_attempts
                        || !e.retryable(transport_retryable)
                    {
                        return Err(e);
                    }
                    let delay = backoff(&self.retry, attempt);
                    if start.elapsed() + delay >= self.retry.total_timeout {
                        e.message = format!(
                            "{} (gave up: no answer worth having within {} s)",
                            e.message,
                            self.retry.total_timeout.as_secs()
                        );
                        return Err(e);
                    }
                    tracing::debug!(action = call.action, attempt, ?delay, error = %e, "retrying");
                    let until = Instant::now() + delay;
                    while Instant::now() < until {
                        if self.cancelled() {
                            return Err(ApiError::interrupted(call, attempt));
                        }
                        std::thread::sleep(CANCEL_POLL.min(until - Instant::now()));
                    }
                }
            }
        }
    }

    /// One attempt. Without a cancel flag, on this thread; with one, on a thread of its own
    /// while this one watches the flag, so that a cancel is honoured within [`CANCEL_POLL`]
    /// even when the server never answers (ureq's blocking I/O cannot be interrupted).
    fn attempt(
        &self,
        call: &Call,
        attempt: u32,
        started: Instant,
    ) -> Result<Response, (ApiError, bool)> {
        if self.cancel.is_none() && self.progress.is_none() {
            return self.send_once(call);
        }
        let owned = OwnedCall::new(call);
        let client = self.clone();
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("aws-{}", call.action))
            .spawn(move || {
                let _ = tx.send(client.send_once(&owned.call()));
            })
            .map_err(|e| {
                let mut err = ApiError::interrupted(call, attempt);
                err.code = String::new();
                err.message = format!("starting a thread for the request: {e}");
                (err, false)
            })?;
        let mut note = SLOW_NOTE;
        loop {
            match rx.recv_timeout(CANCEL_POLL) {
                Ok(r) => return r,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let mut err = ApiError::interrupted(call, attempt);
                    err.code = String::new();
                    err.message = "the request's thread ended without an answer".into();
                    return Err((err, true));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if self.cancelled() {
                return Err((ApiError::interrupted(call, attempt), false));
            }
            let waited = started.elapsed();
            if waited >= note {
                let msg = format!(
                    "waiting for {} to answer {} ({} s, attempt {attempt} of {})",
                    call.endpoint,
                    call.action,
                    waited.as_secs(),
                    self.retry.max_attempts
                );
                match &self.progress {
                    Some(p) if !p.is_hidden() => p.set_message(msg),
                    _ => tracing::warn!("{msg}"),
                }
                note += SLOW_NOTE;
            }
        }
    }

    fn send_once(&self, call: &Call) -> Result<Response, (ApiError, bool)> {
        let at = AmzTime::now();
        let payload_hash = hex::encode(
            call.body_sha256
                .unwrap_or_else(|| Sha256::digest(call.body).into()),
        );
        let mut headers = call.headers.clone();
        headers.push(("host".into(), call.endpoint.authority.clone()));
        headers.push(("x-amz-date".into(), at.amz_date()));
        if let Some(t) = &self.creds.session_token {
            headers.push(("x-amz-security-token".into(), t.clone()));
        }
        let path = format!("{}{}", call.endpoint.base_path, call.path);
        let auth = sigv4::authorization(
            &sigv4::SigningKey {
                access_key_id: &self.creds.access_key_id,
                secret_access_key: &self.creds.secret_access_key,
                session_token: self.creds.session_token.as_deref(),
                region: call.region,
                service: call.service,
            },
            &at,
            &sigv4::Request {
                method: call.method,
                path: &path,
                query: &call.query,
                headers: &headers,
                payload_sha256: &payload_hash,
            },
        );
        let mut url = format!(
            "{}://{}{}",
            call.endpoint.scheme,
            call.endpoint.authority,
            sigv4::uri_encode(&path, true)
        );
        if !call.query.is_empty() {
            url.push('?');
            url.push_str(&sigv4::canonical_query(&call.query));
        }
        let mut req = self.agent.request(call.method, &url);
        for (k, v) in &headers {
            req = req.set(k, v);
        }
        req = req.set("authorization", &auth);
        tracing::trace!(action = call.action, %url, "request");
        let err = |status: Option<u16>, code: String, message: String| ApiError {
            action: call.action,
            endpoint: call.endpoint.to_string(),
            status,
            code,
            message,
            attempts: 1,
        };
        let result = if call.method == "GET" {
            req.call()
        } else {
            req.send_bytes(call.body)
        };
        match result {
            Ok(resp) => {
                let status = resp.status();
                read_response(resp)
                    .map(|(headers, body)| Response {
                        status,
                        body,
                        headers,
                    })
                    .map_err(|e| (err(Some(status), String::new(), e), true))
            }
            Err(ureq::Error::Status(status, resp)) => {
                let (headers, body) = read_response(resp).unwrap_or_default();
                let r = Response {
                    status,
                    body,
                    headers,
                };
                let (code, message) = error_details(&r);
                Err((err(Some(status), code, message), false))
            }
            Err(ureq::Error::Transport(t)) => {
                // A refused connection or unknown host will not get better in a few seconds:
                // fail at once so a wrong --endpoint-url is reported promptly.
                let retryable = !matches!(
                    t.kind(),
                    ureq::ErrorKind::ConnectionFailed
                        | ureq::ErrorKind::Dns
                        | ureq::ErrorKind::InvalidUrl
                        | ureq::ErrorKind::UnknownScheme
                        | ureq::ErrorKind::InsecureRequestHttpsOnly
                );
                Err((err(None, String::new(), t.to_string()), retryable))
            }
        }
    }
}

type Head = Vec<(String, String)>;

fn read_response(resp: ureq::Response) -> Result<(Head, Vec<u8>), String> {
    let headers = resp
        .headers_names()
        .into_iter()
        .filter_map(|n| resp.header(&n).map(|v| (n.clone(), v.to_string())))
        .collect();
    let mut body = Vec::new();
    resp.into_reader()
        .take(MAX_BODY)
        .read_to_end(&mut body)
        .map_err(|e| format!("reading the response: {e}"))?;
    Ok((headers, body))
}

/// AWS's error code and message from an error response: EC2's XML (`<Code>`, `<Message>`), or
/// the REST+JSON shape of EBS (`x-amzn-ErrorType`, `message`/`Message`, `Reason`).
pub fn error_details(r: &Response) -> (String, String) {
    let text = r.text();
    if text.trim_start().starts_with('<') {
        if let Some(code) = crate::xml::first(&text, "Code") {
            let msg = crate::xml::first(&text, "Message").unwrap_or_default();
            return (code, msg);
        }
    }
    let json: Option<serde_json::Value> = serde_json::from_str(&text).ok();
    let field = |names: &[&str]| -> Option<String> {
        let j = json.as_ref()?;
        names
            .iter()
            .find_map(|n| j.get(*n).and_then(|v| v.as_str()).map(str::to_string))
    };
    let code = r
        .header("x-amzn-ErrorType")
        .map(|t| t.split(':').next().unwrap_or(t).to_string())
        .or_else(|| {
            field(&["__type", "code", "Code"])
                .map(|t| t.rsplit('#').next().unwrap_or(&t).to_string())
        })
        .unwrap_or_default();
    let mut message = field(&["message", "Message"]).unwrap_or_else(|| {
        let t = text.trim();
        let cut: String = t.chars().take(300).collect();
        if cut.is_empty() {
            "(empty response body)".into()
        } else {
            cut
        }
    });
    if let Some(reason) = field(&["Reason", "reason"]) {
        message = format!("{message} (reason {reason})");
    }
    (code, message)
}

fn backoff(p: &RetryPolicy, attempt: u32) -> Duration {
    let exp = p
        .base_delay
        .saturating_mul(1u32 << (attempt - 1).min(16))
        .min(p.max_delay);
    // Full jitter keeps 8 workers from retrying in lockstep; the clock's nanoseconds are
    // random enough for that.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let frac = f64::from(nanos % 1000) / 1000.0;
    exp.mul_f64(0.5 + frac / 2.0)
}

#[cfg(test)]
mod silent_endpoint_tests {
    use super::*;

    /// Accepts connections on 127.0.0.1 and never answers; returns the endpoint.
    fn silent() -> Endpoint {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in l.incoming().flatten() {
                held.push(s);
            }
        });
        Endpoint::parse(&format!("http://{addr}")).unwrap()
    }

    fn call(e: &Endpoint) -> Call<'_> {
        Call {
            action: "DescribeImages",
            service: "ec2",
            region: "us-east-1",
            endpoint: e,
            method: "POST",
            path: "/".into(),
            query: vec![],
            headers: vec![],
            body: b"Action=DescribeImages",
            body_sha256: None,
        }
    }

    fn creds() -> Credentials {
        Credentials {
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
            session_token: None,
        }
    }

    /// Regression (BAD-3): a call to an endpoint that never answers ends within the policy's
    /// total time, having tried fewer times than allowed, and says why.
    #[test]
    fn a_silent_endpoint_is_given_up_on_within_the_total_time() {
        let e = silent();
        let policy = RetryPolicy {
            max_attempts: 8,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(20),
            attempt_timeout: Duration::from_millis(400),
            total_timeout: Duration::from_millis(1000),
        };
        let Err(err) = Client::new(creds(), policy, 1).send(&call(&e)) else {
            panic!("a silent endpoint answered");
        };
        assert!(err.status.is_none(), "{err}");
        assert!(err.attempts >= 2 && err.attempts < 8, "{err}");
        assert!(err.to_string().contains("gave up"), "{err}");
    }

    /// Regression (BAD-3): a cancel stops a call that is waiting on a silent endpoint, with an
    /// error that says so (the attempt is left on its own thread).
    #[test]
    fn a_cancel_stops_a_call_waiting_on_a_silent_endpoint() {
        let e = silent();
        let flag = Arc::new(AtomicBool::new(false));
        let c = Client::new(creds(), RetryPolicy::default(), 1).with_cancel(flag.clone());
        let setter = {
            let flag = flag.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                flag.store(true, Ordering::SeqCst);
            })
        };
        let Err(err) = c.send(&call(&e)) else {
            panic!("a silent endpoint answered");
        };
        setter.join().unwrap();
        assert!(err.is_interrupted(), "{err}");
        assert_eq!(err.attempts, 1, "{err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
        Response {
            status,
            body: body.as_bytes().to_vec(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn error_shapes() {
        let ec2 = resp(400, &[], "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors></Response>");
        assert_eq!(
            error_details(&ec2),
            (
                "RequestLimitExceeded".into(),
                "Request limit exceeded.".into()
            )
        );
        let ebs = resp(
            400,
            &[(
                "x-amzn-ErrorType",
                "ValidationException:http://internal.amazon.com/",
            )],
            r#"{"Message":"bad block","Reason":"INVALID_BLOCK"}"#,
        );
        assert_eq!(
            error_details(&ebs),
            (
                "ValidationException".into(),
                "bad block (reason INVALID_BLOCK)".into()
            )
        );
        let html = resp(500, &[], "<html>oops</html>");
        assert_eq!(error_details(&html).0, "");
        let e = ApiError {
            action: "RegisterImage",
            endpoint: "x".into(),
            status: Some(503),
            code: "RequestLimitExceeded".into(),
            message: "slow down".into(),
            attempts: 3,
        };
        assert!(e.retryable(false));
        assert_eq!(e.to_string(), "RegisterImage failed with HTTP 503: RequestLimitExceeded: slow down (after 3 attempts)");
        let e = ApiError {
            status: Some(400),
            code: "InvalidAMIName.Malformed".into(),
            attempts: 1,
            ..e
        };
        assert!(!e.retryable(true));
    }

    #[test]
    fn backoff_bounded() {
        let p = RetryPolicy::default();
        for a in 1..20 {
            let d = backoff(&p, a);
            assert!(d <= p.max_delay && d >= p.base_delay / 2, "{a}: {d:?}");
        }
    }
}
