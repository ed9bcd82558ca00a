//! `syscall_signal`: the target dies with the configured signal at the
//! configured syscall; another process running the same binary does not.
#![expect(
    unused_crate_dependencies,
    reason = "each integration test is its own crate; the package's dependencies serve them all"
)]

use std::{os::unix::process::ExitStatusExt as _, process::Child, time::Duration};

use faultline_tests::*;

/// `fl-probe loop SYSCALL` in `cg`: it loops until killed, so it is
/// guarded (killed and reaped on drop) and lives in a test cgroup, whose
/// drop kills whatever is left in it, whichever way the test ends.
fn spawn_loop(cg: &TestCgroup, syscall: &str) -> ChildGuard {
    ChildGuard(
        cg.command(bin("fl-probe"))
            .args(["loop", syscall, "5"])
            .spawn()
            .expect("spawn fl-probe loop"),
    )
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let mut status = None;
    wait_for(timeout, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    status
}

#[tokio::test]
async fn target_dies_with_the_configured_signal_and_a_twin_lives() {
    require_root().unwrap();
    let agent = Agent::start();
    let mut client = agent.client().await;
    let cg = TestCgroup::new("signal");
    let twin_cg = TestCgroup::new("signal-twin");
    let mut target = spawn_loop(&cg, "uname");
    let mut twin = spawn_loop(&twin_cg, "uname");

    start(
        &mut client,
        experiment(
            syscall_signal("uname", "SEGV", 1.0, 0),
            cgroup_target(&cg),
            Duration::from_secs(60),
        ),
    )
    .await;

    let status = wait_exit(&mut target.0, Duration::from_secs(5))
        .expect("the target should have died within 5 s");
    assert_eq!(
        status.signal(),
        Some(libc::SIGSEGV),
        "target should die by SIGSEGV, got {status:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        twin.0.try_wait().unwrap().is_none(),
        "the same binary outside the cgroup must keep running"
    );
}

#[tokio::test]
async fn signal_at_the_nth_call_only() {
    require_root().unwrap();
    let agent = Agent::start();
    let mut client = agent.client().await;
    // A cgroup only to contain the children: the fault targets a pid.
    let cg = TestCgroup::new("signal-nth");
    let mut target = spawn_loop(&cg, "getppid");
    let mut other_syscall = spawn_loop(&cg, "uname");

    let exp = start(
        &mut client,
        experiment(
            syscall_signal("getppid", "ABRT", 1.0, 20),
            pid_target(target.0.id()),
            Duration::from_secs(60),
        ),
    )
    .await;
    let status = wait_exit(&mut target.0, Duration::from_secs(5))
        .expect("target should die at its 20th getppid");
    assert_eq!(status.signal(), Some(libc::SIGABRT), "got {status:?}");
    let view = client
        .get_experiment(faultline_proto::v1::GetExperimentRequest { id: exp.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(view.injected, 1, "exactly one signal delivered: {view:?}");
    assert_eq!(
        view.matched, 20,
        "the signal came at the 20th matching call: {view:?}"
    );
    assert!(
        other_syscall.0.try_wait().unwrap().is_none(),
        "a non-target process must keep running"
    );
}

#[tokio::test]
async fn sys_enter_is_attached_only_while_a_signal_fault_is_active() {
    require_root().unwrap();
    let agent = Agent::start();
    let mut client = agent.client().await;
    let cg = TestCgroup::new("signal-attach");
    let sleeper = ChildGuard(cg.command("sleep").arg("30").spawn().unwrap());
    let ours_before = agent.links();
    assert!(
        ours_before.is_empty(),
        "no link may exist before any fault: {ours_before:?}"
    );

    let exp = start(
        &mut client,
        experiment(
            syscall_signal("getppid", "KILL", 1.0, 0),
            pid_target(sleeper.0.id()),
            Duration::from_secs(60),
        ),
    )
    .await;
    // sys_enter, and sched_process_exit: a pid target leaves the kernel's
    // maps when its process exits.
    assert_eq!(
        agent.links().len(),
        2,
        "two raw tracepoint links while the fault is active"
    );
    client
        .stop_experiment(faultline_proto::v1::StopExperimentRequest { id: exp.id })
        .await
        .unwrap();
    assert!(
        agent.links().is_empty(),
        "the link must be gone after stop: {:?}",
        agent.links()
    );
}
