//! Image profiles: TOML files that say what goes into an image.
//!
//! Three steps, as everywhere config enters berth: the file is parsed into `Raw*` structs that
//! deny unknown keys and check each value's shape as it is read (so errors carry the
//! file:line:column of the offending value); `extends` chains are merged; then
//! [`RawProfile::validate`] turns the result into the typed [`Profile`] the stages use.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Deserializer, Serialize};

use berth_contract::service::Service;

use crate::fsimage::manifest::ImagePath;
use crate::units::Bytes;

/// The profile format this berth reads. Bumped when a key changes meaning.
pub const SCHEMA_VERSION: u32 = 1;

/// The Debian cloud kernel: small, virtio/xen/nvme/ena as modules, what AWS and QEMU both need.
pub const DEFAULT_KERNEL_PACKAGE: &str = "linux-image-cloud-amd64";
/// `console=ttyS0` so QEMU's serial console and the AWS serial console both see boot output.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 panic=10";
/// Debian 12: the release whose kernel, containerd and runc berth is tested with.
pub const DEFAULT_SUITE: &str = "bookworm";
/// Big enough for kernel modules + containerd + runc (~250 MiB) with room for updates to grow.
pub const DEFAULT_ROOT_SIZE: Bytes = Bytes::mib(1024);
/// Room for two slots' kernel + initrd (~2 x 40 MiB) and systemd-boot; FAT32 needs >= 32 MiB.
pub const DEFAULT_ESP_SIZE: Bytes = Bytes::mib(256);
/// The state partition is grown to fill the disk on first boot; this is only its initial size.
pub const DEFAULT_STATE_SIZE: Bytes = Bytes::mib(256);
/// Debian's component holding every package berth needs.
pub const DEFAULT_COMPONENTS: &[&str] = &["main"];
/// systemd-boot, from Debian: the boot loader on the ESP (boot counting, sort by version).
pub const DEFAULT_BOOT_PACKAGE: &str = "systemd-boot-efi";
/// Boot attempts a new entry gets before systemd-boot falls back to the other slot.
pub const DEFAULT_BOOT_TRIES: u32 = 3;
/// Modules the initramfs loads (dependencies are added): the virtio disk and NIC, dm-verity,
/// and what the root, state and /etc overlay mounts need. Built-in ones are skipped.
pub const DEFAULT_INITRD_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    // Disks on a virtio-scsi controller: VirtualBox boxes (the cloud kernel has no AHCI), GCE.
    "virtio_scsi",
    "sd_mod",
    "virtio_net",
    "dm_verity",
    "ext4",
    "overlay",
];
/// Modules every initramfs gets besides the profile's: the ESP's vfat with its code pages
/// (the initrd marks boot entries when a slot keeps failing). `softdog` is added too when the
/// profile has a watchdog.
pub const INITRD_ESP_MODULES: &[&str] = &["vfat", "nls_cp437", "nls_ascii", "nls_utf8"];
/// Modules the main stage loads: the ESP (vfat + code pages) for blessing boot entries, the
/// ACPI power button (button + evdev: a power-button press is a clean poweroff), and container
/// networking.
pub const DEFAULT_MAIN_MODULES: &[&str] = &[
    "vfat",
    "button",
    "evdev",
    "nls_cp437",
    "nls_ascii",
    "nls_utf8",
    "bridge",
    "veth",
    "br_netfilter",
];
/// Longest `extends` chain; deeper is almost surely a cycle or a mistake.
const MAX_EXTENDS_DEPTH: usize = 8;

/// A validated profile: everything a build needs, with defaults filled in and paths resolved.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Profile {
    /// The profile file given on the command line.
    pub path: PathBuf,
    /// Every file read, the given one first, then what it extends.
    pub sources: Vec<PathBuf>,
    pub image: Image,
    pub debian: Debian,
    pub kernel: Kernel,
    pub runtime: Runtime,
    pub boot: Boot,
    pub containers: Vec<Container>,
    pub admin: Option<Admin>,
    pub update: Update,
    pub outputs: Outputs,
    pub init: Init,
    pub overlays: Vec<Overlay>,
    pub files: Vec<FileSpec>,
    pub disk: DiskSizes,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Image {
    pub name: String,
    pub version: String,
    pub source_date_epoch: i64,
    pub hostname: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Debian {
    pub suite: String,
    pub components: Vec<String>,
    /// Mirror URL; `None` means "whatever the host's apt uses".
    pub mirror: Option<String>,
    /// Security mirror URL; `None` means the host's, or none if the host has none.
    pub security_mirror: Option<String>,
    /// Keyring file; `None` means the host's (Signed-By of its sources, else Debian's keyring).
    pub keyring: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Kernel {
    pub package: String,
    pub cmdline: String,
    /// Module paths (relative to `/lib/modules/<version>/`, `*` wildcards) to keep; `None`
    /// keeps only what the image loads (the closure of the two lists below and berth-init's own).
    pub modules: Option<Vec<String>>,
    /// Module names the initramfs loads (with dependencies).
    pub initrd_modules: Vec<String>,
    /// Module names the main stage loads.
    pub load_modules: Vec<String>,
    /// Build the kernel from this Debian source package instead of taking `package`'s.
    pub source: Option<KernelSource>,
}

/// `[kernel] source` + `config`: a kernel built from a Debian source package, configured from
/// `allnoconfig` plus the named fragments of `kernel-config/` (the kernel stage).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct KernelSource {
    /// The source package (`linux-source-6.1`), locked like every package.
    pub package: String,
    /// The fragments, in the order given (a later one overrides an earlier one's options).
    pub config: Vec<KernelFragment>,
}

/// One `kernel-config/<name>.config` fragment, read when the profile is loaded.
#[derive(Clone, Debug, Serialize)]
pub struct KernelFragment {
    pub name: String,
    /// Where it is on this machine (not part of the build's identity; its content is).
    #[serde(skip)]
    pub path: PathBuf,
    #[serde(skip)]
    pub text: String,
    /// SHA-256 of `text`, so the build cache key follows the content.
    pub sha256: String,
}

/// Formats derived from disk.raw (which is always written).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Outputs {
    pub formats: Vec<crate::formats::Format>,
    /// Compress qcow2 clusters (smaller, slower to write and to read).
    pub qcow2_compressed: bool,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Boot {
    /// Debian package shipping systemd-boot (`systemd-bootx64.efi`).
    pub package: String,
    /// Tries a freshly written entry gets (boot counting); 0 disables counting.
    pub tries: u32,
    /// Seconds systemd-boot shows its menu.
    pub timeout: u32,
    /// The boot-health policy baked into the root (`berth_contract::health`): ready
    /// deadline, watchdog, when a boot counts as good, and failed boots in a row allowed.
    pub ready_deadline: u32,
    pub watchdog: u32,
    pub stable_after: u32,
    pub failed_boots: u32,
}

impl Boot {
    pub fn health(&self) -> berth_contract::health::Policy {
        berth_contract::health::Policy {
            ready_deadline: self.ready_deadline,
            watchdog: self.watchdog,
            stable_after: self.stable_after,
            failed_boots: self.failed_boots,
        }
    }
}

/// An OCI image berth bakes into the root (built from Debian packages, or taken from an OCI
/// archive the user supplies), and the service that runs it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Container {
    pub name: String,
    /// Image reference, e.g. `localhost/berth/hello:0.1.0`.
    pub image: String,
    pub source: ImageSource,
    /// How berth-init runs it, as the services file has it (`berth_contract::service`).
    #[serde(serialize_with = "service_json")]
    pub service: Service,
}

/// What a container image is made of.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageSource {
    /// Debian packages (with their dependencies), merged-/usr.
    Packages(Vec<String>),
    /// An OCI image layout (tar or directory) or a `docker save` archive, inside the profile's
    /// directory.
    Archive(PathBuf),
}

fn service_json<S: serde::Serializer>(s: &Service, ser: S) -> std::result::Result<S::Ok, S::Error> {
    let v: serde_json::Value =
        serde_json::from_str(&s.to_json()).map_err(serde::ser::Error::custom)?;
    v.serialize(ser)
}

/// How machines of this image take updates.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Update {
    /// The release key's public half (`berth keygen`), baked into the image: its machines
    /// apply only bundles signed by it.
    pub public_key: Option<PathBuf>,
    /// Without a key: accept unsigned bundles (never the default).
    pub allow_unsigned: bool,
    /// The update channel (`http://` URL of a `berth publish channel` directory).
    pub channel: Option<String>,
    /// Seconds between automatic channel checks (0: only `berthctl update check`).
    pub check_interval: u32,
    /// `now`, `never` or a daily UTC window `HH:MM-HH:MM`.
    pub reboot: String,
}

impl Default for Update {
    fn default() -> Update {
        Update {
            public_key: None,
            allow_unsigned: false,
            channel: None,
            check_interval: 0,
            reboot: "now".into(),
        }
    }
}

impl Update {
    pub fn policy(&self) -> berth_contract::channel::Policy {
        berth_contract::channel::Policy {
            channel: self.channel.clone(),
            check_interval: self.check_interval,
            reboot: berth_contract::channel::Reboot::parse(&self.reboot).unwrap_or_default(),
        }
    }
}

/// The admin container: an SSH server (dropbear) and a busybox shell, with `berthctl` and
/// `ctr`, in the host's network and PID namespaces.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Admin {
    /// The login name (uid 0 in the container).
    pub user: String,
    pub port: u16,
    /// Public keys baked into the image (the machine config adds its own).
    pub authorized_keys: Vec<String>,
    /// Debian packages added to the container besides dropbear and busybox (e.g.
    /// `etcd-client` for `etcdctl`), with their dependencies.
    pub packages: Vec<String>,
}

impl Admin {
    /// Every package the admin container is made of.
    pub fn all_packages(&self) -> Vec<String> {
        let mut v: Vec<String> = ADMIN_PACKAGES.iter().map(|s| s.to_string()).collect();
        for p in &self.packages {
            if !v.contains(p) {
                v.push(p.clone());
            }
        }
        v
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Runtime {
    /// Debian packages providing the runtime (their Depends are followed for shared libraries).
    pub packages: Vec<String>,
    /// Executables to copy into the image, with their shared-library closure.
    pub binaries: Vec<ImagePath>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Init {
    /// A built `berth-init`; `None` means: look next to the `berth` executable.
    pub path: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Overlay {
    pub name: String,
    pub path: PathBuf,
}

/// One `[[files]]` entry: a file, symlink or directory to create, or (with only mode/owner) a
/// change of attributes of a path that an overlay or package put there.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct FileSpec {
    pub path: ImagePath,
    pub what: FileSource,
    pub mode: Option<u16>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileSource {
    /// Host file, resolved relative to the profile that named it.
    Source(PathBuf),
    Content(String),
    Symlink(String),
    Dir,
    /// Only change mode/owner of an existing path.
    Attrs,
}

#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DiskSizes {
    #[serde(rename = "root-size")]
    pub root: Bytes,
    #[serde(rename = "esp-size")]
    pub esp: Bytes,
    #[serde(rename = "state-size")]
    pub state: Bytes,
}

// ---------------------------------------------------------------------------------------------
// Raw, as written in the file.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawProfile {
    schema: Option<u32>,
    extends: Option<String>,
    image: Option<RawImage>,
    debian: Option<RawDebian>,
    kernel: Option<RawKernel>,
    runtime: Option<RawRuntime>,
    boot: Option<RawBoot>,
    containers: Option<Vec<RawContainer>>,
    admin: Option<RawAdmin>,
    update: Option<RawUpdate>,
    outputs: Option<RawOutputs>,
    init: Option<RawInit>,
    overlays: Option<Vec<String>>,
    files: Option<Vec<RawFile>>,
    disk: Option<RawDisk>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawImage {
    name: Option<Name>,
    version: Option<Version>,
    source_date_epoch: Option<Epoch>,
    hostname: Option<Name>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDebian {
    suite: Option<Name>,
    components: Option<Vec<Name>>,
    mirror: Option<Url>,
    security_mirror: Option<Url>,
    keyring: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawKernel {
    package: Option<PackageName>,
    cmdline: Option<String>,
    modules: Option<Vec<String>>,
    initrd_modules: Option<Vec<ModuleName>>,
    load_modules: Option<Vec<ModuleName>>,
    source: Option<PackageName>,
    config: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawBoot {
    package: Option<PackageName>,
    tries: Option<u32>,
    timeout: Option<u32>,
    ready_deadline: Option<u32>,
    watchdog: Option<u32>,
    stable_after: Option<u32>,
    failed_boots: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawOutputs {
    formats: Option<Vec<FormatName>>,
    qcow2_compressed: Option<bool>,
}

#[derive(Debug, Clone, Copy)]
struct FormatName(crate::formats::Format);
impl<'de> Deserialize<'de> for FormatName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map(FormatName)
            .map_err(|e| serde::de::Error::custom(format!("{e}")))
    }
}

/// The service keys are the services file's (`berth_contract::service`), checked by its parser.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawContainer {
    name: toml::Spanned<Name>,
    image: Option<String>,
    packages: Option<Vec<PackageName>>,
    archive: Option<String>,
    #[serde(default)]
    oneshot: bool,
    command: Option<toml::Value>,
    env: Option<toml::Value>,
    mounts: Option<toml::Value>,
    network: Option<toml::Value>,
    restart: Option<toml::Value>,
    depends_on: Option<toml::Value>,
    ready: Option<toml::Value>,
    ready_timeout: Option<toml::Value>,
    required: Option<toml::Value>,
    host_pid: Option<toml::Value>,
    privileged: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawUpdate {
    public_key: Option<String>,
    allow_unsigned: Option<bool>,
    channel: Option<String>,
    check_interval: Option<u32>,
    reboot: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawAdmin {
    #[serde(default = "default_true")]
    enabled: bool,
    user: Option<String>,
    port: Option<u16>,
    authorized_keys: Option<Vec<String>>,
    packages: Option<Vec<PackageName>>,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRuntime {
    packages: Option<Vec<PackageName>>,
    binaries: Option<Vec<AbsPath>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawInit {
    path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawFile {
    path: toml::Spanned<AbsPath>,
    source: Option<String>,
    content: Option<String>,
    symlink: Option<String>,
    #[serde(default)]
    dir: bool,
    mode: Option<Mode>,
    uid: Option<u32>,
    gid: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDisk {
    root_size: Option<Bytes>,
    esp_size: Option<Bytes>,
    state_size: Option<Bytes>,
}

// Value types that check their shape while being deserialised, so the TOML error points at them.

macro_rules! checked_string {
    ($name:ident, $check:expr) => {
        #[derive(Debug, Clone)]
        struct $name(String);
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                let check: fn(&str) -> std::result::Result<(), String> = $check;
                check(&s).map_err(serde::de::Error::custom)?;
                Ok($name(s))
            }
        }
    };
}

checked_string!(Name, |s| {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid name {s:?}: use 1-63 characters of a-z, A-Z, 0-9, '-', '_', '.', starting with a letter or digit"
        ))
    }
});

checked_string!(Version, |s| {
    if !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.~_".contains(c))
    {
        Ok(())
    } else {
        Err(format!(
            "invalid version {s:?}: use letters, digits and + - . ~ _ (e.g. \"1.2.0\")"
        ))
    }
});

checked_string!(PackageName, |s| {
    // Debian policy 5.6.1: lower case letters, digits, + - . ; at least two characters.
    let ok = s.len() >= 2
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid Debian package name {s:?}: lower-case letters, digits, '+', '-', '.'"
        ))
    }
});

checked_string!(ModuleName, |s| {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Ok(())
    } else {
        Err(format!(
            "invalid kernel module name {s:?}: a module name like \"virtio_blk\" (no path, no .ko)"
        ))
    }
});

checked_string!(Url, |s| {
    if s.starts_with("http://") || s.starts_with("https://") || s.starts_with("file:/") {
        Ok(())
    } else {
        Err(format!(
            "invalid mirror {s:?}: expected an http://, https:// or file:/ URL"
        ))
    }
});

#[derive(Debug, Clone)]
struct AbsPath(ImagePath);
impl<'de> Deserialize<'de> for AbsPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if !s.starts_with('/') {
            return Err(serde::de::Error::custom(format!(
                "invalid image path {s:?}: must be absolute, like \"/usr/bin/containerd\""
            )));
        }
        ImagePath::new(&s)
            .map(AbsPath)
            .map_err(|e| serde::de::Error::custom(format!("{e:#}")))
    }
}

#[derive(Debug, Clone, Copy)]
struct Mode(u16);
impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d).map_err(|_| {
            serde::de::Error::custom("mode must be an octal string like \"0644\" or \"4755\"")
        })?;
        u16::from_str_radix(&s, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .map(Mode)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid mode {s:?}: expected octal permission bits 0000-7777, like \"0644\""
                ))
            })
    }
}

#[derive(Debug, Clone, Copy)]
struct Epoch(i64);
impl<'de> Deserialize<'de> for Epoch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        // ext4 with 256-byte inodes stores times up to 2446; 0..2^34 keeps every writer valid.
        if (0..(1i64 << 34)).contains(&n) {
            Ok(Epoch(n))
        } else {
            Err(serde::de::Error::custom(format!(
                "invalid source-date-epoch {n}: expected seconds since 1970 (e.g. 1700000000)"
            )))
        }
    }
}

/// One parsed file and where it is, so relative paths in it resolve against its directory.
struct Layer {
    path: PathBuf,
    /// The file's text, for `file:line:col` in errors found after parsing.
    text: String,
    raw: RawProfile,
}

/// Reads, merges and validates the profile at `path` (following `extends`).
pub fn load(path: &Path) -> Result<Profile> {
    let mut layers = Vec::new();
    let mut next = Some(path.to_path_buf());
    while let Some(p) = next.take() {
        if layers.len() >= MAX_EXTENDS_DEPTH {
            bail!(
                "{}: `extends` chain is longer than {MAX_EXTENDS_DEPTH} files (a cycle?)",
                path.display()
            );
        }
        if layers.iter().any(|l: &Layer| l.path == p) {
            bail!(
                "{}: `extends` cycle through {}",
                path.display(),
                p.display()
            );
        }
        let (raw, text) = parse_file(&p)?;
        if let Some(ext) = &raw.extends {
            let dir = p.parent().unwrap_or(Path::new("."));
            let target = dir.join(ext);
            if !target.is_file() {
                bail!(
                    "{}: key `extends`: profile {} does not exist (paths are relative to the profile that names them)",
                    p.display(),
                    target.display()
                );
            }
            next = Some(target);
        }
        layers.push(Layer { path: p, text, raw });
    }
    validate(path, layers)
}

/// A text file's contents; bytes that are not UTF-8 are an error naming the line and column
/// of the first (std's own message names neither).
pub fn read_utf8(path: &Path, what: &str) -> Result<String> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        let bad = e.utf8_error().valid_up_to();
        let before = &e.as_bytes()[..bad];
        let line = before.iter().filter(|b| **b == b'\n').count() + 1;
        let col = bad - before.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1) + 1;
        anyhow::anyhow!(
            "{}:{line}:{col}: byte 0x{:02x} is not UTF-8: a {what} is UTF-8 text (TOML), save it as such",
            path.display(),
            e.as_bytes()[bad]
        )
    })
}

fn parse_file(path: &Path) -> Result<(RawProfile, String)> {
    let text = read_utf8(path, "profile")?;
    let raw: RawProfile = toml::from_str(&text).map_err(|e| toml_error(path, &text, &e))?;
    match raw.schema {
        Some(SCHEMA_VERSION) => {}
        Some(v) => bail!(
            "{}: key `schema`: this berth reads profile schema {SCHEMA_VERSION}, the file says {v}",
            path.display()
        ),
        None => bail!(
            "{}: key `schema` is missing: add `schema = {SCHEMA_VERSION}` at the top",
            path.display()
        ),
    }
    Ok((raw, text))
}

/// Formats a TOML error as `file:line:column: message` (the compiler convention editors jump to).
pub fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> anyhow::Error {
    let (line, col) = match e.span() {
        Some(span) => line_col(text, span.start),
        None => (1, 1),
    };
    anyhow::anyhow!(
        "{}:{line}:{col}: {}",
        path.display(),
        e.message().trim_end()
    )
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// `path` resolved (symlinks too) if it lies inside `root`; an error naming the profile and the
/// key otherwise, so that nothing from elsewhere on the host (`/etc/shadow`, `../../..`) can
/// end up in an image.
fn inside(profile: &Path, key: &str, path: &Path, root: &Path) -> Result<PathBuf> {
    let real = path
        .canonicalize()
        .with_context(|| format!("{}: {key} {}", profile.display(), path.display()))?;
    let root_real = root
        .canonicalize()
        .with_context(|| format!("{}: {key}: {}", profile.display(), root.display()))?;
    if !real.starts_with(&root_real) {
        bail!(
            "{}: {key} {} is outside {}: sources must lie inside the profile's directory (symlinks are followed)",
            profile.display(),
            path.display(),
            root_real.display()
        );
    }
    Ok(real)
}

/// An overlay is a plain name: the tree `overlays/<name>/` beside the profiles directory.
fn overlay_dir(profile: &Path, dir: &Path, name: &str) -> Result<PathBuf> {
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && !name.starts_with('.');
    if !plain {
        bail!(
            "{}: key `overlays`: {name:?} is not an overlay name: give the name of a directory under overlays/ (like \"base\"), not a path",
            profile.display()
        );
    }
    let root = dir.join("..").join("overlays");
    let path = root.join(name);
    if !path.is_dir() {
        bail!(
            "{}: key `overlays`: overlay {name:?} not found at {} (overlays are the directories under overlays/ beside the profiles directory)",
            profile.display(),
            path.display()
        );
    }
    inside(
        profile,
        &format!("key `overlays`: overlay {name:?}"),
        &path,
        &root,
    )
}

/// A kernel config fragment is a plain name: the file `kernel-config/<name>.config` beside the
/// profiles directory (as overlays are `overlays/<name>/`).
fn kernel_fragment(profile: &Path, dir: &Path, name: &str) -> Result<KernelFragment> {
    let plain = !name.is_empty()
        && !name.contains(['/', '\\', '\0'])
        && !name.starts_with('.')
        && !name.ends_with(".config");
    if !plain {
        bail!(
            "{}: key `kernel.config`: {name:?} is not a fragment name: give the name of a file kernel-config/<name>.config (like \"base\"), without the directory or the .config",
            profile.display()
        );
    }
    let root = dir.join("..").join("kernel-config");
    let path = root.join(format!("{name}.config"));
    if !path.is_file() {
        bail!(
            "{}: key `kernel.config`: fragment {name:?} not found at {} (fragments are the files kernel-config/<name>.config beside the profiles directory)",
            profile.display(),
            path.display()
        );
    }
    let path = inside(
        profile,
        &format!("key `kernel.config`: fragment {name:?}"),
        &path,
        &root,
    )?;
    let text = read_utf8(&path, "kernel config fragment")?;
    let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()));
    Ok(KernelFragment {
        name: name.to_string(),
        path,
        text,
        sha256,
    })
}

/// Merges the chain (first layer wins) and checks what only the whole can tell.
fn validate(top: &Path, layers: Vec<Layer>) -> Result<Profile> {
    let sources: Vec<PathBuf> = layers.iter().map(|l| l.path.clone()).collect();
    // Walk from the base to the top so later (more specific) layers override earlier ones.
    let mut image = RawImage::default();
    let mut debian = RawDebian::default();
    let mut debian_keyring_dir = PathBuf::new();
    let mut kernel = RawKernel::default();
    let mut kernel_config: Option<Vec<KernelFragment>> = None;
    let mut runtime = RawRuntime::default();
    let mut boot = RawBoot::default();
    let mut containers: Vec<(RawContainer, PathBuf, PathBuf, String)> = Vec::new();
    let mut admin: Option<RawAdmin> = None;
    let mut update = Update::default();
    let mut admin_file = PathBuf::new();
    let mut outputs = RawOutputs::default();
    let mut init: Option<PathBuf> = None;
    let mut overlays: Vec<Overlay> = Vec::new();
    let mut files: Vec<FileSpec> = Vec::new();
    let mut disk = RawDisk::default();

    for layer in layers.into_iter().rev() {
        let dir = layer.path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let raw = layer.raw;
        if let Some(i) = raw.image {
            image.name = i.name.or(image.name);
            image.version = i.version.or(image.version);
            image.source_date_epoch = i.source_date_epoch.or(image.source_date_epoch);
            image.hostname = i.hostname.or(image.hostname);
        }
        if let Some(d) = raw.debian {
            debian.suite = d.suite.or(debian.suite);
            debian.components = d.components.or(debian.components);
            debian.mirror = d.mirror.or(debian.mirror);
            debian.security_mirror = d.security_mirror.or(debian.security_mirror);
            if d.keyring.is_some() {
                debian.keyring = d.keyring;
                debian_keyring_dir = dir.clone();
            }
        }
        if let Some(k) = raw.kernel {
            kernel.package = k.package.or(kernel.package);
            kernel.cmdline = k.cmdline.or(kernel.cmdline);
            kernel.modules = k.modules.or(kernel.modules);
            kernel.initrd_modules = k.initrd_modules.or(kernel.initrd_modules);
            kernel.load_modules = k.load_modules.or(kernel.load_modules);
            kernel.source = k.source.or(kernel.source);
            if let Some(names) = k.config {
                let mut frags = Vec::new();
                for name in names {
                    frags.push(kernel_fragment(&layer.path, &dir, &name)?);
                }
                kernel_config = Some(frags);
            }
        }
        if let Some(r) = raw.runtime {
            runtime.packages = r.packages.or(runtime.packages);
            runtime.binaries = r.binaries.or(runtime.binaries);
        }
        if let Some(b) = raw.boot {
            boot.package = b.package.or(boot.package);
            boot.tries = b.tries.or(boot.tries);
            boot.timeout = b.timeout.or(boot.timeout);
            for (key, v) in [
                ("ready-deadline", b.ready_deadline),
                ("watchdog", b.watchdog),
                ("stable-after", b.stable_after),
                ("failed-boots", b.failed_boots),
            ] {
                if let Some(v) = v {
                    let what = format!("{}: key `boot.{key}`", layer.path.display());
                    let mut check = berth_contract::health::DEFAULT;
                    check
                        .set(key, v.into(), &what)
                        .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
                }
            }
            boot.ready_deadline = b.ready_deadline.or(boot.ready_deadline);
            boot.watchdog = b.watchdog.or(boot.watchdog);
            boot.stable_after = b.stable_after.or(boot.stable_after);
            boot.failed_boots = b.failed_boots.or(boot.failed_boots);
        }
        for c in raw.containers.unwrap_or_default() {
            // A child's container of the same name replaces the base's.
            containers.retain(|(o, ..)| o.name.get_ref().0 != c.name.get_ref().0);
            containers.push((c, layer.path.clone(), dir.clone(), layer.text.clone()));
        }
        if let Some(u) = raw.update {
            if let Some(k) = u.public_key {
                let path = dir.join(&k);
                if !path.is_file() {
                    bail!("{}: key `update.public-key`: {} does not exist (make a key pair with `berth keygen NAME`; paths are relative to the profile)", layer.path.display(), path.display());
                }
                let path = inside(&layer.path, "key `update.public-key`", &path, &dir)?;
                crate::util::keys::read_public(&path).with_context(|| {
                    format!("{}: key `update.public-key`", layer.path.display())
                })?;
                update.public_key = Some(path);
            }
            update.allow_unsigned = u.allow_unsigned.unwrap_or(update.allow_unsigned);
            let mut policy = update.policy();
            for (key, v) in [
                ("channel", u.channel),
                ("check-interval", u.check_interval.map(|i| i.to_string())),
                ("reboot", u.reboot),
            ] {
                if let Some(v) = v {
                    let what = format!("{}: key `update.{key}`", layer.path.display());
                    policy
                        .set(key, &v, &what)
                        .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
                }
            }
            update.channel = policy.channel;
            update.check_interval = policy.check_interval;
            update.reboot = policy.reboot.text();
        }
        if let Some(a) = raw.admin {
            let base = admin.take().unwrap_or_default();
            admin = Some(RawAdmin {
                enabled: a.enabled,
                user: a.user.or(base.user),
                port: a.port.or(base.port),
                authorized_keys: a.authorized_keys.or(base.authorized_keys),
                packages: a.packages.or(base.packages),
            });
            admin_file = layer.path.clone();
        }
        if let Some(o) = raw.outputs {
            outputs.formats = o.formats.or(outputs.formats);
            outputs.qcow2_compressed = o.qcow2_compressed.or(outputs.qcow2_compressed);
        }
        if let Some(i) = raw.init.and_then(|i| i.path) {
            init = Some(dir.join(i));
        }
        // Overlays and files accumulate: a profile adds to its base, it cannot silently drop
        // what the base put in (it can still override single paths, which apply later).
        for name in raw.overlays.unwrap_or_default() {
            let path = overlay_dir(&layer.path, &dir, &name)?;
            if !overlays.iter().any(|o| o.path == path) {
                overlays.push(Overlay { name, path });
            }
        }
        let mut seen: Vec<(ImagePath, (usize, usize))> = Vec::new();
        for f in raw.files.unwrap_or_default() {
            let at = line_col(&layer.text, f.path.span().start);
            let path = f.path.get_ref().0.clone();
            if let Some((_, first)) = seen.iter().find(|(p, _)| *p == path) {
                bail!(
                    "{}:{}:{}: [[files]] entry for {path} repeats the one at line {}: give each path once (a profile that `extends` this one may override it)",
                    layer.path.display(),
                    at.0,
                    at.1,
                    first.0
                );
            }
            seen.push((path, at));
            files.push(validate_file(&layer.path, &dir, f)?);
        }
        if let Some(d) = raw.disk {
            disk.root_size = d.root_size.or(disk.root_size);
            disk.esp_size = d.esp_size.or(disk.esp_size);
            disk.state_size = d.state_size.or(disk.state_size);
        }
    }

    let first = || top.display().to_string();
    let name = image.name.map(|n| n.0).with_context(|| {
        format!(
            "{}: key `image.name` is required (e.g. name = \"berth-qemu\")",
            first()
        )
    })?;
    let version = image.version.map(|v| v.0).with_context(|| {
        format!(
            "{}: key `image.version` is required (e.g. version = \"0.1.0\")",
            first()
        )
    })?;
    let source_date_epoch = image.source_date_epoch.map(|e| e.0).with_context(|| {
        format!(
            "{}: key `image.source-date-epoch` is required: every timestamp in the image is set to it (e.g. 1700000000)",
            first()
        )
    })?;
    let hostname = image.hostname.map(|h| h.0).unwrap_or_else(|| name.clone());

    let sizes = DiskSizes {
        root: disk.root_size.unwrap_or(DEFAULT_ROOT_SIZE),
        esp: disk.esp_size.unwrap_or(DEFAULT_ESP_SIZE),
        state: disk.state_size.unwrap_or(DEFAULT_STATE_SIZE),
    };
    for (key, v, min) in [
        ("disk.root-size", sizes.root, Bytes::mib(16)),
        ("disk.esp-size", sizes.esp, Bytes::mib(33)),
        ("disk.state-size", sizes.state, Bytes::mib(16)),
    ] {
        if v < min {
            bail!(
                "{}: key `{key}` = {v} is too small: at least {min}",
                first()
            );
        }
        if v.get() % crate::units::MIB != 0 {
            bail!("{}: key `{key}` = {v} must be a whole number of MiB (partitions are 1 MiB aligned)", first());
        }
    }

    let source = match (kernel.source.take(), kernel_config) {
        (Some(pkg), Some(config)) if !config.is_empty() => Some(KernelSource {
            package: pkg.0,
            config,
        }),
        (Some(pkg), _) => bail!(
            "{}: key `kernel.source` ({:?}) needs `kernel.config`: the fragments of kernel-config/ to configure it with, e.g. config = [\"base\", \"qemu\"]",
            top.display(),
            pkg.0
        ),
        (None, Some(_)) => bail!(
            "{}: key `kernel.config` configures a kernel built from source: give `kernel.source` too (e.g. source = \"linux-source-6.1\"), or drop `config` to use the packaged kernel of `kernel.package`",
            top.display()
        ),
        (None, None) => None,
    };
    if source.is_some() && kernel.modules.is_some() {
        bail!(
            "{}: key `kernel.modules` selects modules of a packaged kernel; a kernel built from source (`kernel.source`) has everything built in and no modules to select",
            top.display()
        );
    }

    if let Some(c) = &kernel.cmdline {
        if c.chars().any(|ch| ch.is_control() && ch != ' ') || c.contains('"') {
            bail!(
                "{}: key `kernel.cmdline`: {c:?} holds a newline, control character or double quote, which a boot entry's options line cannot carry",
                first()
            );
        }
    }
    let binaries: Vec<ImagePath> = runtime
        .binaries
        .map(|b| b.into_iter().map(|p| p.0).collect())
        .unwrap_or_else(|| {
            [
                "/usr/bin/containerd",
                "/usr/bin/containerd-shim-runc-v2",
                "/usr/bin/ctr",
                "/usr/sbin/runc",
            ]
            .iter()
            .filter_map(|p| ImagePath::new(p).ok())
            .collect()
        });
    let packages = runtime
        .packages
        .map(|p| p.into_iter().map(|p| p.0).collect())
        .unwrap_or_else(|| vec!["containerd".to_string(), "runc".to_string()]);
    if !binaries.is_empty() && packages.is_empty() {
        bail!("{}: key `runtime.packages` is empty but `runtime.binaries` lists files: name the packages that ship them", first());
    }

    let containers = containers
        .into_iter()
        .map(|(c, file, dir, text)| container(c, &file, &dir, &text, &version))
        .collect::<Result<Vec<_>>>()?;
    let admin = admin
        .filter(|a| a.enabled)
        .map(|a| validate_admin(a, &admin_file))
        .transpose()?;
    for c in &containers {
        if admin.is_some() && c.name == ADMIN_SERVICE {
            bail!("{}: [[containers]] {:?}: the name is taken by the admin container (`[admin]`); choose another", top.display(), c.name);
        }
    }
    let mut all: Vec<Service> = containers.iter().map(|c| c.service.clone()).collect();
    if admin.is_some() {
        all.push(Service::new(ADMIN_SERVICE, "admin"));
    }
    berth_contract::service::check(&all)
        .map_err(|e| anyhow::anyhow!("{}: [[containers]]: {e}", top.display()))?;
    let health = berth_contract::health::Policy {
        ready_deadline: boot
            .ready_deadline
            .unwrap_or(berth_contract::health::DEFAULT.ready_deadline),
        watchdog: boot
            .watchdog
            .unwrap_or(berth_contract::health::DEFAULT.watchdog),
        stable_after: boot
            .stable_after
            .unwrap_or(berth_contract::health::DEFAULT.stable_after),
        failed_boots: boot
            .failed_boots
            .unwrap_or(berth_contract::health::DEFAULT.failed_boots),
    };
    health
        .check(&format!("{}: [boot]", top.display()))
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?;

    Ok(Profile {
        path: top.to_path_buf(),
        sources,
        image: Image {
            name,
            version: version.clone(),
            source_date_epoch,
            hostname,
        },
        debian: Debian {
            suite: debian
                .suite
                .map(|s| s.0)
                .unwrap_or_else(|| DEFAULT_SUITE.to_string()),
            components: debian
                .components
                .map(|c| c.into_iter().map(|c| c.0).collect())
                .unwrap_or_else(|| DEFAULT_COMPONENTS.iter().map(|s| s.to_string()).collect()),
            mirror: debian.mirror.map(|u| u.0),
            security_mirror: debian.security_mirror.map(|u| u.0),
            keyring: debian.keyring.map(|k| debian_keyring_dir.join(k)),
        },
        kernel: Kernel {
            package: kernel
                .package
                .map(|p| p.0)
                .unwrap_or_else(|| DEFAULT_KERNEL_PACKAGE.to_string()),
            cmdline: kernel
                .cmdline
                .unwrap_or_else(|| DEFAULT_CMDLINE.to_string()),
            modules: kernel.modules,
            initrd_modules: kernel
                .initrd_modules
                .map(|m| m.into_iter().map(|m| m.0.replace('-', "_")).collect())
                .unwrap_or_else(|| {
                    DEFAULT_INITRD_MODULES
                        .iter()
                        .map(|s| s.to_string())
                        .collect()
                }),
            load_modules: kernel
                .load_modules
                .map(|m| m.into_iter().map(|m| m.0.replace('-', "_")).collect())
                .unwrap_or_else(|| DEFAULT_MAIN_MODULES.iter().map(|s| s.to_string()).collect()),
            source,
        },
        boot: Boot {
            package: boot
                .package
                .map(|p| p.0)
                .unwrap_or_else(|| DEFAULT_BOOT_PACKAGE.to_string()),
            tries: boot.tries.unwrap_or(DEFAULT_BOOT_TRIES),
            timeout: boot.timeout.unwrap_or(0),
            ready_deadline: health.ready_deadline,
            watchdog: health.watchdog,
            stable_after: health.stable_after,
            failed_boots: health.failed_boots,
        },
        outputs: Outputs {
            formats: outputs
                .formats
                .unwrap_or_default()
                .into_iter()
                .map(|f| f.0)
                .collect(),
            qcow2_compressed: outputs.qcow2_compressed.unwrap_or(false),
        },
        containers,
        admin,
        update,
        runtime: Runtime { packages, binaries },
        init: Init { path: init },
        overlays,
        files,
        disk: sizes,
    })
}

/// The service name of the admin container.
pub const ADMIN_SERVICE: &str = "admin";
/// What the admin container's image is made of (with their dependencies): the lock resolves
/// them, `root::admin` builds the image.
pub const ADMIN_PACKAGES: &[&str] = &["dropbear-bin", "busybox-static"];

/// One `[[containers]]` entry: where its image comes from, and its service, checked by the
/// services file's own parser so the profile accepts exactly what berth-init runs.
fn container(
    c: RawContainer,
    file: &Path,
    dir: &Path,
    text: &str,
    version: &str,
) -> Result<Container> {
    let (line, col) = line_col(text, c.name.span().start);
    let name = c.name.into_inner().0;
    let at = format!("{}:{line}:{col}: [[containers]] {name:?}", file.display());
    let image = c
        .image
        .unwrap_or_else(|| format!("localhost/berth/{name}:{version}"));
    let source = match (c.packages, c.archive) {
        (Some(p), None) if !p.is_empty() => ImageSource::Packages(p.into_iter().map(|p| p.0).collect()),
        (None, Some(a)) => {
            let path = dir.join(&a);
            if !path.exists() {
                bail!("{at}: `archive` {} does not exist (paths are relative to the profile; give an OCI archive from `docker save`, `podman save` or `skopeo copy`, or an OCI layout directory)", path.display());
            }
            ImageSource::Archive(inside(file, &format!("[[containers]] {name:?}: `archive`"), &path, dir)?)
        }
        (Some(_), Some(_)) => bail!("{at}: give `packages` (an image made of Debian packages) or `archive` (an OCI image you built), not both"),
        (Some(_), None) | (None, None) => bail!("{at}: name what the image is made of: `packages = [\"busybox-static\"]` (Debian packages) or `archive = \"images/app.tar\"` (an OCI archive)"),
    };
    let mut doc = serde_json::Map::new();
    doc.insert("name".into(), name.clone().into());
    doc.insert("image".into(), image.clone().into());
    if c.oneshot {
        doc.insert("kind".into(), "oneshot".into());
    }
    for (key, v) in [
        ("command", c.command),
        ("env", c.env),
        ("mounts", c.mounts),
        ("network", c.network),
        ("restart", c.restart),
        ("depends-on", c.depends_on),
        ("ready", c.ready),
        ("ready-timeout", c.ready_timeout),
        ("required", c.required),
        ("host-pid", c.host_pid),
        ("privileged", c.privileged),
    ] {
        if let Some(v) = v {
            doc.insert(
                key.into(),
                serde_json::to_value(v).with_context(|| format!("{at}: key `{key}`"))?,
            );
        }
    }
    let json = serde_json::Value::Object(doc).to_string();
    let node = berth_contract::json::parse(&json).map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
    let service = berth_contract::service::service(&node, "").map_err(|e| {
        // The contract's message starts with a position in the JSON made here; the key and
        // the reason are what the profile's author needs.
        let m = e.to_string();
        let m = m
            .split_once(": key ")
            .map_or(m.clone(), |(_, r)| format!("key {r}"));
        anyhow::anyhow!("{at}: {m}")
    })?;
    if service.command.is_empty() {
        if let ImageSource::Packages(_) = source {
            bail!("{at}: `command` is missing: an image made of packages has no default command; give the program and its arguments");
        }
    }
    Ok(Container {
        name,
        image,
        source,
        service,
    })
}

fn validate_admin(a: RawAdmin, file: &Path) -> Result<Admin> {
    let at = format!("{}: [admin]", file.display());
    let user = a.user.unwrap_or_else(|| "admin".to_string());
    let ok = !user.is_empty()
        && user.len() <= 32
        && user.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && user
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b));
    if !ok {
        bail!("{at}: key `user`: {user:?} is not a login name (lower-case letters, digits, `_`, `-`; at most 32; starting with a letter or `_`)");
    }
    let port = a.port.unwrap_or(22);
    if port == 0 {
        bail!("{at}: key `port`: 0 is not a port (1-65535)");
    }
    let keys = a.authorized_keys.unwrap_or_default();
    for (i, k) in keys.iter().enumerate() {
        if !berth_contract::config::valid_ssh_key(k) {
            bail!(
                "{at}: key `authorized-keys[{i}]`: {:?} is not an OpenSSH public key line (\"TYPE BASE64 [COMMENT]\", TYPE one of {})",
                k.chars().take(40).collect::<String>(),
                berth_contract::config::SSH_KEY_TYPES.join(", ")
            );
        }
    }
    Ok(Admin {
        user,
        port,
        authorized_keys: keys,
        packages: a
            .packages
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.0)
            .collect(),
    })
}

fn validate_file(profile: &Path, dir: &Path, f: RawFile) -> Result<FileSpec> {
    let path = f.path.into_inner().0;
    let kinds = [
        f.source.is_some(),
        f.content.is_some(),
        f.symlink.is_some(),
        f.dir,
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if kinds > 1 {
        bail!(
            "{}: [[files]] entry for {path}: give only one of `source`, `content`, `symlink`, `dir = true`",
            profile.display()
        );
    }
    let what = if let Some(s) = f.source {
        let src = dir.join(&s);
        if !src.is_file() {
            bail!(
                "{}: [[files]] entry for {path}: source {} does not exist (relative to the profile)",
                profile.display(),
                src.display()
            );
        }
        FileSource::Source(inside(
            profile,
            &format!("[[files]] entry for {path}: source"),
            &src,
            dir,
        )?)
    } else if let Some(c) = f.content {
        FileSource::Content(c)
    } else if let Some(t) = f.symlink {
        if t.is_empty() {
            bail!(
                "{}: [[files]] entry for {path}: `symlink` target is empty",
                profile.display()
            );
        }
        FileSource::Symlink(t)
    } else if f.dir {
        FileSource::Dir
    } else {
        if f.mode.is_none() && f.uid.is_none() && f.gid.is_none() {
            bail!(
                "{}: [[files]] entry for {path} says nothing: give `source`, `content`, `symlink` or `dir = true`, or `mode`/`uid`/`gid` to change an existing path",
                profile.display()
            );
        }
        FileSource::Attrs
    };
    for (key, id) in [("uid", f.uid), ("gid", f.gid)] {
        if id == Some(u32::MAX) {
            bail!(
                "{}: [[files]] entry for {path}: `{key} = 4294967295` is (uid_t)-1, which the kernel reads as \"no owner\": give a real id (0-4294967294)",
                profile.display()
            );
        }
    }
    Ok(FileSpec {
        path,
        what,
        mode: f.mode.map(|m| m.0),
        uid: f.uid,
        gid: f.gid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, text).unwrap();
        p
    }

    const MINIMAL: &str = r#"
schema = 1
[image]
name = "t"
version = "1.0"
source-date-epoch = 1700000000
"#;

    #[test]
    fn minimal_profile_gets_defaults() {
        let d = tempfile::tempdir().unwrap();
        let p = load(&write(d.path(), "p.toml", MINIMAL)).unwrap();
        assert_eq!(p.image.hostname, "t");
        assert_eq!(p.kernel.package, DEFAULT_KERNEL_PACKAGE);
        assert_eq!(p.disk.root, DEFAULT_ROOT_SIZE);
        assert_eq!(p.runtime.packages, ["containerd", "runc"]);
        assert_eq!(p.runtime.binaries.len(), 4);
    }

    #[test]
    fn boot_health_and_update_channel_keys() {
        let d = tempfile::tempdir().unwrap();
        let p = load(&write(d.path(), "p.toml", MINIMAL)).unwrap();
        assert_eq!(p.boot.health(), berth_contract::health::DEFAULT);
        assert_eq!(
            p.update.policy(),
            berth_contract::channel::Policy::default()
        );
        let text = format!(
            "{MINIMAL}\n[boot]\nready-deadline = 45\nwatchdog = 10\n\n[update]\nchannel = \"http://10.0.2.100:8080/\"\ncheck-interval = 600\nreboot = \"02:00-04:00\"\n"
        );
        let p = load(&write(d.path(), "p.toml", &text)).unwrap();
        assert_eq!((p.boot.ready_deadline, p.boot.watchdog), (45, 10));
        let u = p.update.policy();
        assert_eq!(u.channel.as_deref(), Some("http://10.0.2.100:8080/"));
        assert_eq!(u.check_interval, 600);
        assert_eq!(u.reboot.text(), "02:00-04:00");
        for (extra, want) in [
            ("[boot]\nwatchdog = 0\n", "needs a watchdog"),
            (
                "[boot]\nfailed-boots = 0\n",
                "key `boot.failed-boots`: failed-boots = 0 is out of range",
            ),
            (
                "[update]\nchannel = \"https://x/\"\n",
                "key `update.channel`: \"https://x/\" is not an http:// URL",
            ),
            (
                "[update]\nreboot = \"later\"\n",
                "key `update.reboot`: \"later\" is not a reboot policy",
            ),
        ] {
            let e = load(&write(d.path(), "p.toml", &format!("{MINIMAL}\n{extra}")))
                .unwrap_err()
                .to_string();
            assert!(e.contains("p.toml") && e.contains(want), "{extra}: {e}");
        }
    }

    #[test]
    fn unknown_key_is_reported_with_line_and_column() {
        let d = tempfile::tempdir().unwrap();
        let text = format!("{MINIMAL}\n[disk]\nroot-szie = \"1GiB\"\n");
        let e = load(&write(d.path(), "p.toml", &text))
            .unwrap_err()
            .to_string();
        assert!(e.contains("p.toml:9:1:"), "{e}");
        assert!(e.contains("unknown field `root-szie`"), "{e}");
        assert!(e.contains("root-size"), "should list valid keys: {e}");
    }

    #[test]
    fn wrong_type_is_reported_at_the_value() {
        let d = tempfile::tempdir().unwrap();
        let text = MINIMAL.replace("1700000000", "\"yesterday\"");
        let e = load(&write(d.path(), "p.toml", &text))
            .unwrap_err()
            .to_string();
        assert!(e.contains("p.toml:6:21:"), "{e}");
        let text = format!("{MINIMAL}\n[disk]\nroot-size = \"lots\"\n");
        let e = load(&write(d.path(), "q.toml", &text))
            .unwrap_err()
            .to_string();
        assert!(e.contains("q.toml:9:13:") && e.contains("512MiB"), "{e}");
    }

    #[test]
    fn bad_values_say_what_is_valid() {
        let d = tempfile::tempdir().unwrap();
        let text = MINIMAL.replace("name = \"t\"", "name = \"no spaces\"");
        let e = load(&write(d.path(), "p.toml", &text))
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid name") && e.contains("a-z"), "{e}");
        let text = format!("{MINIMAL}\n[[files]]\npath = \"/x\"\ncontent = \"\"\nmode = \"999\"\n");
        let e = load(&write(d.path(), "p.toml", &text))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("invalid mode") && e.contains("p.toml:11:8:"),
            "{e}"
        );
        let text = format!("{MINIMAL}\n[runtime]\nbinaries = [\"usr/bin/x\"]\n");
        let e = load(&write(d.path(), "p.toml", &text))
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be absolute"), "{e}");
    }

    #[test]
    fn missing_schema_and_wrong_schema_are_errors() {
        let d = tempfile::tempdir().unwrap();
        let e = load(&write(
            d.path(),
            "p.toml",
            &MINIMAL.replace("schema = 1", ""),
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("`schema` is missing"), "{e}");
        let e = load(&write(
            d.path(),
            "p.toml",
            &MINIMAL.replace("schema = 1", "schema = 9"),
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("schema 1") && e.contains("says 9"), "{e}");
    }

    #[test]
    fn extends_merges_with_child_winning_and_lists_accumulating() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("overlays/base")).unwrap();
        fs::create_dir_all(d.path().join("overlays/extra")).unwrap();
        let prof = d.path().join("profiles");
        fs::create_dir_all(&prof).unwrap();
        write(
            &prof,
            "base.toml",
            &format!("overlays = [\"base\"]\n{MINIMAL}\n[disk]\nroot-size = \"512MiB\"\nesp-size = \"64MiB\"\n"),
        );
        let child = write(
            &prof,
            "child.toml",
            "schema = 1\nextends = \"base.toml\"\noverlays = [\"extra\"]\n[image]\nname = \"child\"\n[disk]\nroot-size = \"2GiB\"\n",
        );
        let p = load(&child).unwrap();
        assert_eq!(p.image.name, "child");
        assert_eq!(p.image.version, "1.0");
        assert_eq!(p.disk.root, Bytes(2 << 30));
        assert_eq!(p.disk.esp, Bytes::mib(64));
        let names: Vec<_> = p.overlays.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["base", "extra"]);
        assert_eq!(p.sources.len(), 2);
    }

    #[test]
    fn extends_cycle_and_missing_base_are_errors() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a.toml", "schema = 1\nextends = \"b.toml\"\n");
        write(d.path(), "b.toml", "schema = 1\nextends = \"a.toml\"\n");
        let e = load(&d.path().join("a.toml")).unwrap_err().to_string();
        assert!(e.contains("cycle"), "{e}");
        write(d.path(), "c.toml", "schema = 1\nextends = \"nope.toml\"\n");
        let e = load(&d.path().join("c.toml")).unwrap_err().to_string();
        assert!(e.contains("nope.toml does not exist"), "{e}");
    }

    #[test]
    fn missing_overlay_names_the_path_tried() {
        let d = tempfile::tempdir().unwrap();
        let text = format!("overlays = [\"ghost\"]\n{MINIMAL}");
        let e = load(&write(d.path(), "p.toml", &text))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("overlay \"ghost\" not found") && e.contains("overlays/ghost"),
            "{e}"
        );
    }

    /// Regression (host files leaking into the image): an overlay named like a path, or a
    /// `[[files]]` source outside the profile's directory (directly, by `..`, or through a
    /// symlink), is an error naming the key; nothing is read from there.
    /// `[kernel] source` + `config`: fragments are names under kernel-config/, read with the
    /// profile (their content goes into the build's identity); each half without the other,
    /// and a module filter on a kernel without modules, are errors naming the key.
    #[test]
    fn source_kernels_take_fragment_names_and_need_both_keys() {
        let d = tempfile::tempdir().unwrap();
        let prof = d.path().join("profiles");
        std::fs::create_dir_all(&prof).unwrap();
        std::fs::create_dir_all(d.path().join("kernel-config")).unwrap();
        std::fs::write(d.path().join("kernel-config/base.config"), "CONFIG_A=y\n").unwrap();
        let with =
            |kernel: &str| write(&prof, "p.toml", &format!("{MINIMAL}\n[kernel]\n{kernel}\n"));
        let p = load(&with("source = \"linux-source-6.1\"\nconfig = [\"base\"]")).unwrap();
        let src = p.kernel.source.unwrap();
        assert_eq!(src.package, "linux-source-6.1");
        assert_eq!(src.config[0].name, "base");
        assert_eq!(src.config[0].text, "CONFIG_A=y\n");
        assert_eq!(src.config[0].sha256.len(), 64);
        let err = |k: &str| format!("{:#}", load(&with(k)).unwrap_err());
        let e = err("source = \"linux-source-6.1\"");
        assert!(
            e.contains("`kernel.source`") && e.contains("needs `kernel.config`"),
            "{e}"
        );
        let e = err("config = [\"base\"]");
        assert!(
            e.contains("`kernel.config`") && e.contains("give `kernel.source`"),
            "{e}"
        );
        let e =
            err("source = \"linux-source-6.1\"\nconfig = [\"base\"]\nmodules = [\"kernel/fs/*\"]");
        assert!(
            e.contains("`kernel.modules`") && e.contains("no modules"),
            "{e}"
        );
        for bad in ["../../etc/passwd", "base.config", ".hidden", ""] {
            let e = err(&format!(
                "source = \"linux-source-6.1\"\nconfig = [{bad:?}]"
            ));
            assert!(e.contains("not a fragment name"), "{bad:?}: {e}");
        }
        let e = err("source = \"linux-source-6.1\"\nconfig = [\"ghost\"]");
        assert!(
            e.contains("fragment \"ghost\" not found") && e.contains("kernel-config"),
            "{e}"
        );
    }

    #[test]
    fn overlays_and_sources_cannot_escape() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("overlays/base")).unwrap();
        std::fs::create_dir_all(d.path().join("profiles")).unwrap();
        for name in ["../../../etc", "/etc", "..", ".", "", "a/b", ".hidden"] {
            let text = format!("overlays = [{name:?}]\n{MINIMAL}");
            let p = write(&d.path().join("profiles"), "p.toml", &text);
            let e = format!("{:#}", load(&p).unwrap_err());
            assert!(e.contains("key `overlays`"), "{name:?}: {e}");
        }
        // An overlay that is a symlink to a host directory.
        std::os::unix::fs::symlink("/etc", d.path().join("overlays/sneaky")).unwrap();
        let p = write(
            &d.path().join("profiles"),
            "p.toml",
            &format!("overlays = [\"sneaky\"]\n{MINIMAL}"),
        );
        let e = format!("{:#}", load(&p).unwrap_err());
        assert!(e.contains("outside") && e.contains("overlays"), "{e}");
        // Sources.
        std::os::unix::fs::symlink("/etc/hostname", d.path().join("profiles/link")).unwrap();
        std::fs::write(d.path().join("outside"), "x").unwrap();
        for src in [
            "/etc/hostname",
            "../outside",
            "../../../../etc/hostname",
            "link",
        ] {
            let text = format!("{MINIMAL}\n[[files]]\npath = \"/etc/x\"\nsource = {src:?}\n");
            let p = write(&d.path().join("profiles"), "p.toml", &text);
            let e = format!("{:#}", load(&p).unwrap_err());
            assert!(
                e.contains("[[files]] entry for /etc/x: source") && e.contains("outside"),
                "{src}: {e}"
            );
        }
        // Inside is fine, and the overlay name still works.
        std::fs::write(d.path().join("profiles/motd"), "hi").unwrap();
        let text = format!("overlays = [\"base\"]\n{MINIMAL}\n[[files]]\npath = \"/etc/motd\"\nsource = \"motd\"\n");
        let p = load(&write(&d.path().join("profiles"), "p.toml", &text)).unwrap();
        assert_eq!(p.overlays.len(), 1);
    }

    /// Regression: two `[[files]]` entries for one path in one profile silently kept the last.
    #[test]
    fn duplicate_file_paths_name_both_lines() {
        let d = tempfile::tempdir().unwrap();
        let text = format!(
            "{MINIMAL}\n[[files]]\npath = \"/etc/motd\"\ncontent = \"a\"\n\n[[files]]\npath = \"/etc/motd\"\ncontent = \"b\"\n"
        );
        let first = text.lines().position(|l| l.contains("/etc/motd")).unwrap() + 1;
        let second = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.contains("/etc/motd"))
            .last()
            .unwrap()
            .0
            + 1;
        let p = write(d.path(), "p.toml", &text);
        let e = format!("{:#}", load(&p).unwrap_err());
        assert!(
            e.contains(&format!("p.toml:{second}:")) && e.contains(&format!("line {first}")),
            "{e}"
        );
    }

    /// Regression (BAD-10): a profile that is not UTF-8 names the line and column.
    #[test]
    fn a_non_utf8_profile_names_the_line() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("p.toml");
        std::fs::write(&p, b"schema = 1\n[image]\nname = \"t\xff\"\n").unwrap();
        let e = format!("{:#}", load(&p).unwrap_err());
        assert!(e.contains("p.toml:3:10: byte 0xff is not UTF-8"), "{e}");
    }

    /// Regressions (BAD-10): a newline in kernel.cmdline, and uid 4294967295.
    #[test]
    fn cmdline_control_characters_and_uid_minus_one_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let text = format!("{MINIMAL}\n[kernel]\ncmdline = \"console=ttyS0\\ninit=/bin/sh\"\n");
        let e = format!("{:#}", load(&write(d.path(), "p.toml", &text)).unwrap_err());
        assert!(e.contains("kernel.cmdline") && e.contains("newline"), "{e}");
        let text =
            format!("{MINIMAL}\n[[files]]\npath = \"/etc/x\"\ncontent = \"x\"\nuid = 4294967295\n");
        let e = format!("{:#}", load(&write(d.path(), "p.toml", &text)).unwrap_err());
        assert!(e.contains("uid = 4294967295"), "{e}");
    }

    #[test]
    fn too_small_sizes_are_rejected() {
        let d = tempfile::tempdir().unwrap();
        let text = format!("{MINIMAL}\n[disk]\nesp-size = \"1MiB\"\n");
        let e = load(&write(d.path(), "p.toml", &text))
            .unwrap_err()
            .to_string();
        assert!(e.contains("disk.esp-size") && e.contains("at least"), "{e}");
    }

    #[test]
    fn containers_take_the_services_schema_and_say_what_is_wrong() {
        let d = tempfile::tempdir().unwrap();
        let ok = format!(
            "{MINIMAL}\n[[containers]]\nname = \"web\"\npackages = [\"busybox-static\"]\ncommand = [\"/bin/busybox\", \"httpd\", \"-f\", \"two words\"]\nenv = {{ A = \"x y\" }}\nmounts = [{{ source = \"/var/lib/web\", target = \"/www\", read-only = true }}]\nready = {{ tcp = 80 }}\nrestart = \"on-failure\"\n\n[[containers]]\nname = \"job\"\noneshot = true\npackages = [\"busybox-static\"]\ncommand = [\"/bin/true\"]\ndepends-on = [\"web\"]\n\n[admin]\nuser = \"ops\"\n"
        );
        let p = load(&write(d.path(), "p.toml", &ok)).unwrap();
        let web = &p.containers[0];
        assert_eq!(web.image, "localhost/berth/web:1.0");
        assert_eq!(web.service.command[3], "two words");
        assert_eq!(web.service.env, [("A".to_string(), "x y".to_string())]);
        assert!(web.service.mounts[0].read_only);
        assert_eq!(
            p.containers[1].service.kind,
            berth_contract::service::Kind::Oneshot
        );
        let a = p.admin.as_ref().unwrap();
        assert_eq!((a.user.as_str(), a.port), ("ops", 22));
        // `berth inspect` shows the service as the services file has it.
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["containers"][0]["service"]["ready"]["tcp"], 80);

        write(d.path(), "app.tar", "");
        for (body, want) in [
            ("name = \"w\"\ncommand = [\"/x\"]", "name what the image is made of"),
            ("name = \"w\"\npackages = [\"busybox-static\"]\narchive = \"app.tar\"", "not both"),
            ("name = \"w\"\narchive = \"missing.tar\"", "missing.tar does not exist"),
            ("name = \"w\"\narchive = \"../../etc/passwd\"", "outside"),
            ("name = \"w\"\npackages = [\"busybox-static\"]", "`command` is missing"),
            ("name = \"w\"\npackages = [\"busybox-static\"]\ncommand = [\"/x\"]\nmounts = [{ source = \"/etc\", target = \"/e\" }]", "key `mounts[0].source`"),
            ("name = \"w\"\npackages = [\"busybox-static\"]\ncommand = [\"/x\"]\nrestart = \"sometimes\"", "key `restart`"),
            ("name = \"w\"\npackages = [\"busybox-static\"]\ncommand = [\"/x\"]\ndepends-on = [\"db\"]", "not a service"),
            ("name = \"w\"\npackages = [\"busybox-static\"]\ncommand = [\"/x\"]\ncolour = 1", "unknown field `colour`"),
        ] {
            let text = format!("{MINIMAL}\n[[containers]]\n{body}\n");
            let e = format!("{:#}", load(&write(d.path(), "c.toml", &text)).unwrap_err());
            assert!(e.contains(want), "{body}: {e}");
            assert!(e.contains("c.toml"), "{e}");
        }
        for (body, want) in [
            ("user = \"Root Admin\"", "not a login name"),
            ("port = 0", "not a port"),
            ("authorized-keys = [\"not a key\"]", "authorized-keys[0]"),
        ] {
            let text = format!("{MINIMAL}\n[admin]\n{body}\n");
            let e = format!("{:#}", load(&write(d.path(), "a.toml", &text)).unwrap_err());
            assert!(e.contains(want), "{body}: {e}");
        }
        let text = format!("{MINIMAL}\n[admin]\n\n[[containers]]\nname = \"admin\"\npackages = [\"busybox-static\"]\ncommand = [\"/x\"]\n");
        let e = format!("{:#}", load(&write(d.path(), "n.toml", &text)).unwrap_err());
        assert!(e.contains("taken by the admin container"), "{e}");
        let text = format!("{MINIMAL}\n[admin]\nenabled = false\n");
        assert!(load(&write(d.path(), "off.toml", &text))
            .unwrap()
            .admin
            .is_none());
    }
}
