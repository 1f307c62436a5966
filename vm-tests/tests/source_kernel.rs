//! The source-kernel image (profiles/test-minimal.toml: profiles/minimal.toml, whose kernel is
//! built from linux-source-6.1 with kernel-config/'s fragments, plus test.toml's container and
//! the admin container): it boots direct and through OVMF + systemd-boot to ready with the
//! container run, without a single module, and its kernel builds to the same bytes elsewhere
//! (the full set: a second compile).
//!
//! The first build compiles the kernel (minutes under CI's two cores); later runs take it from
//! the vm-tests' cache (`target/vm-tests/cache/kernels/`).

use std::sync::OnceLock;
use std::time::Duration;

use berth::run::qemu::{Boot, VmConfig};
use berth_vm_tests::{build_profile, Guest, Image, READY_DIRECT, READY_UEFI, SHUTDOWN};

/// The two tests take turns: a kernel compile beside a TCG boot slows both several times.
static TURNS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn minimal_image() -> &'static Image {
    static IMG: OnceLock<Image> = OnceLock::new();
    IMG.get_or_init(|| {
        build_profile("test-minimal.toml", None)
            .unwrap_or_else(|e| panic!("building the source-kernel test image: {e:#}"))
    })
}

fn ready_line(img: &Image) -> String {
    format!("berth: ready slot=a version={}", img.manifest.image.version)
}

/// What every boot of this image must show: the kernel is ours, nothing was loaded as a
/// module, containerd came up and the baked container ran.
fn check_boot(g: &mut Guest, img: &Image) {
    let release = g
        .wait_for("berth: initrd: kernel release=", Duration::from_secs(1))
        .unwrap();
    assert!(
        release.ends_with(&format!("={}", img.manifest.kernel.version)),
        "{release}, the manifest says {}",
        img.manifest.kernel.version
    );
    let initrd = g
        .wait_for("berth: initrd: modules loaded n=", Duration::from_secs(1))
        .unwrap();
    assert!(initrd.ends_with("n=0"), "{initrd}");
    g.wait_for("berth: containerd serving ", Duration::from_secs(1))
        .unwrap();
    let main = g
        .wait_for("berth: modules loaded n=", Duration::from_secs(60))
        .unwrap();
    assert!(main.ends_with("n=0"), "{main}");
    g.wait_for(
        "berth-test-marker:hello-from-a-container",
        Duration::from_secs(60),
    )
    .unwrap();
    let svc = g
        .wait_for("berth: service hello exited", Duration::from_secs(30))
        .unwrap();
    assert!(svc.ends_with("status=0"), "{svc}");
}

#[test]
fn the_source_kernel_image_has_no_modules_and_boots_direct_and_uefi_with_its_container() {
    let _turn = TURNS.lock().unwrap_or_else(|e| e.into_inner());
    let img = minimal_image();
    let k = &img.manifest.kernel;
    assert_eq!(k.package, "linux-source-6.1");
    assert_eq!(k.config, ["base", "qemu", "containers"]);
    assert!(k.version.ends_with("-berth"), "{}", k.version);
    assert_eq!(k.modules, 0, "a source kernel has every driver built in");
    assert_eq!(img.manifest.boot.initrd_modules, 0);

    // Direct kernel boot, then a clean poweroff.
    let mut cfg = VmConfig::new(&img.disk()).unwrap();
    cfg.boot = img.direct("berth.after-ready=poweroff").unwrap();
    let mut g = Guest::start("source-kernel-direct", cfg).unwrap();
    g.wait_for(&ready_line(img), READY_DIRECT).unwrap();
    check_boot(&mut g, img);
    g.wait_for("berth: unmounted", SHUTDOWN).unwrap();
    let st = g.wait_exit(SHUTDOWN).unwrap();
    assert!(st.success(), "QEMU exit status {st}");
    assert!(!g.console().contains("Kernel panic"));
    drop(g);

    // OVMF + systemd-boot, which starts the kernel through its EFI stub; the entry is blessed.
    let work = tempfile::tempdir().unwrap();
    let disk = img.disk_copy(work.path()).unwrap();
    let mut cfg = VmConfig::new(&disk).unwrap();
    cfg.boot = Boot::Uefi;
    cfg.persist = true;
    let mut g = Guest::start("source-kernel-uefi", cfg).unwrap();
    g.wait_for(&ready_line(img), READY_UEFI).unwrap();
    check_boot(&mut g, img);
    g.wait_for("berth: blessed", Duration::from_secs(120))
        .unwrap();
}

/// The full set (ci/test-full): a second compile of the kernel, about 7 minutes on CI's two
/// cores. CI compiles it once (the image above); `build_kernel_in` the second time.
#[test]
#[ignore = "the full set (ci/test-full): a second kernel compile, about 7 minutes"]
fn the_source_kernel_builds_to_the_same_bytes_in_another_directory() {
    let _turn = TURNS.lock().unwrap_or_else(|e| e.into_inner());
    let img = minimal_image();
    let ours = std::fs::read(img.dir.join("vmlinuz")).unwrap();
    // A second build of the same kernel, in a fresh cache (another directory, nothing reused).
    let other = tempfile::tempdir().unwrap();
    let again = berth_vm_tests::build_kernel_in("test-minimal.toml", other.path())
        .unwrap_or_else(|e| panic!("building the kernel again: {e:#}"));
    assert!(
        !again.cached,
        "the second build must compile, not reuse a cache"
    );
    assert!(
        again.dir.starts_with(other.path()),
        "{}",
        again.dir.display()
    );
    assert!(
        again.bzimage == ours,
        "bzImage differs between builds in different directories ({} vs {} bytes)",
        again.bzimage.len(),
        ours.len()
    );
}
