//! Faultline's performance targets, measured with a real agent, real cgroups
//! and real syscalls on this machine. Runs as root.
//!
//! faultline-bench [NAME...]    run the named benchmarks; all of them when none is given
//!
//! activation        StartExperiment returned → first injected connect() error
//! api               GetExperiment/ListExperiments p50/p99 from 8 clients, alone and while experiments start
//! connect-overhead  connect() of a non-target while a connect fault targets another cgroup
//! getpid-overhead   getpid() of a non-target while the sys_enter tracepoint is attached
//! network           packet_loss on a veth interface vs iptables `-m statistic`: accuracy,
//!                   TCP throughput cost, StartExperiment → first dropped datagram
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
mod bpfstats;
mod connect;
mod getpid;
mod network;
mod open;
mod rounds;
mod stats;
mod sys;

use std::time::Instant;

use anyhow::{Context as _, bail};
use faultline_proto::v1::fault_service_client::FaultServiceClient;
use faultline_tests::{our_links, require_root};
use nix::time::{ClockId, clock_gettime};
use tonic::transport::Channel;

pub type Client = FaultServiceClient<Channel>;

pub const BENCHES: [(&str, &str); 7] = [
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
        "network",
        "packet_loss on a veth interface vs iptables -m statistic: accuracy, TCP throughput cost, time to first drop",
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
fn main() -> anyhow::Result<()> {
    let Some(names) = parse_args(std::env::args().skip(1))? else {
        print_usage();
        return Ok(());
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
            "network" => network::network(&rt),
            "open-overhead" => open::open_overhead(&rt),
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
    Ok(())
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
