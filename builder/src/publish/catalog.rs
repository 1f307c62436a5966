//! `berth publish vagrant`: a Vagrant box catalog (the JSON `vagrant box add URL` reads) that any
//! static file server can host, updated in place when a new version is published.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::fetch::debversion;
use crate::util::digest::sha256_file;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub versions: Vec<CatalogVersion>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogVersion {
    pub version: String,
    pub providers: Vec<CatalogProvider>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogProvider {
    pub name: String,
    pub url: String,
    pub checksum_type: String,
    pub checksum: String,
}

/// Box files berth writes and the Vagrant provider each is for.
pub const BOXES: &[(&str, &str)] = &[
    ("berth-libvirt.box", "libvirt"),
    ("berth-virtualbox.box", "virtualbox"),
];

/// Adds (or replaces) `version` with the boxes found in `image_dir` to the catalog at `path`
/// (created if missing), keeping versions sorted newest last. Boxes are referred to as
/// `<url_base>/<version>/<box file>`; the caller copies them there. Written atomically.
pub fn publish(
    path: &Path,
    name: &str,
    description: &str,
    version: &str,
    image_dir: &Path,
    url_base: &str,
) -> Result<Catalog> {
    check_url_base(url_base)?;
    let mut providers = Vec::new();
    for (file, provider) in BOXES {
        let p = image_dir.join(file);
        if p.is_file() {
            providers.push(CatalogProvider {
                name: provider.to_string(),
                url: format!("{}/{version}/{file}", url_base.trim_end_matches('/')),
                checksum_type: "sha256".to_string(),
                checksum: sha256_file(&p)?,
            });
        }
    }
    if providers.is_empty() {
        bail!(
            "{} holds no Vagrant box (berth-libvirt.box, berth-virtualbox.box): build with `--format vagrant-libvirt,vagrant-virtualbox` or profiles/vagrant.toml",
            image_dir.display()
        );
    }
    let mut cat = if path.is_file() {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let c: Catalog = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a Vagrant box catalog", path.display()))?;
        if c.name != name {
            bail!(
                "{} is the catalog of box {:?}, not {name:?}",
                path.display(),
                c.name
            );
        }
        c
    } else {
        Catalog {
            name: name.to_string(),
            description: String::new(),
            versions: Vec::new(),
        }
    };
    if !description.is_empty() {
        cat.description = description.to_string();
    }
    cat.versions.retain(|v| v.version != version);
    cat.versions.push(CatalogVersion {
        version: version.to_string(),
        providers,
    });
    cat.versions
        .sort_by(|a, b| debversion::compare(&a.version, &b.version));
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer_pretty(&mut tmp, &cat)?;
    crate::util::output::persist(tmp, path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(cat)
}

/// Vagrant fetches boxes from http(s) or file URLs; anything else (a bare path, a typo, a
/// space) would be written into the catalog and fail only on someone's `vagrant box add`.
fn check_url_base(url: &str) -> Result<()> {
    let rest = ["https://", "http://", "file://"]
        .iter()
        .find_map(|s| url.strip_prefix(s));
    match rest {
        Some(r) if !r.trim_matches('/').is_empty() || url.starts_with("file:///") => {}
        _ => bail!(
            "--url-base {url:?} is not a URL Vagrant can fetch from: give https://HOST/PATH, http://HOST/PATH or file:///DIR"
        ),
    }
    if let Some(c) = url
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "\"<>\\^`{|}".contains(*c))
    {
        bail!("--url-base {url:?}: {c:?} does not belong in a URL (percent-encode it)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (BAD-10): `--url-base "not a url"` was accepted.
    #[test]
    fn url_bases_vagrant_cannot_fetch_are_refused() {
        for bad in [
            "not a url",
            "boxes/",
            "ftp://h/x",
            "https://",
            "https://h/a b",
            "",
        ] {
            let e = check_url_base(bad).unwrap_err().to_string();
            assert!(e.contains("--url-base"), "{bad}: {e}");
        }
        for good in [
            "https://h/boxes/",
            "http://127.0.0.1:8000",
            "file:///srv/boxes",
        ] {
            check_url_base(good).unwrap();
        }
    }

    #[test]
    fn versions_are_added_replaced_and_sorted() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("berth-libvirt.box"), b"box").unwrap();
        let cat = d.path().join("catalog.json");
        publish(
            &cat,
            "berth/test",
            "d",
            "0.10.0",
            d.path(),
            "https://example.invalid/boxes/",
        )
        .unwrap();
        publish(
            &cat,
            "berth/test",
            "",
            "0.9.0",
            d.path(),
            "https://example.invalid/boxes",
        )
        .unwrap();
        std::fs::write(d.path().join("berth-libvirt.box"), b"box2").unwrap();
        let c = publish(
            &cat,
            "berth/test",
            "",
            "0.10.0",
            d.path(),
            "https://example.invalid/boxes",
        )
        .unwrap();
        let v: Vec<&str> = c.versions.iter().map(|v| v.version.as_str()).collect();
        assert_eq!(v, ["0.9.0", "0.10.0"]);
        assert_eq!(c.description, "d");
        let p = &c.versions[1].providers[0];
        assert_eq!(
            p.url,
            "https://example.invalid/boxes/0.10.0/berth-libvirt.box"
        );
        assert_eq!(
            p.checksum,
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"box2"))
        );
        let e = publish(&cat, "other/name", "", "1", d.path(), "https://h/b").unwrap_err();
        assert!(e.to_string().contains("not \"other/name\""), "{e}");
    }

    #[test]
    fn no_boxes_is_an_error_saying_how_to_make_them() {
        let d = tempfile::tempdir().unwrap();
        let e = publish(
            &d.path().join("c.json"),
            "b",
            "",
            "1",
            d.path(),
            "https://h/b",
        )
        .unwrap_err();
        assert!(e.to_string().contains("vagrant-libvirt"), "{e}");
    }
}
