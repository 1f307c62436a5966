//! The last stage of a build: `manifest.json` as a typed document ([`BuildManifest`], which
//! `berth run`, `berth publish` and the vm-tests read back), made from the stages' outputs
//! ([`record`]) and written with every artifact's sum, each artifact hashed once ([`finish`]).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::boot::BootFiles;
use crate::disk::Disk;
use crate::fetch::lock::Lock;
use crate::formats::Format;
use crate::fsimage::manifest::Kind;
use crate::fsimage::verity;
use crate::outdir::{hash_all, write_sha256sums, FileSum, MANIFEST, SHA256SUMS};
use crate::profile::Profile;
use crate::root::image::Verity;
use crate::root::rootfs::RootfsManifest;
use crate::util::digest::uuid_string;

/// `manifest.json`: what was built, from what, and the sum of every artifact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BuildManifest {
    /// The berth version that built it.
    pub berth: String,
    pub image: ImageRecord,
    pub debian: DebianRecord,
    pub kernel: KernelRecord,
    pub packages: Vec<PackageRecord>,
    pub verity: VerityRecord,
    pub sizes: SizesRecord,
    pub boot: BootRecord,
    pub disk: DiskRecord,
    /// Derived formats, by name (`qcow2`, `vagrant-libvirt`, ...).
    pub formats: Vec<String>,
    /// Every other file of the output directory (not manifest.json itself), by name.
    pub artifacts: BTreeMap<String, ArtifactRecord>,
    pub rootfs: RootfsRecord,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ImageRecord {
    pub name: String,
    pub version: String,
    pub source_date_epoch: i64,
    pub hostname: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DebianRecord {
    pub suite: String,
    pub architecture: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct KernelRecord {
    pub package: String,
    pub version: String,
    /// Where slot A's kernel is on the ESP (the root holds none: it boots from the ESP).
    pub vmlinuz: String,
    /// The profile's `kernel.cmdline` (the boot entry's full line is [`BootRecord::cmdline`]).
    pub cmdline: String,
    /// Kernel modules in the root.
    pub modules: usize,
    /// For a kernel built from `package` (a source package): the `kernel-config/` fragments it
    /// was configured with, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PackageRecord {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub role: String,
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct VerityRecord {
    pub roothash: String,
    pub salt: String,
    pub uuid: String,
    pub hash_algorithm: String,
    pub data_block_size: u64,
    pub hash_block_size: u64,
    pub data_blocks: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SizesRecord {
    pub root_slot: u64,
    pub root_filesystem: u64,
    pub root_verity: u64,
    /// Bytes of file content in the root.
    pub content: u64,
    pub esp: u64,
    pub state: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BootRecord {
    /// Slot A's kernel command line, as its boot entry has it (and `berth run --direct` uses).
    pub cmdline: String,
    /// Slot A's boot entry file name.
    pub entry: String,
    /// The package systemd-boot came from.
    pub loader: String,
    pub initrd_modules: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DiskRecord {
    pub size: u64,
    pub guid: String,
    pub partitions: Vec<PartitionRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PartitionRecord {
    pub number: u32,
    pub name: String,
    #[serde(rename = "type")]
    pub type_guid: String,
    pub partuuid: String,
    pub offset: u64,
    pub size: u64,
    /// Hex, like `0x1000000000000000`.
    pub attributes: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ArtifactRecord {
    pub size: u64,
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RootfsRecord {
    pub entries: usize,
    pub files: Vec<FileRecord>,
}

/// One entry of the root filesystem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FileRecord {
    pub path: String,
    /// `dir`, `file`, `symlink`, `hardlink`, `chardev`, `blockdev`, `fifo`, `socket`.
    pub kind: String,
    /// Octal permission bits, like `0755`.
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor: Option<u32>,
}

impl BuildManifest {
    /// Reads `dir/manifest.json`; the error says when `dir` is not a berth image directory.
    pub fn read(dir: &Path) -> Result<BuildManifest> {
        let p = dir.join(MANIFEST);
        let text = fs::read(&p).with_context(|| {
            format!(
                "{} is not a berth image directory (no readable {MANIFEST})",
                dir.display()
            )
        })?;
        serde_json::from_slice(&text).with_context(|| {
            format!(
                "reading {}: not a manifest this berth understands (rebuild the image)",
                p.display()
            )
        })
    }

    /// The partition record with that GPT name.
    pub fn partition(&self, name: &str) -> Option<&PartitionRecord> {
        self.disk.partitions.iter().find(|p| p.name == name)
    }
}

/// What a build made, as recorded in manifest.json (the artifact sums are filled by
/// [`finish`]).
pub fn record(
    profile: &Profile,
    lock: &Lock,
    rootfs: &RootfsManifest,
    verity: &Verity,
    boot: &BootFiles,
    disk: &Disk,
    formats: &[Format],
) -> BuildManifest {
    let v = &verity.info;
    let files = rootfs
        .manifest
        .iter()
        .map(|(p, e)| {
            let mut r = FileRecord {
                path: p.as_str().to_string(),
                kind: e.kind.name().to_string(),
                mode: format!("{:04o}", e.mode),
                uid: e.uid,
                gid: e.gid,
                size: None,
                sha256: None,
                target: None,
                major: None,
                minor: None,
            };
            match &e.kind {
                Kind::File(d) => {
                    r.size = Some(d.len() as u64);
                    r.sha256 = Some(hex::encode(Sha256::digest(d.as_slice())));
                }
                Kind::Symlink(t) => r.target = Some(t.clone()),
                Kind::Hardlink(t) => r.target = Some(t.as_str().to_string()),
                Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                    r.major = Some(*major);
                    r.minor = Some(*minor);
                }
                _ => {}
            }
            r
        })
        .collect();
    BuildManifest {
        berth: env!("CARGO_PKG_VERSION").to_string(),
        image: ImageRecord {
            name: profile.image.name.clone(),
            version: profile.image.version.clone(),
            source_date_epoch: profile.image.source_date_epoch,
            hostname: profile.image.hostname.clone(),
        },
        debian: DebianRecord {
            suite: lock.suite.clone(),
            architecture: lock.architecture.clone(),
        },
        kernel: KernelRecord {
            package: profile
                .kernel
                .source
                .as_ref()
                .map_or(&profile.kernel.package, |s| &s.package)
                .clone(),
            version: rootfs.kernel.version.clone(),
            vmlinuz: berth_contract::paths::slot_kernel(berth_contract::Slot::A),
            cmdline: profile.kernel.cmdline.clone(),
            modules: rootfs.kernel.modules,
            config: profile
                .kernel
                .source
                .iter()
                .flat_map(|s| s.config.iter().map(|f| f.name.clone()))
                .collect(),
        },
        packages: lock
            .packages
            .iter()
            .map(|p| PackageRecord {
                name: p.name.clone(),
                version: p.version.clone(),
                architecture: p.architecture.clone(),
                role: p.role.clone(),
                sha256: p.sha256.clone(),
            })
            .collect(),
        verity: VerityRecord {
            roothash: hex::encode(v.root_hash),
            salt: hex::encode(&v.salt),
            uuid: uuid_string(&v.uuid),
            hash_algorithm: "sha256".into(),
            data_block_size: verity::BLOCK_SIZE,
            hash_block_size: verity::BLOCK_SIZE,
            data_blocks: v.data_blocks,
        },
        sizes: SizesRecord {
            root_slot: profile.disk.root.get(),
            root_filesystem: v.data_blocks * verity::BLOCK_SIZE,
            root_verity: v.hash_size,
            content: rootfs.manifest.content_bytes(),
            esp: profile.disk.esp.get(),
            state: profile.disk.state.get(),
        },
        boot: BootRecord {
            cmdline: disk.args.to_string(),
            entry: disk.entry.file_name(),
            loader: profile.boot.package.clone(),
            initrd_modules: boot.initrd_modules,
        },
        disk: DiskRecord {
            size: disk.layout.disk_size().get(),
            guid: disk.layout.disk_guid().to_string(),
            partitions: disk
                .layout
                .partitions()
                .iter()
                .map(|p| PartitionRecord {
                    number: p.index,
                    name: p.name.to_string(),
                    type_guid: p.type_guid.to_string(),
                    partuuid: p.guid.to_string(),
                    offset: p.offset().get(),
                    size: p.size().get(),
                    attributes: format!("{:#x}", p.attributes),
                })
                .collect(),
        },
        formats: formats.iter().map(|f| f.name().to_string()).collect(),
        artifacts: BTreeMap::new(),
        rootfs: RootfsRecord {
            entries: rootfs.manifest.len(),
            files,
        },
    }
}

/// The last stage: hashes every output not yet hashed (`known` are sums computed earlier, so
/// nothing is read twice), records them in `manifest`, writes manifest.json and SHA256SUMS.
/// `names` are the outputs, as [`output_names`] lists them.
pub fn finish(
    dir: &Path,
    mut manifest: BuildManifest,
    names: &[&str],
    known: Vec<FileSum>,
) -> Result<(BuildManifest, Vec<FileSum>)> {
    let todo: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| *n != MANIFEST && *n != SHA256SUMS && !known.iter().any(|k| k.name == *n))
        .collect();
    let mut sums = known;
    sums.extend(hash_all(dir, &todo)?);
    sums.retain(|s| names.contains(&s.name.as_str()));
    manifest.artifacts = sums
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                ArtifactRecord {
                    size: s.size,
                    sha256: s.sha256.clone(),
                },
            )
        })
        .collect();
    let json = serde_json::to_vec_pretty(&manifest).context("serialising manifest.json")?;
    let path = dir.join(MANIFEST);
    fs::write(&path, &json).with_context(|| format!("writing {}", path.display()))?;
    sums.push(FileSum::of_bytes(MANIFEST, &json));
    write_sha256sums(dir, &sums)?;
    Ok((manifest, sums))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outdir::{DISK, ROOT_IMAGE};
    use crate::util::digest::sha256_file;

    pub(crate) fn sample() -> BuildManifest {
        BuildManifest {
            berth: "0.1.0".into(),
            image: ImageRecord {
                name: "img".into(),
                version: "1.0".into(),
                source_date_epoch: 1,
                hostname: "h".into(),
            },
            debian: DebianRecord {
                suite: "bookworm".into(),
                architecture: "amd64".into(),
            },
            kernel: KernelRecord {
                package: "linux".into(),
                version: "6.1".into(),
                vmlinuz: "/usr/lib/modules/6.1/vmlinuz".into(),
                cmdline: "console=ttyS0".into(),
                modules: 3,
                config: vec![],
            },
            packages: vec![],
            verity: VerityRecord {
                roothash: "00".repeat(32),
                salt: "11".repeat(32),
                uuid: "00000000-0000-4000-8000-000000000000".into(),
                hash_algorithm: "sha256".into(),
                data_block_size: 4096,
                hash_block_size: 4096,
                data_blocks: 10,
            },
            sizes: SizesRecord {
                root_slot: 1,
                root_filesystem: 2,
                root_verity: 3,
                content: 4,
                esp: 5,
                state: 6,
            },
            boot: BootRecord {
                cmdline: "berth.slot=a".into(),
                entry: "berth-a+3.conf".into(),
                loader: "systemd-boot-efi".into(),
                initrd_modules: 2,
            },
            disk: DiskRecord {
                size: 9,
                guid: "g".into(),
                partitions: vec![PartitionRecord {
                    number: 2,
                    name: "root-a".into(),
                    type_guid: "t".into(),
                    partuuid: "p".into(),
                    offset: 1 << 20,
                    size: 1 << 30,
                    attributes: "0x1000000000000000".into(),
                }],
            },
            formats: vec!["qcow2".into()],
            artifacts: BTreeMap::new(),
            rootfs: RootfsRecord {
                entries: 1,
                files: vec![FileRecord {
                    path: "/".into(),
                    kind: "dir".into(),
                    mode: "0755".into(),
                    uid: 0,
                    gid: 0,
                    size: None,
                    sha256: None,
                    target: None,
                    major: None,
                    minor: None,
                }],
            },
        }
    }

    #[test]
    fn finish_hashes_once_and_the_manifest_reads_back() {
        let d = tempfile::tempdir().unwrap();
        for n in [DISK, ROOT_IMAGE] {
            fs::write(d.path().join(n), n.as_bytes()).unwrap();
        }
        // A "known" sum is taken as given (it was computed when the file was written): a wrong
        // one would show here, so the file is not read again.
        let known = vec![FileSum {
            name: ROOT_IMAGE.into(),
            size: 9,
            sha256: "recorded".into(),
        }];
        let names = [DISK, ROOT_IMAGE, MANIFEST, SHA256SUMS];
        let (m, sums) = finish(d.path(), sample(), &names, known).unwrap();
        assert_eq!(m.artifacts[ROOT_IMAGE].sha256, "recorded");
        assert_eq!(
            m.artifacts[DISK].sha256,
            sha256_file(&d.path().join(DISK)).unwrap()
        );
        assert!(!m.artifacts.contains_key(MANIFEST));
        assert_eq!(sums.len(), 3);
        let back = BuildManifest::read(d.path()).unwrap();
        assert_eq!(back, m);
        let text = fs::read_to_string(d.path().join(SHA256SUMS)).unwrap();
        assert!(
            text.contains("  manifest.json\n") && text.contains("recorded  root.ext4\n"),
            "{text}"
        );
        assert_eq!(back.partition("root-a").map(|p| p.number), Some(2));
    }

    #[test]
    fn reading_a_non_image_directory_says_so() {
        let d = tempfile::tempdir().unwrap();
        let e = format!("{:#}", BuildManifest::read(d.path()).unwrap_err());
        assert!(e.contains("not a berth image directory"), "{e}");
        fs::write(d.path().join(MANIFEST), b"{\"image\": {}}").unwrap();
        let e = format!("{:#}", BuildManifest::read(d.path()).unwrap_err());
        assert!(e.contains("rebuild the image"), "{e}");
    }
}
