//! `berthctl update apply FILE|-`: writes an update bundle (`berth_contract::bundle`) into the
//! slot that is not running, in the order DESIGN.md ("A/B updates") gives, so that a power cut
//! at any point leaves a disk that boots a good slot:
//!
//! 1. check the header's signature (the image's release key) and what it is for (image, version);
//! 2. the other slot stops being bootable: its boot entries are removed from the ESP (synced),
//!    its partitions get the no-auto attribute;
//! 3. the root and verity payloads stream into its partitions, each chunk checked against the
//!    signed header before it is written; a delta's unchanged chunks are copied from the
//!    running slot and checked the same way; then fsync, the kernel's buffers dropped, and
//!    everything read back and checked again;
//! 4. its partition UUIDs become the halves of the new root hash (GPT, backup first);
//! 5. kernel and initrd go to `berth/<slot>/` on the ESP (temporary file, fsync, rename);
//! 6. last, the boot entry `berth-<slot>+<tries>.conf` (temporary file, fsync, rename, syncfs):
//!    its appearance is the commit point. systemd-boot prefers it (same sort-key, newer version).
//!
//! The running slot and the state partition are only read. Runs on the host or in the admin
//! container (privileged, in PID 1's PID namespace): the image's files are read through
//! `/proc/1/root`.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use berth_contract::bundle::{self, Header, Kind, Origin, Piece, Source, PIECE_BLOCK};
use berth_contract::cmdline::{BootArgs, Cmdline};
use berth_contract::entry::{BootEntry, EntryName};
use berth_contract::layout::{root_index, verity_index};
use berth_contract::{paths, roothash_partuuids, Slot};
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::{fail, gpt, sys, Ctx, Result};

/// The image's files as PID 1 sees them (the same path on the host; the host's root from the
/// admin container).
fn host(p: &str) -> String {
    format!("/proc/1/root{p}")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn read_exact(r: &mut dyn Read, buf: &mut [u8], what: &str) -> Result<()> {
    r.read_exact(buf)
        .ctx(|| format!("reading the bundle: truncated in {what}"))
}

/// The header and its signature, read from the front of the bundle and checked against the
/// image's policy (its release key, or its consent to unsigned bundles).
fn open(r: &mut dyn Read) -> Result<Header> {
    let mut head = [0u8; 12];
    read_exact(r, &mut head, "the magic")?;
    if head[..8] != bundle::MAGIC {
        fail!("not a berth update bundle (no BERTHUPD magic)");
    }
    let len = u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize;
    if len > bundle::MAX_HEADER {
        fail!("bundle header of {len} bytes is larger than any berth writes");
    }
    let mut hb = vec![0u8; len];
    read_exact(r, &mut hb, "the header")?;
    let mut sl = [0u8; 4];
    read_exact(r, &mut sl, "the signature length")?;
    let sig_len = u32::from_le_bytes(sl) as usize;
    let signature = match sig_len {
        0 => None,
        bundle::SIGNATURE_LEN => {
            let mut s = [0u8; bundle::SIGNATURE_LEN];
            read_exact(r, &mut s, "the signature")?;
            Some(s)
        }
        n => fail!("bundle signature section of {n} bytes (0 or 96 expected)"),
    };
    let key_file = host(paths::UPDATE_KEY);
    let trusted = match fs::read_to_string(&key_file) {
        Ok(t) => Some(
            parse_key(&t)
                .ok_or_else(|| crate::Error(format!("{key_file}: not a berth-ed25519 key line")))?,
        ),
        Err(_) => None,
    };
    let allow_unsigned = fs::metadata(host(paths::UPDATE_ALLOW_UNSIGNED)).is_ok();
    let signed = bundle::signed_prefix(&hb);
    match (signature, trusted) {
        (Some(s), Some(t)) => {
            if s[64..] != t {
                fail!(
                    "the bundle is signed by key {}, not by this image's release key {}",
                    hex(&s[64..]),
                    hex(&t)
                );
            }
            let key = VerifyingKey::from_bytes(&t).map_err(|e| crate::Error(format!("the image's release key: {e}")))?;
            let mut sig = [0u8; 64];
            sig.copy_from_slice(&s[..64]);
            key.verify_strict(&signed, &Signature::from_bytes(&sig))
                .map_err(|_| crate::Error("the bundle's signature does not match its header (altered or damaged)".into()))?;
        }
        (None, Some(_)) => fail!("the bundle is unsigned, and this image accepts only bundles signed by its release key"),
        (_, None) if allow_unsigned => {}
        (_, None) => fail!("this image has no release key and does not accept unsigned bundles (profile: update.allow-unsigned)"),
    }
    Header::decode(&hb).map_err(|e| crate::Error(format!("the bundle's header: {e}")))
}

fn parse_key(text: &str) -> Option<[u8; 32]> {
    let h = text.trim().strip_prefix("berth-ed25519 ")?;
    if h.len() != 64 {
        return None;
    }
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(k)
}

pub fn os_release_field(key: &str) -> Option<String> {
    fs::read_to_string(host("/etc/os-release"))
        .ok()?
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{key}="))
                .map(|v| v.trim_matches('"').to_string())
        })
}

/// Puts chunk `i` of a payload (at `off`) together in `buf`: from the bundle `r`, from the
/// running slot's copy `src` (named `running`) at the same offset, or from its pieces.
#[allow(clippy::too_many_arguments)]
fn fill_chunk(
    r: &mut dyn Read,
    c: &berth_contract::bundle::Chunk,
    buf: &mut [u8],
    off: u64,
    src: &File,
    running: &str,
    i: usize,
    kind: Kind,
) -> Result<()> {
    let what = || format!("chunk {i} of the {} payload", kind.name());
    match &c.source {
        Source::Data => read_exact(r, buf, &what())?,
        Source::Running => src
            .read_exact_at(buf, off)
            .ctx(|| format!("reading chunk {i} from the running slot's {running}"))?,
        Source::Pieces(pieces) => {
            for (a, b, origin) in Piece::ranges(pieces, buf.len() as u64) {
                let part = &mut buf[a as usize..b as usize];
                match origin {
                    Origin::Data => read_exact(r, part, &what())?,
                    Origin::Zeros => part.fill(0),
                    Origin::Running(j) => src
                        .read_exact_at(part, j.saturating_mul(u64::from(PIECE_BLOCK)))
                        .ctx(|| {
                            format!(
                                "reading block {j} of the running slot's {running} ({})",
                                what()
                            )
                        })?,
                }
            }
        }
    }
    Ok(())
}

/// Streams one payload into `dev` (a partition), checking each chunk before writing it;
/// `running` is the running slot's partition of the same kind (for a delta's copied chunks).
fn write_partition(
    r: &mut dyn Read,
    h: &Header,
    kind: Kind,
    dev: &str,
    running: &str,
    progress: &mut Progress,
) -> Result<()> {
    let p = h.payload(kind);
    let out = OpenOptions::new()
        .write(true)
        .open(dev)
        .ctx(|| format!("opening {dev}"))?;
    let size = fs::metadata(dev).map(|m| m.len()).unwrap_or(0);
    let dev_bytes = size.max(device_bytes(&out));
    if p.size > dev_bytes {
        fail!(
            "the {} payload is {} bytes; partition {dev} holds {dev_bytes}",
            kind.name(),
            p.size
        );
    }
    let src = File::open(running).ctx(|| format!("opening {running}"))?;
    let mut buf = vec![0u8; h.chunk_size as usize];
    for (i, c) in p.chunks.iter().enumerate() {
        let n = p.chunk_len(i, h.chunk_size) as usize;
        let off = i as u64 * u64::from(h.chunk_size);
        fill_chunk(r, c, &mut buf[..n], off, &src, running, i, kind)?;
        if Sha256::digest(&buf[..n])[..] != c.sha256 {
            fail!(
                "chunk {i} of the {} payload does not match its hash in the signed header{}: nothing more written, the slot stays unbootable",
                kind.name(),
                if c.source == Source::Data { "" } else { " (the running slot is not the delta's base)" }
            );
        }
        out.write_all_at(&buf[..n], off)
            .ctx(|| format!("writing {dev} at {off}"))?;
        progress.add(n as u64);
        if kind == Kind::Root && i + 1 == p.chunks.len() / 2 {
            step("mid-payload");
        }
    }
    out.sync_all().ctx(|| format!("fsync {dev}"))?;
    // Read back what the device holds, not what the page cache does.
    let _ = sys::flush_buffers(out.as_raw_fd());
    drop(out);
    let back = File::open(dev).ctx(|| format!("opening {dev}"))?;
    for (i, c) in p.chunks.iter().enumerate() {
        let n = p.chunk_len(i, h.chunk_size) as usize;
        back.read_exact_at(&mut buf[..n], i as u64 * u64::from(h.chunk_size))
            .ctx(|| format!("reading back {dev}"))?;
        if Sha256::digest(&buf[..n])[..] != c.sha256 {
            fail!(
                "reading back {dev}: chunk {i} of the {} payload differs from what was written",
                kind.name()
            );
        }
    }
    Ok(())
}

fn device_bytes(f: &File) -> u64 {
    // BLKGETSIZE64; a regular file (tests) has its length.
    sys::blk_size(f.as_raw_fd()).unwrap_or(0)
}

/// Streams one payload into a file on the ESP: `path.new`, fsync, rename.
/// Writes one payload to `path` on the ESP (through `path.new`, renamed last), checking each
/// chunk before writing it; `running` is the running slot's file of the same kind (a delta's
/// unchanged kernel or initrd comes from it).
fn write_esp_file(
    r: &mut dyn Read,
    h: &Header,
    kind: Kind,
    path: &str,
    running: &str,
    progress: &mut Progress,
) -> Result<()> {
    let p = h.payload(kind);
    let delta = p.chunks.iter().any(|c| c.source != Source::Data);
    // Opened only when the bundle needs it: a full bundle does not depend on it.
    let src = if delta {
        Some(File::open(running).ctx(|| format!("opening {running}"))?)
    } else {
        None
    };
    if let Some(dir) = std::path::Path::new(path).parent() {
        fs::create_dir_all(dir).ctx(|| format!("mkdir -p {}", dir.display()))?;
    }
    let tmp = format!("{path}.new");
    let mut f = File::create(&tmp).ctx(|| format!("creating {tmp}"))?;
    let mut buf = vec![0u8; h.chunk_size as usize];
    for (i, c) in p.chunks.iter().enumerate() {
        let n = p.chunk_len(i, h.chunk_size) as usize;
        let off = i as u64 * u64::from(h.chunk_size);
        let filled = match &src {
            Some(src) => fill_chunk(r, c, &mut buf[..n], off, src, running, i, kind),
            None => read_exact(
                r,
                &mut buf[..n],
                &format!("chunk {i} of the {} payload", kind.name()),
            ),
        };
        if let Err(e) = filled {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        if Sha256::digest(&buf[..n])[..] != c.sha256 {
            let _ = fs::remove_file(&tmp);
            fail!(
                "chunk {i} of the {} payload does not match its hash in the signed header{}",
                kind.name(),
                if c.source == Source::Data {
                    ""
                } else {
                    " (the running slot is not the delta's base)"
                }
            );
        }
        f.write_all(&buf[..n]).ctx(|| format!("writing {tmp}"))?;
        progress.add(n as u64);
    }
    f.sync_all().ctx(|| format!("fsync {tmp}"))?;
    fs::rename(&tmp, path).ctx(|| format!("renaming {tmp} to {path}"))?;
    Ok(())
}

/// The named steps of an apply, in order: `start` (checked, nothing written yet),
/// `mid-payload` (half the root written), `after-verity` (root and verity written, partition
/// UUIDs set), `after-kernel`, `before-entry` (everything but the entry), `after-entry` (the
/// entry renamed into place, its directory not yet synced).
pub const STEPS: [&str; 6] = [
    "start",
    "mid-payload",
    "after-verity",
    "after-kernel",
    "before-entry",
    "after-entry",
];

/// Fault injection for the power-cut tests: with `BERTH_UPDATE_PAUSE_AT=<step>` the apply
/// says so and stops at that step (for an hour), so a test can cut the power exactly there.
/// Nothing is synced on the way in: the cut finds what the real apply would have left.
fn step(name: &str) {
    if std::env::var("BERTH_UPDATE_PAUSE_AT").as_deref() == Ok(name) {
        eprintln!("berthctl: update: paused at {name}");
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

fn sync_dir(dir: &str) -> Result<()> {
    let d = File::open(dir).ctx(|| format!("opening {dir}"))?;
    d.sync_all().ctx(|| format!("fsync {dir}"))?;
    sys::syncfs(d.as_raw_fd()).ctx(|| format!("syncfs {dir}"))
}

struct Progress {
    total: u64,
    done: u64,
    last: u64,
}

impl Progress {
    fn add(&mut self, n: u64) {
        self.done += n;
        let pct = self.done * 100 / self.total.max(1);
        if pct >= self.last + 10 || self.done == self.total {
            self.last = pct;
            eprintln!(
                "berthctl: update: {pct}% ({} of {} bytes)",
                self.done, self.total
            );
        }
    }
}

/// `berthctl update apply SOURCE [--allow-downgrade]`; returns the version written.
pub fn apply(source: &str, allow_downgrade: bool) -> Result<(Slot, String)> {
    if let Ok(s) = std::env::var("BERTH_UPDATE_PAUSE_AT") {
        if !STEPS.contains(&s.as_str()) {
            fail!(
                "BERTH_UPDATE_PAUSE_AT={s:?} is not a step of an apply (valid: {})",
                STEPS.join(", ")
            );
        }
    }
    let mut input: Box<dyn Read> = if source == "-" {
        Box::new(std::io::stdin().lock())
    } else if source.starts_with("http://") {
        Box::new(crate::http::get(source)?)
    } else if source.starts_with("https://") {
        fail!("{source}: berthctl fetches plain http:// (bundles carry their own signature); or pipe it: curl -fsS URL | berthctl update apply -");
    } else {
        Box::new(File::open(source).ctx(|| format!("opening {source}"))?)
    };
    let r: &mut dyn Read = &mut std::io::BufReader::with_capacity(1 << 20, &mut input);
    let h = open(r)?;

    let c = Cmdline::parse(&crate::read_trim("/proc/cmdline")?);
    let (Some(slot), Some(state), Some(roothash)) = (c.slot, c.state, c.roothash.clone()) else {
        fail!("/proc/cmdline has no berth.slot, berth.state and berth.roothash: not booted as a berth slot");
    };
    let running_version = c
        .version
        .clone()
        .or_else(|| os_release_field("IMAGE_VERSION"))
        .unwrap_or_default();
    if let Some(name) = os_release_field("IMAGE_ID") {
        if name != h.image {
            fail!(
                "the bundle is for image {:?}; this machine runs {name:?}",
                h.image
            );
        }
    }
    if h.arch != std::env::consts::ARCH {
        fail!(
            "the bundle is for {}; this machine is {}",
            h.arch,
            std::env::consts::ARCH
        );
    }
    let downgrade =
        bundle::version_cmp(&h.version, &running_version) != std::cmp::Ordering::Greater;
    match bundle::version_cmp(&h.version, &running_version) {
        std::cmp::Ordering::Greater => {}
        _ if allow_downgrade => {}
        std::cmp::Ordering::Equal => fail!("version {} is the one running; nothing to do", h.version),
        std::cmp::Ordering::Less => fail!("version {} is older than the running {running_version} (--allow-downgrade to write it anyway)", h.version),
    }
    if let Some(base) = h.base {
        if hex(&base) != roothash {
            fail!(
                "the bundle is a delta from root hash {}, but this machine runs {roothash}: use the full bundle",
                hex(&base)
            );
        }
    }
    let target = !slot;

    let found = gpt::wait_for(&[state], std::time::Duration::from_secs(5))?.remove(0);
    let disk = format!("/dev/{}", found.disk);
    let dev = |index: u32| -> Result<String> {
        gpt::part_dev(&found.disk, index)
            .map(|d| format!("/dev/{d}"))
            .ok_or_else(|| crate::Error(format!("partition {index} of {disk} has no device node")))
    };

    step("start");
    // Step 2: the target slot stops being bootable before anything of it changes.
    crate::esp::with_esp(false, |esp_mnt| -> Result<()> {
        let entries = format!("{esp_mnt}{}", paths::ENTRIES_DIR);
        for e in fs::read_dir(&entries)
            .ctx(|| format!("listing {entries}"))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if EntryName::parse(&name).is_some_and(|n| n.slot == target) {
                fs::remove_file(e.path()).ctx(|| format!("removing {entries}/{name}"))?;
            }
        }
        sync_dir(&entries)?;
        let mut table = gpt::read(&disk)?;
        table.set_inactive(target)?;
        gpt::write(&disk, &table, None)?;
        eprintln!(
            "berthctl: update: writing {} {} into slot {target}",
            h.image, h.version
        );

        // Step 3.
        let total = h.payloads.iter().map(|p| p.size).sum();
        let mut progress = Progress {
            total,
            done: 0,
            last: 0,
        };
        write_partition(
            r,
            &h,
            Kind::Root,
            &dev(root_index(target))?,
            &dev(root_index(slot))?,
            &mut progress,
        )?;
        write_partition(
            r,
            &h,
            Kind::Verity,
            &dev(verity_index(target))?,
            &dev(verity_index(slot))?,
            &mut progress,
        )?;

        // Step 4.
        let (root_guid, verity_guid) = roothash_partuuids(&h.roothash);
        let mut table = gpt::read(&disk)?;
        table.set_slot_guids(target, root_guid, verity_guid)?;
        gpt::write(&disk, &table, None)?;
        step("after-verity");

        // Step 5.
        write_esp_file(
            r,
            &h,
            Kind::Kernel,
            &format!("{esp_mnt}{}", paths::slot_kernel(target)),
            &format!("{esp_mnt}{}", paths::slot_kernel(slot)),
            &mut progress,
        )?;
        step("after-kernel");
        write_esp_file(
            r,
            &h,
            Kind::Initrd,
            &format!("{esp_mnt}{}", paths::slot_initrd(target)),
            &format!("{esp_mnt}{}", paths::slot_initrd(slot)),
            &mut progress,
        )?;
        sync_dir(&format!("{esp_mnt}/berth/{target}"))?;
        let mut rest = [0u8; 1];
        if r.read(&mut rest).ctx(|| "reading the bundle's end")? != 0 {
            fail!("the bundle has bytes after its last chunk; not activating it");
        }

        // Step 6: the commit point.
        let args = BootArgs {
            slot: target,
            version: h.version.clone(),
            root: root_guid,
            verity: verity_guid,
            roothash: hex(&h.roothash),
            state,
            after_ready: None,
            extra: berth_contract::cmdline::extra_words(&h.cmdline),
        };
        args.validate()?;
        step("before-entry");
        let name = EntryName::new(target, h.tries);
        let path = format!("{esp_mnt}{}", paths::entry(&name));
        let tmp = format!("{esp_mnt}{}/.{}.new", paths::ENTRIES_DIR, name.file_name());
        let mut f = File::create(&tmp).ctx(|| format!("creating {tmp}"))?;
        f.write_all(BootEntry { args }.text().as_bytes())
            .ctx(|| format!("writing {tmp}"))?;
        f.sync_all().ctx(|| format!("fsync {tmp}"))?;
        fs::rename(&tmp, &path).ctx(|| format!("renaming {tmp} to {path}"))?;
        step("after-entry");
        sync_dir(&entries)?;
        // A downgrade (or the same version again): systemd-boot would keep choosing the
        // running slot's newer entry, so it is marked used up (`+0-N`), which sorts after the
        // new entry. Should the new slot fail its tries, both are used up and the newer
        // version boots again. A cut before this rename leaves the running slot first.
        if downgrade {
            crate::esp::use_up(&entries, slot)?;
            sync_dir(&entries)?;
        }
        Ok(())
    })?;
    // For `berthctl status`: the last update written (on /var, which both slots share).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let _ = fs::write(
        host(LAST_UPDATE),
        format!("{}\n{target}\n{now}\n", h.version),
    );
    Ok((target, h.version))
}

/// The last update applied: version, slot and time (Unix seconds), one per line.
pub const LAST_UPDATE: &str = "/var/lib/berth/health/last-update";

#[cfg(test)]
mod tests {
    use berth_contract::bundle::{Chunk, Payload};

    /// A delta's root payload written to a "partition" (a file): a chunk of pieces (blocks of
    /// the running slot from elsewhere, data, zeros) and a running chunk; then a bundle whose
    /// base is not the running slot, stopped at the first chunk that does not match.
    #[test]
    fn pieces_are_put_together_checked_and_written() {
        let d = std::env::temp_dir().join(format!("berth-pieces-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        let running: Vec<u8> = (0..8 * 4096u32)
            .map(|i| (i / 4096 * 31 + i % 7) as u8)
            .collect();
        let block = |j: usize| &running[j * 4096..(j + 1) * 4096];
        let data = vec![0xabu8; 4096];
        let mut want = Vec::new();
        want.extend_from_slice(block(5));
        want.extend_from_slice(block(6));
        want.extend_from_slice(&data);
        want.extend_from_slice(&[0u8; 4096]);
        want.extend_from_slice(&running[16384..32768]);
        let piece = |blocks, origin| Piece { blocks, origin };
        let sum = |b: &[u8]| -> [u8; 32] { Sha256::digest(b).into() };
        let h = |base_chunk1: Source| Header {
            image: "t".into(),
            version: "0.2.0".into(),
            arch: "x86_64".into(),
            cmdline: String::new(),
            tries: 3,
            roothash: [1; 32],
            base: Some([2; 32]),
            chunk_size: 16384,
            payloads: vec![Payload {
                kind: Kind::Root,
                size: 32768,
                chunks: vec![
                    Chunk {
                        source: Source::Pieces(vec![
                            piece(2, Origin::Running(5)),
                            piece(1, Origin::Data),
                            piece(1, Origin::Zeros),
                        ]),
                        sha256: sum(&want[..16384]),
                    },
                    Chunk {
                        source: base_chunk1,
                        sha256: sum(&want[16384..]),
                    },
                ],
            }],
        };
        let (run, dev) = (d.join("running"), d.join("dev"));
        fs::write(&run, &running).unwrap();
        fs::write(&dev, vec![0u8; 32768]).unwrap();
        let mut progress = Progress {
            total: 32768,
            done: 0,
            last: 0,
        };
        let (run_s, dev_s) = (run.to_str().unwrap(), dev.to_str().unwrap());
        let header = h(Source::Running);
        let mut write = || {
            write_partition(
                &mut &data[..],
                &header,
                Kind::Root,
                dev_s,
                run_s,
                &mut progress,
            )
        };
        write().unwrap();
        assert_eq!(fs::read(&dev).unwrap(), want);
        // Another running slot: the chunk of pieces does not match, nothing is written.
        let mut other = running.clone();
        other[5 * 4096] ^= 1;
        fs::write(&run, &other).unwrap();
        fs::write(&dev, vec![0u8; 32768]).unwrap();
        let e = write().unwrap_err();
        assert!(
            e.0.contains("chunk 0 of the root payload does not match")
                && e.0.contains("not the delta's base"),
            "{e}"
        );
        assert_eq!(fs::read(&dev).unwrap(), vec![0u8; 32768]);
        let _ = fs::remove_dir_all(&d);
    }

    use super::*;

    #[test]
    fn key_lines() {
        let k = parse_key(&format!("berth-ed25519 {}\n", "ab".repeat(32))).unwrap();
        assert_eq!(k, [0xab; 32]);
        assert!(parse_key("berth-ed25519 abc").is_none());
        assert!(parse_key(&format!("berth-ed25519-secret {}", "ab".repeat(32))).is_none());
    }
}
