//! `connect-overhead`: connect() of a non-target while a connect fault targets another cgroup.

use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure};
use faultline_tests::{ProbeServer, TestCgroup, cgroup_target, connect_error, experiment};
use nix::unistd::Pid;
use tokio::runtime::Runtime;

use crate::{header, rounds::*, stats::*, sys::*};

/// Alternating rounds (each round measures every configuration once); connect()
/// varies more from one measurement to the next than getpid() or open().
const CONNECT_ROUNDS: usize = 15;
const CONNECTS: u64 = 20_000;
const CONNECT_WARMUP: u64 = 1_000;
const CONNECT_TARGET_RATIO: f64 = 1.03;

pub fn connect_overhead(rt: &Runtime) -> anyhow::Result<Vec<String>> {
    let pinning = Pinning::detect();
    let placement = match pinning {
        Some(p) => format!(
            "fl-probe pinned to CPU {}, acceptor thread pinned to CPU {}",
            p.measured, p.other
        ),
        None => "NOT pinned (fewer than 2 usable CPUs)".to_owned(),
    };
    let counts = format!(
        "each measurement: a fresh acceptor (accept queue 4096) and a fresh `fl-probe serve` outside any test \
         cgroup, in a fresh network namespace (no TIME_WAIT sockets of earlier measurements, ports 1024-65535; \
         torn down after, with {} ms to settle); \
         {CONNECT_WARMUP} warm-up connects, then the time of a {CONNECTS}-connect request minus an empty request, / \
         {CONNECTS}",
        NETNS_TEARDOWN.as_millis()
    );
    let rounds_line = format!(
        "{CONNECT_ROUNDS} alternating rounds (a b c, then c b a), agent started fresh each round; median over rounds; \
         {placement}"
    );
    header(
        "connect-overhead",
        &[
            "method: CPU ns per loopback TCP connect() (incl. socket and close) of a process that is NOT targeted, from",
            "the probe's /proc/PID/schedstat so that other work sharing the CPU does not count (wall clock shown too);",
            &counts,
            &rounds_line,
            "(c) experiment: connect, ECONNREFUSED, p=1.0, port 9 (unused here), cgroup target = another, empty test cgroup",
        ],
    );
    let other = TestCgroup::new("bench-other");
    let arm = || {
        experiment(
            connect_error("ECONNREFUSED", 1.0, 9, ""),
            cgroup_target(&other),
            Duration::from_secs(300),
        )
    };
    let rounds = alternate_rounds(rt, CONNECT_ROUNDS, arm, |_| connect_cost(pinning))?;

    print_rounds(
        [
            "(a) no agent process [baseline]",
            "(b) agent running, no experiment",
            "(c) agent + connect fault on another cgroup",
        ],
        &rounds,
        "CPU ns/connect",
    );
    let [a, _, c] = rounds.samples.each_ref().map(|v| median(v));
    println!(
        "  run-to-run noise of one measurement (IQR of (a)): {:.1} ns = {:.1} %",
        iqr(&rounds.samples[0]),
        iqr(&rounds.samples[0]) / a * 100.0
    );
    print_ratio(&rounds, Config::AgentIdle);
    let judged = print_ratio(&rounds, Config::AgentFault);
    print_kernel_cost(&rounds, "connect()");
    let (_, v) = verdict(
        &judged,
        Target::Below(pct_of(CONNECT_TARGET_RATIO)),
        &show_pct,
    );
    let target = format!(
        "connect-overhead: target: < 3 % overhead ((c) vs baseline (a) \"no agent process\"): {v} (ratio of \
         medians {:+.2} %)",
        pct_of(c / a)
    );
    println!("  {target}");
    Ok(vec![target])
}

/// ns per connect() of a fresh, non-target probe process with a fresh
/// acceptor, both in a fresh network namespace.
pub fn connect_cost(pinning: Option<Pinning>) -> anyhow::Result<Sample> {
    let net = PrivateNet::new()?;
    let sample = std::thread::scope(|s| {
        s.spawn(|| {
            net.enter()?;
            connect_cost_here(pinning)
        })
        .join()
        .map_err(|_| anyhow!("the connect measurement panicked"))?
    });
    // Tearing the namespace down frees its TIME_WAIT sockets, which would
    // otherwise lengthen the kernel's shared hash chains for the following
    // measurements; the kernel does it in a worker: let it finish first.
    drop(net);
    std::thread::sleep(NETNS_TEARDOWN);
    sample
}

pub fn connect_cost_here(pinning: Option<Pinning>) -> anyhow::Result<Sample> {
    // Threads and processes inherit the affinity of the thread that creates
    // them: the acceptor's thread stays on this CPU, the probe is moved.
    if let Some(p) = pinning {
        pin(Pid::from_raw(0), p.other)?;
    }
    let overflows_before = listen_overflows()?;
    let acceptor = DeepAcceptor::new()?;
    let addr = acceptor.addr;
    let mut probe = ProbeServer::spawn(None);
    if let Some(p) = pinning {
        pin(Pid::from_raw(i32::try_from(probe.pid())?), p.measured)?;
    }
    let warm = probe.run("connect", addr, CONNECT_WARMUP);
    ensure!(
        warm.ok == CONNECT_WARMUP,
        "warm-up connects to {addr} failed: {warm:?}"
    );
    let pid = probe.pid();
    let (t, c) = (Instant::now(), cpu_ns(pid)?);
    probe.run("connect", addr, 0);
    let (empty, empty_cpu) = (t.elapsed(), cpu_ns(pid)? - c);
    let (t, c) = (Instant::now(), cpu_ns(pid)?);
    let res = probe.run("connect", addr, CONNECTS);
    let (full, full_cpu) = (t.elapsed(), cpu_ns(pid)? - c);
    ensure!(
        res.ok == CONNECTS,
        "expected all {CONNECTS} connects of a non-target to succeed, saw {res:?}"
    );
    let overflows = listen_overflows()? - overflows_before;
    Ok(Sample {
        cpu: full_cpu.saturating_sub(empty_cpu) as f64 / CONNECTS as f64,
        wall: full.saturating_sub(empty).as_nanos() as f64 / CONNECTS as f64,
        overflows,
        calls: CONNECT_WARMUP + CONNECTS,
    })
}
