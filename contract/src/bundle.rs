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
//! source (u8: 0 = data in the bundle, 1 = the running slot's bytes at the same offset, 2 =
//! pieces) and SHA-256 (32). A delta bundle marks unchanged chunks of the root and verity
//! payloads as "running": the machine copies them from its running slot and checks them like
//! any other; a delta's kernel and initrd chunks may come from the running slot's files on the
//! ESP the same way. A chunk of pieces (format 2 only) is made of runs of 4 KiB blocks, each either
//! data in the bundle, zeros, or blocks of the running slot at any offset: a change that moves
//! later files of the root (a bigger image archive) leaves their blocks as they were, only
//! elsewhere. After the source byte: piece count (u16, 1 to MAX_PIECES), then per piece its
//! length in blocks (u16, at least 1) and kind (u8: 0 data, 1 running, 2 zeros), and for a
//! running piece its first block in the running slot (u64). The pieces cover the chunk exactly
//! (the last block of a payload may be short); the chunk's SHA-256 is checked over the whole.
//! A bundle without pieces is written as format 1, so machines of older versions read it.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::{Error, Result};

pub const MAGIC: [u8; 8] = *b"BERTHUPD";
/// The newest format: 2 (chunks of pieces). A bundle without pieces is written as format 1.
pub const FORMAT: u32 = 2;
/// The unit of a chunk's pieces: ext4's and dm-verity's block.
pub const PIECE_BLOCK: u32 = 4096;
/// Most pieces in one chunk (a chunk that would need more is carried as data): bounds the
/// header at 1 + 2 + 64 * 11 bytes per chunk beyond its hash.
pub const MAX_PIECES: usize = 64;
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The chunk's bytes follow in the bundle.
    Data,
    /// The running slot holds these bytes at the same offset (a delta bundle).
    Running,
    /// Runs of blocks from the bundle, the running slot (anywhere) or zeros (a delta bundle).
    Pieces(Vec<Piece>),
}

/// Where a run of a chunk's blocks comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The bundle carries them (after the chunk's earlier data pieces).
    Data,
    /// The running slot's blocks starting at this one ([`PIECE_BLOCK`] bytes each).
    Running(u64),
    Zeros,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    pub blocks: u16,
    pub origin: Origin,
}

impl Piece {
    /// The pieces' byte ranges within a chunk of `len` bytes: (start, end, origin); the last may
    /// be cut short by the chunk's end.
    pub fn ranges(pieces: &[Piece], len: u64) -> impl Iterator<Item = (u64, u64, Origin)> + '_ {
        let mut at = 0u64;
        pieces.iter().map(move |p| {
            let start = at;
            at = (at + u64::from(p.blocks) * u64::from(PIECE_BLOCK)).min(len);
            (start, at, p.origin)
        })
    }
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

    /// The bytes of chunk `i` the bundle carries: all of a data chunk, the data pieces of a
    /// chunk of pieces, none of a running one.
    pub fn data_len(&self, i: usize, chunk_size: u32) -> u64 {
        let len = self.chunk_len(i, chunk_size);
        match &self.chunks[i].source {
            Source::Data => len,
            Source::Running => 0,
            Source::Pieces(pieces) => Piece::ranges(pieces, len)
                .filter(|r| r.2 == Origin::Data)
                .map(|(a, b, _)| b - a)
                .sum(),
        }
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

/// A chunk's pieces (after its source byte), checked: 1 to MAX_PIECES, none empty, covering
/// the chunk's `len` bytes exactly.
fn read_pieces(r: &mut R<'_>, len: u64, kind: Kind) -> Result<Vec<Piece>> {
    let bad = |m: String| Error::Invalid(format!("bundle {} payload: {m}", kind.name()));
    let mut a = [0u8; 2];
    a.copy_from_slice(r.take(2, "a piece count")?);
    let n = u16::from_le_bytes(a) as usize;
    if n == 0 || n > MAX_PIECES {
        return Err(bad(format!("a chunk of {n} pieces (1 to {MAX_PIECES})")));
    }
    let mut pieces = Vec::with_capacity(n);
    let mut blocks = 0u64;
    for _ in 0..n {
        a.copy_from_slice(r.take(2, "a piece length")?);
        let count = u16::from_le_bytes(a);
        if count == 0 {
            return Err(bad("a piece of no blocks".into()));
        }
        let origin = match r.u8("a piece kind")? {
            0 => Origin::Data,
            1 => Origin::Running(r.u64("a piece's block")?),
            2 => Origin::Zeros,
            k => return Err(bad(format!("piece kind {k} is unknown"))),
        };
        blocks += u64::from(count);
        pieces.push(Piece {
            blocks: count,
            origin,
        });
    }
    if blocks != len.div_ceil(u64::from(PIECE_BLOCK)) {
        return Err(bad(format!(
            "pieces of {blocks} blocks do not cover a chunk of {len} bytes"
        )));
    }
    Ok(pieces)
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
                match &c.source {
                    Source::Data => w.u8(0),
                    Source::Running => w.u8(1),
                    Source::Pieces(pieces) => {
                        w.u8(2);
                        w.0.extend_from_slice(&(pieces.len() as u16).to_le_bytes());
                        for piece in pieces {
                            w.0.extend_from_slice(&piece.blocks.to_le_bytes());
                            match piece.origin {
                                Origin::Data => w.u8(0),
                                Origin::Running(b) => {
                                    w.u8(1);
                                    w.u64(b);
                                }
                                Origin::Zeros => w.u8(2),
                            }
                        }
                    }
                }
                w.0.extend_from_slice(&c.sha256);
            }
        }
        // Format 1 where it is enough: older machines read those.
        let pieces = self
            .payloads
            .iter()
            .flat_map(|p| &p.chunks)
            .any(|c| matches!(c.source, Source::Pieces(_)));
        if !pieces {
            w.0[..4].copy_from_slice(&1u32.to_le_bytes());
        }
        w.0
    }

    /// Reads and checks a header: its shape (one payload of each kind, chunk counts that fit
    /// the sizes, chunks taken from the running slot only in a delta).
    pub fn decode(b: &[u8]) -> Result<Header> {
        let mut r = R { b, at: 0 };
        let format = r.u32("the format version")?;
        if !(1..=FORMAT).contains(&format) {
            return Err(Error::Invalid(format!(
                "bundle format {format}; this berth reads formats 1 to {FORMAT}"
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
            // Any payload of a delta may take chunks from the running slot: its partitions,
            // or its kernel and initrd on the ESP.
            let delta = base.is_some();
            for i in 0..count {
                let source = match r.u8("a chunk source")? {
                    0 => Source::Data,
                    1 if delta => Source::Running,
                    2 if delta && format >= 2 => {
                        let start = i * u64::from(chunk_size);
                        let len = (size - start).min(u64::from(chunk_size));
                        Source::Pieces(read_pieces(&mut r, len, kind)?)
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
                    .map(|i| p.data_len(i, self.chunk_size))
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
        let mut v3 = b.clone();
        v3[0] = 3;
        assert!(Header::decode(&v3)
            .unwrap_err()
            .to_string()
            .contains("format 3"));
        // A "running" chunk in a full bundle; in a delta, any payload may have them.
        let mut h = header();
        h.payloads[0].chunks[0].source = Source::Running;
        assert!(Header::decode(&h.encode()).is_err());
        let mut h = header();
        h.base = Some([1; 32]);
        h.payloads[2].chunks[0].source = Source::Running;
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
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
    fn chunks_of_pieces_round_trip_as_format_2_and_are_checked() {
        let piece = |blocks, origin| Piece { blocks, origin };
        let mut d = header();
        d.base = Some([1; 32]);
        // Root chunk 2 is 10000 - 8192 = 1808 bytes: one short block.
        d.payloads[0].chunks[2].source = Source::Pieces(vec![piece(1, Origin::Running(77))]);
        d.payloads[1].chunks[0].source = Source::Pieces(vec![piece(1, Origin::Zeros)]);
        let b = d.encode();
        assert_eq!(b[..4], 2u32.to_le_bytes(), "pieces need format 2");
        assert_eq!(Header::decode(&b).unwrap(), d);
        assert_eq!(d.data_bytes(), header().data_bytes() - 1808 - 4096);
        assert_eq!(
            header().encode()[..4],
            1u32.to_le_bytes(),
            "format 1 without"
        );
        // A format-1 header cannot carry them.
        let mut v1 = b.clone();
        v1[..4].copy_from_slice(&1u32.to_le_bytes());
        assert!(Header::decode(&v1).is_err());
        // Data pieces count as data; ranges cut at the chunk's end.
        let mut c = header();
        c.base = Some([1; 32]);
        c.chunk_size = 16384;
        c.payloads[0] = Payload {
            kind: Kind::Root,
            size: 10000,
            chunks: vec![Chunk {
                source: Source::Pieces(vec![
                    piece(1, Origin::Data),
                    piece(1, Origin::Running(0)),
                    piece(1, Origin::Data),
                ]),
                sha256: [0; 32],
            }],
        };
        for p in &mut c.payloads[1..] {
            p.chunks.truncate(1);
            p.size = p.size.min(16384);
        }
        assert_eq!(Header::decode(&c.encode()).unwrap(), c);
        assert_eq!(c.payloads[0].data_len(0, 16384), 4096 + (10000 - 8192));
        // Pieces that do not cover their chunk, an empty piece, too many, an unknown kind, in
        // a full bundle.
        let with = |pieces: Vec<Piece>, base: bool, payload: usize| {
            let mut h = header();
            h.base = base.then_some([1; 32]);
            h.payloads[payload].chunks[0].source = Source::Pieces(pieces);
            Header::decode(&h.encode())
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        assert!(with(vec![piece(2, Origin::Zeros)], true, 0).contains("do not cover"));
        assert!(with(
            vec![piece(0, Origin::Zeros), piece(1, Origin::Zeros)],
            true,
            0
        )
        .contains("no blocks"));
        assert!(
            with(vec![piece(1, Origin::Zeros); MAX_PIECES + 1], true, 0).contains("pieces (1 to")
        );
        assert!(with(vec![], true, 0).contains("0 pieces"));
        // (`with` fails the test if this decodes.)
        with(vec![piece(1, Origin::Zeros)], false, 0);
        let mut h = header();
        h.base = Some([1; 32]);
        h.payloads[0].chunks[0].source = Source::Pieces(vec![piece(1, Origin::Zeros)]);
        let mut b = h.encode();
        assert_eq!(Header::decode(&b).unwrap(), h);
        // The kind byte of that piece: where the encoding of a data piece differs.
        let kind_at = {
            let mut z = h.clone();
            z.payloads[0].chunks[0].source = Source::Pieces(vec![piece(1, Origin::Data)]);
            let zb = z.encode();
            b.iter().zip(&zb).position(|(x, y)| x != y).unwrap()
        };
        b[kind_at] = 9;
        assert!(Header::decode(&b)
            .unwrap_err()
            .to_string()
            .contains("piece kind 9"));
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
