//! The kernel configuration stage (`berth::kernel`) against a real kernel tree: Debian's
//! linux-source-6.1, fetched with the host's `apt-get download`, configured by the real Kconfig
//! (`make allnoconfig KCONFIG_ALLCONFIG=…`). berth's own fragments must all stick; a fragment
//! asking for an option whose dependency is off, or for an option this kernel does not have,
//! must fail naming the option, the fragment line and the dependency.

mod common;

use std::fs;
use std::path::Path;

use berth::kernel::{self, config};
use berth::profile::KernelFragment;
use berth::util::printer::{Mode, Printer};

fn fragment(name: &str, text: &str) -> KernelFragment {
    KernelFragment {
        name: name.into(),
        path: Default::default(),
        text: text.into(),
        sha256: String::new(),
    }
}

fn repo_fragment(name: &str) -> KernelFragment {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../kernel-config")
        .join(format!("{name}.config"));
    fragment(name, &fs::read_to_string(&path).unwrap())
}

#[test]
fn berths_fragments_stick_on_the_real_kconfig_and_a_dropped_option_is_named_with_its_dependency() {
    for t in ["make", "gcc", "flex", "bison", "tar", "xz", "apt-get"] {
        if !common::have(t) {
            return;
        }
    }
    let Some(deb) = common::debian_deb("linux-source-6.1", None) else {
        return;
    };
    let printer = Printer::new(Mode::Quiet);
    let work = tempfile::tempdir().unwrap();
    let tree = kernel::unpack(&deb, "linux-source-6.1", work.path(), &printer).unwrap();

    // berth's fragments, every one of them, all options checked by configure().
    let all: Vec<KernelFragment> = ["base", "qemu", "aws", "containers"]
        .iter()
        .map(|n| repo_fragment(n))
        .collect();
    let merged = config::merge(&all).unwrap();
    assert!(merged.len() > 150, "{} options", merged.len());
    let dot = kernel::configure(&tree, work.path(), &merged, &printer).unwrap();
    for line in [
        "CONFIG_DM_VERITY=y",
        "CONFIG_EFI_STUB=y",
        "CONFIG_VIRTIO_BLK=y",
        "CONFIG_ENA_ETHERNET=y",
        "# CONFIG_MODULES is not set",
    ] {
        assert!(dot.lines().any(|l| l == line), "{line} not in .config");
    }

    // A fragment that forgets a dependency, and one naming an option this kernel lacks.
    let broken = fragment(
        "broken",
        "# virtio-blk without the block-device menu it lives in\nCONFIG_VIRTIO=y\nCONFIG_VIRTIO_BLK=y\nCONFIG_SPECULATION_MITIGATIONS=y\n",
    );
    let merged = config::merge(&[repo_fragment("base"), broken]).unwrap();
    let e = format!(
        "{:#}",
        kernel::configure(&tree, work.path(), &merged, &printer).unwrap_err()
    );
    assert!(e.contains("3 of the "), "{e}");
    // VIRTIO has no prompt: VIRTIO_PCI and friends select it.
    assert!(
        e.contains("CONFIG_VIRTIO=y (kernel-config/broken.config:2)")
            && e.contains("it has no prompt")
            && e.contains("only an option that selects it turns it on (CONFIG_"),
        "{e}"
    );
    assert!(
        e.contains(
            "CONFIG_VIRTIO_BLK=y (kernel-config/broken.config:3) is not in the final .config"
        ),
        "{e}"
    );
    assert!(e.contains("drivers/block/Kconfig"), "{e}");
    assert!(e.contains("not set: CONFIG_BLK_DEV"), "{e}");
    assert!(
        e.contains("CONFIG_SPECULATION_MITIGATIONS=y (kernel-config/broken.config:4)")
            && e.contains("define no option SPECULATION_MITIGATIONS"),
        "{e}"
    );
}
