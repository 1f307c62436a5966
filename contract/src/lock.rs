//! The cluster's reboot lock (DESIGN.md "Clusters"; locksmith's role): a key in etcd that holds
//! the name of the one machine allowed to reboot for an update. `berth cluster update` takes
//! it from the host (with `etcdctl` on a node), and a node that updates itself from a channel
//! under the reboot policy `etcd-lock` takes it through its local member's JSON gateway
//! (`berthctl lock`); both use this key, so a cluster never reboots two members at once.
//!
//! Taking is one transaction, "if the key does not exist, put my name"; releasing is "if the
//! key holds my name, delete it". The same transactions record each take and release under
//! [`HISTORY_PREFIX`] as `<unix ms>-<holder>` = `taken` | `released`: read in creation order
//! (etcd's revisions, not the machines' clocks), the record that the machines rebooted one at
//! a time.
//!
//! This module writes the gateway's request bodies (`POST /v3/kv/txn`, `/v3/kv/put`,
//! `/v3/kv/range`; keys and values base64, as the gateway's JSON mapping of etcd's protobuf
//! wants them) and reads its answers. No I/O.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::json::{self, Node, Value};
use crate::{Error, Result};

pub const LOCK_KEY: &str = "berth/reboot-lock";
pub const HISTORY_PREFIX: &str = "berth/reboot-history/";
/// The node's own etcd member, where `berthctl lock` goes by default.
pub const LOCAL_ENDPOINT: &str = "http://127.0.0.1:2379";

/// A holder's name: a host name (what the lock and its history keys can carry unquoted).
pub fn check_holder(h: &str) -> core::result::Result<(), String> {
    let ok = !h.is_empty()
        && h.len() <= 63
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{h:?} cannot hold the reboot lock: a holder is a host name (1 to 63 of a-z, A-Z, 0-9, '-', '.', '_')"
        ))
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648 section 4).
pub fn base64(data: &[u8]) -> String {
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= c.len() {
                s.push(B64[((n >> shift) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Decodes standard base64 (padding optional); `None` for anything else.
pub fn unbase64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in s.bytes() {
        let v = B64.iter().position(|&c| c == b)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be padding zeros, and a lone sixth of a byte is not base64.
    (acc == 0 && bits < 6).then_some(out)
}

fn history_put(unix_ms: u64, holder: &str, what: &str) -> String {
    format!(
        "{{\"request_put\": {{\"key\": \"{}\", \"value\": \"{}\"}}}}",
        base64(history_key(unix_ms, holder).as_bytes()),
        base64(what.as_bytes())
    )
}

/// The history record of `holder` at `unix_ms`.
pub fn history_key(unix_ms: u64, holder: &str) -> String {
    format!("{HISTORY_PREFIX}{unix_ms}-{holder}")
}

/// `POST /v3/kv/txn`: if the lock key does not exist, put `holder` under it and record
/// `taken` in the history, in one transaction (so the history's creation order is the
/// lock's order).
pub fn take_request(holder: &str, unix_ms: u64) -> String {
    let k = base64(LOCK_KEY.as_bytes());
    format!(
        "{{\"compare\": [{{\"target\": \"CREATE\", \"key\": \"{k}\", \"create_revision\": \"0\"}}], \"success\": [{{\"request_put\": {{\"key\": \"{k}\", \"value\": \"{}\"}}}}, {}]}}",
        base64(holder.as_bytes()),
        history_put(unix_ms, holder, "taken")
    )
}

/// `POST /v3/kv/txn`: if the lock key holds `holder`, delete it and record `released`.
pub fn release_request(holder: &str, unix_ms: u64) -> String {
    let k = base64(LOCK_KEY.as_bytes());
    format!(
        "{{\"compare\": [{{\"target\": \"VALUE\", \"key\": \"{k}\", \"value\": \"{}\"}}], \"success\": [{{\"request_delete_range\": {{\"key\": \"{k}\"}}}}, {}]}}",
        base64(holder.as_bytes()),
        history_put(unix_ms, holder, "released")
    )
}

/// `POST /v3/kv/range`: the lock key.
pub fn holder_request() -> String {
    format!("{{\"key\": \"{}\"}}", base64(LOCK_KEY.as_bytes()))
}

fn member<'a>(n: &'a Node, k: &str) -> Option<&'a Node> {
    match &n.value {
        Value::Object(m) => m.iter().find(|(key, _)| key == k).map(|(_, v)| v),
        _ => None,
    }
}

fn answer(text: &str) -> Result<Node> {
    let n = json::parse(text)
        .map_err(|e| Error::Invalid(format!("etcd answered something not JSON: {e}")))?;
    if let Some(e) = member(&n, "error").or_else(|| member(&n, "message")) {
        let m = match &e.value {
            Value::Str(s) => s.clone(),
            v => v.kind().to_string(),
        };
        return Err(Error::Invalid(format!("etcd refused the request: {m}")));
    }
    if member(&n, "header").is_none() {
        return Err(Error::Invalid(
            "etcd's answer has no \"header\": not an etcd v3 JSON gateway".into(),
        ));
    }
    Ok(n)
}

/// Whether a transaction's compare held (its success branch ran). The gateway leaves out
/// false booleans.
pub fn txn_succeeded(text: &str) -> Result<bool> {
    let n = answer(text)?;
    Ok(matches!(
        member(&n, "succeeded").map(|v| &v.value),
        Some(Value::Bool(true))
    ))
}

/// The holder in a range answer for the lock key; `None` when nobody holds it.
pub fn holder_of(text: &str) -> Result<Option<String>> {
    let n = answer(text)?;
    let Some(kvs) = member(&n, "kvs") else {
        return Ok(None);
    };
    let Value::Array(kvs) = &kvs.value else {
        return Err(Error::Invalid("etcd's \"kvs\" is not an array".into()));
    };
    let Some(kv) = kvs.first() else {
        return Ok(None);
    };
    let v = match member(kv, "value").map(|v| &v.value) {
        Some(Value::Str(s)) => s.as_str(),
        // An empty value is left out.
        None => "",
        Some(v) => {
            return Err(Error::Invalid(format!(
                "etcd's value of {LOCK_KEY} is {}, not base64 text",
                v.kind()
            )))
        }
    };
    let raw = unbase64(v)
        .ok_or_else(|| Error::Invalid(format!("etcd's value of {LOCK_KEY} is not base64")))?;
    Ok(Some(String::from_utf8_lossy(&raw).into_owned()))
}

/// Checks that a put was accepted.
pub fn put_ok(text: &str) -> Result<()> {
    answer(text).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_matches_rfc4648() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes()), enc);
            assert_eq!(unbase64(enc).unwrap(), raw.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(unbase64(&base64(&all)).unwrap(), all);
        assert!(unbase64("Zm9v!").is_none());
        assert!(unbase64("Z").is_none());
        assert!(unbase64("Zh==").is_none(), "nonzero padding bits");
    }

    #[test]
    fn requests_compare_before_they_write() {
        // "berth/reboot-lock", "t-2", "berth/reboot-history/7-t-2", "taken", "released".
        assert_eq!(
            take_request("t-2", 7),
            r#"{"compare": [{"target": "CREATE", "key": "YmVydGgvcmVib290LWxvY2s=", "create_revision": "0"}], "success": [{"request_put": {"key": "YmVydGgvcmVib290LWxvY2s=", "value": "dC0y"}}, {"request_put": {"key": "YmVydGgvcmVib290LWhpc3RvcnkvNy10LTI=", "value": "dGFrZW4="}}]}"#
        );
        assert_eq!(
            release_request("t-2", 7),
            r#"{"compare": [{"target": "VALUE", "key": "YmVydGgvcmVib290LWxvY2s=", "value": "dC0y"}], "success": [{"request_delete_range": {"key": "YmVydGgvcmVib290LWxvY2s="}}, {"request_put": {"key": "YmVydGgvcmVib290LWhpc3RvcnkvNy10LTI=", "value": "cmVsZWFzZWQ="}}]}"#
        );
        assert_eq!(
            unbase64("YmVydGgvcmVib290LWhpc3RvcnkvNy10LTI=").unwrap(),
            history_key(7, "t-2").as_bytes()
        );
        for r in [
            take_request("a", 1),
            release_request("a", 1),
            holder_request(),
        ] {
            json::parse(&r).unwrap();
        }
    }

    #[test]
    fn reads_the_gateways_answers() {
        // As etcd 3.4's gateway writes them (false booleans and empty lists left out).
        let hdr = r#""header": {"cluster_id": "14841639068965178418", "member_id": "10276657743932975437", "revision": "5", "raft_term": "2"}"#;
        assert!(txn_succeeded(&format!(r#"{{{hdr}, "succeeded": true, "responses": [{{"response_put": {{"header": {{"revision": "5"}}}}}}]}}"#)).unwrap());
        assert!(!txn_succeeded(&format!("{{{hdr}}}")).unwrap());
        assert_eq!(holder_of(&format!("{{{hdr}}}")).unwrap(), None);
        assert_eq!(
            holder_of(&format!(
                r#"{{{hdr}, "kvs": [{{"key": "YmVydGgvcmVib290LWxvY2s=", "create_revision": "5", "mod_revision": "5", "version": "1", "value": "dC0y"}}], "count": "1"}}"#
            ))
            .unwrap()
            .as_deref(),
            Some("t-2")
        );
        let e =
            txn_succeeded(r#"{"error": "etcdserver: request timed out", "code": 14}"#).unwrap_err();
        assert!(format!("{e}").contains("request timed out"), "{e}");
        assert!(put_ok("<html>404</html>").is_err());
        assert!(put_ok("{}").is_err(), "no header: not etcd");
    }

    #[test]
    fn holders_are_host_names() {
        assert!(check_holder("t-1").is_ok());
        assert!(check_holder("").is_err());
        assert!(check_holder("a b").is_err());
        assert!(check_holder("a\"b").is_err());
    }
}
