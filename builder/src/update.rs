//! Update bundles on the host (`berth_contract::bundle` is the format): written by `berth
//! build` next to the disk images (`update.bundle`, and with `--delta-from` a delta bundle),
//! read by `berth bundle inspect` and checked by `berth bundle verify` the way a machine checks
//! one before it writes a byte. Release keys: `berth keygen NAME` writes `NAME.key` (the
//! ed25519 secret, 0600) and `NAME.pub`, one line each:
//!
//! ```text
//! berth-ed25519-secret <64 hex digits>
//! berth-ed25519 <64 hex digits>
//! ```

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::artifacts::BuildManifest;
use crate::outdir;
use crate::profile::Profile;
use crate::root::image::Verity;
use crate::util::printer::Printer;

pub use crate::util::keys::{keygen, public_line, read_public, read_secret, SIGNING_KEY_ENV};
use anyhow::{bail, ensure, Context, Result};
use berth_contract::bundle::{self, Chunk, Header, Kind, Origin, Payload, Piece, Source, CHUNK};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// The key that signs this build's bundles: `--signing-key`, else `$BERTH_SIGNING_KEY`. It must
/// be the pair of the profile's `update.public-key`, or the machines would refuse the bundle.
pub fn signing(
    profile: &Profile,
    explicit: Option<&Path>,
    p: &Printer,
) -> Result<Option<SigningKey>> {
    let path = explicit.map(Path::to_path_buf).or_else(|| {
        std::env::var_os(SIGNING_KEY_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    let key = path.as_deref().map(read_secret).transpose()?;
    match (&key, &profile.update.public_key) {
        (Some(k), Some(pubpath)) => {
            let want = read_public(pubpath)?;
            ensure!(
                k.verifying_key() == want,
                "the signing key {} is not the pair of the profile's update.public-key {}: machines of this image would refuse its bundles",
                path.as_deref().map_or(String::new(), |p| p.display().to_string()),
                pubpath.display()
            );
        }
        (None, Some(pubpath)) => {
            let _ = p;
            tracing::warn!(
                "update.bundle will be unsigned: machines of this image trust {} and will refuse it (give --signing-key or ${SIGNING_KEY_ENV})",
                pubpath.display()
            )
        }
        _ => {}
    }
    Ok(key)
}

/// The build a delta bundle is made against: its root image and verity tree, and what its
/// manifest says.
pub struct Base {
    pub dir: PathBuf,
    pub roothash: [u8; 32],
    pub image: String,
    pub version: String,
}

impl Base {
    pub fn read(dir: &Path) -> Result<Base> {
        let m = BuildManifest::read(dir).with_context(|| {
            format!(
                "--delta-from {}: not a berth output directory",
                dir.display()
            )
        })?;
        let mut roothash = [0u8; 32];
        let h = hex::decode(&m.verity.roothash)
            .ok()
            .filter(|h| h.len() == 32)
            .with_context(|| {
                format!(
                    "--delta-from {}: manifest.json has no root hash",
                    dir.display()
                )
            })?;
        roothash.copy_from_slice(&h);
        for f in [outdir::ROOT_IMAGE, outdir::ROOT_VERITY] {
            ensure!(
                dir.join(f).is_file(),
                "--delta-from {}: {f} is missing",
                dir.display()
            );
        }
        Ok(Base {
            dir: dir.to_path_buf(),
            roothash,
            image: m.image.name,
            version: m.image.version,
        })
    }
}

/// Writes update.bundle (and update-delta.bundle against `base`) into `out`.
pub fn bundles(
    profile: &Profile,
    verity: &Verity,
    key: Option<&SigningKey>,
    base: Option<&Base>,
    out: &Path,
    p: &Printer,
) -> Result<Vec<outdir::FileSum>> {
    let step = p.step("update bundle");
    let cmdline = berth_contract::cmdline::extra_words(&profile.kernel.cmdline).join(" ");
    let meta = Meta {
        image: &profile.image.name,
        version: &profile.image.version,
        cmdline: &cmdline,
        tries: profile.boot.tries,
        roothash: verity.info.root_hash,
        base: None,
    };
    let names = [
        outdir::ROOT_IMAGE,
        outdir::ROOT_VERITY,
        outdir::VMLINUZ,
        outdir::INITRD,
    ];
    let paths: Vec<PathBuf> = names.iter().map(|n| out.join(n)).collect();
    let files: Vec<PayloadFile> = Kind::ALL
        .iter()
        .zip(&paths)
        .map(|(k, p)| PayloadFile {
            kind: *k,
            path: p,
            base: None,
        })
        .collect();
    let (h, full_sum) = write_summed(&out.join(outdir::UPDATE_BUNDLE), &meta, &files, key)?;
    let mut sums = vec![full_sum];
    let mut done = format!(
        "{} ({}){}",
        outdir::UPDATE_BUNDLE,
        crate::units::Bytes(h.data_bytes()),
        if key.is_some() {
            ", signed"
        } else {
            ", unsigned"
        }
    );
    if let Some(b) = base {
        ensure!(
            b.image == profile.image.name,
            "--delta-from {}: that is image {:?}, this build is {:?}",
            b.dir.display(),
            b.image,
            profile.image.name
        );
        // Every payload against the old version's: its root and verity in the running slot's
        // partitions, its kernel and initrd on the ESP (an unchanged kernel is not sent again).
        let old: Vec<PathBuf> = names.iter().map(|n| b.dir.join(n)).collect();
        let files: Vec<PayloadFile> = Kind::ALL
            .iter()
            .zip(&paths)
            .enumerate()
            .map(|(i, (k, p))| PayloadFile {
                kind: *k,
                path: p,
                base: old.get(i).map(PathBuf::as_path),
            })
            .collect();
        let meta = Meta {
            base: Some(b.roothash),
            ..meta
        };
        let (d, delta_sum) = write_summed(&out.join(outdir::DELTA_BUNDLE), &meta, &files, key)?;
        sums.push(delta_sum);
        done.push_str(&format!(
            "; {} from {} ({})",
            outdir::DELTA_BUNDLE,
            b.version,
            crate::units::Bytes(d.data_bytes())
        ));
    }
    step.done(&done);
    Ok(sums)
}

fn sha(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The old version's blocks by content, for a delta's pieces: the first 16 bytes of each
/// 4 KiB block's SHA-256, and the first block holding it. A candidate is compared byte for
/// byte before it is used, so a collision costs only a data block.
struct BlockIndex {
    file: fs::File,
    blocks: u64,
    by_sum: std::collections::HashMap<[u8; 16], u64>,
}

const BLOCK: usize = bundle::PIECE_BLOCK as usize;

impl BlockIndex {
    fn build(path: &Path) -> Result<BlockIndex> {
        let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut by_sum = std::collections::HashMap::new();
        let mut buf = vec![0u8; CHUNK as usize];
        let mut j = 0u64;
        loop {
            let n = read_chunk(&mut f, &mut buf)
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            for b in buf[..n].chunks_exact(BLOCK) {
                let mut k = [0u8; 16];
                k.copy_from_slice(&Sha256::digest(b)[..16]);
                by_sum.entry(k).or_insert(j);
                j += 1;
            }
            if n % BLOCK != 0 {
                break;
            }
        }
        Ok(BlockIndex {
            file: f,
            blocks: j,
            by_sum,
        })
    }

    /// Whether old block `j` holds `data` (a whole block).
    fn holds(&self, j: u64, data: &[u8]) -> bool {
        use std::os::unix::fs::FileExt;
        let mut b = [0u8; BLOCK];
        j < self.blocks
            && self.file.read_exact_at(&mut b, j * BLOCK as u64).is_ok()
            && b[..] == *data
    }

    /// An old block holding `data`: `hint` first (the block after the previous piece's).
    fn find(&self, data: &[u8], hint: Option<u64>) -> Option<u64> {
        if data.len() != BLOCK {
            return None;
        }
        if let Some(h) = hint.filter(|h| self.holds(*h, data)) {
            return Some(h);
        }
        let mut k = [0u8; 16];
        k.copy_from_slice(&Sha256::digest(data)[..16]);
        self.by_sum
            .get(&k)
            .copied()
            .filter(|j| self.holds(*j, data))
    }

    /// `chunk` as pieces: zeros, runs of old blocks (anywhere), data; `None` when that would
    /// save nothing (all data) or need more than MAX_PIECES pieces.
    fn pieces(&self, chunk: &[u8]) -> Option<Vec<Piece>> {
        let mut out: Vec<Piece> = Vec::new();
        let mut hint = None;
        for block in chunk.chunks(BLOCK) {
            let origin = if block.iter().all(|b| *b == 0) {
                Origin::Zeros
            } else if let Some(j) = self.find(block, hint) {
                Origin::Running(j)
            } else {
                Origin::Data
            };
            hint = match origin {
                Origin::Running(j) => Some(j + 1),
                _ => None,
            };
            match out.last_mut() {
                Some(p)
                    if p.blocks < u16::MAX
                        && match (p.origin, origin) {
                            (Origin::Running(a), Origin::Running(b)) => {
                                b == a + u64::from(p.blocks)
                            }
                            (a, b) => a == b && !matches!(a, Origin::Running(_)),
                        } =>
                {
                    p.blocks += 1
                }
                _ => out.push(Piece { blocks: 1, origin }),
            }
            if out.len() > bundle::MAX_PIECES {
                return None;
            }
        }
        (!out.iter().all(|p| p.origin == Origin::Data)).then_some(out)
    }
}

/// One payload's source file and, for a delta, the old version's file to compare with.
pub struct PayloadFile<'a> {
    pub kind: Kind,
    pub path: &'a Path,
    pub base: Option<&'a Path>,
}

/// What a bundle says about the image, besides its payloads.
pub struct Meta<'a> {
    pub image: &'a str,
    pub version: &'a str,
    pub cmdline: &'a str,
    pub tries: u32,
    pub roothash: [u8; 32],
    pub base: Option<[u8; 32]>,
}

fn read_chunk(f: &mut fs::File, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let k = f.read(&mut buf[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}

/// A writer that hashes what it passes on: the bundle's SHA-256 for manifest.json and
/// SHA256SUMS, without reading the file back.
struct Hashing<W> {
    inner: W,
    sha: Sha256,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a bundle to `dest`: header, signature (if `key`), then the data chunks. A delta
/// (`meta.base` and `PayloadFile::base`) leaves out the chunks equal to the old version's at
/// the same offset. Returns the header.
pub fn write(
    dest: &Path,
    meta: &Meta,
    files: &[PayloadFile],
    key: Option<&SigningKey>,
) -> Result<Header> {
    Ok(write_summed(dest, meta, files, key)?.0)
}

/// [`write`], also returning the bundle's size and SHA-256 (named by `dest`'s file name).
pub fn write_summed(
    dest: &Path,
    meta: &Meta,
    files: &[PayloadFile],
    key: Option<&SigningKey>,
) -> Result<(Header, outdir::FileSum)> {
    let mut payloads = Vec::new();
    let mut buf = vec![0u8; CHUNK as usize];
    let mut old = vec![0u8; CHUNK as usize];
    for pf in files {
        let size = fs::metadata(pf.path)
            .with_context(|| format!("reading {}", pf.path.display()))?
            .len();
        ensure!(size > 0, "{} is empty", pf.path.display());
        let mut f = fs::File::open(pf.path)?;
        let mut base = match pf.base {
            Some(b) => Some(fs::File::open(b).with_context(|| format!("opening {}", b.display()))?),
            None => None,
        };
        let mut chunks = Vec::new();
        let mut index: Option<BlockIndex> = None;
        loop {
            let n = read_chunk(&mut f, &mut buf)?;
            if n == 0 {
                break;
            }
            let source = match (base.as_mut(), pf.base) {
                (Some(b), Some(base_path)) => {
                    if read_chunk(b, &mut old[..n])? == n && old[..n] == buf[..n] {
                        Source::Running
                    } else {
                        if index.is_none() {
                            index = Some(BlockIndex::build(base_path)?);
                        }
                        match index.as_ref().and_then(|i| i.pieces(&buf[..n])) {
                            Some(p) => Source::Pieces(p),
                            None => Source::Data,
                        }
                    }
                }
                _ => Source::Data,
            };
            chunks.push(Chunk {
                source,
                sha256: sha(&buf[..n]),
            });
        }
        payloads.push(Payload {
            kind: pf.kind,
            size,
            chunks,
        });
    }
    let header = Header {
        image: meta.image.to_string(),
        version: meta.version.to_string(),
        arch: "x86_64".into(),
        cmdline: meta.cmdline.to_string(),
        tries: meta.tries,
        roothash: meta.roothash,
        base: meta.base,
        chunk_size: CHUNK,
        payloads,
    };
    let hb = header.encode();
    let prefix = bundle::signed_prefix(&hb);
    let mut out = std::io::BufWriter::new(Hashing {
        inner: fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?,
        sha: Sha256::new(),
        size: 0,
    });
    out.write_all(&prefix)?;
    match key {
        Some(k) => {
            out.write_all(&(bundle::SIGNATURE_LEN as u32).to_le_bytes())?;
            out.write_all(&k.sign(&prefix).to_bytes())?;
            out.write_all(k.verifying_key().as_bytes())?;
        }
        None => out.write_all(&0u32.to_le_bytes())?,
    }
    for (pf, p) in files.iter().zip(&header.payloads) {
        let mut f = fs::File::open(pf.path)?;
        for c in &p.chunks {
            let n = read_chunk(&mut f, &mut buf)?;
            match &c.source {
                Source::Data => out.write_all(&buf[..n])?,
                Source::Running => {}
                Source::Pieces(pieces) => {
                    for (a, b, origin) in Piece::ranges(pieces, n as u64) {
                        if origin == Origin::Data {
                            out.write_all(&buf[a as usize..b as usize])?;
                        }
                    }
                }
            }
        }
    }
    let h = out.into_inner().map_err(|e| e.into_error())?;
    h.inner.sync_all()?;
    let sum = outdir::FileSum {
        name: dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        size: h.size,
        sha256: hex::encode(h.sha.finalize()),
    };
    Ok((header, sum))
}

/// A bundle's header and signature, read from its start.
pub struct Opened {
    pub header: Header,
    /// The signature and the key that made it, if signed.
    pub signature: Option<(Signature, VerifyingKey)>,
    prefix: Vec<u8>,
    /// Where the data starts.
    pub data_offset: u64,
}

pub fn open(r: &mut impl Read, what: &str) -> Result<Opened> {
    let mut head = [0u8; 12];
    r.read_exact(&mut head)
        .with_context(|| format!("{what}: too short for a bundle"))?;
    ensure!(
        head[..8] == bundle::MAGIC,
        "{what}: not a berth update bundle (no BERTHUPD magic)"
    );
    let len = u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize;
    ensure!(
        len <= bundle::MAX_HEADER,
        "{what}: header of {len} bytes is larger than any berth writes"
    );
    let mut hb = vec![0u8; len];
    r.read_exact(&mut hb)
        .with_context(|| format!("{what}: truncated inside its header"))?;
    let header = Header::decode(&hb).with_context(|| format!("{what}: damaged header"))?;
    let mut sl = [0u8; 4];
    r.read_exact(&mut sl)
        .with_context(|| format!("{what}: truncated before its signature"))?;
    let sig_len = u32::from_le_bytes(sl) as usize;
    let signature = match sig_len {
        0 => None,
        bundle::SIGNATURE_LEN => {
            let mut s = [0u8; bundle::SIGNATURE_LEN];
            r.read_exact(&mut s)
                .with_context(|| format!("{what}: truncated inside its signature"))?;
            let sig = Signature::from_bytes(s[..64].try_into().unwrap_or(&[0; 64]));
            let key =
                VerifyingKey::from_bytes(s[64..].try_into().unwrap_or(&[0; 32])).map_err(|e| {
                    anyhow::anyhow!("{what}: the signing key is not an ed25519 key: {e}")
                })?;
            Some((sig, key))
        }
        n => bail!(
            "{what}: signature section of {n} bytes (0 or {} expected)",
            bundle::SIGNATURE_LEN
        ),
    };
    Ok(Opened {
        header,
        signature,
        prefix: bundle::signed_prefix(&hb),
        data_offset: (12 + len + 4 + sig_len) as u64,
    })
}

/// The signature check a machine makes: signed by `trusted` (when given), or unsigned only
/// when `allow_unsigned`.
pub fn check_signature(
    o: &Opened,
    trusted: Option<&VerifyingKey>,
    allow_unsigned: bool,
    what: &str,
) -> Result<()> {
    match (&o.signature, trusted) {
        (Some((sig, key)), Some(t)) => {
            ensure!(
                key == t,
                "{what}: signed by key {}, not by the trusted key {}",
                hex::encode(key.as_bytes()),
                hex::encode(t.as_bytes())
            );
            t.verify_strict(&o.prefix, sig)
                .map_err(|_| anyhow::anyhow!("{what}: the signature does not match the header (altered, or damaged)"))
        }
        (Some((sig, key)), None) if allow_unsigned => key
            .verify_strict(&o.prefix, sig)
            .map_err(|_| anyhow::anyhow!("{what}: the signature does not match the header (altered, or damaged)")),
        (Some(_), None) => bail!("{what}: the image has no release key to check the signature with, and does not accept unsigned bundles (`update.allow-unsigned`)"),
        (None, Some(_)) => bail!("{what}: unsigned, and the image trusts a release key: sign it (`berth build --signing-key`)"),
        (None, None) if allow_unsigned => Ok(()),
        (None, None) => bail!("{what}: unsigned, and the image has no key to check it with nor `update.allow-unsigned`"),
    }
}

/// `berth bundle verify`: the signature, then every data chunk against the header, and the
/// file's end. Returns the header and the data bytes checked.
pub fn verify(
    path: &Path,
    trusted: Option<&VerifyingKey>,
    allow_unsigned: bool,
) -> Result<(Header, u64)> {
    let what = path.display().to_string();
    let mut f =
        std::io::BufReader::new(fs::File::open(path).with_context(|| format!("opening {what}"))?);
    let o = open(&mut f, &what)?;
    check_signature(&o, trusted, allow_unsigned, &what)?;
    let h = &o.header;
    let mut buf = vec![0u8; h.chunk_size as usize];
    let mut checked = 0u64;
    for p in &h.payloads {
        for (i, c) in p.chunks.iter().enumerate() {
            if let Source::Pieces(_) = c.source {
                // Its data pieces, which only the base makes whole: read past them (the
                // machine checks the chunk once it has put it together).
                let n = p.data_len(i, h.chunk_size);
                let skipped = std::io::copy(&mut (&mut f).take(n), &mut std::io::sink())?;
                ensure!(
                    skipped == n,
                    "{what}: truncated in chunk {i} of the {} payload",
                    p.kind.name()
                );
                continue;
            }
            if c.source != Source::Data {
                continue;
            }
            let n = p.chunk_len(i, h.chunk_size) as usize;
            f.read_exact(&mut buf[..n]).with_context(|| {
                format!(
                    "{what}: truncated in chunk {i} of the {} payload",
                    p.kind.name()
                )
            })?;
            ensure!(
                sha(&buf[..n]) == c.sha256,
                "{what}: chunk {i} of the {} payload does not match its hash in the header",
                p.kind.name()
            );
            checked += n as u64;
        }
    }
    let mut rest = [0u8; 1];
    ensure!(
        f.read(&mut rest)? == 0,
        "{what}: has bytes after its last chunk"
    );
    Ok((o.header, checked))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, root: &[u8]) -> Vec<PathBuf> {
        let names = ["root", "verity", "kernel", "initrd"];
        let mut v = Vec::new();
        for (i, n) in names.iter().enumerate() {
            let p = dir.join(n);
            if i == 0 {
                fs::write(&p, root).unwrap();
            } else {
                fs::write(&p, vec![i as u8; 1000 * i]).unwrap();
            }
            v.push(p);
        }
        v
    }

    fn payloads<'a>(p: &'a [PathBuf], base: Option<&'a [PathBuf]>) -> Vec<PayloadFile<'a>> {
        Kind::ALL
            .iter()
            .enumerate()
            .map(|(i, k)| PayloadFile {
                kind: *k,
                path: &p[i],
                base: base.filter(|_| i < 2).map(|b| b[i].as_path()),
            })
            .collect()
    }

    const META: Meta = Meta {
        image: "berth-test",
        version: "0.2.0",
        cmdline: "console=ttyS0",
        tries: 3,
        roothash: [9; 32],
        base: None,
    };

    #[test]
    fn signed_bundles_verify_and_every_kind_of_damage_is_caught() {
        let d = tempfile::tempdir().unwrap();
        let (sk, pk) = keygen(d.path(), "rel").unwrap();
        assert!(
            keygen(d.path(), "rel").is_err(),
            "keys are never overwritten"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&sk).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (key, public) = (read_secret(&sk).unwrap(), read_public(&pk).unwrap());
        assert!(read_public(&sk)
            .unwrap_err()
            .to_string()
            .contains("secret key"));
        let root: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        let f = files(d.path(), &root);
        let b = d.path().join("u.bundle");
        let h = write(&b, &META, &payloads(&f, None), Some(&key)).unwrap();
        assert_eq!(h.payload(Kind::Root).chunks.len(), 4);
        let (got, n) = verify(&b, Some(&public), false).unwrap();
        assert_eq!((got, n), (h.clone(), h.data_bytes()));
        // Reproducible: same inputs and key, same bytes.
        let b2 = d.path().join("u2.bundle");
        let (_, sum) = write_summed(&b2, &META, &payloads(&f, None), Some(&key)).unwrap();
        assert_eq!(fs::read(&b).unwrap(), fs::read(&b2).unwrap());
        // The sum made while writing is the file's.
        assert_eq!(sum, outdir::FileSum::of(d.path(), "u2.bundle").unwrap());

        let bytes = fs::read(&b).unwrap();
        let damaged = |name: &str, edit: &dyn Fn(&mut Vec<u8>)| {
            let mut v = bytes.clone();
            edit(&mut v);
            let p = d.path().join(name);
            fs::write(&p, v).unwrap();
            format!("{:#}", verify(&p, Some(&public), false).unwrap_err())
        };
        let payload_at = bytes.len() - 100;
        let e = damaged("payload", &|v| v[payload_at] ^= 1);
        assert!(e.contains("does not match its hash"), "{e}");
        let e = damaged("header", &|v| v[20] ^= 1);
        assert!(
            e.contains("signature does not match") || e.contains("damaged header"),
            "{e}"
        );
        let e = damaged("truncated", &|v| v.truncate(v.len() - 10));
        assert!(e.contains("truncated"), "{e}");
        let e = damaged("extra", &|v| v.push(0));
        assert!(e.contains("after its last chunk"), "{e}");
        // Another key; unsigned.
        keygen(d.path(), "other").unwrap();
        let other = read_public(&d.path().join("other.pub")).unwrap();
        let e = format!("{:#}", verify(&b, Some(&other), false).unwrap_err());
        assert!(e.contains("not by the trusted key"), "{e}");
        let u = d.path().join("unsigned.bundle");
        write(&u, &META, &payloads(&f, None), None).unwrap();
        let e = format!("{:#}", verify(&u, Some(&public), false).unwrap_err());
        assert!(e.contains("unsigned"), "{e}");
        assert!(verify(&u, None, false).is_err());
        assert!(verify(&u, None, true).is_ok());
    }

    #[test]
    fn a_delta_leaves_out_the_unchanged_chunks() {
        let d = tempfile::tempdir().unwrap();
        let old_root: Vec<u8> = (0..4 * CHUNK).map(|i| (i % 241) as u8).collect();
        let mut new_root = old_root.clone();
        new_root[(2 * CHUNK + 5) as usize] ^= 0xff;
        fs::create_dir_all(d.path().join("old")).unwrap();
        fs::create_dir_all(d.path().join("new")).unwrap();
        let old = files(&d.path().join("old"), &old_root);
        let new = files(&d.path().join("new"), &new_root);
        let full = d.path().join("full.bundle");
        let delta = d.path().join("delta.bundle");
        let h = write(&full, &META, &payloads(&new, None), None).unwrap();
        let meta = Meta {
            base: Some([1; 32]),
            ..META
        };
        let hd = write(&delta, &meta, &payloads(&new, Some(&old)), None).unwrap();
        let root = hd.payload(Kind::Root);
        let running: Vec<bool> = root
            .chunks
            .iter()
            .map(|c| c.source == Source::Running)
            .collect();
        assert_eq!(running, [true, true, false, true]);
        // The changed chunk: its other 255 blocks come from the running slot, one is data.
        let Source::Pieces(p) = &root.chunks[2].source else {
            panic!("{:?}", root.chunks[2].source)
        };
        assert_eq!(root.data_len(2, CHUNK), 4096, "{p:?}");
        // The verity payload is the same in both versions here: all of it comes from the slot.
        assert!(hd
            .payload(Kind::Verity)
            .chunks
            .iter()
            .all(|c| c.source == Source::Running));
        assert_eq!(
            hd.data_bytes(),
            h.data_bytes() - 4 * u64::from(CHUNK) + 4096 - 1000
        );
        // Same chunk hashes as the full bundle: the machine checks both the same way.
        assert_eq!(
            root.chunks.iter().map(|c| c.sha256).collect::<Vec<_>>(),
            h.payload(Kind::Root)
                .chunks
                .iter()
                .map(|c| c.sha256)
                .collect::<Vec<_>>()
        );
        assert!(verify(&delta, None, true).is_ok());
        assert_eq!(
            apply(&delta, &old[0]),
            new_root,
            "the delta makes the new root"
        );
    }

    /// What a machine does with a bundle's root payload (berth-init's write_partition, in
    /// memory): each chunk put together from the bundle, the running root and zeros, and
    /// checked against its hash.
    fn apply(bundle: &Path, running: &Path) -> Vec<u8> {
        let old = fs::read(running).unwrap();
        let mut f = std::io::BufReader::new(fs::File::open(bundle).unwrap());
        let h = open(&mut f, "test").unwrap().header;
        let root = h.payload(Kind::Root);
        let mut out = Vec::new();
        for (i, c) in root.chunks.iter().enumerate() {
            let n = root.chunk_len(i, h.chunk_size) as usize;
            let off = i * h.chunk_size as usize;
            let mut buf = vec![0u8; n];
            match &c.source {
                Source::Data => f.read_exact(&mut buf).unwrap(),
                Source::Running => buf.copy_from_slice(&old[off..off + n]),
                Source::Pieces(ps) => {
                    for (a, b, origin) in Piece::ranges(ps, n as u64) {
                        let (a, b) = (a as usize, b as usize);
                        match origin {
                            Origin::Data => f.read_exact(&mut buf[a..b]).unwrap(),
                            Origin::Zeros => {}
                            Origin::Running(j) => {
                                let at = j as usize * BLOCK;
                                buf[a..b].copy_from_slice(&old[at..at + b - a]);
                            }
                        }
                    }
                }
            }
            assert_eq!(sha(&buf), c.sha256, "chunk {i}");
            out.extend_from_slice(&buf);
        }
        out
    }

    /// A change that moves every later block (three blocks inserted near the start, as a bigger
    /// image archive moves the files after it): the delta carries the three blocks, and the
    /// rest comes from the running root at its old offsets.
    #[test]
    fn a_delta_finds_moved_blocks() {
        let d = tempfile::tempdir().unwrap();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let old_root: Vec<u8> = (0..4 * CHUNK)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut new_root = old_root[..10 * BLOCK].to_vec();
        new_root.extend(std::iter::repeat_n(7u8, 3 * BLOCK));
        new_root.extend_from_slice(&old_root[10 * BLOCK..old_root.len() - 3 * BLOCK]);
        // Free space: zeros, in the new version only.
        let z = 3 * CHUNK as usize;
        new_root[z..z + 5 * BLOCK].fill(0);
        fs::create_dir_all(d.path().join("old")).unwrap();
        fs::create_dir_all(d.path().join("new")).unwrap();
        let old = files(&d.path().join("old"), &old_root);
        let new = files(&d.path().join("new"), &new_root);
        let delta = d.path().join("delta.bundle");
        let meta = Meta {
            base: Some([1; 32]),
            ..META
        };
        let h = write(&delta, &meta, &payloads(&new, Some(&old)), None).unwrap();
        let root = h.payload(Kind::Root);
        let carried: u64 = (0..root.chunks.len())
            .map(|i| root.data_len(i, CHUNK))
            .sum();
        assert_eq!(carried, 3 * BLOCK as u64, "only the inserted blocks");
        assert!(root
            .chunks
            .iter()
            .all(|c| matches!(c.source, Source::Pieces(_))));
        assert_eq!(apply(&delta, &old[0]), new_root);
        let full = d.path().join("full.bundle");
        write(&full, &META, &payloads(&new, None), None).unwrap();
        let (full_len, delta_len) = (
            fs::metadata(&full).unwrap().len(),
            fs::metadata(&delta).unwrap().len(),
        );
        assert!(delta_len * 100 < full_len, "{delta_len} of {full_len}");
    }
}
