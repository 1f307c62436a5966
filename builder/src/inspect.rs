//! `berth inspect`: what a profile resolves to (after `extends`, with defaults), its locked
//! packages and, when asked, every entry of the root filesystem.

use std::path::Path;

use serde_json::json;

use crate::fetch::lock::Lock;
use crate::profile::Profile;
use crate::root::rootfs::{RootfsManifest, INIT_PATH};

/// The document `--json` prints.
pub fn document(
    p: &Profile,
    lock: Option<&Lock>,
    lock_path: &Path,
    rootfs: Option<&RootfsManifest>,
) -> serde_json::Value {
    let mut doc = json!({ "profile": p, "lock": lock_path, "packages": lock.map(|l| &l.packages) });
    if let Some(r) = rootfs {
        doc["rootfs"] = json!({ "kernel": r.kernel, "entries": entries(r) });
    }
    doc
}

/// One line per root entry: kind, mode, owner, path.
fn entries(r: &RootfsManifest) -> Vec<String> {
    r.manifest
        .iter()
        .map(|(path, e)| {
            format!(
                "{} {:04o} {}:{} {}",
                e.kind.name(),
                e.mode,
                e.uid,
                e.gid,
                path
            )
        })
        .collect()
}

/// For people: the resolved profile as TOML, then the packages, then the root filesystem.
pub fn render(
    p: &Profile,
    lock: Option<&Lock>,
    lock_path: &Path,
    rootfs: Option<&RootfsManifest>,
) -> String {
    let mut out = String::from("# resolved profile (after extends, with defaults)\n");
    match toml::to_string_pretty(p) {
        Ok(t) => out.push_str(&t),
        Err(_) => out.push_str(&serde_json::to_string_pretty(p).unwrap_or_default()),
    }
    out.push_str(&format!("\n# packages ({})\n", lock_path.display()));
    match lock {
        Some(l) => {
            for pkg in &l.packages {
                out.push_str(&format!(
                    "{:<36} {:<28} {}\n",
                    pkg.name, pkg.version, pkg.role
                ));
            }
        }
        None => {
            out.push_str("(no lock yet: `berth lock` or the first `berth build` resolves them)\n")
        }
    }
    out.push_str("\n# root filesystem\n");
    out.push_str(&format!(
        "runtime binaries (with their shared-library closure): {}\n",
        p.runtime
            .binaries
            .iter()
            .map(|b| b.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    ));
    out.push_str(&format!(
        "kernel: {} (modules: {})\n",
        p.kernel.package,
        p.kernel
            .modules
            .as_ref()
            .map_or("all".to_string(), |m| m.join(" "))
    ));
    out.push_str(&format!("init: {INIT_PATH}\n"));
    for o in &p.overlays {
        out.push_str(&format!("overlay {}: {}\n", o.name, o.path.display()));
    }
    for f in &p.files {
        out.push_str(&format!("file {}: {:?}\n", f.path, f.what));
    }
    if let Some(r) = rootfs {
        let list = entries(r);
        out.push_str(&format!("\n# every entry ({})\n", list.len()));
        for e in list {
            out.push_str(&e);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_profile_and_says_when_there_is_no_lock() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("p.toml");
        std::fs::write(
            &path,
            "schema = 1\n[image]\nname = \"x\"\nversion = \"1\"\nsource-date-epoch = 1\n",
        )
        .unwrap();
        let p = crate::profile::load(&path).unwrap();
        let text = render(&p, None, Path::new("p.lock"), None);
        assert!(text.starts_with("# resolved profile"), "{text}");
        assert!(text.contains("name = \"x\""), "{text}");
        assert!(text.contains("(no lock yet"), "{text}");
        assert!(text.contains(&format!("init: {INIT_PATH}")), "{text}");
        let doc = document(&p, None, Path::new("p.lock"), None);
        assert_eq!(doc["profile"]["image"]["name"], "x");
        assert!(doc.get("rootfs").is_none());
    }
}
