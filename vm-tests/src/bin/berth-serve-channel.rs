//! What `berth cluster serve-channel DIR` runs, as a binary of this package, so the cluster
//! test can hand it to QEMU (a test binary cannot be the `berth` CLI): one HTTP request on
//! stdin answered on stdout from the channel directory.

fn main() -> anyhow::Result<()> {
    let Some(dir) = std::env::args_os().nth(1) else {
        anyhow::bail!("usage: berth-serve-channel DIR");
    };
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    berth::cluster::serve::serve_connection(std::path::Path::new(&dir), &mut stdin.lock(), &mut out)
}
