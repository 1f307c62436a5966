//! Blessing the boot entry (systemd-boot boot counting, DESIGN.md "A/B updates"): once the
//! services are up, `loader/entries/berth-<slot>+N[-M].conf` on the ESP is renamed to
//! `berth-<slot>.conf`, so systemd-boot stops counting tries and keeps booting this slot.

use std::fs;
use std::time::Duration;

use berth_contract::dps::ESP_TYPE;
use berth_contract::paths::ENTRIES_DIR;
use berth_contract::{EntryName, Slot};

use crate::gpt::{self, Guid};
use crate::initrd::mount;
use crate::{sys, Ctx, Result};

const MNT: &str = "/run/berth/esp";
/// PID 1 records the outcome here for `berthctl status` (which then needs no ESP mount).
pub const RECORD: &str = "/run/berth/entry";

/// The blessed name of entry `name`, if it is a counting entry of `slot`:
/// `berth-a+3.conf` and `berth-a+2-1.conf` give `berth-a.conf`; anything else `None`.
pub fn blessed_name(name: &str, slot: Slot) -> Option<String> {
    EntryName::parse(name)
        .filter(|e| e.slot == slot && !e.is_blessed())
        .map(|e| e.blessed().file_name())
}

/// Finds the ESP on the disk holding the state partition, renames this slot's counting entry
/// (if any) and unmounts. Returns (old, new) when it renamed one, and records the entry name.
pub fn bless(state: Guid, slot: Slot) -> Result<Option<(String, String)>> {
    let disk = gpt::wait_for(&[state], Duration::from_secs(2))?
        .remove(0)
        .disk;
    let Some(esp) = gpt::find_type(&disk, ESP_TYPE) else {
        crate::fail!("finding the ESP (type {ESP_TYPE}) on /dev/{disk}: no such partition");
    };
    fs::create_dir_all(MNT).ctx(|| format!("mkdir -p {MNT}"))?;
    let flags = sys::MS_NOSUID | sys::MS_NODEV | sys::MS_NOEXEC;
    mount(&format!("/dev/{}", esp.dev), MNT, "vfat", flags, "")?;
    let r = rename_entry(slot);
    sys::sync();
    let u = sys::umount(MNT, 0).ctx(|| format!("umount {MNT}"));
    let r = r?;
    u?;
    let (entry, state) = match &r {
        Some((_, new)) => (new.clone(), "blessed"),
        None => (EntryName::new(slot, 0).file_name(), "already-blessed"),
    };
    let _ = fs::write(RECORD, format!("{entry} {state}\n"));
    Ok(r)
}

fn rename_entry(slot: Slot) -> Result<Option<(String, String)>> {
    let dir = format!("{MNT}{ENTRIES_DIR}");
    let names: Vec<String> = fs::read_dir(&dir)
        .ctx(|| format!("listing {dir}"))?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    for old in names {
        if let Some(new) = blessed_name(&old, slot) {
            fs::rename(format!("{dir}/{old}"), format!("{dir}/{new}"))
                .ctx(|| format!("renaming {dir}/{old} to {new}"))?;
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
