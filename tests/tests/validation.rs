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
