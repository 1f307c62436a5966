//! `berth publish channel DIR IMAGE_DIR`: adds a build's update bundles to a static update
//! channel (`berth_contract::channel`): the bundles are checked the way a machine checks them
//! (signature, every chunk), copied in under versioned names, and `channel.json` is replaced
//! last (temporary file, fsync, rename), so a file server never serves an index naming a
//! bundle that is not all there. Older bundles stay (machines may be fetching them).

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use berth_contract::channel::{Entry, Index, INDEX_FILE};
use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use crate::artifacts::BuildManifest;
use crate::outdir::{DELTA_BUNDLE, UPDATE_BUNDLE};

/// What a publish did.
#[derive(Debug, serde::Serialize)]
pub struct Published {
    pub index: PathBuf,
    pub version: String,
    pub bundles: Vec<String>,
}

/// Copies `src` to `dir/name` through a temporary file; returns the channel entry.
fn copy_in(src: &Path, dir: &Path, name: &str) -> Result<Entry> {
    let dst = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut r = fs::File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let mut w = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let (mut h, mut size, mut buf) = (Sha256::new(), 0u64, vec![0u8; 1 << 20]);
    loop {
        let n = r
            .read(&mut buf)
            .with_context(|| format!("reading {}", src.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        w.write_all(&buf[..n])
            .with_context(|| format!("writing {}", tmp.display()))?;
        size += n as u64;
    }
    w.sync_all()
        .with_context(|| format!("fsync {}", tmp.display()))?;
    fs::rename(&tmp, &dst)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dst.display()))?;
    Ok(Entry {
        bundle: name.to_string(),
        size,
        sha256: hex::encode(h.finalize()),
    })
}

pub fn publish(channel: &Path, image_dir: &Path, key: Option<&VerifyingKey>) -> Result<Published> {
    let m = BuildManifest::read(image_dir)?;
    let (image, version, roothash) = (&m.image.name, &m.image.version, &m.verity.roothash);
    let full = image_dir.join(UPDATE_BUNDLE);
    ensure!(
        full.is_file(),
        "{}: no {UPDATE_BUNDLE} (built by a berth without update bundles?)",
        image_dir.display()
    );
    let delta = Some(image_dir.join(DELTA_BUNDLE)).filter(|p| p.is_file());
    // Checked the way a machine checks them, before anything is copied.
    let mut headers = Vec::new();
    for b in std::iter::once(&full).chain(delta.as_ref()) {
        let (h, _) = crate::update::verify(b, key, key.is_none())
            .with_context(|| format!("checking {} before publishing it", b.display()))?;
        ensure!(
            h.image == *image && h.version == *version,
            "{}: holds {} {}, but the image directory's manifest says {image} {version}",
            b.display(),
            h.image,
            h.version
        );
        headers.push(h);
    }
    fs::create_dir_all(channel).with_context(|| format!("creating {}", channel.display()))?;
    let index_path = channel.join(INDEX_FILE);
    let old = match fs::read_to_string(&index_path) {
        Ok(t) => {
            Some(Index::parse(&t).with_context(|| format!("reading {}", index_path.display()))?)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", index_path.display())),
    };
    let arch = headers[0].arch.clone();
    if let Some(o) = &old {
        ensure!(
            o.image == *image && o.arch == arch,
            "{} is the channel of {} ({}); this build is {image} ({arch})",
            channel.display(),
            o.image,
            o.arch
        );
        match berth_contract::bundle::version_cmp(version, &o.version) {
            std::cmp::Ordering::Greater => {}
            std::cmp::Ordering::Equal if o.roothash == *roothash => {}
            std::cmp::Ordering::Equal => bail!(
                "{} already publishes {image} {version} with another root hash ({}); a new build needs a new version",
                channel.display(),
                o.roothash
            ),
            std::cmp::Ordering::Less => bail!(
                "{} publishes {image} {}, newer than this build's {version}; machines never go back, so a channel does not either",
                channel.display(),
                o.version
            ),
        }
    }
    let full_entry = copy_in(&full, channel, &format!("{image}-{version}.bundle"))?;
    let mut deltas = Vec::new();
    if let (Some(d), Some(h)) = (&delta, headers.get(1)) {
        let base = h
            .base
            .map(hex::encode)
            .context("the delta bundle names no base root hash")?;
        let e = copy_in(
            d,
            channel,
            &format!("{image}-{version}-from-{}.bundle", &base[..12]),
        )?;
        deltas.push((base, e));
    }
    let index = Index {
        image: image.clone(),
        arch,
        version: version.clone(),
        roothash: roothash.clone(),
        full: full_entry,
        deltas,
    };
    let tmp = channel.join(format!(".{INDEX_FILE}.tmp"));
    let mut f = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(index.text().as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &index_path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), index_path.display()))?;
    if let Ok(d) = fs::File::open(channel) {
        let _ = d.sync_all();
    }
    let mut bundles = vec![index.full.bundle.clone()];
    bundles.extend(index.deltas.iter().map(|(_, e)| e.bundle.clone()));
    Ok(Published {
        index: index_path,
        version: version.clone(),
        bundles,
    })
}
