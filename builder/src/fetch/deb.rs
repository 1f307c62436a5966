//! Reading Debian packages in Rust, without dpkg: the `ar` container, the control stanza and the
//! data tarball as manifest entries, plus the deb822 parser shared with apt's index files.
//!
//! A `.deb` is an `ar` archive (`!<arch>\n`, 60-byte member headers, members 2-byte aligned)
//! holding `debian-binary` ("2.0\n"), `control.tar[.xz|.zst|.gz]` and `data.tar[...]`
//! (deb(5)). Nothing is unpacked onto the host: file contents are loaded into memory, owners
//! and modes come from the tar headers only.

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use tar::EntryType;

use crate::fsimage::manifest::{Entry, ImagePath, Kind};

/// One deb822 stanza (a package's `control` file, one paragraph of a `Packages` index), fields
/// in file order.
///
/// Values: the text after `Key:` with surrounding whitespace removed; continuation lines are
/// appended each after a `\n`, verbatim except for trailing whitespace (so they keep their
/// leading space, and a `Description`'s ` .` lines stay as they are). A field whose first line
/// is empty (`Conffiles:` in dpkg's status file) therefore has a value starting with `\n`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControlFields {
    fields: Vec<(String, String)>,
}

impl ControlFields {
    /// The value of `key`, compared ASCII case-insensitively (`depends` finds `Depends`).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// All fields as (key, value), in file order, keys spelled as in the file.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

/// Writes the stanza back in deb822 form (no trailing blank line); `parse_stanzas` of the output
/// gives the same fields.
impl fmt::Display for ControlFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, v) in &self.fields {
            if v.starts_with('\n') || v.is_empty() {
                writeln!(f, "{k}:{v}")?;
            } else {
                writeln!(f, "{k}: {v}")?;
            }
        }
        Ok(())
    }
}

/// Parses deb822 text (a `control` file, apt `Packages`/`Sources` indexes) into stanzas.
/// Stanzas are separated by blank (or whitespace-only) lines; lines starting with `#` are
/// comments. Lines that are not fields are skipped with a warning; [`read_control`] is strict.
pub fn parse_stanzas(text: &str) -> Vec<ControlFields> {
    let (stanzas, problems) = parse_deb822(text);
    for p in problems {
        tracing::warn!("deb822: {p}");
    }
    stanzas
}

/// The parser: stanzas plus a description of every skipped line (`line N: ...`).
fn parse_deb822(text: &str) -> (Vec<ControlFields>, Vec<String>) {
    let mut stanzas = Vec::new();
    let mut problems = Vec::new();
    let mut cur = ControlFields::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let n = i + 1;
        if line.is_empty() {
            if !cur.is_empty() {
                stanzas.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            match cur.fields.last_mut() {
                Some((_, v)) => {
                    v.push('\n');
                    v.push_str(line);
                }
                None => problems.push(format!("line {n}: continuation line outside a field")),
            }
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            problems.push(format!("line {n}: not a 'Field: value' line: {line:?}"));
            continue;
        };
        if key.is_empty() || key.contains(char::is_whitespace) || key.starts_with('-') {
            problems.push(format!("line {n}: bad field name {key:?}"));
            continue;
        }
        if cur.get(key).is_some() {
            problems.push(format!(
                "line {n}: duplicate field {key:?} (first one kept)"
            ));
            // Swallow its continuation lines into a throwaway field so they do not extend
            // the previous one.
            cur.fields.push((String::new(), String::new()));
            continue;
        }
        cur.fields.push((key.to_string(), value.trim().to_string()));
    }
    if !cur.is_empty() {
        stanzas.push(cur);
    }
    for s in &mut stanzas {
        s.fields.retain(|(k, _)| !k.is_empty());
    }
    stanzas.retain(|s| !s.is_empty());
    (stanzas, problems)
}

/// Files of control.tar other than `control`, as (name without `./`, content), in archive order.
pub type ControlFiles = Vec<(String, Vec<u8>)>;

/// A whole package: its control stanza, the other control members (maintainer scripts,
/// `md5sums`, `conffiles`, ...) and the data entries in archive order.
#[derive(Clone, Debug)]
pub struct Deb {
    pub path: PathBuf,
    pub control: ControlFields,
    /// Members of control.tar other than `control`, by file name (`postinst`, `md5sums`, ...).
    pub control_files: ControlFiles,
    pub data: Vec<(ImagePath, Entry)>,
}

impl Deb {
    /// Reads control and data of the package at `path` in one pass over the file.
    pub fn read(path: &Path) -> Result<Deb> {
        let mut f = open(path)?;
        let members = DebMembers::find(&mut f, path)?;
        let (control, control_files) = members.control.read_control(&mut f, path)?;
        let data = members.data.read_data(&mut f, path)?;
        Ok(Deb {
            path: path.to_path_buf(),
            control,
            control_files,
            data,
        })
    }
}

/// Parses the control stanza only.
pub fn read_control(path: &Path) -> Result<ControlFields> {
    let mut f = open(path)?;
    let members = DebMembers::find(&mut f, path)?;
    Ok(members.control.read_control(&mut f, path)?.0)
}

/// Every entry of data.tar as (ImagePath, Entry), in archive order, file contents loaded.
/// Hard links become [`Kind::Hardlink`], symlink targets are kept verbatim, devices and fifos
/// are kept; mode, uid, gid and mtime come from the tar header (PAX overrides applied).
/// `./` maps to `/`.
pub fn read_data(path: &Path) -> Result<Vec<(ImagePath, Entry)>> {
    let mut f = open(path)?;
    let members = DebMembers::find(&mut f, path)?;
    members.data.read_data(&mut f, path)
}

/// Writes `src` again as `dest` with its control and data tarballs compressed with zstd at
/// `level` (everything else as it was): the same package, read several times faster than xz.
/// What `Deb::read` gives for `dest` is what it gives for `src`. `dest` appears whole or not
/// at all (a temporary file renamed).
pub fn recompress_zstd(src: &Path, dest: &Path, level: i32) -> Result<()> {
    let mut f = open(src)?;
    let members = DebMembers::find(&mut f, src)?;
    let mut out: Vec<u8> = AR_MAGIC.to_vec();
    let mut member = |name: &str, data: &[u8]| {
        // name, mtime, uid, gid, mode, size, then the header's end: as dpkg-deb writes them.
        let h = format!(
            "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            name,
            0,
            0,
            0,
            100644,
            data.len()
        );
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
    };
    member("debian-binary", b"2.0\n");
    for (stem, m) in [
        ("control.tar", &members.control),
        ("data.tar", &members.data),
    ] {
        let ctx = || m.context(src);
        let mut raw = m.decompressed(&mut f).with_context(ctx)?;
        let z = (|| -> io::Result<Vec<u8>> {
            let mut enc = zstd::Encoder::new(Vec::new(), level)?;
            io::copy(&mut raw, &mut enc)?;
            enc.finish()
        })()
        .with_context(ctx)?;
        member(&format!("{stem}.zst"), &z);
    }
    let tmp = PathBuf::from(format!("{}.{}.tmp", dest.display(), std::process::id()));
    std::fs::write(&tmp, &out).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dest).with_context(|| format!("renaming {}", tmp.display()))?;
    Ok(())
}

fn open(path: &Path) -> Result<BufReader<File>> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(BufReader::with_capacity(1 << 16, f))
}

const AR_MAGIC: &[u8; 8] = b"!<arch>\n";
const AR_HEADER: usize = 60;

/// One member of the ar archive: its name and where its bytes lie in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ArMember {
    name: String,
    offset: u64,
    size: u64,
}

/// Lists the members of an ar archive (GNU `name/` and `//` long names, BSD `#1/len` names).
fn ar_members<R: Read + Seek>(r: &mut R, path: &Path) -> Result<Vec<ArMember>> {
    let io_ctx = || format!("{}: reading the ar archive", path.display());
    let len = r.seek(SeekFrom::End(0)).with_context(io_ctx)?;
    r.seek(SeekFrom::Start(0)).with_context(io_ctx)?;
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).with_context(|| {
        format!(
            "{}: not a .deb (too short for an ar archive)",
            path.display()
        )
    })?;
    if &magic != AR_MAGIC {
        bail!(
            "{}: not a .deb: no ar archive magic (\"!<arch>\")",
            path.display()
        );
    }
    let mut members = Vec::new();
    let mut gnu_names: Vec<u8> = Vec::new();
    let mut pos = 8u64;
    while pos < len {
        // A lone padding byte may follow the last member.
        if len - pos == 1 {
            break;
        }
        let mut h = [0u8; AR_HEADER];
        r.seek(SeekFrom::Start(pos)).with_context(io_ctx)?;
        r.read_exact(&mut h).with_context(|| {
            format!(
                "{}: truncated ar member header at offset {pos}",
                path.display()
            )
        })?;
        if &h[58..60] != b"`\n" {
            bail!(
                "{}: corrupt ar member header at offset {pos}",
                path.display()
            );
        }
        let field = |a: usize, b: usize| String::from_utf8_lossy(&h[a..b]).trim_end().to_string();
        let raw_name = field(0, 16);
        let size: u64 = field(48, 58).trim().parse().map_err(|_| {
            anyhow!(
                "{}: bad size {:?} in ar member header at offset {pos}",
                path.display(),
                field(48, 58)
            )
        })?;
        let mut offset = pos + AR_HEADER as u64;
        if offset + size > len {
            bail!(
                "{}: ar member {raw_name:?} claims {size} bytes at offset {offset}, past the end \
                 of the file ({len} bytes): truncated download?",
                path.display()
            );
        }
        let mut data_size = size;
        let name = if raw_name == "/" || raw_name == "/SYM64/" {
            None // symbol table
        } else if raw_name == "//" {
            gnu_names = vec![0; usize::try_from(size).with_context(io_ctx)?];
            r.read_exact(&mut gnu_names).with_context(io_ctx)?;
            None
        } else if let Some(idx) = raw_name
            .strip_prefix('/')
            .and_then(|n| n.parse::<usize>().ok())
        {
            let rest = gnu_names.get(idx..).unwrap_or_default();
            let end = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
            let n = String::from_utf8_lossy(&rest[..end]);
            Some(n.strip_suffix('/').unwrap_or(&n).to_string())
        } else if let Some(n) = raw_name
            .strip_prefix("#1/")
            .and_then(|n| n.parse::<u64>().ok())
        {
            if n > size {
                bail!("{}: bad BSD ar name length at offset {pos}", path.display());
            }
            let mut b = vec![0u8; usize::try_from(n).with_context(io_ctx)?];
            r.read_exact(&mut b).with_context(io_ctx)?;
            offset += n;
            data_size -= n;
            Some(
                String::from_utf8_lossy(&b)
                    .trim_end_matches('\0')
                    .to_string(),
            )
        } else {
            Some(raw_name.strip_suffix('/').unwrap_or(&raw_name).to_string())
        };
        if let Some(name) = name {
            members.push(ArMember {
                name,
                offset,
                size: data_size,
            });
        }
        pos = pos + AR_HEADER as u64 + size + (size & 1);
    }
    Ok(members)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
    Lzma,
}

/// A `control.tar*` or `data.tar*` member and how it is compressed.
#[derive(Clone, Debug)]
struct TarMember {
    member: ArMember,
    compression: Compression,
}

struct DebMembers {
    control: TarMember,
    data: TarMember,
}

impl DebMembers {
    /// Lists the archive and picks out the control and data tarballs, checking the format
    /// version the way dpkg does (`debian-binary` first, major version 2).
    fn find<R: Read + Seek>(r: &mut R, path: &Path) -> Result<DebMembers> {
        let members = ar_members(r, path)?;
        let first = members
            .first()
            .ok_or_else(|| anyhow!("{}: empty ar archive, not a .deb", path.display()))?;
        if first.name != "debian-binary" {
            bail!(
                "{}: first member is {:?}, not debian-binary: not a Debian package",
                path.display(),
                first.name
            );
        }
        let ctx = || format!("{}: reading member debian-binary", path.display());
        let mut version = vec![0u8; first.size.min(64) as usize];
        r.seek(SeekFrom::Start(first.offset)).with_context(ctx)?;
        r.read_exact(&mut version).with_context(ctx)?;
        if !version.starts_with(b"2.") {
            bail!(
                "{}: member debian-binary says format {:?}; only 2.x is supported",
                path.display(),
                String::from_utf8_lossy(&version).trim()
            );
        }
        let pick = |stem: &str| -> Result<TarMember> {
            let mut found = members.iter().filter(|m| m.name.starts_with(stem));
            let m = found.next().ok_or_else(|| {
                let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
                anyhow!(
                    "{}: no {stem}* member (members: {})",
                    path.display(),
                    names.join(", ")
                )
            })?;
            if let Some(dup) = found.next() {
                bail!(
                    "{}: both {} and {} present",
                    path.display(),
                    m.name,
                    dup.name
                );
            }
            let compression = match &m.name[stem.len()..] {
                "" => Compression::None,
                ".gz" => Compression::Gzip,
                ".xz" => Compression::Xz,
                ".zst" => Compression::Zstd,
                ".lzma" => Compression::Lzma,
                other => bail!(
                    "{}: member {}: unsupported compression {other:?} (supported: none, .gz, \
                     .xz, .zst, .lzma)",
                    path.display(),
                    m.name
                ),
            };
            Ok(TarMember {
                member: m.clone(),
                compression,
            })
        };
        Ok(DebMembers {
            control: pick("control.tar")?,
            data: pick("data.tar")?,
        })
    }
}

impl TarMember {
    /// A tar reader over the decompressed member.
    fn open<'a, R: Read + Seek>(
        &self,
        r: &'a mut R,
    ) -> io::Result<tar::Archive<Box<dyn Read + 'a>>> {
        Ok(tar::Archive::new(self.decompressed(r)?))
    }

    /// The member's bytes, decompressed.
    fn decompressed<'a, R: Read + Seek>(&self, r: &'a mut R) -> io::Result<Box<dyn Read + 'a>> {
        r.seek(SeekFrom::Start(self.member.offset))?;
        let raw = r.take(self.member.size);
        let reader: Box<dyn Read + 'a> = match self.compression {
            Compression::None => Box::new(raw),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
            Compression::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(raw)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(raw)?),
            Compression::Lzma => {
                let stream = xz2::stream::Stream::new_lzma_decoder(u64::MAX)
                    .map_err(|e| io::Error::other(e.to_string()))?;
                Box::new(xz2::read::XzDecoder::new_stream(raw, stream))
            }
        };
        Ok(reader)
    }

    fn context(&self, path: &Path) -> String {
        format!("{}: member {}", path.display(), self.member.name)
    }

    /// Walks the tarball, handing each entry to `f`, then reads the compressed stream to its
    /// end so the checksum at the end of an xz/gzip/zstd stream is verified too.
    fn for_each<R: Read + Seek>(
        &self,
        r: &mut R,
        path: &Path,
        mut f: impl FnMut(&mut tar::Entry<'_, Box<dyn Read + '_>>) -> Result<()>,
    ) -> Result<()> {
        let ctx = || self.context(path);
        let mut ar = self.open(r).with_context(ctx)?;
        for entry in ar.entries().with_context(ctx)? {
            let mut entry = entry.with_context(ctx)?;
            f(&mut entry).with_context(ctx)?;
        }
        io::copy(&mut ar.into_inner(), &mut io::sink()).with_context(ctx)?;
        Ok(())
    }

    fn read_control<R: Read + Seek>(
        &self,
        r: &mut R,
        path: &Path,
    ) -> Result<(ControlFields, ControlFiles)> {
        let mut control = None;
        let mut others = Vec::new();
        self.for_each(r, path, |e| {
            if !matches!(
                e.header().entry_type(),
                EntryType::Regular | EntryType::Continuous
            ) {
                return Ok(());
            }
            let name = String::from_utf8_lossy(&e.path_bytes()).to_string();
            let name = name.trim_start_matches("./").to_string();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes)
                .with_context(|| format!("reading {name}"))?;
            if name == "control" {
                control = Some(bytes);
            } else {
                others.push((name, bytes));
            }
            Ok(())
        })?;
        let ctx = self.context(path);
        let bytes = control.ok_or_else(|| anyhow!("{ctx}: no ./control file"))?;
        let text =
            String::from_utf8(bytes).map_err(|e| anyhow!("{ctx}: control is not UTF-8: {e}"))?;
        let (mut stanzas, problems) = parse_deb822(&text);
        if let Some(p) = problems.first() {
            bail!("{ctx}: control: {p}");
        }
        if stanzas.len() != 1 {
            bail!(
                "{ctx}: control has {} stanzas, expected exactly one",
                stanzas.len()
            );
        }
        let fields = stanzas.remove(0);
        if fields.get("Package").is_none() {
            bail!("{ctx}: control has no Package field");
        }
        Ok((fields, others))
    }

    fn read_data<R: Read + Seek>(&self, r: &mut R, path: &Path) -> Result<Vec<(ImagePath, Entry)>> {
        let mut out = Vec::new();
        self.for_each(r, path, |e| {
            if let Some(item) = tar_entry(e)? {
                out.push(item);
            }
            Ok(())
        })?;
        Ok(out)
    }
}

/// Converts one tar entry; `None` for entries that carry no file (PAX global headers).
fn tar_entry<R: Read>(e: &mut tar::Entry<'_, R>) -> Result<Option<(ImagePath, Entry)>> {
    let raw_path = e.path_bytes().into_owned();
    let name = std::str::from_utf8(&raw_path)
        .map_err(|_| {
            anyhow!(
                "entry {:?}: path is not UTF-8",
                String::from_utf8_lossy(&raw_path)
            )
        })?
        .to_string();
    let inner = || -> Result<Option<(ImagePath, Entry)>> {
        let h = e.header();
        let ty = h.entry_type();
        let path = ImagePath::new(&name)?;
        let link = || -> Result<String> {
            let l = e
                .link_name_bytes()
                .ok_or_else(|| anyhow!("link without a target"))?;
            let l = std::str::from_utf8(&l).map_err(|_| anyhow!("link target is not UTF-8"))?;
            if l.is_empty() {
                bail!("link with an empty target");
            }
            Ok(l.to_string())
        };
        let dev = || -> Result<(u32, u32)> {
            let major = h
                .device_major()?
                .ok_or_else(|| anyhow!("device without a major number"))?;
            let minor = h
                .device_minor()?
                .ok_or_else(|| anyhow!("device without a minor number"))?;
            Ok((major, minor))
        };
        let kind = match ty {
            EntryType::Directory => Kind::Dir,
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                Kind::File(Default::default()) // filled below, once the header borrow ends
            }
            EntryType::Symlink => Kind::Symlink(link()?),
            EntryType::Link => Kind::Hardlink(ImagePath::new(&link()?)?),
            EntryType::Char => {
                let (major, minor) = dev()?;
                Kind::CharDev { major, minor }
            }
            EntryType::Block => {
                let (major, minor) = dev()?;
                Kind::BlockDev { major, minor }
            }
            EntryType::Fifo => Kind::Fifo,
            EntryType::XGlobalHeader => return Ok(None),
            other => bail!("unsupported tar entry type {:?}", other.as_byte() as char),
        };
        let mode = (h.mode()? & 0o7777) as u16;
        let uid = u32::try_from(h.uid()?).context("uid out of range")?;
        let gid = u32::try_from(h.gid()?).context("gid out of range")?;
        let mtime = i64::try_from(h.mtime()?).context("mtime out of range")?;
        let mut entry = Entry::new(kind, mode, mtime);
        entry.uid = uid;
        entry.gid = gid;
        Ok(Some((path, entry)))
    };
    let mut item = inner().with_context(|| format!("entry {name}"))?;
    if let Some((_, entry)) = &mut item {
        // PAX records: mtime (uid/gid are applied by the tar crate) and xattrs.
        if let Some(pax) = e
            .pax_extensions()
            .with_context(|| format!("entry {name}"))?
        {
            for ext in pax {
                let ext = ext.with_context(|| format!("entry {name}: PAX header"))?;
                let Ok(key) = ext.key() else { continue };
                if key == "mtime" {
                    let v = ext.value().unwrap_or_default();
                    let secs = v.split('.').next().unwrap_or_default();
                    entry.mtime = secs
                        .parse()
                        .with_context(|| format!("entry {name}: bad PAX mtime {v:?}"))?;
                } else if let Some(attr) = key.strip_prefix("SCHILY.xattr.") {
                    entry
                        .xattrs
                        .insert(attr.to_string(), ext.value_bytes().to_vec());
                }
            }
        }
        if let Kind::File(_) = entry.kind {
            let size = e.size();
            let mut data = Vec::with_capacity(usize::try_from(size.min(1 << 26)).unwrap_or(0));
            e.read_to_end(&mut data)
                .with_context(|| format!("entry {name}: reading content"))?;
            entry.kind = Kind::File(data.into());
        }
    }
    Ok(item)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn deb822_stanzas_fields_and_continuations() {
        let text = "# a comment\n\
                    Package: hello\r\n\
                    Version: 2.10-3\n\
                    Depends: libc6 (>= 2.34),\n \
                    \x20libfoo\n\
                    Description: greeting\n \
                    The GNU hello program.\n \
                    .\n \
                    More.\n\
                    \n\
                    \x20\t\n\
                    \n\
                    package: b\n\
                    # comment inside\n\
                    Conffiles:\n \
                    /etc/b 0123\n\
                    Empty:";
        let st = parse_stanzas(text);
        assert_eq!(st.len(), 2);
        let a = &st[0];
        assert_eq!(a.get("package"), Some("hello"));
        assert_eq!(a.get("VERSION"), Some("2.10-3"));
        assert_eq!(a.get("Depends"), Some("libc6 (>= 2.34),\n  libfoo"));
        assert_eq!(
            a.get("Description"),
            Some("greeting\n The GNU hello program.\n .\n More.")
        );
        assert_eq!(a.get("Missing"), None);
        let keys: Vec<&str> = a.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["Package", "Version", "Depends", "Description"]);
        assert_eq!(st[1].get("Package"), Some("b"));
        assert_eq!(st[1].get("conffiles"), Some("\n /etc/b 0123"));
        assert_eq!(st[1].get("Empty"), Some(""));
        // Display round-trips.
        let again = parse_stanzas(&format!("{}\n{}", st[0], st[1]));
        assert_eq!(again, st);
    }

    #[test]
    fn deb822_bad_lines_are_reported_and_skipped() {
        let (st, problems) = parse_deb822(" orphan\nA: 1\nnot a field\nA: 2\n dup-cont\nB: 3\n");
        assert_eq!(st.len(), 1);
        assert_eq!(st[0].get("A"), Some("1"));
        assert_eq!(st[0].get("B"), Some("3"));
        assert_eq!(st[0].len(), 2);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("line 1:"), "{problems:?}");
    }

    // --- building small .deb files ---------------------------------------------------------

    fn ar(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut out = AR_MAGIC.to_vec();
        for (name, data) in members {
            let header = format!(
                "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                0,
                0,
                0,
                "100644",
                data.len()
            );
            assert_eq!(header.len(), 60);
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(data);
            if data.len() % 2 == 1 {
                out.push(b'\n');
            }
        }
        out
    }

    fn compress(data: Vec<u8>, c: Compression) -> Vec<u8> {
        match c {
            Compression::None => data,
            Compression::Xz => {
                let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
                e.write_all(&data).unwrap();
                e.finish().unwrap()
            }
            Compression::Gzip => {
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(&data).unwrap();
                e.finish().unwrap()
            }
            Compression::Zstd => zstd::encode_all(&data[..], 3).unwrap(),
            Compression::Lzma => unreachable!(),
        }
    }

    fn ext(c: Compression) -> &'static str {
        match c {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Xz => ".xz",
            Compression::Zstd => ".zst",
            Compression::Lzma => ".lzma",
        }
    }

    fn header(ty: EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(ty);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_671_000_000);
        h.set_size(size);
        h
    }

    const CONTROL: &str = "Package: hello\nVersion: 2.10-3\nArchitecture: amd64\n\
                           Depends: libc6 (>= 2.34)\nDescription: example\n more text\n";

    fn control_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        b.append_data(&mut header(EntryType::Directory, 0o755, 0), "./", &[][..])
            .unwrap();
        b.append_data(
            &mut header(EntryType::Regular, 0o644, CONTROL.len() as u64),
            "./control",
            CONTROL.as_bytes(),
        )
        .unwrap();
        b.append_data(
            &mut header(EntryType::Regular, 0o755, 9),
            "./postinst",
            &b"#!/bin/sh"[..],
        )
        .unwrap();
        b.into_inner().unwrap()
    }

    const LONG: &str = "./usr/share/doc/hello/a-very-long-directory-name-that-goes-on-and-on/and-a-file-name-that-pushes-it-past-one-hundred-bytes.txt";

    fn data_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let dir = |b: &mut tar::Builder<Vec<u8>>, p: &str| {
            b.append_data(&mut header(EntryType::Directory, 0o755, 0), p, &[][..])
                .unwrap();
        };
        dir(&mut b, "./");
        dir(&mut b, "./usr/");
        dir(&mut b, "./usr/bin/");
        let mut h = header(EntryType::Regular, 0o4755, 5);
        h.set_uid(1000);
        h.set_gid(50);
        b.append_data(&mut h, "./usr/bin/hello", &b"\x7fELF!"[..])
            .unwrap();
        let mut h = header(EntryType::Link, 0o755, 0);
        b.append_link(&mut h, "./usr/bin/hi", "./usr/bin/hello")
            .unwrap();
        let mut h = header(EntryType::Symlink, 0o777, 0);
        // Literal: the builder would normalise "./" away, and we want to see it kept.
        h.set_link_name_literal("../bin/./hello").unwrap();
        b.append_data(&mut h, "./usr/bin/hey", &[][..]).unwrap();
        let mut h = header(EntryType::Char, 0o666, 0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        b.append_data(&mut h, "./dev/null", &[][..]).unwrap();
        let mut h = header(EntryType::Block, 0o660, 0);
        h.set_device_major(8).unwrap();
        h.set_device_minor(1).unwrap();
        b.append_data(&mut h, "./dev/sda1", &[][..]).unwrap();
        b.append_data(
            &mut header(EntryType::Fifo, 0o600, 0),
            "./run/fifo",
            &[][..],
        )
        .unwrap();
        let body = vec![b'x'; 1001]; // odd size: exercises ar padding via the member too
        b.append_data(
            &mut header(EntryType::Regular, 0o644, body.len() as u64),
            LONG,
            &body[..],
        )
        .unwrap();
        // A PAX header with an xattr and an mtime override.
        let mut h = header(EntryType::Regular, 0o755, 3);
        b.append_pax_extensions([
            ("SCHILY.xattr.security.capability", &b"\x01\x02"[..]),
            ("mtime", &b"1700000000.5"[..]),
        ])
        .unwrap();
        b.append_data(&mut h, "./usr/bin/ping", &b"cap"[..])
            .unwrap();
        b.into_inner().unwrap()
    }

    fn write_deb(dir: &Path, name: &str, c: Compression) -> PathBuf {
        let bytes = ar(&[
            ("debian-binary/", b"2.0\n".to_vec()),
            (
                &format!("control.tar{}/", ext(c)),
                compress(control_tar(), c),
            ),
            (&format!("data.tar{}", ext(c)), compress(data_tar(), c)),
        ]);
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn ip(s: &str) -> ImagePath {
        ImagePath::new(s).unwrap()
    }

    #[test]
    fn reads_constructed_debs_in_every_compression() {
        let dir = tempfile::tempdir().unwrap();
        for c in [
            Compression::Xz,
            Compression::Zstd,
            Compression::Gzip,
            Compression::None,
        ] {
            let p = write_deb(dir.path(), &format!("t{}.deb", ext(c)), c);
            let control = read_control(&p).unwrap();
            assert_eq!(control.get("package"), Some("hello"));
            assert_eq!(control.get("Description"), Some("example\n more text"));

            let data = read_data(&p).unwrap();
            let paths: Vec<&str> = data.iter().map(|(p, _)| p.as_str()).collect();
            assert_eq!(
                paths,
                [
                    "/",
                    "/usr",
                    "/usr/bin",
                    "/usr/bin/hello",
                    "/usr/bin/hi",
                    "/usr/bin/hey",
                    "/dev/null",
                    "/dev/sda1",
                    "/run/fifo",
                    &LONG[1..],
                    "/usr/bin/ping",
                ],
                "{c:?}"
            );
            let get = |s: &str| &data.iter().find(|(p, _)| p.as_str() == s).unwrap().1;
            let hello = get("/usr/bin/hello");
            assert_eq!(hello.kind, Kind::File(b"\x7fELF!".to_vec().into()));
            assert_eq!(
                (hello.mode, hello.uid, hello.gid, hello.mtime),
                (0o4755, 1000, 50, 1_671_000_000)
            );
            assert_eq!(get("/").kind, Kind::Dir);
            assert_eq!(
                get("/usr/bin/hi").kind,
                Kind::Hardlink(ip("/usr/bin/hello"))
            );
            assert_eq!(
                get("/usr/bin/hey").kind,
                Kind::Symlink("../bin/./hello".into())
            );
            assert_eq!(get("/dev/null").kind, Kind::CharDev { major: 1, minor: 3 });
            assert_eq!(get("/dev/sda1").kind, Kind::BlockDev { major: 8, minor: 1 });
            assert_eq!(get("/run/fifo").kind, Kind::Fifo);
            assert!(matches!(&get(&LONG[1..]).kind, Kind::File(d) if d.len() == 1001));
            let ping = get("/usr/bin/ping");
            assert_eq!(ping.mtime, 1_700_000_000);
            assert_eq!(
                ping.xattrs.get("security.capability").map(|v| &v[..]),
                Some(&b"\x01\x02"[..])
            );

            let deb = Deb::read(&p).unwrap();
            assert_eq!(deb.control, control);
            assert_eq!(deb.data, data);
            assert_eq!(
                deb.control_files,
                [("postinst".to_string(), b"#!/bin/sh".to_vec())]
            );
        }
    }

    #[test]
    fn a_zstd_copy_reads_as_the_package_does() {
        let dir = tempfile::tempdir().unwrap();
        for c in [Compression::Xz, Compression::Gzip, Compression::None] {
            let p = write_deb(dir.path(), &format!("t{}.deb", ext(c)), c);
            let copy = dir.path().join(format!("t{}.zst.deb", ext(c)));
            recompress_zstd(&p, &copy, 3).unwrap();
            let (a, b) = (Deb::read(&p).unwrap(), Deb::read(&copy).unwrap());
            assert_eq!(
                (a.control, a.control_files, a.data),
                (b.control, b.control_files, b.data),
                "{c:?}"
            );
            // The copy is a .deb dpkg-deb reads too.
            let o = std::process::Command::new("dpkg-deb")
                .arg("--info")
                .arg(&copy)
                .output()
                .expect("running dpkg-deb (Debian's dpkg)");
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
    }

    #[test]
    fn errors_name_the_file_and_member() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.deb");
        let msg = |p: &Path| format!("{:#}", read_data(p).unwrap_err());

        std::fs::write(&p, b"PK\x03\x04 not an ar").unwrap();
        assert!(
            msg(&p).contains("bad.deb") && msg(&p).contains("magic"),
            "{}",
            msg(&p)
        );

        std::fs::write(
            &p,
            ar(&[
                ("debian-binary", b"2.0\n".to_vec()),
                ("control.tar", control_tar()),
            ]),
        )
        .unwrap();
        assert!(msg(&p).contains("no data.tar* member"), "{}", msg(&p));

        std::fs::write(&p, ar(&[("debian-binary", b"3.0\n".to_vec())])).unwrap();
        assert!(msg(&p).contains("only 2.x"), "{}", msg(&p));

        // Corrupt xz stream: the error names the member.
        let mut data = compress(data_tar(), Compression::Xz);
        let mid = data.len() / 2;
        data[mid] ^= 0xff;
        std::fs::write(
            &p,
            ar(&[
                ("debian-binary", b"2.0\n".to_vec()),
                ("control.tar", control_tar()),
                ("data.tar.xz", data),
            ]),
        )
        .unwrap();
        let m = msg(&p);
        assert!(m.contains("bad.deb: member data.tar.xz"), "{m}");

        // Truncated file: the member runs past the end.
        let full = std::fs::read(write_deb(dir.path(), "ok.deb", Compression::Xz)).unwrap();
        std::fs::write(&p, &full[..full.len() - 100]).unwrap();
        assert!(msg(&p).contains("past the end"), "{}", msg(&p));

        let bz = ar(&[
            ("debian-binary", b"2.0\n".to_vec()),
            ("control.tar", control_tar()),
            ("data.tar.bz2", vec![0]),
        ]);
        std::fs::write(&p, bz).unwrap();
        assert!(
            msg(&p).contains("unsupported compression \".bz2\""),
            "{}",
            msg(&p)
        );

        let missing = dir.path().join("nope.deb");
        assert!(msg(&missing).contains("nope.deb"));
    }

    #[test]
    fn ar_long_names_gnu_and_bsd() {
        let mut bytes = AR_MAGIC.to_vec();
        let table = b"a-rather-long-member-name.txt/\n";
        for (name, data) in [("//", &table[..]), ("/0", b"xyz"), ("#1/8", b"bsdname!abc")] {
            let h = format!(
                "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                0,
                0,
                0,
                "100644",
                data.len()
            );
            bytes.extend_from_slice(h.as_bytes());
            bytes.extend_from_slice(data);
            if data.len() % 2 == 1 {
                bytes.push(b'\n');
            }
        }
        let m = ar_members(&mut io::Cursor::new(bytes), Path::new("x")).unwrap();
        let names: Vec<(&str, u64)> = m.iter().map(|m| (m.name.as_str(), m.size)).collect();
        assert_eq!(
            names,
            [("a-rather-long-member-name.txt", 3), ("bsdname!", 3)]
        );
    }
}
