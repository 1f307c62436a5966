//! Helpers for the strict JSON schemas (the machine config, the services file): typed
//! accessors that name the key and the position, and an object walker that reports unknown
//! keys with the list of valid ones.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::json::{Node, Pos, Value};
use crate::{Error, Result};

pub(crate) fn err(pos: Pos, key: &str, m: &str) -> Error {
    Error::Invalid(format!("{pos}: key `{key}`: {m}"))
}

/// An object's members, taken one by one; what is left over is an unknown key.
pub(crate) struct Fields<'a> {
    pub(crate) members: Vec<(&'a str, &'a Node)>,
    pub(crate) prefix: String,
    pub(crate) pos: Pos,
}

impl<'a> Fields<'a> {
    pub(crate) fn of(node: &'a Node, prefix: &str) -> Result<Fields<'a>> {
        match &node.value {
            Value::Object(m) => Ok(Fields {
                members: m.iter().map(|(k, v)| (k.as_str(), v)).collect(),
                prefix: prefix.to_string(),
                pos: node.pos,
            }),
            other => Err(err(
                node.pos,
                if prefix.is_empty() {
                    "(document)"
                } else {
                    prefix
                },
                &format!("expected an object, found {}", other.kind()),
            )),
        }
    }

    fn key(&self, k: &str) -> String {
        if self.prefix.is_empty() {
            k.to_string()
        } else {
            format!("{}.{k}", self.prefix)
        }
    }

    pub(crate) fn take(&mut self, k: &str) -> Option<(&'a Node, String)> {
        let i = self.members.iter().position(|(n, _)| *n == k)?;
        let (_, v) = self.members.remove(i);
        Some((v, self.key(k)))
    }

    pub(crate) fn finish(self, known: &[&str]) -> Result<()> {
        match self.members.first() {
            None => Ok(()),
            Some((k, v)) => Err(err(
                v.pos,
                &self.key(k),
                &format!("unknown key; valid keys here: {}", known.join(", ")),
            )),
        }
    }
}

pub(crate) fn string(n: &Node, key: &str) -> Result<String> {
    match &n.value {
        Value::Str(s) => Ok(s.clone()),
        other => Err(err(
            n.pos,
            key,
            &format!("expected a string, found {}", other.kind()),
        )),
    }
}

pub(crate) fn int(n: &Node, key: &str, max: i64) -> Result<i64> {
    match &n.value {
        Value::Int(i) if (0..=max).contains(i) => Ok(*i),
        Value::Int(i) => Err(err(n.pos, key, &format!("{i} is out of range 0..={max}"))),
        other => Err(err(
            n.pos,
            key,
            &format!("expected a number, found {}", other.kind()),
        )),
    }
}

pub(crate) fn array<'a>(n: &'a Node, key: &str) -> Result<&'a [Node]> {
    match &n.value {
        Value::Array(a) => Ok(a),
        other => Err(err(
            n.pos,
            key,
            &format!("expected an array, found {}", other.kind()),
        )),
    }
}

/// `s` as a JSON string literal.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub(crate) fn boolean(n: &Node, key: &str) -> Result<bool> {
    match n.value {
        Value::Bool(b) => Ok(b),
        ref other => Err(err(
            n.pos,
            key,
            &format!("expected true or false, found {}", other.kind()),
        )),
    }
}

/// A list of strings.
pub(crate) fn strings(n: &Node, key: &str) -> Result<Vec<String>> {
    array(n, key)?
        .iter()
        .enumerate()
        .map(|(i, e)| string(e, &format!("{key}[{i}]")))
        .collect()
}

/// `items` as a JSON array of string literals.
pub(crate) fn quote_list(items: &[String]) -> String {
    let v: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", v.join(", "))
}
