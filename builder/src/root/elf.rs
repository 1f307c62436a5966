//! Just enough ELF to find what a program needs at run time: its interpreter (`PT_INTERP`) and its
//! `DT_NEEDED`/`DT_RUNPATH`/`DT_RPATH` entries. Read through the program headers, as the dynamic
//! loader does, so stripped binaries without section headers work too.
//!
//! Only 64-bit little-endian ELF is read: berth images are x86-64.

use anyhow::{bail, ensure, Context, Result};

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ElfDeps {
    /// The program interpreter (dynamic loader), for executables.
    pub interp: Option<String>,
    pub needed: Vec<String>,
    /// Colon-separated entries of DT_RUNPATH (or DT_RPATH if there is no RUNPATH).
    pub runpath: Vec<String>,
}

/// True if `data` starts with the ELF magic.
pub fn is_elf(data: &[u8]) -> bool {
    data.starts_with(b"\x7fELF")
}

/// The `N` bytes at `off`, or "truncated" (also where `off + N` would pass the address space).
fn bytes_at<const N: usize>(d: &[u8], off: usize) -> Result<[u8; N]> {
    let b = off
        .checked_add(N)
        .and_then(|end| d.get(off..end))
        .context("truncated ELF")?;
    let mut a = [0u8; N];
    a.copy_from_slice(b);
    Ok(a)
}

fn u16_at(d: &[u8], off: usize) -> Result<u16> {
    bytes_at(d, off).map(u16::from_le_bytes)
}

fn u32_at(d: &[u8], off: usize) -> Result<u32> {
    bytes_at(d, off).map(u32::from_le_bytes)
}

fn u64_at(d: &[u8], off: usize) -> Result<u64> {
    bytes_at(d, off).map(u64::from_le_bytes)
}

fn cstr(d: &[u8], off: usize) -> Result<String> {
    let s = d
        .get(off..)
        .context("string offset past the end of the ELF file")?;
    let end = s
        .iter()
        .position(|&b| b == 0)
        .context("unterminated string in ELF")?;
    Ok(String::from_utf8_lossy(&s[..end]).into_owned())
}

struct Phdr {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

/// `base + i * size`, or an error where a hostile header makes it overflow (the fuzzer found
/// `phoff` near 2^64).
fn offset(base: usize, i: usize, size: usize) -> Result<usize> {
    i.checked_mul(size)
        .and_then(|o| o.checked_add(base))
        .context("ELF header offsets beyond the address space")
}

/// Parses the dynamic dependencies of a 64-bit little-endian ELF file. A static executable gives
/// an empty result.
pub fn deps(data: &[u8]) -> Result<ElfDeps> {
    ensure!(is_elf(data), "not an ELF file");
    ensure!(
        data.get(4) == Some(&2),
        "not a 64-bit ELF file (berth images are x86-64)"
    );
    ensure!(data.get(5) == Some(&1), "not a little-endian ELF file");
    let phoff = usize::try_from(u64_at(data, 0x20)?)?;
    let phentsize = usize::from(u16_at(data, 0x36)?);
    let phnum = usize::from(u16_at(data, 0x38)?);
    ensure!(phentsize >= 56, "bad ELF program header size {phentsize}");
    let mut phdrs = Vec::with_capacity(phnum);
    for i in 0..phnum {
        let o = offset(phoff, i, phentsize)?;
        phdrs.push(Phdr {
            kind: u32_at(data, o)?,
            offset: u64_at(data, o + 8)?,
            vaddr: u64_at(data, o + 16)?,
            filesz: u64_at(data, o + 32)?,
        });
    }
    let mut out = ElfDeps::default();
    for p in &phdrs {
        if p.kind == PT_INTERP {
            out.interp = Some(cstr(data, usize::try_from(p.offset)?)?);
        }
    }
    let Some(dynamic) = phdrs.iter().find(|p| p.kind == PT_DYNAMIC) else {
        return Ok(out);
    };
    let mut entries = Vec::new();
    let start = usize::try_from(dynamic.offset)?;
    let count = usize::try_from(dynamic.filesz / 16)?;
    for i in 0..count {
        let o = offset(start, i, 16)?;
        let tag = u64_at(data, o)?;
        let val = u64_at(data, o.saturating_add(8))?;
        if tag == DT_NULL {
            break;
        }
        entries.push((tag, val));
    }
    let Some(strtab_vaddr) = entries
        .iter()
        .find(|(t, _)| *t == DT_STRTAB)
        .map(|(_, v)| *v)
    else {
        bail!("ELF dynamic section has no DT_STRTAB");
    };
    // DT_STRTAB is a virtual address: map it to a file offset through the PT_LOAD that holds it.
    let strtab = phdrs
        .iter()
        .filter(|p| p.kind == PT_LOAD)
        .find(|p| strtab_vaddr >= p.vaddr && strtab_vaddr - p.vaddr < p.filesz)
        .and_then(|p| (strtab_vaddr - p.vaddr).checked_add(p.offset))
        .context("ELF DT_STRTAB is outside every loadable segment")?;
    let strtab = usize::try_from(strtab)?;
    let mut rpath = Vec::new();
    for (tag, val) in entries {
        let s = || {
            cstr(
                data,
                strtab.saturating_add(usize::try_from(val).unwrap_or(usize::MAX)),
            )
        };
        match tag {
            DT_NEEDED => out.needed.push(s()?),
            DT_RUNPATH => out.runpath.extend(s()?.split(':').map(str::to_string)),
            DT_RPATH => rpath.extend(s()?.split(':').map(str::to_string)),
            _ => {}
        }
    }
    if out.runpath.is_empty() {
        out.runpath = rpath;
    }
    out.runpath.retain(|p| !p.is_empty());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_real_dynamic_executable() {
        // The test binary itself is a dynamically linked x86-64 executable needing libc.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let d = deps(&me).unwrap();
        assert!(
            d.interp.as_deref().is_some_and(|i| i.contains("ld-linux")),
            "{d:?}"
        );
        assert!(d.needed.iter().any(|n| n.starts_with("libc.so")), "{d:?}");
    }

    #[test]
    fn reads_a_shared_library_without_interp() {
        let libc = [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
        ]
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .expect("libc.so.6 on the host");
        let d = deps(&libc).unwrap();
        assert!(d.needed.iter().any(|n| n.starts_with("ld-linux")), "{d:?}");
    }

    /// Regression (fuzz, elf-deps): a PT_LOAD range reaching past 2^64 overflowed the offset
    /// arithmetic (a panic with overflow checks on, a wrong read without).
    #[test]
    fn offsets_near_the_top_of_the_address_space_are_errors() {
        // Every PT_LOAD from address 1 with the largest size: vaddr + filesz passes 2^64.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        // A program header table at 2^64 - 3: reading its first field passes the end.
        let mut bad = me.clone();
        bad[0x20..0x28].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
        assert!(deps(&bad).unwrap_err().to_string().contains("truncated"));
        let mut bad = me;
        let phoff = u64::from_le_bytes(bad[0x20..0x28].try_into().unwrap()) as usize;
        let (size, n) = (
            u16::from_le_bytes([bad[0x36], bad[0x37]]) as usize,
            u16::from_le_bytes([bad[0x38], bad[0x39]]) as usize,
        );
        for i in 0..n {
            let o = phoff + i * size;
            if u32::from_le_bytes(bad[o..o + 4].try_into().unwrap()) == PT_LOAD {
                bad[o + 16..o + 24].copy_from_slice(&1u64.to_le_bytes());
                bad[o + 32..o + 40].copy_from_slice(&u64::MAX.to_le_bytes());
            }
        }
        // A garbage answer or an error, but no panic (the test profile checks overflows).
        let _ = deps(&bad);
    }

    #[test]
    fn rejects_non_elf_and_truncated_files() {
        assert!(deps(b"#!/bin/sh\n")
            .unwrap_err()
            .to_string()
            .contains("not an ELF"));
        let mut h = vec![0u8; 20];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        assert!(deps(&h).is_err());
        h[4] = 1;
        assert!(deps(&h).unwrap_err().to_string().contains("64-bit"));
    }
}
