//! What a build leaves in its output directory: the file names, `manifest.json` as a typed
//! document ([`BuildManifest`], which `berth run`, `berth publish` and the vm-tests read back),
//! and `SHA256SUMS` (the format `sha256sum -c` checks). Every artifact is hashed once: the
//! sums go into both files.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::boot::BootFiles;
use crate::disk::Disk;
use crate::fetch::lock::Lock;
use crate::formats::Format;
use crate::fsimage::verity;
use crate::profile::Profile;
use crate::root::image::Verity;
use crate::root::manifest::Kind;
use crate::root::rootfs::RootfsManifest;
use crate::util::digest::{sha256_file, uuid_string};

pub const DISK: &str = "disk.raw";
pub const ROOT_IMAGE: &str = "root.ext4";
pub const ROOT_VERITY: &str = "root.verity";
pub const VMLINUZ: &str = "vmlinuz";
pub const INITRD: &str = "initrd";
pub const MANIFEST: &str = "manifest.json";
pub const SHA256SUMS: &str = "SHA256SUMS";
/// The files every build writes, in the order they are listed.
pub const FIXED: &[&str] = &[DISK, ROOT_IMAGE, ROOT_VERITY, VMLINUZ, INITRD, MANIFEST];

/// Every file a build with these formats writes: the fixed artifacts, the derived formats, and
/// SHA256SUMS last.
pub fn output_names(formats: &[Format]) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = FIXED.to_vec();
    v.extend(formats.iter().map(|f| f.file_name()));
    v.push(SHA256SUMS);
    v
}

/// A file's name (relative to the output directory), size and SHA-256 (hex).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

impl FileSum {
    /// Hashes `dir/name`.
    pub fn of(dir: &Path, name: &str) -> Result<FileSum> {
        let p = dir.join(name);
        let size = fs::metadata(&p)
            .with_context(|| format!("reading {}", p.display()))?
            .len();
        Ok(FileSum {
            name: name.to_string(),
            size,
            sha256: sha256_file(&p)?,
        })
    }

    /// The sum of bytes already in memory (vmlinuz, initrd), without reading them back.
    pub fn of_bytes(name: &str, data: &[u8]) -> FileSum {
        FileSum {
            name: name.to_string(),
            size: data.len() as u64,
            sha256: hex::encode(Sha256::digest(data)),
        }
    }
}

/// Hashes `names` in `dir`, several at once (disk.raw is most of the bytes; the others are
/// hashed on the other workers meanwhile). Results are in the order of `names`.
pub fn hash_all(dir: &Path, names: &[&str]) -> Result<Vec<FileSum>> {
    let next = AtomicUsize::new(0);
    let workers = crate::formats::workers().min(names.len()).max(1);
    let done: Vec<Vec<(usize, Result<FileSum>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(name) = names.get(i) else { break };
                        mine.push((i, FileSum::of(dir, name)));
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut results: Vec<Option<Result<FileSum>>> = (0..names.len()).map(|_| None).collect();
    for (i, r) in done.into_iter().flatten() {
        results[i] = Some(r);
    }
    results
        .into_iter()
        .zip(names)
        .map(|(r, n)| r.unwrap_or_else(|| bail!("hashing {n} did not finish")))
        .collect()
}

/// Writes `dir/SHA256SUMS` from sums already computed: `<hex>  <name>` lines sorted by name.
pub fn write_sha256sums(dir: &Path, sums: &[FileSum]) -> Result<()> {
    let mut sorted: Vec<&FileSum> = sums.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    sorted.dedup_by(|a, b| a.name == b.name);
    let mut text = String::new();
    for s in sorted {
        let n = &s.name;
        if n.is_empty() || n.contains(['/', '\n', '\\']) || n == SHA256SUMS {
            bail!(
                "cannot list `{n}` in {SHA256SUMS}: only plain file names of the output directory"
            );
        }
        text.push_str(&format!("{}  {n}\n", s.sha256));
    }
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    crate::util::output::persist(tmp, &dir.join(SHA256SUMS))
}

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
    /// The kernel's path in the root.
    pub vmlinuz: String,
    /// The profile's `kernel.cmdline` (the boot entry's full line is [`BootRecord::cmdline`]).
    pub cmdline: String,
    /// Kernel modules in the root.
    pub modules: usize,
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
            package: profile.kernel.package.clone(),
            version: rootfs.kernel.version.clone(),
            vmlinuz: rootfs.kernel.vmlinuz.as_str().to_string(),
            cmdline: profile.kernel.cmdline.clone(),
            modules: rootfs.kernel.modules,
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

    #[test]
    fn sums_are_sorted_two_space_lines() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("b.txt"), b"abc").unwrap();
        fs::write(d.path().join("a.txt"), b"").unwrap();
        let sums = hash_all(d.path(), &["b.txt", "a.txt"]).unwrap();
        assert_eq!(sums[0].size, 3);
        write_sha256sums(d.path(), &sums).unwrap();
        let text = fs::read_to_string(d.path().join(SHA256SUMS)).unwrap();
        assert_eq!(
            text,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  a.txt\n\
             ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  b.txt\n"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(d.path().join(SHA256SUMS))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644, "{mode:o}");
    }

    #[test]
    fn missing_file_and_bad_names_are_errors() {
        let d = tempfile::tempdir().unwrap();
        let e = hash_all(d.path(), &["nope"]).unwrap_err();
        assert!(format!("{e:#}").contains("nope"));
        let bad = FileSum::of_bytes("../x", b"");
        assert!(write_sha256sums(d.path(), &[bad]).is_err());
        assert!(!d.path().join(SHA256SUMS).exists());
    }

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
