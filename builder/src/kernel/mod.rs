//! Kernels built from source (`[kernel] source` + `config`): the Debian kernel source package,
//! configured from `allnoconfig` plus the profile's `kernel-config/` fragments, every requested
//! option checked in the final `.config`, compiled without root into `bzImage`, and cached by
//! the hash of everything that goes in (the source package, the merged fragments, the
//! toolchain's versions, the build timestamp, this recipe).
//!
//! Everything is built in (`# CONFIG_MODULES is not set`), so the image gets no modules tree:
//! only `vmlinuz`, the kernel's `modules.builtin` (so the module lists of the profile resolve to
//! "built in" and the initramfs loads nothing) and its `config`.
//!
//! Reproducible: the build's identity strings (`KBUILD_BUILD_TIMESTAMP/USER/HOST/VERSION`) are
//! fixed, the tree is built in place so paths are relative, and no module signing key (random
//! per build) exists. `vm-tests` builds the same kernel in two directories and compares bytes.

pub mod config;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::fetch::lock::LockedPackage;
use crate::fetch::{Fetched, PackageData, Packages};
use crate::fsimage::manifest::{Entry, ImagePath};
use crate::profile::{KernelSource, Profile};
use crate::util::cmd::{check_tools, Cmd, Tool};
use crate::util::printer::Printer;

/// Bumped when the way kernels are built changes, so cached kernels of the old way are not
/// reused.
const RECIPE: &str = "berth-kernel-1";
/// Cached kernels kept (most recently used); each is ~10 MiB.
const KEEP: usize = 4;
/// How often a long compile says how far it got, when no progress bar is drawn.
const PROGRESS_EVERY: Duration = Duration::from_secs(60);

/// Files of a cached kernel.
const FILES: &[&str] = &["bzImage", "config", "modules.builtin", "release"];

const TOOLS: &[Tool] = &[
    Tool {
        name: "make",
        reason: "build the kernel",
        debian_package: "make",
    },
    Tool {
        name: "gcc",
        reason: "compile the kernel",
        debian_package: "gcc",
    },
    Tool {
        name: "ld",
        reason: "link the kernel",
        debian_package: "binutils",
    },
    Tool {
        name: "flex",
        reason: "build the kernel's Kconfig tools",
        debian_package: "flex",
    },
    Tool {
        name: "bison",
        reason: "build the kernel's Kconfig tools",
        debian_package: "bison",
    },
    Tool {
        name: "bc",
        reason: "generate the kernel's timeconst.h",
        debian_package: "bc",
    },
    Tool {
        name: "perl",
        reason: "run the kernel's build scripts",
        debian_package: "perl",
    },
    Tool {
        name: "tar",
        reason: "unpack the kernel source",
        debian_package: "tar",
    },
    Tool {
        name: "xz",
        reason: "unpack the kernel source",
        debian_package: "xz-utils",
    },
    Tool {
        name: "zstd",
        reason: "compress the kernel image (CONFIG_KERNEL_ZSTD)",
        debian_package: "zstd",
    },
];
/// objtool (built and run for every x86-64 kernel with ORC unwinding or retpolines) links
/// against libelf.
const LIBELF_HEADER: &str = "/usr/include/gelf.h";

/// The kernel stage: when the profile builds its kernel from source, replaces the packaged
/// kernel of `packages` with the one built (or taken from the cache).
pub fn stage(
    profile: &Profile,
    packages: &mut Packages,
    cache_dir: &Path,
    printer: &Printer,
) -> Result<()> {
    let Some(src) = &profile.kernel.source else {
        return Ok(());
    };
    let Some(locked) = &packages.kernel_source else {
        bail!(
            "the lock has no package with role kernel-source for kernel.source {:?}: run `berth lock {}`",
            src.package,
            profile.path.display()
        );
    };
    let fetch = || crate::fetch::fetch_one(profile, locked, cache_dir, printer);
    let built = build(profile, src, locked, &fetch, cache_dir, printer)?;
    packages.kernel = vec![built.package_data(profile, &locked.name)?];
    Ok(())
}

/// A built kernel.
pub struct Built {
    /// `make kernelrelease`: `6.1.172-berth`.
    pub release: String,
    pub bzimage: Vec<u8>,
    pub config: String,
    /// `modules.builtin`: the drivers built in, as module paths (`kernel/fs/ext4/ext4.ko`).
    pub builtin: String,
    /// Where it is cached.
    pub dir: PathBuf,
    pub cached: bool,
}

impl Built {
    /// The kernel as the rest of the pipeline takes a kernel package's data.
    fn package_data(&self, profile: &Profile, package: &str) -> Result<PackageData> {
        let sde = profile.image.source_date_epoch;
        let moddir = format!("/usr/lib/modules/{}", self.release);
        Ok(PackageData {
            name: package.to_string(),
            version: self.release.clone(),
            entries: vec![
                (
                    ImagePath::new(&format!("/boot/vmlinuz-{}", self.release))?,
                    Entry::file(self.bzimage.clone(), 0o644, sde),
                ),
                (ImagePath::new(&moddir)?, Entry::dir(0o755, sde)),
                (
                    ImagePath::new(&format!("{moddir}/modules.builtin"))?,
                    Entry::file(self.builtin.clone().into_bytes(), 0o644, sde),
                ),
                (
                    ImagePath::new(&format!("{moddir}/config"))?,
                    Entry::file(self.config.clone().into_bytes(), 0o644, sde),
                ),
            ],
            depends: Vec::new(),
            provides: Vec::new(),
        })
    }
}

/// What identifies a kernel build: any change here is a different kernel.
fn cache_key(
    src: &KernelSource,
    deb: &LockedPackage,
    merged: &str,
    toolchain: &str,
    sde: i64,
) -> String {
    let mut h = Sha256::new();
    for (k, v) in [
        ("recipe", RECIPE),
        ("package", deb.name.as_str()),
        ("version", deb.version.as_str()),
        ("sha256", deb.sha256.as_str()),
        ("config", merged),
        ("toolchain", toolchain),
        ("timestamp", &sde.to_string()),
        (
            "fragments",
            &src.config
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ),
    ] {
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_le_bytes());
        h.update(v.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The versions of the compiler, linker and make: a new compiler makes other bytes.
fn toolchain() -> Result<String> {
    let mut s = String::new();
    for (tool, arg) in [
        ("gcc", "--version"),
        ("ld", "--version"),
        ("make", "--version"),
    ] {
        let out = Cmd::new(tool).arg(arg).stdout()?;
        s.push_str(out.lines().next().unwrap_or_default());
        s.push('\n');
    }
    Ok(s)
}

/// Builds (or reuses) the kernel `src` describes, from the source package `locked`, which
/// `fetch` gets only when the kernel is not in the cache.
pub fn build(
    profile: &Profile,
    src: &KernelSource,
    locked: &LockedPackage,
    fetch: &dyn Fn() -> Result<Fetched>,
    cache_dir: &Path,
    printer: &Printer,
) -> Result<Built> {
    let merged = config::merge(&src.config)
        .with_context(|| format!("{}: key `kernel.config`", profile.path.display()))?;
    for (sym, old, new) in &merged.overrides {
        printer.info(&format!(
            "  kernel: CONFIG_{sym}={} ({}) overrides {} ({})",
            new.value, new.origin, old.value, old.origin
        ));
    }
    check_tools(TOOLS)?;
    if !Path::new(LIBELF_HEADER).is_file() {
        bail!(
            "missing host files:\n  {LIBELF_HEADER} (needed to build the kernel's objtool): install with `apt-get install libelf-dev`"
        );
    }
    let sde = profile.image.source_date_epoch;
    let key = cache_key(src, locked, &merged.text(), &toolchain()?, sde);
    let kernels = cache_dir.join("kernels");
    let dir = kernels.join(&key[..32]);
    if let Some(b) = reuse(&dir)? {
        printer.info(&format!(
            "  kernel {} from the cache ({})",
            b.release,
            dir.display()
        ));
        mark_used(&dir);
        return Ok(b);
    }
    fs::create_dir_all(&kernels).with_context(|| format!("creating {}", kernels.display()))?;
    remove_stale(&kernels);
    // The source tree and the objects: ~2 GiB, gone when this returns (or at the next build,
    // if this process is killed).
    let work = tempfile::Builder::new()
        .prefix(&format!(".tmp-{}-", std::process::id()))
        .tempdir_in(&kernels)
        .with_context(|| format!("creating a build directory in {}", kernels.display()))?;
    // Ctrl-C mid-compile removes it too, not only the next build.
    let _scratch = crate::util::output::scratch(work.path());
    let deb = fetch()?;
    let tree = unpack(
        &deb.path,
        &format!("{} {}", locked.name, locked.version),
        work.path(),
        printer,
    )?;
    let dotconfig = configure(&tree, work.path(), &merged, printer)?;
    let release = compile(&tree, sde, printer)?;
    let built = Built {
        bzimage: fs::read(tree.join("arch/x86/boot/bzImage"))
            .context("reading the built bzImage")?,
        config: dotconfig,
        builtin: fs::read_to_string(tree.join("modules.builtin")).unwrap_or_default(),
        release,
        dir: dir.clone(),
        cached: false,
    };
    store(&kernels, &dir, &built)?;
    drop(work);
    evict(&kernels, &dir);
    Ok(built)
}

/// The environment every make of the tree runs in: fixed identity strings, no outer make's
/// jobserver, a plain locale.
fn make(tree: &Path, sde: i64) -> Cmd {
    Cmd::new("make")
        .cwd(tree)
        .arg("ARCH=x86_64")
        .env("KBUILD_BUILD_TIMESTAMP", crate::units::utc_string(sde))
        .env("KBUILD_BUILD_USER", "berth")
        .env("KBUILD_BUILD_HOST", "berth")
        .env("KBUILD_BUILD_VERSION", "1")
        .env("LOCALVERSION", "")
        .env("LC_ALL", "C")
        .env("TZ", "UTC")
        .env("MAKEFLAGS", "")
        .env("MFLAGS", "")
        .env("MAKELEVEL", "")
}

/// Unpacks the kernel tree of the source package at `deb` (`label` names it in messages) into
/// `work`; returns the tree's directory.
pub fn unpack(deb: &Path, label: &str, work: &Path, printer: &Printer) -> Result<PathBuf> {
    let step = printer.step("kernel: unpack source");
    let d =
        crate::fetch::deb::Deb::read(deb).with_context(|| format!("reading package {label}"))?;
    let tarball = d
        .data
        .iter()
        .find(|(p, _)| {
            p.as_str().starts_with("/usr/src/linux-source-") && p.as_str().ends_with(".tar.xz")
        })
        .and_then(|(p, e)| match &e.kind {
            crate::fsimage::manifest::Kind::File(data) => Some((p.clone(), data.clone())),
            _ => None,
        });
    let Some((path, data)) = tarball else {
        bail!(
            "package {label} ships no /usr/src/linux-source-*.tar.xz: kernel.source must name a Debian kernel source package such as linux-source-6.1"
        );
    };
    Cmd::new("tar")
        .args(["-xJf", "-", "--no-same-owner", "-C"])
        .arg(work)
        .stream(Some(&data), &mut |_| {})
        .with_context(|| format!("unpacking {path} of {label}"))?;
    let trees: Vec<PathBuf> = fs::read_dir(work)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("Makefile").is_file() && p.join("Kconfig").is_file())
        .collect();
    let [tree] = trees.as_slice() else {
        bail!(
            "{path} of {label} does not unpack to one kernel tree (a directory with Makefile and Kconfig)"
        );
    };
    step.done(label);
    Ok(tree.clone())
}

/// `allnoconfig` with the merged fragments forced, then the check. Returns the final .config.
pub fn configure(
    tree: &Path,
    work: &Path,
    merged: &config::Merged,
    printer: &Printer,
) -> Result<String> {
    let step = printer.step("kernel: configure");
    let frag = work.join("berth.config");
    fs::write(&frag, merged.text()).with_context(|| format!("writing {}", frag.display()))?;
    make(tree, 0)
        .arg("allnoconfig")
        .arg(format!("KCONFIG_ALLCONFIG={}", frag.display()))
        .env("KCONFIG_NOTIMESTAMP", "1")
        .stream(None, &mut |_| {})
        .context("configuring the kernel (make allnoconfig)")?;
    let text = fs::read_to_string(tree.join(".config")).context("reading the kernel's .config")?;
    let dot = config::parse_dotconfig(&text)?;
    let misses = config::check(merged, &dot);
    if !misses.is_empty() {
        let syms: Vec<&str> = misses.iter().map(|m| m.symbol.as_str()).collect();
        let defs = config::definitions(tree, &syms)?;
        let lines: Vec<String> = misses
            .iter()
            .map(|m| format!("  {}", config::explain(m, &defs, &dot)))
            .collect();
        bail!(
            "{} of the {} kernel options the fragments ask for did not stick (Kconfig drops a value whose dependencies are not met):\n{}",
            misses.len(),
            merged.len(),
            lines.join("\n")
        );
    }
    step.done(&format!("{} options checked", merged.len()));
    Ok(text)
}

/// `make bzImage`, with a line of progress now and then. Returns `make kernelrelease`.
fn compile(tree: &Path, sde: i64, printer: &Printer) -> Result<String> {
    let step = printer.step("kernel: compile");
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let bar = printer.counter("kernel: compiling");
    let start = Instant::now();
    let mut last = start;
    let mut steps = 0u64;
    make(tree, sde)
        .arg(format!("-j{jobs}"))
        .arg("bzImage")
        .stream(None, &mut |line| {
            // Kbuild's quiet lines: "  CC      init/main.o".
            if line.starts_with("  ") && line[2..].starts_with(|c: char| c.is_ascii_uppercase()) {
                steps += 1;
                if let Some(b) = &bar {
                    b.set_position(steps);
                }
                if bar.is_none() && last.elapsed() >= PROGRESS_EVERY {
                    last = Instant::now();
                    printer.info(&format!(
                        "  kernel: {steps} build steps in {}s",
                        start.elapsed().as_secs()
                    ));
                }
            }
        })
        .context("compiling the kernel (make bzImage)")?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let release = make(tree, sde)
        .args(["-s", "kernelrelease"])
        .stdout()?
        .trim()
        .to_string();
    step.done(&format!("{release}, {steps} build steps, {jobs} jobs"));
    Ok(release)
}

/// A cached kernel, if `dir` holds one whose files match their recorded sums (a damaged
/// entry is removed, with a warning, and rebuilt).
fn reuse(dir: &Path) -> Result<Option<Built>> {
    let Ok(sums) = fs::read_to_string(dir.join("SHA256SUMS")) else {
        return Ok(None);
    };
    let check = || -> Result<Built> {
        let mut files = std::collections::BTreeMap::new();
        for name in FILES {
            let data = fs::read(dir.join(name)).with_context(|| format!("reading {name}"))?;
            let want = sums
                .lines()
                .find_map(|l| l.strip_suffix(&format!("  {name}")))
                .with_context(|| format!("{name} is not in SHA256SUMS"))?;
            let got = hex::encode(Sha256::digest(&data));
            if got != want {
                bail!("{name}: sha256 {got}, SHA256SUMS says {want}");
            }
            files.insert(*name, data);
        }
        let text = |n: &str| {
            String::from_utf8(files[n].clone()).with_context(|| format!("{n} is not UTF-8"))
        };
        Ok(Built {
            release: text("release")?.trim().to_string(),
            bzimage: files["bzImage"].clone(),
            config: text("config")?,
            builtin: text("modules.builtin")?,
            dir: dir.to_path_buf(),
            cached: true,
        })
    };
    match check() {
        Ok(b) => Ok(Some(b)),
        Err(e) => {
            tracing::warn!(
                "the cached kernel in {} is damaged ({e:#}): removing it and building again",
                dir.display()
            );
            fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
            Ok(None)
        }
    }
}

/// Writes the kernel into the cache: a temporary directory renamed into place, so a reader
/// sees a whole entry or none.
fn store(kernels: &Path, dir: &Path, b: &Built) -> Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".tmp-{}-store-", std::process::id()))
        .tempdir_in(kernels)?;
    let release = format!("{}\n", b.release);
    let contents: [(&str, &[u8]); 4] = [
        ("bzImage", &b.bzimage),
        ("config", b.config.as_bytes()),
        ("modules.builtin", b.builtin.as_bytes()),
        ("release", release.as_bytes()),
    ];
    let mut sums = String::new();
    for (name, data) in contents {
        fs::write(tmp.path().join(name), data)?;
        sums.push_str(&format!("{}  {name}\n", hex::encode(Sha256::digest(data))));
    }
    fs::write(tmp.path().join("SHA256SUMS"), sums)?;
    let _ = fs::remove_dir_all(dir);
    fs::rename(tmp.keep(), dir)
        .with_context(|| format!("storing the kernel in {}", dir.display()))?;
    mark_used(dir);
    Ok(())
}

fn mark_used(dir: &Path) {
    let _ = fs::write(dir.join(".used"), b"");
}

/// Removes build directories of kernel builds whose process is gone (killed mid-build).
fn remove_stale(kernels: &Path) {
    let Ok(rd) = fs::read_dir(kernels) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(".tmp-") else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            tracing::info!(
                "removing {} (left by a kernel build that died)",
                e.path().display()
            );
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// Keeps the [`KEEP`] most recently used kernels.
fn evict(kernels: &Path, current: &Path) {
    let Ok(rd) = fs::read_dir(kernels) else {
        return;
    };
    let mut entries: Vec<(std::time::SystemTime, PathBuf)> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p != current && p.join("SHA256SUMS").is_file())
        .map(|p| {
            let t = fs::metadata(p.join(".used"))
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (t, p)
        })
        .collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    for (_, p) in entries.into_iter().skip(KEEP - 1) {
        tracing::info!(
            "removing the least recently used cached kernel {}",
            p.display()
        );
        let _ = fs::remove_dir_all(p);
    }
}
