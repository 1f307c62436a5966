//! The admin container (Bottlerocket's idea): the one way into a berth machine. An SSH server
//! (dropbear: one small binary, where openssh-server pulls PAM, systemd and OpenSSL) and a
//! busybox shell, with `berthctl` (berth-init itself) and `ctr` (the host's, same package),
//! run privileged in the host's network and PID namespaces, so `berthctl poweroff`, `ctr` and
//! busybox's `poweroff`/`reboot` act on the host.
//!
//! The login user is uid 0 (the container is the administrator's). Host keys are made on the
//! container's first start and kept on /var (`/var/lib/berth/admin/hostkeys`, mounted at
//! /etc/dropbear); `~/.ssh` is `/run/berth/ssh`, which berth-init fills at every boot from the
//! image's keys (`[admin] authorized-keys`) and the machine config's.

use anyhow::{bail, Context, Result};
use berth_contract::paths::{ADMIN_HOST_KEYS, ADMIN_SSH_DIR, SERVICE_LOG_DIR};
use berth_contract::service::{Mount, Ready, Service};

use crate::fetch::PackageData;
use crate::fsimage::manifest::{Entry, ImagePath, Kind, Manifest};
use crate::profile::{Admin, Profile, ADMIN_SERVICE};
use crate::root::containers::{image_rootfs, PATH};
use crate::root::elf;
use crate::root::oci::OciImage;

pub use crate::profile::ADMIN_PACKAGES as PACKAGES;

/// busybox applets linked into /usr/bin: a shell and the tools an administrator reaches for.
/// (Debian's busybox-static ships only /bin/busybox; `busybox --list` would mean running a
/// fetched binary on the build host.)
const APPLETS: &[&str] = &[
    "sh",
    "ash",
    "cat",
    "cp",
    "mv",
    "rm",
    "ln",
    "ls",
    "mkdir",
    "rmdir",
    "chmod",
    "chown",
    "touch",
    "head",
    "tail",
    "less",
    "more",
    "grep",
    "egrep",
    "sed",
    "awk",
    "cut",
    "sort",
    "uniq",
    "wc",
    "tr",
    "tee",
    "find",
    "xargs",
    "du",
    "df",
    "free",
    "ps",
    "top",
    "kill",
    "killall",
    "pidof",
    "uptime",
    "uname",
    "hostname",
    "id",
    "whoami",
    "env",
    "date",
    "sleep",
    "dmesg",
    "mount",
    "umount",
    "ip",
    "ping",
    "netstat",
    "nslookup",
    "wget",
    "nc",
    "vi",
    "tar",
    "gzip",
    "gunzip",
    "zcat",
    "md5sum",
    "sha256sum",
    "hexdump",
    "od",
    "stat",
    "readlink",
    "realpath",
    "basename",
    "dirname",
    "printf",
    "echo",
    "true",
    "false",
    "test",
    "[",
    "which",
    "clear",
    "reset",
    "stty",
    "poweroff",
    "reboot",
    "watch",
    "nproc",
    "seq",
    "expr",
    "yes",
    "dd",
    "sync",
    "lsof",
    "ifconfig",
    "route",
    "arp",
    "traceroute",
];

/// `shutdown` for tools that expect one (busybox has `poweroff` and `reboot`, which signal PID 1
/// as berth-init expects, but no `shutdown`).
const SHUTDOWN: &str = "#!/bin/sh\n\
# shutdown [-h|-P|-H] [-r] [now|TIME] [MESSAGE]: the host, through berthctl.\n\
case \" $* \" in\n\
  *\" -r \"*) exec berthctl reboot ;;\n\
  *) exec berthctl poweroff ;;\n\
esac\n";

/// The host's ctr in the image (/usr/bin/ctr is a wrapper).
const REAL_CTR: &str = "/usr/libexec/berth/ctr";
/// Where the image's start script is.
const START: &str = "/usr/libexec/berth-admin";

fn home(user: &str) -> String {
    if user == "root" {
        "/root".to_string()
    } else {
        format!("/home/{user}")
    }
}

/// The start script: host keys made once (written beside, then renamed, so a cut start leaves
/// no half key), their fingerprints logged, then dropbear in the foreground, keys only.
fn start_script(port: u16) -> String {
    format!(
        r#"#!/bin/sh
# berth admin container: make the host keys once (they live on /var), then run dropbear.
set -e
keys=""
for t in ed25519 ecdsa; do
    k=/etc/dropbear/dropbear_${{t}}_host_key
    if [ ! -s "$k" ]; then
        rm -f "$k.new"
        dropbearkey -t "$t" -f "$k.new" >/dev/null
        mv "$k.new" "$k"
    fi
    echo "admin: host key $t $(dropbearkey -y -f "$k" | grep -i fingerprint)"
    keys="$keys -r $k"
done
# -F foreground, -E log to stderr, -s no password logins.
exec dropbear -F -E -s -p {port} $keys
"#
    )
}

/// The image: dropbear and busybox with their dependencies, applet links, `berthctl`, `ctr`, a
/// passwd with the login user as uid 0, a shell profile.
pub fn image(
    profile: &Profile,
    a: &Admin,
    packages: &[&PackageData],
    init: &[u8],
    root: &Manifest,
) -> Result<OciImage> {
    let sde = profile.image.source_date_epoch;
    let names = a.all_packages();
    let mut m = image_rootfs("the admin container", &names, packages, sde)?;
    let p = |s: &str| ImagePath::new(s);
    for app in APPLETS {
        let link = p(&format!("/usr/bin/{app}"))?;
        if m.resolve(&link).is_none() {
            m.insert(link, Entry::symlink("busybox", sde))?;
        }
    }
    if m.resolve(&p("/usr/bin/busybox")?).is_none() {
        bail!("the admin container: busybox-static did not provide /bin/busybox");
    }
    m.insert(
        p("/usr/bin/berthctl")?,
        Entry::file(init.to_vec(), 0o755, sde),
    )?;
    // ctr from the root, so it speaks the host containerd's API version.
    let ctr_path = p("/usr/bin/ctr")?;
    let ctr = root
        .resolve(&ctr_path)
        .and_then(|r| root.get(&r).cloned())
        .context("the admin container: the root has no /usr/bin/ctr (is containerd in runtime.packages?)")?;
    if let Kind::File(data) = &ctr.kind {
        let deps = elf::deps(data).context("reading /usr/bin/ctr")?;
        for lib in deps.needed {
            let found = [
                "/usr/lib/x86_64-linux-gnu",
                "/usr/lib",
                "/lib/x86_64-linux-gnu",
            ]
            .iter()
            .any(|d| {
                ImagePath::new(&format!("{d}/{lib}"))
                    .ok()
                    .and_then(|l| m.resolve(&l))
                    .is_some()
            });
            if !found {
                bail!("the admin container: /usr/bin/ctr needs {lib}, which the admin image's packages do not ship");
            }
        }
    }
    // ctr itself at /usr/libexec/berth/ctr; /usr/bin/ctr defaults the namespace to berth's
    // (an SSH command runs without the login profile's environment).
    m.insert(p(REAL_CTR)?, Entry { mtime: sde, ..ctr })?;
    m.insert(
        ctr_path,
        Entry::file(
            format!("#!/bin/sh\n# ctr in berth's containerd namespace unless told otherwise.\nCONTAINERD_NAMESPACE=\"${{CONTAINERD_NAMESPACE:-berth}}\" exec {REAL_CTR} \"$@\"\n"),
            0o755,
            sde,
        ),
    )?;
    let user = &a.user;
    let home = home(user);
    let mut passwd = String::from("root:*:0:0:root:/root:/bin/sh\n");
    if user != "root" {
        passwd.push_str(&format!("{user}:*:0:0:berth admin:{home}:/bin/sh\n"));
    }
    let files: [(&str, String, u16); 7] = [
        ("/etc/passwd", passwd, 0o644),
        ("/etc/group", "root:x:0:\n".into(), 0o644),
        ("/etc/shells", "/bin/sh\n/bin/ash\n".into(), 0o644),
        (
            "/etc/profile",
            "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
             export CONTAINERD_NAMESPACE=berth\n\
             export PS1='\\u@\\h:\\w\\$ '\n\
             [ -t 1 ] && cat /etc/motd\n"
                .into(),
            0o644,
        ),
        // No version here: an image that differs only by it would be imported again by every
        // version's first boot (the version is in `berthctl status`).
        (
            "/etc/motd",
            format!(
                "berth {}: admin container. The host: berthctl status | berthctl services | \
                 berthctl logs NAME | ctr containers ls | poweroff\n",
                profile.image.name
            ),
            0o644,
        ),
        (START, start_script(a.port), 0o755),
        ("/usr/sbin/shutdown", SHUTDOWN.into(), 0o755),
    ];
    for (path, text, mode) in files {
        m.insert(p(path)?, Entry::file(text, mode, sde))?;
    }
    for (d, mode) in [
        ("/root", 0o700),
        (home.as_str(), 0o700),
        (&format!("{home}/.ssh"), 0o700),
        ("/etc/dropbear", 0o700),
        ("/var/log/berth", 0o755),
        ("/var/lib/berth", 0o755),
        ("/run/containerd", 0o711),
        ("/run/berth", 0o755),
        ("/var/run", 0o755),
    ] {
        m.insert(p(d)?, Entry::dir(mode, sde))?;
    }
    Ok(OciImage {
        name: format!("localhost/berth/admin:{}", profile.image.version),
        rootfs: m,
        entrypoint: Vec::new(),
        cmd: vec![START.to_string()],
        env: vec![PATH.to_string(), "CONTAINERD_NAMESPACE=berth".to_string()],
    })
}

/// The admin service: privileged, host network and PID namespace, ready when SSH accepts.
pub fn service(a: &Admin, image: &str) -> Service {
    let mut s = Service::new(ADMIN_SERVICE, image);
    s.command = vec![START.to_string()];
    s.env = vec![("CONTAINERD_NAMESPACE".into(), "berth".into())];
    let mount = |source: &str, target: &str, read_only: bool| Mount {
        source: source.to_string(),
        target: target.to_string(),
        read_only,
    };
    s.mounts = vec![
        mount(ADMIN_HOST_KEYS, "/etc/dropbear", false),
        mount(ADMIN_SSH_DIR, &format!("{}/.ssh", home(&a.user)), true),
        mount("/run/containerd", "/run/containerd", false),
        mount("/run/berth", "/run/berth", true),
        mount(SERVICE_LOG_DIR, SERVICE_LOG_DIR, true),
        mount("/var/lib/berth", "/var/lib/berth", true),
    ];
    s.host_pid = true;
    s.privileged = true;
    s.ready = Some(Ready::Tcp(a.port));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_service_passes_the_services_parser() {
        let a = Admin {
            user: "vagrant".into(),
            port: 22,
            authorized_keys: vec![],
            packages: vec![],
        };
        let s = service(&a, "localhost/berth/admin:1");
        let text = berth_contract::service::file_text(std::slice::from_ref(&s));
        assert_eq!(berth_contract::service::parse_file(&text).unwrap(), vec![s]);
        assert!(text.contains("/home/vagrant/.ssh"), "{text}");
        assert!(start_script(2222).contains("-p 2222"));
    }
}
