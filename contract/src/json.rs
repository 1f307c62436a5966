//! A small, strict JSON reader (RFC 8259) for the machine config: the init has no serde, and
//! the host must report exactly what the machine would. Every value keeps the line and column
//! it starts at, so errors point at the text. Stricter than the RFC where a config should be:
//! duplicate object keys, numbers that are not integers, and nesting deeper than
//! [`MAX_DEPTH`] are errors.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::{Error, Result};

/// Deeper nesting than any config needs; bounds the recursion.
pub const MAX_DEPTH: usize = 32;

/// 1-based line and column (in characters) of a value's first character.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
    Array(Vec<Node>),
    /// Members in document order (keys are unique).
    Object(Vec<(String, Node)>),
}

/// A value and where it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
}

impl Value {
    /// The JSON type's name, for "expected a string, found an array" messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "a number",
            Value::Str(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    line: u32,
    col: u32,
}

/// Parses a whole document (one value, surrounded only by whitespace).
pub fn parse(text: &str) -> Result<Node> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
        line: 1,
        col: 1,
    };
    p.ws();
    let v = p.value(0)?;
    p.ws();
    if p.i < p.s.len() {
        return Err(p.err("unexpected text after the document's value"));
    }
    Ok(v)
}

impl Parser<'_> {
    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            col: self.col,
        }
    }

    fn err(&self, m: &str) -> Error {
        Error::Invalid(format!("{}: {m}", self.pos()))
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// Advances one byte, keeping line/column (columns count characters, not UTF-8 bytes).
    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        if b == b'\n' {
            self.line += 1;
            self.col = 1;
        } else if b & 0xC0 != 0x80 {
            self.col += 1;
        }
        Some(b)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.bump();
        }
    }

    fn expect(&mut self, word: &str) -> Result<()> {
        for w in word.bytes() {
            if self.peek() != Some(w) {
                return Err(self.err(&format!("expected `{word}`")));
            }
            self.bump();
        }
        Ok(())
    }

    fn value(&mut self, depth: usize) -> Result<Node> {
        if depth > MAX_DEPTH {
            return Err(self.err(&format!("nested deeper than {MAX_DEPTH} levels")));
        }
        let pos = self.pos();
        let value = match self.peek() {
            None => return Err(self.err("unexpected end of the document")),
            Some(b'{') => self.object(depth)?,
            Some(b'[') => self.array(depth)?,
            Some(b'"') => Value::Str(self.string()?),
            Some(b't') => {
                self.expect("true")?;
                Value::Bool(true)
            }
            Some(b'f') => {
                self.expect("false")?;
                Value::Bool(false)
            }
            Some(b'n') => {
                self.expect("null")?;
                Value::Null
            }
            Some(b'-' | b'0'..=b'9') => Value::Int(self.number()?),
            Some(c) => {
                return Err(self.err(&format!(
                    "unexpected {:?}: expected a value (object, array, string, number, true, false, null)",
                    char::from(c)
                )))
            }
        };
        Ok(Node { value, pos })
    }

    fn object(&mut self, depth: usize) -> Result<Value> {
        self.bump(); // {
        let mut members: Vec<(String, Node)> = Vec::new();
        self.ws();
        if self.peek() == Some(b'}') {
            self.bump();
            return Ok(Value::Object(members));
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(self.err("expected a key (a string in double quotes)"));
            }
            let at = self.pos();
            let key = self.string()?;
            if members.iter().any(|(k, _)| *k == key) {
                return Err(Error::Invalid(format!("{at}: key {key:?} appears twice")));
            }
            self.ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected `:` after the key"));
            }
            self.bump();
            self.ws();
            let v = self.value(depth + 1)?;
            members.push((key, v));
            self.ws();
            let c = self.peek();
            if !matches!(c, Some(b',' | b'}')) {
                return Err(self.err("expected `,` or `}` in the object"));
            }
            self.bump();
            if c == Some(b'}') {
                return Ok(Value::Object(members));
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value> {
        self.bump(); // [
        let mut items = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.bump();
            return Ok(Value::Array(items));
        }
        loop {
            self.ws();
            items.push(self.value(depth + 1)?);
            self.ws();
            let c = self.peek();
            if !matches!(c, Some(b',' | b']')) {
                return Err(self.err("expected `,` or `]` in the array"));
            }
            self.bump();
            if c == Some(b']') {
                return Ok(Value::Array(items));
            }
        }
    }

    fn hex4(&mut self) -> Result<u32> {
        let mut n = 0u32;
        for _ in 0..4 {
            let d = self
                .peek()
                .and_then(|c| char::from(c).to_digit(16))
                .ok_or_else(|| self.err("expected 4 hex digits after \\u"))?;
            self.bump();
            n = n * 16 + d;
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String> {
        self.bump(); // "
        let mut out = String::new();
        loop {
            let start = self.i;
            // Copy a run of plain characters at once (the input is valid UTF-8: it is a &str).
            while let Some(c) = self.peek() {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.bump();
            }
            out.push_str(core::str::from_utf8(&self.s[start..self.i]).unwrap_or_default());
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.bump();
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.bump();
                    let e = self.bump().ok_or_else(|| self.err("unterminated string"))?;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let c = if (0xD800..0xDC00).contains(&hi) {
                                // A surrogate pair: \uD83D\uDE00.
                                if self.bump() != Some(b'\\') || self.bump() != Some(b'u') {
                                    return Err(self.err(
                                        "a high surrogate must be followed by \\u and a low one",
                                    ));
                                }
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(self.err("invalid low surrogate"));
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            let ch = char::from_u32(c)
                                .ok_or_else(|| self.err("\\u escape is not a character"))?;
                            out.push(ch);
                        }
                        other => {
                            return Err(self.err(&format!("invalid escape \\{}", char::from(other))))
                        }
                    }
                }
                Some(_) => {
                    return Err(
                        self.err("control character in a string: escape it (\\n, \\t, \\u0000)")
                    )
                }
            }
        }
    }

    fn number(&mut self) -> Result<i64> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.bump();
        }
        match self.peek() {
            Some(b'0') => {
                self.bump();
                if matches!(self.peek(), Some(b'0'..=b'9')) {
                    return Err(
                        self.err("numbers have no leading zeros (modes are strings: \"0644\")")
                    );
                }
            }
            Some(b'1'..=b'9') => {
                while matches!(self.peek(), Some(b'0'..=b'9')) {
                    self.bump();
                }
            }
            _ => return Err(self.err("expected a digit")),
        }
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return Err(self.err("only whole numbers are used in a berth config"));
        }
        let text = core::str::from_utf8(&self.s[start..self.i]).unwrap_or_default();
        text.parse()
            .map_err(|_| self.err(&format!("{text} does not fit in 64 bits")))
    }
}

/// `s` as a JSON string literal (for the writers on both sides).
pub fn quote(s: &str) -> alloc::string::String {
    crate::schema::quote(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    fn v(s: &str) -> Value {
        parse(s).unwrap().value
    }

    #[test]
    fn values_and_positions() {
        assert_eq!(v(" null "), Value::Null);
        assert_eq!(
            v("[true,false,-12,0]"),
            Value::Array(vec![
                Node {
                    value: Value::Bool(true),
                    pos: Pos { line: 1, col: 2 }
                },
                Node {
                    value: Value::Bool(false),
                    pos: Pos { line: 1, col: 7 }
                },
                Node {
                    value: Value::Int(-12),
                    pos: Pos { line: 1, col: 13 }
                },
                Node {
                    value: Value::Int(0),
                    pos: Pos { line: 1, col: 17 }
                },
            ])
        );
        let n = parse("{\n  \"a\": {\"b\": \"c\\n\\u00e9\\ud83d\\ude00\"}\n}").unwrap();
        let Value::Object(m) = n.value else { panic!() };
        assert_eq!(m[0].0, "a");
        assert_eq!(m[0].1.pos, Pos { line: 2, col: 8 });
        let Value::Object(inner) = &m[0].1.value else {
            panic!()
        };
        assert_eq!(inner[0].1.value, Value::Str("c\né😀".into()));
        // Columns count characters.
        let n = parse("[\"é\", 1]").unwrap();
        let Value::Array(a) = n.value else { panic!() };
        assert_eq!(a[1].pos.col, 7);
    }

    #[test]
    fn errors_point_at_the_text() {
        for (doc, want) in [
            ("", "1:1: unexpected end"),
            ("{\"a\": 1,}", "1:9: expected a key"),
            ("{\"a\": 1, \"a\": 2}", "1:10: key \"a\" appears twice"),
            ("[1 2]", "1:4: expected `,` or `]`"),
            ("{\"a\" 1}", "1:6: expected `:`"),
            ("1.5", "only whole numbers"),
            ("0644", "leading zeros"),
            ("\"a\nb\"", "control character"),
            ("\"\\x\"", "invalid escape"),
            ("[1] x", "1:5: unexpected text"),
            ("tru", "expected `true`"),
            ("99999999999999999999", "64 bits"),
            ("\"\\ud800x\"", "low one"),
            ("'a'", "unexpected '\\''"),
        ] {
            let e = parse(doc).unwrap_err().to_string();
            assert!(e.contains(want), "{doc:?}: {e}");
        }
        let deep = "[".repeat(MAX_DEPTH + 2);
        assert!(parse(&deep).unwrap_err().to_string().contains("deeper"));
    }
}
