//! Blessing the boot entry (systemd-boot boot counting, DESIGN.md "A/B updates"): once the
//! services are up, `loader/entries/berth-<slot>+N[-M].conf` on the ESP is renamed to
//! `berth-<slot>.conf`, so systemd-boot stops counting tries and keeps booting this slot.

use std::fs;
use std::time::Duration;

use berth_contract::dps::ESP_TYPE;
use berth_contract::paths::ENTRIES_DIR;
use berth_contract::{EntryName, Slot};

use crate::gpt;
use crate::initrd::mount;
use crate::{sys, Ctx, Result};

/// PID 1 records the outcome here for `berthctl status` (which then needs no ESP mount).
pub const RECORD: &str = "/run/berth/entry";
/// Whoever mounts the ESP (PID 1 blessing, `berthctl update` on the host or in the admin
/// container) holds this lock: two vfat mounts of one device would corrupt it.
const LOCK: &str = "/run/berth/esp.lock";

/// Takes the ESP lock (made by PID 1 at boot; opened read-only, since the admin container
/// sees /run/berth read-only); released when the file is dropped.
pub fn lock() -> Result<fs::File> {
    if std::process::id() == 1 {
        let _ = fs::create_dir_all("/run/berth");
        let _ = fs::OpenOptions::new().create(true).append(true).open(LOCK);
    }
    let f = fs::File::open(LOCK).ctx(|| format!("opening {LOCK}"))?;
    use std::os::fd::AsRawFd;
    sys::lock_exclusive(f.as_raw_fd()).ctx(|| format!("locking {LOCK}"))?;
    Ok(f)
}

/// The blessed name of entry `name`, if it is a counting entry of `slot`:
/// `berth-a+3.conf` and `berth-a+2-1.conf` give `berth-a.conf`; anything else `None`.
pub fn blessed_name(name: &str, slot: Slot) -> Option<String> {
    EntryName::parse(name)
        .filter(|e| e.slot == slot && !e.is_blessed())
        .map(|e| e.blessed().file_name())
}

/// Renames this slot's counting entry (if any) on the ESP. Returns (old, new) when it renamed
/// one, and records the entry name.
pub fn bless(slot: Slot) -> Result<Option<(String, String)>> {
    let r = with_esp(false, |mnt| rename_entry(mnt, slot))?;
    let (entry, state) = match &r {
        Some((_, new)) => (new.clone(), "blessed"),
        None => (EntryName::new(slot, 0).file_name(), "already-blessed"),
    };
    let _ = fs::write(RECORD, format!("{entry} {state}\n"));
    Ok(r)
}

/// Mounts the ESP (under the lock) at a private mount point, runs `f` on it, unmounts.
pub fn with_esp<T>(readonly: bool, f: impl FnOnce(&str) -> Result<T>) -> Result<T> {
    let c = crate::cmdline::read()?;
    // The disk the running root is on (the state partition may be missing: a degraded boot).
    let Some(root) = c.root else {
        crate::fail!("/proc/cmdline has no berth.root");
    };
    let disk = gpt::wait_for(&[root], Duration::from_secs(2))?
        .remove(0)
        .disk;
    let Some(esp) = gpt::find_type(&disk, ESP_TYPE) else {
        crate::fail!("finding the ESP (type {ESP_TYPE}) on /dev/{disk}: no such partition");
    };
    let _lock = lock()?;
    let mnt = "/tmp/berthctl-esp";
    fs::create_dir_all(mnt).ctx(|| format!("mkdir -p {mnt}"))?;
    let mut flags = sys::MS_NOSUID | sys::MS_NODEV | sys::MS_NOEXEC;
    if readonly {
        flags |= sys::MS_RDONLY;
    }
    mount(&format!("/dev/{}", esp.dev), mnt, "vfat", flags, "")?;
    let r = f(mnt);
    sys::sync();
    let u = sys::umount(mnt, 0).ctx(|| format!("umount {mnt}"));
    let r = r?;
    u?;
    Ok(r)
}

fn read_entries(mnt: &str) -> Result<Vec<(EntryName, String)>> {
    let dir = format!("{mnt}{ENTRIES_DIR}");
    let mut out = Vec::new();
    for e in fs::read_dir(&dir)
        .ctx(|| format!("listing {dir}"))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(n) = EntryName::parse(&name) else {
            continue;
        };
        let text = fs::read_to_string(e.path()).unwrap_or_default();
        let version = berth_contract::BootEntry::parse(&text)
            .map(|b| b.args.version)
            .unwrap_or_else(|_| "unreadable".into());
        out.push((n, version));
    }
    out.sort_by_key(|(n, _)| n.file_name());
    Ok(out)
}

/// Every berth boot entry on the ESP with its version.
pub fn entries() -> Result<Vec<(EntryName, String)>> {
    with_esp(true, read_entries)
}

/// Every berth boot entry with its version and root hash (`None` when unreadable).
pub fn entries_with_roothash() -> Result<Vec<(EntryName, String, Option<String>)>> {
    with_esp(true, |mnt| {
        let list = read_entries(mnt)?;
        Ok(list
            .into_iter()
            .map(|(n, v)| {
                let p = format!("{mnt}{}", berth_contract::paths::entry(&n));
                let h = fs::read_to_string(p)
                    .ok()
                    .and_then(|t| berth_contract::BootEntry::parse(&t).ok())
                    .map(|b| b.args.roothash);
                (n, v, h)
            })
            .collect())
    })
}

/// Makes the other slot boot next, if it has an entry that is not bad: the running slot's
/// entry is marked bad (`+0-N`), which systemd-boot sorts last.
pub fn rollback() -> Result<String> {
    let c = crate::cmdline::read()?;
    let Some(slot) = c.slot else {
        crate::fail!("/proc/cmdline has no berth.slot");
    };
    with_esp(false, |mnt| {
        let list = read_entries(mnt)?;
        let other = list.iter().find(|(n, _)| n.slot == !slot && !n.is_bad());
        let Some((o, ov)) = other else {
            crate::fail!(
                "slot {} has no usable boot entry: nothing to roll back to",
                !slot
            );
        };
        use_up(&format!("{mnt}{ENTRIES_DIR}"), slot)?;
        Ok(format!(
            "slot {} (version {ov}, {}) boots next; reboot to use it",
            !slot,
            o.file_name()
        ))
    })
}

/// Marks `slot`'s entries in `dir` used up (`+0-N`): systemd-boot sorts them after any entry
/// with tries left or blessed. Then fsync of the directory.
pub fn use_up(dir: &str, slot: Slot) -> Result<()> {
    for e in fs::read_dir(dir)
        .ctx(|| format!("listing {dir}"))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(n) = EntryName::parse(&name).filter(|n| n.slot == slot && !n.is_bad()) else {
            continue;
        };
        let used = EntryName {
            tries: Some(berth_contract::Tries {
                left: 0,
                done: n.tries.map_or(1, |t| t.done.max(1)),
            }),
            ..n
        };
        fs::rename(e.path(), format!("{dir}/{}", used.file_name()))
            .ctx(|| format!("renaming {dir}/{name} to {}", used.file_name()))?;
    }
    let d = fs::File::open(dir).ctx(|| format!("opening {dir}"))?;
    d.sync_all().ctx(|| format!("fsync {dir}"))
}

fn rename_entry(mnt: &str, slot: Slot) -> Result<Option<(String, String)>> {
    let dir = format!("{mnt}{ENTRIES_DIR}");
    let names: Vec<String> = fs::read_dir(&dir)
        .ctx(|| format!("listing {dir}"))?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    for old in names {
        if let Some(new) = blessed_name(&old, slot) {
            fs::rename(format!("{dir}/{old}"), format!("{dir}/{new}"))
                .ctx(|| format!("renaming {dir}/{old} to {new}"))?;
            let d = fs::File::open(&dir).ctx(|| format!("opening {dir}"))?;
            d.sync_all().ctx(|| format!("fsync {dir}"))?;
            return Ok(Some((old, new)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blessing_names() {
        assert_eq!(
            blessed_name("berth-a+3.conf", Slot::A).as_deref(),
            Some("berth-a.conf")
        );
        assert_eq!(
            blessed_name("berth-a+2-1.conf", Slot::A).as_deref(),
            Some("berth-a.conf")
        );
        assert_eq!(
            blessed_name("berth-a+0-3.conf", Slot::A).as_deref(),
            Some("berth-a.conf")
        );
        assert_eq!(blessed_name("berth-a.conf", Slot::A), None);
        assert_eq!(blessed_name("berth-b+3.conf", Slot::A), None);
        assert_eq!(blessed_name("berth-a+x.conf", Slot::A), None);
    }
}
