//! OCI image archives: a [`Manifest`] tree as a one-layer image in the OCI image-layout tar
//! that `ctr images import` (containerd 1.6) and `skopeo copy oci-archive:` accept.
//!
//! ```text
//! oci-layout                      {"imageLayoutVersion":"1.0.0"}
//! index.json                      one manifest descriptor, annotated with the image name
//! blobs/sha256/<manifest digest>  application/vnd.oci.image.manifest.v1+json
//! blobs/sha256/<config digest>    application/vnd.oci.image.config.v1+json
//! blobs/sha256/<layer digest>     the rootfs as a (gzip-compressed) tar
//! ```
//!
//! containerd names an imported image after the `io.containerd.image.name` annotation (the full
//! reference); `org.opencontainers.image.ref.name` carries only the tag, as the OCI spec and
//! containerd's own exporter have it.
//!
//! Reproducible: every timestamp in the archive is the `mtime` given (tar header times are
//! clamped to it), owners come from the manifest and user/group names are left empty, entries are
//! sorted, gzip carries no name or time, JSON is compact with sorted keys.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::fsimage::manifest::{Entry, ImagePath, Kind, Manifest};

pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_TYPE_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The annotation containerd takes an imported image's name from.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI annotation for the reference (the tag) of a manifest in an image layout.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Registry implied by a reference without one, as in Docker and containerd.
const DEFAULT_DOMAIN: &str = "docker.io";

/// An image to write: its reference, its root filesystem and its process defaults.
#[derive(Clone, Debug)]
pub struct OciImage {
    /// The image reference, e.g. `docker.io/berth/hello:latest`. Short forms are normalised as
    /// Docker does (`hello` -> `docker.io/library/hello:latest`).
    pub name: String,
    pub rootfs: Manifest,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` strings.
    pub env: Vec<String>,
}

/// How the single layer is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerCompression {
    None,
    /// gzip at the default level, no file name, mtime 0.
    Gzip,
}

/// The blobs and JSON documents of an image, before they are put in a tar.
#[derive(Clone, Debug)]
pub struct ImageBlobs {
    /// The normalised reference (`docker.io/library/hello:latest`).
    pub reference: String,
    /// `sha256:<hex>` of the manifest: what `ctr images ls` shows as the image's digest.
    pub manifest_digest: String,
    /// `sha256:<hex>` of the uncompressed layer tar (the config's `rootfs.diff_ids[0]`).
    pub diff_id: String,
    pub index: Vec<u8>,
    /// By digest (`sha256:<hex>`): manifest, config and layer.
    pub blobs: BTreeMap<String, Vec<u8>>,
}

/// Writes `img` as an OCI archive with a gzip-compressed layer; returns the manifest digest
/// (`sha256:<hex>`). Every time in the archive is `mtime` (seconds since the epoch).
pub fn write_archive<W: Write>(img: &OciImage, mtime: i64, out: &mut W) -> Result<String> {
    write_archive_with(img, mtime, LayerCompression::Gzip, out)
}

/// [`write_archive`] with the layer compression chosen.
pub fn write_archive_with<W: Write>(
    img: &OciImage,
    mtime: i64,
    compression: LayerCompression,
    out: &mut W,
) -> Result<String> {
    let b = image_blobs(img, mtime, compression)?;
    write_blobs(&b, mtime, out)?;
    Ok(b.manifest_digest)
}

/// Writes an image's blobs and index as an OCI archive (the tar [`write_archive`] makes).
pub fn write_blobs<W: Write>(b: &ImageBlobs, mtime: i64, out: &mut W) -> Result<()> {
    let mut ar = tar::Builder::new(Counting { inner: out, n: 0 });
    let files: Vec<(String, &[u8])> = b
        .blobs
        .iter()
        .map(|(d, data)| (format!("blobs/{}", d.replace(':', "/")), &data[..]))
        .chain([
            ("index.json".to_string(), &b.index[..]),
            ("oci-layout".to_string(), OCI_LAYOUT),
        ])
        .collect();
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut h = fixed_header(tar::EntryType::Directory, 0o755, 0, 0, mtime)?;
        ar.append_data(&mut h, dir, std::io::empty())
            .with_context(|| format!("writing {dir} to the OCI archive"))?;
    }
    for (path, data) in files {
        // A large blob (a layer) starts at a 4 KiB boundary of the archive, and its files at
        // 4 KiB boundaries of it (layer_tar): aligned in the root's ext4 too.
        if data.len() >= ALIGN_MIN {
            let mut pax = Vec::new();
            pad_to_block(&mut pax, ar.get_ref().n);
            if !pax.is_empty() {
                write_pax(&mut ar, &path, &pax, mtime)
                    .with_context(|| format!("writing {path} to the OCI archive"))?;
            }
        }
        let mut h = fixed_header(tar::EntryType::Regular, 0o644, 0, 0, mtime)?;
        h.set_size(data.len() as u64);
        ar.append_data(&mut h, &path, data)
            .with_context(|| format!("writing {path} to the OCI archive"))?;
    }
    ar.into_inner()
        .context("finishing the OCI archive")?
        .flush()?;
    Ok(())
}

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// A writer that counts what it passes on (where the archive is, for alignment).
struct Counting<W> {
    inner: W,
    n: usize,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k;
        Ok(k)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Builds the layer, config, manifest and index of `img` (what [`write_archive`] puts in the tar).
pub fn image_blobs(
    img: &OciImage,
    mtime: i64,
    compression: LayerCompression,
) -> Result<ImageBlobs> {
    let reference = normalize_reference(&img.name)?;
    for e in &img.env {
        ensure!(
            e.contains('=') && !e.starts_with('='),
            "image {reference}: environment entry {e:?} is not KEY=value"
        );
    }
    let layer_tar = layer_tar(&img.rootfs, mtime)
        .with_context(|| format!("image {reference}: writing the layer"))?;
    let diff_id = sha256(&layer_tar);
    let (layer, layer_type) = match compression {
        LayerCompression::None => (layer_tar, MEDIA_TYPE_LAYER),
        LayerCompression::Gzip => {
            let mut z = flate2::GzBuilder::new()
                .mtime(0)
                .write(Vec::new(), flate2::Compression::default());
            z.write_all(&layer_tar)?;
            (z.finish()?, MEDIA_TYPE_LAYER_GZIP)
        }
    };
    let created = rfc3339(mtime)?;

    // Keys are written in sorted order; serde_json's default map is sorted as well.
    let mut process = serde_json::Map::new();
    if !img.cmd.is_empty() {
        process.insert("Cmd".into(), json!(img.cmd));
    }
    if !img.entrypoint.is_empty() {
        process.insert("Entrypoint".into(), json!(img.entrypoint));
    }
    if !img.env.is_empty() {
        process.insert("Env".into(), json!(img.env));
    }
    let config = to_json(&json!({
        "architecture": "amd64",
        "config": process,
        "created": created,
        "history": [{"created": created, "created_by": "berth"}],
        "os": "linux",
        "rootfs": {"diff_ids": [diff_id], "type": "layers"},
    }))?;
    let layer_digest = sha256(&layer);
    let config_digest = sha256(&config);
    let manifest = to_json(&json!({
        "config": {"digest": config_digest, "mediaType": MEDIA_TYPE_CONFIG, "size": config.len()},
        "layers": [{"digest": layer_digest, "mediaType": layer_type, "size": layer.len()}],
        "mediaType": MEDIA_TYPE_MANIFEST,
        "schemaVersion": 2,
    }))?;
    let manifest_digest = sha256(&manifest);
    let index = index_json(&reference, &manifest_digest, manifest.len())?;
    let mut blobs = BTreeMap::new();
    blobs.insert(layer_digest, layer);
    blobs.insert(config_digest, config);
    blobs.insert(manifest_digest.clone(), manifest);
    Ok(ImageBlobs {
        reference,
        manifest_digest,
        diff_id,
        index,
        blobs,
    })
}

/// The `index.json` of an archive holding one linux/amd64 manifest, named `reference` (already
/// normalised) for containerd.
pub fn index_json(reference: &str, manifest_digest: &str, manifest_size: usize) -> Result<Vec<u8>> {
    let tag = reference
        .rsplit_once(':')
        .map(|(_, t)| t.to_string())
        .context("normalised reference has no tag")?;
    to_json(&json!({
        "manifests": [{
            "annotations": {
                ANNOTATION_CONTAINERD_NAME: reference,
                ANNOTATION_REF_NAME: tag,
            },
            "digest": manifest_digest,
            "mediaType": MEDIA_TYPE_MANIFEST,
            "platform": {"architecture": "amd64", "os": "linux"},
            "size": manifest_size,
        }],
        "mediaType": MEDIA_TYPE_INDEX,
        "schemaVersion": 2,
    }))
}

fn to_json(v: &Value) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(v)?)
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Normalises an image reference as Docker and containerd do: a first component without `.`
/// or `:` (and not `localhost`) is not a registry, so `docker.io/` goes in front (and
/// `library/` for a one-component Docker Hub name); a missing tag is `latest`. Digest
/// references are refused: the digest is what this module computes.
pub fn normalize_reference(name: &str) -> Result<String> {
    let hint = "use a reference like docker.io/berth/hello:latest";
    ensure!(!name.is_empty(), "empty image name: {hint}");
    ensure!(
        !name.contains('@'),
        "image name {name:?} has a digest; berth computes the digest, give a tag instead ({hint})"
    );
    let (domain, rest) = match name.split_once('/') {
        Some((d, r)) if d.contains('.') || d.contains(':') || d == "localhost" => {
            (d.to_string(), r.to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    let (path, tag) = match rest.rsplit_once(':') {
        Some((p, t)) => (p.to_string(), t.to_string()),
        None => (rest.clone(), "latest".to_string()),
    };
    let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    let path_ok = path.split('/').all(|c| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && c.as_bytes()[0].is_ascii_alphanumeric()
            && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
    });
    ensure!(
        path_ok,
        "image name {name:?}: repository {path:?} must be lower-case letters, digits and \
         separators (. _ -) between '/'s ({hint})"
    );
    let tag_ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && tag.as_bytes()[0] != b'.'
        && tag.as_bytes()[0] != b'-';
    ensure!(
        tag_ok,
        "image name {name:?}: tag {tag:?} must be up to 128 letters, digits, '.', '_' or '-' \
         ({hint})"
    );
    Ok(format!("{domain}/{path}:{tag}"))
}

/// Seconds since the epoch as RFC 3339 UTC (`1970-01-01T00:00:00Z`).
pub fn rfc3339(secs: i64) -> Result<String> {
    ensure!(secs >= 0, "timestamp {secs} is before 1970");
    let rem = secs % 86_400;
    let (year, month, day) = crate::units::civil_from_days(secs / 86_400);
    Ok(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    ))
}

/// A header with only the given fields set (the rest zero: no user/group names, no device
/// numbers), so nothing from the host leaks in.
fn fixed_header(
    kind: tar::EntryType,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
) -> Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(u64::from(uid));
    h.set_gid(u64::from(gid));
    h.set_mtime(u64::try_from(mtime).with_context(|| format!("mtime {mtime} is before 1970"))?);
    h.set_size(0);
    Ok(h)
}

/// The rootfs as an uncompressed tar: entries in manifest order without the root itself, names
/// relative (`usr/bin/x`, directories with a trailing `/`), times clamped to `mtime`, extended
/// attributes as PAX `SCHILY.xattr.*` records (which containerd applies). A hard-link group is
/// written as a regular file at its first name in path order and links to it after; sockets
/// cannot be archived and are left out, as GNU tar does.
pub fn layer_tar(m: &Manifest, mtime: i64) -> Result<Vec<u8>> {
    m.validate()?;
    let mut first_name: BTreeMap<&ImagePath, &ImagePath> = BTreeMap::new();
    for (path, e) in m.iter() {
        let file = match &e.kind {
            Kind::Hardlink(t) => t,
            Kind::File(_) => path,
            _ => continue,
        };
        first_name.entry(file).or_insert(path);
    }
    let mut ar = tar::Builder::new(Vec::new());
    for (path, e) in m.iter() {
        if path.is_root() || e.kind == Kind::Socket {
            continue;
        }
        let rel = &path.as_str()[1..];
        let time = e.mtime.min(mtime);
        let mode = u32::from(e.mode);
        let ctx = || format!("adding {path} to the layer");
        let mut pax = pax_xattrs(&e.xattrs).with_context(ctx)?;
        // A large file's data starts at a 4 KiB boundary of the layer (itself aligned in the
        // archive, so in the root's ext4): when an earlier file grows, the blocks of this one
        // stay whole blocks, only elsewhere, and a delta bundle finds them (bundle pieces).
        if let Kind::File(data) = &e.kind {
            if data.len() >= ALIGN_MIN {
                pad_to_block(&mut pax, ar.get_ref().len());
            }
        }
        if !pax.is_empty() {
            write_pax(&mut ar, rel, &pax, time).with_context(ctx)?;
        }
        match &e.kind {
            Kind::Dir => {
                let mut h = fixed_header(tar::EntryType::Directory, mode, e.uid, e.gid, time)?;
                ar.append_data(&mut h, format!("{rel}/"), std::io::empty())
                    .with_context(ctx)?;
            }
            Kind::File(_) | Kind::Hardlink(_) => {
                let file = match &e.kind {
                    Kind::Hardlink(t) => t,
                    _ => path,
                };
                // All names of a file are one inode: its mode and owner are the file's.
                let Some(
                    fe @ Entry {
                        kind: Kind::File(data),
                        ..
                    },
                ) = m.get(file)
                else {
                    bail!("{path}: hard link target {file} is not a file");
                };
                let (mode, time) = (u32::from(fe.mode), fe.mtime.min(mtime));
                let first = first_name[file];
                if first == path {
                    let mut h = fixed_header(tar::EntryType::Regular, mode, fe.uid, fe.gid, time)?;
                    h.set_size(data.len() as u64);
                    ar.append_data(&mut h, rel, &data[..]).with_context(ctx)?;
                } else {
                    let mut h = fixed_header(tar::EntryType::Link, mode, fe.uid, fe.gid, time)?;
                    ar.append_link(&mut h, rel, &first.as_str()[1..])
                        .with_context(ctx)?;
                }
            }
            Kind::Symlink(target) => {
                let mut h = fixed_header(tar::EntryType::Symlink, 0o777, e.uid, e.gid, time)?;
                ar.append_link(&mut h, rel, target).with_context(ctx)?;
            }
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                let kind = if matches!(e.kind, Kind::CharDev { .. }) {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                };
                let mut h = fixed_header(kind, mode, e.uid, e.gid, time)?;
                h.set_device_major(*major)?;
                h.set_device_minor(*minor)?;
                ar.append_data(&mut h, rel, std::io::empty())
                    .with_context(ctx)?;
            }
            Kind::Fifo => {
                let mut h = fixed_header(tar::EntryType::Fifo, mode, e.uid, e.gid, time)?;
                ar.append_data(&mut h, rel, std::io::empty())
                    .with_context(ctx)?;
            }
            Kind::Socket => {}
        }
    }
    Ok(ar.into_inner()?)
}

/// Files from this size on start their data at a 4 KiB boundary of a layer or an archive.
const ALIGN_MIN: usize = 16 << 10;
const ALIGN: usize = 4096;

/// One PAX record: `<length> <key>=<value>\n`, the length counting its own digits.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let payload_len = 1 + key.len() + 1 + value.len() + 1;
    let mut len = payload_len + 1;
    while len != payload_len + len.to_string().len() {
        len = payload_len + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// `SCHILY.xattr.<name>=<value>` records (which containerd applies) for the entry that follows.
fn pax_xattrs(xattrs: &BTreeMap<String, Vec<u8>>) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    for (name, value) in xattrs {
        ensure!(
            !name.contains('=') && !name.contains('\0'),
            "xattr name {name:?} cannot be stored in a tar"
        );
        body.extend(pax_record(&format!("SCHILY.xattr.{name}"), value));
    }
    Ok(body)
}

/// Grows the PAX records `body` (maybe empty) with a `comment` record, which readers ignore,
/// so that the data of the entry after it starts at a multiple of [`ALIGN`], given that the
/// archive holds `at` bytes now: PAX header (512) + body (whole 512-byte blocks) + the
/// entry's header (512). Nothing changes if it is aligned already.
fn pad_to_block(body: &mut Vec<u8>, at: usize) {
    let blocks = |b: usize| b.div_ceil(512) * 512;
    let start = |b: &[u8]| {
        at + if b.is_empty() {
            0
        } else {
            512 + blocks(b.len())
        } + 512
    };
    if start(body).is_multiple_of(ALIGN) {
        return;
    }
    // The smallest padded body: a whole number of blocks, room for a record of at least 20
    // bytes, and the data aligned. (A record cannot be exactly 100 or 1000 bytes long, its
    // length's digits growing with it: then the next aligned size.)
    let mut target = blocks(body.len() + 20);
    while !(at + 512 + target + 512).is_multiple_of(ALIGN) {
        target += 512;
    }
    loop {
        let room = target - body.len();
        let mut fill = room.saturating_sub(" comment=\n".len() + room.to_string().len());
        while fill > 0 && pax_record("comment", &vec![b'0'; fill]).len() > room {
            fill -= 1;
        }
        let r = pax_record("comment", &vec![b'0'; fill]);
        if r.len() == room {
            body.extend(r);
            return;
        }
        target += ALIGN;
    }
}

/// A PAX extended header (`x`) with the records `body`, for the entry that follows.
fn write_pax<W: Write>(ar: &mut tar::Builder<W>, rel: &str, body: &[u8], mtime: i64) -> Result<()> {
    let mut h = fixed_header(tar::EntryType::XHeader, 0o644, 0, 0, mtime)?;
    h.set_size(body.len() as u64);
    // The name of a PAX header is informational; keep it short and within ustar limits.
    let base = rel.rsplit('/').next().unwrap_or(rel);
    let base: String = base.chars().take(80).collect();
    ar.append_data(&mut h, format!("PaxHeaders/{base}"), body)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn p(s: &str) -> ImagePath {
        ImagePath::new(s).unwrap()
    }

    fn image() -> OciImage {
        let mut m = Manifest::new(100);
        m.insert(
            p("/bin/hello"),
            Entry::file(b"#!/bin/sh\necho hi\n".to_vec(), 0o755, 100),
        )
        .unwrap();
        let mut e = Entry::file(b"cap".to_vec(), 0o755, 500);
        e.uid = 1000;
        e.gid = 1001;
        e.xattrs.insert(
            "security.capability".into(),
            vec![1, 0, 0, 2, 0x20, 0, 0, 0],
        );
        m.insert(p("/bin/ping"), e).unwrap();
        m.insert(
            p("/bin/a-link"),
            Entry::new(Kind::Hardlink(p("/bin/hello")), 0o755, 100),
        )
        .unwrap();
        m.insert(p("/etc/sh"), Entry::symlink("/bin/hello", 100))
            .unwrap();
        let long = format!("/usr/share/{}/file", "d".repeat(150));
        m.insert(p(&long), Entry::file(b"x".to_vec(), 0o644, 100))
            .unwrap();
        m.insert(
            p("/dev/null"),
            Entry::new(Kind::CharDev { major: 1, minor: 3 }, 0o666, 100),
        )
        .unwrap();
        OciImage {
            name: "docker.io/berth/hello:latest".into(),
            rootfs: m,
            entrypoint: vec!["/bin/hello".into()],
            cmd: vec!["--flag".into()],
            env: vec!["PATH=/bin".into()],
        }
    }

    #[test]
    fn references_normalise_like_docker() {
        let n = |s: &str| normalize_reference(s).unwrap();
        assert_eq!(n("hello"), "docker.io/library/hello:latest");
        assert_eq!(n("berth/hello:1.0"), "docker.io/berth/hello:1.0");
        assert_eq!(
            n("docker.io/berth/hello:latest"),
            "docker.io/berth/hello:latest"
        );
        assert_eq!(n("localhost:5000/x/y"), "localhost:5000/x/y:latest");
        assert_eq!(n("ghcr.io/a/b:v1"), "ghcr.io/a/b:v1");
        for bad in ["", "Hello", "a//b", "x@sha256:00", "a:-x", "a/b:"] {
            assert!(normalize_reference(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400).unwrap(), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000).unwrap(), "2023-11-14T22:13:20Z");
        assert!(rfc3339(-1).is_err());
    }

    /// Large files start at 4 KiB boundaries of the layer, and the layer at one of the archive
    /// (so a grown earlier file leaves their blocks whole for a delta bundle); xattrs survive
    /// beside the padding; GNU tar reads both.
    #[test]
    fn large_files_and_layers_are_aligned_to_blocks() {
        let mut img = image();
        let mut sizes = Vec::new();
        for (i, n) in [16384usize, 100_000, 5000, 70_001, 1 << 20]
            .iter()
            .enumerate()
        {
            let mut e = Entry::file(vec![i as u8 + 1; *n], 0o644, 100);
            if i == 1 {
                e.xattrs.insert("user.k".into(), b"v".to_vec());
            }
            img.rootfs.insert(p(&format!("/data/f{i}")), e).unwrap();
            sizes.push(*n);
        }
        let t = layer_tar(&img.rootfs, 300).unwrap();
        let mut ar = tar::Archive::new(&t[..]);
        let mut aligned = 0;
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            if let Some(i) = path.strip_prefix("data/f") {
                let i: usize = i.parse().unwrap();
                let at = e.raw_file_position();
                if sizes[i] >= ALIGN_MIN {
                    assert_eq!(at % 4096, 0, "{path} at {at}");
                    aligned += 1;
                }
                let mut d = Vec::new();
                e.read_to_end(&mut d).unwrap();
                assert_eq!(d, vec![i as u8 + 1; sizes[i]]);
                if i == 1 {
                    let keys: Vec<_> = e
                        .pax_extensions()
                        .unwrap()
                        .unwrap()
                        .map(|x| x.unwrap().key().unwrap().to_string())
                        .collect();
                    assert!(
                        keys.contains(&"SCHILY.xattr.user.k".to_string()),
                        "{keys:?}"
                    );
                }
            }
        }
        assert_eq!(aligned, 4);
        // The archive: the layer blob's data at a 4 KiB boundary.
        let b = image_blobs(&img, 300, LayerCompression::None).unwrap();
        let mut out = Vec::new();
        write_blobs(&b, 300, &mut out).unwrap();
        let mut ar = tar::Archive::new(&out[..]);
        let mut found = false;
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            if e.size() as usize == t.len() {
                assert_eq!(e.raw_file_position() % 4096, 0);
                found = true;
            }
        }
        assert!(found, "the layer is in the archive");
        for bytes in [&t, &out] {
            let d = tempfile::tempdir().unwrap();
            let f = d.path().join("x.tar");
            std::fs::write(&f, bytes).unwrap();
            let o = std::process::Command::new("tar")
                .arg("-tvf")
                .arg(&f)
                .output()
                .expect("running tar");
            assert!(
                o.status.success() && o.stderr.is_empty(),
                "{}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }

    #[test]
    fn padding_aligns_the_next_entry_from_any_position_and_body() {
        for at in (0..3 * 4096).step_by(512) {
            for len in [0usize, 1, 50, 411, 480, 511, 512, 988, 1000, 1600, 4000] {
                let mut body = vec![b'x'; len];
                pad_to_block(&mut body, at);
                let start =
                    at + if body.is_empty() {
                        0
                    } else {
                        512 + body.len().div_ceil(512) * 512
                    } + 512;
                assert_eq!(start % 4096, 0, "at {at}, body {len} -> {}", body.len());
                assert!(body.starts_with(&vec![b'x'; len]));
            }
        }
    }

    #[test]
    fn layer_tar_entries_links_owners_and_xattrs() {
        let t = layer_tar(&image().rootfs, 300).unwrap();
        let mut ar = tar::Archive::new(&t[..]);
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let h = e.header().clone();
            assert!(h.username_bytes().is_none_or(|u| u.is_empty()));
            assert!(h.mtime().unwrap() <= 300);
            if path == "bin/ping" {
                assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (1000, 1001));
                assert_eq!(h.mtime().unwrap(), 300, "clamped");
                let x: Vec<_> = e
                    .pax_extensions()
                    .unwrap()
                    .unwrap()
                    .map(|x| x.unwrap().key().unwrap().to_string())
                    .collect();
                assert_eq!(x, ["SCHILY.xattr.security.capability"]);
            }
            if path == "bin/a-link" {
                assert_eq!(h.entry_type(), tar::EntryType::Regular);
                let mut s = String::new();
                e.read_to_string(&mut s).unwrap();
                assert!(s.contains("echo hi"));
            }
            if path == "bin/hello" {
                assert_eq!(h.entry_type(), tar::EntryType::Link);
                assert_eq!(e.link_name().unwrap().unwrap().to_str(), Some("bin/a-link"));
            }
            if path == "dev/null" {
                assert_eq!(h.entry_type(), tar::EntryType::Char);
                assert_eq!(h.device_major().unwrap(), Some(1));
                assert_eq!(h.device_minor().unwrap(), Some(3));
            }
            seen.push(path);
        }
        assert_eq!(seen[0], "bin/");
        assert!(seen.iter().any(|p| p.len() > 150 && p.ends_with("/file")));
        assert!(seen.contains(&"etc/sh".to_string()));
    }

    #[test]
    fn json_documents_have_sorted_keys_and_consistent_digests() {
        let b = image_blobs(&image(), 0, LayerCompression::Gzip).unwrap();
        fn sorted(v: &Value) {
            match v {
                Value::Object(m) => {
                    let keys: Vec<&String> = m.keys().collect();
                    let mut s = keys.clone();
                    s.sort();
                    assert_eq!(keys, s);
                    m.values().for_each(sorted);
                }
                Value::Array(a) => a.iter().for_each(sorted),
                _ => {}
            }
        }
        let index: Value = serde_json::from_slice(&b.index).unwrap();
        sorted(&index);
        // Keys in the serialised bytes appear in sorted order too (not just after parsing).
        let text = String::from_utf8(b.index.clone()).unwrap();
        assert!(
            text.find("\"manifests\"").unwrap()
                < text
                    .find("\"mediaType\":\"application/vnd.oci.image.index")
                    .unwrap()
        );
        for (d, data) in &b.blobs {
            assert_eq!(&sha256(data), d);
        }
        let manifest: Value = serde_json::from_slice(&b.blobs[&b.manifest_digest]).unwrap();
        sorted(&manifest);
        let config_digest = manifest["config"]["digest"].as_str().unwrap();
        let config: Value = serde_json::from_slice(&b.blobs[config_digest]).unwrap();
        sorted(&config);
        assert_eq!(config["rootfs"]["diff_ids"][0], b.diff_id.as_str());
        assert_eq!(config["created"], "1970-01-01T00:00:00Z");
        assert_eq!(config["config"]["Entrypoint"][0], "/bin/hello");
        let layer = &b.blobs[manifest["layers"][0]["digest"].as_str().unwrap()];
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&layer[..])
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(sha256(&raw), b.diff_id);
        assert_eq!(&layer[4..8], &[0, 0, 0, 0], "gzip mtime 0");
        let ann = &index["manifests"][0]["annotations"];
        assert_eq!(
            ann[ANNOTATION_CONTAINERD_NAME],
            "docker.io/berth/hello:latest"
        );
        assert_eq!(ann[ANNOTATION_REF_NAME], "latest");
    }

    #[test]
    fn archive_is_reproducible_and_uncompressed_layers_work() {
        let img = image();
        let mut a = Vec::new();
        let d1 = write_archive(&img, 1_700_000_000, &mut a).unwrap();
        let mut b = Vec::new();
        let d2 = write_archive(&img, 1_700_000_000, &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(d1, d2);
        let mut c = Vec::new();
        let d3 = write_archive_with(&img, 1_700_000_000, LayerCompression::None, &mut c).unwrap();
        assert_ne!(d1, d3);
        let names: Vec<String> = tar::Archive::new(&c[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2 + 3 + 2);
        assert_eq!(&names[..2], ["blobs/", "blobs/sha256/"]);
        assert_eq!(&names[5..], ["index.json", "oci-layout"]);
    }

    #[test]
    fn bad_env_is_an_error() {
        let mut img = image();
        img.env = vec!["NOEQUALS".into()];
        assert!(image_blobs(&img, 0, LayerCompression::None)
            .unwrap_err()
            .to_string()
            .contains("KEY=value"));
    }
}
