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

/// Why this machine rolled back from `version`, if it did: the health records on /var
/// (`slot-X` while not yet reported, `slot-X.reported` after) start with the version.
fn rolled_back_from(version: &str) -> Option<String> {
    rolled_back_in(&host(paths::HEALTH_DIR), version)
}

fn rolled_back_in(health_dir: &str, version: &str) -> Option<String> {
    for slot in ["a", "b"] {
        for suffix in ["", ".reported"] {
            let p = format!("{health_dir}/slot-{slot}{suffix}");
            if let Ok(t) = fs::read_to_string(&p) {
                let mut l = t.lines();
                if l.next() == Some(version) {
                    return Some(l.next().unwrap_or("unknown").to_string());
                }
            }
        }
    }
    None
}

pub enum Outcome {
    UpToDate {
        running: String,
        latest: String,
    },
    /// The channel's latest is a version this machine already tried and rolled back from: it
    /// waits for a newer one rather than loop through the same failure.
    RolledBack {
        version: String,
        why: String,
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
    if let Some(why) = rolled_back_from(&idx.version) {
        return Ok(Outcome::RolledBack {
            version: idx.version,
            why,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_that_rolled_back_here_is_not_taken_again() {
        let d = std::env::temp_dir().join(format!("berth-rolled-back-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        let dir = d.to_str().unwrap();
        assert_eq!(rolled_back_in(dir, "0.3.0"), None);
        fs::write(
            d.join("slot-b.reported"),
            "0.3.0\nrequired services not up: broken: exited status=1\n",
        )
        .unwrap();
        assert_eq!(
            rolled_back_in(dir, "0.3.0").as_deref(),
            Some("required services not up: broken: exited status=1")
        );
        assert_eq!(
            rolled_back_in(dir, "0.4.0"),
            None,
            "a newer version is taken"
        );
        // Not yet reported (the rollback boot has not got that far): the same.
        fs::write(d.join("slot-a"), "0.4.0\nits boot did not reach ready\n").unwrap();
        assert!(rolled_back_in(dir, "0.4.0").is_some());
        fs::remove_dir_all(&d).unwrap();
    }
}
