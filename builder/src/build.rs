//! `berth build`: the recipe, top to bottom. Each stage is a plain function from one artifact to
//! the next (see DESIGN.md, "The build pipeline").

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufReader, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::apt::{self, Apt};
use crate::formats::{self, Format};
use crate::gpt::Slot;
use crate::lock::{self, Lock};
use crate::manifest::{Kind, Manifest};
use crate::packages::{self, sha256_file, Fetched};
use crate::printer::Printer;
use crate::profile::{self, Profile};
use crate::rootfs::{self, PackageData, RootfsManifest};
use crate::units::Bytes;
use crate::{boot, cmd, containers, deb, ext4, init, output, verity};
use std::sync::Arc;

/// Bumped when a change to berth changes the bytes it writes, so old cached results are not reused.
const CACHE_FORMAT: &str = "berth-build-v1";
/// Files of one build, in the order manifest.json lists them.
pub const ROOT_IMAGE: &str = "root.ext4";
pub const ROOT_VERITY: &str = "root.verity";
pub const MANIFEST: &str = "manifest.json";
pub const VMLINUZ: &str = "vmlinuz";
pub const INITRD: &str = "initrd";
pub const DISK: &str = "disk.raw";
/// Every file a build writes, in the order they are listed.
pub const ARTIFACTS: &[&str] = &[DISK, ROOT_IMAGE, ROOT_VERITY, VMLINUZ, INITRD, MANIFEST];

pub struct BuildOptions {
    pub profile: PathBuf,
    pub out: Option<PathBuf>,
    pub cache_dir: PathBuf,
    pub init: Option<PathBuf>,
    /// Build even if a cached result for the same inputs exists (packages are still cached).
    pub no_cache: bool,
    /// Formats to derive from disk.raw instead of the profile's `outputs.formats`.
    pub formats: Option<Vec<Format>>,
}

#[derive(Debug, Serialize)]
pub struct BuildResult {
    pub out_dir: PathBuf,
    pub cached: bool,
    pub artifacts: Vec<PathBuf>,
    pub roothash: String,
}

/// The default output directory: `out/<image name>/` in the current directory.
pub fn default_out(profile: &Profile) -> PathBuf {
    PathBuf::from("out").join(&profile.image.name)
}

/// Reads the lock next to the profile, or resolves and writes one if there is none.
pub fn lock_for(profile: &Profile, cache_dir: &Path, printer: &Printer) -> Result<Lock> {
    let path = lock::path_for(&profile.path);
    if path.is_file() {
        let l = Lock::read(&path)?;
        l.check_covers(profile, &path)?;
        return Ok(l);
    }
    let step = printer.step("resolve packages");
    let l = resolve_lock(profile, cache_dir)?;
    l.write(&path)?;
    step.done(&format!(
        "{} packages, wrote {}",
        l.packages.len(),
        path.display()
    ));
    Ok(l)
}

/// `apt-get update` in berth's apt, then resolve the profile's packages.
pub fn resolve_lock(profile: &Profile, cache_dir: &Path) -> Result<Lock> {
    let apt = make_apt(profile, cache_dir)?;
    apt.update()?;
    Lock::resolve(profile, &apt.index()?)
}

fn make_apt(profile: &Profile, cache_dir: &Path) -> Result<Apt> {
    let sources = apt::sources_for(&profile.debian, &apt::host_sources())?;
    Apt::new(cache_dir, &sources)
}

/// Hash of everything a build reads: profile (as resolved), lock, init, overlay and [[files]]
/// contents. Equal keys mean equal outputs, so a cached result can be reused as is.
fn input_key(profile: &Profile, lock: &Lock, init: &[u8], formats: &[Format]) -> Result<String> {
    let mut h = Sha256::new();
    h.update(format!("{formats:?}").as_bytes());
    h.update(CACHE_FORMAT.as_bytes());
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    // The resolved profile minus where it lives on this machine.
    let mut v = serde_json::to_value(profile)?;
    if let Some(o) = v.as_object_mut() {
        o.remove("path");
        o.remove("sources");
        o.remove("overlays");
        o.remove("files");
        o.remove("init");
    }
    h.update(v.to_string().as_bytes());
    h.update(toml::to_string(lock)?.as_bytes());
    h.update(Sha256::digest(init));
    for o in &profile.overlays {
        h.update(b"overlay\0");
        hash_tree(&mut h, &o.path)?;
    }
    for f in &profile.files {
        h.update(f.path.as_str().as_bytes());
        h.update(format!("{:?}{:?}{:?}", f.mode, f.uid, f.gid).as_bytes());
        match &f.what {
            profile::FileSource::Source(p) => {
                h.update(fs::read(p).with_context(|| format!("reading {}", p.display()))?)
            }
            other => h.update(format!("{other:?}").as_bytes()),
        }
    }
    Ok(hex::encode(h.finalize()))
}

fn hash_tree(h: &mut Sha256, dir: &Path) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        use std::os::unix::fs::PermissionsExt;
        let m = fs::symlink_metadata(e.path())?;
        h.update(e.file_name().as_encoded_bytes());
        h.update([0, u8::from(m.permissions().mode() & 0o111 != 0)]);
        if m.is_dir() {
            h.update(b"d");
            hash_tree(h, &e.path())?;
            h.update(b"..");
        } else if m.file_type().is_symlink() {
            h.update(fs::read_link(e.path())?.as_os_str().as_encoded_bytes());
        } else {
            h.update(fs::read(e.path())?);
        }
    }
    Ok(())
}

/// Reads the fetched packages' data (xz/zstd decompression dominates; two threads).
fn read_packages(fetched: &[Fetched]) -> Result<Vec<PackageData>> {
    let read = |f: &Fetched| -> Result<PackageData> {
        let entries = deb::read_data(&f.path)
            .with_context(|| format!("reading package {} {}", f.locked.name, f.locked.version))?;
        Ok(PackageData {
            name: f.locked.name.clone(),
            version: f.locked.version.clone(),
            entries,
        })
    };
    // Split by size into two halves so both cores decompress.
    let mut order: Vec<&Fetched> = fetched.iter().collect();
    order.sort_by_key(|f| std::cmp::Reverse(f.locked.size));
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (mut sa, mut sb) = (0u64, 0u64);
    for f in order {
        if sa <= sb {
            sa += f.locked.size;
            a.push(f);
        } else {
            sb += f.locked.size;
            b.push(f);
        }
    }
    let (ra, rb) = std::thread::scope(|s| {
        let hb = s.spawn(|| b.iter().map(|f| read(f)).collect::<Result<Vec<_>>>());
        let ra = a.iter().map(|f| read(f)).collect::<Result<Vec<_>>>();
        (ra, hb.join())
    });
    let mut all = ra?;
    all.extend(rb.map_err(|_| anyhow::anyhow!("package reader thread panicked"))??);
    all.sort_by(|x, y| x.name.cmp(&y.name));
    Ok(all)
}

/// Derives 16 bytes from a label and a digest (UUIDs, seeds): content-addressed, never random.
pub fn derive16(label: &str, digest: &[u8]) -> [u8; 16] {
    let h = Sha256::new()
        .chain_update(label.as_bytes())
        .chain_update(digest)
        .finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&h[..16]);
    // Mark as an RFC 4122 version-4-shaped UUID so tools print it normally.
    out[6] = (out[6] & 0x0f) | 0x40;
    out[8] = (out[8] & 0x3f) | 0x80;
    out
}

/// A digest of the manifest's structure and content, for deriving the filesystem UUID.
fn manifest_digest(m: &Manifest) -> [u8; 32] {
    let mut h = Sha256::new();
    for (p, e) in m.iter() {
        h.update(p.as_str().as_bytes());
        h.update(format!("\0{:o}:{}:{}:{}:", e.st_mode(), e.uid, e.gid, e.mtime).as_bytes());
        match &e.kind {
            Kind::File(d) => h.update(Sha256::digest(d.as_slice())),
            Kind::Symlink(t) => h.update(t.as_bytes()),
            Kind::Hardlink(t) => h.update(t.as_str().as_bytes()),
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                h.update(format!("{major}:{minor}").as_bytes())
            }
            _ => {}
        }
        for (k, v) in &e.xattrs {
            h.update(k.as_bytes());
            h.update(v);
        }
    }
    h.finalize().into()
}

/// Packages -> RootfsManifest: fetch (or take from the cache) what the lock names, read the
/// packages, assemble the root's manifest. Also returns the boot loader (systemd-boot) binary.
pub fn assemble_rootfs(
    profile: &Profile,
    lock: &Lock,
    cache_dir: &Path,
    init: &[u8],
    printer: &Printer,
) -> Result<(RootfsManifest, Arc<Vec<u8>>)> {
    let step = printer.step("fetch packages");
    let total: u64 = lock.packages.iter().map(|p| p.size).sum();
    let fetched = packages::fetch(
        cache_dir,
        &lock.packages,
        &mut || make_apt(profile, cache_dir),
        printer.bytes_bar(total, "packages"),
    )?;
    step.done(&format!("{} packages, {}", fetched.len(), Bytes(total)));

    let step = printer.step("read packages");
    let datas = read_packages(&fetched)?;
    step.done(&format!(
        "{} entries",
        datas.iter().map(|d| d.entries.len()).sum::<usize>()
    ));

    let step = printer.step("assemble rootfs");
    let mut by_role: BTreeMap<String, Vec<PackageData>> = BTreeMap::new();
    for d in datas {
        let role = lock
            .packages
            .iter()
            .find(|p| p.name == d.name)
            .map(|p| p.role.clone())
            .unwrap_or_default();
        by_role.entry(role).or_default().push(d);
    }
    let mut take = |r: &str| by_role.remove(r).unwrap_or_default();
    let (kernel_pkgs, runtime_pkgs, boot_pkgs, image_pkgs) =
        (take("kernel"), take("runtime"), take("boot"), take("image"));
    let kernel_pkg = kernel_pkgs
        .iter()
        .find(|d| {
            d.entries
                .iter()
                .any(|(p, _)| p.as_str().starts_with("/boot/vmlinuz-"))
        })
        .with_context(|| {
            format!(
                "no package of kernel {} ships a /boot/vmlinuz-*",
                profile.kernel.package
            )
        })?;
    let mut rootfs = rootfs::assemble(profile, kernel_pkg, &runtime_pkgs, init)?;
    boot::add_module_files(profile, &mut rootfs)?;
    containers::add_containers(profile, &image_pkgs, &mut rootfs)?;
    let boot_pkg = boot_pkgs
        .iter()
        .find(|d| d.name == profile.boot.package)
        .with_context(|| {
            format!(
                "boot package {} was not fetched (is the lock current?)",
                profile.boot.package
            )
        })?;
    let loader = boot::systemd_boot_efi(&boot_pkg.entries, &boot_pkg.name)?;
    step.done(&format!(
        "{} entries, {} of files, kernel {}",
        rootfs.manifest.len(),
        Bytes(rootfs.manifest.content_bytes()),
        rootfs.kernel.version
    ));

    Ok((rootfs, loader))
}

pub fn build(opts: &BuildOptions, printer: &Printer) -> Result<BuildResult> {
    output::install_signal_cleanup();
    let step = printer.step("load profile");
    let profile = profile::load(&opts.profile)?;
    let out_dir = opts.out.clone().unwrap_or_else(|| default_out(&profile));
    step.done(&format!("{} {}", profile.image.name, profile.image.version));

    let lock = lock_for(&profile, &opts.cache_dir, printer)?;

    let step = printer.step("berth-init");
    let init_path = opts.init.clone().or(profile.init.path.clone());
    let (init_src, init) = init::locate(init_path.as_deref(), &opts.cache_dir)?;
    step.done(&format!(
        "{} ({})",
        init_src.display(),
        Bytes(init.len() as u64)
    ));

    let formats = formats::build_order(opts.formats.as_deref().unwrap_or(&profile.outputs.formats));
    cmd::check_tools(&formats::required_tools(&formats))?;
    let key = input_key(&profile, &lock, &init, &formats)?;
    let cache = opts.cache_dir.join("builds").join(&key[..32]);
    if !opts.no_cache && cache.join(MANIFEST).is_file() {
        let step = printer.step("reuse cached build");
        let staging = output::Staging::new(&out_dir)?;
        let names = output_names(&formats);
        for f in &names {
            copy_sparse_file(&cache.join(f), &staging.file(f))
                .with_context(|| format!("copying cached {f}"))?;
        }
        let m: serde_json::Value = serde_json::from_slice(&fs::read(staging.file(MANIFEST))?)?;
        let out = staging.commit()?;
        step.done(&format!("inputs unchanged ({})", &key[..12]));
        return Ok(BuildResult {
            artifacts: names.iter().map(|f| out.join(f)).collect(),
            out_dir: out,
            cached: true,
            roothash: m["verity"]["roothash"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        });
    }

    let (rootfs, loader) = assemble_rootfs(&profile, &lock, &opts.cache_dir, &init, printer)?;

    // Fail before writing anything if the root cannot fit its slot.
    let need = ext4::required_size(&rootfs.manifest, false);
    let slot = profile.disk.root.get();
    if need + verity::hash_image_size(need) > slot {
        bail!(
            "{}: the root filesystem needs {} (+ {} of verity hashes) but `disk.root-size` is {}: raise disk.root-size, or keep fewer kernel modules (kernel.modules)",
            profile.path.display(),
            Bytes(need),
            Bytes(verity::hash_image_size(need)),
            profile.disk.root
        );
    }

    let staging = output::Staging::new(&out_dir)?;
    let step = printer.step("write root.ext4");
    let digest = manifest_digest(&rootfs.manifest);
    let opts_ext4 = ext4::Ext4Options {
        size: need,
        label: "berth-root".to_string(),
        uuid: derive16("ext4-uuid", &digest),
        hash_seed: derive16("ext4-hash-seed", &digest),
        journal: false,
        mtime: profile.image.source_date_epoch,
    };
    let root_path = staging.file(ROOT_IMAGE);
    {
        let f = fs::File::create(&root_path)
            .with_context(|| format!("creating {}", root_path.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let bar = printer.bytes_bar(rootfs.manifest.content_bytes(), "root.ext4");
        ext4::write(&rootfs.manifest, &opts_ext4, &mut w, bar)?;
        let f = w
            .into_inner()
            .map_err(|e| e.into_error())
            .context("flushing root.ext4")?;
        f.set_len(need)?;
        f.sync_all()?;
    }
    step.done(&format!("{}", Bytes(need)));

    let step = printer.step("dm-verity");
    let root_sha = sha256_file(&root_path)?;
    let salt = Sha256::new()
        .chain_update(b"berth-verity-salt")
        .chain_update(root_sha.as_bytes())
        .finalize();
    let vinfo = {
        let mut data = BufReader::with_capacity(1 << 20, fs::File::open(&root_path)?);
        let vpath = staging.file(ROOT_VERITY);
        let mut out = BufWriter::with_capacity(1 << 20, fs::File::create(&vpath)?);
        let bar = printer.bytes_bar(need, "dm-verity");
        let info = verity::format(
            &mut data,
            need,
            &salt,
            derive16("verity-uuid", &salt),
            &mut out,
            bar,
        )?;
        out.flush()?;
        out.get_mut().rewind()?;
        out.get_ref().sync_all()?;
        info
    };
    step.done(&format!("roothash {}", hex::encode(vinfo.root_hash)));

    let step = printer.step("initramfs");
    let (initrd, initrd_modules) = boot::initramfs(&profile, &rootfs, &init)?;
    let vmlinuz = match rootfs.manifest.get(&rootfs.kernel.vmlinuz).map(|e| &e.kind) {
        Some(Kind::File(d)) => d.clone(),
        _ => bail!("the root has no kernel at {}", rootfs.kernel.vmlinuz),
    };
    fs::write(staging.file(INITRD), &initrd)?;
    fs::write(staging.file(VMLINUZ), vmlinuz.as_slice())?;
    step.done(&format!(
        "{initrd_modules} modules, {}",
        Bytes(initrd.len() as u64)
    ));

    let step = printer.step("disk.raw");
    let ids = boot::PartUuids::derive(&profile.image.name, &vinfo.root_hash);
    let roothash = hex::encode(vinfo.root_hash);
    let args = boot::boot_args(
        &profile,
        Slot::A,
        ids.root_a,
        ids.verity_a,
        ids.state,
        &roothash,
    )?;
    let cmdline = args.to_string();
    let esp = boot::esp_files(&profile, loader, vmlinuz, Arc::new(initrd), &args);
    let layout = boot::plan_disk(&profile, &ids)?;
    boot::write_disk(
        &staging.file(DISK),
        &layout,
        &esp,
        &root_path,
        &staging.file(ROOT_VERITY),
        &profile,
    )?;
    step.done(&format!("{} (sparse)", layout.disk_size()));

    let ctx = formats::FormatCtx {
        out_dir: staging.path(),
        disk: &staging.file(DISK),
        image_name: &profile.image.name,
        version: &profile.image.version,
        mtime: profile.image.source_date_epoch,
        disk_size: layout.disk_size().get(),
        seed: vinfo.root_hash,
        qcow2_compressed: profile.outputs.qcow2_compressed,
    };
    for f in &formats {
        let step = printer.step(f.file_name());
        let p = formats::write(*f, &ctx, printer.bytes_bar(ctx.disk_size, f.file_name()))?;
        step.done(&format!("{}", Bytes(fs::metadata(&p)?.len())));
    }

    let step = printer.step("manifest.json");
    // disk.raw is most of the bytes: hash it on its own thread while the rest are hashed here.
    let sums = std::thread::scope(|sc| -> Result<Vec<(&str, u64, String)>> {
        let disk = staging.file(DISK);
        let disk_sum = sc.spawn(move || sha256_file(&disk));
        let mut sums = Vec::new();
        let derived: Vec<&str> = formats.iter().map(|f| f.file_name()).collect();
        for f in ARTIFACTS
            .iter()
            .chain(&derived)
            .filter(|f| **f != MANIFEST && **f != DISK)
        {
            let p = staging.file(f);
            sums.push((*f, fs::metadata(&p)?.len(), sha256_file(&p)?));
        }
        let d = disk_sum
            .join()
            .map_err(|_| anyhow::anyhow!("hashing thread panicked"))??;
        sums.insert(0, (DISK, fs::metadata(staging.file(DISK))?.len(), d));
        Ok(sums)
    })?;
    let mut manifest = manifest_json(&profile, &lock, &rootfs, &vinfo, &sums);
    manifest["boot"] = json!({
        "cmdline": cmdline,
        "entry": boot::entry_name(Slot::A, profile.boot.tries),
        "loader": profile.boot.package,
        "initrd-modules": initrd_modules,
    });
    manifest["disk"] = json!({
        "size": layout.disk_size().get(),
        "guid": layout.disk_guid().to_string(),
        "partitions": layout.partitions().iter().map(|p| json!({
            "number": p.index, "name": p.name, "type": p.type_guid.to_string(),
            "partuuid": p.guid.to_string(), "offset": p.offset().get(), "size": p.size().get(),
            "attributes": format!("{:#x}", p.attributes),
        })).collect::<Vec<_>>(),
    });
    manifest["formats"] = json!(formats.iter().map(|f| f.name()).collect::<Vec<_>>());
    fs::write(
        staging.file(MANIFEST),
        serde_json::to_vec_pretty(&manifest)?,
    )?;
    let names = output_names(&formats);
    formats::write_sha256sums(staging.path(), &names[..names.len() - 1])?;
    step.done("and SHA256SUMS");

    // Keep a copy for the next build with the same inputs (best effort: a full disk only costs speed).
    if let Err(e) = store_cache(&cache, staging.path(), &output_names(&formats)) {
        tracing::warn!(
            "could not cache the build result in {}: {e:#}",
            cache.display()
        );
    }
    let out = staging.commit()?;
    Ok(BuildResult {
        artifacts: output_names(&formats).iter().map(|f| out.join(f)).collect(),
        out_dir: out,
        cached: false,
        roothash: hex::encode(vinfo.root_hash),
    })
}

fn copy_sparse_file(from: &Path, to: &Path) -> Result<()> {
    crate::sparse::copy(from, to)
}

/// Every file a build with these formats writes: the fixed artifacts, the derived formats, and
/// SHA256SUMS last.
pub fn output_names(formats: &[Format]) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = ARTIFACTS.to_vec();
    v.extend(formats.iter().map(|f| f.file_name()));
    v.push(formats::SHA256SUMS);
    v
}

fn store_cache(cache: &Path, staged: &Path, names: &[&str]) -> Result<()> {
    let parent = cache.parent().context("cache path has no parent")?;
    fs::create_dir_all(parent)?;
    let tmp = tempfile::tempdir_in(parent)?;
    for f in names {
        copy_sparse_file(&staged.join(f), &tmp.path().join(f))?;
    }
    let tmp = tmp.keep();
    if fs::rename(&tmp, cache).is_err() {
        fs::remove_dir_all(&tmp)?; // another build stored the same result first
    }
    Ok(())
}

fn manifest_json(
    profile: &Profile,
    lock: &Lock,
    rootfs: &RootfsManifest,
    v: &verity::VerityInfo,
    artifacts: &[(&str, u64, String)],
) -> serde_json::Value {
    let files: Vec<serde_json::Value> = rootfs
        .manifest
        .iter()
        .map(|(p, e)| {
            let mut o = json!({
                "path": p.as_str(),
                "kind": e.kind.name(),
                "mode": format!("{:04o}", e.mode),
                "uid": e.uid,
                "gid": e.gid,
            });
            match &e.kind {
                Kind::File(d) => {
                    o["size"] = json!(d.len());
                    o["sha256"] = json!(hex::encode(Sha256::digest(d.as_slice())));
                }
                Kind::Symlink(t) => o["target"] = json!(t),
                Kind::Hardlink(t) => o["target"] = json!(t.as_str()),
                Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                    o["major"] = json!(major);
                    o["minor"] = json!(minor);
                }
                _ => {}
            }
            o
        })
        .collect();
    let arts: BTreeMap<&str, serde_json::Value> = artifacts
        .iter()
        .map(|(n, size, sha)| (*n, json!({"size": size, "sha256": sha})))
        .collect();
    json!({
        "berth": env!("CARGO_PKG_VERSION"),
        "image": {
            "name": profile.image.name,
            "version": profile.image.version,
            "source-date-epoch": profile.image.source_date_epoch,
            "hostname": profile.image.hostname,
        },
        "debian": { "suite": lock.suite, "architecture": lock.architecture },
        "kernel": {
            "package": profile.kernel.package,
            "version": rootfs.kernel.version,
            "vmlinuz": rootfs.kernel.vmlinuz.as_str(),
            "cmdline": profile.kernel.cmdline,
            "modules": rootfs.kernel.modules,
        },
        "packages": lock.packages.iter().map(|p| json!({
            "name": p.name, "version": p.version, "architecture": p.architecture,
            "role": p.role, "sha256": p.sha256,
        })).collect::<Vec<_>>(),
        "verity": {
            "roothash": hex::encode(v.root_hash),
            "salt": hex::encode(&v.salt),
            "uuid": uuid_string(&v.uuid),
            "hash-algorithm": "sha256",
            "data-block-size": verity::BLOCK_SIZE,
            "hash-block-size": verity::BLOCK_SIZE,
            "data-blocks": v.data_blocks,
        },
        "sizes": {
            "root-slot": profile.disk.root.get(),
            "root-filesystem": v.data_blocks * verity::BLOCK_SIZE,
            "root-verity": v.hash_size,
            "content": rootfs.manifest.content_bytes(),
            "esp": profile.disk.esp.get(),
            "state": profile.disk.state.get(),
        },
        "artifacts": arts,
        "rootfs": { "entries": rootfs.manifest.len(), "files": files },
    })
}

pub fn uuid_string(u: &[u8; 16]) -> String {
    let h = hex::encode(u);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}
