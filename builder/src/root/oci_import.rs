//! OCI images a user supplies (`[[containers]] archive = ...`): what `docker save`,
//! `podman save --format oci-archive` and `skopeo copy ... oci-archive:` write, or an OCI
//! image-layout directory (`skopeo copy ... oci:DIR`). Checked whole before anything is
//! written: every blob's SHA-256 and size against its descriptor, the platform (linux/amd64),
//! a docker-save archive's layers against the config's `diff_ids`. The result is re-packed as
//! the one-image archive berth bakes (same manifest, config and layers; the index names the
//! image for containerd), so the image's digest is the one the user built.
//!
//! Image-layout spec: `oci-layout`, `index.json`, `blobs/<alg>/<hex>`. A docker-save archive
//! (before Docker 25) has `manifest.json` = `[{"Config": "<hex>.json", "RepoTags": [...],
//! "Layers": ["<id>/layer.tar", ...]}]` with uncompressed layers.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use crate::root::oci::{self, ImageBlobs};

const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const MEDIA_TYPE_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const LAYER_TYPES: &[&str] = &[
    oci::MEDIA_TYPE_LAYER,
    oci::MEDIA_TYPE_LAYER_GZIP,
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
];
/// Nested indexes deeper than this are refused (a loop, or nonsense).
const MAX_INDEX_DEPTH: usize = 4;

/// The files of an archive or layout directory, by relative path.
struct Tree {
    what: String,
    files: BTreeMap<String, Vec<u8>>,
}

impl Tree {
    fn read(path: &Path) -> Result<Tree> {
        let what = path.display().to_string();
        let mut files = BTreeMap::new();
        if path.is_dir() {
            read_dir(path, "", &mut files)
                .with_context(|| format!("reading the OCI layout directory {what}"))?;
        } else {
            let f = std::fs::File::open(path).with_context(|| format!("opening {what}"))?;
            let mut ar = tar::Archive::new(std::io::BufReader::new(f));
            let entries = ar
                .entries()
                .with_context(|| format!("{what}: not a tar archive"))?;
            for e in entries {
                let mut e = e.with_context(|| format!("{what}: damaged tar archive"))?;
                if !e.header().entry_type().is_file() {
                    continue;
                }
                let name = e
                    .path()
                    .with_context(|| format!("{what}: a member name is not a path"))?
                    .to_string_lossy()
                    .trim_start_matches("./")
                    .to_string();
                let mut data = Vec::with_capacity(e.size() as usize);
                e.read_to_end(&mut data).with_context(|| {
                    format!("{what}: reading member {name} (truncated archive?)")
                })?;
                files.insert(name, data);
            }
        }
        Ok(Tree { what, files })
    }

    fn get(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(|v| &v[..])
    }

    fn json(&self, name: &str) -> Result<Value> {
        let data = self
            .get(name)
            .with_context(|| format!("{}: {name} is missing", self.what))?;
        serde_json::from_slice(data)
            .with_context(|| format!("{}: {name} is not valid JSON", self.what))
    }

    /// A blob named by a descriptor, checked against its digest and size.
    fn blob(&self, desc: &Value, role: &str) -> Result<(String, Vec<u8>)> {
        let digest = desc["digest"]
            .as_str()
            .with_context(|| format!("{}: a {role} descriptor has no digest", self.what))?;
        let hex = digest.strip_prefix("sha256:").filter(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        });
        let hex = hex.with_context(|| {
            format!(
                "{}: {role} digest {digest:?} is not sha256:<64 lower-case hex digits>",
                self.what
            )
        })?;
        let data = self
            .get(&format!("blobs/sha256/{hex}"))
            .with_context(|| format!("{}: the {role} blob {digest} is missing", self.what))?;
        let got = oci::sha256(data);
        ensure!(
            got == digest,
            "{}: the {role} blob {digest} hashes to {got}: the archive is damaged or was altered",
            self.what
        );
        if let Some(size) = desc["size"].as_u64() {
            ensure!(
                size == data.len() as u64,
                "{}: the {role} blob {digest} is {} bytes, its descriptor says {size}",
                self.what,
                data.len()
            );
        }
        Ok((digest.to_string(), data.to_vec()))
    }
}

fn read_dir(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Vec<u8>>) -> Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        let t = e.file_type()?;
        if t.is_dir() {
            read_dir(&e.path(), &format!("{name}/"), out)?;
        } else if t.is_file() {
            out.insert(name, std::fs::read(e.path())?);
        }
    }
    Ok(())
}

/// Whether a descriptor's platform (if it has one) is linux/amd64.
fn platform_ok(desc: &Value) -> bool {
    match desc.get("platform") {
        None => true,
        Some(p) => p["os"] == "linux" && p["architecture"] == "amd64",
    }
}

fn platform_text(desc: &Value) -> String {
    let p = &desc["platform"];
    format!(
        "{}/{}",
        p["os"].as_str().unwrap_or("?"),
        p["architecture"].as_str().unwrap_or("?")
    )
}

/// Reads and checks the image at `path`; returns it re-packed under `reference`.
pub fn import(path: &Path, reference: &str) -> Result<ImageBlobs> {
    let reference = oci::normalize_reference(reference)?;
    let tree = Tree::read(path)?;
    if tree.get("index.json").is_some() {
        oci_layout(&tree, &reference)
    } else if tree.get("manifest.json").is_some() {
        docker_save(&tree, &reference)
    } else {
        bail!(
            "{}: neither an OCI image layout (no index.json) nor a docker-save archive (no manifest.json)",
            tree.what
        )
    }
}

fn oci_layout(tree: &Tree, reference: &str) -> Result<ImageBlobs> {
    let index = tree.json("index.json")?;
    // Walk nested indexes down to image manifests for linux/amd64.
    let mut found: Vec<Value> = Vec::new();
    let mut other: Vec<String> = Vec::new();
    let mut queue: Vec<(Value, usize)> = vec![(index, 0)];
    while let Some((idx, depth)) = queue.pop() {
        ensure!(
            depth <= MAX_INDEX_DEPTH,
            "{}: image indexes nest deeper than {MAX_INDEX_DEPTH}",
            tree.what
        );
        let list = idx["manifests"]
            .as_array()
            .with_context(|| format!("{}: an index has no \"manifests\" list", tree.what))?;
        for d in list {
            let mt = d["mediaType"].as_str().unwrap_or("");
            if mt == oci::MEDIA_TYPE_INDEX || mt == MEDIA_TYPE_DOCKER_LIST {
                let (_, data) = tree.blob(d, "index")?;
                let v: Value = serde_json::from_slice(&data)
                    .with_context(|| format!("{}: a nested index is not JSON", tree.what))?;
                queue.push((v, depth + 1));
            } else if mt == oci::MEDIA_TYPE_MANIFEST || mt == MEDIA_TYPE_DOCKER_MANIFEST {
                if platform_ok(d) {
                    found.push(d.clone());
                } else {
                    other.push(platform_text(d));
                }
            }
        }
    }
    let desc = match found.len() {
        1 => found.remove(0),
        0 if !other.is_empty() => bail!(
            "{}: no image for linux/amd64 (it has {}); berth images are amd64",
            tree.what,
            other.join(", ")
        ),
        0 => bail!("{}: the index lists no image manifest", tree.what),
        n => bail!(
            "{}: holds {n} images; give an archive of one image (e.g. `docker save IMAGE:TAG`)",
            tree.what
        ),
    };
    let (manifest_digest, manifest) = tree.blob(&desc, "manifest")?;
    let m: Value = serde_json::from_slice(&manifest)
        .with_context(|| format!("{}: the manifest is not JSON", tree.what))?;
    let mut blobs = BTreeMap::new();
    let (config_digest, config) = tree.blob(&m["config"], "config")?;
    let c = check_config(tree, &config)?;
    let layers = m["layers"]
        .as_array()
        .with_context(|| format!("{}: the manifest has no \"layers\"", tree.what))?;
    for l in layers {
        let mt = l["mediaType"].as_str().unwrap_or("");
        ensure!(
            LAYER_TYPES.contains(&mt),
            "{}: layer media type {mt:?} is not one containerd unpacks ({})",
            tree.what,
            LAYER_TYPES.join(", ")
        );
        let (d, data) = tree.blob(l, "layer")?;
        blobs.insert(d, data);
    }
    let diff_id = c["rootfs"]["diff_ids"][0]
        .as_str()
        .unwrap_or("")
        .to_string();
    blobs.insert(config_digest, config);
    blobs.insert(manifest_digest.clone(), manifest.clone());
    Ok(ImageBlobs {
        reference: reference.to_string(),
        index: oci::index_json(reference, &manifest_digest, manifest.len())?,
        manifest_digest,
        diff_id,
        blobs,
    })
}

/// The image config must be for linux/amd64.
fn check_config(tree: &Tree, config: &[u8]) -> Result<Value> {
    let c: Value = serde_json::from_slice(config)
        .with_context(|| format!("{}: the image config is not JSON", tree.what))?;
    let (os, arch) = (
        c["os"].as_str().unwrap_or("?"),
        c["architecture"].as_str().unwrap_or("?"),
    );
    ensure!(
        os == "linux" && arch == "amd64",
        "{}: the image is for {os}/{arch}; berth images run linux/amd64",
        tree.what
    );
    Ok(c)
}

fn docker_save(tree: &Tree, reference: &str) -> Result<ImageBlobs> {
    let list = tree.json("manifest.json")?;
    let items = list
        .as_array()
        .with_context(|| format!("{}: manifest.json is not a list", tree.what))?;
    ensure!(
        items.len() == 1,
        "{}: holds {} images; give an archive of one image (`docker save IMAGE:TAG`)",
        tree.what,
        items.len()
    );
    let item = &items[0];
    let config_name = item["Config"]
        .as_str()
        .with_context(|| format!("{}: manifest.json has no \"Config\"", tree.what))?;
    let config = tree
        .get(config_name)
        .with_context(|| format!("{}: the config {config_name} is missing", tree.what))?
        .to_vec();
    let c = check_config(tree, &config)?;
    let diff_ids: Vec<&str> = c["rootfs"]["diff_ids"]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let layer_names: Vec<&str> = item["Layers"]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    ensure!(
        !layer_names.is_empty() && layer_names.len() == diff_ids.len(),
        "{}: manifest.json lists {} layers, the config's rootfs.diff_ids {}",
        tree.what,
        layer_names.len(),
        diff_ids.len()
    );
    let mut blobs = BTreeMap::new();
    let mut layers = Vec::new();
    for (name, want) in layer_names.iter().zip(&diff_ids) {
        let data = tree
            .get(name)
            .with_context(|| format!("{}: layer {name} is missing", tree.what))?;
        let got = oci::sha256(data);
        ensure!(
            got == *want,
            "{}: layer {name} hashes to {got}, the config says {want}: the archive is damaged or was altered",
            tree.what
        );
        layers.push(json!({"digest": got, "mediaType": oci::MEDIA_TYPE_LAYER, "size": data.len()}));
        blobs.insert(got, data.to_vec());
    }
    let config_digest = oci::sha256(&config);
    let manifest = serde_json::to_vec(&json!({
        "config": {"digest": config_digest, "mediaType": oci::MEDIA_TYPE_CONFIG, "size": config.len()},
        "layers": layers,
        "mediaType": oci::MEDIA_TYPE_MANIFEST,
        "schemaVersion": 2,
    }))?;
    let manifest_digest = oci::sha256(&manifest);
    blobs.insert(config_digest, config);
    blobs.insert(manifest_digest.clone(), manifest.clone());
    Ok(ImageBlobs {
        reference: reference.to_string(),
        index: oci::index_json(reference, &manifest_digest, manifest.len())?,
        manifest_digest,
        diff_id: diff_ids[0].to_string(),
        blobs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsimage::manifest::{Entry, ImagePath, Manifest};
    use crate::root::oci::{LayerCompression, OciImage};

    fn image() -> OciImage {
        let mut m = Manifest::new(0);
        m.insert(
            ImagePath::new("/bin/app").unwrap(),
            Entry::file(b"#!/bin/sh\n".to_vec(), 0o755, 0),
        )
        .unwrap();
        OciImage {
            name: "localhost/app:1".into(),
            rootfs: m,
            entrypoint: vec![],
            cmd: vec!["/bin/app".into()],
            env: vec![],
        }
    }

    fn write_layout(dir: &Path, b: &ImageBlobs) {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        std::fs::write(dir.join("index.json"), &b.index).unwrap();
        for (d, data) in &b.blobs {
            std::fs::write(dir.join("blobs/sha256").join(&d[7..]), data).unwrap();
        }
    }

    #[test]
    fn an_oci_archive_and_layout_keep_their_manifest_digest() {
        let b = oci::image_blobs(&image(), 0, LayerCompression::Gzip).unwrap();
        let d = tempfile::tempdir().unwrap();
        let tar = d.path().join("app.tar");
        let mut out = Vec::new();
        oci::write_blobs(&b, 0, &mut out).unwrap();
        std::fs::write(&tar, &out).unwrap();
        let got = import(&tar, "localhost/other:2").unwrap();
        assert_eq!(got.manifest_digest, b.manifest_digest);
        assert_eq!(got.reference, "localhost/other:2");
        assert!(String::from_utf8_lossy(&got.index).contains("localhost/other:2"));
        write_layout(&d.path().join("layout"), &b);
        let got = import(&d.path().join("layout"), "x:1").unwrap();
        assert_eq!(got.blobs, b.blobs);
    }

    #[test]
    fn damaged_foreign_and_missing_images_are_refused() {
        let b = oci::image_blobs(&image(), 0, LayerCompression::None).unwrap();
        let d = tempfile::tempdir().unwrap();
        // A layer whose bytes no longer match its digest.
        let mut bad = b.clone();
        let layer = bad
            .blobs
            .keys()
            .find(|k| bad.blobs[*k].len() > 1000)
            .unwrap()
            .clone();
        bad.blobs.get_mut(&layer).unwrap()[600] ^= 1;
        write_layout(&d.path().join("bad"), &bad);
        let e = format!("{:#}", import(&d.path().join("bad"), "x:1").unwrap_err());
        assert!(e.contains("hashes to") && e.contains(&layer), "{e}");
        // An arm64 image.
        let arm = String::from_utf8(b.index.clone())
            .unwrap()
            .replace("amd64", "arm64");
        let mut foreign = b.clone();
        foreign.index = arm.into_bytes();
        write_layout(&d.path().join("arm"), &foreign);
        let e = format!("{:#}", import(&d.path().join("arm"), "x:1").unwrap_err());
        assert!(e.contains("linux/arm64") && e.contains("amd64"), "{e}");
        // Not an image at all; not a tar; a truncated tar.
        std::fs::create_dir_all(d.path().join("empty")).unwrap();
        let e = format!("{:#}", import(&d.path().join("empty"), "x:1").unwrap_err());
        assert!(e.contains("no index.json"), "{e}");
        let mut out = Vec::new();
        oci::write_blobs(&b, 0, &mut out).unwrap();
        std::fs::write(d.path().join("cut.tar"), &out[..out.len() / 2]).unwrap();
        assert!(import(&d.path().join("cut.tar"), "x:1").is_err());
    }

    #[test]
    fn a_docker_save_archive_is_checked_against_its_diff_ids() {
        let b = oci::image_blobs(&image(), 0, LayerCompression::None).unwrap();
        let m: Value = serde_json::from_slice(&b.blobs[&b.manifest_digest]).unwrap();
        let cfg_d = m["config"]["digest"].as_str().unwrap();
        let layer_d = m["layers"][0]["digest"].as_str().unwrap();
        let d = tempfile::tempdir().unwrap();
        let save = |dir: &Path, layer: &[u8]| {
            std::fs::create_dir_all(dir.join("l1")).unwrap();
            std::fs::write(dir.join("cfg.json"), &b.blobs[cfg_d]).unwrap();
            std::fs::write(dir.join("l1/layer.tar"), layer).unwrap();
            std::fs::write(
                dir.join("manifest.json"),
                br#"[{"Config": "cfg.json", "RepoTags": ["app:1"], "Layers": ["l1/layer.tar"]}]"#,
            )
            .unwrap();
        };
        save(&d.path().join("ok"), &b.blobs[layer_d]);
        let got = import(&d.path().join("ok"), "localhost/app:1").unwrap();
        assert_eq!(got.diff_id, b.diff_id);
        let mut changed = b.blobs[layer_d].clone();
        changed[600] ^= 1;
        save(&d.path().join("bad"), &changed);
        let e = format!("{:#}", import(&d.path().join("bad"), "x:1").unwrap_err());
        assert!(e.contains("the config says"), "{e}");
    }
}
