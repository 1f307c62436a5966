//! The root filesystem as a value: a sorted, in-memory tree of entries.
//!
//! Nothing is ever unpacked onto the host. Stages add entries here (from `.deb` data, overlays,
//! generated files) and writers (ext4, later cpio/tar) turn the manifest into bytes. Because the
//! map is a `BTreeMap` keyed by path, every walk is in the same order on every machine, which is
//! half of what makes the images reproducible; the other half is that every entry carries its own
//! mtime/owner instead of inheriting host state.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use anyhow::{bail, Result};
use serde::Serialize;

/// An absolute path inside the image, normalised: starts with `/`, no trailing `/` (except the
/// root itself), no `.`/`..`/empty components. Ordering is byte-wise on the path, so a parent
/// always sorts before its children.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ImagePath(String);

impl ImagePath {
    pub fn root() -> Self {
        ImagePath("/".to_string())
    }

    /// Normalises `p` (relative paths are taken relative to `/`). Rejects `..` so an overlay or a
    /// package can never place a file outside the image.
    pub fn new(p: &str) -> Result<Self> {
        let mut parts = Vec::new();
        for c in p.split('/') {
            match c {
                "" | "." => {}
                ".." => bail!("path {p:?} contains '..'; image paths must stay inside the image"),
                c => parts.push(c),
            }
        }
        if parts.is_empty() {
            return Ok(Self::root());
        }
        Ok(ImagePath(format!("/{}", parts.join("/"))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The parent directory; `None` for the root.
    pub fn parent(&self) -> Option<ImagePath> {
        if self.is_root() {
            return None;
        }
        match self.0.rfind('/') {
            Some(0) => Some(Self::root()),
            Some(i) => Some(ImagePath(self.0[..i].to_string())),
            None => None,
        }
    }

    /// The last component (`""` for the root).
    pub fn file_name(&self) -> &str {
        match self.0.rfind('/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    pub fn join(&self, name: &str) -> Result<ImagePath> {
        ImagePath::new(&format!("{}/{}", self.0, name))
    }
}

impl fmt::Debug for ImagePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for ImagePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an entry is. File data is shared (`Arc`) so copying a manifest or handing it to two
/// writers costs nothing.
#[derive(Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(Arc<Vec<u8>>),
    Symlink(String),
    /// Another name for the regular file at the given path (which must exist in the manifest and
    /// be a `File`). Writers give both names the same inode.
    Hardlink(ImagePath),
    CharDev {
        major: u32,
        minor: u32,
    },
    BlockDev {
        major: u32,
        minor: u32,
    },
    Fifo,
    Socket,
}

impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Dir => write!(f, "Dir"),
            Kind::File(d) => write!(f, "File({} bytes)", d.len()),
            Kind::Symlink(t) => write!(f, "Symlink({t:?})"),
            Kind::Hardlink(t) => write!(f, "Hardlink({t:?})"),
            Kind::CharDev { major, minor } => write!(f, "CharDev({major}:{minor})"),
            Kind::BlockDev { major, minor } => write!(f, "BlockDev({major}:{minor})"),
            Kind::Fifo => write!(f, "Fifo"),
            Kind::Socket => write!(f, "Socket"),
        }
    }
}

impl Kind {
    /// The `S_IFMT` bits for this kind (hard links report the regular-file type).
    pub fn type_bits(&self) -> u32 {
        match self {
            Kind::Dir => 0o040000,
            Kind::File(_) | Kind::Hardlink(_) => 0o100000,
            Kind::Symlink(_) => 0o120000,
            Kind::CharDev { .. } => 0o020000,
            Kind::BlockDev { .. } => 0o060000,
            Kind::Fifo => 0o010000,
            Kind::Socket => 0o140000,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Kind::Dir => "dir",
            Kind::File(_) => "file",
            Kind::Symlink(_) => "symlink",
            Kind::Hardlink(_) => "hardlink",
            Kind::CharDev { .. } => "chardev",
            Kind::BlockDev { .. } => "blockdev",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
        }
    }
}

/// One entry of the tree. `mode` holds only the permission bits (`0o7777`: includes
/// setuid/setgid/sticky); the type comes from `kind`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch; always SOURCE_DATE_EPOCH for images berth builds.
    pub mtime: i64,
    /// Extended attributes, full names (`security.capability`, `user.foo`), sorted.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl Entry {
    pub fn new(kind: Kind, mode: u16, mtime: i64) -> Self {
        Entry {
            kind,
            mode: mode & 0o7777,
            uid: 0,
            gid: 0,
            mtime,
            xattrs: BTreeMap::new(),
        }
    }

    pub fn dir(mode: u16, mtime: i64) -> Self {
        Self::new(Kind::Dir, mode, mtime)
    }

    pub fn file(data: impl Into<Vec<u8>>, mode: u16, mtime: i64) -> Self {
        Self::new(Kind::File(Arc::new(data.into())), mode, mtime)
    }

    pub fn symlink(target: impl Into<String>, mtime: i64) -> Self {
        Self::new(Kind::Symlink(target.into()), 0o777, mtime)
    }

    /// `st_mode` as the kernel sees it: type bits | permission bits.
    pub fn st_mode(&self) -> u32 {
        self.kind.type_bits() | u32::from(self.mode)
    }
}

/// The sorted tree. Invariants (kept by [`Manifest::insert`] and checked by
/// [`Manifest::validate`]): the root `/` exists and is a directory; every entry's parent exists
/// and is a directory; every hard link points at a regular file.
#[derive(Clone, Debug, Default)]
pub struct Manifest {
    entries: BTreeMap<ImagePath, Entry>,
}

impl Manifest {
    /// An empty tree holding only `/` (0755, root-owned, at `mtime`).
    pub fn new(mtime: i64) -> Self {
        let mut entries = BTreeMap::new();
        entries.insert(ImagePath::root(), Entry::dir(0o755, mtime));
        Manifest { entries }
    }

    /// Inserts or replaces `path`, creating missing parent directories (0755, root, at the
    /// entry's mtime). Replacing a directory with a non-directory drops everything under it, so
    /// an overlay can replace a whole subtree with a symlink.
    pub fn insert(&mut self, path: ImagePath, entry: Entry) -> Result<()> {
        if path.is_root() {
            if entry.kind != Kind::Dir {
                bail!(
                    "the image root / must be a directory, not a {}",
                    entry.kind.name()
                );
            }
            self.entries.insert(path, entry);
            return Ok(());
        }
        self.ensure_dirs(&path.parent().unwrap_or_else(ImagePath::root), entry.mtime)?;
        if entry.kind != Kind::Dir {
            self.remove_under(&path);
        }
        self.entries.insert(path, entry);
        Ok(())
    }

    /// Creates `dir` and its parents as directories if missing. A non-directory in the way is an
    /// error naming it.
    pub fn ensure_dirs(&mut self, dir: &ImagePath, mtime: i64) -> Result<()> {
        let mut chain = Vec::new();
        let mut cur = Some(dir.clone());
        while let Some(p) = cur {
            match self.entries.get(&p) {
                Some(e) if e.kind == Kind::Dir => break,
                Some(e) => bail!(
                    "cannot create {dir}: {p} is a {}, not a directory",
                    e.kind.name()
                ),
                None => {
                    cur = p.parent();
                    chain.push(p);
                }
            }
        }
        for p in chain.into_iter().rev() {
            self.entries.insert(p, Entry::dir(0o755, mtime));
        }
        Ok(())
    }

    /// Every entry strictly under `dir`, in path order. The walk starts at `dir/`, not at
    /// `dir`: ordering is byte-wise, so a sibling such as `dir-x` or `dir.d` sorts between
    /// `dir` and `dir/...`, and a walk from `dir` that stops at the first non-child would
    /// miss everything under it.
    fn under<'a>(&'a self, dir: &ImagePath) -> impl Iterator<Item = (&'a ImagePath, &'a Entry)> {
        let prefix = if dir.is_root() {
            "/".to_string()
        } else {
            format!("{}/", dir.as_str())
        };
        let start = ImagePath(prefix.clone());
        self.entries
            .range(start..)
            .take_while(move |(p, _)| p.as_str().starts_with(&prefix))
            .filter(|(p, _)| !p.is_root())
    }

    fn remove_under(&mut self, path: &ImagePath) {
        let doomed: Vec<ImagePath> = self.under(path).map(|(p, _)| p.clone()).collect();
        for p in doomed {
            self.entries.remove(&p);
        }
    }

    /// Drops every non-directory under `dir` for which `keep` is false, then every directory
    /// under `dir` that is left empty (deepest first). Returns how many non-directories went.
    pub fn prune_under(
        &mut self,
        dir: &ImagePath,
        keep: impl Fn(&ImagePath, &Entry) -> bool,
    ) -> usize {
        let under: Vec<ImagePath> = self.under(dir).map(|(p, _)| p.clone()).collect();
        let mut removed = 0;
        for p in &under {
            if let Some(e) = self.entries.get(p) {
                if e.kind != Kind::Dir && !keep(p, e) {
                    self.entries.remove(p);
                    removed += 1;
                }
            }
        }
        // Reverse path order visits a directory after everything under it.
        for p in under.iter().rev() {
            let is_dir = self.entries.get(p).is_some_and(|e| e.kind == Kind::Dir);
            if is_dir && self.children(p).next().is_none() {
                self.entries.remove(p);
            }
        }
        removed
    }

    pub fn get(&self, path: &ImagePath) -> Option<&Entry> {
        self.entries.get(path)
    }

    pub fn get_mut(&mut self, path: &ImagePath) -> Option<&mut Entry> {
        self.entries.get_mut(path)
    }

    pub fn contains(&self, path: &ImagePath) -> bool {
        self.entries.contains_key(path)
    }

    /// All entries in path order (parents before children).
    pub fn iter(&self) -> impl Iterator<Item = (&ImagePath, &Entry)> {
        self.entries.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&ImagePath, &mut Entry)> {
        self.entries.iter_mut()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Direct children of `dir`, in name order.
    pub fn children<'a>(
        &'a self,
        dir: &ImagePath,
    ) -> impl Iterator<Item = (&'a ImagePath, &'a Entry)> + 'a {
        let skip = if dir.is_root() {
            1
        } else {
            dir.as_str().len() + 1
        };
        self.under(dir)
            .filter(move |(p, _)| !p.as_str()[skip..].contains('/'))
    }

    /// Total bytes of regular-file content (hard links counted once).
    pub fn content_bytes(&self) -> u64 {
        self.entries
            .values()
            .map(|e| match &e.kind {
                Kind::File(d) => d.len() as u64,
                _ => 0,
            })
            .sum()
    }

    /// Resolves a symlink chain inside the image (absolute or relative targets), up to 40 hops
    /// as the kernel does. Returns the final non-symlink path, or `None` if it dangles.
    pub fn resolve(&self, path: &ImagePath) -> Option<ImagePath> {
        let mut cur = path.clone();
        for _ in 0..40 {
            // Resolve symlinked parent directories too (e.g. /lib -> usr/lib on merged-/usr).
            let mut resolved = ImagePath::root();
            let comps: Vec<&str> = cur
                .as_str()
                .split('/')
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>();
            let mut changed = false;
            for (i, c) in comps.iter().enumerate() {
                let next = resolved.join(c).ok()?;
                match self.entries.get(&next).map(|e| &e.kind) {
                    Some(Kind::Symlink(t)) => {
                        let base = if t.starts_with('/') {
                            t.clone()
                        } else {
                            format!("{}/{}", resolved.as_str(), t)
                        };
                        let rest = comps[i + 1..].join("/");
                        cur = normalize_dotdot(&format!("{base}/{rest}"))?;
                        changed = true;
                        break;
                    }
                    Some(_) => resolved = next,
                    None => return None,
                }
            }
            if !changed {
                return Some(resolved);
            }
        }
        None
    }

    /// Checks the invariants; used by writers before they start, so a broken manifest is an error
    /// naming the path rather than a corrupt image.
    pub fn validate(&self) -> Result<()> {
        match self.entries.get(&ImagePath::root()) {
            Some(e) if e.kind == Kind::Dir => {}
            _ => bail!("manifest has no root directory"),
        }
        for (p, e) in &self.entries {
            if let Some(parent) = p.parent() {
                match self.entries.get(&parent) {
                    Some(pe) if pe.kind == Kind::Dir => {}
                    Some(pe) => bail!("{p}: parent {parent} is a {}", pe.kind.name()),
                    None => bail!("{p}: parent directory {parent} is missing"),
                }
            }
            if let Kind::Hardlink(t) = &e.kind {
                match self.entries.get(t).map(|e| &e.kind) {
                    Some(Kind::File(_)) => {}
                    Some(k) => bail!("{p}: hard link target {t} is a {}, not a file", k.name()),
                    None => bail!("{p}: hard link target {t} does not exist"),
                }
            }
            if let Kind::Symlink(t) = &e.kind {
                if t.is_empty() {
                    bail!("{p}: symlink with an empty target");
                }
            }
        }
        Ok(())
    }
}

/// Normalises a path that may contain `..` (used only when following symlinks, where `..` is
/// legitimate); `..` at the root stays at the root as in the kernel.
pub fn normalize_dotdot(p: &str) -> Option<ImagePath> {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    ImagePath::new(&parts.join("/")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ImagePath {
        ImagePath::new(s).unwrap()
    }

    #[test]
    fn paths_normalise_and_reject_dotdot() {
        assert_eq!(p("usr//bin/./x/").as_str(), "/usr/bin/x");
        assert_eq!(p("").as_str(), "/");
        assert!(ImagePath::new("/usr/../etc").is_err());
        assert_eq!(p("/usr/bin").parent().unwrap().as_str(), "/usr");
        assert_eq!(p("/usr").parent().unwrap().as_str(), "/");
        assert_eq!(p("/usr/bin").file_name(), "bin");
    }

    #[test]
    fn siblings_that_sort_between_a_dir_and_its_children_do_not_hide_them() {
        // Byte order: "/a/b" < "/a/b-x" < "/a/b.d" < "/a/b/c".
        let mut m = Manifest::new(7);
        m.insert(p("/a/b/c"), Entry::file(b"x".to_vec(), 0o644, 7))
            .unwrap();
        m.insert(p("/a/b/d/e.ko"), Entry::file(b"y".to_vec(), 0o644, 7))
            .unwrap();
        m.insert(p("/a/b-x"), Entry::file(b"z".to_vec(), 0o644, 7))
            .unwrap();
        m.insert(p("/a/b.d"), Entry::dir(0o755, 7)).unwrap();
        let kids: Vec<_> = m
            .children(&p("/a/b"))
            .map(|(p, _)| p.as_str().to_string())
            .collect();
        assert_eq!(kids, ["/a/b/c", "/a/b/d"]);
        // Pruning keeps what `keep` says, drops the directory it empties, not the siblings.
        let gone = m.prune_under(&p("/a/b"), |p, _| p.as_str() == "/a/b/c");
        assert_eq!(gone, 1);
        assert!(m.contains(&p("/a/b/c")));
        assert!(!m.contains(&p("/a/b/d")));
        assert!(m.contains(&p("/a/b-x")) && m.contains(&p("/a/b.d")));
        // Replacing a directory with a file drops what was under it, siblings stay.
        m.insert(p("/a/b"), Entry::symlink("b.d", 7)).unwrap();
        assert!(!m.contains(&p("/a/b/c")));
        assert!(m.contains(&p("/a/b-x")));
    }

    #[test]
    fn insert_creates_parents_and_children_are_direct_only() {
        let mut m = Manifest::new(7);
        m.insert(p("/a/b/c"), Entry::file(b"x".to_vec(), 0o644, 7))
            .unwrap();
        m.insert(p("/a/d"), Entry::symlink("b", 7)).unwrap();
        m.insert(p("/ab"), Entry::dir(0o700, 7)).unwrap();
        assert!(m.get(&p("/a/b")).is_some_and(|e| e.kind == Kind::Dir));
        let kids: Vec<_> = m
            .children(&p("/a"))
            .map(|(p, _)| p.as_str().to_string())
            .collect();
        assert_eq!(kids, ["/a/b", "/a/d"]);
        let top: Vec<_> = m
            .children(&ImagePath::root())
            .map(|(p, _)| p.as_str())
            .collect();
        assert_eq!(top, ["/a", "/ab"]);
        m.validate().unwrap();
    }

    #[test]
    fn replacing_a_dir_with_a_symlink_drops_its_subtree() {
        let mut m = Manifest::new(0);
        m.insert(p("/lib/x/y"), Entry::file(vec![], 0o644, 0))
            .unwrap();
        m.insert(p("/lib"), Entry::symlink("usr/lib", 0)).unwrap();
        assert!(!m.contains(&p("/lib/x")));
        assert!(!m.contains(&p("/lib/x/y")));
        m.validate().unwrap();
    }

    #[test]
    fn file_in_the_way_of_a_directory_is_an_error_naming_it() {
        let mut m = Manifest::new(0);
        m.insert(p("/etc"), Entry::file(vec![], 0o644, 0)).unwrap();
        let err = m
            .insert(p("/etc/hostname"), Entry::file(vec![], 0o644, 0))
            .unwrap_err();
        assert!(err.to_string().contains("/etc is a file"), "{err}");
    }

    #[test]
    fn resolve_follows_merged_usr_symlinks() {
        let mut m = Manifest::new(0);
        m.insert(p("/lib64"), Entry::symlink("usr/lib64", 0))
            .unwrap();
        m.insert(
            p("/usr/lib64/ld.so"),
            Entry::symlink("../lib/x86_64/ld.so.2", 0),
        )
        .unwrap();
        m.insert(p("/usr/lib/x86_64/ld.so.2"), Entry::file(vec![1], 0o755, 0))
            .unwrap();
        assert_eq!(
            m.resolve(&p("/lib64/ld.so")).unwrap().as_str(),
            "/usr/lib/x86_64/ld.so.2"
        );
        assert!(m.resolve(&p("/nope")).is_none());
        m.insert(p("/loop"), Entry::symlink("/loop", 0)).unwrap();
        assert!(m.resolve(&p("/loop")).is_none());
    }

    #[test]
    fn validate_rejects_dangling_hardlink() {
        let mut m = Manifest::new(0);
        m.insert(p("/h"), Entry::new(Kind::Hardlink(p("/missing")), 0o644, 0))
            .unwrap();
        assert!(m.validate().unwrap_err().to_string().contains("/missing"));
    }
}
