//! `getpid-overhead`: getpid() of a non-target while the sys_enter tracepoint is attached.

use std::{
    hint::black_box,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use faultline_tests::{experiment, pid_target, syscall_signal};
use nix::{
    time::{ClockId, clock_gettime},
    unistd::Pid,
};
use tokio::runtime::Runtime;

use crate::{header, rounds::*, stats::*, sys::*};

/// Alternating rounds (each round measures every configuration once).
const GETPID_ROUNDS: usize = 9;
const GETPID_CALLS: u64 = 2_000_000;
const GETPID_WARMUP: u64 = 100_000;
const GETPID_TARGET_ADDED_NS: f64 = 100.0;
const GETPID_IDLE_NOISE_FLOOR_NS: f64 = 5.0;

pub fn getpid_overhead(rt: &Runtime) -> anyhow::Result<Vec<String>> {
    let pinning = Pinning::detect();
    let cpu = pinning.map(|p| p.measured);
    let placement = cpu.map_or("NOT pinned (fewer than 2 usable CPUs)".to_owned(), |c| {
        format!("pinned to CPU {c}")
    });
    let per = format!(
        "each measurement: a thread of this bench process, {placement}, {GETPID_WARMUP} warm-up calls, then \
         {GETPID_CALLS} calls of syscall(SYS_getpid) (no libc caching) timed with CLOCK_THREAD_CPUTIME_ID (and wall clock)"
    );
    let rounds_line = format!(
        "{GETPID_ROUNDS} alternating rounds (a b c, then c b a), agent started fresh each round; median over rounds"
    );
    header(
        "getpid-overhead",
        &[
            "method: CPU ns per getpid() of a process that is NOT targeted;",
            &per,
            &rounds_line,
            "(c) experiment: syscall_signal getppid, KILL, p=1.0, pid target = a `sleep` child (raw tracepoint sys_enter)",
        ],
    );
    let mut sleeper = Command::new("sleep");
    sleeper.arg("3600").stdin(Stdio::null());
    let sleeper = KillOnDrop(sleeper.spawn().context("spawn sleep")?);
    let sleeper_pid = sleeper.0.id();
    let arm = || {
        experiment(
            syscall_signal("getppid", "KILL", 1.0, 0),
            pid_target(sleeper_pid),
            Duration::from_secs(300),
        )
    };
    let rounds = alternate_rounds(rt, GETPID_ROUNDS, arm, |_| getpid_cost(cpu))?;
    drop(sleeper);

    print_rounds(
        [
            "(a) no agent process [baseline]",
            "(b) agent running, no experiment",
            "(c) agent + syscall_signal on another process",
        ],
        &rounds,
        "CPU ns/call",
    );
    let [a, b, c] = rounds.samples.each_ref().map(|v| median(v));
    println!(
        "  run-to-run noise of one measurement (IQR of (a)): {:.1} ns",
        iqr(&rounds.samples[0])
    );
    let diff_b = paired(&rounds, Config::AgentIdle, |x, a| x - a);
    let diff_c = paired(&rounds, Config::AgentFault, |x, a| x - a);
    let figure = |diff: &[f64]| Figure {
        what: "median of same-round differences",
        value: median(diff),
        ci: median_ci(diff),
    };
    let (fig_b, fig_c) = (figure(&diff_b), figure(&diff_c));
    let ns = |x: f64| format!("{x:+.1} ns");
    println!(
        "  same-round differences: (b)-(a) median {}, 95 % CI {}; (c)-(a) median {}, 95 % CI {}",
        ns(fig_b.value),
        fig_b.ci.show(&ns),
        ns(fig_c.value),
        fig_c.ci.show(&ns)
    );
    print_kernel_cost(&rounds, "getpid()");
    let (_, v_c) = verdict(&fig_c, Target::Below(GETPID_TARGET_ADDED_NS), &ns);
    let (_, v_b) = verdict(&fig_b, Target::Below(GETPID_IDLE_NOISE_FLOOR_NS), &ns);
    let target_c = format!(
        "getpid-overhead: target: (c) adds < {GETPID_TARGET_ADDED_NS} ns over baseline (a) \"no agent process\": {v_c} \
         (medians: {:+.1} ns)",
        c - a
    );
    let target_b = format!(
        "getpid-overhead: target: (b) adds nothing measurable (< {GETPID_IDLE_NOISE_FLOOR_NS} ns) over baseline (a) \
         \"no agent process\": {v_b} (medians: {:+.1} ns)",
        b - a
    );
    println!("  {target_c}");
    println!("  {target_b}");
    Ok(vec![target_c, target_b])
}

/// ns per getpid() in a thread of this process.
pub fn getpid_cost(cpu: Option<usize>) -> anyhow::Result<Sample> {
    std::thread::spawn(move || -> anyhow::Result<Sample> {
        if let Some(cpu) = cpu {
            pin(Pid::from_raw(0), cpu)?;
        }
        let getpid = || {
            // SAFETY: getpid takes no arguments and cannot fail.
            black_box(unsafe { libc::syscall(libc::SYS_getpid) });
        };
        for _ in 0..GETPID_WARMUP {
            getpid();
        }
        let thread_cpu = || {
            let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).expect("thread CPU clock");
            t.tv_sec() * 1_000_000_000 + t.tv_nsec()
        };
        let (t, c) = (Instant::now(), thread_cpu());
        for _ in 0..GETPID_CALLS {
            getpid();
        }
        let (wall, cpu) = (t.elapsed(), thread_cpu() - c);
        Ok(Sample {
            cpu: cpu as f64 / GETPID_CALLS as f64,
            wall: wall.as_nanos() as f64 / GETPID_CALLS as f64,
            overflows: 0,
            calls: GETPID_WARMUP + GETPID_CALLS,
        })
    })
    .join()
    .map_err(|_| anyhow!("the getpid thread panicked"))?
}
