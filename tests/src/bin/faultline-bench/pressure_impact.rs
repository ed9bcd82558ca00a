//! `impact`: the cost of impact measurement — the scheduler programs
//! (`sched_wakeup`, `sched_wakeup_new`, `sched_switch`) run on every
//! context switch of the host while an experiment measures impact. A pipe
//! ping-pong between two threads pinned to one CPU (two wakeups and two
//! switches per round trip) with the programs on vs off, alternating; and
//! their own run time per switch from `kernel.bpf_stats`.

use std::{
    fs::File,
    io::{Read as _, Write as _},
    os::fd::OwnedFd,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use faultline_proto::v1 as pb;
use faultline_tests::{connect_error, experiment, pid_target};
use nix::{
    time::{ClockId, clock_gettime},
    unistd::Pid,
};
use tokio::runtime::Runtime;

use crate::{header, rounds::*, stats::*, sys::*};

const ROUNDS: usize = 9;
const ROUND_TRIPS: u64 = 200_000;
const WARMUP: u64 = 20_000;
/// Target: the programs add under 3 % to a context-switch-heavy workload.
const TARGET_PCT: f64 = 3.0;

/// Which processes the experiment measures: what each switch of the
/// ping-pong costs differs (a non-target's events end at one hash lookup).
#[derive(Clone, Copy)]
enum Measured {
    /// A `sleep` child: the ping-pong is not a target (the host's case).
    Other(u32),
    /// The ping-pong itself: every event is a target's (the worst case).
    PingPong,
}

pub fn run(rt: &Runtime) -> anyhow::Result<Vec<String>> {
    let cpu = Pinning::detect().map(|p| p.measured);
    let placement = cpu.map_or("NOT pinned (fewer than 2 usable CPUs)".to_owned(), |c| {
        format!("both pinned to CPU {c}")
    });
    let per = format!(
        "each measurement: two threads of this bench process, {placement}, pass one byte back and forth over two \
         pipes: {WARMUP} warm-up round trips, then {ROUND_TRIPS} (2 context switches each), timed with \
         CLOCK_PROCESS_CPUTIME_ID (and wall clock)"
    );
    header(
        "impact",
        &[
            "method: CPU ns per ping-pong round trip;",
            &per,
            &format!(
                "{ROUNDS} alternating rounds (a b c, then c b a), agent started fresh each round; median over rounds"
            ),
            "(c) experiment: dry-run syscall_error (connect, never called) with impact ON: the run-queue programs attached",
            "twice: measuring another process (a `sleep`; the ping-pong is a non-target) and measuring the ping-pong itself",
        ],
    );
    let mut sleeper = std::process::Command::new("sleep");
    sleeper.arg("3600").stdin(std::process::Stdio::null());
    let sleeper = KillOnDrop(sleeper.spawn().context("spawn sleep")?);
    let mut lines = Vec::new();
    for (what, measured) in [
        ("non-target", Measured::Other(sleeper.0.id())),
        ("target", Measured::PingPong),
    ] {
        println!("  -- the ping-pong as a {what} --");
        lines.push(one(rt, cpu, what, measured)?);
    }
    drop(sleeper);
    Ok(lines)
}

fn one(rt: &Runtime, cpu: Option<usize>, what: &str, measured: Measured) -> anyhow::Result<String> {
    let arm = || {
        let pid = match measured {
            Measured::Other(pid) => pid,
            Measured::PingPong => std::process::id(),
        };
        let mut req = experiment(
            connect_error("ECONNREFUSED", 1.0, 1, ""),
            pid_target(pid),
            Duration::from_secs(600),
        );
        let spec = req.spec.as_mut().expect("spec");
        spec.dry_run = true;
        spec.impact = pb::ImpactMode::On.into();
        req
    };
    let rounds = alternate_rounds(rt, ROUNDS, arm, |_| ping_pong(cpu))?;
    print_rounds(
        [
            "(a) no agent process [baseline]",
            "(b) agent running, no experiment",
            "(c) agent + impact measured (programs attached)",
        ],
        &rounds,
        "CPU ns/round trip",
    );
    println!(
        "  run-to-run noise of one measurement (IQR of (a)): {:.1} ns",
        iqr(&rounds.samples[0])
    );
    let _ = print_ratio(&rounds, Config::AgentIdle);
    let fig = print_ratio(&rounds, Config::AgentFault);
    print_kernel_cost(&rounds, "context switch");
    let mut all = crate::bpfstats::Costs::default();
    for k in &rounds.kernel {
        all.merge(&k.costs);
    }
    let (ns, runs) = all.of("fl_rq_switch");
    if runs > 0 {
        println!(
            "  fl_rq_switch: {:.0} ns per context switch (all CPUs, kernel.bpf_stats)",
            ns as f64 / runs as f64
        );
    }
    let (_, v) = verdict(&fig, Target::Below(TARGET_PCT), &show_pct);
    let line = format!(
        "impact: target: (c) adds < {TARGET_PCT} % to a pipe ping-pong, the ping-pong a {what}, over baseline (a) \
         \"no agent process\": {v}"
    );
    println!("  {line}");
    Ok(line)
}

fn pipe() -> anyhow::Result<(File, File)> {
    let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe().context("pipe")?;
    Ok((File::from(r), File::from(w)))
}

fn process_cpu_ns() -> i64 {
    let t = clock_gettime(ClockId::CLOCK_PROCESS_CPUTIME_ID).expect("process CPU clock");
    t.tv_sec() * 1_000_000_000 + t.tv_nsec()
}

/// ns per round trip; `calls` counts context switches (two per round trip).
fn ping_pong(cpu: Option<usize>) -> anyhow::Result<Sample> {
    let (mut ping_r, mut ping_w) = pipe()?;
    let (mut pong_r, mut pong_w) = pipe()?;
    let total = WARMUP + ROUND_TRIPS;
    let echo = std::thread::spawn(move || -> anyhow::Result<()> {
        if let Some(cpu) = cpu {
            pin(Pid::from_raw(0), cpu)?;
        }
        let mut b = [0u8; 1];
        for _ in 0..total {
            ping_r.read_exact(&mut b)?;
            pong_w.write_all(&b)?;
        }
        Ok(())
    });
    let driver = std::thread::spawn(move || -> anyhow::Result<(f64, f64)> {
        if let Some(cpu) = cpu {
            pin(Pid::from_raw(0), cpu)?;
        }
        let mut b = [0u8; 1];
        let mut trip = || -> anyhow::Result<()> {
            ping_w.write_all(&b)?;
            pong_r.read_exact(&mut b)?;
            Ok(())
        };
        for _ in 0..WARMUP {
            trip()?;
        }
        let (t, c) = (Instant::now(), process_cpu_ns());
        for _ in 0..ROUND_TRIPS {
            trip()?;
        }
        let (wall, cpu) = (t.elapsed(), process_cpu_ns() - c);
        Ok((
            cpu as f64 / ROUND_TRIPS as f64,
            wall.as_nanos() as f64 / ROUND_TRIPS as f64,
        ))
    });
    let (cpu_ns, wall_ns) = driver
        .join()
        .map_err(|_| anyhow!("the ping-pong thread panicked"))??;
    echo.join()
        .map_err(|_| anyhow!("the echo thread panicked"))??;
    Ok(Sample {
        cpu: cpu_ns,
        wall: wall_ns,
        overflows: 0,
        calls: 2 * total,
    })
}
