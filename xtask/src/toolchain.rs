//! The eBPF toolchain (KERNEL.md, "eBPF toolchain"): the `nightly` compiler with
//! `rust-src` for `-Z build-std=core`, and a bpf-linker built against that
//! nightly's own libLLVM, because bitcode from one LLVM cannot be linked by another.

use std::{
    env,
    ffi::OsString,
    fs, io,
    ops::RangeInclusive,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::command::{capture, run};

const NIGHTLY: &str = "nightly";
const BPF_LINKER_VERSION: &str = "0.13.0";
/// The `llvm-NN` features that bpf-linker 0.13.0 offers.
const BPF_LINKER_LLVM_MAJORS: RangeInclusive<u32> = 21..=23;
/// bpf-linker's rpath points into this directory, so it must stay put (not under /tmp).
const LLVM_PREFIX: &str = "/opt/faultline/llvm";
/// Overrides [`LLVM_PREFIX`], e.g. for a user without write access to /opt.
const LLVM_PREFIX_ENV: &str = "FAULTLINE_LLVM_PREFIX";

pub fn ensure_nightly() -> Result<()> {
    let list = capture(Command::new("rustup").args(["toolchain", "list"]))?;
    if list.lines().any(is_nightly_channel) {
        crate::status("nightly toolchain", "present");
        return Ok(());
    }
    crate::status("nightly toolchain", "installing");
    run(Command::new("rustup").args(["toolchain", "install", NIGHTLY, "--profile", "minimal"]))
}

/// `nightly-x86_64-unknown-linux-gnu (default)` is the channel; `nightly-2026-05-19-...` is a pinned date.
fn is_nightly_channel(line: &str) -> bool {
    line.strip_prefix("nightly-")
        .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
}

pub fn ensure_rust_src() -> Result<()> {
    let installed = capture(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))?;
    if installed.lines().any(|line| line.trim() == "rust-src") {
        crate::status("rust-src (nightly)", "present");
        return Ok(());
    }
    crate::status("rust-src (nightly)", "installing");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
}

/// The directory `cargo install` puts binaries in; it goes first on PATH so
/// that aya-build's rustc finds the bpf-linker checked here.
pub fn cargo_bin_dir() -> PathBuf {
    install_root().join("bin")
}

fn install_root() -> PathBuf {
    env::var_os("CARGO_INSTALL_ROOT")
        .or_else(|| env::var_os("CARGO_HOME"))
        .map_or_else(
            || PathBuf::from(env::var_os("HOME").unwrap_or_default()).join(".cargo"),
            PathBuf::from,
        )
}

pub fn ensure_bpf_linker() -> Result<()> {
    let llvm = NightlyLlvm::find()?;
    let prefix =
        env::var_os(LLVM_PREFIX_ENV).map_or_else(|| PathBuf::from(LLVM_PREFIX), PathBuf::from);
    let prefix = prefix.as_path();
    let linker = cargo_bin_dir().join("bpf-linker");
    let Some(reason) = needs_install(&linker, &llvm, prefix) else {
        crate::status(
            "bpf-linker",
            &format!(
                "{BPF_LINKER_VERSION} present, linked against {}",
                llvm.path.display()
            ),
        );
        return Ok(());
    };
    crate::status(
        "bpf-linker",
        &format!("installing {BPF_LINKER_VERSION}: {reason}"),
    );
    if !BPF_LINKER_LLVM_MAJORS.contains(&llvm.major) {
        bail!(
            "the nightly toolchain uses LLVM {}, but bpf-linker {BPF_LINKER_VERSION} supports LLVM {}..={}: \
             pin a nightly with a supported LLVM or move to a bpf-linker release that supports it",
            llvm.major,
            BPF_LINKER_LLVM_MAJORS.start(),
            BPF_LINKER_LLVM_MAJORS.end(),
        );
    }
    link_llvm(&llvm, prefix)?;
    run(crate::cargo()
        .env("LLVM_PREFIX", prefix)
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        // --force: an equal version linked against an older nightly must be rebuilt.
        .args(["--locked", "--force", "--no-default-features", "--features"])
        .arg(format!("llvm-{}", llvm.major))
        .arg("--root")
        .arg(install_root()))?;
    if let Some(reason) = needs_install(&linker, &llvm, prefix) {
        bail!("bpf-linker is still not usable after installing it: {reason}");
    }
    Ok(())
}

/// The nightly toolchain's shared libLLVM, e.g. `libLLVM.so.22.1-rust-1.97.0-nightly`.
struct NightlyLlvm {
    path: PathBuf,
    file_name: OsString,
    major: u32,
}

impl NightlyLlvm {
    fn find() -> Result<Self> {
        let sysroot = capture(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
        let lib_dir = Path::new(sysroot.trim()).join("lib");
        let mut found = Vec::new();
        for entry in fs::read_dir(&lib_dir)
            .with_context(|| format!("reading the nightly toolchain's {}", lib_dir.display()))?
        {
            let entry = entry.with_context(|| format!("reading {}", lib_dir.display()))?;
            let file_name = entry.file_name();
            let major = file_name
                .to_str()
                .and_then(|name| name.strip_prefix("libLLVM.so."))
                .and_then(|version| version.split(['.', '-']).next()?.parse().ok());
            if let Some(major) = major {
                found.push(Self {
                    path: entry.path(),
                    file_name,
                    major,
                });
            }
        }
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => bail!(
                "no libLLVM.so.<version>-rust-* in {}: reinstall the toolchain with \
                 `rustup toolchain install {NIGHTLY} --force`",
                lib_dir.display()
            ),
            _ => bail!(
                "several libLLVM.so.* in {}, cannot tell which one rustc uses: {:?}",
                lib_dir.display(),
                found.iter().map(|lib| &lib.file_name).collect::<Vec<_>>()
            ),
        }
    }
}

/// Why bpf-linker must be (re)installed, or `None` if the installed one is right.
fn needs_install(linker: &Path, llvm: &NightlyLlvm, prefix: &Path) -> Option<String> {
    let lib = prefix.join("lib");
    for link in [lib.join("libLLVM.so"), lib.join(&llvm.file_name)] {
        match fs::read_link(&link) {
            Ok(target) if target == llvm.path => {}
            Ok(target) => {
                return Some(format!(
                    "{} points at {}, not at the nightly's {}",
                    link.display(),
                    target.display(),
                    llvm.path.display()
                ));
            }
            Err(err) => return Some(format!("{}: {err}", link.display())),
        }
    }
    // Running it also proves that the dynamic loader finds libLLVM through the rpath.
    match Command::new(linker).arg("--version").output() {
        Ok(out) if out.status.success() => {
            let printed = String::from_utf8_lossy(&out.stdout);
            if printed.split_whitespace().nth(1) == Some(BPF_LINKER_VERSION) {
                None
            } else {
                Some(format!(
                    "{} --version printed {:?}",
                    linker.display(),
                    printed.trim()
                ))
            }
        }
        Ok(out) => Some(format!(
            "{} --version failed ({}): {}",
            linker.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(err) => Some(format!("{}: {err}", linker.display())),
    }
}

/// Makes `prefix/lib` hold `libLLVM.so` and the versioned name, both pointing at the nightly's libLLVM.
fn link_llvm(llvm: &NightlyLlvm, prefix: &Path) -> Result<()> {
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib)
        .with_context(|| format!("creating {} (setup must run as root)", lib.display()))?;
    for name in [OsString::from("libLLVM.so"), llvm.file_name.clone()] {
        let link = lib.join(name);
        match fs::remove_file(&link) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).with_context(|| format!("removing {}", link.display())),
        }
        std::os::unix::fs::symlink(&llvm.path, &link)
            .with_context(|| format!("linking {} -> {}", link.display(), llvm.path.display()))?;
        eprintln!("    {} -> {}", link.display(), llvm.path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nightly_channel_is_told_from_dated_nightlies() {
        assert!(is_nightly_channel("nightly-x86_64-unknown-linux-gnu"));
        assert!(is_nightly_channel(
            "nightly-x86_64-unknown-linux-gnu (active)"
        ));
        assert!(!is_nightly_channel(
            "nightly-2026-05-19-x86_64-unknown-linux-gnu"
        ));
        assert!(!is_nightly_channel(
            "stable-x86_64-unknown-linux-gnu (default)"
        ));
    }
}
