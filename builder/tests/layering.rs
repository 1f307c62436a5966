//! The library's modules follow the pipeline and depend on each other in one direction only:
//! the graph of `crate::<module>` references between the top-level modules of builder/src has
//! no cycle, the leaf writers (`fsimage`) and helpers (`util`) know nothing of profiles or
//! stages, and only the command (`main.rs`, `cli/`) uses the recipe (`build`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to (`fetch` for src/fetch/lock.rs, `build` for
/// src/build.rs), or `None` for the crate roots and the command.
fn module_of(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let first = rel
        .components()
        .next()?
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (!["lib", "main", "cli"].contains(&name.as_str())).then_some(name)
}

/// `from -> {to}` for every `crate::to` a module's files name (comments and tests included:
/// a test module's imports are dependencies too).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let Some(from) = module_of(&f) else { continue };
        let text = fs::read_to_string(&f).unwrap();
        let deps = g.entry(from.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            let to: String = text[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `crate::units` is a re-export of util::units.
            let to = if to == "units" {
                "util".to_string()
            } else {
                to
            };
            if !to.is_empty() && to != from {
                deps.insert(to);
            }
        }
    }
    g
}

/// A cycle through `start`, if there is one, as the list of modules on it.
fn cycle_from(
    g: &BTreeMap<String, BTreeSet<String>>,
    node: &str,
    start: &str,
    path: &mut Vec<String>,
    seen: &mut BTreeSet<String>,
) -> bool {
    for next in g.get(node).into_iter().flatten() {
        if next == start {
            path.push(next.clone());
            return true;
        }
        if seen.insert(next.clone()) {
            path.push(next.clone());
            if cycle_from(g, next, start, path, seen) {
                return true;
            }
            path.pop();
        }
    }
    false
}

#[test]
fn the_module_graph_has_no_cycle() {
    let g = graph();
    assert!(g.len() > 8, "found only {:?}", g.keys());
    for start in g.keys() {
        let mut path = vec![start.clone()];
        if cycle_from(&g, start, start, &mut path, &mut BTreeSet::new()) {
            panic!("module cycle: {}\n(graph: {g:#?})", path.join(" -> "));
        }
    }
}

#[test]
fn leaves_know_nothing_of_the_stages_and_only_the_command_uses_the_recipe() {
    let g = graph();
    let stages = [
        "profile",
        "fetch",
        "root",
        "boot",
        "disk",
        "formats",
        "artifacts",
        "cache",
        "build",
        "run",
        "publish",
    ];
    for leaf in ["fsimage", "util"] {
        let bad: Vec<_> = g[leaf]
            .iter()
            .filter(|d| stages.contains(&d.as_str()))
            .collect();
        assert!(bad.is_empty(), "{leaf} depends on {bad:?}");
    }
    for (m, deps) in &g {
        assert!(
            !deps.contains("build"),
            "{m} uses crate::build; only the command may"
        );
    }
}
