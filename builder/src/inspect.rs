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
        let sizes = Sizes::of(p, r);
        doc["rootfs"] = json!({
            "kernel": r.kernel,
            "entries": entries(r),
            "bytes": sizes.total,
            "by-package": sizes.by_package.iter().map(|(k, v)| json!({"name": k, "bytes": v})).collect::<Vec<_>>(),
            "by-directory": sizes.by_dir.iter().map(|(k, v)| json!({"path": k, "bytes": v})).collect::<Vec<_>>(),
        });
    }
    doc
}

/// Where the root's bytes go: file contents summed by the package they came from and by
/// directory (three levels deep), biggest first.
pub struct Sizes {
    pub total: u64,
    pub by_package: Vec<(String, u64)>,
    pub by_dir: Vec<(String, u64)>,
}

/// Directory depth the by-directory sums go to (`/usr/lib/modules`).
const SIZE_DEPTH: usize = 3;

impl Sizes {
    pub fn of(p: &Profile, r: &RootfsManifest) -> Sizes {
        use crate::fsimage::manifest::Kind;
        use std::collections::BTreeMap;
        let kernel = p
            .kernel
            .source
            .as_ref()
            .map_or(&p.kernel.package, |s| &s.package);
        let mut by_package: BTreeMap<String, u64> = BTreeMap::new();
        let mut by_dir: BTreeMap<String, u64> = BTreeMap::new();
        let mut total = 0;
        for (path, e) in r.manifest.iter() {
            let Kind::File(d) = &e.kind else { continue };
            let n = d.len() as u64;
            total += n;
            let s = path.as_str();
            let owner = if let Some(pkg) = r.selected.get(path).filter(|p| !p.is_empty()) {
                pkg.clone()
            } else if s.starts_with("/usr/lib/modules/") {
                format!("{kernel} (kernel)")
            } else if s == INIT_PATH {
                "berth-init".to_string()
            } else if s.starts_with(berth_contract::paths::IMAGES_DIR) {
                "container images".to_string()
            } else {
                "berth (generated files, overlays, [[files]])".to_string()
            };
            *by_package.entry(owner).or_default() += n;
            let dir: Vec<&str> = s.split('/').skip(1).collect();
            let depth = dir.len().saturating_sub(1).min(SIZE_DEPTH);
            *by_dir
                .entry(format!("/{}", dir[..depth].join("/")))
                .or_default() += n;
        }
        let sorted = |m: BTreeMap<String, u64>| {
            let mut v: Vec<(String, u64)> = m.into_iter().collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            v
        };
        Sizes {
            total,
            by_package: sorted(by_package),
            by_dir: sorted(by_dir),
        }
    }
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
    match &p.kernel.source {
        Some(src) => out.push_str(&format!(
            "kernel: built from {} with kernel-config/ fragments {} (no modules)\n",
            src.package,
            src.config
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        None => out.push_str(&format!(
            "kernel: {} (modules: {})\n",
            p.kernel.package,
            p.kernel
                .modules
                .as_ref()
                .map_or("all".to_string(), |m| m.join(" "))
        )),
    }
    out.push_str(&format!("init: {INIT_PATH}\n"));
    for o in &p.overlays {
        out.push_str(&format!("overlay {}: {}\n", o.name, o.path.display()));
    }
    for f in &p.files {
        out.push_str(&format!("file {}: {:?}\n", f.path, f.what));
    }
    if let Some(r) = rootfs {
        use crate::units::Bytes;
        let sizes = Sizes::of(p, r);
        out.push_str(&format!(
            "\n# biggest contributors ({} of file contents)\nby package:\n",
            Bytes(sizes.total)
        ));
        for (name, n) in sizes.by_package.iter().take(12) {
            out.push_str(&format!("  {:>10}  {name}\n", Bytes(*n).to_string()));
        }
        out.push_str("by directory:\n");
        for (dir, n) in sizes.by_dir.iter().take(12) {
            out.push_str(&format!("  {:>10}  {dir}\n", Bytes(*n).to_string()));
        }
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
