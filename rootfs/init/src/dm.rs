//! Device-mapper through /dev/mapper/control (linux/dm-ioctl.h, interface version 4): create a
//! device, load its table, resume it, and read a table back. Requests are byte buffers built
//! here field by field, so the layout is explicit and tested, not inferred from a Rust struct.
//!
//! ```text
//! struct dm_ioctl (312 bytes)                      struct dm_target_spec (40 bytes)
//!   0 version[3] u32   12 data_size   16 data_start     0 sector_start u64   8 length u64
//!  20 target_count     24 open_count  28 flags         16 status i32        20 next u32
//!  32 event_nr   36 padding   40 dev u64               24 target_type[16], then params\0
//!  48 name[128]  176 uuid[129]  305 data[7]
//! ```

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

use crate::{fail, sys, Ctx, Result};

pub const DM_IOCTL_SIZE: usize = 312;
pub const TARGET_SPEC_SIZE: usize = 40;
const NAME_OFF: usize = 48;
const NAME_LEN: usize = 128;
const CONTROL: &str = "/dev/mapper/control";

const DM_READONLY_FLAG: u32 = 1 << 0;
const DM_STATUS_TABLE_FLAG: u32 = 1 << 4;
const DM_BUFFER_FULL_FLAG: u32 = 1 << 8;

/// `_IOWR(0xfd, nr, struct dm_ioctl)`.
const fn dm_req(nr: u64) -> u64 {
    (3 << 30) | ((DM_IOCTL_SIZE as u64) << 16) | (0xfd << 8) | nr
}
const DM_DEV_CREATE: u64 = dm_req(3);
const DM_DEV_SUSPEND: u64 = dm_req(6);
const DM_TABLE_LOAD: u64 = dm_req(9);
const DM_TABLE_STATUS: u64 = dm_req(12);

fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}

fn get32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// A request: header for device `name`, then `payload`, the whole buffer `len` bytes (at least
/// header + payload; more leaves room for the kernel's answer).
fn request(name: &str, flags: u32, target_count: u32, payload: &[u8], len: usize) -> Vec<u8> {
    let len = len.max(DM_IOCTL_SIZE + payload.len());
    let mut b = vec![0u8; len];
    put32(&mut b, 0, 4); // interface version 4.0.0: any 4.x kernel accepts it
    put32(&mut b, 12, len as u32);
    put32(&mut b, 16, DM_IOCTL_SIZE as u32);
    put32(&mut b, 20, target_count);
    put32(&mut b, 28, flags);
    let n = name.len().min(NAME_LEN - 1);
    b[NAME_OFF..NAME_OFF + n].copy_from_slice(&name.as_bytes()[..n]);
    b[DM_IOCTL_SIZE..DM_IOCTL_SIZE + payload.len()].copy_from_slice(payload);
    b
}

/// One target: spec + NUL-terminated params, padded to 8 bytes (`next` points past it).
fn target(start: u64, sectors: u64, kind: &str, params: &str) -> Vec<u8> {
    let len = (TARGET_SPEC_SIZE + params.len() + 1).next_multiple_of(8);
    let mut t = vec![0u8; len];
    t[0..8].copy_from_slice(&start.to_le_bytes());
    t[8..16].copy_from_slice(&sectors.to_le_bytes());
    put32(&mut t, 20, len as u32);
    t[24..24 + kind.len().min(15)].copy_from_slice(&kind.as_bytes()[..kind.len().min(15)]);
    t[TARGET_SPEC_SIZE..TARGET_SPEC_SIZE + params.len()].copy_from_slice(params.as_bytes());
    t
}

/// The kernel's `huge_encode_dev` in the reply's `dev` field, back to (major, minor).
fn decode_dev(dev: u64) -> (u32, u32) {
    (
        ((dev >> 8) & 0xfff) as u32,
        ((dev & 0xff) | ((dev >> 12) & 0xfff00)) as u32,
    )
}

fn call(what: &str, req: u64, buf: &mut [u8]) -> Result<()> {
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .open(CONTROL)
        .ctx(|| format!("opening {CONTROL}"))?;
    sys::ioctl_buf(ctl.as_raw_fd(), req as libc::c_ulong, buf).ctx(|| what.to_string())
}

/// Creates read-only device `name` with one target and activates it; returns (major, minor).
pub fn create(name: &str, sectors: u64, kind: &str, params: &str) -> Result<(u32, u32)> {
    let mut b = request(name, 0, 0, &[], 0);
    call(&format!("DM_DEV_CREATE {name}"), DM_DEV_CREATE, &mut b)?;
    let dev = u64::from(get32(&b, 40)) | (u64::from(get32(&b, 44)) << 32);
    let t = target(0, sectors, kind, params);
    let mut b = request(name, DM_READONLY_FLAG, 1, &t, 0);
    call(
        &format!("DM_TABLE_LOAD {name} \"0 {sectors} {kind} {params}\""),
        DM_TABLE_LOAD,
        &mut b,
    )?;
    // DM_DEV_SUSPEND without DM_SUSPEND_FLAG resumes: the loaded table goes live.
    let mut b = request(name, 0, 0, &[], 0);
    call(
        &format!("DM_DEV_SUSPEND (resume) {name}"),
        DM_DEV_SUSPEND,
        &mut b,
    )?;
    Ok(decode_dev(dev))
}

/// The target types of device `name`'s live table (DM_TABLE_STATUS with the table flag).
pub fn target_types(name: &str) -> Result<Vec<String>> {
    let mut b = request(name, DM_STATUS_TABLE_FLAG, 0, &[], 16 * 1024);
    call(&format!("DM_TABLE_STATUS {name}"), DM_TABLE_STATUS, &mut b)?;
    parse_targets(&b)
}

fn parse_targets(b: &[u8]) -> Result<Vec<String>> {
    if get32(b, 28) & DM_BUFFER_FULL_FLAG != 0 {
        fail!(
            "DM_TABLE_STATUS: the table does not fit in {} bytes",
            b.len()
        );
    }
    let (mut at, mut out) = (get32(b, 16) as usize, Vec::new());
    let start = at;
    for _ in 0..get32(b, 20) {
        if at + TARGET_SPEC_SIZE > b.len() {
            fail!("DM_TABLE_STATUS: target spec at {at} is past the reply");
        }
        let ty = &b[at + 24..at + 40];
        let end = ty.iter().position(|&c| c == 0).unwrap_or(16);
        out.push(String::from_utf8_lossy(&ty[..end]).into_owned());
        // On replies `next` counts from the first spec, not from this one.
        at = start + get32(b, at + 20) as usize;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_dm_ioctl_h() {
        // _IOWR(0xfd, 3, struct dm_ioctl) as the C headers compute it.
        assert_eq!(DM_DEV_CREATE, 0xC138_FD03);
        assert_eq!(DM_TABLE_STATUS, 0xC138_FD0C);
        let t = target(0, 2048, "verity", "1 a b");
        assert_eq!(t.len(), 48); // 40 + "1 a b\0" (6) rounded up to 8
        let b = request("root", DM_READONLY_FLAG, 1, &t, 0);
        assert_eq!(b.len(), DM_IOCTL_SIZE + 48);
        assert_eq!(get32(&b, 12) as usize, b.len());
        assert_eq!(get32(&b, 16) as usize, DM_IOCTL_SIZE);
        assert_eq!(&b[48..53], b"root\0");
        assert_eq!(&b[312 + 8..312 + 16], &2048u64.to_le_bytes());
        assert_eq!(get32(&b, 312 + 20), 48);
        assert_eq!(&b[312 + 24..312 + 31], b"verity\0");
        assert_eq!(&b[312 + 40..312 + 46], b"1 a b\0");
    }

    #[test]
    fn reads_a_status_reply() {
        let mut t = target(0, 8, "verity", "x");
        t.extend(target(8, 8, "linear", "yyyyyyyyy"));
        // Reply `next` offsets count from the first spec.
        put32(&mut t, 48 + 20, 48 + 56);
        let mut b = request("root", 0, 2, &t, 0);
        put32(&mut b, 20, 2);
        assert_eq!(parse_targets(&b).unwrap(), ["verity", "linear"]);
        assert_eq!(decode_dev((254 << 8) | 3), (254, 3));
        // Minor 0x123: low byte in bits 0-7, the rest from bit 20 up.
        assert_eq!(decode_dev(0x23 | (253 << 8) | (0x100 << 12)), (253, 0x123));
    }
}
