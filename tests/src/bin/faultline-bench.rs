//! Faultline's performance targets, measured with a real agent, real cgroups
//! and real syscalls on this machine. Runs as root.
//!
//! faultline-bench [NAME...]    run the named benchmarks; all of them when none is given
//!
//! activation        StartExperiment returned → first injected connect() error
//! connect-overhead  connect() of a non-target while a connect fault targets another cgroup
//! getpid-overhead   getpid() of a non-target while the sys_enter tracepoint is attached

use std::{
    hint::black_box,
    net::{SocketAddr, TcpListener},
    os::fd::{AsRawFd as _, OwnedFd},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail, ensure};
use faultline_proto::v1::{self as pb, fault_service_client::FaultServiceClient};
use faultline_tests::{
    Agent, ProbeServer, TestCgroup, bin, cgroup_target, connect_error, context, experiment,
    our_links, pid_target, require_root, syscall_signal, wait_for,
};
use nix::{
    sched::{CloneFlags, CpuSet, sched_getaffinity, sched_setaffinity, setns, unshare},
    sys::socket::{AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, listen, socket},
    time::{ClockId, clock_gettime},
    unistd::Pid,
};
use tokio::runtime::Runtime;
use tonic::transport::Channel;

type Client = FaultServiceClient<Channel>;

const BENCHES: [(&str, &str); 3] = [
    (
        "activation",
        "StartExperiment returned → first injected connect() error",
    ),
    (
        "connect-overhead",
        "connect() of a non-target while a connect fault targets another cgroup",
    ),
    (
        "getpid-overhead",
        "getpid() of a non-target while the sys_enter tracepoint is attached",
    ),
];

const ACTIVATION_RUNS: usize = 200;
/// Runs before the measured ones (first attach, page cache, allocator); shown, not counted.
const ACTIVATION_WARMUP: usize = 3;
/// How long the probe connects in a loop before StartExperiment, so it is hot.
const HOT_LOOP: Duration = Duration::from_millis(20);
const ACTIVATION_TARGET_MS: f64 = 10.0;

/// Alternating rounds of the overhead benchmarks (each round measures every
/// configuration once). connect() varies more from one measurement to the next.
const CONNECT_ROUNDS: usize = 15;
const GETPID_ROUNDS: usize = 9;
const CONNECTS: u64 = 20_000;
const CONNECT_WARMUP: u64 = 1_000;
const CONNECT_TARGET_RATIO: f64 = 1.03;
const GETPID_CALLS: u64 = 2_000_000;
const GETPID_WARMUP: u64 = 100_000;
const GETPID_TARGET_ADDED_NS: f64 = 100.0;
const GETPID_IDLE_NOISE_FLOOR_NS: f64 = 5.0;
/// Time for the kernel to tear down a network namespace we dropped.
const NETNS_TEARDOWN: Duration = Duration::from_millis(300);
/// Wall-clock over CPU time above which a measurement shared its CPU.
const CONTENDED_WALL_OVER_CPU: f64 = 1.1;

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
            "activation" => activation(&rt),
            "connect-overhead" => connect_overhead(&rt),
            "getpid-overhead" => getpid_overhead(&rt),
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

fn header(name: &str, method: &[&str]) {
    let what = BENCHES
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("", |(_, w)| w);
    println!("== {name}: {what} ==");
    for line in method {
        println!("  {line}");
    }
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "FAIL" }
}

fn mono_ns() -> i64 {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    t.tv_sec() * 1_000_000_000 + t.tv_nsec()
}

/// Nearest-rank percentile of an ascending slice.
fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

fn median(v: &[f64]) -> f64 {
    let s = sorted(v);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Interquartile range: the run-to-run noise of a handful of rounds, robust to one outlier.
fn iqr(v: &[f64]) -> f64 {
    let s = sorted(v);
    percentile(&s, 75.0) - percentile(&s, 25.0)
}

/// Distribution-free confidence interval (≥ 95 %) of the median: the order
/// statistics j and n-1-j (0-based), j the largest with P(Binomial(n, ½) ≤ j)
/// ≤ 2.5 %. With fewer than 6 values it is just the range.
fn median_ci(v: &[f64]) -> (f64, f64) {
    let s = sorted(v);
    let n = s.len();
    let mut pmf = 0.5f64.powi(i32::try_from(n).unwrap_or(i32::MAX));
    let mut cdf = pmf;
    let mut j = 0;
    for i in 0..n / 2 {
        if cdf > 0.025 {
            break;
        }
        j = i;
        pmf *= (n - i) as f64 / (i + 1) as f64;
        cdf += pmf;
    }
    (s[j], s[n - 1 - j])
}

/// Per-round differences (or ratios) of a configuration against the baseline
/// measured in the same round, which cancels drift over the run.
fn paired(rounds: &Rounds, config: Config, op: impl Fn(f64, f64) -> f64) -> Vec<f64> {
    rounds.samples[config.index()]
        .iter()
        .zip(&rounds.samples[0])
        .map(|(x, a)| op(*x, *a))
        .collect()
}

// ---- CPU placement ----

/// CPUs for the measured process and for its counterpart (the acceptor), when
/// this process may run on at least two.
#[derive(Clone, Copy)]
struct Pinning {
    measured: usize,
    other: usize,
}

impl Pinning {
    fn detect() -> Option<Self> {
        let allowed = sched_getaffinity(Pid::from_raw(0)).ok()?;
        (allowed.is_set(0).ok()? && allowed.is_set(1).ok()?).then_some(Self {
            measured: 1,
            other: 0,
        })
    }
}

/// Pins a thread (or a single-threaded process) to one CPU; pid 0 is the calling thread.
fn pin(pid: Pid, cpu: usize) -> anyhow::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)
        .with_context(|| format!("CPU {cpu} out of range"))?;
    sched_setaffinity(pid, &set).with_context(|| format!("pin {pid} to CPU {cpu}"))
}

// ---- network namespaces ----

/// A fresh network namespace for one loopback measurement: loopback up and
/// ephemeral ports 1024-65535 (a per-namespace sysctl; the host's is
/// untouched). Each loopback connect() closed by the client leaves a TIME_WAIT
/// socket for 60 s, and connect() picks even ports first: once they are taken
/// (~14,000 connects with the default 32768-60999) every connect() scans the
/// range and costs 5x more, depending on the history of the run rather than on
/// what is measured. A fresh namespace has no TIME_WAIT sockets and room for
/// ~32,000 connects. (Disabling TIME_WAIT instead reuses 4-tuples the acceptor
/// has not closed yet, and some connects then wait for a retransmit.)
struct PrivateNet {
    ns: OwnedFd,
}

impl PrivateNet {
    fn new() -> anyhow::Result<Self> {
        // unshare() moves only the calling thread: do it on a throwaway thread
        // and keep the namespace alive through its fd.
        std::thread::spawn(|| -> anyhow::Result<Self> {
            unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
            let ns = OwnedFd::from(
                std::fs::File::open("/proc/thread-self/ns/net").context("open the new netns")?,
            );
            // /proc/sys/net resolves to the namespace of the thread that opens it.
            std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "1024 65535")
                .context("widen ip_local_port_range in the private network namespace")?;
            loopback_up()?;
            Ok(Self { ns })
        })
        .join()
        .map_err(|_| anyhow!("creating the network namespace panicked"))?
    }

    /// Moves the calling thread, and every thread or process it creates from
    /// now on, into this namespace.
    fn enter(&self) -> anyhow::Result<()> {
        setns(&self.ns, CloneFlags::CLONE_NEWNET)
            .context("setns into the private network namespace")
    }
}

fn loopback_up() -> anyhow::Result<()> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("socket for SIOCSIFFLAGS")?;
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: both ioctls read or write the ifreq we own, through a socket we own.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut ifr) < 0 {
            return Err(std::io::Error::last_os_error()).context("SIOCGIFFLAGS lo");
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &raw const ifr) < 0 {
            return Err(std::io::Error::last_os_error()).context("SIOCSIFFLAGS lo up");
        }
    }
    Ok(())
}

/// TcpExt ListenOverflows of the calling thread's network namespace, so far:
/// SYNs a full accept queue dropped (the client retransmits after 1 s).
fn listen_overflows() -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/net/netstat")?;
    let mut tcp_ext = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = tcp_ext
        .next()
        .zip(tcp_ext.next())
        .context("no TcpExt lines")?;
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ListenOverflows")
        .context("no ListenOverflows counter")?
        .1
        .parse()
        .context("ListenOverflows value")
}

/// A loopback TCP listener with the deepest accept queue the namespace allows
/// (somaxconn, 4096 in a fresh one), drained by a thread that accepts and
/// drops. The harness's `Acceptor` listens with std's backlog of 128, which a
/// hot connect() loop fills within ~1 ms whenever the draining thread is not
/// scheduled; the next SYN is dropped and that connect() stalls for the 1 s
/// SYN retransmit, which would be measured as if it were the agent's latency.
struct DeepAcceptor {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DeepAcceptor {
    fn new() -> anyhow::Result<Self> {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .context("acceptor socket")?;
        bind(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 0)).context("bind 127.0.0.1:0")?;
        listen(&fd, Backlog::MAXALLOWABLE).context("listen")?;
        let listener = TcpListener::from(fd);
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => drop(conn),
                    Err(_) => std::thread::sleep(Duration::from_micros(200)),
                }
            }
        });
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for DeepAcceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A child process killed and reaped on drop.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---- activation ----

/// What `fl-probe first-error` prints.
#[derive(serde::Deserialize)]
struct FirstError {
    mono_ns: u64,
    errno: String,
}

/// One activation run, in CLOCK_MONOTONIC nanoseconds.
struct Activation {
    /// StartExperiment call → response returned.
    rpc: i64,
    /// Response returned → first injected error; negative when the fault hit first.
    after_return: i64,
    /// StartExperiment called → first injected error.
    after_call: i64,
    /// SYNs the acceptor's full accept queue dropped during the run.
    overflows: u64,
}

fn activation(rt: &Runtime) -> anyhow::Result<Vec<String>> {
    header(
        "activation",
        &[
            "method: per run, `fl-probe first-error` connects in a loop to a loopback acceptor (accept queue 4096, in a",
            "fresh network namespace) from inside a test cgroup; after 20 ms (hot): StartExperiment(connect,",
            "ECONNREFUSED, p=1.0, that port, cgroup target, 30 s). CLOCK_MONOTONIC right before the call (t_call) and",
            "right after the response (t_ret) vs. the probe's CLOCK_MONOTONIC at its first failed connect(); then",
            "StopExperiment (the last experiment detaches the programs, so every run attaches them afresh).",
            "One agent for all runs; nothing pinned.",
        ],
    );
    let agent = Agent::start();
    let cg = TestCgroup::new("bench-activation");
    let probe = bin("fl-probe");
    let mut client = rt.block_on(agent.client());
    // The runs happen on a helper thread so that only it (and the acceptor
    // and probes it creates) moves to a fresh network namespace for each run.
    let runs = std::thread::scope(|s| {
        s.spawn(|| {
            let mut runs = Vec::with_capacity(ACTIVATION_WARMUP + ACTIVATION_RUNS);
            for i in 0..ACTIVATION_WARMUP + ACTIVATION_RUNS {
                let net = PrivateNet::new()?;
                net.enter()?;
                let acceptor = DeepAcceptor::new()?;
                let run = rt
                    .block_on(activation_run(&mut client, &cg, &probe, acceptor.addr))
                    .with_context(|| format!("activation run {i}"))?;
                runs.push(Activation {
                    overflows: listen_overflows()?,
                    ..run
                });
            }
            anyhow::Ok(runs)
        })
        .join()
        .map_err(|_| anyhow!("the activation runs panicked"))?
    })?;
    drop(client);
    drop(agent);

    let (warmup, measured) = runs.split_at(ACTIVATION_WARMUP);
    let ms = |ns: i64| ns as f64 / 1e6;
    let early = measured.iter().filter(|r| r.after_return <= 0).count();
    let mut after_return: Vec<i64> = measured.iter().map(|r| r.after_return.max(0)).collect();
    let mut after_call: Vec<i64> = measured.iter().map(|r| r.after_call).collect();
    let mut rpc: Vec<i64> = measured.iter().map(|r| r.rpc).collect();
    for v in [&mut after_return, &mut after_call, &mut rpc] {
        v.sort_unstable();
    }
    println!(
        "  runs: {} measured; {} warm-up runs not counted (returned → first injected: {})",
        measured.len(),
        warmup.len(),
        warmup
            .iter()
            .map(|r| format!("{:.3} ms", ms(r.after_return.max(0))))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  {:<40} {:>10} {:>10} {:>10} {:>10}",
        "latency (ms)", "p50", "p90", "p99", "max"
    );
    for (label, v) in [
        ("returned → first injected (clamped ≥ 0)", &after_return),
        ("called → first injected", &after_call),
        ("StartExperiment round trip", &rpc),
    ] {
        println!(
            "  {label:<40} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
            ms(percentile(v, 50.0)),
            ms(percentile(v, 90.0)),
            ms(percentile(v, 99.0)),
            ms(*v.last().expect("runs"))
        );
    }
    let overflowed: Vec<&Activation> = measured.iter().filter(|r| r.overflows > 0).collect();
    println!(
        "  runs in which the acceptor's accept queue overflowed (a SYN dropped, retransmitted after 1 s): {}/{}{}",
        overflowed.len(),
        measured.len(),
        if overflowed.is_empty() {
            String::new()
        } else {
            let mut v: Vec<i64> = overflowed.iter().map(|r| r.after_return.max(0)).collect();
            v.sort_unstable();
            format!(
                "; their returned → first injected: p50 {:.3} ms, max {:.3} ms",
                ms(percentile(&v, 50.0)),
                ms(*v.last().expect("overflowed runs"))
            )
        }
    );
    println!(
        "  injected before the response returned: {early}/{} runs (counted as 0 ms in the first row)",
        measured.len()
    );
    let p99 = ms(percentile(&after_return, 99.0));
    let pass = p99 < ACTIVATION_TARGET_MS;
    let target = format!(
        "activation: target: p99 (returned → first injected) < {ACTIVATION_TARGET_MS} ms: {} (p99 {p99:.3} ms)",
        verdict(pass)
    );
    let baseline = format!(
        "activation: baseline \"synchronous arming\" (fault live before StartExperiment returns): {early}/{} runs met it",
        measured.len()
    );
    println!("  {target}");
    println!("  {baseline}");
    Ok(vec![target, baseline])
}

async fn activation_run(
    client: &mut Client,
    cg: &TestCgroup,
    probe: &Path,
    addr: SocketAddr,
) -> anyhow::Result<Activation> {
    let mut cmd = cg.command(probe);
    cmd.arg("first-error")
        .arg(addr.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .context("spawn fl-probe first-error")?;
    tokio::time::sleep(HOT_LOOP).await;
    if let Some(status) = child.try_wait()? {
        let out = child.wait_with_output().await?;
        bail!(
            "fl-probe exited ({status}) before StartExperiment: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let req = experiment(
        connect_error("ECONNREFUSED", 1.0, addr.port(), ""),
        cgroup_target(cg),
        Duration::from_secs(30),
    );
    let t_call = mono_ns();
    let res = client.start_experiment(req).await;
    let t_ret = mono_ns();
    let exp = context(res, "StartExperiment")?
        .into_inner()
        .experiment
        .context("StartExperiment returned no experiment")?;
    let out = tokio::time::timeout(Duration::from_secs(5), child.wait_with_output()).await;
    // Stop before judging the run, so nothing stays armed on an error.
    context(
        client
            .stop_experiment(pb::StopExperimentRequest { id: exp.id.clone() })
            .await,
        "StopExperiment",
    )?;
    let out = out
        .map_err(|_| {
            anyhow!("fl-probe saw no failing connect() within 5 s of StartExperiment returning")
        })?
        .context("wait for fl-probe")?;
    ensure!(
        out.status.success(),
        "fl-probe failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: FirstError = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "fl-probe printed {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    ensure!(
        seen.errno == "ECONNREFUSED",
        "expected the first failed connect() to be the injected ECONNREFUSED, saw {}",
        seen.errno
    );
    let at = i64::try_from(seen.mono_ns)?;
    ensure!(
        at >= t_call,
        "fl-probe's connect() failed {} ns before StartExperiment was called",
        t_call - at
    );
    Ok(Activation {
        rpc: t_ret - t_call,
        after_return: at - t_ret,
        after_call: at - t_call,
        overflows: 0,
    })
}

// ---- overhead benchmarks: alternating rounds ----

#[derive(Clone, Copy, PartialEq, Eq)]
enum Config {
    NoAgent,
    AgentIdle,
    AgentFault,
}

impl Config {
    const ALL: [Self; 3] = [Self::NoAgent, Self::AgentIdle, Self::AgentFault];

    fn index(self) -> usize {
        self as usize
    }
}

/// One measurement, in ns per operation.
#[derive(Clone, Copy)]
struct Sample {
    /// CPU time of the measured thread or process: what the operation costs,
    /// whatever else shares the CPU (other builds and tests on this machine).
    cpu: f64,
    /// Wall-clock time; above the CPU time when something else ran on the CPU.
    wall: f64,
    /// SYNs dropped by a full accept queue: each stalls one connect() for the
    /// 1 s retransmit, which shows in the wall clock but not in the CPU time.
    overflows: u64,
}

impl Sample {
    /// The measured thread waited or was preempted for a noticeable share.
    fn contended(self) -> bool {
        self.wall > self.cpu * CONTENDED_WALL_OVER_CPU
    }
}

/// Per-configuration figures of every round, indexed by `Config::index`.
struct Rounds {
    /// CPU ns per operation.
    samples: [Vec<f64>; 3],
    wall: [Vec<f64>; 3],
    contended: usize,
    overflows: u64,
    /// Measurements of "nothing attached" configurations that found fl_ links anyway.
    dirty: usize,
}

/// Runs `rounds` rounds measuring every configuration once; even rounds go
/// no agent → idle agent → agent with the fault, odd rounds the reverse, so
/// drift and order effects hit every configuration alike. The agent is
/// started fresh each round: "no agent" means no agent process at all.
fn alternate_rounds(
    rt: &Runtime,
    rounds: usize,
    arm: impl Fn() -> pb::StartExperimentRequest,
    mut measure: impl FnMut(Config) -> anyhow::Result<Sample>,
) -> anyhow::Result<Rounds> {
    let mut out = Rounds {
        samples: Default::default(),
        wall: Default::default(),
        contended: 0,
        overflows: 0,
        dirty: 0,
    };
    let mut record = |config: Config, out: &mut Rounds| -> anyhow::Result<()> {
        let links = our_links().len();
        match config {
            Config::AgentFault => ensure!(
                links > 0,
                "the experiment is running but no fl_ program is attached"
            ),
            _ if links > 0 => out.dirty += 1,
            _ => {}
        }
        let v = measure(config)?;
        out.samples[config.index()].push(v.cpu);
        out.wall[config.index()].push(v.wall);
        out.contended += usize::from(v.contended());
        out.overflows += v.overflows;
        Ok(())
    };
    for round in 0..rounds {
        let forward = round % 2 == 0;
        if forward {
            record(Config::NoAgent, &mut out)?;
        }
        let agent = Agent::start();
        let mut client = rt.block_on(agent.client());
        if forward {
            record(Config::AgentIdle, &mut out)?;
            rt.block_on(client.start_experiment(arm()))
                .map_err(|s| anyhow!("StartExperiment: {s}"))?;
            record(Config::AgentFault, &mut out)?;
        } else {
            let exp = rt
                .block_on(client.start_experiment(arm()))
                .map_err(|s| anyhow!("StartExperiment: {s}"))?
                .into_inner()
                .experiment
                .context("StartExperiment returned no experiment")?;
            record(Config::AgentFault, &mut out)?;
            context(
                rt.block_on(client.stop_experiment(pb::StopExperimentRequest { id: exp.id })),
                "StopExperiment",
            )?;
            wait_for(Duration::from_secs(2), || our_links().is_empty());
            record(Config::AgentIdle, &mut out)?;
        }
        drop(client);
        drop(agent);
        wait_for(Duration::from_secs(2), || our_links().is_empty());
        if !forward {
            record(Config::NoAgent, &mut out)?;
        }
    }
    Ok(out)
}

fn print_rounds(labels: [&str; 3], rounds: &Rounds, unit: &str) {
    let base = median(&rounds.samples[0]);
    println!(
        "  {:<46} {:>9} {:>9} {:>9} {:>18}",
        format!("configuration ({unit}, {} rounds)", rounds.samples[0].len()),
        "median",
        "min",
        "max",
        "median vs (a)"
    );
    for c in Config::ALL {
        let v = &rounds.samples[c.index()];
        let s = sorted(v);
        let m = median(v);
        let vs = if c == Config::NoAgent {
            "baseline".to_owned()
        } else {
            format!("{:+.1} ({:+.2} %)", m - base, (m / base - 1.0) * 100.0)
        };
        println!(
            "  {:<46} {m:>9.1} {:>9.1} {:>9.1} {vs:>18}",
            labels[c.index()],
            s[0],
            s[s.len() - 1]
        );
    }
    println!("  per round, in run order:");
    for c in Config::ALL {
        let v = &rounds.samples[c.index()];
        let label = labels[c.index()].split_whitespace().next().unwrap_or("");
        let values: Vec<String> = v.iter().map(|x| format!("{x:.1}")).collect();
        println!("    {label} {}", values.join(" "));
    }
    let wall = rounds.wall.each_ref().map(|v| median(v));
    println!(
        "  wall-clock medians: (a) {:.1}  (b) {:.1}  (c) {:.1}; measurements with wall > {CONTENDED_WALL_OVER_CPU} x \
         CPU time (something else ran on the CPU): {}/{}",
        wall[0],
        wall[1],
        wall[2],
        rounds.contended,
        rounds.wall.iter().map(Vec::len).sum::<usize>()
    );
    if rounds.overflows > 0 {
        println!(
            "  accept-queue overflows: {} (each stalled one connect() 1 s: wall clock skewed, CPU time not)",
            rounds.overflows
        );
    }
    if rounds.dirty > 0 {
        println!(
            "  warning: {} \"nothing attached\" measurements found fl_ programs attached (another agent?)",
            rounds.dirty
        );
    }
}

// ---- connect-overhead ----

fn connect_overhead(rt: &Runtime) -> anyhow::Result<Vec<String>> {
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
    let pct = |r: f64| (r - 1.0) * 100.0;
    let mut ci_c = (0.0, 0.0);
    for (label, config) in [
        ("(b)/(a)", Config::AgentIdle),
        ("(c)/(a)", Config::AgentFault),
    ] {
        let ratios = paired(&rounds, config, |x, a| x / a);
        let (lo, hi) = median_ci(&ratios);
        let of_medians = median(&rounds.samples[config.index()]) / a;
        println!(
            "  {label}: ratio of medians {of_medians:.4} ({:+.2} %); same-round ratios: median {:.4}, 95 % CI of \
             the median [{lo:.4}, {hi:.4}] = [{:+.2} %, {:+.2} %]",
            pct(of_medians),
            median(&ratios),
            pct(lo),
            pct(hi)
        );
        if config == Config::AgentFault {
            ci_c = (lo, hi);
        }
    }
    let pass = c / a < CONNECT_TARGET_RATIO;
    let resolved = !(ci_c.0..=ci_c.1).contains(&CONNECT_TARGET_RATIO);
    let target = format!(
        "connect-overhead: target: < 3 % overhead ((c) vs baseline (a) \"no agent process\"): {} ({:+.2} %{})",
        verdict(pass),
        pct(c / a),
        if resolved {
            String::new()
        } else {
            format!(
                "; not conclusive: the 95 % CI [{:+.2} %, {:+.2} %] includes 3 %",
                pct(ci_c.0),
                pct(ci_c.1)
            )
        }
    );
    println!("  {target}");
    Ok(vec![target])
}

/// ns per connect() of a fresh, non-target probe process with a fresh
/// acceptor, both in a fresh network namespace.
fn connect_cost(pinning: Option<Pinning>) -> anyhow::Result<Sample> {
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

fn connect_cost_here(pinning: Option<Pinning>) -> anyhow::Result<Sample> {
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
    })
}

/// CPU time a single-threaded process has run, in ns (sum_exec_runtime).
fn cpu_ns(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/schedstat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    text.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{path}: {text:?}"))
}

// ---- getpid-overhead ----

fn getpid_overhead(rt: &Runtime) -> anyhow::Result<Vec<String>> {
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
    let ci_b = median_ci(&diff_b);
    let ci_c = median_ci(&diff_c);
    println!(
        "  same-round differences: (b)-(a) median {:+.1} ns, 95 % CI [{:+.1}, {:+.1}]; (c)-(a) median {:+.1} ns, \
         95 % CI [{:+.1}, {:+.1}]",
        median(&diff_b),
        ci_b.0,
        ci_b.1,
        median(&diff_c),
        ci_c.0,
        ci_c.1
    );
    let pass_c = c - a <= GETPID_TARGET_ADDED_NS;
    let within_noise = ci_b.0 <= 0.0 && 0.0 <= ci_b.1;
    let pass_b = b - a < GETPID_IDLE_NOISE_FLOOR_NS || within_noise;
    let target_c = format!(
        "getpid-overhead: target: (c) adds ≤ {GETPID_TARGET_ADDED_NS} ns over baseline (a) \"no agent process\": {} \
         ({:+.1} ns)",
        verdict(pass_c),
        c - a
    );
    let target_b = format!(
        "getpid-overhead: target: (b) adds nothing measurable (< {GETPID_IDLE_NOISE_FLOOR_NS} ns, or the 95 % CI of \
         the same-round difference includes 0) over baseline (a) \"no agent process\": {} ({:+.1} ns; CI {})",
        verdict(pass_b),
        b - a,
        if within_noise {
            "includes 0"
        } else {
            "excludes 0"
        }
    );
    println!("  {target_c}");
    println!("  {target_b}");
    Ok(vec![target_c, target_b])
}

/// ns per getpid() in a thread of this process.
fn getpid_cost(cpu: Option<usize>) -> anyhow::Result<Sample> {
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
        })
    })
    .join()
    .map_err(|_| anyhow!("the getpid thread panicked"))?
}
