//! The one door to AWS: every request is signed here, sent with ureq, retried here on
//! throttling, 5xx and dropped connections, and every failure becomes an [`ApiError`] naming the
//! API action, the HTTP status and AWS's error code and message.

use std::io::Read;
use std::time::Duration;

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
}

impl Default for RetryPolicy {
    /// 8 attempts spaced 0.2 s .. 20 s: rides out EBS direct's per-snapshot throttling
    /// (PutSnapshotBlock is limited per snapshot) and short 5xx bursts, gives up within ~1 min.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(20),
        }
    }
}

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
}

impl Client {
    pub fn new(creds: Credentials, retry: RetryPolicy, connections: usize) -> Client {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(120))
            .timeout_write(Duration::from_secs(120))
            .max_idle_connections_per_host(connections.max(1) + 2)
            .redirects(0)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .build();
        Client {
            agent,
            creds,
            retry,
        }
    }

    /// Sends `call`, retrying per the policy; a non-2xx answer is an [`ApiError`].
    pub fn send(&self, call: &Call) -> Result<Response, ApiError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.send_once(call) {
                Ok(r) => return Ok(r),
                Err((mut e, transport_retryable)) => {
                    e.attempts = attempt;
                    if attempt >= self.retry.max_attempts || !e.retryable(transport_retryable) {
                        return Err(e);
                    }
                    let delay = backoff(&self.retry, attempt);
                    tracing::debug!(action = call.action, attempt, ?delay, error = %e, "retrying");
                    std::thread::sleep(delay);
                }
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
