//! `cargo xtask`: Faultline's build, run, test and benchmark automation.
//!
//! Every task that compiles the workspace runs `setup` first, because the
//! agent's build script compiles the eBPF crate with the nightly toolchain and
//! bpf-linker.

mod command;
mod package;
mod setup;
mod toolchain;
mod vm;

use std::{
    env,
    ffi::OsString,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

use crate::command::{display, run};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Faultline build, run and test automation"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the eBPF toolchain, bpf-linker and test packages (idempotent).
    Setup,
    /// Set up, then build every binary in the workspace.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Set up, build in release mode and run the agent in the foreground.
    Run {
        /// Arguments for faultline-agent, after `--`.
        #[arg(last = true)]
        agent_args: Vec<OsString>,
    },
    /// Set up, build and run all tests one at a time on this host, then the
    /// integration tests on Debian's 6.1 and 6.12 kernels under qemu (needs root).
    Test {
        /// Only the tests on this host.
        #[arg(long, conflicts_with = "vm")]
        host: bool,
        /// Only the integration tests in the VMs.
        #[arg(long)]
        vm: bool,
        /// Kernel series to boot (repeatable); all of them by default.
        #[arg(long = "kernel", value_enum, conflicts_with = "host")]
        kernels: Vec<vm::Series>,
        /// Seconds each VM may run before it is killed and counted as failed
        /// (measured with 9 test binaries: 13 min on 6.12, about 18 on 6.1).
        #[arg(long, value_name = "SECONDS", default_value_t = 1500)]
        vm_timeout: u64,
        /// Kernels booted at once: more than one only pays off on a machine
        /// with CPUs to spare, since each TCG guest keeps 1.5 CPUs busy.
        #[arg(long, value_name = "N", default_value_t = 1)]
        vm_jobs: usize,
        /// Arguments for the test binaries (e.g. a name filter), after `--`.
        #[arg(last = true)]
        test_args: Vec<OsString>,
    },
    /// Set up, build in release mode and run benchmarks (all of them when no name is given).
    Bench {
        /// Run the benchmarks inside the VM of this kernel series instead of
        /// on this host (e.g. `--vm 6.12 open-overhead open-vs-strace`: BPF
        /// LSM loads only there).
        #[arg(long, value_enum, value_name = "SERIES")]
        vm: Option<vm::Series>,
        /// Benchmarks to run: `activation`, `api`, `connect-overhead`, `getpid-overhead`,
        /// `lease`, `network`, `open-overhead`, `open-vs-strace` (`faultline-bench --help`).
        names: Vec<OsString>,
        /// Further arguments for faultline-bench, after `--`; passed after the names.
        #[arg(last = true)]
        bench_args: Vec<OsString>,
    },
    /// Set up, then run the property test of wire -> domain validation
    /// (`agent/src/domain/wire/props.rs`) for many more cases than the
    /// suite's few hundred: arbitrary `ExperimentSpec`s must give a valid
    /// experiment or `InvalidArgument` naming a field, never a panic.
    Fuzz {
        /// Cases to try (PROPTEST_CASES); the suite runs 256.
        #[arg(long, default_value_t = 100_000)]
        cases: u32,
        /// Stop after this long (PROPTEST_MAX_SECS), e.g. 10m, whatever
        /// the cases.
        #[arg(long, value_parser = humantime_secs, default_value = "10m")]
        duration: u64,
    },
    /// Set up, then run clippy on all targets with warnings denied.
    Clippy,
    /// Check formatting without changing any file.
    FmtCheck,
    /// Write faultctl's man page, from its command-line definition, to
    /// target/man/faultctl.1 (builds only faultctl: no eBPF toolchain needed).
    Man,
    /// Set up, build the release binaries, the man page and completions,
    /// and the .deb (cargo-deb, installed when missing) into target/debian/.
    Package {
        /// Package the debug binaries (what the test suite builds; faster,
        /// for the package test, not for shipping).
        #[arg(long)]
        debug: bool,
    },
    /// Measure the systemd unit's capability set (as root): every fault kind
    /// that loads here arms with it, and which kind breaks without each one.
    Caps {
        /// Capabilities to measure instead of the unit's, e.g. cap_bpf,cap_kill.
        #[arg(long)]
        set: Option<String>,
    },
}

#[derive(Clone, Copy)]
enum Profile {
    Debug,
    Release,
}

impl Profile {
    fn target_subdir(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Release => "release",
        }
    }
}

fn main() -> Result<()> {
    let task = Cli::parse().task;
    match task {
        Task::Setup => setup::run_all(),
        Task::Build { release } => {
            setup::run_all()?;
            build(if release {
                Profile::Release
            } else {
                Profile::Debug
            })
        }
        Task::Run { agent_args } => {
            setup::run_all()?;
            build(Profile::Release)?;
            exec(Command::new(binary(Profile::Release, "faultline-agent")).args(agent_args))
        }
        Task::Test {
            host,
            vm,
            kernels,
            vm_timeout,
            vm_jobs,
            test_args,
        } => {
            let in_vms = (!host).then(|| vm::Options {
                series: if kernels.is_empty() {
                    vm::Series::ALL.to_vec()
                } else {
                    kernels
                },
                timeout: Duration::from_secs(vm_timeout),
                jobs: vm_jobs,
                test_args: test_args.clone(),
                bench: None,
            });
            test(!vm, in_vms.as_ref(), &test_args)
        }
        Task::Bench {
            vm: Some(series),
            names,
            bench_args,
        } => {
            if !running_as_root() {
                bail!("the VM matrix boots kernels with qemu and must run as root");
            }
            setup::run_all()?;
            vm::run(&vm::Options {
                series: vec![series],
                timeout: Duration::from_secs(3600),
                jobs: 1,
                test_args: Vec::new(),
                bench: Some(names.into_iter().chain(bench_args).collect()),
            })
        }
        Task::Bench {
            vm: None,
            names,
            bench_args,
        } => {
            setup::run_all()?;
            build(Profile::Release)?;
            run(Command::new(binary(Profile::Release, "faultline-bench"))
                .args(names)
                .args(bench_args))
        }
        Task::Fuzz { cases, duration } => {
            setup::run_all()?;
            run(cargo()
                .env("PROPTEST_CASES", cases.to_string())
                .env("PROPTEST_MAX_SECS", duration.to_string())
                .args([
                    "test",
                    "--release",
                    "-p",
                    "faultline-agent",
                    "--lib",
                    "domain::wire::props",
                    "--",
                    "--nocapture",
                ]))
        }
        Task::Clippy => {
            setup::run_all()?;
            run(cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))
        }
        Task::FmtCheck => run(cargo().args(["fmt", "--all", "--", "--check"])),
        Task::Man => man(),
        Task::Package { debug } => {
            setup::run_all()?;
            package::deb(if debug {
                Profile::Debug
            } else {
                Profile::Release
            })
            .map(drop)
        }
        Task::Caps { set } => {
            setup::run_all()?;
            package::caps(set.as_deref())
        }
    }
}

/// A duration such as `90s` or `10m`, in whole seconds.
fn humantime_secs(s: &str) -> Result<u64, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: give a number and s, m or h"))?;
    match unit {
        "" | "s" => Ok(n),
        "m" => Ok(n * 60),
        "h" => Ok(n * 3600),
        _ => Err(format!("{s:?}: the unit is s, m or h")),
    }
}

/// `faultctl man` prints the page; written where `man -l` or packaging finds it.
fn man() -> Result<()> {
    let page = command::capture_bytes(cargo().args([
        "run",
        "--quiet",
        "--package",
        "faultline-ctl",
        "--bin",
        "faultctl",
        "--",
        "man",
    ]))?;
    let dir = target_dir().join("man");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("faultctl.1");
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn build(profile: Profile) -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["build", "--workspace", "--bins"]);
    if let Profile::Release = profile {
        cmd.arg("--release");
    }
    run(&mut cmd)
}

/// The host tests when `on_host`, then the VM matrix when `in_vms` is given;
/// the VMs run even after a host failure, so one run reports both.
fn test(on_host: bool, in_vms: Option<&vm::Options>, test_args: &[OsString]) -> Result<()> {
    if !running_as_root() {
        bail!(
            "the integration tests load eBPF programs and create network namespaces, \
             so they must run as root: `sudo -E cargo xtask test`"
        );
    }
    setup::run_all()?;
    if on_host {
        // The package suite builds the .deb; cargo-deb is a tool, installed once.
        package::ensure_cargo_deb()?;
    }
    let host = if on_host {
        test_on_host(test_args)
    } else {
        Ok(())
    };
    let Some(options) = in_vms else {
        return host;
    };
    if let Err(error) = &host {
        eprintln!("host tests failed: {error:#}; running the VM tests anyway");
    }
    match (host, vm::run(options)) {
        (Err(host), Err(vm)) => {
            bail!("the host tests failed ({host:#}), and so did the VM tests ({vm:#})")
        }
        (host, vm) => host.and(vm),
    }
}

fn test_on_host(test_args: &[OsString]) -> Result<()> {
    // The integration tests start the agent binary from the target directory.
    build(Profile::Debug)?;
    run(cargo()
        .env("RUST_BACKTRACE", "1")
        // What this host's kernel must support (the agent's capability
        // vocabulary): a test that would skip for lack of it fails instead.
        // No BPF LSM or fq here (KERNEL.md).
        .env(
            "FAULTLINE_EXPECT",
            "cgroup_sock_addr,raw_tracepoint,cgroup_skb,tcx,sock_ops",
        )
        .args(["test", "--workspace", "--", "--test-threads=1"])
        .args(test_args))
}

/// Replaces xtask with `cmd`, so signals (Ctrl-C, SIGTERM) reach it directly.
fn exec(cmd: &mut Command) -> Result<()> {
    let line = display(cmd);
    eprintln!("    $ exec {line}");
    Err(cmd.exec()).with_context(|| format!("could not exec `{line}`"))
}

/// `cargo` in the workspace root: the same cargo that runs xtask, when it says which.
fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in a directory of the workspace")
}

fn binary(profile: Profile, name: &str) -> PathBuf {
    target_dir().join(profile.target_subdir()).join(name)
}

fn target_dir() -> PathBuf {
    // cargo resolves a relative CARGO_TARGET_DIR against its working directory, the root.
    env::var_os("CARGO_TARGET_DIR").map_or_else(
        || workspace_root().join("target"),
        |dir| workspace_root().join(dir),
    )
}

fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// One line of setup progress: `setup: STEP: WHAT`.
fn status(step: &str, what: &str) {
    eprintln!("setup: {step}: {what}");
}
