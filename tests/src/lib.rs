//! Harness for Faultline's privileged end-to-end tests and benchmarks: a real
//! agent process, real cgroups, real target processes. Every guard removes
//! what it created when dropped.
//!
//! One module per concern, everything re-exported here: `agent` (the agent
//! process, its log, a client), `cgroup`, `netns` (a namespace behind a veth
//! pair), `net` (sockets and counters on the test's side), `probe` (the
//! `fl-probe` target process and its servers), `expect` (what this kernel
//! must offer, capability rows), `loopfs` (a filesystem of the test's own), `procs` (children, liveness, IO from /proc), `rate` (sample sizes and bounds of every
//! probability check), `spec` (request builders) and `bpf` (the
//! links and programs in the kernel).
#![cfg_attr(
    test,
    expect(
        unused_crate_dependencies,
        reason = "dev-dependencies serve the integration tests"
    )
)]

mod agent;
mod bpf;
mod cgroup;
mod expect;
mod loopfs;
mod net;
mod netns;
mod probe;
pub mod procs;
mod rate;
mod spec;
pub mod tls;

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

pub use crate::{
    agent::{Agent, small_window_channel, unix_channel},
    bpf::{KEEPER_PROGRAM, keeper_links, live_links, live_programs, our_links, our_programs},
    cgroup::{TestCgroup, cgroup2_root},
    expect::{capability, expected, in_vm, supported_or_skip},
    loopfs::LoopFs,
    net::{
        Acceptor, force_receive_buffer, free_loopback_port, free_port, http_get, proc_net_counter,
        receive_numbered, tcp_reachable, tcp_total_retrans, udp_receiver,
    },
    netns::TestNetns,
    probe::{ChildGuard, Listener, ProbeResult, ProbeServer, probe, probe_fs, spawn_named},
    procs::{children_of, gone, proc_io},
    rate::RateCheck,
    spec::{cgroup_target, experiment, interface_target, pid_target, running_experiments, start},
    tls::{CertDir, tls_channel},
};
pub use faultline_proto::build::{
    any_packet, bandwidth, blackhole, connect_error, corrupt, dns_error, duplicate, latency,
    lsm_error, packet_loss, syscall_error, syscall_signal, to_ports, udp_to_port,
};

pub(crate) static SEQ: AtomicU32 = AtomicU32::new(0);

pub(crate) fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Directory holding the workspace's built binaries (target/debug or
/// target/release), found from the running test or bench executable.
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("FAULTLINE_BIN_DIR") {
        return dir.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("exe dir");
    if dir.ends_with("deps") {
        dir.parent().expect("profile dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is not built; run `cargo build --workspace --bins` (cargo xtask test does)",
        p.display()
    );
    p
}

/// Waits until `cond` holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

pub fn require_root() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "the end-to-end tests load eBPF programs and create cgroups: run them as root (cargo xtask test)"
        );
    }
    Ok(())
}

pub fn context<T>(r: Result<T, tonic::Status>, what: &str) -> anyhow::Result<T> {
    r.map_err(|s| anyhow::anyhow!("{what}: {:?} {}", s.code(), s.message()))
        .context(what.to_owned())
}
