//! `berthctl update check`: asks the update channel (`berth_contract::channel`) whether a newer
//! version exists and, with `--apply`, fetches the bundle that fits (the delta from the running
//! root, else the full one) and applies it as `update apply URL` would; then marks the update
//! pending, so PID 1 reboots into it as the reboot policy allows. PID 1 runs this itself every
//! `check-interval` seconds when the policy names a channel.

use std::fs;

use berth_contract::bundle::version_cmp;
use berth_contract::channel::{Index, Policy, INDEX_FILE};
use berth_contract::paths;

use crate::{fail, http, Ctx, Result};

/// The largest channel.json berthctl reads.
const MAX_INDEX: u64 = 1 << 20;

fn host(p: &str) -> String {
    format!("/proc/1/root{p}")
}

/// The policy in effect: what PID 1 wrote at boot, else the image's.
pub fn policy() -> Policy {
    for p in [paths::UPDATE_POLICY_RUN, paths::UPDATE_POLICY] {
        if let Ok(t) = fs::read_to_string(host(p)) {
            if let Ok(p) = Policy::parse(&t) {
                return p;
            }
        }
    }
    Policy::default()
}

pub enum Outcome {
    UpToDate {
        running: String,
        latest: String,
    },
    Available {
        version: String,
        bundle: String,
        size: u64,
    },
    Applied {
        slot: berth_contract::Slot,
        version: String,
    },
}

pub fn check(channel: Option<&str>, apply: bool) -> Result<Outcome> {
    let url = match channel {
        Some(c) => c.to_string(),
        None => match policy().channel {
            Some(c) => c,
            None => fail!("no update channel: set the profile's [update] channel, the machine config's update.channel, or give --channel URL"),
        },
    };
    if let Err(m) = berth_contract::channel::check_url(&url) {
        fail!("{m}");
    }
    let base = if url.ends_with('/') {
        url
    } else {
        format!("{url}/")
    };
    let index_url = format!("{base}{INDEX_FILE}");
    let idx = Index::parse(&http::get_text(&index_url, MAX_INDEX)?)
        .ctx(|| format!("reading {index_url}"))?;
    let c = crate::cmdline::read()?;
    let running = c.version.clone().unwrap_or_default();
    let image = crate::update::os_release_field("IMAGE_ID").unwrap_or_default();
    if !image.is_empty() && idx.image != image {
        fail!(
            "{index_url} is a channel of image {:?}; this machine runs {image:?}",
            idx.image
        );
    }
    if idx.arch != std::env::consts::ARCH {
        fail!(
            "{index_url} is for {}; this machine is {}",
            idx.arch,
            std::env::consts::ARCH
        );
    }
    if version_cmp(&idx.version, &running) != std::cmp::Ordering::Greater {
        return Ok(Outcome::UpToDate {
            running,
            latest: idx.version,
        });
    }
    let e = idx.pick(c.roothash.as_deref().unwrap_or(""));
    if !apply {
        return Ok(Outcome::Available {
            version: idx.version.clone(),
            bundle: e.bundle.clone(),
            size: e.size,
        });
    }
    let bundle_url = format!("{base}{}", e.bundle);
    eprintln!(
        "berthctl: update check: {} available; applying {bundle_url} ({} bytes)",
        idx.version, e.size
    );
    let (slot, version) = crate::update::apply(&bundle_url, false)?;
    if version != idx.version {
        fail!(
            "{bundle_url} holds version {version}, but {index_url} says {}",
            idx.version
        );
    }
    let _ = fs::write(host(paths::UPDATE_PENDING), format!("{version}\n"));
    Ok(Outcome::Applied { slot, version })
}
