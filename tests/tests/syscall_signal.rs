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

/// `fl-probe loop SYSCALL 5 counted` in `cg`: it makes no call until told
/// to go, then prints each call's number once the call has returned. Guarded
/// and contained like `spawn_loop`.
fn spawn_counted(
    cg: &TestCgroup,
    syscall: &str,
) -> (ChildGuard, std::io::BufReader<std::process::ChildStdout>) {
    let mut child = cg
        .command(bin("fl-probe"))
        .args(["loop", syscall, "5", "counted"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn fl-probe loop");
    let out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    (ChildGuard(child), out)
}

/// Tells a `spawn_counted` process to start its calls.
fn go(child: &mut ChildGuard) {
    use std::io::Write as _;
    writeln!(child.0.stdin.as_mut().expect("stdin"), "go").expect("tell the loop to go");
}

/// The call numbers a counted loop printed, read until it stops writing.
fn calls_completed(out: std::io::BufReader<std::process::ChildStdout>) -> Vec<u64> {
    use std::io::BufRead as _;
    out.lines()
        .map_while(Result::ok)
        .map(|l| l.parse().expect("a call number"))
        .collect()
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

/// The target dies at its 20th getppid, from its own side: it makes no
/// call before the fault is armed and prints each call that returned, so
/// exactly 19 are printed before the signal. A process in the same cgroup
/// making the same calls, but not the target, lives on past its 20th.
#[tokio::test]
async fn signal_at_the_nth_call_only() {
    require_root().unwrap();
    let agent = Agent::start();
    let mut client = agent.client().await;
    // A cgroup only to contain the children: the fault targets a pid.
    let cg = TestCgroup::new("signal-nth");
    let (mut target, target_out) = spawn_counted(&cg, "getppid");
    let (mut twin, twin_out) = spawn_counted(&cg, "getppid");

    let exp = start(
        &mut client,
        experiment(
            syscall_signal("getppid", "ABRT", 1.0, 20),
            pid_target(target.0.id()),
            Duration::from_secs(60),
        ),
    )
    .await;
    go(&mut target);
    go(&mut twin);
    // Read in the background: the pipe ends when the target dies.
    let target_calls = std::thread::spawn(move || calls_completed(target_out));
    let status = wait_exit(&mut target.0, Duration::from_secs(5))
        .expect("target should die at its 20th getppid");
    assert_eq!(status.signal(), Some(libc::SIGABRT), "got {status:?}");
    let done = target_calls.join().unwrap();
    assert_eq!(
        done,
        (1..=19).collect::<Vec<u64>>(),
        "the target completed its first 19 calls and died in the 20th"
    );
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
    // The twin's calls ran under the same live fault; it passes its 20th.
    // (Its output fits in the pipe until it is read below.)
    let twin_status = wait_exit(&mut twin.0, Duration::from_millis(500));
    assert!(
        twin_status.is_none(),
        "a non-target making the same call must keep running: {twin_status:?}"
    );
    twin.0.kill().unwrap();
    let twin_done = calls_completed(twin_out);
    assert!(
        twin_done.len() >= 40,
        "the non-target completed more than 20 calls: {}",
        twin_done.len()
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

/// The fault's status as the agent reports it now.
async fn fault_status(
    client: &mut faultline_proto::v1::fault_service_client::FaultServiceClient<
        tonic::transport::Channel,
    >,
    id: &str,
) -> faultline_proto::v1::FaultStatus {
    let view = client
        .get_experiment(faultline_proto::v1::GetExperimentRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner();
    view.faults[0].clone()
}

/// `FL_NTH` (the per-process call counts of `nth_call` faults) sized for
/// two processes: while it has room, `nth_call = 1` kills at the first
/// call; once two other processes hold its entries, a new target's calls
/// cannot be counted, so none is its first: it lives, and the counter says
/// why. (Before the fix a full map made every call "call #1".)
#[tokio::test]
async fn a_full_nth_call_map_signals_no_one_and_says_so() {
    require_root().unwrap();
    let agent = Agent::start_with(&["--nth-call-capacity", "2"]);
    let mut client = agent.client().await;
    let target_cg = TestCgroup::new("nth-full-target");
    let filler_cg = TestCgroup::new("nth-full-fillers");
    let kill_first = || syscall_signal("getppid", "KILL", 1.0, 1);

    // Positive control: room in the map, so the first call is counted and killed.
    let control_exp = start(
        &mut client,
        experiment(
            kill_first(),
            cgroup_target(&target_cg),
            Duration::from_secs(60),
        ),
    )
    .await;
    let mut control = spawn_loop(&target_cg, "getppid");
    let status = wait_exit(&mut control.0, Duration::from_secs(5))
        .expect("with room in the map, the control should die at its first getppid");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "got {status:?}");
    let s = fault_status(&mut client, &control_exp.id).await;
    assert_eq!((s.injected, s.not_injected_map_full), (1, 0), "{s:?}");
    // Stopping clears the slot's counts: the map is empty again.
    client
        .stop_experiment(faultline_proto::v1::StopExperimentRequest { id: control_exp.id })
        .await
        .unwrap();

    // Two fillers take both entries (a fault whose Nth call never comes).
    let fillers_exp = start(
        &mut client,
        experiment(
            syscall_signal("getppid", "KILL", 1.0, u64::from(u32::MAX)),
            cgroup_target(&filler_cg),
            Duration::from_secs(60),
        ),
    )
    .await;
    let _fillers = [
        spawn_loop(&filler_cg, "getppid"),
        spawn_loop(&filler_cg, "getppid"),
    ];
    let mut filled = false;
    for _ in 0..100 {
        let s = fault_status(&mut client, &fillers_exp.id).await;
        // Each filler made calls, so each holds an entry.
        if s.matched >= 10 {
            filled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(filled, "the fillers should have made their calls");
    let s = fault_status(&mut client, &fillers_exp.id).await;
    assert_eq!(s.not_injected_map_full, 0, "the fillers fit: {s:?}");

    // The same fault as the control's, on a new target: the map is full.
    let exp = start(
        &mut client,
        experiment(
            kill_first(),
            cgroup_target(&target_cg),
            Duration::from_secs(60),
        ),
    )
    .await;
    let mut target = spawn_loop(&target_cg, "getppid");
    let mut seen = fault_status(&mut client, &exp.id).await;
    for _ in 0..100 {
        if seen.matched >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen = fault_status(&mut client, &exp.id).await;
    }
    assert!(
        seen.matched >= 20,
        "the target should keep making its calls: {seen:?}"
    );
    assert!(
        target.0.try_wait().unwrap().is_none(),
        "a target whose calls cannot be counted must not be signalled"
    );
    assert_eq!(seen.injected, 0, "nothing injected: {seen:?}");
    assert!(
        seen.not_injected_map_full >= 20 && seen.not_injected_map_full <= seen.matched,
        "every uncounted call is reported as such: {seen:?}"
    );

    // faultctl shows it, in JSON and in the table.
    let ctl = |args: &[&str]| {
        let out = std::process::Command::new(bin("faultctl"))
            .arg("--socket")
            .arg(&agent.socket)
            .args(args)
            .output()
            .expect("run faultctl");
        assert!(out.status.success(), "faultctl {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let json: serde_json::Value =
        serde_json::from_str(&ctl(&["status", &exp.id, "-o", "json"])).unwrap();
    assert!(
        json["faults"][0]["not_injected_map_full"].as_u64() >= Some(20),
        "{json}"
    );
    let table = ctl(&["status", &exp.id]);
    assert!(
        table.contains("calls not signalled: the agent's nth_call count map was full"),
        "{table}"
    );
}
