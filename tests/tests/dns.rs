//! `dns_error` end to end: a tiny DNS server (UDP and TCP) inside a test
//! network namespace, a client on the host, and the answers it really got.
#![expect(
    unused_crate_dependencies,
    reason = "each integration test is its own crate; the package's dependencies serve them all"
)]

use std::{net::SocketAddr, process::Command, time::Duration};

use faultline_proto::v1 as pb;
use faultline_tests::*;

fn dns_error(domain: &str, failure: pb::DnsFailure, probability: f64) -> pb::FaultSpec {
    pb::FaultSpec {
        kind: Some(pb::fault_spec::Kind::DnsError(pb::DnsError {
            domain: domain.into(),
            failure: failure.into(),
            probability,
            resolver_cidr: String::new(),
        })),
    }
}

/// `fl-probe dns-query`, from `cgroup` (or none), over UDP or TCP.
fn query(
    cg: Option<&TestCgroup>,
    server: SocketAddr,
    name: &str,
    n: u16,
    tcp: bool,
) -> ProbeResult {
    let mut cmd = match cg {
        Some(cg) => cg.command(bin("fl-probe")),
        None => Command::new(bin("fl-probe")),
    };
    cmd.args(["dns-query", &server.to_string(), name, &n.to_string()]);
    if tcp {
        cmd.arg("tcp");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A DNS server at the namespace's first peer address, port 53.
fn resolver(ns: &TestNetns) -> (Listener, SocketAddr) {
    (
        ns.probe_server(&["dns-serve", "0.0.0.0:53"]),
        (ns.peer_ips[0], 53).into(),
    )
}

#[tokio::test]
async fn dns_error_answers_nxdomain_or_servfail_for_names_in_the_domain() {
    require_root().unwrap();
    let mut agent = Agent::start();
    if !supported_or_skip(&agent, "tcx").await {
        return;
    }
    let mut c = agent.client().await;
    let ns = TestNetns::new();
    let (_server, server) = resolver(&ns);
    for name in ["a.blocked.test", "ok.test"] {
        let r = query(None, server, name, 20, false);
        assert_eq!(r.ok, 20, "{name} resolves before the fault: {r:?}");
    }

    let exp = start(
        &mut c,
        experiment(
            dns_error("blocked.test", pb::DnsFailure::Nxdomain, 1.0),
            interface_target(&ns.host_if),
            Duration::from_secs(60),
        ),
    )
    .await;
    for name in ["a.blocked.test", "blocked.test", "X.Y.BLOCKED.TEST"] {
        let r = query(None, server, name, 50, false);
        assert_eq!(
            r.errno("NXDOMAIN"),
            50,
            "{name} is answered NXDOMAIN: {r:?}"
        );
    }
    for name in ["notblocked.test", "ok.test", "blocked.test.example"] {
        let r = query(None, server, name, 50, false);
        assert_eq!(r.ok, 50, "{name} is outside the domain and resolves: {r:?}");
    }
    let status = c
        .get_experiment(pb::GetExperimentRequest { id: exp.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.injected, 150,
        "the kernel answered exactly the matching queries: {status:?}"
    );
    c.stop_experiment(pb::StopExperimentRequest { id: exp.id })
        .await
        .unwrap();
    let r = query(None, server, "a.blocked.test", 20, false);
    assert_eq!(r.ok, 20, "stop lifts the fault at once: {r:?}");

    // SERVFAIL for half of every name.
    let rate = RateCheck::new(0.5, 0.05);
    let n = u16::try_from(rate.n).unwrap();
    start(
        &mut c,
        experiment(
            dns_error("", pb::DnsFailure::Servfail, rate.p),
            interface_target(&ns.host_if),
            Duration::from_secs(60),
        ),
    )
    .await;
    let r = query(None, server, "anything.example", n, false);
    rate.assert(r.errno("SERVFAIL"), &format!("SERVFAIL answers ({r:?})"));
    assert_eq!(r.ok + r.errno("SERVFAIL"), rate.n, "{r:?}");

    agent.kill();
    let r = query(None, server, "anything.example", 50, false);
    assert_eq!(r.ok, 50, "queries resolve once the agent died: {r:?}");
}

#[tokio::test]
async fn dns_error_drops_the_queries_of_a_cgroup_over_udp_and_tcp() {
    require_root().unwrap();
    let agent = Agent::start();
    let mut c = agent.client().await;
    let ns = TestNetns::new();
    let (_server, server) = resolver(&ns);
    let cg = TestCgroup::new("dns");

    // Answers need a packet the program may rewrite: not in cgroup scope.
    let err = c
        .start_experiment(experiment(
            dns_error("blocked.test", pb::DnsFailure::Nxdomain, 1.0),
            cgroup_target(&cg),
            Duration::from_secs(10),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message()
            .starts_with("spec.faults[0].dns_error.failure"),
        "{}",
        err.message()
    );
    let err = c
        .start_experiment(experiment(
            dns_error("bad..name", pb::DnsFailure::Drop, 1.0),
            cgroup_target(&cg),
            Duration::from_secs(10),
        ))
        .await
        .unwrap_err();
    assert!(
        err.message().starts_with("spec.faults[0].dns_error.domain"),
        "{}",
        err.message()
    );

    let exp = start(
        &mut c,
        experiment(
            dns_error("blocked.test", pb::DnsFailure::Drop, 1.0),
            cgroup_target(&cg),
            Duration::from_secs(60),
        ),
    )
    .await;
    let udp = query(Some(&cg), server, "www.blocked.test", 5, false);
    assert_eq!(
        udp.errno("timeout"),
        5,
        "UDP queries of the cgroup are lost: {udp:?}"
    );
    let tcp = query(Some(&cg), server, "www.blocked.test", 3, true);
    assert_eq!(
        tcp.errno("timeout"),
        3,
        "TCP queries of the cgroup are lost: {tcp:?}"
    );
    let other = query(Some(&cg), server, "www.ok.test", 20, false);
    assert_eq!(other.ok, 20, "other names resolve: {other:?}");
    let other_tcp = query(Some(&cg), server, "www.ok.test", 5, true);
    assert_eq!(
        other_tcp.ok, 5,
        "other names resolve over TCP: {other_tcp:?}"
    );
    let outside = query(None, server, "www.blocked.test", 20, false);
    assert_eq!(
        outside.ok, 20,
        "processes outside the cgroup resolve: {outside:?}"
    );
    let status = c
        .get_experiment(pb::GetExperimentRequest { id: exp.id })
        .await
        .unwrap()
        .into_inner();
    // UDP: one packet per query; TCP: the data segment and its retransmissions.
    assert!(status.injected >= 8, "{status:?}");
}
