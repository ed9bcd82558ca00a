//! Deadlines, agent death, dry-run and concurrency: the safety properties.
#![expect(
    unused_crate_dependencies,
    reason = "each integration test is its own crate; the package's dependencies serve them all"
)]

use std::time::{Duration, Instant};

use faultline_proto::v1 as pb;
use faultline_tests::*;

/// Lifetime of the experiments whose deadline is tested: long enough for
/// the checks before it on an emulated CPU.
fn deadline_test_life() -> Duration {
    Duration::from_millis(if in_vm() { 4000 } else { 1500 })
}

#[tokio::test]
async fn injection_stops_at_the_deadline() {
    require_root().unwrap();
    if in_vm() {
        eprintln!(
            "skipped in the VMs: the in-kernel deadline is proved there by deadline_holds_in_the_kernel_while_the_agent_is_frozen; this one runs on the host"
        );
        return;
    }
    let agent = Agent::start();
    let mut client = agent.client().await;
    let cg = TestCgroup::new("deadline");
    let acc = Acceptor::new("127.0.0.1");
    let mut target = ProbeServer::spawn(Some(&cg));

    // The deadline counts from when the agent armed the fault, which is
    // before StartExperiment returns: measured from the return, the fault
    // ends within `life`. (Under emulation, loading the programs on first
    // use makes the call itself take seconds.)
    let life = deadline_test_life();
    let exp = start(
        &mut client,
        experiment(
            connect_error("ECONNREFUSED", 1.0, acc.addr.port(), ""),
            cgroup_target(&cg),
            life,
        ),
    )
    .await;
    let t0 = Instant::now();
    let during = target.run("connect", acc.addr, 50);
    assert!(
        t0.elapsed() < life - life / 8,
        "the check ran too late to mean anything"
    );
    assert_eq!(
        during.errno("ECONNREFUSED"),
        50,
        "before the deadline every connect fails: {during:?}"
    );

    std::thread::sleep(life.saturating_sub(t0.elapsed()) + Duration::from_millis(150));
    let after = target.run("connect", acc.addr, 50);
    assert_eq!(
        after.ok, 50,
        "after the deadline every connect succeeds: {after:?}"
    );

    assert!(
        wait_for(Duration::from_secs(3), || agent.links().is_empty()),
        "the agent detaches after the deadline"
    );
    let view = client
        .get_experiment(pb::GetExperimentRequest { id: exp.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(view.state(), pb::ExperimentState::Expired, "{view:?}");
    assert_eq!(
        view.injected, 50,
        "counters survive the end of the experiment: {view:?}"
    );
}

#[tokio::test]
async fn deadline_holds_in_the_kernel_while_the_agent_is_frozen() {
    require_root().unwrap();
    let agent = Agent::start();
    let mut client = agent.client().await;
    let cg = TestCgroup::new("frozen");
    let acc = Acceptor::new("127.0.0.1");
    let mut target = ProbeServer::spawn(Some(&cg));

    let life = deadline_test_life();
    start(
        &mut client,
        experiment(
            connect_error("ECONNREFUSED", 1.0, acc.addr.port(), ""),
            cgroup_target(&cg),
            life,
        ),
    )
    .await;
    let t0 = Instant::now();
    agent.signal(nix::sys::signal::Signal::SIGSTOP);
    let during = target.run("connect", acc.addr, 50);
    assert_eq!(
        during.errno("ECONNREFUSED"),
        50,
        "the fault is active while the agent is frozen: {during:?}"
    );
    std::thread::sleep(life.saturating_sub(t0.elapsed()) + Duration::from_millis(150));
    assert!(
        !agent.links().is_empty(),
        "the frozen agent cannot have detached; the kernel deadline is what is tested"
    );
    let after = target.run("connect", acc.addr, 50);
    agent.signal(nix::sys::signal::Signal::SIGCONT);
    assert_eq!(
        after.ok, 50,
        "past the deadline the kernel stops injecting even with the agent frozen: {after:?}"
    );
}

#[tokio::test]
async fn faults_vanish_when_the_agent_is_killed_and_a_restart_is_clean() {
    require_root().unwrap();
    let mut agent = Agent::start();
    let mut client = agent.client().await;
    let cg = TestCgroup::new("sigkill");
    let acc = Acceptor::new("127.0.0.1");
    let mut target = ProbeServer::spawn(Some(&cg));
    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();

    start(
        &mut client,
        experiment(
            connect_error("ECONNREFUSED", 1.0, acc.addr.port(), ""),
            cgroup_target(&cg),
            Duration::from_secs(300),
        ),
    )
    .await;
    start(
        &mut client,
        experiment(
            syscall_signal("getppid", "KILL", 1.0, 0),
            pid_target(sleeper.id()),
            Duration::from_secs(300),
        ),
    )
    .await;
    assert_eq!(
        target.run("connect", acc.addr, 20).errno("ECONNREFUSED"),
        20
    );
    let links = agent.links();
    let programs = agent.programs();
    assert_eq!(
        links.len(),
        8,
        "six sock_addr links and two raw tracepoint links (sys_enter, and sched_process_exit for the pid target)"
    );
    assert!(
        programs.len() >= 7,
        "the agent holds its programs: {programs:?}"
    );

    agent.kill();
    let after = target.run("connect", acc.addr, 50);
    assert_eq!(
        after.ok, 50,
        "right after SIGKILL of the agent every connect succeeds: {after:?}"
    );
    // Links and programs are released asynchronously after the last fd closes.
    assert!(
        wait_for(Duration::from_secs(2), || links
            .iter()
            .all(|l| !live_links().contains(l))),
        "links of the killed agent are still in the kernel: {links:?}"
    );
    assert!(
        wait_for(Duration::from_secs(2), || programs
            .iter()
            .all(|p| !live_programs().contains(p))),
        "programs of the killed agent are still in the kernel: {programs:?}"
    );

    // A new agent on the same state directory starts clean.
    drop(client);
    let restarted = Agent::start_in(agent.dir.clone(), &[]);
    let mut client = restarted.client().await;
    let list = client
        .list_experiments(pb::ListExperimentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        list.experiments.is_empty(),
        "a restarted agent has no experiments: {list:?}"
    );
    assert!(
        restarted.links().is_empty(),
        "a restarted agent attaches nothing until asked"
    );
    assert!(
        restarted.log().contains("did not shut down cleanly"),
        "the restart notices the unclean stop:\n{}",
        restarted.log()
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

#[tokio::test]
async fn dry_run_counts_but_injects_nothing() {
    require_root().unwrap();
    if in_vm() {
        eprintln!(
            "skipped in the VMs: dry run is a slot flag the same programs read on every kernel; it runs on the host"
        );
        return;
    }
    let agent = Agent::start();
    let mut client = agent.client().await;
    let cg = TestCgroup::new("dry");
    let acc = Acceptor::new("127.0.0.1");

    let rate = RateCheck::new(0.5, 0.05);
    let mut req = experiment(
        connect_error("ECONNREFUSED", rate.p, acc.addr.port(), ""),
        cgroup_target(&cg),
        Duration::from_secs(60),
    );
    req.spec.as_mut().unwrap().dry_run = true;
    let exp = start(&mut client, req).await;
    let seen = probe(Some(&cg), "connect", acc.addr, rate.n);
    assert_eq!(seen.ok, rate.n, "dry-run must inject nothing: {seen:?}");
    let view = client
        .get_experiment(pb::GetExperimentRequest { id: exp.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(view.matched, rate.n, "{view:?}");
    rate.assert(view.injected, "would-be injections");
    assert!(view.spec.unwrap().dry_run);
}

#[tokio::test]
async fn fifty_concurrent_experiments_all_end_and_leave_nothing() {
    require_root().unwrap();
    if in_vm() {
        eprintln!(
            "skipped in the VMs: the engine's concurrency, nothing kernel-specific; it runs on the host"
        );
        return;
    }
    let agent = Agent::start();
    let client = agent.client().await;
    let cg = TestCgroup::new("fifty");
    // One listener per faulted port, so a connect there succeeds unless a
    // fault is still injecting. Nothing accepts: the kernel completes the
    // handshake into the backlog (128), more than the probes below make.
    let listeners: Vec<std::net::TcpListener> = (0..40)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a faulted port"))
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect();
    let mut sleeper = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let sleeper_pid = sleeper.id();

    let mut tasks = Vec::new();
    let mut faulted = ports.iter().copied();
    for i in 0..50u16 {
        let mut c = client.clone();
        let target = cgroup_target(&cg);
        let fault = if i % 5 == 0 {
            syscall_signal("getppid", "KILL", 1.0, 0)
        } else {
            connect_error("ECONNREFUSED", 1.0, faulted.next().expect("a port"), "")
        };
        tasks.push(tokio::spawn(async move {
            let t = if i % 5 == 0 {
                pid_target(sleeper_pid)
            } else {
                target
            };
            let exp = start(&mut c, experiment(fault, t, Duration::from_secs(120))).await;
            tokio::time::sleep(Duration::from_millis(u64::from(i % 7) * 10)).await;
            c.stop_experiment(pb::StopExperimentRequest { id: exp.id })
                .await
                .unwrap()
                .into_inner()
        }));
    }
    let mut ends = Vec::new();
    for t in tasks {
        ends.push(t.await.unwrap());
    }
    assert!(
        ends.iter()
            .all(|e| e.state() == pb::ExperimentState::Stopped),
        "every experiment ended stopped"
    );
    let mut c = client.clone();
    let running = running_experiments(&mut c).await;
    assert!(running.is_empty(), "nothing still running: {running:?}");
    assert!(
        agent.links().is_empty(),
        "no link left behind: {:?}",
        agent.links()
    );
    let mut target = ProbeServer::spawn(Some(&cg));
    for port in &ports {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], *port));
        let seen = target.run("connect", addr, 20);
        assert_eq!(
            seen.ok, 20,
            "nothing still injecting on port {port}: {seen:?}"
        );
    }
    drop(target);
    drop(listeners);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    drop(c);
    drop(client);
    let programs = agent.programs();
    assert!(
        !programs.is_empty(),
        "the agent holds its programs while it runs"
    );
    drop(agent);
    assert!(
        wait_for(Duration::from_secs(3), || programs
            .iter()
            .all(|p| !live_programs().contains(p))),
        "programs of the stopped agent are still in the kernel: {programs:?}"
    );
}

/// Runs `faultline-agent ARGS` that is expected to refuse to start: its
/// exit status (None if it still ran after 10 s, then killed) and stderr.
fn refused_start(
    args: &[&str],
    env: &[(&str, &str)],
) -> (Option<std::process::ExitStatus>, String) {
    let dir = tempdir("refused");
    let err_path = dir.join("stderr");
    let err = std::fs::File::create(&err_path).unwrap();
    let mut child = ChildGuard(
        std::process::Command::new(bin("faultline-agent"))
            .args(args)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn faultline-agent"),
    );
    let mut status = None;
    wait_for(Duration::from_secs(10), || {
        status = child.0.try_wait().ok().flatten();
        status.is_some()
    });
    drop(child);
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    (status, stderr)
}

/// A fresh directory under the temp dir, for one test.
/// A directory of the test's own, removed when dropped (a failing test too).
struct TempDir(std::path::PathBuf);

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir(what: &str) -> TempDir {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("faultline-{what}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

#[tokio::test]
async fn a_bad_configuration_exits_with_status_64_naming_the_key() {
    require_root().unwrap();
    if in_vm() {
        eprintln!("SKIP in the VM: configuration parsing is the same on every kernel");
        return;
    }
    let dir = tempdir("badconfig");
    let socket = dir.join("agent.sock");
    let state = dir.join("state");
    let base = [
        "--socket",
        socket.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ];
    let unknown_key = dir.join("unknown.toml");
    std::fs::write(&unknown_key, "max_duration = \"1h\"\nno_such_key = 1\n").unwrap();
    let bad_value = dir.join("bad-value.toml");
    std::fs::write(&bad_value, "probe = \"sometimes\"\n").unwrap();
    // (what is bad, flags, environment, the key the message names)
    type Case<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: [Case; 6] = [
        // A flag the parser itself refuses is a bad configuration too.
        (
            "unparsable flag value",
            vec!["--keep-tcx-hooks", "maybe"],
            vec![],
            "--keep-tcx-hooks",
        ),
        // Plain TCP is loopback-only until TLS is configured (README).
        (
            "non-loopback --listen",
            vec!["--listen", "0.0.0.0:50999"],
            vec![],
            "`listen`: 0.0.0.0:50999 is not a loopback address",
        ),
        (
            "flag",
            vec!["--max-duration", "soon"],
            vec![],
            "max_duration",
        ),
        (
            "environment variable",
            vec![],
            vec![("FAULTLINE_MAX_DURATION", "8d")],
            "max_duration",
        ),
        (
            "unknown file key",
            vec!["--config", unknown_key.to_str().unwrap()],
            vec![],
            "no_such_key",
        ),
        (
            "bad file value",
            vec!["--config", bad_value.to_str().unwrap()],
            vec![],
            "probe",
        ),
    ];
    for (what, args, env, key) in cases {
        let mut all = base.to_vec();
        all.extend(args);
        let (status, stderr) = refused_start(&all, &env);
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(64),
            "a bad {what} must exit with status 64 (EX_USAGE), got {status:?}: {stderr}"
        );
        assert!(
            stderr.contains(key) && stderr.contains("bad configuration"),
            "a bad {what} is reported naming `{key}`: {stderr}"
        );
    }
    assert!(
        !state.exists() && !socket.exists(),
        "a refused configuration touches no state"
    );
}

#[tokio::test]
async fn a_second_agent_on_the_same_state_directory_refuses_to_start() {
    require_root().unwrap();
    if in_vm() {
        eprintln!("SKIP in the VM: the instance lock (flock) is the same on every kernel");
        return;
    }
    let agent = Agent::start();
    let state = agent.dir.join("state");
    // The same socket too: the second agent must not take the live one away.
    let (status, stderr) = refused_start(
        &[
            "--probe",
            "lazy",
            "--socket",
            agent.socket.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
        &[],
    );
    let status = status.expect("the second agent must exit at once, not run");
    assert!(
        !status.success(),
        "the second agent exited {status}: {stderr}"
    );
    let lock = state.join("agent.lock");
    assert!(
        stderr.contains("another faultline-agent is running")
            && stderr.contains(lock.to_str().unwrap()),
        "the refusal names the lock {}: {stderr}",
        lock.display()
    );
    // The first agent is untouched: its socket, pid file and service.
    assert!(agent.socket.exists(), "the live socket was removed");
    assert_eq!(
        std::fs::read_to_string(state.join("agent.pid"))
            .unwrap()
            .trim(),
        agent.pid().to_string(),
        "the pid file still names the running agent"
    );
    let list = agent
        .client()
        .await
        .list_experiments(pb::ListExperimentsRequest::default())
        .await;
    assert!(list.is_ok(), "the first agent still answers: {list:?}");
}

#[tokio::test]
async fn stale_pins_are_removed_at_start_up() {
    require_root().unwrap();
    if in_vm() {
        eprintln!(
            "SKIP in the VM: removing stale pins is plain file work, the same on every kernel"
        );
        return;
    }
    for tool in ["unshare", "bpftool", "mount"] {
        if !std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            eprintln!("SKIP: {tool} is not installed (cargo xtask setup installs it)");
            return;
        }
    }
    // The agent looks for pins in /sys/fs/bpf/faultline. It runs in a mount
    // namespace of its own with a fresh bpffs there, holding a stale map pin
    // and a directory with another: the host's /sys/fs/bpf is not touched.
    let setup = "set -e; mount -t bpf bpf /sys/fs/bpf; mkdir -p /sys/fs/bpf/faultline/old; \
                 bpftool map create /sys/fs/bpf/faultline/fl_stale type array key 4 value 4 entries 1 name fl_stale; \
                 bpftool map create /sys/fs/bpf/faultline/old/fl_stale2 type array key 4 value 4 entries 1 name fl_stale2; \
                 exec \"$@\"";
    let dir = std::env::temp_dir().join(format!("faultline-pins-{}", std::process::id()));
    let agent = Agent::start_via(
        dir,
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            setup,
            "sh",
        ],
        &[],
    );
    let root = std::path::PathBuf::from(format!("/proc/{}/root/sys/fs/bpf", agent.pid()));
    let log = agent.log();
    for pin in ["faultline/fl_stale", "faultline/old"] {
        assert!(
            log.contains(&format!("/sys/fs/bpf/{pin}"))
                && log.contains("removed a stale bpffs pin"),
            "the agent reports removing /sys/fs/bpf/{pin}:\n{log}"
        );
    }
    assert!(
        root.is_dir(),
        "the agent's bpffs is still mounted: {}",
        root.display()
    );
    assert!(
        !root.join("faultline").exists(),
        "the stale pins are gone: {:?}",
        std::fs::read_dir(root.join("faultline"))
            .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
    );
}
