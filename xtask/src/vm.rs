//! `cargo xtask test --vm`: the privileged integration tests on Debian's 6.1
//! and 6.12 kernels, each booted under qemu with an initramfs that holds the
//! whole guest (busybox, the host tools the tests call, our binaries).
//!
//! The kernels carry what the host kernel lacks (BPF LSM, trampolines, netem,
//! fq), so the mechanisms that cannot load here are tested for real there.

mod initramfs;
mod kernel;
mod qemu;

use std::{
    ffi::OsString,
    fs,
    io::Read as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

pub use self::kernel::Series;
use self::{
    initramfs::Payload,
    qemu::{Outcome, Verdict},
};
use crate::{command::display, setup};

/// Downloaded and unpacked kernel packages, kept across runs.
const CACHE_DIR: &str = "/var/cache/faultline/vm";

/// How many of each kernel's slowest tests the summary lists.
const SLOWEST_TESTS_SHOWN: usize = 8;

/// What to run, from the command line.
pub struct Options {
    pub series: Vec<Series>,
    /// Per kernel, from starting qemu to its exit.
    pub timeout: Duration,
    /// Guests booted at once.
    pub jobs: usize,
    /// Arguments for every test binary (e.g. a name filter).
    pub test_args: Vec<OsString>,
    /// Run `faultline-bench` with these arguments instead of the tests.
    pub bench: Option<Vec<OsString>>,
}

/// Builds the payload once, packs an initramfs per kernel, then boots the
/// guests `jobs` at a time. On a two-CPU machine keep to one: a TCG guest
/// with two vCPUs keeps about 1.5 host CPUs busy, so two guests side by side
/// finish no sooner, and the slowed agents miss the harness's start timeout.
pub fn run(options: &Options) -> Result<()> {
    setup::run_vm()?;
    let work_dir = crate::target_dir().join("vm");
    let payload = build_payload(&work_dir.join("bin"))?;
    let cache = Path::new(CACHE_DIR);

    let mut guests = Vec::new();
    for &series in &options.series {
        let kernel = kernel::prepare(series, cache)?;
        let initrd = work_dir.join(format!("initramfs-{}.cpio", kernel.release));
        eprintln!("vm: packing {}", initrd.display());
        initramfs::write(
            &kernel,
            &payload,
            &initramfs::Run {
                expected_mechanisms: series.expected_mechanisms(),
                test_args: &options.test_args,
                bench: options.bench.as_deref(),
            },
            &initrd,
        )?;
        guests.push((series, kernel, initrd));
    }

    let mut runs = Vec::new();
    for batch in guests.chunks(options.jobs.max(1)) {
        let outcomes = thread::scope(|scope| {
            let boots: Vec<_> = batch
                .iter()
                .map(|(series, kernel, initrd)| {
                    scope.spawn(move || {
                        qemu::boot(&kernel.vmlinuz, initrd, series.name(), options.timeout)
                    })
                })
                .collect();
            boots
                .into_iter()
                .map(|boot| boot.join().expect("a qemu thread panicked"))
                .collect::<Vec<_>>()
        });
        for ((series, kernel, initrd), outcome) in batch.iter().zip(outcomes) {
            let mut outcome = outcome?;
            // A guest kernel panic is the emulated kernel failing, not a
            // test: under TCG the int3-based code patching of a static key
            // (a tracepoint attached or detached) has oopsed once in
            // ~10 runs. Boot that kernel once more; a second panic fails.
            if outcome.verdict == Verdict::NoResult && outcome.kernel_panic {
                eprintln!(
                    "vm: the {} guest kernel PANICKED (see the console above); booting it once more",
                    kernel.release
                );
                outcome = qemu::boot(&kernel.vmlinuz, initrd, series.name(), options.timeout)?;
                outcome.retried_after_panic = true;
            }
            runs.push((kernel.release.clone(), outcome));
        }
    }

    print_summary(&runs);
    let failed: Vec<&str> = runs
        .iter()
        .filter(|(_, outcome)| outcome.verdict != Verdict::Pass)
        .map(|(release, _)| release.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("the VM tests failed on {}", failed.join(", "));
    }
    Ok(())
}

/// Builds the workspace's binaries and integration tests in release mode and
/// puts stripped copies into `dir`.
/// Integration suites with nothing kernel-specific to prove (the API's
/// transport, authorisation, leases, metrics, packaging, hostile input):
/// they run on the host only, so the guests' time goes to what only they
/// can show.
const HOST_ONLY_SUITES: &[&str] = &["mtls", "lease", "metrics", "hostile", "package"];

fn build_payload(dir: &Path) -> Result<Payload> {
    let bins = cargo_executables(crate::cargo().args([
        "build",
        "--workspace",
        "--exclude",
        "xtask",
        "--bins",
        "--release",
    ]))?;
    let tests = cargo_executables(crate::cargo().args([
        "test",
        "-p",
        "faultline-tests",
        "--tests",
        "--release",
        "--no-run",
    ]))?;
    // Unit tests of the crate's lib and bins are host tests; only the
    // integration tests (tests/tests/*.rs) run in the guests.
    let mut tests: Vec<_> = tests
        .into_iter()
        .filter(|exe| exe.kind == "test" && !HOST_ONLY_SUITES.contains(&exe.name.as_str()))
        .collect();
    tests.sort_by(|a, b| a.name.cmp(&b.name));
    if tests.is_empty() {
        bail!("cargo built no integration test of faultline-tests");
    }

    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let strip = |exe: &Executable| -> Result<PathBuf> {
        let copy = dir.join(&exe.name);
        // Debug info goes; the symbol table stays, so backtraces name functions.
        crate::command::run(
            Command::new("strip")
                .arg("--strip-debug")
                .arg("-o")
                .arg(&copy)
                .arg(&exe.path),
        )?;
        Ok(copy)
    };
    Ok(Payload {
        bins: bins.iter().map(strip).collect::<Result<_>>()?,
        tests: tests.iter().map(strip).collect::<Result<_>>()?,
    })
}

/// An executable cargo reported building.
struct Executable {
    /// The target's name: `faultline-agent`, or `packet_loss` for tests/tests/packet_loss.rs.
    name: String,
    /// `bin` or `test`.
    kind: String,
    path: PathBuf,
}

/// Runs a cargo build command and returns the executables it produced, from
/// its JSON messages; diagnostics still reach the terminal.
fn cargo_executables(cmd: &mut Command) -> Result<Vec<Executable>> {
    cmd.arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped());
    let line = display(cmd);
    eprintln!("    $ {line}");
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start `{line}`"))?;
    let mut messages = String::new();
    child
        .stdout
        .take()
        .expect("stdout is piped")
        .read_to_string(&mut messages)
        .with_context(|| format!("reading the output of `{line}`"))?;
    let status = child.wait()?;
    if !status.success() {
        bail!("`{line}` failed: {status}");
    }
    Ok(messages.lines().filter_map(executable).collect())
}

fn executable(message: &str) -> Option<Executable> {
    let message: Value = serde_json::from_str(message).ok()?;
    if message["reason"] != "compiler-artifact" {
        return None;
    }
    let target = &message["target"];
    Some(Executable {
        name: target["name"].as_str()?.to_owned(),
        kind: target["kind"][0].as_str()?.to_owned(),
        path: message["executable"].as_str()?.into(),
    })
}

fn print_summary(runs: &[(String, Outcome)]) {
    let seconds = |duration: Option<Duration>| {
        duration.map_or_else(|| "-".to_owned(), |d| format!("{:.1}s", d.as_secs_f64()))
    };
    println!();
    println!("VM test matrix");
    println!(
        "{:<30} {:<9} {:>6} {:>6} {:>7} {:>7} {:>8}",
        "kernel", "result", "passed", "failed", "ignored", "boot", "total"
    );
    for (release, outcome) in runs {
        println!(
            "{:<30} {:<9} {:>6} {:>6} {:>7} {:>7} {:>8}",
            release,
            if outcome.retried_after_panic {
                format!("{}*", outcome.verdict.as_str())
            } else {
                outcome.verdict.as_str().to_owned()
            },
            outcome.passed,
            outcome.failed,
            outcome.ignored,
            seconds(outcome.boot),
            seconds(Some(outcome.total)),
        );
    }
    if runs.iter().any(|(_, outcome)| outcome.retried_after_panic) {
        println!(
            "* the first boot of this kernel ended in a guest kernel panic; this is the second"
        );
    }
    println!();
    println!(
        "{:<30} {:<16} {:>5} {:>8}",
        "kernel", "test binary", "exit", "time"
    );
    for (release, outcome) in runs {
        for binary in &outcome.binaries {
            let exit = binary
                .exit_code
                .map_or_else(|| "?".to_owned(), |code| code.to_string());
            println!(
                "{:<30} {:<16} {:>5} {:>8}",
                release,
                binary.name,
                exit,
                seconds(Some(binary.duration)),
            );
        }
    }
    println!();
    println!("Slowest tests");
    for (release, outcome) in runs {
        let mut tests: Vec<_> = outcome.tests.iter().collect();
        tests.sort_by_key(|test| std::cmp::Reverse(test.duration));
        for test in tests.iter().take(SLOWEST_TESTS_SHOWN) {
            println!(
                "{release:<30} {:>8}  {}::{} ({})",
                seconds(Some(test.duration)),
                test.binary,
                test.test,
                test.result
            );
        }
    }
    let failures: Vec<_> = runs
        .iter()
        .flat_map(|(release, outcome)| outcome.failures.iter().map(move |f| (release, f)))
        .collect();
    if !failures.is_empty() {
        println!();
        println!("Failed tests");
        for (release, failure) in failures {
            println!(
                "{release}  {}::{}: {}",
                failure.binary,
                failure.test,
                failure
                    .message
                    .as_deref()
                    .unwrap_or("(no panic message seen)")
            );
        }
    }
}
