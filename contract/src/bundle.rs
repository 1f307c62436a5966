//! The update bundle: one streamable file holding a slot's payloads (root image, verity tree,
//! kernel, initrd) under a header that lists the SHA-256 of every chunk, signed (ed25519) by
//! the image's release key. `berth build` writes it; `berthctl update apply` reads it front to
//! back, checks the signature over the header first, then every chunk against the header
//! before writing it, so nothing unverified reaches the disk.
//!
//! ```text
//! magic    "BERTHUPD"
//! u32 LE   header length H (at most MAX_HEADER)
//! header   H bytes (below)
//! u32 LE   signature length: 0 (unsigned) or 96
//! sig      ed25519 signature (64) over magic || H || header, then the public key (32)
//! data     the chunks marked Data, payload by payload, in order
//! ```
//!
//! Header (little endian; strings as u16 length + UTF-8): format version (u32), image name,
//! version, architecture, the kernel command line's own words, boot tries (u32), verity root
//! hash (32), delta base root hash (32, zero for a full bundle), chunk size (u32), payload
//! count (u8), then per payload: kind (u8), size (u64), chunk count (u32), and per chunk its
//! source (u8: 0 = data in the bundle, 1 = the running slot's bytes at the same offset) and
//! SHA-256 (32). A delta bundle marks unchanged chunks of the root and verity payloads as
//! "running": the machine copies them from its running slot and checks them like any other.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::{Error, Result};

pub const MAGIC: [u8; 8] = *b"BERTHUPD";
pub const FORMAT: u32 = 1;
/// Chunk size of bundles berth writes: the unit of verification, delta and progress.
pub const CHUNK: u32 = 1 << 20;
/// Largest header accepted (a 4 GiB root is 4096 chunks of 33 bytes: far below this).
pub const MAX_HEADER: usize = 4 << 20;
/// An ed25519 signature and the public key that made it.
pub const SIGNATURE_LEN: usize = 96;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Root,
    Verity,
    Kernel,
    Initrd,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Root, Kind::Verity, Kind::Kernel, Kind::Initrd];

    fn code(self) -> u8 {
        match self {
            Kind::Root => 1,
            Kind::Verity => 2,
            Kind::Kernel => 3,
            Kind::Initrd => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Root => "root",
            Kind::Verity => "verity",
            Kind::Kernel => "kernel",
            Kind::Initrd => "initrd",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The chunk's bytes follow in the bundle.
    Data,
    /// The running slot holds these bytes at the same offset (a delta bundle).
    Running,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub source: Source,
    pub sha256: [u8; 32],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    pub kind: Kind,
    pub size: u64,
    pub chunks: Vec<Chunk>,
}

impl Payload {
    /// The length of chunk `i` (the last one may be short).
    pub fn chunk_len(&self, i: usize, chunk_size: u32) -> u64 {
        let start = i as u64 * u64::from(chunk_size);
        (self.size - start).min(u64::from(chunk_size))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub image: String,
    pub version: String,
    pub arch: String,
    /// The kernel command line's own words (`console=ttyS0 panic=10 …`); berth's keys are
    /// made on the machine for the slot the bundle is written to.
    pub cmdline: String,
    pub tries: u32,
    pub roothash: [u8; 32],
    /// For a delta bundle, the root hash of the version it applies to.
    pub base: Option<[u8; 32]>,
    pub chunk_size: u32,
    pub payloads: Vec<Payload>,
}

struct W(Vec<u8>);

impl W {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        let b = s.as_bytes();
        let n = b.len().min(u16::MAX as usize);
        self.0.extend_from_slice(&(n as u16).to_le_bytes());
        self.0.extend_from_slice(&b[..n]);
    }
}

struct R<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> R<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.b.len());
        let end = end.ok_or_else(|| {
            Error::Invalid(format!(
                "bundle header ends inside {what} (byte {} of {})",
                self.at,
                self.b.len()
            ))
        })?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4, what)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(a))
    }
    fn hash(&mut self, what: &str) -> Result<[u8; 32]> {
        let mut a = [0u8; 32];
        a.copy_from_slice(self.take(32, what)?);
        Ok(a)
    }
    fn str(&mut self, what: &str) -> Result<String> {
        let mut a = [0u8; 2];
        a.copy_from_slice(self.take(2, what)?);
        let n = u16::from_le_bytes(a) as usize;
        let s = self.take(n, what)?;
        core::str::from_utf8(s)
            .map(ToString::to_string)
            .map_err(|_| Error::Invalid(format!("bundle header: {what} is not UTF-8")))
    }
}

impl Header {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = W(Vec::new());
        w.u32(FORMAT);
        w.str(&self.image);
        w.str(&self.version);
        w.str(&self.arch);
        w.str(&self.cmdline);
        w.u32(self.tries);
        w.0.extend_from_slice(&self.roothash);
        w.0.extend_from_slice(&self.base.unwrap_or([0; 32]));
        w.u32(self.chunk_size);
        w.u8(self.payloads.len() as u8);
        for p in &self.payloads {
            w.u8(p.kind.code());
            w.u64(p.size);
            w.u32(p.chunks.len() as u32);
            for c in &p.chunks {
                w.u8(match c.source {
                    Source::Data => 0,
                    Source::Running => 1,
                });
                w.0.extend_from_slice(&c.sha256);
            }
        }
        w.0
    }

    /// Reads and checks a header: its shape (one payload of each kind, chunk counts that fit
    /// the sizes, only root and verity chunks taken from the running slot, only in a delta).
    pub fn decode(b: &[u8]) -> Result<Header> {
        let mut r = R { b, at: 0 };
        let format = r.u32("the format version")?;
        if format != FORMAT {
            return Err(Error::Invalid(format!(
                "bundle format {format}; this berth reads format {FORMAT}"
            )));
        }
        let image = r.str("the image name")?;
        let version = r.str("the version")?;
        let arch = r.str("the architecture")?;
        let cmdline = r.str("the command line")?;
        let tries = r.u32("the boot tries")?;
        let roothash = r.hash("the root hash")?;
        let base = r.hash("the delta base")?;
        let base = (base != [0; 32]).then_some(base);
        let chunk_size = r.u32("the chunk size")?;
        if !(4096..=(64 << 20)).contains(&chunk_size) || !chunk_size.is_power_of_two() {
            return Err(Error::Invalid(format!(
                "bundle chunk size {chunk_size} is not a power of two from 4 KiB to 64 MiB"
            )));
        }
        let n = r.u8("the payload count")?;
        let mut payloads: Vec<Payload> = Vec::new();
        for _ in 0..n {
            let code = r.u8("a payload kind")?;
            let kind = Kind::ALL
                .into_iter()
                .find(|k| k.code() == code)
                .ok_or_else(|| Error::Invalid(format!("bundle payload kind {code} is unknown")))?;
            if payloads.iter().any(|p| p.kind == kind) {
                return Err(Error::Invalid(format!(
                    "bundle has two {} payloads",
                    kind.name()
                )));
            }
            let size = r.u64("a payload size")?;
            let count = r.u32("a chunk count")? as u64;
            if count != size.div_ceil(u64::from(chunk_size)) || size == 0 {
                return Err(Error::Invalid(format!(
                    "bundle {} payload: {count} chunks do not cover {size} bytes",
                    kind.name()
                )));
            }
            let mut chunks = Vec::new();
            for _ in 0..count {
                let source = match r.u8("a chunk source")? {
                    0 => Source::Data,
                    1 if base.is_some() && matches!(kind, Kind::Root | Kind::Verity) => {
                        Source::Running
                    }
                    s => {
                        return Err(Error::Invalid(format!(
                            "bundle {} payload: chunk source {s} is not valid here",
                            kind.name()
                        )))
                    }
                };
                chunks.push(Chunk {
                    source,
                    sha256: r.hash("a chunk hash")?,
                });
            }
            payloads.push(Payload { kind, size, chunks });
        }
        for k in Kind::ALL {
            if !payloads.iter().any(|p| p.kind == k) {
                return Err(Error::Invalid(format!(
                    "bundle has no {} payload",
                    k.name()
                )));
            }
        }
        if r.at != b.len() {
            return Err(Error::Invalid(format!(
                "bundle header has {} bytes after its end",
                b.len() - r.at
            )));
        }
        Ok(Header {
            image,
            version,
            arch,
            cmdline,
            tries,
            roothash,
            base,
            chunk_size,
            payloads,
        })
    }

    pub fn payload(&self, kind: Kind) -> &Payload {
        self.payloads
            .iter()
            .find(|p| p.kind == kind)
            .unwrap_or(&self.payloads[0])
    }

    /// Bytes of chunk data the bundle carries.
    pub fn data_bytes(&self) -> u64 {
        self.payloads
            .iter()
            .map(|p| {
                (0..p.chunks.len())
                    .filter(|i| p.chunks[*i].source == Source::Data)
                    .map(|i| p.chunk_len(i, self.chunk_size))
                    .sum::<u64>()
            })
            .sum()
    }
}

/// What the signature covers: magic, header length, header.
pub fn signed_prefix(header: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + header.len());
    v.extend_from_slice(&MAGIC);
    v.extend_from_slice(&(header.len() as u32).to_le_bytes());
    v.extend_from_slice(header);
    v
}

/// Versions compared as systemd-boot and Debian do: runs of digits by value (`1.2.10 >
/// 1.2.9`), `~` before anything (even the end: `1.0~rc1 < 1.0`), other bytes by value.
pub fn version_cmp(a: &str, b: &str) -> core::cmp::Ordering {
    use core::cmp::Ordering;
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    loop {
        let (ta, tb) = (a.get(i) == Some(&b'~'), b.get(j) == Some(&b'~'));
        if ta != tb {
            return if ta {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        }
        if i >= a.len() || j >= b.len() {
            break;
        }
        if a[i].is_ascii_digit() && b[j].is_ascii_digit() {
            let si = i;
            while i < a.len() && a[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let x = trim_zeros(&a[si..i]);
            let y = trim_zeros(&b[sj..j]);
            let o = x.len().cmp(&y.len()).then_with(|| x.cmp(y));
            if o != Ordering::Equal {
                return o;
            }
        } else {
            let o = a[i].cmp(&b[j]);
            // (`~` on both sides compares equal here and is skipped.)
            if o != Ordering::Equal {
                return o;
            }
            i += 1;
            j += 1;
        }
    }
    (a.len() - i).cmp(&(b.len() - j))
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let k = d.iter().position(|c| *c != b'0').unwrap_or(d.len());
    &d[k..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use core::cmp::Ordering;

    fn header() -> Header {
        let p = |kind, size: u64| Payload {
            kind,
            size,
            chunks: (0..size.div_ceil(4096))
                .map(|i| Chunk {
                    source: Source::Data,
                    sha256: [i as u8; 32],
                })
                .collect(),
        };
        Header {
            image: "berth-qemu".into(),
            version: "0.2.0".into(),
            arch: "x86_64".into(),
            cmdline: "console=ttyS0 panic=10".into(),
            tries: 3,
            roothash: [7; 32],
            base: None,
            chunk_size: 4096,
            payloads: vec![
                p(Kind::Root, 10000),
                p(Kind::Verity, 4096),
                p(Kind::Kernel, 5),
                p(Kind::Initrd, 9000),
            ],
        }
    }

    #[test]
    fn headers_round_trip_and_count_their_data() {
        let h = header();
        let b = h.encode();
        assert_eq!(Header::decode(&b).unwrap(), h);
        assert_eq!(h.data_bytes(), 10000 + 4096 + 5 + 9000);
        assert_eq!(h.payload(Kind::Root).chunk_len(2, 4096), 10000 - 8192);
        let mut d = h.clone();
        d.base = Some([1; 32]);
        d.payloads[0].chunks[1].source = Source::Running;
        assert_eq!(Header::decode(&d.encode()).unwrap(), d);
        assert_eq!(d.data_bytes(), h.data_bytes() - 4096);
    }

    #[test]
    fn damaged_headers_are_refused_with_a_reason() {
        let b = header().encode();
        for cut in [0, 3, 10, b.len() - 1] {
            assert!(Header::decode(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = b.clone();
        long.push(0);
        assert!(Header::decode(&long)
            .unwrap_err()
            .to_string()
            .contains("after its end"));
        let mut v2 = b.clone();
        v2[0] = 2;
        assert!(Header::decode(&v2)
            .unwrap_err()
            .to_string()
            .contains("format 2"));
        // A "running" chunk in a full bundle, or in the kernel payload of a delta.
        let mut h = header();
        h.payloads[0].chunks[0].source = Source::Running;
        assert!(Header::decode(&h.encode()).is_err());
        let mut h = header();
        h.base = Some([1; 32]);
        h.payloads[2].chunks[0].source = Source::Running;
        assert!(Header::decode(&h.encode()).is_err());
        // Missing and repeated payloads; a chunk count that does not fit the size.
        let mut h = header();
        h.payloads.pop();
        assert!(Header::decode(&h.encode())
            .unwrap_err()
            .to_string()
            .contains("no initrd"));
        let mut h = header();
        h.payloads[3].kind = Kind::Root;
        assert!(Header::decode(&h.encode())
            .unwrap_err()
            .to_string()
            .contains("two root"));
        let mut h = header();
        h.payloads[0].size = 100_000;
        assert!(Header::decode(&h.encode())
            .unwrap_err()
            .to_string()
            .contains("do not cover"));
    }

    #[test]
    fn versions_compare_like_systemd_boot() {
        assert_eq!(version_cmp("0.2.0", "0.1.0"), Ordering::Greater);
        assert_eq!(version_cmp("1.2.10", "1.2.9"), Ordering::Greater);
        assert_eq!(version_cmp("1.0", "1.0"), Ordering::Equal);
        assert_eq!(version_cmp("1.0.1", "1.0"), Ordering::Greater);
        assert_eq!(version_cmp("01.0", "1.0"), Ordering::Equal);
        assert_eq!(version_cmp("1.0~rc1", "1.0"), Ordering::Less);
        assert_eq!(version_cmp("1.0", "1.0~rc1"), Ordering::Greater);
        assert_eq!(version_cmp("1.0~rc2", "1.0~rc1"), Ordering::Greater);
    }
}
