use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain, build_ebpf};

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
