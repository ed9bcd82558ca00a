//! `cargo xtask package`: the `.deb` (cargo-deb, metadata in
//! `agent/Cargo.toml`), and `cargo xtask caps`: the measurement of the
//! unit's capability set (`packaging/measure-caps.sh`).

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::{Profile, binary, cargo, command, target_dir, workspace_root};

/// cargo-deb's release line, installed with `--locked` when missing.
const CARGO_DEB: &str = "cargo-deb";

/// Installs cargo-deb when `cargo deb` is not there (a fresh machine).
pub fn ensure_cargo_deb() -> Result<()> {
    let present = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        crate::status("cargo-deb", "present");
        return Ok(());
    }
    crate::status("cargo-deb", "installing (cargo install cargo-deb --locked)");
    // Its own target directory: the workspace's is not for tools.
    command::run(
        cargo()
            .args(["install", CARGO_DEB, "--locked"])
            .env("CARGO_TARGET_DIR", target_dir().join("cargo-install")),
    )
}

/// Builds the binaries of `profile`, the man page and completions, then the
/// package; returns the `.deb`'s path.
pub fn deb(profile: Profile) -> Result<PathBuf> {
    ensure_cargo_deb()?;
    match profile {
        // The very build the test suite makes (`--workspace --bins`): with
        // the same feature set nothing is rebuilt.
        Profile::Debug => crate::build(Profile::Debug)?,
        Profile::Release => command::run(cargo().args([
            "build",
            "--release",
            "--package",
            "faultline-agent",
            "--package",
            "faultline-ctl",
            "--bin",
            "faultline-agent",
            "--bin",
            "faultctl",
        ]))?,
    }
    let faultctl = binary(profile, "faultctl");
    // Beside the binaries: cargo-deb resolves the `target/release/` of its
    // asset paths to the profile's real directory (CARGO_TARGET_DIR too).
    let dir = target_dir().join(profile.target_subdir()).join("package");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (args, file) in [
        (&["man"][..], "faultctl.1"),
        (&["completion", "bash"][..], "faultctl.bash"),
        (&["completion", "zsh"][..], "_faultctl"),
        (&["completion", "fish"][..], "faultctl.fish"),
    ] {
        let text = command::capture_bytes(Command::new(&faultctl).args(args))?;
        let path = dir.join(file);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    // Debian's man pages are gzipped; cargo-deb leaves files from the target
    // directory as they are. -n: no name or time stamp, so builds repeat.
    command::run(
        Command::new("gzip")
            .args(["-9nf"])
            .arg(dir.join("faultctl.1")),
    )?;
    let out = target_dir().join("debian");
    let mut deb = cargo();
    deb.args([
        "deb",
        "--no-build",
        "--package",
        "faultline-agent",
        "--output",
    ])
    .arg(&out);
    if let Profile::Debug = profile {
        // Large unoptimised binaries: light compression keeps this quick.
        deb.args(["--profile", "dev", "--fast"]);
    }
    command::run(&mut deb)?;
    let deb = std::fs::read_dir(&out)
        .with_context(|| format!("cannot read {}", out.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok());
    let Some(deb) = deb else {
        bail!("cargo deb wrote no .deb into {}", out.display());
    };
    eprintln!("wrote {}", deb.display());
    Ok(deb)
}

/// Runs the capability measurement against the release binaries.
pub fn caps(set: Option<&str>) -> Result<()> {
    if !crate::running_as_root() {
        bail!("measuring capabilities runs the agent and makes cgroups: run as root");
    }
    command::run(cargo().args([
        "build",
        "--release",
        "--package",
        "faultline-agent",
        "--package",
        "faultline-ctl",
    ]))?;
    let mut cmd = Command::new(workspace_root().join("packaging/measure-caps.sh"));
    cmd.arg(binary(Profile::Release, "faultline-agent"))
        .arg(binary(Profile::Release, "faultctl"));
    if let Some(set) = set {
        cmd.arg(set);
    }
    command::run(&mut cmd)
}
