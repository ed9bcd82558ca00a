//! `process_kill` and `process_pause` through the real agent, seen from the
//! targets' side: who died and by which signal, whose counter stood still,
//! and that a paused target resumes when the agent dies (the reaper) or,
//! if the reaper died too, when the next agent starts.
#![expect(
    unused_crate_dependencies,
    reason = "each integration test is its own crate; the package's dependencies serve them all"
)]

use std::{
    path::Path,
    time::{Duration, Instant},
};

use faultline_proto::v1::{self as pb, fault_service_client::FaultServiceClient};
use faultline_tests::{procs::*, *};
use tonic::{Code, transport::Channel};

type Client = FaultServiceClient<Channel>;

fn kill_fault(signal: &str, interval_ms: u64, pick: pb::KillPick) -> pb::fault_spec::Kind {
    pb::fault_spec::Kind::ProcessKill(pb::ProcessKill {
        signal: signal.into(),
        interval_ms,
        pick: pick.into(),
        probability: 1.0,
        min_gap_ms: 0,
    })
}

fn pause_fault() -> pb::fault_spec::Kind {
    pb::fault_spec::Kind::ProcessPause(pb::ProcessPause {})
}

fn comm_target(comm: &str) -> pb::Target {
    pb::Target {
        comm: comm.into(),
        ..Default::default()
    }
}

async fn get(c: &mut Client, id: &str) -> pb::Experiment {
    c.get_experiment(pb::GetExperimentRequest { id: id.into() })
        .await
        .expect("GetExperiment")
        .into_inner()
}

async fn stop(c: &mut Client, id: &str) -> pb::Experiment {
    c.stop_experiment(pb::StopExperimentRequest { id: id.into() })
        .await
        .expect("StopExperiment")
        .into_inner()
}

/// Waits (up to `limit`) for the experiment to end by itself.
async fn ended(c: &mut Client, id: &str, limit: Duration) -> pb::Experiment {
    let t0 = Instant::now();
    loop {
        let e = get(c, id).await;
        if e.state != pb::ExperimentState::Running as i32 || t0.elapsed() > limit {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn kill_signals_only_the_matching_processes() {
    require_root().unwrap();
    let agent = Agent::start();
    let mut c = agent.client().await;
    let names = Names::new();
    let cg = TestCgroup::new("kill");
    let other_cg = TestCgroup::new("kill-other");
    let comm = format!("flk-{}", std::process::id() % 100_000);
    let victim_exe = names.probe(&comm);
    let mut victims: Vec<ChildGuard> = (0..3).map(|_| named(&cg, &victim_exe)).collect();
    // Same cgroup, another name; same name, another cgroup.
    let mut bystanders = vec![sleeper(&cg), named(&other_cg, &victim_exe)];
    let target = pb::Target {
        cgroup: cg.path_str(),
        comm: comm.clone(),
        ..Default::default()
    };
    let exp = start(
        &mut c,
        experiment(
            kill_fault("KILL", 0, pb::KillPick::All),
            target,
            Duration::from_secs(30),
        ),
    )
    .await;
    for v in &mut victims {
        assert!(
            died_by(v, libc::SIGKILL, Duration::from_secs(3)),
            "a matching process should die by SIGKILL"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    for b in &mut bystanders {
        assert!(
            alive(b),
            "a process that does not match every selector must live"
        );
    }
    let e = stop(&mut c, &exp.id).await;
    let f = &e.faults[0];
    assert_eq!(f.mechanism, "signals");
    assert_eq!((f.matched, f.injected), (3, 3), "{f:?}");
    let mut killed: Vec<u32> = f.actions.iter().map(|a| a.pid).collect();
    killed.sort_unstable();
    let mut want: Vec<u32> = victims.iter().map(|v| v.0.id()).collect();
    want.sort_unstable();
    assert_eq!(killed, want);
    assert!(
        f.actions
            .iter()
            .all(|a| a.what == "SIGKILL" && a.comm == comm && a.at_ms > 0)
    );
}

/// Chaos Monkey: 12 matching processes, one random kill per 1 s interval
/// over 10 intervals: exactly 10 die, one per interval, and not in pid or
/// start order.
#[tokio::test]
async fn chaos_monkey_kills_one_random_match_per_interval() {
    require_root().unwrap();
    let agent = Agent::start();
    let mut c = agent.client().await;
    let cg = TestCgroup::new("monkey");
    // Spawned in order: start order is the index.
    let mut procs: Vec<ChildGuard> = (0..12).map(|_| sleeper(&cg)).collect();
    let pids: Vec<u32> = procs.iter().map(|p| p.0.id()).collect();
    // Rounds at 0 s, 1 s, ... 9 s; the experiment ends half an interval
    // after the tenth.
    let exp = start(
        &mut c,
        experiment(
            kill_fault("KILL", 1000, pb::KillPick::OneRandom),
            cgroup_target(&cg),
            Duration::from_millis(9500),
        ),
    )
    .await;
    let e = ended(&mut c, &exp.id, Duration::from_secs(15)).await;
    assert_eq!(e.state, pb::ExperimentState::Expired as i32, "{e:?}");
    let f = &e.faults[0];
    let order: Vec<u32> = f.actions.iter().map(|a| a.pid).collect();
    assert_eq!(
        order.len(),
        10,
        "one kill per interval, 10 in all: {order:?}"
    );
    assert_eq!(f.injected, 10);
    assert_eq!(f.matched, 12);
    // One per interval: consecutive kills about 1 s apart.
    for w in f.actions.windows(2) {
        let gap = w[1].at_ms - w[0].at_ms;
        assert!(
            (700..=1300).contains(&gap),
            "kills {gap} ms apart: {:?}",
            f.actions
        );
    }
    // From the targets' side: exactly the named ten died, by SIGKILL.
    let mut dead = Vec::new();
    for p in &mut procs {
        let id = p.0.id();
        if order.contains(&id) {
            assert!(
                died_by(p, libc::SIGKILL, Duration::from_secs(1)),
                "pid {id}"
            );
            dead.push(id);
        } else {
            assert!(alive(p), "pid {id} was not picked and must live");
        }
    }
    assert_eq!(dead.len(), 10, "distinct victims");
    // Random, not a fixed order: neither pid order nor start order (either
    // way round) gives the kill order. A random order of 10 is monotonic in
    // either with probability 4/10!.
    let starts: Vec<usize> = order
        .iter()
        .map(|p| pids.iter().position(|q| q == p).unwrap())
        .collect();
    let monotonic =
        |v: &[u64]| v.windows(2).all(|w| w[0] < w[1]) || v.windows(2).all(|w| w[0] > w[1]);
    let by_pid: Vec<u64> = order.iter().map(|p| u64::from(*p)).collect();
    let by_start: Vec<u64> = starts.iter().map(|s| *s as u64).collect();
    assert!(!monotonic(&by_pid), "kills in pid order: {order:?}");
    assert!(!monotonic(&by_start), "kills in start order: {starts:?}");
}

/// `min_gap` longer than the interval skips the rounds in between, and
/// probability 0 signals no one (SIGCONT: the target lives through it).
#[tokio::test]
async fn min_gap_skips_rounds_and_probability_zero_signals_no_one() {
    require_root().unwrap();
    let agent = Agent::start();
    let mut c = agent.client().await;
    let cg = TestCgroup::new("kill-gap");
    let _target = sleeper(&cg);
    let fault = |probability, min_gap_ms| {
        pb::fault_spec::Kind::ProcessKill(pb::ProcessKill {
            signal: "CONT".into(),
            interval_ms: 1000,
            pick: pb::KillPick::All.into(),
            probability,
            min_gap_ms,
        })
    };
    // Rounds at 0, 1, 2, 3 and 4 s: with a 1.5 s gap, those at 0, 2 and 4 s signal.
    let d = Duration::from_millis(4500);
    let gap = start(&mut c, experiment(fault(1.0, 1500), cgroup_target(&cg), d)).await;
    let never = start(&mut c, experiment(fault(0.0, 0), cgroup_target(&cg), d)).await;
    let gap = ended(&mut c, &gap.id, Duration::from_secs(8)).await;
    let never = ended(&mut c, &never.id, Duration::from_secs(2)).await;
    let acts = &gap.faults[0].actions;
    assert_eq!(acts.len(), 3, "{acts:?}");
    for w in acts.windows(2) {
        let apart = w[1].at_ms - w[0].at_ms;
        assert!((1700..=2300).contains(&apart), "{apart} ms apart: {acts:?}");
    }
    assert!(acts.iter().all(|a| a.what == "SIGCONT"));
    let f = &never.faults[0];
    assert_eq!((f.matched, f.injected, f.actions.len()), (1, 0, 0), "{f:?}");
}

#[tokio::test]
async fn dry_run_kills_none_and_names_them() {
    require_root().unwrap();
    let agent = Agent::start();
    let mut c = agent.client().await;
    let cg = TestCgroup::new("kill-dry");
    let mut procs: Vec<ChildGuard> = (0..3).map(|_| sleeper(&cg)).collect();
    let mut req = experiment(
        kill_fault("KILL", 0, pb::KillPick::All),
        cgroup_target(&cg),
        Duration::from_secs(30),
    );
    req.spec.as_mut().unwrap().dry_run = true;
    let exp = start(&mut c, req).await;
    std::thread::sleep(Duration::from_millis(500));
    for p in &mut procs {
        assert!(alive(p), "a dry run kills no one");
    }
    let f = &get(&mut c, &exp.id).await.faults[0];
    assert_eq!((f.matched, f.injected), (3, 0), "{f:?}");
    let mut named: Vec<u32> = f.actions.iter().map(|a| a.pid).collect();
    named.sort_unstable();
    let mut want: Vec<u32> = procs.iter().map(|p| p.0.id()).collect();
    want.sort_unstable();
    assert_eq!(named, want);
    assert!(
        f.actions
            .iter()
            .all(|a| a.what == "would SIGKILL (dry run)" && a.comm == "sleep"),
        "{:?}",
        f.actions
    );
    stop(&mut c, &exp.id).await;
}

/// SIGSTOP by name: matching counters stand still (a process started later
/// with the name too), another keeps counting; all resume on stop.
#[tokio::test]
async fn pause_by_name_stops_progress_until_the_experiment_stops() {
    require_root().unwrap();
    let agent = Agent::start();
    let mut c = agent.client().await;
    let names = Names::new();
    let cg = TestCgroup::new("pause");
    let comm = format!("flp-{}", std::process::id() % 100_000);
    let sh = names.shell(&comm);
    let (fa, fb, fo) = (names.0.join("a"), names.0.join("b"), names.0.join("o"));
    let a = counter(&cg, &sh, &fa);
    let _other = counter(&cg, Path::new("sh"), &fo);
    assert!(progresses(&fa, Duration::from_secs(2)) && progresses(&fo, Duration::from_secs(2)));
    let exp = start(
        &mut c,
        experiment(pause_fault(), comm_target(&comm), Duration::from_secs(30)),
    )
    .await;
    // The signal is sent before the start returns; the stop itself takes
    // the target a moment (it must run to take it).
    assert!(
        wait_for(Duration::from_millis(500), || state_of(a.0.id()) == "T"),
        "the target should be SIGSTOPped"
    );
    assert!(
        stands_still(&fa, Duration::from_millis(500)),
        "a paused target counts on"
    );
    assert!(
        progresses(&fo, Duration::from_secs(1)),
        "a non-matching process must run"
    );
    // A new match is paused within the rescan period.
    let b = counter(&cg, &sh, &fb);
    assert!(
        wait_for(Duration::from_secs(1), || state_of(b.0.id()) == "T"),
        "a process started later with the name should be paused too"
    );
    let e = stop(&mut c, &exp.id).await;
    assert!(progresses(&fa, Duration::from_secs(1)), "resumes on stop");
    assert!(progresses(&fb, Duration::from_secs(1)), "resumes on stop");
    let f = &e.faults[0];
    assert_eq!(f.injected, 2, "{f:?}");
    let stops = f.actions.iter().filter(|a| a.what == "SIGSTOP").count();
    let conts = f.actions.iter().filter(|a| a.what == "SIGCONT").count();
    assert_eq!((stops, conts), (2, 2), "{:?}", f.actions);
}

/// Pauses a counter by pid (SIGSTOP) and a cgroup (the freezer); both
/// shown paused from the target's side.
async fn pause_both(
    c: &mut Client,
    by_pid: &ChildGuard,
    pid_file: &Path,
    cg: &TestCgroup,
    cg_file: &Path,
) {
    assert!(
        progresses(pid_file, Duration::from_secs(2)) && progresses(cg_file, Duration::from_secs(2))
    );
    start(
        c,
        experiment(
            pause_fault(),
            pid_target(by_pid.0.id()),
            Duration::from_secs(60),
        ),
    )
    .await;
    let e = start(
        c,
        experiment(pause_fault(), cgroup_target(cg), Duration::from_secs(60)),
    )
    .await;
    assert_eq!(e.faults[0].mechanism, "cgroup freezer");
    assert!(wait_for(Duration::from_millis(500), || state_of(
        by_pid.0.id()
    ) == "T"));
    assert!(frozen(cg), "the cgroup should be frozen");
    assert!(stands_still(pid_file, Duration::from_millis(300)));
    assert!(stands_still(cg_file, Duration::from_millis(300)));
}

/// The agent dies by SIGKILL: its reaper resumes the stopped process and
/// thaws the frozen cgroup within 1 s, with no agent running.
#[tokio::test]
async fn paused_targets_resume_within_a_second_of_an_agent_sigkill() {
    require_root().unwrap();
    let mut agent = Agent::start();
    let mut c = agent.client().await;
    let names = Names::new();
    let cg = TestCgroup::new("pause-reap");
    let frozen_cg = TestCgroup::new("freeze-reap");
    let (fp, fc) = (names.0.join("p"), names.0.join("c"));
    let by_pid = counter(&cg, Path::new("sh"), &fp);
    let _in_cg = counter(&frozen_cg, Path::new("sh"), &fc);
    let reaper = reaper_of(agent.pid()).expect("the agent's reaper process");
    let own = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert_eq!(
        own(reaper),
        own(agent.pid()),
        "the reaper lives in the agent's cgroup"
    );
    pause_both(&mut c, &by_pid, &fp, &frozen_cg, &fc).await;
    let killed = Instant::now();
    agent.kill();
    assert!(
        progresses(&fp, Duration::from_secs(1)),
        "the stopped process resumes"
    );
    assert!(
        progresses(&fc, Duration::from_secs(1)),
        "the frozen cgroup thaws"
    );
    assert!(!frozen(&frozen_cg));
    assert!(killed.elapsed() < Duration::from_secs(2));
    assert!(
        // Gone, or a zombie its new parent has not reaped.
        wait_for(Duration::from_secs(1), || matches!(
            state_of(reaper).as_str(),
            "" | "Z"
        )),
        "the reaper exits once it has undone the journal"
    );
}

/// Reaper and agent both SIGKILLed: the target stays paused until the next
/// agent starts on the state directory, which resumes and thaws it.
#[tokio::test]
async fn the_next_start_resumes_what_a_killed_reaper_left() {
    require_root().unwrap();
    let mut agent = Agent::start();
    let mut c = agent.client().await;
    let names = Names::new();
    let cg = TestCgroup::new("pause-restart");
    let frozen_cg = TestCgroup::new("freeze-restart");
    let (fp, fc) = (names.0.join("p"), names.0.join("c"));
    let by_pid = counter(&cg, Path::new("sh"), &fp);
    let _in_cg = counter(&frozen_cg, Path::new("sh"), &fc);
    pause_both(&mut c, &by_pid, &fp, &frozen_cg, &fc).await;
    let reaper = reaper_of(agent.pid()).expect("the agent's reaper process");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(reaper as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    agent.kill();
    // No one left to undo it: still paused.
    assert!(stands_still(&fp, Duration::from_secs(1)));
    assert!(frozen(&frozen_cg));
    let _next = Agent::start_in(agent.dir.clone(), &[]);
    assert!(
        progresses(&fp, Duration::from_secs(1)),
        "resumed at start-up"
    );
    assert!(
        progresses(&fc, Duration::from_secs(1)),
        "thawed at start-up"
    );
}

fn assert_refused(
    r: Result<tonic::Response<pb::StartExperimentResponse>, tonic::Status>,
    code: Code,
    field: &str,
) {
    let s = r.expect_err("the request should have been refused");
    assert_eq!(s.code(), code, "{field}: {}", s.message());
    assert!(
        s.message().starts_with(field),
        "should name {field}: {}",
        s.message()
    );
}

/// Bad kill and pause requests are refused naming the field, and nothing
/// is started; a cgroup whose only process is protected is accepted, and
/// the process is neither killed nor paused.
#[tokio::test]
async fn invalid_and_protected_targets_are_refused_and_nothing_starts() {
    require_root().unwrap();
    let agent = Agent::start_with(&["--protected-comm", "fl-protected"]);
    let mut c = agent.client().await;
    let names = Names::new();
    let cg = TestCgroup::new("kill-invalid");
    let mut bystander = sleeper(&cg);
    let d = Duration::from_secs(30);
    let f = "spec.faults[0].process_kill";
    let kill = |interval_ms, probability, signal: &str| {
        pb::fault_spec::Kind::ProcessKill(pb::ProcessKill {
            signal: signal.into(),
            interval_ms,
            pick: pb::KillPick::OneRandom.into(),
            probability,
            min_gap_ms: 0,
        })
    };
    let bad = [
        (
            kill(999, 1.0, "KILL"),
            cgroup_target(&cg),
            Code::InvalidArgument,
            format!("{f}.interval_ms"),
        ),
        (
            kill(1000, 1.5, "KILL"),
            cgroup_target(&cg),
            Code::InvalidArgument,
            format!("{f}.probability"),
        ),
        (
            kill(1000, -0.1, "KILL"),
            cgroup_target(&cg),
            Code::InvalidArgument,
            format!("{f}.probability"),
        ),
        (
            kill(1000, 1.0, "NOPE"),
            cgroup_target(&cg),
            Code::InvalidArgument,
            format!("{f}.signal"),
        ),
        (
            kill(0, 1.0, "KILL"),
            pid_target(1),
            Code::PermissionDenied,
            "spec.target.pids[0]".into(),
        ),
        (
            kill(0, 1.0, "KILL"),
            pid_target(agent.pid()),
            Code::PermissionDenied,
            "spec.target.pids[0]".into(),
        ),
        (
            kill(0, 1.0, "KILL"),
            comm_target("sshd"),
            Code::PermissionDenied,
            "spec.target.comm".into(),
        ),
        (
            pause_fault(),
            pid_target(1),
            Code::PermissionDenied,
            "spec.target.pids[0]".into(),
        ),
        (
            pause_fault(),
            pid_target(agent.pid()),
            Code::PermissionDenied,
            "spec.target.pids[0]".into(),
        ),
        (
            pause_fault(),
            comm_target("faultline-agent"),
            Code::PermissionDenied,
            "spec.target.comm".into(),
        ),
        (
            pause_fault(),
            comm_target("sshd"),
            Code::PermissionDenied,
            "spec.target.comm".into(),
        ),
    ];
    let reaper = reaper_of(agent.pid()).expect("the agent's reaper");
    let bad = bad.into_iter().chain([(
        pause_fault(),
        pid_target(reaper),
        Code::PermissionDenied,
        "spec.target.pids[0]".to_owned(),
    )]);
    for (fault, target, code, field) in bad {
        assert_refused(
            c.start_experiment(experiment(fault, target, d)).await,
            code,
            &field,
        );
    }
    let mut req = experiment(kill(0, 1.0, "KILL"), cgroup_target(&cg), d);
    if let Some(pb::fault_spec::Kind::ProcessKill(k)) =
        req.spec.as_mut().unwrap().faults[0].kind.as_mut()
    {
        k.min_gap_ms = 10;
    }
    assert_refused(
        c.start_experiment(req).await,
        Code::InvalidArgument,
        &format!("{f}.min_gap_ms"),
    );
    let listed = c
        .list_experiments(pb::ListExperimentsRequest {
            running_only: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .experiments;
    assert!(
        listed.is_empty(),
        "a refused request left an experiment: {listed:?}"
    );
    assert!(alive(&mut bystander) && state_of(bystander.0.id()) != "T");
    // Out of the way of what follows.
    let _ = bystander.0.kill();
    let _ = bystander.0.wait();

    // Only a protected process in the cgroup: accepted, and it is spared.
    let exe = names.probe("fl-protected");
    let mut protected = named(&cg, &exe);
    let k = start(
        &mut c,
        experiment(kill(0, 1.0, "KILL"), cgroup_target(&cg), d),
    )
    .await;
    let p = start(&mut c, experiment(pause_fault(), cgroup_target(&cg), d)).await;
    std::thread::sleep(Duration::from_millis(400));
    assert!(alive(&mut protected), "a protected process is never killed");
    assert_ne!(state_of(protected.0.id()), "T", "nor stopped");
    assert!(!frozen(&cg), "nor frozen with its cgroup");
    let k = stop(&mut c, &k.id).await;
    let p = stop(&mut c, &p.id).await;
    assert_eq!((k.faults[0].matched, k.faults[0].injected), (0, 0));
    assert_eq!((p.faults[0].matched, p.faults[0].injected), (0, 0));
}
