//! `syscall_error` on file, process and socket calls through BPF LSM, end to
//! end: a real agent, a real cgroup and target process, and the errno the
//! target saw. These need a kernel that loads BPF LSM programs (the Debian
//! kernels of the VM matrix); elsewhere they skip with the agent's reason,
//! and the last test proves the refusal is `FailedPrecondition`.
#![expect(
    unused_crate_dependencies,
    reason = "each integration test is its own crate; the package's dependencies serve them all"
)]

use std::time::Duration;

use faultline_proto::v1 as pb;
use faultline_tests::*;

/// A scratch directory with a file in it, removed on drop.
struct Scratch {
    dir: String,
}

impl Scratch {
    fn new(name: &str) -> Self {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = format!(
            "/tmp/fl-lsm-{name}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        std::fs::create_dir_all(format!("{dir}/inner")).unwrap();
        std::fs::write(format!("{dir}/inner/data"), b"payload").unwrap();
        Self { dir }
    }

    fn path(&self, rel: &str) -> String {
        format!("{}/{rel}", self.dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn counters(agent: &Agent, id: &str) -> pb::Experiment {
    agent
        .client()
        .await
        .get_experiment(pb::GetExperimentRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
}

async fn stop(agent: &Agent, id: &str) {
    agent
        .client()
        .await
        .stop_experiment(pb::StopExperimentRequest { id: id.into() })
        .await
        .unwrap();
}

#[tokio::test]
async fn open_fails_under_the_path_at_the_configured_probability() {
    require_root().unwrap();
    let agent = Agent::start();
    if !supported_or_skip(&agent, "bpf_lsm:file_open").await {
        return;
    }
    let cg = TestCgroup::new("lsm-open");
    let faulted = Scratch::new("open");
    let elsewhere = Scratch::new("open-other");
    let file = faulted.path("inner/data");
    let rate = RateCheck::new(0.5, 0.05);
    let exp = start(
        &mut agent.client().await,
        experiment(
            lsm_error("openat", "EIO", rate.p, &faulted.dir, 0),
            cgroup_target(&cg),
            Duration::from_secs(60),
        ),
    )
    .await;

    let calls = rate.n;
    let inside = probe_fs(Some(&cg), "open", &file, calls);
    let eio = inside.errno("EIO");
    rate.assert(eio, &format!("opens failing with EIO ({inside:?})"));
    assert_eq!(inside.ok + eio, calls, "only EIO expected: {inside:?}");

    let other_file = probe_fs(Some(&cg), "open", &elsewhere.path("inner/data"), 300);
    assert_eq!(
        other_file.ok, 300,
        "files elsewhere are unaffected: {other_file:?}"
    );
    let other_process = probe_fs(None, "open", &file, 300);
    assert_eq!(
        other_process.ok, 300,
        "processes outside the cgroup are unaffected: {other_process:?}"
    );

    let c = counters(&agent, &exp.id).await;
    assert_eq!(c.injected, eio, "injected counter vs errors seen: {c:?}");
    assert_eq!(
        c.matched, calls,
        "matched counts the target's opens under the path: {c:?}"
    );

    stop(&agent, &exp.id).await;
    let after = probe_fs(Some(&cg), "open", &file, 200);
    assert_eq!(after.ok, 200, "after stop every open succeeds: {after:?}");
}

#[tokio::test]
async fn read_and_write_fail_while_open_succeeds() {
    require_root().unwrap();
    let agent = Agent::start();
    if !supported_or_skip(&agent, "bpf_lsm:file_permission").await {
        return;
    }
    let cg = TestCgroup::new("lsm-rw");
    let faulted = Scratch::new("rw");
    let elsewhere = Scratch::new("rw-other");
    let file = faulted.path("inner/data");
    let exp = start(
        &mut agent.client().await,
        pb::StartExperimentRequest {
            spec: Some(pb::ExperimentSpec {
                impact: 0,
                name: "rw".into(),
                faults: vec![
                    lsm_error("read", "EIO", 1.0, &faulted.dir, 0).into(),
                    lsm_error("write", "ENOSPC", 1.0, &faulted.dir, 0).into(),
                ],
                target: Some(cgroup_target(&cg)),
                duration_ms: 60_000,
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;

    // fl-probe opens the file first (it panics if that fails), then reads.
    let read = probe_fs(Some(&cg), "read", &file, 100);
    assert_eq!(
        read.errno("EIO"),
        100,
        "every read fails with EIO: {read:?}"
    );
    let write = probe_fs(Some(&cg), "write", &file, 100);
    assert_eq!(
        write.errno("ENOSPC"),
        100,
        "every write fails with ENOSPC: {write:?}"
    );

    let other = probe_fs(Some(&cg), "read", &elsewhere.path("inner/data"), 100);
    assert_eq!(other.ok, 100, "files elsewhere read fine: {other:?}");
    let outside = probe_fs(None, "write", &file, 100);
    assert_eq!(outside.ok, 100, "other processes write fine: {outside:?}");
    stop(&agent, &exp.id).await;
}

#[tokio::test]
async fn fork_unlink_and_exec_fail_with_their_errnos() {
    require_root().unwrap();
    let agent = Agent::start();
    for m in [
        "bpf_lsm:task_alloc",
        "bpf_lsm:inode_unlink",
        "bpf_lsm:bprm_check_security",
        "bpf_lsm:inode_mkdir",
    ] {
        if !supported_or_skip(&agent, m).await {
            return;
        }
    }
    let cg = TestCgroup::new("lsm-proc");
    let scratch = Scratch::new("proc");
    let exp = start(
        &mut agent.client().await,
        pb::StartExperimentRequest {
            spec: Some(pb::ExperimentSpec {
                impact: 0,
                name: "proc".into(),
                faults: vec![
                    lsm_error("fork", "EAGAIN", 1.0, "", 0).into(),
                    lsm_error("unlink", "EBUSY", 1.0, &scratch.dir, 0).into(),
                    lsm_error("mkdir", "EROFS", 1.0, &scratch.dir, 0).into(),
                ],
                target: Some(cgroup_target(&cg)),
                duration_ms: 60_000,
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    let fork = probe_fs(Some(&cg), "fork", "-", 50);
    assert_eq!(fork.errno("EAGAIN"), 50, "fork fails with EAGAIN: {fork:?}");
    let unlink = probe_fs(Some(&cg), "unlink", &scratch.path("inner/victim"), 50);
    assert_eq!(
        unlink.errno("EBUSY"),
        50,
        "unlink fails with EBUSY: {unlink:?}"
    );
    let mkdir = probe_fs(Some(&cg), "mkdir", &scratch.path("inner/newdir"), 20);
    assert_eq!(
        mkdir.errno("EROFS"),
        20,
        "mkdir fails with EROFS: {mkdir:?}"
    );
    // Elsewhere, and from outside the cgroup, the same calls work.
    let other_dir = probe_fs(Some(&cg), "unlink", "/tmp/fl-lsm-elsewhere", 20);
    assert_eq!(other_dir.ok, 20, "{other_dir:?}");
    let outside_fork = probe_fs(None, "fork", "-", 20);
    assert_eq!(outside_fork.ok, 20, "{outside_fork:?}");
    let outside_unlink = probe_fs(None, "unlink", &scratch.path("inner/victim"), 20);
    assert_eq!(outside_unlink.ok, 20, "{outside_unlink:?}");
    let c = counters(&agent, &exp.id).await;
    assert_eq!(c.injected, 120, "50 forks + 50 unlinks + 20 mkdirs: {c:?}");
    stop(&agent, &exp.id).await;
    let after = probe_fs(Some(&cg), "fork", "-", 20);
    assert_eq!(after.ok, 20, "after stop fork works: {after:?}");

    // execve of a program under the path is refused; fl-probe itself (the
    // target, outside the path) still starts.
    let prog = scratch.path("inner/prog");
    std::fs::copy(bin("fl-probe"), &prog).unwrap();
    let exp = start(
        &mut agent.client().await,
        experiment(
            lsm_error("execve", "EACCES", 1.0, &scratch.path("inner"), 0),
            cgroup_target(&cg),
            Duration::from_secs(60),
        ),
    )
    .await;
    let exec = probe_fs(Some(&cg), "exec", &prog, 20);
    assert_eq!(
        exec.errno("EACCES"),
        20,
        "execve fails with EACCES: {exec:?}"
    );
    let outside_exec = probe_fs(None, "exec", &prog, 5);
    assert_eq!(outside_exec.ok, 5, "{outside_exec:?}");
    stop(&agent, &exp.id).await;
}

#[tokio::test]
async fn tcp_accept_fails_on_the_configured_port_only() {
    require_root().unwrap();
    let agent = Agent::start();
    if !supported_or_skip(&agent, "bpf_lsm:socket_accept").await {
        return;
    }
    let cg = TestCgroup::new("lsm-accept");
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (port, other) = (free_port(), free_port());
    let exp = start(
        &mut agent.client().await,
        experiment(
            lsm_error("accept", "ECONNABORTED", 1.0, "", port),
            cgroup_target(&cg),
            Duration::from_secs(60),
        ),
    )
    .await;
    let hit = probe_fs(Some(&cg), "accept", &format!("127.0.0.1:{port}"), 30);
    assert_eq!(hit.errno("ECONNABORTED"), 30, "{hit:?}");
    let miss = probe_fs(Some(&cg), "accept", &format!("127.0.0.1:{other}"), 30);
    assert_eq!(miss.ok, 30, "another port accepts: {miss:?}");
    stop(&agent, &exp.id).await;
}

#[tokio::test]
async fn lsm_faults_obey_dry_run_deadline_and_agent_death() {
    require_root().unwrap();
    let mut agent = Agent::start();
    if !supported_or_skip(&agent, "bpf_lsm:file_open").await {
        return;
    }
    let cg = TestCgroup::new("lsm-life");
    let scratch = Scratch::new("life");
    let file = scratch.path("inner/data");

    // Dry run: every open works, the counters say what would have failed.
    let rate = RateCheck::new(0.5, 0.05);
    let mut req = experiment(
        lsm_error("open", "EACCES", rate.p, &scratch.dir, 0),
        cgroup_target(&cg),
        Duration::from_secs(60),
    );
    req.spec.as_mut().unwrap().dry_run = true;
    let exp = start(&mut agent.client().await, req).await;
    let dry = probe_fs(Some(&cg), "open", &file, rate.n);
    assert_eq!(dry.ok, rate.n, "dry run injects nothing: {dry:?}");
    let c = counters(&agent, &exp.id).await;
    assert_eq!(c.matched, rate.n, "{c:?}");
    rate.assert(c.injected, &format!("would-be injections ({c:?})"));
    stop(&agent, &exp.id).await;

    // Deadline in the kernel: the agent is frozen, the fault still ends.
    // (Counted from when the agent armed it, before the call returned.)
    let life = Duration::from_millis(if in_vm() { 4000 } else { 1500 });
    let exp = start(
        &mut agent.client().await,
        experiment(
            lsm_error("open", "EACCES", 1.0, &scratch.dir, 0),
            cgroup_target(&cg),
            life,
        ),
    )
    .await;
    let t0 = std::time::Instant::now();
    let during = probe_fs(Some(&cg), "open", &file, 10);
    assert!(
        t0.elapsed() < life,
        "the check ran too late to mean anything"
    );
    assert_eq!(during.errno("EACCES"), 10, "{during:?}");
    agent.signal(nix::sys::signal::Signal::SIGSTOP);
    std::thread::sleep(life.saturating_sub(t0.elapsed()) + Duration::from_millis(300));
    let links_while_frozen = our_links();
    let after_deadline = probe_fs(Some(&cg), "open", &file, 50);
    agent.signal(nix::sys::signal::Signal::SIGCONT);
    assert!(
        !links_while_frozen.is_empty(),
        "the LSM link stays while the agent is frozen"
    );
    assert_eq!(
        after_deadline.ok, 50,
        "past the deadline opens succeed though the agent is frozen: {after_deadline:?}"
    );
    let _ = exp;

    // SIGKILL of the agent: the fault is gone at once.
    let exp = start(
        &mut agent.client().await,
        experiment(
            lsm_error("open", "EACCES", 1.0, &scratch.dir, 0),
            cgroup_target(&cg),
            Duration::from_secs(60),
        ),
    )
    .await;
    let before = probe_fs(Some(&cg), "open", &file, 10);
    assert_eq!(before.errno("EACCES"), 10, "{before:?}");
    let _ = exp;
    agent.kill();
    let after_kill = probe_fs(Some(&cg), "open", &file, 50);
    assert_eq!(
        after_kill.ok, 50,
        "opens succeed once the agent died: {after_kill:?}"
    );
    assert!(
        wait_for(Duration::from_secs(5), || our_links().is_empty()),
        "the agent's links leave the kernel with it: {:?}",
        our_links()
    );
}

/// Where BPF LSM cannot load, asking for an LSM call is FailedPrecondition
/// with the probed reason, and `faultctl caps` shows the same reason.
#[tokio::test]
async fn lsm_call_without_lsm_is_failed_precondition_with_the_reason() {
    require_root().unwrap();
    let agent = Agent::start();
    let (supported, reason) = capability(&agent, "bpf_lsm:file_open").await;
    if supported {
        eprintln!("SKIP: BPF LSM loads on this kernel; the other tests here exercise it");
        return;
    }
    assert!(
        !expected("bpf_lsm"),
        "BPF LSM is expected on this kernel, but the agent says: {reason}"
    );
    assert!(!reason.is_empty(), "an unsupported row carries its reason");
    let cg = TestCgroup::new("lsm-none");
    let err = agent
        .client()
        .await
        .start_experiment(experiment(
            lsm_error("openat", "EIO", 1.0, "", 0),
            cgroup_target(&cg),
            Duration::from_secs(10),
        ))
        .await
        .expect_err("openat errors cannot be armed here");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("spec.faults[0].syscall_error") && err.message().contains(&reason),
        "the status names the field and carries the probed reason: {}",
        err.message()
    );
    let listed = agent
        .client()
        .await
        .list_experiments(pb::ListExperimentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed.experiments.is_empty(),
        "nothing half-armed: {listed:?}"
    );

    let out = std::process::Command::new(bin("faultctl"))
        .args(["--socket", &agent.socket.to_string_lossy(), "caps"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let row = table
        .lines()
        .find(|l| l.contains("bpf_lsm:file_open"))
        .unwrap_or_else(|| panic!("caps lists the file_open row:\n{table}"));
    assert!(
        row.contains("openat") && row.contains(" no ") && row.contains(&reason),
        "caps shows openat unsupported with the reason: {row}"
    );
}
