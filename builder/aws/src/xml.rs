//! Just enough XML to read EC2 Query API responses: the text of elements by name. EC2 answers
//! are small, namespace-free in their element names, and the few fields berth reads are unique
//! within the part of the document they are looked up in, so no DOM is needed.

/// Text of every `<name>…</name>` (or empty for `<name/>`), in document order, unescaped.
/// Elements of the same name nested inside each other are not supported (EC2 has none among the
/// fields read here).
pub fn all(doc: &str, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = doc;
    while let Some((inner, after)) = next(rest, name) {
        out.push(unescape(inner));
        rest = after;
    }
    out
}

/// Text of the first `<name>` element.
pub fn first(doc: &str, name: &str) -> Option<String> {
    next(doc, name).map(|(inner, _)| unescape(inner))
}

/// Raw content of each `<name>` element (e.g. each `<item>` of a set), for looking up fields
/// per item.
pub fn elements<'a>(doc: &'a str, name: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = doc;
    while let Some((inner, after)) = next(rest, name) {
        out.push(inner);
        rest = after;
    }
    out
}

/// Finds the next `<name ...>` element; returns its raw content and the text after it. For
/// `item` elements (which do nest in EC2 sets) the matching close tag is found by depth.
fn next<'a>(doc: &'a str, name: &str) -> Option<(&'a str, &'a str)> {
    let open = format!("<{name}");
    let close = format!("</{name}>");
    let mut from = 0;
    loop {
        let at = from + doc[from..].find(&open)?;
        let after_name = &doc[at + open.len()..];
        match after_name.bytes().next() {
            Some(b'>') | Some(b' ') | Some(b'\t') | Some(b'\n') | Some(b'\r') | Some(b'/') => {}
            _ => {
                from = at + open.len();
                continue;
            }
        }
        let gt = at + open.len() + after_name.find('>')?;
        if doc[..gt].ends_with('/') {
            return Some(("", &doc[gt + 1..]));
        }
        let body_start = gt + 1;
        // Depth-aware search for the matching close tag.
        let mut depth = 1usize;
        let mut pos = body_start;
        loop {
            let next_close = pos + doc[pos..].find(&close)?;
            let mut scan = pos;
            while let Some(i) = doc[scan..next_close].find(&open) {
                let j = scan + i + open.len();
                if matches!(
                    doc.as_bytes().get(j),
                    Some(b'>' | b' ' | b'\t' | b'\n' | b'\r')
                ) {
                    depth += 1;
                }
                scan = j;
            }
            depth -= 1;
            if depth == 0 {
                return Some((
                    &doc[body_start..next_close],
                    &doc[next_close + close.len()..],
                ));
            }
            pos = next_close + close.len();
        }
    }
}

pub fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.trim().to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let Some(semi) = tail.find(';') else {
            out.push_str(tail);
            rest = "";
            break;
        };
        let ent = &tail[1..semi];
        let ch = match ent {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => ent
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| ent.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match ch {
            Some(c) => out.push(c),
            None => out.push_str(&tail[..=semi]),
        }
        rest = &tail[semi + 1..];
    }
    out.push_str(rest);
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shapes as EC2 returns them (trimmed).
    const DESCRIBE_SNAPSHOTS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeSnapshotsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
    <requestId>59dbff89-35bd-4eac-99ed-be587EXAMPLE</requestId>
    <snapshotSet>
        <item>
            <snapshotId>snap-1234567890abcdef0</snapshotId>
            <volumeId>vol-1234567890abcdef0</volumeId>
            <status>pending</status>
            <progress>80%</progress>
            <description/>
            <tagSet><item><key>Name</key><value>a &amp; b</value></item></tagSet>
        </item>
    </snapshotSet>
</DescribeSnapshotsResponse>"#;

    const ERROR: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>InvalidAMIName.Malformed</Code><Message>AMI names must be between 3 and 128 characters &lt;long&gt;</Message></Error></Errors><RequestID>ea966190-f9aa-478e-9ede-example</RequestID></Response>"#;

    #[test]
    fn fields() {
        assert_eq!(
            first(DESCRIBE_SNAPSHOTS, "status").as_deref(),
            Some("pending")
        );
        assert_eq!(
            first(DESCRIBE_SNAPSHOTS, "description").as_deref(),
            Some("")
        );
        assert_eq!(first(DESCRIBE_SNAPSHOTS, "value").as_deref(), Some("a & b"));
        assert_eq!(first(DESCRIBE_SNAPSHOTS, "nothing"), None);
        // `<snapshotSet>` must not match a search for `<snapshot`-prefixed other names.
        assert_eq!(
            all(DESCRIBE_SNAPSHOTS, "snapshotId"),
            vec!["snap-1234567890abcdef0"]
        );
        assert_eq!(
            first(ERROR, "Code").as_deref(),
            Some("InvalidAMIName.Malformed")
        );
        assert_eq!(
            first(ERROR, "Message").as_deref(),
            Some("AMI names must be between 3 and 128 characters <long>")
        );
    }

    #[test]
    fn nested_items() {
        let set = first(DESCRIBE_SNAPSHOTS, "snapshotSet").unwrap();
        let items = elements(DESCRIBE_SNAPSHOTS, "snapshotSet");
        assert_eq!(items.len(), 1);
        let top = elements(items[0], "item");
        assert_eq!(
            top.len(),
            1,
            "the tag's inner <item> belongs to the snapshot's"
        );
        assert!(top[0].contains("<tagSet>"));
        assert!(set.contains("snap-1234567890abcdef0"));
        let two = "<s><item><a>1</a></item><item><a>2</a><x><item/></x></item></s>";
        let got: Vec<String> = elements(two, "item")
            .iter()
            .map(|i| first(i, "a").unwrap())
            .collect();
        assert_eq!(got, ["1", "2"]);
    }

    #[test]
    fn entities() {
        assert_eq!(unescape("&#65;&#x42;&bogus;&"), "AB&bogus;&");
    }
}
