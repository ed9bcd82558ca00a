//! The blast radius: what may never be faulted is refused at the API with
//! the field named (nothing attached), and skipped in the kernel even when
//! a fault's selectors would reach it; a target pid leaves the kernel's maps
//! with its process.
#![expect(
    unused_crate_dependencies,
    reason = "each integration test is its own crate; the package's dependencies serve them all"
)]

use std::{path::PathBuf, process::Command, time::Duration};

use faultline_proto::v1 as pb;
use faultline_tests::*;
use tonic::Code;

const D: Duration = Duration::from_secs(30);

async fn refused(
    agent: &Agent,
    c: &mut pb::fault_service_client::FaultServiceClient<tonic::transport::Channel>,
    req: pb::StartExperimentRequest,
    code: Code,
    field: &str,
) -> String {
    let s = c
        .start_experiment(req)
        .await
        .expect_err("the request should have been refused");
    assert_eq!(s.code(), code, "{field}: {}", s.message());
    assert!(
        s.message().starts_with(field),
        "the message names {field}: {}",
        s.message()
    );
    assert!(
        agent.links().is_empty(),
        "a refused request attached something"
    );
    s.message().to_owned()
}

fn comm_target(comm: &str) -> pb::Target {
    pb::Target {
        comm: comm.into(),
        ..Default::default()
    }
}

/// The agent's cgroup, from its /proc entry.
fn cgroup_of(pid: u32) -> PathBuf {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup of pid");
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup2 line");
    cgroup2_root().join(rel.trim_start_matches('/'))
}

/// A thread of this process that sleeps until the guard goes: its id.
fn a_thread() -> (u32, std::sync::mpsc::Sender<()>) {
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        // SAFETY: gettid takes no arguments and touches no memory.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
        tid_tx.send(tid).unwrap();
        let _ = stop_rx.recv();
    });
    (tid_rx.recv().unwrap(), stop_tx)
}

#[tokio::test]
async fn the_hosts_machinery_is_refused_with_the_field_named() {
    require_root().unwrap();
    if in_vm() {
        eprintln!("SKIP in the VM: the API's policy is the same on every kernel");
        return;
    }
    let agent = Agent::start();
    let mut c = agent.client().await;
    let fault = || connect_error("ECONNREFUSED", 1.0, 9, "");
    let root = cgroup2_root().display().to_string();

    // The agent moved into a cgroup of its own.
    let own = cgroup_of(agent.pid());
    assert!(
        own.ends_with("faultline-agent"),
        "the agent runs in its own cgroup: {}",
        own.display()
    );
    let msg = refused(
        &agent,
        &mut c,
        experiment(
            fault(),
            pb::Target {
                cgroup: root.clone(),
                ..Default::default()
            },
            D,
        ),
        Code::PermissionDenied,
        "spec.target.cgroup",
    )
    .await;
    assert!(msg.contains("cgroup2 root"), "{msg}");
    // "." is the root too, relative to the mount.
    refused(
        &agent,
        &mut c,
        experiment(
            fault(),
            pb::Target {
                cgroup: ".".into(),
                ..Default::default()
            },
            D,
        ),
        Code::PermissionDenied,
        "spec.target.cgroup",
    )
    .await;
    for cg in [own.clone(), own.join("..").join("faultline-agent")] {
        let msg = refused(
            &agent,
            &mut c,
            experiment(
                fault(),
                pb::Target {
                    cgroup: cg.display().to_string(),
                    ..Default::default()
                },
                D,
            ),
            Code::PermissionDenied,
            "spec.target.cgroup",
        )
        .await;
        assert!(msg.contains("agent's own cgroup"), "{msg}");
    }
    // With the consent, a syscall fault is still refused there; a dry run is not.
    let host_wide = pb::Target {
        cgroup: root,
        allow_host_wide: true,
        ..Default::default()
    };
    refused(
        &agent,
        &mut c,
        experiment(fault(), host_wide.clone(), D),
        Code::PermissionDenied,
        "spec.target.allow_host_wide",
    )
    .await;
    let mut dry = experiment(fault(), host_wide, D);
    dry.spec.as_mut().unwrap().dry_run = true;
    let exp = start(&mut c, dry).await;
    c.stop_experiment(pb::StopExperimentRequest { id: exp.id })
        .await
        .unwrap();

    // Kernel threads, threads and protected names.
    let msg = refused(
        &agent,
        &mut c,
        experiment(fault(), pid_target(2), D),
        Code::PermissionDenied,
        "spec.target.pids[0]",
    )
    .await;
    assert!(msg.contains("kernel thread"), "{msg}");
    let (tid, _stop) = a_thread();
    let msg = refused(
        &agent,
        &mut c,
        experiment(fault(), pid_target(tid), D),
        Code::InvalidArgument,
        "spec.target.pids[0]",
    )
    .await;
    assert!(msg.contains("is a thread of process"), "{msg}");
    for comm in [
        "sshd",
        "sshd-session",
        "systemd",
        "systemd-journal",
        "systemd-logind",
        "systemd-udevd",
        "dbus-daemon",
        "auditd",
        "agetty",
        "containerd",
        "containerd-shim",
        "dockerd",
        "kubelet",
        "faultline-agent",
    ] {
        refused(
            &agent,
            &mut c,
            experiment(fault(), comm_target(comm), D),
            Code::PermissionDenied,
            "spec.target.comm",
        )
        .await;
    }
    // The controls: a name, a thread's process and a cgroup that are not
    // protected are accepted.
    let cg = TestCgroup::new("protection-control");
    for target in [
        comm_target("ssh"),
        pid_target(std::process::id()),
        cgroup_target(&cg),
    ] {
        let exp = start(&mut c, experiment(fault(), target, D)).await;
        c.stop_experiment(pb::StopExperimentRequest { id: exp.id })
            .await
            .unwrap();
    }
}

/// A protected process already running when the fault starts, one protected
/// by pid, and one that is not: all in the targeted cgroup.
#[tokio::test]
async fn protected_processes_in_a_targeted_cgroup_are_spared_in_the_kernel() {
    require_root().unwrap();
    if in_vm() {
        eprintln!("SKIP in the VM: the same programs run on the host");
        return;
    }
    let cg = TestCgroup::new("protected-kernel");
    let acc = Acceptor::new("127.0.0.1");
    let mut by_name = ProbeServer::spawn_as(Some(&cg), "fl-guarded");
    let mut by_pid = ProbeServer::spawn(Some(&cg));
    let mut exposed = ProbeServer::spawn(Some(&cg));
    let pid = by_pid.pid().to_string();
    let agent = Agent::start_with(&["--protected-comm", "fl-guard*", "--protected-pid", &pid]);
    let mut c = agent.client().await;
    start(
        &mut c,
        experiment(
            connect_error("ECONNREFUSED", 1.0, acc.addr.port(), ""),
            cgroup_target(&cg),
            D,
        ),
    )
    .await;
    let seen = exposed.run("connect", acc.addr, 50);
    assert_eq!(
        seen.errno("ECONNREFUSED"),
        50,
        "the unprotected process in the cgroup is faulted: {seen:?}"
    );
    let seen = by_name.run("connect", acc.addr, 50);
    assert_eq!(
        seen.ok, 50,
        "a process protected by a name pattern is spared: {seen:?}"
    );
    let seen = by_pid.run("connect", acc.addr, 50);
    assert_eq!(
        seen.ok, 50,
        "a process protected by pid is spared: {seen:?}"
    );
}

/// A directory of the test's, removed when it goes (a failed test too).
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("faultline-{what}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `fl-probe loop getppid` under another name (the link lives in `dir`).
fn looping_as(name: &str, dir: &Scratch) -> ChildGuard {
    let link = dir.0.join(name);
    std::os::unix::fs::symlink(bin("fl-probe"), &link).unwrap();
    ChildGuard(
        Command::new(&link)
            .args(["loop", "getppid", "5"])
            .spawn()
            .unwrap(),
    )
}

fn state_of(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(')')
        .next()
        .and_then(|r| r.trim().chars().next())
        .unwrap_or('?')
}

/// The agent is skipped in the kernel even when a fault names it: with no
/// protected names configured, a signal fault on its name stops another
/// process of that name and never the agent. The agent runs under a name of
/// its own (a link), so other agents on the host are not named too.
#[tokio::test]
async fn the_agent_is_spared_in_the_kernel_even_by_name() {
    require_root().unwrap();
    if in_vm() {
        eprintln!("SKIP in the VM: the same programs run on the host");
        return;
    }
    const NAME: &str = "fl-agent-self";
    let dir = Scratch::new("noprot");
    let config = dir.0.join("agent.toml");
    std::fs::write(&config, "protected_comms = []\n").unwrap();
    let link = dir.0.join("bin").join(NAME);
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    let script = format!(
        "ln -s \"$1\" {0} && shift && exec {0} \"$@\"",
        link.display()
    );
    let agent = Agent::start_via(
        dir.0.join("agent"),
        &["sh", "-c", &script, "sh"],
        &["--config", config.to_str().unwrap()],
    );
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{}/comm", agent.pid()))
            .unwrap()
            .trim(),
        NAME
    );
    let mut c = agent.client().await;
    let decoy_dir = Scratch::new("decoy");
    let decoy = looping_as(NAME, &decoy_dir);
    let mut req = experiment(
        syscall_signal("accept4", "STOP", 1.0, 0),
        comm_target(NAME),
        D,
    );
    req.spec
        .as_mut()
        .unwrap()
        .faults
        .push(syscall_signal("getppid", "STOP", 1.0, 0).into());
    let exp = start(&mut c, req).await;
    assert!(
        wait_for(Duration::from_secs(5), || state_of(decoy.0.id()) == 'T'),
        "the positive control: another process of the agent's name is stopped"
    );
    // Every new connection is an accept4 in the agent.
    for _ in 0..5 {
        let mut fresh = agent.client().await;
        let got = tokio::time::timeout(
            Duration::from_secs(5),
            fresh.get_experiment(pb::GetExperimentRequest { id: exp.id.clone() }),
        )
        .await
        .expect("the agent answers on a new connection: it was not stopped")
        .unwrap()
        .into_inner();
        assert_eq!(
            got.faults[0].matched, 0,
            "the agent's accept4 never matched"
        );
    }
    assert_ne!(state_of(agent.pid()), 'T');
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(decoy.0.id() as i32),
        nix::sys::signal::Signal::SIGCONT,
    );
}

/// Makes the next process this test forks get pid `want`, through
/// ns_last_pid; other processes on the host may fork in between, so it tries
/// a few times. The spawned server, if it got the pid.
fn spawn_with_pid(want: u32, cg: &TestCgroup) -> Option<ProbeServer> {
    for _ in 0..50 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (want - 1).to_string()).ok()?;
        let server = ProbeServer::spawn(Some(cg));
        if server.pid() == want {
            return Some(server);
        }
    }
    None
}

#[tokio::test]
async fn a_recycled_target_pid_is_never_faulted() {
    require_root().unwrap();
    if in_vm() {
        eprintln!("SKIP in the VM: the same programs run on the host");
        return;
    }
    let agent = Agent::start();
    let mut c = agent.client().await;
    let cg = TestCgroup::new("recycled-pid");
    let acc = Acceptor::new("127.0.0.1");
    let mut first = ProbeServer::spawn(Some(&cg));
    let pid = first.pid();
    let exp = start(
        &mut c,
        experiment(
            connect_error("ECONNREFUSED", 1.0, acc.addr.port(), ""),
            pid_target(pid),
            D,
        ),
    )
    .await;
    let seen = first.run("connect", acc.addr, 20);
    assert_eq!(
        seen.errno("ECONNREFUSED"),
        20,
        "the target is faulted: {seen:?}"
    );
    drop(first);
    let mut second = spawn_with_pid(pid, &cg).expect("a new process got the old pid");
    let seen = second.run("connect", acc.addr, 20);
    assert_eq!(
        seen.ok, 20,
        "a new process that was given the target's pid {pid} is not faulted: {seen:?}"
    );
    let got = c
        .get_experiment(pb::GetExperimentRequest { id: exp.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got.faults[0].matched, 20,
        "only the first process's calls matched"
    );
}

/// Runs `fl-probe ARGS` under another process name, to completion.
fn probe_as(name: &str, args: &[&str]) -> ProbeResult {
    let dir = Scratch::new("as");
    let link = dir.0.join(name);
    std::os::unix::fs::symlink(bin("fl-probe"), &link).unwrap();
    let out = Command::new(&link).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn kworkers() -> std::collections::BTreeSet<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with("kworker"))
        })
        .collect()
}

/// A fork fault whose selectors reach kthreadd (by name) fails a user
/// process of that name, and never kernel-thread creation: a new worker
/// pool of an unbound workqueue (made when its `nice` changes) starts its
/// first kworker through kthreadd, and the write fails if that cannot be.
#[tokio::test]
async fn kernel_threads_still_start_under_a_fork_fault() {
    require_root().unwrap();
    let agent = Agent::start();
    if !supported_or_skip(&agent, "bpf_lsm:task_alloc").await {
        return;
    }
    let nice = PathBuf::from("/sys/devices/virtual/workqueue/writeback/nice");
    let before = std::fs::read_to_string(&nice).expect("the writeback workqueue's nice");
    let mut c = agent.client().await;
    let exp = start(
        &mut c,
        experiment(
            lsm_error("fork", "EAGAIN", 1.0, "", 0),
            comm_target("kthreadd"),
            D,
        ),
    )
    .await;
    let decoy = probe_as("kthreadd", &["fs", "fork", "-", "20"]);
    assert_eq!(
        decoy.errno("EAGAIN"),
        20,
        "the positive control: a user process named kthreadd cannot fork: {decoy:?}"
    );
    let workers = kworkers();
    let wrote = std::fs::write(&nice, "-7");
    let new_workers: Vec<u32> = kworkers().difference(&workers).copied().collect();
    std::fs::write(&nice, before.trim()).expect("restore the workqueue's nice");
    wrote.expect("a new worker pool started its kworker under the fault");
    assert!(
        !new_workers.is_empty(),
        "a kworker appeared for the new pool"
    );
    let got = c
        .get_experiment(pb::GetExperimentRequest { id: exp.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got.faults[0].matched, 20,
        "only the decoy's forks matched; kthreadd's never did"
    );
}
