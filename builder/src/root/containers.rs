//! Baked-in containers: OCI image archives put in the root at
//! `/usr/share/berth/images/<name>.tar` (built from Debian packages, or the user's own OCI
//! archive checked and re-packed), and `/etc/berth/services.json`, the services that run them
//! (`berth_contract::service`; rootfs/init/README.md).

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};
use berth_contract::service::{self, Service};

use crate::fetch::PackageData;
use crate::fsimage::manifest::{Entry, ImagePath, Kind, Manifest};
use crate::profile::{ImageSource, Profile, ADMIN_SERVICE};
use crate::root::oci::{self, ImageBlobs, OciImage};
use crate::root::rootfs::{usrmerge, RootfsManifest};
use crate::root::{admin, oci_import};

pub use berth_contract::paths::IMAGES_DIR;
pub use berth_contract::paths::SERVICES;

/// The PATH containers built here get.
pub const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `names` and, recursively, what they depend on, among `all` (by name or by `Provides`).
pub fn closure<'a>(
    what: &str,
    names: &[String],
    all: &'a [&'a PackageData],
) -> Result<Vec<&'a PackageData>> {
    let mut out: Vec<&PackageData> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut todo: Vec<(String, String)> = names
        .iter()
        .rev()
        .map(|n| (n.clone(), what.to_string()))
        .collect();
    while let Some((name, why)) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let pkg = all
            .iter()
            .find(|p| p.name == name)
            .or_else(|| all.iter().find(|p| p.provides.contains(&name)))
            .with_context(|| {
                format!("{what}: package {name} (needed by {why}) was not fetched: is the lock current? (`berth lock`)")
            })?;
        if out.iter().any(|p| p.name == pkg.name) {
            continue;
        }
        for d in pkg.depends.iter().rev() {
            if crate::fetch::apt::install_only(d) {
                continue;
            }
            todo.push((d.clone(), format!("{} {}", pkg.name, pkg.version)));
        }
        out.push(pkg);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// An image's filesystem: every file of the packages and their dependencies (merged-/usr,
/// without documentation), plus the directories runc mounts over.
pub fn image_rootfs(
    what: &str,
    names: &[String],
    all: &[&PackageData],
    sde: i64,
) -> Result<Manifest> {
    let mut m = Manifest::new(sde);
    for top in ["bin", "sbin", "lib", "lib64"] {
        m.insert(
            ImagePath::new(&format!("/usr/{top}"))?,
            Entry::dir(0o755, sde),
        )?;
        m.insert(
            ImagePath::new(top)?,
            Entry::symlink(format!("usr/{top}"), sde),
        )?;
    }
    for d in ["/dev", "/proc", "/sys", "/etc", "/tmp", "/run"] {
        m.insert(
            ImagePath::new(d)?,
            Entry::dir(if d == "/tmp" { 0o1777 } else { 0o755 }, sde),
        )?;
    }
    for pkg in closure(what, names, all)? {
        for (p, e) in &pkg.entries {
            let p = usrmerge(p);
            if p.is_root() || (e.kind == Kind::Dir && m.contains(&p)) {
                continue;
            }
            // Documentation is not needed to run anything.
            if p.as_str().starts_with("/usr/share/doc") || p.as_str().starts_with("/usr/share/man")
            {
                continue;
            }
            let mut e = e.clone();
            e.mtime = sde;
            if let Kind::Hardlink(t) = &e.kind {
                e.kind = Kind::Hardlink(usrmerge(t));
            }
            m.insert(p, e)
                .with_context(|| format!("{what}: placing a file of package {}", pkg.name))?;
        }
    }
    Ok(m)
}

/// Adds every container's image archive, the admin container if the profile has one, and the
/// services file to the root.
pub fn add_containers(
    profile: &Profile,
    packages: &[&PackageData],
    init: &[u8],
    rootfs: &mut RootfsManifest,
) -> Result<()> {
    let sde = profile.image.source_date_epoch;
    let mut services: Vec<Service> = Vec::new();
    for c in &profile.containers {
        let what = format!("[[containers]] {:?}", c.name);
        let blobs = match &c.source {
            ImageSource::Packages(names) => {
                let rootfs = image_rootfs(&what, names, packages, sde)?;
                let prog = ImagePath::new(&c.service.command[0])
                    .with_context(|| format!("{what}: command {:?}", c.service.command[0]))?;
                if rootfs.resolve(&prog).is_none() {
                    bail!(
                        "{what}: command {} is not in the image made of {names:?} (and their dependencies)",
                        c.service.command[0]
                    );
                }
                built(
                    &what,
                    OciImage {
                        name: c.image.clone(),
                        rootfs,
                        entrypoint: Vec::new(),
                        cmd: c.service.command.clone(),
                        env: vec![PATH.to_string()],
                    },
                    sde,
                )?
            }
            ImageSource::Archive(path) => oci_import::import(path, &c.image)
                .with_context(|| format!("{what}: archive {}", path.display()))?,
        };
        bake(rootfs, &c.name, &blobs, sde)?;
        let mut s = c.service.clone();
        s.image = blobs.reference.clone();
        services.push(s);
    }
    if let Some(a) = &profile.admin {
        let img = admin::image(profile, a, packages, init, &rootfs.manifest)?;
        let blobs = built("the admin container", img, sde)?;
        bake(rootfs, ADMIN_SERVICE, &blobs, sde)?;
        services.push(admin::service(a, &blobs.reference));
        let keys: String = a.authorized_keys.iter().map(|k| format!("{k}\n")).collect();
        rootfs.manifest.insert(
            ImagePath::new(berth_contract::paths::IMAGE_AUTHORIZED_KEYS)?,
            Entry::file(keys, 0o644, sde),
        )?;
    }
    service::check(&services).context("the profile's services")?;
    rootfs.manifest.insert(
        ImagePath::new(SERVICES)?,
        Entry::file(service::file_text(&services), 0o644, sde),
    )?;
    Ok(())
}

/// Uncompressed layer: the archive sits in the root filesystem and the disk formats are
/// compressed as a whole anyway, while gunzip at boot is Go code under TCG on every first boot.
fn built(what: &str, img: OciImage, sde: i64) -> Result<ImageBlobs> {
    oci::image_blobs(&img, sde, oci::LayerCompression::None)
        .with_context(|| format!("building the OCI image of {what}"))
}

/// The archive at `IMAGES_DIR/<name>.tar`, and beside it its manifest digest and name:
/// berth-init imports an archive only when containerd does not hold that manifest under that
/// name yet.
fn bake(rootfs: &mut RootfsManifest, name: &str, blobs: &ImageBlobs, sde: i64) -> Result<()> {
    let mut tar = Vec::new();
    oci::write_blobs(blobs, sde, &mut tar)?;
    rootfs.manifest.insert(
        ImagePath::new(&format!("{IMAGES_DIR}/{name}.tar"))?,
        Entry::file(tar, 0o644, sde),
    )?;
    rootfs.manifest.insert(
        ImagePath::new(&format!("{IMAGES_DIR}/{name}.tar.digest"))?,
        Entry::file(
            format!("{} {}\n", blobs.manifest_digest, blobs.reference),
            0o644,
            sde,
        ),
    )?;
    Ok(())
}
