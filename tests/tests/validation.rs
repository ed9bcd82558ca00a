//! Bad requests are refused with the right code and the field at fault, and
//! nothing is attached.
#![expect(
    unused_crate_dependencies,
    reason = "each integration test is its own crate; the package's dependencies serve them all"
)]

use std::time::Duration;

use faultline_proto::v1 as pb;
use faultline_tests::*;
use tonic::Code;

async fn refused(
    agent: &Agent,
    client: &mut pb::fault_service_client::FaultServiceClient<tonic::transport::Channel>,
    req: pb::StartExperimentRequest,
) -> tonic::Status {
    let status = client
        .start_experiment(req)
        .await
        .expect_err("the request should have been refused");
    assert!(
        agent.links().is_empty(),
        "a refused request attached something: {:?}",
        agent.links()
    );
    status
}

fn assert_refusal(s: &tonic::Status, code: Code, field: &str) {
    assert_eq!(
        s.code(),
        code,
        "expected {code:?} naming {field}, got {:?}: {}",
        s.code(),
        s.message()
    );
    assert!(
        s.message().starts_with(field),
        "message should name {field}: {}",
        s.message()
    );
}

#[tokio::test]
async fn invalid_specs_name_the_field_and_attach_nothing() {
    require_root().unwrap();
    let agent = Agent::start_with(&["--max-duration", "10m", "--protected-comm", "fl-protected"]);
    let mut c = agent.client().await;
    let cg = TestCgroup::new("validation");
    let me = std::process::id();
    let ok_fault = || connect_error("ECONNREFUSED", 0.5, 8080, "");
    let d = Duration::from_secs(30);

    let s = refused(
        &agent,
        &mut c,
        experiment(connect_error("EFOO", 0.5, 8080, ""), cgroup_target(&cg), d),
    )
    .await;
    assert_refusal(
        &s,
        Code::InvalidArgument,
        "spec.faults[0].syscall_error.errno",
    );
    assert!(s.message().contains("EFOO"), "{}", s.message());

    let s = refused(
        &agent,
        &mut c,
        experiment(
            syscall_error("frobnicate", "EIO", 0.5, 0, ""),
            cgroup_target(&cg),
            d,
        ),
    )
    .await;
    assert_refusal(
        &s,
        Code::InvalidArgument,
        "spec.faults[0].syscall_error.syscall",
    );

    let s = refused(
        &agent,
        &mut c,
        experiment(
            syscall_signal("not_a_syscall", "KILL", 1.0, 0),
            cgroup_target(&cg),
            d,
        ),
    )
    .await;
    assert_refusal(
        &s,
        Code::InvalidArgument,
        "spec.faults[0].syscall_signal.syscall",
    );

    for p in [-0.1, 1.01, f64::NAN] {
        let s = refused(
            &agent,
            &mut c,
            experiment(
                connect_error("ECONNREFUSED", p, 8080, ""),
                cgroup_target(&cg),
                d,
            ),
        )
        .await;
        assert_refusal(
            &s,
            Code::InvalidArgument,
            "spec.faults[0].syscall_error.probability",
        );
    }

    let s = refused(
        &agent,
        &mut c,
        experiment(ok_fault(), cgroup_target(&cg), Duration::ZERO),
    )
    .await;
    assert_refusal(&s, Code::InvalidArgument, "spec.duration_ms");
    let s = refused(
        &agent,
        &mut c,
        experiment(ok_fault(), cgroup_target(&cg), Duration::from_secs(11 * 60)),
    )
    .await;
    assert_refusal(&s, Code::InvalidArgument, "spec.duration_ms");

    let s = refused(
        &agent,
        &mut c,
        experiment(
            ok_fault(),
            pb::Target {
                cgroup: "/sys/fs/cgroup/no/such/group".into(),
                ..Default::default()
            },
            d,
        ),
    )
    .await;
    assert_refusal(&s, Code::InvalidArgument, "spec.target.cgroup");
    let s = refused(
        &agent,
        &mut c,
        experiment(
            ok_fault(),
            pb::Target {
                cgroup: "/tmp".into(),
                ..Default::default()
            },
            d,
        ),
    )
    .await;
    assert_refusal(&s, Code::InvalidArgument, "spec.target.cgroup");

    let s = refused(
        &agent,
        &mut c,
        experiment(ok_fault(), pid_target(4_000_000), d),
    )
    .await;
    assert_refusal(&s, Code::InvalidArgument, "spec.target.pids[0]");

    let s = refused(
        &agent,
        &mut c,
        experiment(ok_fault(), pb::Target::default(), d),
    )
    .await;
    assert_refusal(&s, Code::InvalidArgument, "spec.target");

    let s = refused(
        &agent,
        &mut c,
        experiment(ok_fault(), pid_target(agent.pid()), d),
    )
    .await;
    assert_refusal(&s, Code::PermissionDenied, "spec.target.pids[0]");
    let s = refused(&agent, &mut c, experiment(ok_fault(), pid_target(1), d)).await;
    assert_refusal(&s, Code::PermissionDenied, "spec.target.pids[0]");
    let s = refused(
        &agent,
        &mut c,
        experiment(
            ok_fault(),
            pb::Target {
                comm: "fl-protected".into(),
                ..Default::default()
            },
            d,
        ),
    )
    .await;
    assert_refusal(&s, Code::PermissionDenied, "spec.target.comm");

    // One good fault and one bad one: the whole experiment is refused.
    let mut req = experiment(ok_fault(), pid_target(me), d);
    req.spec
        .as_mut()
        .unwrap()
        .faults
        .push(syscall_signal("getppid", "NOPE", 1.0, 0).into());
    let s = refused(&agent, &mut c, req).await;
    assert_refusal(
        &s,
        Code::InvalidArgument,
        "spec.faults[1].syscall_signal.signal",
    );

    let list = c
        .list_experiments(pb::ListExperimentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        list.experiments.is_empty(),
        "no refused experiment may be recorded: {list:?}"
    );

    let s = c
        .get_experiment(pb::GetExperimentRequest {
            id: "exp-nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
    let s = c
        .stop_experiment(pb::StopExperimentRequest { id: String::new() })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn protected_processes_are_spared_even_inside_a_targeted_cgroup() {
    require_root().unwrap();
    let agent = Agent::start_with(&["--protected-comm", "fl-probe"]);
    let mut c = agent.client().await;
    let cg = TestCgroup::new("protected");
    let acc = Acceptor::new("127.0.0.1");
    start(
        &mut c,
        experiment(
            connect_error("ECONNREFUSED", 1.0, acc.addr.port(), ""),
            cgroup_target(&cg),
            Duration::from_secs(30),
        ),
    )
    .await;
    // fl-probe is protected by name: the in-kernel protected set spares it.
    let seen = probe(Some(&cg), "connect", acc.addr, 100);
    assert_eq!(
        seen.ok, 100,
        "a protected process must never be faulted: {seen:?}"
    );
}

#[tokio::test]
async fn the_default_duration_cap_is_one_hour() {
    require_root().unwrap();
    if in_vm() {
        eprintln!("SKIP in the VM: the duration cap is policy, the same on every kernel");
        return;
    }
    // No --max-duration: the embedded default applies.
    let agent = Agent::start();
    let mut c = agent.client().await;
    let cg = TestCgroup::new("cap");
    let fault = || connect_error("ECONNREFUSED", 1.0, 9, "");
    let hour = Duration::from_secs(3600);
    let s = refused(
        &agent,
        &mut c,
        experiment(fault(), cgroup_target(&cg), hour + Duration::from_secs(1)),
    )
    .await;
    assert_refusal(&s, Code::InvalidArgument, "spec.duration_ms");
    let exp = start(&mut c, experiment(fault(), cgroup_target(&cg), hour)).await;
    assert_eq!(
        exp.state(),
        pb::ExperimentState::Running,
        "1 h exactly is allowed"
    );
    c.stop_all(pb::StopAllRequest {}).await.unwrap();
}

#[tokio::test]
async fn the_limits_of_pids_labels_and_dns_faults() {
    require_root().unwrap();
    if in_vm() {
        eprintln!("SKIP in the VM: request limits are the same on every kernel");
        return;
    }
    let agent = Agent::start();
    let mut c = agent.client().await;
    let cg = TestCgroup::new("limits");
    let d = Duration::from_secs(60);
    let fault = || connect_error("ECONNREFUSED", 1.0, 9, "");

    // 64 target pids, real processes in the test cgroup: accepted; 65 not.
    let sleepers: Vec<ChildGuard> = (0..65)
        .map(|_| ChildGuard(cg.command("sleep").arg("60").spawn().unwrap()))
        .collect();
    let pids: Vec<u32> = sleepers.iter().map(|s| s.0.id()).collect();
    let target = |n: usize| pb::Target {
        pids: pids[..n].to_vec(),
        ..Default::default()
    };
    let s = refused(&agent, &mut c, experiment(fault(), target(65), d)).await;
    assert_refusal(&s, Code::InvalidArgument, "spec.target.pids");
    assert!(s.message().contains("64"), "{}", s.message());
    start(&mut c, experiment(fault(), target(64), d)).await;
    c.stop_all(pb::StopAllRequest {}).await.unwrap();
    drop(sleepers);

    // A dns_error domain of 8 labels is accepted, 9 are refused (README:
    // "up to 8 labels").
    let drop_in = |domain: &str| {
        experiment(
            dns_error(domain, pb::DnsFailure::Drop, 1.0, ""),
            cgroup_target(&cg),
            d,
        )
    };
    let s = refused(&agent, &mut c, drop_in("a.b.c.d.e.f.g.h.test")).await;
    assert_refusal(&s, Code::InvalidArgument, "spec.faults[0].dns_error.domain");
    start(&mut c, drop_in("b.c.d.e.f.g.h.test")).await;
    c.stop_all(pb::StopAllRequest {}).await.unwrap();

    // The kernel reads a name's first 128 wire bytes: a domain of 127
    // characters (128 wire bytes) could never match and is refused; 126 fit.
    let domain = |n: usize| format!("{}.{}", "x".repeat(63), "y".repeat(n - 64));
    let s = refused(&agent, &mut c, drop_in(&domain(127))).await;
    assert_refusal(&s, Code::InvalidArgument, "spec.faults[0].dns_error.domain");
    assert!(s.message().contains("at most 127"), "{}", s.message());
    start(&mut c, drop_in(&domain(126))).await;
    c.stop_all(pb::StopAllRequest {}).await.unwrap();

    // A bandwidth bucket smaller than a 64 KiB GSO packet and its headers
    // would drop every such packet: refused; the smallest that holds one
    // is accepted.
    let rate = |burst: u32| {
        experiment(
            bandwidth(10_000_000, burst, pb::Direction::Egress, any_packet()),
            cgroup_target(&cg),
            d,
        )
    };
    for burst in [1514, 65_536, 65_548] {
        let s = refused(&agent, &mut c, rate(burst)).await;
        assert_refusal(
            &s,
            Code::InvalidArgument,
            "spec.faults[0].bandwidth.burst_bytes",
        );
        assert!(s.message().contains("64 KiB GSO"), "{}", s.message());
    }
    start(&mut c, rate(65_549)).await;
    c.stop_all(pb::StopAllRequest {}).await.unwrap();

    // Experiment labels: the code's limit is 32 (the README names none).
    let mut req = experiment(fault(), cgroup_target(&cg), d);
    req.spec.as_mut().unwrap().labels = (0..33).map(|i| (format!("k{i}"), "v".into())).collect();
    let s = refused(&agent, &mut c, req.clone()).await;
    assert_refusal(&s, Code::InvalidArgument, "spec.labels");
    req.spec.as_mut().unwrap().labels.remove("k32");
    start(&mut c, req).await;
    c.stop_all(pb::StopAllRequest {}).await.unwrap();

    // Four DNS faults at once; a fifth is ResourceExhausted, and once one
    // ends there is room again.
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(start(&mut c, drop_in(&format!("n{i}.test"))).await.id);
    }
    let links = agent.links();
    let s = c
        .start_experiment(drop_in("n4.test"))
        .await
        .expect_err("a fifth DNS fault must be refused");
    assert_eq!(s.code(), Code::ResourceExhausted, "{}", s.message());
    assert_eq!(agent.links(), links, "the refusal attached nothing");
    c.stop_experiment(pb::StopExperimentRequest { id: ids[0].clone() })
        .await
        .unwrap();
    start(&mut c, drop_in("n4.test")).await;
}

#[tokio::test]
async fn a_fault_refused_at_arm_time_rolls_back_the_ones_already_armed() {
    require_root().unwrap();
    if in_vm() {
        eprintln!("SKIP in the VM: rollback is the engine's, the same on every kernel");
        return;
    }
    let agent = Agent::start();
    let mut c = agent.client().await;
    let cg = TestCgroup::new("rollback");
    let acc = Acceptor::new("127.0.0.1");
    let d = Duration::from_secs(60);
    let dns = |i: usize| dns_error(&format!("n{i}.test"), pb::DnsFailure::Drop, 1.0, "");
    // Fill the four DNS slots: a DNS fault passes validation and planning,
    // and is refused only when armed (its scan list is full).
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            start(&mut c, experiment(dns(i), cgroup_target(&cg), d))
                .await
                .id,
        );
    }
    let links = agent.links();

    // Fault 0, a connect error, arms first (it attaches the cgroup connect
    // hooks); fault 1 fails: fault 0 must be taken back.
    let mut req = experiment(
        connect_error("ECONNREFUSED", 1.0, acc.addr.port(), ""),
        cgroup_target(&cg),
        d,
    );
    req.spec.as_mut().unwrap().faults.push(dns(4).into());
    let s = c
        .start_experiment(req)
        .await
        .expect_err("the experiment must be refused when its second fault cannot arm");
    assert_eq!(s.code(), Code::ResourceExhausted, "{}", s.message());
    assert_eq!(
        agent.links(),
        links,
        "the connect hooks the first fault attached are gone again"
    );
    let seen = probe(Some(&cg), "connect", acc.addr, 50);
    assert_eq!(
        seen.ok, 50,
        "the rolled-back connect fault injects nothing: {seen:?}"
    );
    let running = running_experiments(&mut c).await;
    let mut running: Vec<String> = running.into_iter().map(|e| e.id).collect();
    running.sort();
    ids.sort();
    assert_eq!(running, ids, "only the four DNS experiments run");
}

#[tokio::test]
async fn a_protected_pid_is_refused_at_the_api() {
    require_root().unwrap();
    if in_vm() {
        eprintln!("SKIP in the VM: the API's policy check is the same on every kernel");
        return;
    }
    let cg = TestCgroup::new("protected-pid");
    let protected = ChildGuard(cg.command("sleep").arg("60").spawn().unwrap());
    let other = ChildGuard(cg.command("sleep").arg("60").spawn().unwrap());
    let pid = protected.0.id().to_string();
    let agent = Agent::start_with(&["--protected-pid", &pid]);
    let mut c = agent.client().await;
    let fault = || connect_error("ECONNREFUSED", 1.0, 9, "");
    let d = Duration::from_secs(30);
    let mut target = pid_target(other.0.id());
    target.pids.push(protected.0.id());
    let s = refused(&agent, &mut c, experiment(fault(), target, d)).await;
    assert_refusal(&s, Code::PermissionDenied, "spec.target.pids[1]");
    // The control: the same request without the protected pid is accepted.
    start(&mut c, experiment(fault(), pid_target(other.0.id()), d)).await;
}
