use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain, build_ebpf};
// A build-dependency so that cargo rebuilds the agent when the programs change;
// aya-build compiles the crate itself, for the BPF target.
use faultline_ebpf as _;

fn main() -> anyhow::Result<()> {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = std::path::Path::new(&manifest)
        .parent()
        .ok_or_else(|| anyhow!("agent crate has no parent directory"))?
        .join("ebpf");
    let ebpf_dir = ebpf_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    println!("cargo:rerun-if-changed={ebpf_dir}/../common/src");
    build_ebpf(
        [Package {
            name: "faultline-ebpf",
            root_dir: ebpf_dir,
            ..Package::default()
        }],
        Toolchain::default(),
    )
}
