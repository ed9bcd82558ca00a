//! Harness for Faultline's privileged end-to-end tests and benchmarks: a real
//! agent process, real cgroups, real target processes. Every guard removes
//! what it created when dropped.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpListener},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use faultline_proto::v1::{self as pb, fault_service_client::FaultServiceClient};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

static SEQ: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Running inside the VM kernel matrix (`cargo xtask test --vm` sets it):
/// an emulated CPU, many times slower than the host.
pub fn in_vm() -> bool {
    std::env::var_os("FAULTLINE_IN_VM").is_some()
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

/// A running `faultline-agent` on a private socket and state directory.
pub struct Agent {
    child: Option<Child>,
    pub dir: PathBuf,
    pub socket: PathBuf,
}

impl Agent {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(unique("faultline-agent"));
        Self::start_in(dir, extra)
    }

    /// Starts an agent whose socket, state and log live in `dir`.
    pub fn start_in(dir: PathBuf, extra: &[&str]) -> Self {
        std::fs::create_dir_all(&dir).expect("agent dir");
        let socket = dir.join("agent.sock");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("agent.log"))
            .expect("agent log");
        let mut cmd = Command::new(bin("faultline-agent"));
        if in_vm() {
            // Under emulation the kernel verifies programs many times slower;
            // each test loads only what it uses.
            cmd.args(["--probe", "lazy"]);
        }
        let child = cmd
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(extra)
            .env("FAULTLINE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn faultline-agent");
        let mut agent = Self {
            child: Some(child),
            dir,
            socket,
        };
        agent.wait_ready();
        agent
    }

    fn wait_ready(&mut self) {
        let t0 = Instant::now();
        let limit = Duration::from_secs(if in_vm() { 120 } else { 30 });
        while t0.elapsed() < limit {
            // Ready: listening and, unless probing lazily (in the VMs), done
            // loading its programs in the background, so a test's first
            // request does not wait for the prober and timings stay honest.
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok()
                && (in_vm() || self.log().contains("all program groups probed"))
            {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "faultline-agent exited early with {status}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "faultline-agent did not listen on {} within {limit:?}; log:\n{}",
            self.socket.display(),
            self.log()
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent running").id()
    }

    /// ids of the bpf_links this agent holds open (its attachments), from
    /// /proc/PID/fdinfo: precise even when other agents run on the host.
    /// The agent's links that keep the TCX hooks on (config
    /// `keep_tcx_hooks`) are not attachments of a fault and are left out:
    /// see `keeper_links`.
    pub fn links(&self) -> Vec<u32> {
        let keepers = keeper_links();
        self.fdinfo_ids("link_id:")
            .into_iter()
            .filter(|l| !keepers.contains(l))
            .collect()
    }

    /// The agent's links that only keep the TCX hooks on.
    pub fn keeper_links(&self) -> Vec<u32> {
        let keepers = keeper_links();
        self.fdinfo_ids("link_id:")
            .into_iter()
            .filter(|l| keepers.contains(l))
            .collect()
    }

    /// ids of the programs this agent holds loaded.
    pub fn programs(&self) -> Vec<u32> {
        self.fdinfo_ids("prog_id:")
    }

    fn fdinfo_ids(&self, key: &str) -> Vec<u32> {
        let Some(child) = self.child.as_ref() else {
            return Vec::new();
        };
        let Ok(dir) = std::fs::read_dir(format!("/proc/{}/fdinfo", child.id())) else {
            return Vec::new();
        };
        let mut ids: Vec<u32> = dir
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            // A link's fdinfo names its program too: count programs only
            // from program fds.
            .filter(|info| key == "link_id:" || !info.contains("link_id:"))
            .filter_map(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse().ok()))
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    pub async fn client(&self) -> FaultServiceClient<Channel> {
        FaultServiceClient::new(
            unix_channel(&self.socket)
                .await
                .expect("connect to the agent socket"),
        )
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig)
            .expect("signal agent");
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM (graceful), wait up to 10 s, then SIGKILL.
    pub fn shutdown(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGCONT,
        );
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        c.wait().ok()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.shutdown();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub async fn unix_channel(path: &Path) -> anyhow::Result<Channel> {
    let path = path.to_path_buf();
    Ok(Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await?)
}

/// The cgroup2 mount, from /proc/self/mountinfo.
pub fn cgroup2_root() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    info.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split_whitespace().next()? == "cgroup2")
                .then(|| PathBuf::from(pre.split_whitespace().nth(4).unwrap()))
        })
        .expect("no cgroup2 mount")
}

/// A cgroup v2 directory for one test; its processes are killed and the
/// directory removed on drop.
pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    pub fn new(name: &str) -> Self {
        let path = cgroup2_root().join(unique(&format!("faultline-test-{name}")));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Self { path }
    }

    pub fn path_str(&self) -> String {
        self.path.display().to_string()
    }

    pub fn procs(&self) -> Vec<u32> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// A command whose process joins this cgroup before it execs.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        let procs = self.path.join("cgroup.procs");
        // SAFETY: only async-signal-safe work (open/write/close) between fork and exec.
        unsafe {
            cmd.pre_exec(move || std::fs::write(&procs, b"0"));
        }
        cmd
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            let procs = self.procs();
            if procs.is_empty() {
                break;
            }
            for p in procs {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// A TCP listener on loopback that accepts and drops connections, so a
/// connect() that is not faulted succeeds.
pub struct Acceptor {
    pub addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Acceptor {
    pub fn new(ip: &str) -> Self {
        let l = TcpListener::bind(format!("{ip}:0")).expect("bind acceptor");
        l.set_nonblocking(true).expect("nonblocking");
        let addr = l.local_addr().expect("addr");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => drop(c),
                    Err(_) => std::thread::sleep(Duration::from_micros(200)),
                }
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What one probe run saw.
#[derive(Debug, serde::Deserialize)]
pub struct ProbeResult {
    pub ok: u64,
    pub errors: std::collections::BTreeMap<String, u64>,
    /// `fl-probe fs`: wall nanoseconds per call, timed inside the probe.
    #[serde(default)]
    pub ns_per_call: f64,
    /// `fl-probe udp-rtt`: every round-trip time, in microseconds.
    #[serde(default)]
    pub rtt_us: Vec<f64>,
}

impl ProbeResult {
    pub fn errno(&self, name: &str) -> u64 {
        self.errors.get(name).copied().unwrap_or(0)
    }
    pub fn total(&self) -> u64 {
        self.ok + self.errors.values().sum::<u64>()
    }
}

/// Runs `fl-probe ARGS...` to completion, optionally inside a cgroup, and
/// reads its JSON answer.
fn run_probe(cgroup: Option<&TestCgroup>, args: &[&str]) -> ProbeResult {
    let exe = bin("fl-probe");
    let mut cmd = match cgroup {
        Some(cg) => cg.command(exe),
        None => Command::new(exe),
    };
    let out = cmd.args(args).output().expect("run fl-probe");
    assert!(
        out.status.success(),
        "fl-probe {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("fl-probe JSON")
}

/// Runs `fl-probe OP ADDR COUNT` to completion, optionally inside a cgroup.
pub fn probe(cgroup: Option<&TestCgroup>, op: &str, addr: SocketAddr, count: u64) -> ProbeResult {
    run_probe(cgroup, &[op, &addr.to_string(), &count.to_string()])
}

/// Runs `fl-probe fs OP PATH COUNT` (file and process calls), optionally
/// inside a cgroup.
pub fn probe_fs(cgroup: Option<&TestCgroup>, op: &str, path: &str, count: u64) -> ProbeResult {
    run_probe(cgroup, &["fs", op, path, &count.to_string()])
}

/// A long-lived `fl-probe serve` target: same process, commands over stdin.
pub struct ProbeServer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl ProbeServer {
    pub fn spawn(cgroup: Option<&TestCgroup>) -> Self {
        let exe = bin("fl-probe");
        let mut cmd = match cgroup {
            Some(cg) => cg.command(exe),
            None => Command::new(exe),
        };
        let mut child = cmd
            .arg("serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn fl-probe serve");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Self {
            child,
            stdin,
            stdout,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn run(&mut self, op: &str, addr: SocketAddr, count: u64) -> ProbeResult {
        writeln!(self.stdin, "{op} {addr} {count}").expect("write to probe");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read from probe");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("probe answered {line:?}: {e}"))
    }
}

impl Drop for ProbeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- request builders ----

pub fn connect_error(errno: &str, probability: f64, port: u16, cidr: &str) -> pb::FaultSpec {
    syscall_error("connect", errno, probability, port, cidr)
}

pub fn syscall_error(
    call: &str,
    errno: &str,
    probability: f64,
    port: u16,
    cidr: &str,
) -> pb::FaultSpec {
    pb::FaultSpec {
        kind: Some(pb::fault_spec::Kind::SyscallError(pb::SyscallError {
            syscall: call.into(),
            errno: errno.into(),
            probability,
            port: u32::from(port),
            cidr: cidr.into(),
            path: String::new(),
        })),
    }
}

/// An LSM `syscall_error` fault (file, process and socket calls beyond
/// connect/bind/sendmsg); `path` empty = every file, `port` 0 = any.
pub fn lsm_error(
    call: &str,
    errno: &str,
    probability: f64,
    path: &str,
    port: u16,
) -> pb::FaultSpec {
    pb::FaultSpec {
        kind: Some(pb::fault_spec::Kind::SyscallError(pb::SyscallError {
            syscall: call.into(),
            errno: errno.into(),
            probability,
            port: u32::from(port),
            cidr: String::new(),
            path: path.into(),
        })),
    }
}

/// Is `mechanism` (a key of `FAULTLINE_EXPECT`, e.g. "lsm", "tcx") expected
/// on this kernel? The test runner sets the list per kernel.
pub fn expected(mechanism: &str) -> bool {
    std::env::var("FAULTLINE_EXPECT")
        .unwrap_or_default()
        .split(',')
        .any(|m| m.trim() == mechanism)
}

/// The agent's capability row whose mechanism is `mechanism` (e.g.
/// "bpf_lsm:file_open"): Some(true) supported, Some(false) not, with the
/// reason printed; panics when the row is missing.
pub async fn capability(agent: &Agent, mechanism: &str) -> (bool, String) {
    let caps = agent
        .client()
        .await
        .get_capabilities(pb::GetCapabilitiesRequest {
            mechanisms: vec![mechanism.to_owned()],
        })
        .await
        .expect("GetCapabilities")
        .into_inner();
    let row = caps
        .capabilities
        .iter()
        .find(|c| c.mechanism == mechanism)
        .unwrap_or_else(|| panic!("no capability row for {mechanism}: {caps:?}"));
    (row.supported, row.reason.clone())
}

/// True when the agent offers `mechanism`; otherwise prints why and returns
/// false (the caller skips), unless the kernel is expected to offer
/// `expect_key` (see `expected`), which fails the test.
pub async fn supported_or_skip(agent: &Agent, mechanism: &str, expect_key: &str) -> bool {
    let (ok, reason) = capability(agent, mechanism).await;
    if ok {
        return true;
    }
    assert!(
        !expected(expect_key),
        "{mechanism} must be supported on this kernel (FAULTLINE_EXPECT has {expect_key}), but the agent says: {reason}"
    );
    eprintln!("SKIP: {mechanism} unavailable on this kernel: {reason}");
    false
}

pub fn syscall_signal(
    syscall: &str,
    signal: &str,
    probability: f64,
    nth_call: u64,
) -> pb::FaultSpec {
    pb::FaultSpec {
        kind: Some(pb::fault_spec::Kind::SyscallSignal(pb::SyscallSignal {
            syscall: syscall.into(),
            signal: signal.into(),
            probability,
            nth_call,
        })),
    }
}

pub fn cgroup_target(cg: &TestCgroup) -> pb::Target {
    pb::Target {
        cgroup: cg.path_str(),
        ..Default::default()
    }
}

pub fn pid_target(pid: u32) -> pb::Target {
    pb::Target {
        pids: vec![pid],
        ..Default::default()
    }
}

pub fn experiment(
    fault: pb::FaultSpec,
    target: pb::Target,
    duration: Duration,
) -> pb::StartExperimentRequest {
    pb::StartExperimentRequest {
        spec: Some(pb::ExperimentSpec {
            name: "test".into(),
            faults: vec![fault],
            target: Some(target),
            duration_ms: duration.as_millis() as u64,
            ..Default::default()
        }),
    }
}

pub async fn start(
    client: &mut FaultServiceClient<Channel>,
    req: pb::StartExperimentRequest,
) -> pb::Experiment {
    client
        .start_experiment(req)
        .await
        .unwrap_or_else(|s| panic!("StartExperiment refused: {:?}: {}", s.code(), s.message()))
        .into_inner()
        .experiment
        .expect("experiment in response")
}

/// Ids of every bpf_link in the kernel.
pub fn live_links() -> std::collections::HashSet<u32> {
    aya::programs::loaded_links()
        .filter_map(Result::ok)
        .map(|l| l.id())
        .collect()
}

/// Ids of every program in the kernel.
pub fn live_programs() -> std::collections::HashSet<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .collect()
}

/// bpf_link ids whose program is one of ours (names start with `fl_`).
pub fn our_links() -> Vec<u32> {
    links_of(|n| n.starts_with("fl_") && n != KEEPER_PROGRAM)
}

/// The agent's program that only keeps the TCX hooks on, in a private
/// network namespace where no packet passes.
pub const KEEPER_PROGRAM: &str = "fl_tcx_keep";

/// Links of the TCX keeper program, of any agent.
pub fn keeper_links() -> Vec<u32> {
    links_of(|n| n == KEEPER_PROGRAM)
}

fn links_of(program: impl Fn(&str) -> bool) -> Vec<u32> {
    let ids: std::collections::HashSet<u32> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(&program))
        .map(|p| p.id())
        .collect();
    aya::programs::loaded_links()
        .filter_map(Result::ok)
        .filter(|l| ids.contains(&l.program_id()))
        .map(|l| l.id())
        .collect()
}

/// Programs of ours still loaded in the kernel.
pub fn our_programs() -> Vec<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("fl_")))
        .map(|p| p.id())
        .collect()
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

/// Two-sided interval for a binomial count at `z` standard deviations.
pub fn binomial_bounds(n: u64, p: f64, z: f64) -> (f64, f64) {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (mean - z * sd, mean + z * sd)
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

/// A network namespace with a veth pair to the root namespace. Addresses
/// are private to the test: `host_ip` on the root side, `peer_ips` inside.
/// Dropping it deletes the namespace, which deletes the veth pair.
pub struct TestNetns {
    pub name: String,
    pub host_if: String,
    pub host_ip: std::net::Ipv4Addr,
    pub peer_ips: Vec<std::net::Ipv4Addr>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestNetns {
    #[expect(
        clippy::new_without_default,
        reason = "creating a namespace is not a default value"
    )]
    pub fn new() -> Self {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}{}", std::process::id() % 10000, n);
        let name = format!("fl-{tag}");
        let host_if = format!("flh{tag}");
        let peer_if = format!("flp{tag}");
        // 10.213.<n>.0/24: a private range used only inside this test's pair.
        let octet = (std::process::id() as u8).wrapping_add(n as u8);
        let host_ip = std::net::Ipv4Addr::new(10, 213, octet, 1);
        let peer_ips = vec![
            std::net::Ipv4Addr::new(10, 213, octet, 2),
            std::net::Ipv4Addr::new(10, 213, octet, 3),
        ];
        ip(&["netns", "add", &name]);
        let ns = Self {
            name: name.clone(),
            host_if: host_if.clone(),
            host_ip,
            peer_ips: peer_ips.clone(),
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if, "netns", &name,
        ]);
        ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        for a in &peer_ips {
            ip(&[
                "-n",
                &name,
                "addr",
                "add",
                &format!("{a}/24"),
                "dev",
                &peer_if,
            ]);
        }
        ip(&["-n", &name, "link", "set", &peer_if, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        ns
    }

    /// A command run inside the namespace (network only: `nsenter --net`
    /// keeps /sys and the cgroup mounts visible, unlike `ip netns exec`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.name))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Starts `fl-probe accept ADDR` inside the namespace and waits until it listens.
    pub fn spawn_acceptor(&self, addr: SocketAddr) -> Listener {
        self.probe_server(&["accept", &addr.to_string()])
    }

    /// Starts an `fl-probe` server (`args`) inside the namespace and waits
    /// until it listens.
    pub fn probe_server(&self, args: &[&str]) -> Listener {
        let mut cmd = self.command(bin("fl-probe"));
        cmd.args(args);
        Listener::spawn(cmd)
    }
}

/// An `fl-probe` server that has said "listening"; killed when dropped.
pub struct Listener {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Listener {
    /// Spawns `cmd` (an `fl-probe` server; its stdout is piped here) and
    /// waits for its "listening" line.
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn an fl-probe server");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut server = Self { child, out };
        let line = server.next_line();
        assert_eq!(line.trim(), "listening", "fl-probe server ready");
        server
    }

    /// The server's next line of output.
    pub fn next_line(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).expect("read fl-probe output");
        line
    }

    /// The server's report: its next line, as JSON; then reaps it.
    pub fn result<T: serde::de::DeserializeOwned>(mut self) -> T {
        let line = self.next_line();
        let _ = self.child.wait();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("fl-probe report {line:?}: {e}"))
    }

    /// Waits for the server to exit; its stderr (if the command piped it).
    pub fn stderr(mut self) -> String {
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        let _ = self.child.wait();
        err
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(Stdio::null())
            .status();
    }
}

/// Kills and reaps a child process on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether a TCP connect to `addr` completes within `timeout`.
pub fn tcp_reachable(addr: SocketAddr, timeout: Duration) -> bool {
    std::net::TcpStream::connect_timeout(&addr, timeout).is_ok()
}

/// Receives numbered datagrams on a socket until `quiet` passes with none;
/// returns the set of sequence numbers seen.
pub fn receive_numbered(
    sock: &std::net::UdpSocket,
    quiet: Duration,
) -> std::collections::BTreeSet<u32> {
    sock.set_read_timeout(Some(quiet)).expect("timeout");
    let mut seen = std::collections::BTreeSet::new();
    let mut buf = [0u8; 64];
    while let Ok(n) = sock.recv(&mut buf) {
        if n >= 4 {
            seen.insert(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
        }
    }
    seen
}

/// A UDP receiver on loopback with a receive buffer large enough that the
/// kernel never drops for lack of room (SO_RCVBUFFORCE, root only).
pub fn udp_receiver(ip: &str) -> std::net::UdpSocket {
    let sock = std::net::UdpSocket::bind(format!("{ip}:0")).expect("bind receiver");
    force_receive_buffer(&sock);
    sock
}

/// Gives a socket a 64 MiB receive buffer (SO_RCVBUFFORCE, root only), so
/// the kernel never drops datagrams for lack of room during a test.
pub fn force_receive_buffer(sock: &std::net::UdpSocket) {
    let size: libc::c_int = 64 << 20;
    // SAFETY: valid fd, option value pointer and length.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(sock),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
}

pub fn packet_loss(
    probability: f64,
    burst_length: f64,
    direction: pb::Direction,
    m: pb::PacketMatch,
) -> pb::FaultSpec {
    pb::FaultSpec {
        kind: Some(pb::fault_spec::Kind::PacketLoss(pb::PacketLoss {
            probability,
            burst_length,
            direction: direction.into(),
            r#match: Some(m),
        })),
    }
}

pub fn blackhole(direction: pb::Direction, m: pb::PacketMatch) -> pb::FaultSpec {
    pb::FaultSpec {
        kind: Some(pb::fault_spec::Kind::Blackhole(pb::Blackhole {
            direction: direction.into(),
            r#match: Some(m),
        })),
    }
}

pub fn interface_target(name: &str) -> pb::Target {
    pb::Target {
        interface: name.into(),
        ..Default::default()
    }
}
