//! Kernel configuration from fragments: parse `kernel-config/*.config`, merge them in the
//! profile's order, and check the final `.config` holds every option asked for.
//!
//! `make allnoconfig KCONFIG_ALLCONFIG=<merged>` takes the merged fragment as the values to
//! force and turns everything else off; but Kconfig silently drops a forced value whose
//! dependencies are not met (`merge_config.sh` only warns). berth refuses instead: every
//! requested option is looked up in the final `.config`, and one that did not stick is an error
//! naming it, the fragment that asked, and the dependencies (read from the Kconfig files of the
//! tree) that are not satisfied.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::{bail, Result};

use crate::profile::KernelFragment;

/// A value as `.config` writes it: `y`, `m`, `n` (`# CONFIG_X is not set`), a number, a quoted
/// string. Kept as the text after `=`, so comparisons are exact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    No,
    Set(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::No => f.write_str("n"),
            Value::Set(v) => f.write_str(v),
        }
    }
}

/// One requested option, with where it was asked for (`base.config:12`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub value: Value,
    pub origin: String,
}

/// The fragments merged: symbol (without `CONFIG_`) -> request, in first-mention order.
#[derive(Clone, Debug, Default)]
pub struct Merged {
    order: Vec<String>,
    options: BTreeMap<String, Request>,
    /// Options a later fragment set to another value than an earlier one: (symbol, the
    /// overridden request, the winning one).
    pub overrides: Vec<(String, Request, Request)>,
}

/// Parses one line of a fragment or a `.config`: `Some((symbol, value))` for an option line,
/// `None` for blank lines and comments; an error for anything else.
fn parse_line(line: &str) -> std::result::Result<Option<(String, Value)>, String> {
    let t = line.trim();
    if t.is_empty() {
        return Ok(None);
    }
    if let Some(rest) = t.strip_prefix('#') {
        let rest = rest.trim();
        if let Some(sym) = rest
            .strip_prefix("CONFIG_")
            .and_then(|r| r.strip_suffix(" is not set"))
        {
            return valid_symbol(sym).map(|s| Some((s, Value::No)));
        }
        return Ok(None);
    }
    let Some((k, v)) = t.split_once('=') else {
        return Err(format!(
            "{t:?} is not an option line: expected CONFIG_NAME=value or `# CONFIG_NAME is not set`"
        ));
    };
    let Some(sym) = k.trim().strip_prefix("CONFIG_") else {
        return Err(format!(
            "{:?} does not start with CONFIG_: options are written CONFIG_NAME=value",
            k.trim()
        ));
    };
    let sym = valid_symbol(sym)?;
    let v = v.trim();
    if v.is_empty() {
        return Err(format!(
            "CONFIG_{sym} has no value: write CONFIG_{sym}=y, a number, a \"string\", or `# CONFIG_{sym} is not set`"
        ));
    }
    if v.starts_with('"') && (v.len() < 2 || !v.ends_with('"')) {
        return Err(format!(
            "CONFIG_{sym}={v}: the string is not closed with \""
        ));
    }
    Ok(Some((
        sym,
        if v == "n" {
            Value::No
        } else {
            Value::Set(v.to_string())
        },
    )))
}

fn valid_symbol(s: &str) -> std::result::Result<String, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(s.to_string())
    } else {
        Err(format!(
            "CONFIG_{s:?} is not a Kconfig symbol (letters, digits and _)"
        ))
    }
}

/// Merges `fragments` in order: a later fragment's value for an option replaces an earlier
/// one's (as `merge_config.sh` does), and the change is recorded in [`Merged::overrides`].
/// Within one fragment an option may appear once. `=m` is refused: source kernels are built
/// without module support.
pub fn merge(fragments: &[KernelFragment]) -> Result<Merged> {
    let mut m = Merged::default();
    for f in fragments {
        let file = format!("kernel-config/{}.config", f.name);
        let mut here: BTreeMap<String, usize> = BTreeMap::new();
        for (i, line) in f.text.lines().enumerate() {
            let n = i + 1;
            let parsed = parse_line(line).map_err(|e| anyhow::anyhow!("{file}:{n}: {e}"))?;
            let Some((sym, value)) = parsed else {
                continue;
            };
            if value == Value::Set("m".into()) {
                bail!(
                    "{file}:{n}: CONFIG_{sym}=m asks for a module, but kernels built from source are built without module support (the image has no modules tree): use CONFIG_{sym}=y"
                );
            }
            if let Some(first) = here.insert(sym.clone(), n) {
                bail!(
                    "{file}:{n}: CONFIG_{sym} is set twice in this fragment (also on line {first})"
                );
            }
            let req = Request {
                value,
                origin: format!("{file}:{n}"),
            };
            match m.options.get(&sym) {
                None => {
                    m.order.push(sym.clone());
                    m.options.insert(sym, req);
                }
                Some(old) if old.value == req.value => {}
                Some(old) => {
                    m.overrides.push((sym.clone(), old.clone(), req.clone()));
                    m.options.insert(sym, req);
                }
            }
        }
    }
    Ok(m)
}

impl Merged {
    /// The merged fragment as `KCONFIG_ALLCONFIG` reads it, in first-mention order.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for sym in &self.order {
            match &self.options[sym].value {
                Value::No => s.push_str(&format!("# CONFIG_{sym} is not set\n")),
                Value::Set(v) => s.push_str(&format!("CONFIG_{sym}={v}\n")),
            }
        }
        s
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn requests(&self) -> impl Iterator<Item = (&str, &Request)> {
        self.order.iter().map(|s| (s.as_str(), &self.options[s]))
    }
}

/// Reads a `.config` (the final one, written by Kconfig).
pub fn parse_dotconfig(text: &str) -> Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        match parse_line(line) {
            Ok(Some((k, v))) => {
                out.insert(k, v);
            }
            Ok(None) => {}
            Err(e) => bail!(".config:{}: {e}", i + 1),
        }
    }
    Ok(out)
}

/// One option that did not end up as asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Miss {
    pub symbol: String,
    pub wanted: Request,
    /// What the final .config has (`None`: the option is not there at all, i.e. not visible
    /// with the rest of this configuration, or not an option of this kernel).
    pub got: Option<Value>,
}

/// The requested options whose final value differs from the request. A request for `n` is met
/// by an absent option too.
pub fn check(merged: &Merged, dotconfig: &BTreeMap<String, Value>) -> Vec<Miss> {
    merged
        .requests()
        .filter_map(|(sym, req)| {
            let got = dotconfig.get(sym);
            let ok = match (&req.value, got) {
                (Value::No, None | Some(Value::No)) => true,
                (want, Some(have)) => want == have,
                (_, None) => false,
            };
            (!ok).then(|| Miss {
                symbol: sym.to_string(),
                wanted: req.clone(),
                got: got.cloned(),
            })
        })
        .collect()
}

/// Where a symbol is defined and what it depends on, from the Kconfig files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Definition {
    /// `drivers/block/Kconfig:378`.
    pub at: String,
    /// Each condition with where it comes from: `depends on VIRTIO`, `if BLK_DEV` (an
    /// enclosing block), `menu "..." depends on X`.
    pub conditions: Vec<String>,
    /// Whether the entry has a prompt; without one, only a `select` (or a default) sets it.
    pub prompt: bool,
}

/// What the Kconfig files say about some symbols.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KconfigIndex {
    pub defs: BTreeMap<String, Vec<Definition>>,
    /// Symbol -> the options that `select` it.
    pub selected_by: BTreeMap<String, Vec<String>>,
}

/// The Kconfig definitions of `wanted` symbols, read from one file's text. The reader follows
/// what decides visibility: an entry's own `depends on` lines, and the `if` blocks and menus
/// with `depends on` that enclose it. Help texts are skipped.
pub fn scan_kconfig(file: &str, text: &str, wanted: &dyn Fn(&str) -> bool, idx: &mut KconfigIndex) {
    let out = &mut idx.defs;
    let selected_by = &mut idx.selected_by;
    // The name of the entry being read, whether wanted or not (for `select` lines).
    let mut entry: Option<String> = None;
    #[derive(PartialEq)]
    enum Block {
        If(String),
        Menu(Vec<String>),
        Choice,
    }
    let mut blocks: Vec<Block> = Vec::new();
    // The entry being read: (symbol, definition) when it is one we want.
    let mut current: Option<(String, Definition)> = None;
    let mut in_help = false;
    let mut lines = text.lines().enumerate().peekable();
    let flush = |current: &mut Option<(String, Definition)>,
                 out: &mut BTreeMap<String, Vec<Definition>>| {
        if let Some((sym, def)) = current.take() {
            out.entry(sym).or_default().push(def);
        }
    };
    while let Some((i, raw)) = lines.next() {
        let mut line = raw.to_string();
        while line.ends_with('\\') {
            line.pop();
            match lines.next() {
                Some((_, more)) => line.push_str(more),
                None => break,
            }
        }
        let starts_at_margin = !line.starts_with([' ', '\t']);
        let t = line.trim();
        if in_help {
            if t.is_empty() || !starts_at_margin && !is_attribute(t) {
                continue;
            }
            in_help = false;
        }
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let (word, rest) = t.split_once([' ', '\t']).unwrap_or((t, ""));
        let rest = rest.trim();
        match word {
            "config" | "menuconfig" => {
                flush(&mut current, out);
                entry = Some(rest.to_string());
                if wanted(rest) {
                    let mut conditions = Vec::new();
                    for b in &blocks {
                        match b {
                            Block::If(e) => conditions.push(format!("if {e}")),
                            Block::Menu(deps) => conditions
                                .extend(deps.iter().map(|d| format!("menu depends on {d}"))),
                            Block::Choice => {}
                        }
                    }
                    current = Some((
                        rest.to_string(),
                        Definition {
                            at: format!("{file}:{}", i + 1),
                            conditions,
                            prompt: false,
                        },
                    ));
                }
            }
            "if" => {
                entry = None;
                flush(&mut current, out);
                blocks.push(Block::If(strip_comment(rest)));
            }
            "endif" => {
                flush(&mut current, out);
                if let Some(p) = blocks.iter().rposition(|b| matches!(b, Block::If(_))) {
                    blocks.truncate(p);
                }
            }
            "menu" => {
                entry = None;
                flush(&mut current, out);
                blocks.push(Block::Menu(Vec::new()));
            }
            "endmenu" => {
                flush(&mut current, out);
                if let Some(p) = blocks.iter().rposition(|b| matches!(b, Block::Menu(_))) {
                    blocks.truncate(p);
                }
            }
            "choice" => {
                entry = None;
                flush(&mut current, out);
                blocks.push(Block::Choice);
            }
            "endchoice" => {
                flush(&mut current, out);
                if let Some(p) = blocks.iter().rposition(|b| *b == Block::Choice) {
                    blocks.truncate(p);
                }
            }
            "comment" | "source" | "mainmenu" | "rsource" | "osource" | "orsource" => {
                entry = None;
                flush(&mut current, out);
            }
            "help" | "---help---" => in_help = true,
            "bool" | "tristate" | "string" | "int" | "hex" | "prompt" | "def_bool"
            | "def_tristate" => {
                let has_prompt = rest.starts_with('"') || word == "prompt";
                if let Some((_, def)) = &mut current {
                    def.prompt |= has_prompt && !word.starts_with("def_");
                }
            }
            "select" => {
                let target = rest.split_whitespace().next().unwrap_or_default();
                if let (true, Some(e)) = (wanted(target), &entry) {
                    let v = selected_by.entry(target.to_string()).or_default();
                    if !v.contains(e) {
                        v.push(e.clone());
                    }
                }
            }
            "depends" => {
                let expr = strip_comment(rest.strip_prefix("on").unwrap_or(rest).trim());
                if let Some((_, def)) = &mut current {
                    def.conditions.push(format!("depends on {expr}"));
                } else if let Some(Block::Menu(deps)) = blocks.last_mut() {
                    deps.push(expr);
                }
            }
            _ => {}
        }
    }
    flush(&mut current, out);
}

/// Attribute keywords that end a help text even when indented (a sloppy Kconfig file).
fn is_attribute(t: &str) -> bool {
    [
        "config ",
        "menuconfig ",
        "endmenu",
        "endif",
        "endchoice",
        "if ",
        "menu ",
        "choice",
    ]
    .iter()
    .any(|k| t.starts_with(k))
}

fn strip_comment(s: &str) -> String {
    // `#` starts a comment outside quotes.
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return s[..i].trim().to_string(),
            _ => {}
        }
    }
    s.trim().to_string()
}

/// The symbols an expression mentions (`PCI && (X86_64 || !X86_32)` -> PCI, X86_64, X86_32).
pub fn symbols_of(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in expr.chars().chain([' ']) {
        if c == '"' {
            quoted = !quoted;
            cur.clear();
            continue;
        }
        if !quoted && (c.is_ascii_alphanumeric() || c == '_') {
            cur.push(c);
        } else {
            let is_sym = !cur.is_empty()
                && !matches!(cur.as_str(), "y" | "n" | "m")
                && !cur.bytes().all(|b| b.is_ascii_digit())
                && cur.bytes().any(|b| b.is_ascii_uppercase());
            if is_sym && !out.contains(&cur) {
                out.push(cur.clone());
            }
            cur.clear();
        }
    }
    out
}

/// Explains a miss for the person who wrote the fragment: where the option is defined, its
/// conditions with the final values of the symbols they name, those not set called out.
pub fn explain(miss: &Miss, idx: &KconfigIndex, dotconfig: &BTreeMap<String, Value>) -> String {
    let defs = idx.defs.get(&miss.symbol);
    let sym = &miss.symbol;
    let wanted = match &miss.wanted.value {
        Value::No => format!("# CONFIG_{sym} is not set"),
        Value::Set(v) => format!("CONFIG_{sym}={v}"),
    };
    let got = match &miss.got {
        None => "is not in the final .config".to_string(),
        Some(v) => format!("ended up as {v}"),
    };
    let mut s = format!("{wanted} ({}) {got}", miss.wanted.origin);
    let Some(defs) = defs.filter(|d| !d.is_empty()) else {
        s.push_str(&format!(
            ": this kernel's Kconfig files define no option {sym} (renamed or removed in this version?)"
        ));
        return s;
    };
    let value_of = |x: &str| match dotconfig.get(x) {
        None | Some(Value::No) => "n".to_string(),
        Some(Value::Set(v)) => v.clone(),
    };
    for d in defs {
        let mut unmet = Vec::new();
        let mut parts = Vec::new();
        for c in &d.conditions {
            let syms = symbols_of(c);
            let vals: Vec<String> = syms
                .iter()
                .map(|x| format!("{x}={}", value_of(x)))
                .collect();
            for x in &syms {
                if value_of(x) == "n" && !c.contains(&format!("!{x}")) {
                    unmet.push(format!("CONFIG_{x}"));
                }
            }
            parts.push(if vals.is_empty() {
                c.clone()
            } else {
                format!("{c} [{}]", vals.join(", "))
            });
        }
        s.push_str(&format!("\n    defined at {}", d.at));
        if !parts.is_empty() {
            s.push_str(&format!(": {}", parts.join("; ")));
        }
        if !unmet.is_empty() {
            unmet.dedup();
            s.push_str(&format!(
                "\n    not set: {} (add it to a fragment)",
                unmet.join(", ")
            ));
        }
    }
    if !defs.iter().any(|d| d.prompt) {
        let by = idx.selected_by.get(sym).cloned().unwrap_or_default();
        s.push_str("\n    it has no prompt: only an option that selects it turns it on");
        if !by.is_empty() {
            let shown: Vec<String> = by.iter().take(6).map(|b| format!("CONFIG_{b}")).collect();
            let more = if by.len() > 6 {
                format!(" and {} more", by.len() - 6)
            } else {
                String::new()
            };
            s.push_str(&format!(" ({}{more})", shown.join(", ")));
        }
    }
    s
}

/// Reads the Kconfig files of a kernel tree for the definitions of `symbols`: the top-level
/// ones and every directory's, of the x86 architecture only.
pub fn definitions(tree: &Path, symbols: &[&str]) -> Result<KconfigIndex> {
    let wanted = |s: &str| symbols.contains(&s);
    let mut out = KconfigIndex::default();
    let mut stack = vec![tree.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(ft) = e.file_type() else { continue };
            let rel = p
                .strip_prefix(tree)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            if ft.is_dir() {
                let other_arch =
                    rel.starts_with("arch/") && rel != "arch/x86" && !rel.starts_with("arch/x86/");
                if !other_arch && !name.starts_with('.') && name != "Documentation" {
                    stack.push(p);
                }
            } else if ft.is_file() && name.starts_with("Kconfig") {
                if let Ok(text) = std::fs::read_to_string(&p) {
                    scan_kconfig(&rel, &text, &wanted, &mut out);
                }
            }
        }
    }
    for defs in out.defs.values_mut() {
        defs.sort_by(|a, b| a.at.cmp(&b.at));
    }
    for v in out.selected_by.values_mut() {
        v.sort();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag(name: &str, text: &str) -> KernelFragment {
        KernelFragment {
            name: name.into(),
            path: Default::default(),
            text: text.into(),
            sha256: String::new(),
        }
    }

    #[test]
    fn fragments_merge_in_order_and_later_ones_win() {
        let m = merge(&[
            frag(
                "base",
                "# comment\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_S=\"x\"\n",
            ),
            frag("qemu", "CONFIG_B=y\nCONFIG_A=y\nCONFIG_N=64\n"),
        ])
        .unwrap();
        assert_eq!(
            m.text(),
            "CONFIG_A=y\nCONFIG_B=y\nCONFIG_S=\"x\"\nCONFIG_N=64\n"
        );
        assert_eq!(m.overrides.len(), 1, "{:?}", m.overrides);
        let (sym, old, new) = &m.overrides[0];
        assert_eq!(sym, "B");
        assert_eq!(old.origin, "kernel-config/base.config:3");
        assert_eq!(new.origin, "kernel-config/qemu.config:1");
    }

    #[test]
    fn bad_fragment_lines_name_the_file_and_line() {
        let e = |t: &str| format!("{:#}", merge(&[frag("x", t)]).unwrap_err());
        assert!(e("CONFIG_A=y\nA=y\n").contains("kernel-config/x.config:2"));
        assert!(e("CONFIG_A=m\n").contains("without module support"));
        assert!(e("CONFIG_A=y\nCONFIG_A=n\n").contains("set twice"));
        assert!(e("CONFIG_A-B=y\n").contains("not a Kconfig symbol"));
        assert!(e("CONFIG_A=\n").contains("has no value"));
        assert!(e("CONFIG_A=\"open\n").contains("not closed"));
        assert!(e("just words\n").contains("not an option line"));
    }

    #[test]
    fn check_finds_what_did_not_stick() {
        let m = merge(&[frag(
            "f",
            "CONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\n# CONFIG_D is not set\nCONFIG_E=\"s\"\n",
        )])
        .unwrap();
        let dot =
            parse_dotconfig("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_D=y\nCONFIG_E=\"t\"\n")
                .unwrap();
        let misses: Vec<(String, Option<Value>)> = check(&m, &dot)
            .into_iter()
            .map(|x| (x.symbol, x.got))
            .collect();
        assert_eq!(
            misses,
            [
                ("B".to_string(), Some(Value::No)),
                ("D".to_string(), Some(Value::Set("y".into()))),
                ("E".to_string(), Some(Value::Set("\"t\"".into()))),
            ]
        );
    }

    const KCONFIG: &str = "\
menuconfig BLK_DEV
\tbool \"Block devices\"
\tdefault y

if BLK_DEV

config VIRTIO_BLK
\ttristate \"Virtio block driver\"
\tdepends on VIRTIO
\tselect SG_POOL
\thelp
\t  This text mentions
\t  depends on NOTHING and config FAKE.

config OTHER
\tbool \"x\"

config HIDDEN
\tbool

endif # BLK_DEV

menu \"Net\"
\tdepends on NET && !UML

config NIC
\tbool \"nic\"
\tdepends on PCI || \\
\t\tCOMPILE_TEST
endmenu
";

    #[test]
    fn kconfig_scan_follows_if_blocks_menus_and_continuations() {
        let mut idx = KconfigIndex::default();
        let want =
            |s: &str| ["VIRTIO_BLK", "NIC", "OTHER", "FAKE", "SG_POOL", "HIDDEN"].contains(&s);
        scan_kconfig("drivers/block/Kconfig", KCONFIG, &want, &mut idx);
        let out = &idx.defs;
        assert_eq!(
            out["VIRTIO_BLK"],
            [Definition {
                at: "drivers/block/Kconfig:7".into(),
                conditions: vec!["if BLK_DEV".into(), "depends on VIRTIO".into()],
                prompt: true,
            }]
        );
        assert_eq!(idx.selected_by["SG_POOL"], ["VIRTIO_BLK"]);
        assert!(!out["HIDDEN"][0].prompt);
        assert_eq!(out["OTHER"][0].conditions, ["if BLK_DEV"]);
        assert_eq!(
            out["NIC"][0].conditions,
            [
                "menu depends on NET && !UML",
                "depends on PCI || \t\tCOMPILE_TEST"
            ]
        );
        assert!(!out.contains_key("FAKE"), "help text is not read");
    }

    #[test]
    fn explanation_names_the_unset_dependency() {
        let mut idx = KconfigIndex::default();
        scan_kconfig(
            "drivers/block/Kconfig",
            KCONFIG,
            &|s| s == "VIRTIO_BLK" || s == "HIDDEN",
            &mut idx,
        );
        let m = merge(&[frag("qemu", "CONFIG_VIRTIO=y\nCONFIG_VIRTIO_BLK=y\n")]).unwrap();
        let dot = parse_dotconfig("CONFIG_VIRTIO=y\n# CONFIG_BLK_DEV is not set\n").unwrap();
        let misses = check(&m, &dot);
        assert_eq!(misses.len(), 1);
        let s = explain(&misses[0], &idx, &dot);
        assert!(
            s.starts_with(
                "CONFIG_VIRTIO_BLK=y (kernel-config/qemu.config:2) is not in the final .config"
            ),
            "{s}"
        );
        assert!(s.contains("if BLK_DEV [BLK_DEV=n]"), "{s}");
        assert!(s.contains("not set: CONFIG_BLK_DEV"), "{s}");
        assert!(!s.contains("not set: CONFIG_VIRTIO"), "{s}");
        let unknown = Miss {
            symbol: "NO_SUCH".into(),
            wanted: Request {
                value: Value::Set("y".into()),
                origin: "kernel-config/base.config:1".into(),
            },
            got: None,
        };
        assert!(explain(&unknown, &idx, &dot).contains("define no option NO_SUCH"));
        let hidden = Miss {
            symbol: "HIDDEN".into(),
            ..unknown
        };
        assert!(explain(&hidden, &idx, &dot).contains("it has no prompt"));
    }

    #[test]
    fn symbols_skip_constants_and_strings() {
        assert_eq!(
            symbols_of("PCI && (X86_64 || !X86_32) && FOO != \"BAR\" && m && 64BIT"),
            ["PCI", "X86_64", "X86_32", "FOO", "64BIT"]
        );
    }
}
