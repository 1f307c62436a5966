//! Vagrant boxes: `berth-libvirt.box` (qcow2 for vagrant-libvirt) and `berth-virtualbox.box`
//! (OVF + streamOptimized VMDK for VirtualBox). A box is a tar.gz that `vagrant box add` unpacks:
//! `metadata.json` names the provider, a `Vagrantfile` carries the box's defaults.
//!
//! Reproducible archives: entries sorted by name, each with mode 0644, uid/gid 0, no user or
//! group names and mtime = SOURCE_DATE_EPOCH; gzip with header mtime 0, no file name, OS byte
//! 255 ("unknown") and a fixed level. The compressor is the miniz_oxide in Cargo.lock.
//!
//! Vagrant reaches a berth machine through the admin container (profile `[admin]`): dropbear
//! and a busybox shell, the user uid 0, Vagrant's insecure key baked in by the vagrant profile.
//! The Vagrantfile says what that shell-less, sudo-less OS needs: `ssh.shell = "sh"`,
//! `ssh.sudo_command = "%c"`, `insert_key = false` (key insertion edits files the image owns),
//! synced folders off, and a small guest plugin `berth` whose capabilities are berthctl calls:
//! `change_host_name` (`berthctl hostname`, so `vm.hostname` works), `halt` (`berthctl
//! poweroff`). Without an admin container `vagrant up` can only wait for SSH until boot_timeout.

use std::fs;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use flate2::{Compression, GzBuilder};
use serde_json::json;

use super::{derive_id, disk_file_for, Format, FormatCtx, Progress, MIB};
use crate::util::digest::uuid_string;

/// gzip level for boxes: zlib's default; the qcow2 inside is mostly incompressible already.
const GZIP_LEVEL: u32 = 6;
/// What the VirtualBox box's VM gets (the OVF and the Vagrantfile agree).
pub const VB_MEMORY_MIB: u32 = 1024;
pub const VB_CPUS: u32 = 1;
/// The disk inside the VirtualBox box, as box.ovf names it.
pub const VB_DISK_NAME: &str = "disk.vmdk";
const GIB: u64 = 1 << 30;

/// UEFI firmware images that work as a single read-only ROM (vagrant-libvirt uses `<loader
/// type='rom'>` when no nvram is given). The first that exists on the Vagrant host is used.
const LIBVIRT_ROMS: &[&str] = &[
    "/usr/share/ovmf/OVMF.fd",          // Debian, Ubuntu (package ovmf)
    "/usr/share/edk2/x64/OVMF.4m.fd",   // Arch (edk2-ovmf)
    "/usr/share/edk2-ovmf/x64/OVMF.fd", // older Arch
    "/usr/share/qemu/OVMF.fd",          // openSUSE, some Arch setups
    "/usr/share/edk2/ovmf/OVMF.fd",     // older Fedora
];

/// Otherwise split firmware (code + a variable-store template) as pflash, with a variable
/// store per machine that libvirt makes from the template: current Fedora ships only these.
const LIBVIRT_PFLASH: &[(&str, &str)] = &[
    (
        "/usr/share/edk2/ovmf/OVMF_CODE.fd",
        "/usr/share/edk2/ovmf/OVMF_VARS.fd",
    ), // Fedora
    (
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
    ), // Debian, Ubuntu
    (
        "/usr/share/edk2/x64/OVMF_CODE.4m.fd",
        "/usr/share/edk2/x64/OVMF_VARS.4m.fd",
    ), // Arch
    (
        "/usr/share/qemu/edk2-x86_64-code.fd",
        "/usr/share/qemu/edk2-i386-vars.fd",
    ), // QEMU's own
];

/// One member of a box.
enum Member {
    Bytes(Vec<u8>),
    File(PathBuf),
}

pub(crate) fn write_libvirt(ctx: &FormatCtx, dest: &Path, progress: &Progress) -> Result<()> {
    let (qcow2, _guard) = disk_file_for(Format::Qcow2, ctx, progress)?;
    let metadata = json!({
        "provider": "libvirt",
        "format": "qcow2",
        // vagrant-libvirt reads whole GB here and sizes the machine's volume from it.
        "virtual_size": ctx.disk_size.div_ceil(GIB),
    });
    let members = vec![
        (
            "Vagrantfile",
            Member::Bytes(libvirt_vagrantfile(ctx).into_bytes()),
        ),
        ("box.img", Member::File(qcow2)),
        ("metadata.json", Member::Bytes(pretty(&metadata)?)),
    ];
    write_box(dest, members, ctx.mtime, progress)
}

pub(crate) fn write_virtualbox(ctx: &FormatCtx, dest: &Path, progress: &Progress) -> Result<()> {
    let (vmdk, _guard) = disk_file_for(Format::Vmdk, ctx, progress)?;
    let vmdk_size = fs::metadata(&vmdk)?.len();
    let metadata = json!({ "provider": "virtualbox" });
    let members = vec![
        (
            "Vagrantfile",
            Member::Bytes(virtualbox_vagrantfile(ctx).into_bytes()),
        ),
        ("box.ovf", Member::Bytes(ovf(ctx, vmdk_size).into_bytes())),
        (VB_DISK_NAME, Member::File(vmdk)),
        ("metadata.json", Member::Bytes(pretty(&metadata)?)),
    ];
    write_box(dest, members, ctx.mtime, progress)
}

fn pretty(v: &serde_json::Value) -> Result<Vec<u8>> {
    let mut b = serde_json::to_vec_pretty(v)?;
    b.push(b'\n');
    Ok(b)
}

/// Writes the members as a reproducible tar.gz (see the module doc).
fn write_box(
    dest: &Path,
    mut members: Vec<(&str, Member)>,
    mtime: i64,
    progress: &Progress,
) -> Result<()> {
    members.sort_by(|a, b| a.0.cmp(b.0));
    let total: u64 = members
        .iter()
        .map(|(_, m)| match m {
            Member::Bytes(b) => Ok(b.len() as u64),
            Member::File(p) => Ok(fs::metadata(p)?.len()),
        })
        .sum::<Result<u64>>()?;
    progress.start(total);
    let f = fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    let gz = GzBuilder::new().mtime(0).operating_system(255).write(
        BufWriter::with_capacity(MIB as usize, f),
        Compression::new(GZIP_LEVEL),
    );
    let mut tar = tar::Builder::new(gz);
    for (name, m) in members {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime.max(0) as u64);
        match m {
            Member::Bytes(b) => {
                h.set_size(b.len() as u64);
                tar.append_data(&mut h, name, &b[..])?;
                progress.inc(b.len() as u64);
            }
            Member::File(p) => {
                let file =
                    fs::File::open(&p).with_context(|| format!("opening {}", p.display()))?;
                h.set_size(file.metadata()?.len());
                let r = CountingReader {
                    inner: file,
                    progress,
                };
                tar.append_data(&mut h, name, r)
                    .with_context(|| format!("adding {} as {name}", p.display()))?;
            }
        }
    }
    let gz = tar.into_inner()?;
    let w = gz.finish()?;
    w.into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
        .context("flushing")?;
    Ok(())
}

struct CountingReader<'a, R> {
    inner: R,
    progress: &'a Progress,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.inc(n as u64);
        Ok(n)
    }
}

/// Ruby string literal (double-quoted, escaped).
fn rb(s: &str) -> String {
    format!("{s:?}").replace('#', "\\#")
}

/// A guest plugin for berth machines, defined in the box's Vagrantfile (boxes can carry Ruby):
/// Vagrant's Linux capabilities assume bash, sudo and a writable /etc in the login's root.
const GUEST_PLUGIN: &str = r#"
# A berth machine is reached through its admin container: busybox sh, no sudo, the host's
# /etc not the login's. These capabilities ask berth-init (berthctl) instead.
module BerthGuest
  class Guest < Vagrant.plugin("2", :guest)
    def detect?(machine)
      machine.communicate.test("test -x /usr/bin/berthctl")
    end
  end

  class Plugin < Vagrant.plugin("2")
    name "berth guest"
    guest(:berth, :linux) { Guest }
    guest_capability(:berth, :change_host_name) { Caps }
    guest_capability(:berth, :halt) { Caps }
  end

  class Caps
    def self.change_host_name(machine, name)
      machine.communicate.execute("berthctl hostname '#{name.to_s.split(".").first}'")
    end

    def self.halt(machine)
      machine.communicate.execute("berthctl poweroff")
    rescue IOError, Vagrant::Errors::SSHDisconnected
      # The machine went down while the command ran: that is the point.
    end
  end
end
"#;

fn vagrantfile_head(ctx: &FormatCtx) -> String {
    let name = ctx.image_name.replace('\n', " ");
    let version = ctx.version.replace('\n', " ");
    match ctx.ssh_user {
        Some(user) => format!(
            "# Defaults of the berth box {name} {version}; a project's own Vagrantfile overrides them.\n\
             {GUEST_PLUGIN}\n\
             Vagrant.configure(\"2\") do |config|\n  \
               config.vm.guest = :berth\n  \
               config.ssh.username = {user}\n  \
               # The admin container has busybox sh, no bash, no sudo (the user is uid 0).\n  \
               config.ssh.shell = \"sh\"\n  \
               config.ssh.sudo_command = \"%c\"\n  \
               # The image authorizes Vagrant's insecure key; inserting another edits the image's files.\n  \
               config.ssh.insert_key = false\n  \
               # Synced folders need tools an immutable image does not have.\n  \
               config.vm.synced_folder \".\", \"/vagrant\", disabled: true\n",
            user = rb(user),
        ),
        None => format!(
            "# Defaults of the berth box {name} {version}; a project's own Vagrantfile overrides them.\n\
             #\n\
             # This image has no admin container (profile [admin]), so no SSH server: `vagrant up`\n\
             # boots the machine and then waits for SSH until boot_timeout. Synced folders need SSH: off.\n\
             Vagrant.configure(\"2\") do |config|\n  \
               config.vm.synced_folder \".\", \"/vagrant\", disabled: true\n  \
               config.ssh.insert_key = false\n"
        ),
    }
}

fn libvirt_vagrantfile(ctx: &FormatCtx) -> String {
    let roms = LIBVIRT_ROMS
        .iter()
        .map(|l| rb(l))
        .collect::<Vec<_>>()
        .join(",\n      ");
    let pflash = LIBVIRT_PFLASH
        .iter()
        .map(|(c, v)| format!("[{}, {}]", rb(c), rb(v)))
        .collect::<Vec<_>>()
        .join(",\n      ");
    format!(
        "{head}\n  \
         config.vm.provider :libvirt do |libvirt|\n    \
           libvirt.memory = {mem}\n    \
           libvirt.cpus = {cpus}\n    \
           libvirt.machine_type = \"q35\"\n    \
           libvirt.disk_bus = \"virtio\"\n    \
           libvirt.nic_model_type = \"virtio\"\n    \
           # berth boots with UEFI only (systemd-boot on the ESP) and keeps its boot state on the\n    \
           # ESP, not in UEFI variables. A combined OVMF image works as a read-only ROM; split\n    \
           # firmware gets a variable store per machine, made by libvirt from the template.\n    \
           rom = [\n      {roms}\n    ].find {{ |f| File.exist?(f) }}\n    \
           code, vars = [\n      {pflash}\n    ].find {{ |c, v| File.exist?(c) && File.exist?(v) }}\n    \
           if rom\n      \
             libvirt.loader = rom\n    \
           elsif code\n      \
             libvirt.loader = code\n      \
             libvirt.nvram = File.join(\"/var/lib/libvirt/qemu/nvram\", \"berth-#{{File.basename(Dir.pwd)}}-#{{File.basename(vars)}}\")\n    \
           else\n      \
             raise \"berth: no UEFI firmware on this host: install ovmf (Debian, Ubuntu) or edk2-ovmf (Fedora, Arch)\"\n    \
           end\n  \
         end\n\
         end\n",
        head = vagrantfile_head(ctx),
        mem = VB_MEMORY_MIB,
        cpus = VB_CPUS,
    )
}

fn virtualbox_vagrantfile(ctx: &FormatCtx) -> String {
    format!(
        "{head}\n  \
         config.vm.provider \"virtualbox\" do |vb|\n    \
           vb.memory = {mem}\n    \
           vb.cpus = {cpus}\n    \
           # No guest additions in an immutable image.\n    \
           vb.check_guest_additions = false\n    \
           vb.functional_vboxsf = false\n    \
           # berth boots with UEFI only; VirtualBox does not take the firmware from box.ovf.\n    \
           vb.customize [\"modifyvm\", :id, \"--firmware\", \"efi\"]\n  \
         end\n\
         end\n",
        head = vagrantfile_head(ctx),
        mem = VB_MEMORY_MIB,
        cpus = VB_CPUS,
    )
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// box.ovf: an OVF 1.0 envelope with one VirtualSystem: 1 vCPU, 1 GiB, a virtio-scsi controller
/// (VirtualBox >= 6.1; the Debian cloud kernel has no AHCI driver) holding the streamOptimized
/// VMDK, one virtio NIC on NAT, EFI firmware (VMware's
/// `vmw:Config firmware=efi`; VirtualBox gets EFI from the Vagrantfile instead).
pub fn ovf(ctx: &FormatCtx, vmdk_size: u64) -> String {
    let name = xml(&format!("berth-{}", ctx.image_name));
    let version = xml(ctx.version);
    let disk_uuid = uuid_string(&derive_id("berth-vmdk-uuid", &ctx.seed));
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope ovf:version="1.0" xml:lang="en-US" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:vbox="http://www.virtualbox.org/ovf/machine" xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References>
    <File ovf:id="file1" ovf:href="{disk}" ovf:size="{vmdk_size}"/>
  </References>
  <DiskSection>
    <Info>List of the virtual disks used in the package</Info>
    <Disk ovf:capacity="{capacity}" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized" vbox:uuid="{disk_uuid}"/>
  </DiskSection>
  <NetworkSection>
    <Info>Logical networks used in the package</Info>
    <Network ovf:name="NAT">
      <Description>Logical network used by this appliance.</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="{name}">
    <Info>A virtual machine</Info>
    <ProductSection>
      <Info>Meta-information about the installed software</Info>
      <Product>{name}</Product>
      <Version>{version}</Version>
    </ProductSection>
    <OperatingSystemSection ovf:id="96">
      <Info>The kind of installed guest operating system</Info>
      <Description>Debian_64</Description>
      <vbox:OSType ovf:required="false">Debian_64</vbox:OSType>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements for a virtual machine</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>virtualbox-2.2</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:Caption>{cpus} virtual CPU</rasd:Caption>
        <rasd:Description>Number of virtual CPUs</rasd:Description>
        <rasd:ElementName>{cpus} virtual CPU</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>{cpus}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits>
        <rasd:Caption>{mem} MB of memory</rasd:Caption>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>{mem} MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>{mem}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Caption>virtioSCSIController0</rasd:Caption>
        <rasd:Description>VirtioSCSI Controller</rasd:Description>
        <rasd:ElementName>virtioSCSIController0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>VirtioSCSI</rasd:ResourceSubType>
        <rasd:ResourceType>20</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Caption>Ethernet adapter on 'NAT'</rasd:Caption>
        <rasd:Connection>NAT</rasd:Connection>
        <rasd:ElementName>Ethernet adapter on 'NAT'</rasd:ElementName>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:ResourceSubType>virtio</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:Caption>disk1</rasd:Caption>
        <rasd:Description>Disk Image</rasd:Description>
        <rasd:ElementName>disk1</rasd:ElementName>
        <rasd:HostResource>/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#,
        disk = VB_DISK_NAME,
        capacity = ctx.disk_size,
        cpus = VB_CPUS,
        mem = VB_MEMORY_MIB,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(dir: &'a Path, name: &'a str) -> FormatCtx<'a> {
        FormatCtx {
            out_dir: dir,
            disk: dir,
            image_name: name,
            version: "1.2.3",
            mtime: 1_700_000_000,
            disk_size: 3 * GIB + 512,
            seed: [1; 32],
            qcow2_compressed: false,
            ssh_user: Some("vagrant"),
        }
    }

    #[test]
    fn ovf_escapes_names_and_states_capacity() {
        let d = Path::new("/nonexistent");
        let o = ovf(&ctx(d, "a<b&c"), 42);
        assert!(o.contains("ovf:id=\"berth-a&lt;b&amp;c\""));
        assert!(o.contains(&format!("ovf:capacity=\"{}\"", 3 * GIB + 512)));
        assert!(o.contains("ovf:href=\"disk.vmdk\" ovf:size=\"42\""));
        assert!(!o.contains("a<b"));
    }

    #[test]
    fn vagrantfiles_turn_off_ssh_dependent_features() {
        let d = Path::new("/nonexistent");
        for v in [
            libvirt_vagrantfile(&ctx(d, "x")),
            virtualbox_vagrantfile(&ctx(d, "x")),
        ] {
            assert!(v.contains("synced_folder \".\", \"/vagrant\", disabled: true"));
            assert!(v.contains("config.ssh.insert_key = false"));
            assert!(v.contains("config.ssh.username = \"vagrant\""));
            assert!(v.contains("config.ssh.shell = \"sh\""));
            assert!(v.contains("config.vm.guest = :berth"));
        }
        let l = libvirt_vagrantfile(&ctx(d, "x"));
        assert!(
            l.contains("libvirt.loader = rom") && l.contains("OVMF_CODE_4M.fd"),
            "{l}"
        );
        assert!(virtualbox_vagrantfile(&ctx(d, "x")).contains("\"--firmware\", \"efi\""));
    }

    #[test]
    fn box_archive_is_sorted_and_normalised() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("t.box");
        let file = d.path().join("payload");
        fs::write(&file, vec![7u8; 100_000]).unwrap();
        let members = || {
            vec![
                ("metadata.json", Member::Bytes(b"{}".to_vec())),
                ("box.img", Member::File(file.clone())),
                ("Vagrantfile", Member::Bytes(b"x".to_vec())),
            ]
        };
        write_box(&dest, members(), 1_700_000_000, &Progress(None)).unwrap();
        let first = fs::read(&dest).unwrap();
        write_box(&dest, members(), 1_700_000_000, &Progress(None)).unwrap();
        assert!(first == fs::read(&dest).unwrap());
        // gzip header: mtime 0, OS 255.
        assert_eq!(&first[4..8], &[0, 0, 0, 0]);
        assert_eq!(first[9], 255);
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&first[..]));
        let entries: Vec<(String, u64, u64, u64, u32)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.size().unwrap(),
                    h.mtime().unwrap(),
                    h.uid().unwrap(),
                    h.mode().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("Vagrantfile".into(), 1, 1_700_000_000, 0, 0o644),
                ("box.img".into(), 100_000, 1_700_000_000, 0, 0o644),
                ("metadata.json".into(), 2, 1_700_000_000, 0, 0o644),
            ]
        );
    }
}
