//! `syscall_signal`: the target dies with the configured signal at the
//! configured syscall; another process running the same binary does not.
#![expect(
    unused_crate_dependencies,
    reason = "each integration test is its own crate; the package's dependencies serve them all"
)]

use std::{
    os::unix::process::ExitStatusExt as _,
    process::{Child, Command},
    time::Duration,
};

use faultline_tests::*;

fn spawn_loop(cg: Option<&TestCgroup>, syscall: &str) -> Child {
    let mut cmd = match cg {
        Some(cg) => cg.command(bin("fl-probe")),
        None => Command::new(bin("fl-probe")),
    };
    cmd.args(["loop", syscall, "5"])
        .spawn()
        .expect("spawn fl-probe loop")
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
    let mut target = spawn_loop(Some(&cg), "uname");
    let mut twin = spawn_loop(None, "uname");

    start(
        &mut client,
        experiment(
            syscall_signal("uname", "SEGV", 1.0, 0),
            cgroup_target(&cg),
            Duration::from_secs(60),
        ),
    )
    .await;

    let status = wait_exit(&mut target, Duration::from_secs(5))
        .expect("the target should have died within 5 s");
    assert_eq!(
        status.signal(),
        Some(libc::SIGSEGV),
        "target should die by SIGSEGV, got {status:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        twin.try_wait().unwrap().is_none(),
        "the same binary outside the cgroup must keep running"
    );
    let _ = twin.kill();
    let _ = twin.wait();
}

#[tokio::test]
async fn signal_at_the_nth_call_only() {
    require_root().unwrap();
    let agent = Agent::start();
    let mut client = agent.client().await;
    let mut target = spawn_loop(None, "getppid");
    let mut other_syscall = spawn_loop(None, "uname");

    let exp = start(
        &mut client,
        experiment(
            syscall_signal("getppid", "ABRT", 1.0, 20),
            pid_target(target.id()),
            Duration::from_secs(60),
        ),
    )
    .await;
    let status = wait_exit(&mut target, Duration::from_secs(5))
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
        other_syscall.try_wait().unwrap().is_none(),
        "a non-target process must keep running"
    );
    let _ = other_syscall.kill();
    let _ = other_syscall.wait();
}

#[tokio::test]
async fn sys_enter_is_attached_only_while_a_signal_fault_is_active() {
    require_root().unwrap();
    let agent = Agent::start();
    let mut client = agent.client().await;
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let ours_before = agent.links();
    assert!(
        ours_before.is_empty(),
        "no link may exist before any fault: {ours_before:?}"
    );

    let exp = start(
        &mut client,
        experiment(
            syscall_signal("getppid", "KILL", 1.0, 0),
            pid_target(sleeper.id()),
            Duration::from_secs(60),
        ),
    )
    .await;
    assert_eq!(
        agent.links().len(),
        1,
        "one raw tracepoint link while the fault is active"
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
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}
