//! `pressure`: the pressure kinds against stress-ng and the kernel's limit,
//! and the idle agent. One file per figure: `cpu` (accuracy and settling
//! of cpu_pressure vs `stress-ng --cpu-load`), `memory` (time to resident
//! of memory_pressure vs `stress-ng --vm-populate` and a bare
//! MADV_POPULATE_WRITE loop, warm and cold), `idle` (the agent's RSS and
//! CPU with no experiment).
//!
//! Every stressor, ours and stress-ng alike, runs in a cgroup of the
//! bench's own and is measured from that cgroup: CPU from `cpu.stat`
//! usage_usec (the scheduler's exact run time, not the 4 ms ticks that
//! /proc/stat samples), memory from the RSS of its processes.

mod cpu;
mod idle;
mod memory;

pub use memory::populate_child;

use std::{
    os::unix::process::CommandExt as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use faultline_proto::v1::{self as pb, fault_spec::Kind};
use faultline_tests::{TestCgroup, context, experiment, wait_for};
use tokio::runtime::Runtime;

use crate::{Client, header, sys::KillOnDrop};

pub fn pressure(rt: &Runtime) -> anyhow::Result<Vec<String>> {
    header(
        "pressure",
        &[
            "each stressor (ours through a real agent, stress-ng, the bare loop) in a fresh cgroup of the bench's own,",
            "measured from that cgroup: CPU by cpu.stat usage_usec, memory by the RSS of its processes",
        ],
    );
    ensure_stress_ng()?;
    println!("  stress-ng: {}", stress_ng_version());
    let mut verdicts = cpu::cpu_accuracy(rt)?;
    verdicts.extend(memory::memory_resident(rt)?);
    verdicts.extend(idle::idle_agent()?);
    Ok(verdicts)
}

/// Installs stress-ng with apt when it is missing (the bench runs as root).
fn ensure_stress_ng() -> anyhow::Result<()> {
    if Command::new("stress-ng").arg("--version").output().is_ok() {
        return Ok(());
    }
    println!("  stress-ng missing: apt-get install -y stress-ng");
    let status = Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "stress-ng"])
        .status()
        .context("run apt-get")?;
    if !status.success() {
        // The lists may be stale or absent (a fresh machine or VM).
        Command::new("apt-get")
            .arg("update")
            .status()
            .context("apt-get update")?;
        let status = Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "stress-ng"])
            .status()?;
        ensure!(
            status.success(),
            "apt-get install stress-ng failed: {status}"
        );
    }
    Ok(())
}

fn stress_ng_version() -> String {
    Command::new("stress-ng")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// CPU time the cgroup's processes have used, in ns (`cpu.stat` usage_usec).
fn usage_ns(cg: &TestCgroup) -> anyhow::Result<i64> {
    let path = cg.path.join("cpu.stat");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse::<i64>().ok())
        .map(|us| us * 1000)
        .with_context(|| format!("no usage_usec in {}", path.display()))
}

/// RSS of every process in the cgroup (and its child cgroups), in bytes.
fn rss_bytes(cg: &TestCgroup) -> u64 {
    let page = 4096;
    let mut total = 0;
    for dir in walk(&cg.path) {
        for pid in std::fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
        {
            let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
            total += statm
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                * page;
        }
    }
    total
}

/// A cgroup directory and its descendants.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(walk(&e.path()));
            }
        }
    }
    out
}

/// Any process in the cgroup or below it.
fn populated(cg: &TestCgroup) -> bool {
    walk(&cg.path).iter().any(|d| {
        std::fs::read_to_string(d.join("cgroup.procs")).is_ok_and(|t| !t.trim().is_empty())
    })
}

/// Waits (polling every 200 µs) for the first process to appear in the cgroup.
fn wait_populated(cg: &TestCgroup, timeout: Duration) -> anyhow::Result<Instant> {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if populated(cg) {
            return Ok(Instant::now());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    bail!(
        "nothing appeared in {} within {timeout:?}",
        cg.path.display()
    )
}

/// Waits for the cgroup (and its children) to have no process left.
fn wait_empty(cg: &TestCgroup) -> anyhow::Result<()> {
    ensure!(
        wait_for(Duration::from_secs(10), || !populated(cg)),
        "{} still has processes 10 s after the stressor was stopped",
        cg.path.display()
    );
    Ok(())
}

/// A command started inside the cgroup (its process joins before exec).
fn spawn_in(cg: &TestCgroup, program: &str, args: &[String]) -> anyhow::Result<KillOnDrop> {
    let mut cmd = cg.command(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group, so that stress-ng's workers go with it.
        .process_group(0);
    Ok(KillOnDrop(
        cmd.spawn().with_context(|| format!("spawn {program}"))?,
    ))
}

/// Kills a process group started by [`spawn_in`], and reaps its leader.
fn kill_group(mut child: KillOnDrop) {
    let pgid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    let _ = child.0.wait();
}

/// One fault of ours on the cgroup, for `duration`; the experiment's id.
fn start_ours(
    rt: &Runtime,
    client: &mut Client,
    kind: Kind,
    cg: &TestCgroup,
) -> anyhow::Result<String> {
    let req = experiment(
        pb::FaultSpec { kind: Some(kind) },
        pb::Target {
            cgroup: cg.path_str(),
            ..Default::default()
        },
        Duration::from_secs(600),
    );
    let resp = context(rt.block_on(client.start_experiment(req)), "StartExperiment")?;
    Ok(resp.into_inner().experiment.context("no experiment")?.id)
}

fn stop_ours(rt: &Runtime, client: &mut Client, id: &str) -> anyhow::Result<()> {
    context(
        rt.block_on(client.stop_experiment(pb::StopExperimentRequest { id: id.to_owned() })),
        "StopExperiment",
    )?;
    Ok(())
}
