//! `cargo xtask setup`: everything a fresh machine needs before it can build
//! and test Faultline. Each step checks first and changes nothing when its
//! part is already in place, so a second run is fast and quiet.

use std::{env, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::{command::run, toolchain};

/// Debian packages the privileged tests and benchmarks call.
const APT_PACKAGES: &[&str] = &[
    "iproute2",   // ip, tc: network namespaces and veth pairs
    "strace",     // observing injected syscall faults
    "bpftool",    // inspecting loaded programs and links
    "util-linux", // nsenter: `ip netns exec` would hide bpffs (KERNEL.md)
    "iptables",   // the `network` benchmark's comparison: `-m statistic` packet loss
    "e2fsprogs",  // mke2fs: the loop-mounted filesystems the disk and path tests fill
    "stress-ng",  // the `pressure` benchmark's comparison
    "jq",         // `cargo xtask caps` reads faultctl's JSON
    // capsh: `cargo xtask caps` names the agent's capabilities
    "libcap2-bin",
];

/// Debian packages whose daemon a test starts itself, on loopback, with its
/// own config: installed without recommends (prometheus would bring
/// node-exporter), and the service the package starts is stopped and
/// disabled, so set-up leaves nothing listening on the host.
const DAEMON_APT_PACKAGES: &[&str] = &[
    "prometheus", // the `metrics` suite scrapes the agent with a real Prometheus server
];

/// Debian packages the VM kernel matrix (`cargo xtask test --vm`) needs on the host.
const VM_APT_PACKAGES: &[&str] = &[
    "qemu-system-x86", // qemu-system-x86_64, run with TCG: this machine has no KVM
    "busybox-static",  // the guest's shell, mount, insmod and poweroff
    "binutils",        // strip: smaller binaries make a smaller initramfs
];

/// The stock Python gRPC client and its health and reflection helpers, from
/// PyPI: the suite's outside check of the API (`api` tests).
const PIP_PACKAGES: &[&str] = &[
    "grpcio==1.85.3",
    "grpcio-health-checking==1.85.1",
    "grpcio-reflection==1.85.1",
];

pub fn run_all() -> Result<()> {
    put_cargo_bin_first_on_path()?;
    toolchain::ensure_nightly()?;
    toolchain::ensure_rust_src()?;
    toolchain::ensure_bpf_linker()?;
    ensure_apt_packages(APT_PACKAGES)?;
    ensure_daemon_packages()?;
    ensure_pip_packages()
}

fn ensure_daemon_packages() -> Result<()> {
    let installed = install_missing(DAEMON_APT_PACKAGES, &["--no-install-recommends"])?;
    // Only where systemd runs (the package's postinst started the daemon).
    if !installed.is_empty() && std::path::Path::new("/run/systemd/system").exists() {
        run(Command::new("systemctl")
            .args(["disable", "--now"])
            .args(&installed))?;
    }
    Ok(())
}

fn ensure_pip_packages() -> Result<()> {
    let present = Command::new("python3")
        .args(["-c", "import grpc, grpc_health.v1, grpc_reflection.v1alpha"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        crate::status("pip packages", "present: grpcio, health, reflection");
        return Ok(());
    }
    crate::status(
        "pip packages",
        &format!("installing {}", PIP_PACKAGES.join(" ")),
    );
    run(Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(PIP_PACKAGES))
}

/// The extra host packages of the VM kernel matrix; run after [`run_all`].
pub fn run_vm() -> Result<()> {
    ensure_apt_packages(VM_APT_PACKAGES)
}

fn put_cargo_bin_first_on_path() -> Result<()> {
    let bin = toolchain::cargo_bin_dir();
    let path = env::var_os("PATH").unwrap_or_default();
    if env::split_paths(&path).next().as_deref() == Some(bin.as_path()) {
        return Ok(());
    }
    let path = env::join_paths(std::iter::once(bin).chain(env::split_paths(&path)))
        .context("PATH with cargo's bin directory")?;
    // SAFETY: xtask is single-threaded; nothing reads the environment concurrently.
    unsafe { env::set_var("PATH", path) };
    Ok(())
}

fn ensure_apt_packages(packages: &[&str]) -> Result<()> {
    install_missing(packages, &[]).map(drop)
}

/// Installs those of `packages` that are missing (apt-get `extra` flags);
/// returns the ones it installed.
fn install_missing<'a>(packages: &[&'a str], extra: &[&str]) -> Result<Vec<&'a str>> {
    let mut missing = Vec::new();
    for &package in packages {
        if !dpkg_installed(package)? {
            missing.push(package);
        }
    }
    if missing.is_empty() {
        crate::status("apt packages", &format!("present: {}", packages.join(" ")));
        return Ok(missing);
    }
    crate::status("apt packages", &format!("installing {}", missing.join(" ")));
    if !crate::running_as_root() {
        bail!(
            "installing {} needs root: run `sudo cargo xtask setup`",
            missing.join(" ")
        );
    }
    apt_get_update()?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y"])
        .args(extra)
        .args(&missing))?;
    Ok(missing)
}

fn dpkg_installed(package: &str) -> Result<bool> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .context("running dpkg-query: setup expects a Debian-based machine")?;
    // An unknown package makes dpkg-query fail; that just means "not installed".
    Ok(out.status.success()
        && String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .last()
            == Some("installed"))
}

/// Refreshes apt's package lists (needs root).
pub fn apt_get_update() -> Result<()> {
    run(Command::new("apt-get").arg("update"))
}
