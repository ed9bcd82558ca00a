//! Faultline's performance targets, measured with a real agent, real cgroups
//! and real syscalls on this machine. Runs as root.
//!
//! faultline-bench [NAME...]    run the named benchmarks; all of them when none is given
//!
//! Exit status: 0 when no verdict is FAIL (PASS, INCONCLUSIVE and SKIPPED
//! are not failures), 1 when any is, or when a benchmark cannot run.
//!
//! activation        StartExperiment returned → first injected connect() error
//! api               GetExperiment/ListExperiments p50/p99 from 8 clients, alone and while experiments start;
//!                   GetExperiment over mTLS from 64 clients (calls/s, p99) beside the unix socket; mTLS handshakes/s
//! connect-overhead  connect() of a non-target while a connect fault targets another cgroup
//! getpid-overhead   getpid() of a non-target while the sys_enter tracepoint is attached
//! impact            pipe ping-pong with the run-queue programs of impact measurement on vs off
//! lease             the last renewal of a lease → the fault gone (the target's first ok connect)
//! network           packet_loss on a veth interface vs iptables `-m statistic`: accuracy,
//!                   TCP throughput cost, StartExperiment → first dropped datagram
//! pressure          cpu_pressure vs stress-ng --cpu-load (accuracy, settling), memory_pressure vs
//!                   stress-ng --vm-populate and a bare MADV_POPULATE_WRITE loop, the idle agent,
//!                   and `impact` (the cost of impact measurement)
//! open-overhead     open()+close() of a non-target while an LSM open fault targets another cgroup
//! open-vs-strace    open()+close() of the faulted target: our LSM fault vs strace's ptrace injection
//!
//! The two LSM benchmarks need BPF LSM (the Debian kernels of the VM matrix:
//! `cargo xtask bench --vm 6.12 open-overhead open-vs-strace`); elsewhere they
//! report SKIPPED with the agent's reason.
#![expect(
    unused_crate_dependencies,
    reason = "a binary beside the library: the package's dependencies are mostly the library's"
)]

mod activation;
mod api;
mod api_tls;
mod bpfstats;
mod connect;
mod getpid;
mod lease;
mod network;
mod open;
mod pressure;
mod pressure_impact;
mod rounds;
mod stats;
mod sys;

use std::{process::ExitCode, time::Instant};

use anyhow::{Context as _, bail};
use faultline_proto::v1::fault_service_client::FaultServiceClient;
use faultline_tests::{our_links, require_root};
use nix::time::{ClockId, clock_gettime};
use tonic::transport::Channel;

pub type Client = FaultServiceClient<Channel>;

pub const BENCHES: [(&str, &str); 10] = [
    (
        "activation",
        "StartExperiment returned → first injected connect() error",
    ),
    (
        "api",
        "GetExperiment/ListExperiments latency from 8 clients, alone and while experiments load and attach programs",
    ),
    (
        "connect-overhead",
        "connect() of a non-target while a connect fault targets another cgroup",
    ),
    (
        "getpid-overhead",
        "getpid() of a non-target while the sys_enter tracepoint is attached",
    ),
    (
        "impact",
        "pipe ping-pong with the run-queue programs of impact measurement on vs off; their cost per context switch",
    ),
    (
        "lease",
        "the last renewal of a lease → the fault gone from the kernel, as the target sees it",
    ),
    (
        "network",
        "packet_loss on a veth interface vs iptables -m statistic: accuracy, TCP throughput cost, time to first drop",
    ),
    (
        "pressure",
        "cpu_pressure and memory_pressure vs stress-ng (accuracy, settling, time to resident) and the idle agent",
    ),
    (
        "open-overhead",
        "open()+close() of a non-target while an open fault (BPF LSM) targets another cgroup",
    ),
    (
        "open-vs-strace",
        "open()+close() of the faulted target: our LSM open fault vs strace -e inject=openat:error=EIO",
    ),
];
fn main() -> anyhow::Result<ExitCode> {
    // The bare MADV_POPULATE_WRITE loop of `pressure`, as a process of its own.
    if let [_, flag, bytes] = std::env::args().collect::<Vec<_>>().as_slice()
        && flag == "--populate"
    {
        pressure::populate_child(bytes);
    }
    let Some(names) = parse_args(std::env::args().skip(1))? else {
        print_usage();
        return Ok(ExitCode::SUCCESS);
    };
    require_root()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("build the tokio runtime")?;
    let t0 = Instant::now();
    let foreign = our_links().len();
    if foreign > 0 {
        println!(
            "warning: {foreign} bpf_link(s) of fl_ programs are already attached (another agent is running?): \
             baselines will not be clean"
        );
    }
    let mut verdicts = Vec::new();
    for name in names {
        let v = match name {
            "activation" => activation::activation(&rt),
            "api" => api::api(&rt),
            "connect-overhead" => connect::connect_overhead(&rt),
            "getpid-overhead" => getpid::getpid_overhead(&rt),
            "impact" => pressure_impact::run(&rt),
            "lease" => lease::lease(&rt),
            "network" => network::network(&rt),
            "open-overhead" => open::open_overhead(&rt),
            // The one run: stressors' accuracy, memory, the idle
            // agent, and what measuring impact costs.
            "pressure" => pressure::pressure(&rt).and_then(|mut v| {
                v.extend(pressure_impact::run(&rt)?);
                Ok(v)
            }),
            "open-vs-strace" => open::open_vs_strace(&rt),
            other => unreachable!("{other} was validated by parse_args"),
        }
        .with_context(|| format!("benchmark {name}"))?;
        verdicts.extend(v);
        println!();
    }
    println!("== summary ({:.0} s) ==", t0.elapsed().as_secs_f64());
    for v in &verdicts {
        println!("  {v}");
    }
    let failed = verdicts.iter().filter(|v| fails(v)).count();
    if failed > 0 {
        println!("{failed} verdict(s) FAIL");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Does this summary line hold a FAIL verdict? Every benchmark returns its
/// lines as text built by `stats::verdict` / `stats::all_of`, whose words
/// are PASS, FAIL and INCONCLUSIVE in capitals (SKIPPED for a benchmark
/// that cannot run here); `all_of` is FAIL when any part is, so a line
/// holds the word FAIL exactly when one of its verdicts failed.
fn fails(line: &str) -> bool {
    line.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|word| word == stats::Verdict::Fail.word())
}

/// The benchmarks to run, in the order given; `None` for --help.
fn parse_args(args: impl Iterator<Item = String>) -> anyhow::Result<Option<Vec<&'static str>>> {
    let mut names = Vec::new();
    for arg in args {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let Some(&(name, _)) = BENCHES.iter().find(|(n, _)| *n == arg) else {
            let valid: Vec<&str> = BENCHES.iter().map(|(n, _)| *n).collect();
            bail!(
                "unknown benchmark {arg:?}; valid names: {}",
                valid.join(", ")
            );
        };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if names.is_empty() {
        names = BENCHES.iter().map(|(n, _)| *n).collect();
    }
    Ok(Some(names))
}

fn print_usage() {
    println!(
        "usage: faultline-bench [NAME...]   (all benchmarks when no name is given; run as root)"
    );
    for (name, what) in BENCHES {
        println!("  {name:<17} {what}");
    }
}

pub fn header(name: &str, method: &[&str]) {
    let what = BENCHES
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("", |(_, w)| w);
    println!("== {name}: {what} ==");
    for line in method {
        println!("  {line}");
    }
}

pub fn mono_ns() -> i64 {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    t.tv_sec() * 1_000_000_000 + t.tv_nsec()
}

#[cfg(test)]
mod tests {
    use super::fails;
    use crate::stats::{Verdict, all_of};

    #[test]
    fn only_a_fail_verdict_fails_the_run() {
        assert!(!fails(
            "connect-overhead: target: ...: PASS (median +1.00 %, 95 % CI [+0.40 %, +2.10 %] wholly below the +3 % target)"
        ));
        assert!(!fails(
            "getpid-overhead: target: ...: INCONCLUSIVE: 95 % CI [-33 %, +14 %] straddles the +5 % target"
        ));
        assert!(!fails(
            "open-overhead: SKIPPED: BPF LSM unavailable on this kernel (FAILED to load)"
        ));
        assert!(!fails(
            "activation: baseline \"synchronous arming\": 3/200 runs met it"
        ));
        assert!(fails(
            "network: loss accuracy: ...: FAIL (2 flow(s) of ours outside their 99.9 % binomial interval; ...)"
        ));
        let pass = (Verdict::Pass, "PASS (x)".to_owned());
        let fail = (Verdict::Fail, "FAIL (y)".to_owned());
        let open = (Verdict::Inconclusive, "INCONCLUSIVE: z".to_owned());
        assert!(fails(&all_of(&[("a", pass.clone()), ("b", fail)]).1));
        assert!(!fails(&all_of(&[("a", pass), ("b", open)]).1));
    }
}
