//! The initramfs writer: a [`Manifest`] as a cpio "newc" (`070701`) archive, optionally
//! compressed, in the format the kernel unpacks (`Documentation/driver-api/early-userspace/
//! buffer-format.rst`) and GNU `cpio -i` extracts.
//!
//! The output depends only on the manifest: entries in manifest (path) order, so a directory
//! always precedes its contents; inode numbers assigned from 1 in that order; no host times,
//! owners or device numbers. The root `/` itself is not written (as `find . | cpio -o` tools
//! conventionally omit `.`): the kernel unpacks into an existing rootfs whose root it owns.
//!
//! newc cannot carry extended attributes; they are dropped (the initramfs needs none).

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{bail, ensure, Context, Result};

use crate::fsimage::manifest::{ImagePath, Kind, Manifest};

/// The newc magic (no checksums; `070702` would add a sum of the data bytes).
const MAGIC: &[u8; 6] = b"070701";
/// The name of the entry that ends every cpio archive.
const TRAILER: &str = "TRAILER!!!";
/// zstd level for initramfs images: the highest level that still decompresses at full speed
/// with a window (8 MiB) the kernel's decompressor allocates without fuss; `--ultra` levels need
/// up to 128 MiB windows, which an early-boot allocation may not get.
const ZSTD_LEVEL: i32 = 19;

/// How the initramfs is compressed. The kernel must have the matching decompressor built in
/// (`CONFIG_RD_ZSTD`, `CONFIG_RD_GZIP`; Debian kernels have both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    /// One zstd frame, level 19, single-threaded, with a content checksum.
    Zstd,
    /// gzip, best compression, no file name and mtime 0 in the header.
    Gzip,
}

/// Writes `m` as an uncompressed newc archive (see the module doc for what the output depends
/// on). The manifest is validated first, so a dangling hard link is an error naming it rather
/// than a broken archive.
pub fn write_newc<W: Write>(m: &Manifest, out: &mut W) -> Result<()> {
    m.validate()?;
    // Hard-link groups: every name of a regular file, keyed by the file's path, in manifest
    // order. All names get one inode number and the data goes on the last name written, the
    // way GNU cpio writes newc; the kernel links each later name to the first and then writes
    // the data through the last.
    let mut links: BTreeMap<&ImagePath, Vec<&ImagePath>> = BTreeMap::new();
    for (path, entry) in m.iter() {
        match &entry.kind {
            Kind::File(_) => links.entry(path).or_default().push(path),
            Kind::Hardlink(target) => links.entry(target).or_default().push(path),
            _ => {}
        }
    }
    for names in links.values_mut() {
        names.sort();
    }
    // Subdirectory counts for directory link counts (`.` + the entry in its parent + each
    // subdirectory's `..`), as `stat` reports them on a real filesystem.
    let mut subdirs: BTreeMap<ImagePath, u32> = BTreeMap::new();
    for (path, entry) in m.iter() {
        if entry.kind == Kind::Dir {
            if let Some(parent) = path.parent() {
                *subdirs.entry(parent).or_default() += 1;
            }
        }
    }

    let mut next_ino: u32 = 1;
    let mut group_ino: BTreeMap<&ImagePath, u32> = BTreeMap::new();
    for (path, entry) in m.iter() {
        if path.is_root() {
            continue;
        }
        let name = &path.as_str()[1..];
        // All names of a file are one inode: mode, owner and time are the file's.
        let (file, meta) = match &entry.kind {
            Kind::Hardlink(t) => (t, m.get(t).with_context(|| format!("{path}: no {t}"))?),
            _ => (path, entry),
        };
        let mtime = u32::try_from(meta.mtime).with_context(|| {
            format!(
                "{file}: mtime {} does not fit a cpio header (0..=4294967295)",
                meta.mtime
            )
        })?;
        let mut h = Header {
            ino: 0,
            mode: meta.st_mode(),
            uid: meta.uid,
            gid: meta.gid,
            nlink: 1,
            mtime,
            filesize: 0,
            rdevmajor: 0,
            rdevminor: 0,
        };
        let mut data: &[u8] = &[];
        match &entry.kind {
            Kind::Dir => h.nlink = 2 + subdirs.get(path).copied().unwrap_or(0),
            Kind::File(_) | Kind::Hardlink(_) => {
                let Kind::File(d) = &meta.kind else {
                    bail!("{path}: hard link target {file} is not a file");
                };
                let names = &links[file];
                h.nlink = u32::try_from(names.len()).context("too many hard links")?;
                h.ino = *group_ino.entry(file).or_insert_with(|| {
                    next_ino += 1;
                    next_ino - 1
                });
                if names.last() == Some(&path) {
                    data = d;
                }
            }
            Kind::Symlink(target) => data = target.as_bytes(),
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                h.rdevmajor = *major;
                h.rdevminor = *minor;
            }
            Kind::Fifo | Kind::Socket => {}
        }
        if h.ino == 0 {
            h.ino = next_ino;
            next_ino += 1;
        }
        h.filesize = u32::try_from(data.len()).with_context(|| {
            format!(
                "{path}: {} bytes is too large for a newc archive (4 GiB limit)",
                data.len()
            )
        })?;
        write_entry(out, &h, name, data).with_context(|| format!("writing {path} to the cpio"))?;
    }
    let trailer = Header {
        ino: 0,
        mode: 0,
        uid: 0,
        gid: 0,
        nlink: 1,
        mtime: 0,
        filesize: 0,
        rdevmajor: 0,
        rdevminor: 0,
    };
    write_entry(out, &trailer, TRAILER, &[]).context("writing the cpio trailer")?;
    Ok(())
}

/// Compresses a newc archive as [`write_initramfs`] does.
pub fn compress(newc: &[u8], compression: Compression) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    match compression {
        Compression::None => out.extend_from_slice(newc),
        Compression::Zstd => {
            let mut z =
                zstd::Encoder::new(&mut out, ZSTD_LEVEL).context("starting the zstd encoder")?;
            z.include_checksum(true)
                .context("configuring the zstd encoder")?;
            z.write_all(newc).context("compressing the initramfs")?;
            z.finish().context("finishing the zstd stream")?;
        }
        Compression::Gzip => {
            let mut z = flate2::GzBuilder::new()
                .mtime(0)
                .write(&mut out, flate2::Compression::best());
            z.write_all(newc).context("compressing the initramfs")?;
            z.finish().context("finishing the gzip stream")?;
        }
    }
    Ok(out)
}

/// Undoes [`compress`].
pub fn decompress(data: &[u8], compression: Compression) -> Result<Vec<u8>> {
    Ok(match compression {
        Compression::None => data.to_vec(),
        Compression::Zstd => zstd::decode_all(data).context("decompressing zstd")?,
        Compression::Gzip => {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(data), &mut out)
                .context("decompressing gzip")?;
            out
        }
    })
}

/// Writes `m` as an initramfs: newc, then compressed as asked. The bytes depend only on `m`
/// and `compression` (and the zstd/flate2 library versions).
pub fn write_initramfs(m: &Manifest, out: &mut impl Write, compression: Compression) -> Result<()> {
    let mut newc = Vec::new();
    write_newc(m, &mut newc)?;
    out.write_all(&compress(&newc, compression)?)
        .context("writing the initramfs")
}

/// The variable fields of a newc header; devmajor/devminor (the device holding the file) and
/// the checksum are always 0.
struct Header {
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    filesize: u32,
    rdevmajor: u32,
    rdevminor: u32,
}

/// Zero bytes that bring `len` up to a multiple of 4.
fn pad4(len: usize) -> &'static [u8] {
    &[0u8; 3][..(4 - len % 4) % 4]
}

fn write_entry<W: Write>(out: &mut W, h: &Header, name: &str, data: &[u8]) -> Result<()> {
    ensure!(
        !name.as_bytes().contains(&0),
        "file name {name:?} contains a NUL byte"
    );
    let namesize = u32::try_from(name.len() + 1).context("file name too long")?;
    let fields = [
        h.ino,
        h.mode,
        h.uid,
        h.gid,
        h.nlink,
        h.mtime,
        h.filesize,
        0, // devmajor
        0, // devminor
        h.rdevmajor,
        h.rdevminor,
        namesize,
        0, // check
    ];
    let mut head = Vec::with_capacity(110 + name.len() + 4);
    head.extend_from_slice(MAGIC);
    for f in fields {
        head.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    head.extend_from_slice(name.as_bytes());
    head.push(0);
    head.extend_from_slice(pad4(head.len()));
    out.write_all(&head)?;
    out.write_all(data)?;
    out.write_all(pad4(data.len()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsimage::manifest::Entry;
    use std::io::Read;

    fn p(s: &str) -> ImagePath {
        ImagePath::new(s).unwrap()
    }

    /// One parsed newc entry: the 13 header fields, the name and the data.
    #[derive(Debug)]
    struct Parsed {
        f: [u32; 13],
        name: String,
        data: Vec<u8>,
    }

    const INO: usize = 0;
    const MODE: usize = 1;
    const NLINK: usize = 4;
    const MTIME: usize = 5;
    const SIZE: usize = 6;
    const RMAJ: usize = 9;
    const RMIN: usize = 10;

    /// A strict reader: checks magic, alignment and that nothing follows the trailer but
    /// padding.
    fn parse(mut b: &[u8]) -> Vec<Parsed> {
        let total = b.len();
        let mut out = Vec::new();
        loop {
            assert_eq!((total - b.len()) % 4, 0, "entry not 4-byte aligned");
            assert_eq!(&b[..6], MAGIC);
            let mut f = [0u32; 13];
            for (i, v) in f.iter_mut().enumerate() {
                let s = std::str::from_utf8(&b[6 + i * 8..14 + i * 8]).unwrap();
                *v = u32::from_str_radix(s, 16).unwrap();
            }
            let namesize = f[11] as usize;
            let name = std::str::from_utf8(&b[110..110 + namesize - 1]).unwrap();
            assert_eq!(b[110 + namesize - 1], 0);
            let data_at = (110 + namesize).next_multiple_of(4);
            let size = f[SIZE] as usize;
            let data = b[data_at..data_at + size].to_vec();
            let next = (data_at + size).next_multiple_of(4);
            assert!(b[110 + namesize..data_at].iter().all(|&x| x == 0));
            assert!(b[data_at + size..next].iter().all(|&x| x == 0));
            b = &b[next..];
            let done = name == TRAILER;
            out.push(Parsed {
                f,
                name: name.to_string(),
                data,
            });
            if done {
                assert!(b.is_empty(), "{} bytes after the trailer", b.len());
                return out;
            }
        }
    }

    fn sample() -> Manifest {
        let mut m = Manifest::new(1000);
        m.insert(p("/init"), Entry::file(b"#!init".to_vec(), 0o755, 1000))
            .unwrap();
        m.insert(p("/etc/initrd-release"), Entry::file(vec![], 0o644, 1000))
            .unwrap();
        m.insert(p("/usr/lib/x/a"), Entry::file(b"hello".to_vec(), 0o644, 5))
            .unwrap();
        m.insert(
            p("/usr/lib/x/b"),
            Entry::new(Kind::Hardlink(p("/usr/lib/x/a")), 0o644, 5),
        )
        .unwrap();
        // Sorts before the file it links to: the data must still go on the last name.
        m.insert(
            p("/usr/lib/w"),
            Entry::new(Kind::Hardlink(p("/usr/lib/x/a")), 0o644, 5),
        )
        .unwrap();
        m.insert(p("/sbin"), Entry::symlink("usr/sbin", 1000))
            .unwrap();
        m.insert(
            p("/dev/console"),
            Entry::new(Kind::CharDev { major: 5, minor: 1 }, 0o600, 1000),
        )
        .unwrap();
        m.insert(
            p("/dev/sda"),
            Entry::new(Kind::BlockDev { major: 8, minor: 0 }, 0o660, 1000),
        )
        .unwrap();
        m.insert(p("/run/fifo"), Entry::new(Kind::Fifo, 0o644, 1000))
            .unwrap();
        m
    }

    fn newc(m: &Manifest) -> Vec<u8> {
        let mut v = Vec::new();
        write_newc(m, &mut v).unwrap();
        v
    }

    #[test]
    fn entries_in_path_order_with_sequential_inodes() {
        let entries = parse(&newc(&sample()));
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "dev/sda",
                "etc",
                "etc/initrd-release",
                "init",
                "run",
                "run/fifo",
                "sbin",
                "usr",
                "usr/lib",
                "usr/lib/w",
                "usr/lib/x",
                "usr/lib/x/a",
                "usr/lib/x/b",
                TRAILER
            ]
        );
        let inos: Vec<u32> = entries.iter().map(|e| e.f[INO]).collect();
        // w, x/a, x/b share inode 12 (given at w, the first name written).
        assert_eq!(inos, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 12, 12, 0]);
    }

    #[test]
    fn hard_links_share_an_inode_and_carry_data_on_the_last_name() {
        let entries = parse(&newc(&sample()));
        let get = |n: &str| entries.iter().find(|e| e.name == n).unwrap();
        for n in ["usr/lib/w", "usr/lib/x/a"] {
            assert_eq!(get(n).f[SIZE], 0, "{n}");
            assert_eq!(get(n).f[NLINK], 3, "{n}");
        }
        assert_eq!(get("usr/lib/x/b").data, b"hello");
        assert_eq!(get("usr/lib/x/b").f[MODE], 0o100644);
        assert_eq!(get("usr/lib/x/b").f[MTIME], 5);
    }

    #[test]
    fn kinds_modes_devices_and_dir_link_counts() {
        let entries = parse(&newc(&sample()));
        let get = |n: &str| entries.iter().find(|e| e.name == n).unwrap();
        assert_eq!(get("init").f[MODE], 0o100755);
        assert_eq!(get("init").data, b"#!init");
        assert_eq!(get("sbin").f[MODE], 0o120777);
        assert_eq!(get("sbin").data, b"usr/sbin");
        let c = get("dev/console");
        assert_eq!((c.f[MODE], c.f[RMAJ], c.f[RMIN]), (0o020600, 5, 1));
        let b = get("dev/sda");
        assert_eq!((b.f[MODE], b.f[RMAJ], b.f[RMIN]), (0o060660, 8, 0));
        assert_eq!(get("run/fifo").f[MODE], 0o010644);
        // usr/lib has one subdirectory (x); x has none.
        assert_eq!(get("usr/lib").f[NLINK], 3);
        assert_eq!(get("usr/lib/x").f[NLINK], 2);
        assert_eq!(get("etc").f[MTIME], 1000);
    }

    #[test]
    fn output_is_deterministic_and_compressions_round_trip() {
        let m = sample();
        let raw = newc(&m);
        assert_eq!(raw, newc(&m));
        let mut z = Vec::new();
        write_initramfs(&m, &mut z, Compression::Zstd).unwrap();
        let mut z2 = Vec::new();
        write_initramfs(&m, &mut z2, Compression::Zstd).unwrap();
        assert_eq!(z, z2);
        assert_eq!(zstd::decode_all(&z[..]).unwrap(), raw);
        let mut g = Vec::new();
        write_initramfs(&m, &mut g, Compression::Gzip).unwrap();
        // gzip header: magic, deflate, no flags (no name), mtime 0.
        assert_eq!(&g[..8], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0]);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&g[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, raw);
        let mut none = Vec::new();
        write_initramfs(&m, &mut none, Compression::None).unwrap();
        assert_eq!(none, raw);
    }

    #[test]
    fn an_empty_manifest_is_just_the_trailer() {
        let entries = parse(&newc(&Manifest::new(0)));
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].name, TRAILER);
    }

    #[test]
    fn negative_mtime_is_an_error_naming_the_path() {
        let mut m = Manifest::new(0);
        m.insert(p("/old"), Entry::file(vec![], 0o644, -1)).unwrap();
        let err = write_newc(&m, &mut Vec::new()).unwrap_err();
        assert!(format!("{err:#}").contains("/old"), "{err:#}");
    }
}
