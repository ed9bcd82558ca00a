//! Duplicate and corrupt end to end: numbered UDP datagrams through a veth
//! pair into a test namespace, counted by the receiver there (repeats,
//! corrupted payloads) and by the namespace's checksum counters.
//! Traffic goes only to loopback and to addresses inside
//! namespaces these tests create.
#![expect(
    unused_crate_dependencies,
    reason = "each integration test is its own crate; the package's dependencies serve them all"
)]

use std::{net::SocketAddr, process::Command, time::Duration};

use faultline_proto::v1 as pb;
use faultline_tests::*;

#[tokio::test]
async fn duplication_on_an_interface_matches_the_configured_fraction() {
    require_root().unwrap();
    let agent = Agent::start();
    if !supported_or_skip(&agent, "tcx").await {
        return;
    }
    let mut c = agent.client().await;
    let ns = TestNetns::new();
    let to: SocketAddr = (ns.peer_ips[0], 9000).into();

    // Duplicate is interface-only: a cgroup scope is refused.
    let cg = TestCgroup::new("dup");
    let dup = |p| pb::FaultSpec {
        kind: Some(pb::fault_spec::Kind::Duplicate(pb::Duplicate {
            probability: p,
            direction: pb::Direction::Egress.into(),
            r#match: Some(udp_to_port(9000)),
        })),
    };
    let s = c
        .start_experiment(experiment(
            dup(0.2),
            cgroup_target(&cg),
            Duration::from_secs(30),
        ))
        .await
        .unwrap_err();
    assert!(
        s.message().starts_with("spec.faults[0].duplicate"),
        "{}",
        s.message()
    );

    let rate = RateCheck::new(0.2, 0.02);
    start(
        &mut c,
        experiment(
            dup(rate.p),
            interface_target(&ns.host_if),
            Duration::from_secs(60),
        ),
    )
    .await;
    let got = udp_through_veth(&ns, to, rate.n32());
    assert_eq!(
        got.ok, rate.n,
        "every datagram arrives at least once: {got:?}"
    );
    rate.assert(got.errno("repeats"), "datagrams duplicated");
}

/// Sends `n` numbered datagrams from the root namespace to `to` inside `ns`
/// and returns what the receiver there counted.
fn udp_through_veth(ns: &TestNetns, to: SocketAddr, n: u32) -> ProbeResult {
    let rx = ns.probe_server(&["udp-count", &to.to_string(), "700"]);
    let sent = Command::new("taskset")
        .args(["-c", "0"])
        .arg(bin("fl-probe"))
        .args(["udp-send", &to.to_string(), &n.to_string()])
        .output()
        .unwrap();
    assert!(sent.status.success());
    rx.result()
}

/// `IpExt: InCsumErrors` inside the namespace: IPv4 headers that failed
/// their checksum on receipt.
fn ip_csum_errors(ns: &TestNetns) -> u64 {
    let out = ns.command("cat").arg("/proc/net/netstat").output().unwrap();
    proc_net_counter(
        &String::from_utf8(out.stdout).unwrap(),
        "IpExt:",
        "InCsumErrors",
    )
}

#[tokio::test]
async fn corruption_is_dropped_by_the_receiver_or_delivered_with_fixed_checksums() {
    require_root().unwrap();
    let agent = Agent::start();
    if !supported_or_skip(&agent, "tcx").await {
        return;
    }
    let mut c = agent.client().await;
    let ns = TestNetns::new();
    let to: SocketAddr = (ns.peer_ips[0], 9100).into();
    let rate = RateCheck::new(0.1, 0.015);
    let n = rate.n32();
    let corrupt = |recompute| pb::FaultSpec {
        kind: Some(pb::fault_spec::Kind::Corrupt(pb::Corrupt {
            probability: rate.p,
            recompute_checksums: recompute,
            direction: pb::Direction::Egress.into(),
            r#match: Some(udp_to_port(9100)),
        })),
    };

    // Checksums left wrong: the receiver's IP layer drops them and counts.
    let exp = start(
        &mut c,
        experiment(
            corrupt(false),
            interface_target(&ns.host_if),
            Duration::from_secs(60),
        ),
    )
    .await;
    let before = ip_csum_errors(&ns);
    let got = udp_through_veth(&ns, to, n);
    let bad = ip_csum_errors(&ns) - before;
    rate.assert(bad, "checksum errors at the receiver");
    assert_eq!(
        got.ok + bad,
        rate.n,
        "every datagram either arrived intact or failed its checksum: {got:?}"
    );
    assert_eq!(
        got.errno("corrupted"),
        0,
        "no corrupted data reaches the application: {got:?}"
    );
    let view = c
        .get_experiment(pb::GetExperimentRequest { id: exp.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        view.injected, bad,
        "the kernel's counter equals the receiver's checksum errors"
    );
    c.stop_experiment(pb::StopExperimentRequest { id: exp.id })
        .await
        .unwrap();

    // Checksums recomputed: corrupted datagrams are delivered.
    start(
        &mut c,
        experiment(
            corrupt(true),
            interface_target(&ns.host_if),
            Duration::from_secs(60),
        ),
    )
    .await;
    let got = udp_through_veth(&ns, to, n);
    let corrupted = got.errno("corrupted");
    rate.assert(corrupted, "corrupted deliveries");
    assert_eq!(got.ok + corrupted, rate.n, "{got:?}");
}
