//! Baked-in containers: OCI image archives berth builds from Debian packages, put in the root at
//! `/usr/share/berth/images/<name>.tar`, and the `/etc/berth/services` lines that run them (see
//! rootfs/init/README.md).

use anyhow::{bail, Context, Result};

use crate::fsimage::manifest::{Entry, ImagePath, Kind, Manifest};
use crate::profile::{Container, Profile};
use crate::root::oci::{self, OciImage};
use crate::root::rootfs::{usrmerge, PackageData, RootfsManifest};

pub use berth_contract::paths::IMAGES_DIR;
pub use berth_contract::paths::SERVICES;

/// The image's filesystem: every file of the container's packages (merged-/usr), plus the few
/// directories runc expects to mount over.
fn image_rootfs(c: &Container, packages: &[PackageData], sde: i64) -> Result<Manifest> {
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
    for name in &c.packages {
        let pkg = packages.iter().find(|p| &p.name == name).with_context(|| {
            format!(
                "[[containers]] {:?}: package {name} was not fetched (is the lock current?)",
                c.name
            )
        })?;
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
            m.insert(p, e)?;
        }
    }
    let prog = ImagePath::new(&c.command[0])?;
    if m.resolve(&prog).is_none() {
        bail!(
            "[[containers]] {:?}: command {} is not in the image made of {:?}",
            c.name,
            c.command[0],
            c.packages
        );
    }
    Ok(m)
}

/// Adds every profile container's image archive and the services file to the root.
pub fn add_containers(
    profile: &Profile,
    image_pkgs: &[PackageData],
    rootfs: &mut RootfsManifest,
) -> Result<()> {
    let sde = profile.image.source_date_epoch;
    let mut services = String::new();
    for c in &profile.containers {
        if c.command
            .iter()
            .any(|a| a.contains('\t') || a.contains('\n') || a.contains(' '))
        {
            bail!(
                "[[containers]] {:?}: command arguments may not contain spaces, tabs or newlines (berth-init splits on spaces)",
                c.name
            );
        }
        let img = OciImage {
            name: c.image.clone(),
            rootfs: image_rootfs(c, image_pkgs, sde)?,
            entrypoint: Vec::new(),
            cmd: c.command.clone(),
            env: vec![
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            ],
        };
        // Uncompressed layer: the archive sits in the root filesystem, and the disk formats are
        // compressed as a whole anyway, while gunzip at boot is Go code under TCG on every
        // first boot.
        let mut tar = Vec::new();
        let digest = oci::write_archive_with(&img, sde, oci::LayerCompression::None, &mut tar)
            .with_context(|| format!("building the OCI image of container {:?}", c.name))?;
        rootfs.manifest.insert(
            ImagePath::new(&format!("{IMAGES_DIR}/{}.tar", c.name))?,
            Entry::file(tar, 0o644, sde),
        )?;
        // The image manifest's digest, beside the archive: berth-init imports an archive only
        // when containerd does not hold that manifest yet (not on every boot).
        rootfs.manifest.insert(
            ImagePath::new(&format!("{IMAGES_DIR}/{}.tar.digest", c.name))?,
            Entry::file(format!("{digest}\n"), 0o644, sde),
        )?;
        services.push_str(&format!(
            "{}\t{}\t{}\t{}\n",
            c.name,
            if c.oneshot { "oneshot" } else { "daemon" },
            c.image,
            c.command.join(" ")
        ));
    }
    rootfs
        .manifest
        .insert(ImagePath::new(SERVICES)?, Entry::file(services, 0o644, sde))?;
    Ok(())
}
