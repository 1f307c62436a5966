//! Kernel module dependencies without `depmod`: the Debian kernel package ships no
//! `modules.dep`, and running depmod would mean unpacking the modules onto the host.
//!
//! Every `.ko` is an ELF relocatable file whose `.modinfo` section holds NUL-separated
//! `key=value` strings written by modpost at kernel build time, among them `name=` and
//! `depends=` (the modules whose exported symbols it uses: exactly what depmod computes from the
//! symbol tables). So the index reads `.modinfo` of every module in the manifest, and the closure
//! and `modules.dep` follow from that.
//!
//! Orders follow depmod (kmod 30, `tools/depmod.c`): modules are numbered in `modules.order`
//! order, then a topological sort that starts from modules nobody uses gives each a rank where
//! every user ranks before what it uses; a module's line in `modules.dep` lists its whole closure
//! by rank (users first, so modprobe loads right to left), and [`ModuleIndex::load_order`] is the
//! reverse (dependencies first).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use anyhow::{bail, ensure, Context, Result};

use berth_contract::paths::{DRIVE_MODULES, FW_CFG_MODULE, MODULE_LIST};

use crate::fsimage::manifest::{Entry, ImagePath, Kind, Manifest};
use crate::profile::Profile;
use crate::root::rootfs::RootfsManifest;

/// File name endings of kernel modules, compressed or not.
const MODULE_SUFFIXES: &[&str] = &[".ko", ".ko.xz", ".ko.zst", ".ko.gz"];
const ET_REL: u16 = 1;
/// `e_shstrndx` value meaning "the real index is in section 0's `sh_link`".
const SHN_XINDEX: u16 = 0xffff;
const SHDR_SIZE: usize = 64;

/// One module of the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// Canonical name (`dm_mod`: `-` normalised to `_`).
    pub name: String,
    /// Path relative to `/usr/lib/modules/<kver>/`, e.g. `kernel/drivers/md/dm-mod.ko`.
    pub path: String,
    /// Canonical names of the modules it needs, in `.modinfo` order.
    pub depends: Vec<String>,
}

/// The modules of one kernel, with what depmod would compute from them.
#[derive(Clone, Debug)]
pub struct ModuleIndex {
    kver: String,
    /// By canonical name.
    modules: BTreeMap<String, Module>,
    /// Canonical names of modules built into the kernel (`modules.builtin`).
    builtin: BTreeSet<String>,
    /// depmod's rank per module: users rank before the modules they use.
    rank: BTreeMap<String, usize>,
}

/// `dm-mod` -> `dm_mod`, as the kernel and kmod compare module names.
pub fn canonical_name(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name a path implies: `kernel/drivers/md/dm-mod.ko.xz` -> `dm_mod`.
fn name_from_path(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    MODULE_SUFFIXES
        .iter()
        .find_map(|s| file.strip_suffix(s))
        .filter(|stem| !stem.is_empty())
        .map(canonical_name)
}

/// Reads every module under `/usr/lib/modules/<kver>/` of `m`, plus `modules.builtin` and
/// `modules.order` if present. Errors name the module that could not be read.
pub fn index(m: &Manifest, kver: &str) -> Result<ModuleIndex> {
    let dir = ImagePath::new(&format!("/usr/lib/modules/{kver}"))?;
    match m.get(&dir).map(|e| &e.kind) {
        Some(Kind::Dir) => {}
        _ => bail!("{dir} is not a directory in the image: is kernel {kver} installed?"),
    }
    let prefix = format!("{dir}/");
    let read_text = |name: &str| -> Result<Option<String>> {
        let path = dir.join(name)?;
        match m.get(&path).map(|e| &e.kind) {
            Some(Kind::File(d)) => Ok(Some(
                String::from_utf8(d.to_vec()).with_context(|| format!("{path}: not UTF-8"))?,
            )),
            _ => Ok(None),
        }
    };

    let mut modules: BTreeMap<String, Module> = BTreeMap::new();
    for (path, entry) in m.iter() {
        let Some(rel) = path.as_str().strip_prefix(&prefix) else {
            continue;
        };
        let Some(file_name) = name_from_path(rel) else {
            continue;
        };
        let data = match &entry.kind {
            Kind::File(d) => d.clone(),
            Kind::Hardlink(t) => match m.get(t).map(|e| &e.kind) {
                Some(Kind::File(d)) => d.clone(),
                _ => bail!("{path}: hard link to {t}, which is not a file"),
            },
            _ => continue,
        };
        let elf = decompress(rel, &data).with_context(|| format!("reading module {path}"))?;
        let info = modinfo(&elf).with_context(|| format!("reading module {path}"))?;
        let name = info
            .iter()
            .find(|(k, _)| k == "name")
            .map(|(_, v)| canonical_name(v))
            .unwrap_or(file_name);
        let depends = info
            .iter()
            .filter(|(k, _)| k == "depends")
            .flat_map(|(_, v)| v.split(','))
            .filter(|d| !d.is_empty())
            .map(canonical_name)
            .collect();
        let module = Module {
            name: name.clone(),
            path: rel.to_string(),
            depends,
        };
        if let Some(other) = modules.insert(name.clone(), module) {
            bail!(
                "kernel {kver}: two modules named {name}: {} and {rel}",
                other.path
            );
        }
    }

    let builtin = read_text("modules.builtin")?
        .unwrap_or_default()
        .lines()
        .filter_map(|l| name_from_path(l.trim()))
        .collect();
    let order: Vec<String> = read_text("modules.order")?
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let rank = depmod_rank(kver, &modules, &order)?;
    Ok(ModuleIndex {
        kver: kver.to_string(),
        modules,
        builtin,
        rank,
    })
}

/// depmod's ranking (`depmod_calculate_dependencies`): number the modules in `modules.order`
/// order (modules missing from it after, by path), then Kahn's algorithm with a stack, starting
/// from the modules nobody depends on; a module's rank is when it came off the stack. A
/// dependency naming no module in the tree (the image may keep only some of the kernel's
/// modules) gives no edge, as in depmod; [`ModuleIndex::load_order`] refuses to use such a
/// module.
fn depmod_rank(
    kver: &str,
    modules: &BTreeMap<String, Module>,
    order: &[String],
) -> Result<BTreeMap<String, usize>> {
    let position: BTreeMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, p)| (strip_compression(p), i))
        .collect();
    let mut mods: Vec<&Module> = modules.values().collect();
    mods.sort_by_key(|m| {
        (
            position
                .get(strip_compression(&m.path))
                .copied()
                .unwrap_or(usize::MAX),
            m.path.clone(),
        )
    });
    let idx: BTreeMap<&str, usize> = mods
        .iter()
        .enumerate()
        .map(|(i, m)| (m.name.as_str(), i))
        .collect();
    // Edges in `.modinfo` order, duplicates dropped as depmod's mod_add_dependency does.
    let mut deps: Vec<Vec<usize>> = Vec::with_capacity(mods.len());
    let mut users = vec![0usize; mods.len()];
    let mut missing = Vec::new();
    for m in &mods {
        let mut d: Vec<usize> = Vec::new();
        for name in &m.depends {
            let Some(&j) = idx.get(name.as_str()) else {
                missing.push(format!("{} needs {name}", m.name));
                continue;
            };
            if !d.contains(&j) {
                d.push(j);
                users[j] += 1;
            }
        }
        deps.push(d);
    }
    if !missing.is_empty() {
        tracing::warn!(
            "kernel {kver}: {} module dependencies are not in the image; those modules cannot \
             load: {}{}",
            missing.len(),
            missing[..missing.len().min(5)].join(", "),
            if missing.len() > 5 { ", ..." } else { "" }
        );
    }
    let mut stack: Vec<usize> = (0..mods.len()).filter(|&i| users[i] == 0).collect();
    let mut rank = BTreeMap::new();
    while let Some(i) = stack.pop() {
        rank.insert(mods[i].name.clone(), rank.len());
        for &j in &deps[i] {
            users[j] -= 1;
            if users[j] == 0 {
                stack.push(j);
            }
        }
    }
    if rank.len() < mods.len() {
        let cyclic: Vec<&str> = mods
            .iter()
            .filter(|m| !rank.contains_key(&m.name))
            .map(|m| m.name.as_str())
            .collect();
        bail!(
            "kernel {kver}: modules in a dependency cycle: {}",
            cyclic.join(", ")
        );
    }
    Ok(rank)
}

fn strip_compression(path: &str) -> &str {
    [".xz", ".zst", ".gz"]
        .iter()
        .find_map(|s| path.strip_suffix(s))
        .unwrap_or(path)
}

impl ModuleIndex {
    pub fn kernel_version(&self) -> &str {
        &self.kver
    }

    /// The module called `name` (`-` or `_`), if the kernel has it as a loadable module.
    pub fn get(&self, name: &str) -> Option<&Module> {
        self.modules.get(&canonical_name(name))
    }

    /// All modules, by canonical name.
    pub fn modules(&self) -> impl Iterator<Item = &Module> {
        self.modules.values()
    }

    /// True if `name` is built into the kernel image (listed in `modules.builtin`).
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&canonical_name(name))
    }

    /// The modules to load, dependencies first, for the `wanted` names (`-` or `_`): their
    /// whole dependency closure, each once, as paths relative to the modules directory. Names
    /// built into the kernel are skipped. An unknown name is an error that suggests similar
    /// names.
    pub fn load_order(&self, wanted: &[&str]) -> Result<Vec<String>> {
        let mut closure: BTreeSet<&str> = BTreeSet::new();
        let mut todo: Vec<&str> = Vec::new();
        for w in wanted {
            let name = canonical_name(w.trim());
            match self.modules.get(&name) {
                Some(m) => todo.push(&m.name),
                None if self.builtin.contains(&name) => {}
                None => bail!(
                    "kernel {} has no module {w:?}{}",
                    self.kver,
                    self.suggest(&name)
                ),
            }
        }
        while let Some(n) = todo.pop() {
            if closure.insert(n) {
                let m = &self.modules[n];
                for d in &m.depends {
                    if !self.modules.contains_key(d) {
                        bail!(
                            "module {} ({}) needs module {d}, which is not among the modules of \
                             kernel {} in the image: keep it too",
                            m.name,
                            m.path,
                            self.kver
                        );
                    }
                    todo.push(d);
                }
            }
        }
        let mut out: Vec<&str> = closure.into_iter().collect();
        // Highest rank first: every module ranks below its users, so dependencies come first.
        out.sort_by_key(|n| std::cmp::Reverse(self.rank[*n]));
        Ok(out
            .into_iter()
            .map(|n| self.modules[n].path.clone())
            .collect())
    }

    /// `modules.dep` as depmod writes it: one line per module, `path: dep dep ...` with the
    /// module's whole closure, users before what they use (modprobe loads right to left).
    /// Lines are sorted by path (depmod uses `modules.order` order; readers do not care).
    pub fn modules_dep(&self) -> String {
        let mut lines: Vec<(&str, String)> = Vec::with_capacity(self.modules.len());
        for m in self.modules.values() {
            let mut closure: BTreeSet<&str> = BTreeSet::new();
            // Dependencies missing from the tree are left out, as depmod does.
            let present = |n: &&str| self.modules.contains_key(*n);
            let mut todo: Vec<&str> = m
                .depends
                .iter()
                .map(String::as_str)
                .filter(present)
                .collect();
            while let Some(n) = todo.pop() {
                if closure.insert(n) {
                    let deps = self.modules[n].depends.iter().map(String::as_str);
                    todo.extend(deps.filter(present));
                }
            }
            let mut deps: Vec<&str> = closure.into_iter().collect();
            deps.sort_by_key(|n| self.rank[*n]);
            let mut line = format!("{}:", m.path);
            for d in deps {
                line.push(' ');
                line.push_str(&self.modules[d].path);
            }
            line.push('\n');
            lines.push((&m.path, line));
        }
        lines.sort();
        lines.into_iter().map(|(_, l)| l).collect()
    }

    /// ", did you mean ...?" for names close to `name`, or a hint where to look.
    fn suggest(&self, name: &str) -> String {
        let mut close: Vec<(usize, &str)> = self
            .modules
            .keys()
            .filter_map(|k| {
                let d = edit_distance(name, k);
                let related = k.contains(name) || name.contains(k.as_str());
                (d <= 2 || (related && name.len() >= 3)).then_some((d, k.as_str()))
            })
            .collect();
        close.sort();
        close.truncate(5);
        if close.is_empty() {
            format!(
                " (and it is not built in; {} modules known)",
                self.modules.len()
            )
        } else {
            let names: Vec<&str> = close.into_iter().map(|(_, n)| n).collect();
            format!("; did you mean {}?", names.join(", "))
        }
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The ELF bytes of a module file, decompressing `.ko.xz`, `.ko.zst` and `.ko.gz`.
fn decompress(path: &str, data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    if path.ends_with(".xz") {
        xz2::read::XzDecoder::new(data)
            .read_to_end(&mut out)
            .context("xz-decompressing")?;
    } else if path.ends_with(".zst") {
        out = zstd::decode_all(data).context("zstd-decompressing")?;
    } else if path.ends_with(".gz") {
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .context("gzip-decompressing")?;
    } else {
        out = data.to_vec();
    }
    Ok(out)
}

fn u16_at(d: &[u8], off: usize) -> Result<u16> {
    let b = d
        .get(off..off.saturating_add(2))
        .context("truncated ELF file")?;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(d: &[u8], off: usize) -> Result<u32> {
    let b = d
        .get(off..off.saturating_add(4))
        .context("truncated ELF file")?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(d: &[u8], off: usize) -> Result<u64> {
    let b = d
        .get(off..off.saturating_add(8))
        .context("truncated ELF file")?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Ok(u64::from_le_bytes(a))
}

/// One ELF64 section header, the fields we use.
struct Section {
    name: u32,
    kind: u32,
    offset: u64,
    size: u64,
    link: u32,
}

const SHT_NOBITS: u32 = 8;

fn section(d: &[u8], shoff: usize, entsize: usize, i: usize) -> Result<Section> {
    let o = i
        .checked_mul(entsize)
        .and_then(|x| x.checked_add(shoff))
        .context("ELF section header offset overflows")?;
    Ok(Section {
        name: u32_at(d, o)?,
        kind: u32_at(d, o + 4)?,
        offset: u64_at(d, o + 24)?,
        size: u64_at(d, o + 32)?,
        link: u32_at(d, o + 40)?,
    })
}

fn section_bytes<'a>(d: &'a [u8], s: &Section) -> Result<&'a [u8]> {
    if s.kind == SHT_NOBITS {
        return Ok(&[]);
    }
    let start = usize::try_from(s.offset)?;
    let end = start
        .checked_add(usize::try_from(s.size)?)
        .context("ELF section size overflows")?;
    d.get(start..end).with_context(|| {
        format!(
            "ELF section at {start}..{end} lies past the end of the file ({} bytes)",
            d.len()
        )
    })
}

/// The bytes of the section called `want` in a 64-bit little-endian ELF file, read through the
/// section headers (modules are relocatable files: they have no program headers).
pub fn find_section<'a>(d: &'a [u8], want: &str) -> Result<Option<&'a [u8]>> {
    ensure!(crate::root::elf::is_elf(d), "not an ELF file");
    ensure!(
        d.get(4) == Some(&2),
        "not a 64-bit ELF file (berth images are x86-64)"
    );
    ensure!(d.get(5) == Some(&1), "not a little-endian ELF file");
    let shoff = usize::try_from(u64_at(d, 0x28)?)?;
    let entsize = usize::from(u16_at(d, 0x3a)?);
    let mut shnum = usize::from(u16_at(d, 0x3c)?);
    let mut shstrndx = u16_at(d, 0x3e)?.into();
    ensure!(shoff != 0, "ELF file has no section headers");
    ensure!(
        entsize >= SHDR_SIZE,
        "bad ELF section header size {entsize}"
    );
    // Extended numbering (more than 0xff00 sections): the counts live in section 0.
    let first = section(d, shoff, entsize, 0)?;
    if shnum == 0 {
        shnum = usize::try_from(first.size)?;
    }
    if shstrndx == usize::from(SHN_XINDEX) {
        shstrndx = usize::try_from(first.link)?;
    }
    ensure!(
        shstrndx < shnum,
        "ELF section name table index {shstrndx} out of range ({shnum} sections)"
    );
    ensure!(
        shnum.saturating_mul(entsize) <= d.len().saturating_sub(shoff),
        "ELF section headers ({shnum} x {entsize} bytes at {shoff}) run past the end of the file"
    );
    let names = section_bytes(d, &section(d, shoff, entsize, shstrndx)?)
        .context("reading the section name table")?;
    for i in 0..shnum {
        let s = section(d, shoff, entsize, i)?;
        let name = names
            .get(usize::try_from(s.name)?..)
            .and_then(|n| n.split(|&b| b == 0).next())
            .with_context(|| format!("ELF section {i}: name offset {} out of range", s.name))?;
        if name == want.as_bytes() {
            return Ok(Some(
                section_bytes(d, &s).with_context(|| format!("reading section {want}"))?,
            ));
        }
    }
    Ok(None)
}

/// The `key=value` strings of a module's `.modinfo` section, in order.
pub fn modinfo(elf: &[u8]) -> Result<Vec<(String, String)>> {
    ensure!(crate::root::elf::is_elf(elf), "not an ELF file");
    ensure!(
        u16_at(elf, 0x10)? == ET_REL,
        "not a kernel module: ELF type is not ET_REL (relocatable)"
    );
    let info = find_section(elf, ".modinfo")?
        .context("not a kernel module: ELF file has no .modinfo section")?;
    Ok(info
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .filter_map(|s| {
            let s = String::from_utf8_lossy(s);
            let (k, v) = s.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect())
}

/// The modules the initramfs loads: the profile's `kernel.initrd-modules` plus berth's own,
/// whatever the profile lists: the ESP's (the initrd falls back to the other slot by marking
/// entries there) and the watchdog it arms.
pub fn initrd_wanted(profile: &Profile) -> Vec<&str> {
    let mut wanted: Vec<&str> = profile
        .kernel
        .initrd_modules
        .iter()
        .map(String::as_str)
        .collect();
    for m in crate::profile::INITRD_ESP_MODULES {
        if !wanted.contains(m) {
            wanted.push(m);
        }
    }
    if profile.boot.watchdog > 0 && !wanted.contains(&"softdog") {
        wanted.push("softdog");
    }
    wanted
}

/// `/usr/lib/modules/<kver>` in the image.
pub fn module_dir(kver: &str) -> Result<ImagePath> {
    ImagePath::new(&format!("/usr/lib/modules/{kver}"))
}

/// Adds `/etc/berth/modules` (what the main stage loads) and a depmod-style `modules.dep` to the
/// root, so berth-init and later `modprobe`-like loads find dependencies without depmod.
///
/// Unless the profile chooses modules itself (`kernel.modules`), the root keeps only the
/// modules a boot of this image can load: the closure of the initrd's and the main stage's
/// lists. Nothing else ever loads one: the root has no `modprobe` for the kernel's on-demand
/// requests, and berth-init loads exactly its two lists. That takes the cloud kernel's 1,121
/// modules (101 MiB) down to the few dozen the lists name. `kernel.modules = ["*"]` keeps all.
pub fn add_module_files(profile: &Profile, rootfs: &mut RootfsManifest) -> Result<()> {
    let kver = rootfs.kernel.version.clone();
    let sde = profile.image.source_date_epoch;
    let dir = module_dir(&kver)?;
    let mut idx = index(&rootfs.manifest, &kver)?;
    let wanted: Vec<&str> = profile
        .kernel
        .load_modules
        .iter()
        .map(String::as_str)
        .collect();
    let order = idx
        .load_order(&wanted)
        .with_context(|| format!("{}: key `kernel.load-modules`", profile.path.display()))?;
    if profile.kernel.modules.is_none() {
        let initrd = idx
            .load_order(&initrd_wanted(profile))
            .with_context(|| format!("{}: key `kernel.initrd-modules`", profile.path.display()))?;
        // And those berth-init loads by path when it looks for a machine config.
        let own: Vec<&str> = idx
            .modules()
            .filter(|m| {
                let p = strip_compression(&m.path);
                p == FW_CFG_MODULE || DRIVE_MODULES.contains(&p)
            })
            .map(|m| m.name.as_str())
            .collect();
        let own = idx
            .load_order(&own)
            .context("berth-init's own modules (fw_cfg, config drives)")?;
        let keep: BTreeSet<&str> = order
            .iter()
            .chain(&initrd)
            .chain(&own)
            .map(String::as_str)
            .collect();
        let prefix = format!("{dir}/");
        rootfs.manifest.prune_under(&dir, |p, _| {
            let rel = p.as_str().strip_prefix(&prefix).unwrap_or_default();
            name_from_path(rel).is_none() || keep.contains(rel)
        });
        rootfs.kernel.modules = keep.len();
        // Ranks and modules.dep as depmod would compute them over the modules kept.
        idx = index(&rootfs.manifest, &kver)?;
    }
    rootfs.manifest.insert(
        dir.join("modules.dep")?,
        Entry::file(idx.modules_dep(), 0o644, sde),
    )?;
    rootfs.manifest.insert(
        ImagePath::new(MODULE_LIST)?,
        Entry::file(lines(&order), 0o644, sde),
    )?;
    Ok(())
}

pub fn lines(items: &[String]) -> String {
    items.iter().map(|l| format!("{l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsimage::manifest::Entry;

    /// A minimal ELF64 relocatable file: header, a `.modinfo` section, the name table and three
    /// section headers (null, .modinfo, .shstrtab).
    fn fake_ko(modinfo: &str) -> Vec<u8> {
        let shstrtab = b"\0.modinfo\0.shstrtab\0";
        let mut d = vec![0u8; 64];
        d[..4].copy_from_slice(b"\x7fELF");
        d[4] = 2;
        d[5] = 1;
        d[6] = 1;
        d[0x10..0x12].copy_from_slice(&ET_REL.to_le_bytes());
        d[0x12..0x14].copy_from_slice(&62u16.to_le_bytes()); // x86-64
        let info_off = d.len();
        d.extend_from_slice(modinfo.replace(';', "\0").as_bytes());
        d.push(0);
        let str_off = d.len();
        d.extend_from_slice(shstrtab);
        d.resize(d.len().next_multiple_of(8), 0);
        let shoff = d.len();
        let mut sh = |name: u32, kind: u32, off: usize, size: usize| {
            let mut h = [0u8; 64];
            h[0..4].copy_from_slice(&name.to_le_bytes());
            h[4..8].copy_from_slice(&kind.to_le_bytes());
            h[24..32].copy_from_slice(&(off as u64).to_le_bytes());
            h[32..40].copy_from_slice(&(size as u64).to_le_bytes());
            d.extend_from_slice(&h);
        };
        sh(0, 0, 0, 0);
        sh(1, 1, info_off, str_off - info_off);
        sh(10, 3, str_off, shstrtab.len());
        d[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        d[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        d[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        d[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
        d
    }

    const KVER: &str = "6.1.0-test";

    fn tree(mods: &[(&str, &str)], builtin: &str) -> Manifest {
        let mut m = Manifest::new(0);
        let dir = format!("/usr/lib/modules/{KVER}");
        for (path, info) in mods {
            let mut data = fake_ko(info);
            if path.ends_with(".xz") {
                let mut z = Vec::new();
                xz2::read::XzEncoder::new(&data[..], 6)
                    .read_to_end(&mut z)
                    .unwrap();
                data = z;
            } else if path.ends_with(".zst") {
                data = zstd::encode_all(&data[..], 3).unwrap();
            }
            m.insert(
                ImagePath::new(&format!("{dir}/{path}")).unwrap(),
                Entry::file(data, 0o644, 0),
            )
            .unwrap();
        }
        m.insert(
            ImagePath::new(&format!("{dir}/modules.builtin")).unwrap(),
            Entry::file(builtin.as_bytes().to_vec(), 0o644, 0),
        )
        .unwrap();
        m
    }

    fn sample() -> ModuleIndex {
        let m = tree(
            &[
                (
                    "kernel/drivers/md/dm-verity.ko.xz",
                    "license=GPL;depends=dm-bufio,dm-mod;name=dm_verity",
                ),
                (
                    "kernel/drivers/md/dm-bufio.ko.zst",
                    "depends=;name=dm_bufio",
                ),
                ("kernel/drivers/md/dm-mod.ko", "depends=;name=dm_mod"),
                ("kernel/fs/fat/vfat.ko", "depends=fat;name=vfat"),
                ("kernel/fs/fat/fat.ko", "depends=;name=fat"),
                // No name= (older kernels): the file name gives it.
                ("kernel/fs/overlayfs/overlay.ko", "depends="),
            ],
            "kernel/fs/ext4/ext4.ko\nkernel/drivers/block/virtio_blk.ko\n",
        );
        index(&m, KVER).unwrap()
    }

    #[test]
    fn reads_modinfo_through_section_headers() {
        let info = modinfo(&fake_ko("a=1;depends=x,y-z;name=m")).unwrap();
        assert_eq!(
            info,
            [
                ("a".into(), "1".into()),
                ("depends".into(), "x,y-z".into()),
                ("name".into(), "m".into())
            ]
        );
    }

    #[test]
    fn closure_puts_dependencies_first_and_skips_builtins() {
        let idx = sample();
        let order = idx
            .load_order(&["dm-verity", "vfat", "ext4", "virtio_blk", "overlay"])
            .unwrap();
        let pos = |p: &str| order.iter().position(|x| x.ends_with(p)).unwrap();
        assert_eq!(order.len(), 6, "{order:?}");
        assert!(pos("dm-mod.ko") < pos("dm-verity.ko.xz"));
        assert!(pos("dm-bufio.ko.zst") < pos("dm-verity.ko.xz"));
        assert!(pos("fat/fat.ko") < pos("vfat.ko"));
        assert!(idx.is_builtin("ext4"));
        assert_eq!(
            idx.get("overlay").unwrap().path,
            "kernel/fs/overlayfs/overlay.ko"
        );
        assert_eq!(idx.load_order(&[]).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn unknown_module_suggests_similar_names() {
        let err = sample()
            .load_order(&["dm_veritty"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("dm_veritty"), "{err}");
        assert!(err.contains("did you mean dm_verity"), "{err}");
        let err = sample().load_order(&["zzzz"]).unwrap_err().to_string();
        assert!(err.contains("not built in"), "{err}");
    }

    #[test]
    fn modules_dep_lists_closures_users_first_sorted_by_path() {
        let dep = sample().modules_dep();
        let lines: Vec<&str> = dep.lines().collect();
        assert_eq!(
            lines,
            [
                "kernel/drivers/md/dm-bufio.ko.zst:",
                "kernel/drivers/md/dm-mod.ko:",
                // depmod's rank order, not .modinfo's: dm-verity pushes dm-bufio, then dm-mod
                // on its stack; dm-mod comes off first, so it ranks before dm-bufio.
                "kernel/drivers/md/dm-verity.ko.xz: kernel/drivers/md/dm-mod.ko \
                 kernel/drivers/md/dm-bufio.ko.zst",
                "kernel/fs/fat/fat.ko:",
                "kernel/fs/fat/vfat.ko: kernel/fs/fat/fat.ko",
                "kernel/fs/overlayfs/overlay.ko:",
            ]
        );
    }

    #[test]
    fn bad_modules_are_errors_naming_the_file() {
        let mut m = tree(&[], "");
        m.insert(
            ImagePath::new(&format!("/usr/lib/modules/{KVER}/kernel/bad.ko")).unwrap(),
            Entry::file(b"not elf".to_vec(), 0o644, 0),
        )
        .unwrap();
        let err = format!("{:#}", index(&m, KVER).unwrap_err());
        assert!(
            err.contains("kernel/bad.ko") && err.contains("not an ELF"),
            "{err}"
        );

        // A dependency the image left out: the index still builds (as depmod does), but
        // loading the module that needs it is refused.
        let m = tree(
            &[
                ("kernel/a.ko", "depends=nope;name=a"),
                ("kernel/b.ko", "depends=a;name=b"),
            ],
            "",
        );
        let idx = index(&m, KVER).unwrap();
        assert_eq!(
            idx.modules_dep(),
            "kernel/a.ko:\nkernel/b.ko: kernel/a.ko\n"
        );
        let err = idx.load_order(&["b"]).unwrap_err().to_string();
        assert!(err.contains("(kernel/a.ko) needs module nope"), "{err}");

        let mut ko = fake_ko("name=t");
        ko.truncate(100);
        assert!(modinfo(&ko).is_err());

        let err = index(&Manifest::new(0), KVER).unwrap_err().to_string();
        assert!(err.contains("is kernel 6.1.0-test installed"), "{err}");
    }

    #[test]
    fn dependency_cycles_are_reported() {
        let m = tree(
            &[
                ("kernel/a.ko", "depends=b;name=a"),
                ("kernel/b.ko", "depends=a;name=b"),
            ],
            "",
        );
        let err = index(&m, KVER).unwrap_err().to_string();
        assert!(err.contains("cycle: a, b"), "{err}");
    }
}
