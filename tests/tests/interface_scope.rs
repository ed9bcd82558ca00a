//! Where the packet faults apply: the scope rules (a cgroup or an
//! interface, never SSH), every interface fault kind vanishing with the
//! agent, and interface scope on cgroup_skb where TCX is missing.
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
async fn network_faults_need_a_cgroup_or_interface_and_never_touch_ssh() {
    require_root().unwrap();
    let agent = Agent::start();
    let mut c = agent.client().await;
    let s = c
        .start_experiment(experiment(
            blackhole(pb::Direction::Egress, any_packet()),
            pid_target(std::process::id()),
            Duration::from_secs(10),
        ))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    assert!(
        s.message().starts_with("spec.faults[0].blackhole"),
        "{}",
        s.message()
    );
    let s = c
        .start_experiment(experiment(
            blackhole(pb::Direction::Egress, any_packet()),
            interface_target("nosuchif0"),
            Duration::from_secs(10),
        ))
        .await
        .unwrap_err();
    assert!(
        s.message().starts_with("spec.target.interface"),
        "{}",
        s.message()
    );
    assert!(agent.links().is_empty());

    if !supported_or_skip(&agent, "tcx").await {
        return;
    }
    // Everything to the namespace is blackholed, except SSH.
    let ns = TestNetns::new();
    let _ssh = ns.spawn_acceptor("0.0.0.0:22".parse().unwrap());
    let _web = ns.spawn_acceptor("0.0.0.0:80".parse().unwrap());
    start(
        &mut c,
        experiment(
            blackhole(pb::Direction::Both, any_packet()),
            interface_target(&ns.host_if),
            Duration::from_secs(60),
        ),
    )
    .await;
    let t = Duration::from_millis(800);
    assert!(
        !tcp_reachable((ns.peer_ips[0], 80).into(), t),
        "port 80 is blackholed"
    );
    assert!(
        tcp_reachable((ns.peer_ips[0], 22).into(), t),
        "SSH must never be cut unless the spec says so"
    );
}

/// The SSH exemption covers the ports sshd really listens on, found when
/// an experiment starts (so a restarted sshd on a new port is covered from
/// the next start on), and the configured `ssh_ports`: an acceptor named
/// `sshd` on a port other than 22 keeps answering through a blackhole that
/// cuts a control port.
#[tokio::test]
async fn sshd_on_any_port_and_the_configured_ssh_ports_are_spared() {
    require_root().unwrap();
    // The agent's directory (removed with the agent) holds the config too.
    let dir = std::env::temp_dir().join(format!("faultline-agent-ssh-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("ssh.toml");
    std::fs::write(&config, "ssh_ports = [22, 2325]\n").unwrap();
    let agent = Agent::start_in(dir, &["--config", config.to_str().unwrap()]);
    if !supported_or_skip(&agent, "tcx").await {
        return;
    }
    let mut c = agent.client().await;
    let ns = TestNetns::new();
    let any = |port: u16| -> SocketAddr { ([0, 0, 0, 0], port).into() };
    let to = |port: u16| -> SocketAddr { (ns.peer_ips[0], port).into() };
    let sshd = ns.spawn_acceptor_as("sshd", any(2322));
    let _control = ns.spawn_acceptor(any(2323));
    let _configured = ns.spawn_acceptor(any(2325));
    let blackhole_ns = || {
        experiment(
            blackhole(pb::Direction::Both, any_packet()),
            interface_target(&ns.host_if),
            Duration::from_secs(60),
        )
    };
    start(&mut c, blackhole_ns()).await;
    let t = Duration::from_millis(800);
    assert!(
        !tcp_reachable(to(2323), t),
        "the control port is blackholed"
    );
    assert!(tcp_reachable(to(2322), t), "sshd's port (not 22) is spared");
    assert!(
        tcp_reachable(to(2325), t),
        "a configured ssh_ports entry is spared"
    );

    // sshd restarts on another port: spared from the next experiment's start.
    drop(sshd);
    let _sshd = ns.spawn_acceptor_as("sshd", any(2324));
    assert!(
        !tcp_reachable(to(2324), t),
        "not yet found: the ports are looked up when an experiment starts"
    );
    start(&mut c, blackhole_ns()).await;
    assert!(
        tcp_reachable(to(2324), t),
        "the restarted sshd's port is spared"
    );
    assert!(
        !tcp_reachable(to(2323), t),
        "the control port is still blackholed"
    );
}

/// Numbered datagrams from the host to `ns`'s first address on `port`, as
/// the receiver inside the namespace counted them.
fn numbered_flow(ns: &TestNetns, port: u16, count: u32) -> ProbeResult {
    let to: SocketAddr = (ns.peer_ips[0], port).into();
    let rx = ns.probe_server(&["udp-count", &to.to_string(), "700"]);
    let sent = Command::new(bin("fl-probe"))
        .args(["udp-send", &to.to_string(), &count.to_string()])
        .output()
        .unwrap();
    assert!(sent.status.success(), "{sent:?}");
    rx.result()
}

/// Payload bytes that arrived in `ns` on `port` from a host sender
/// blasting 1200-byte datagrams as fast as it can for one second.
fn blasted_bytes(ns: &TestNetns, port: u16) -> u64 {
    let to: SocketAddr = (ns.peer_ips[0], port).into();
    let rx = ns.probe_server(&["udp-count", &to.to_string(), "700"]);
    let sent = Command::new(bin("fl-probe"))
        .args(["udp-blast", &to.to_string(), "1", "1200"])
        .output()
        .unwrap();
    assert!(sent.status.success(), "{sent:?}");
    rx.result::<ProbeResult>().errno("bytes")
}

/// Median RTT in ms of 200 ping-pongs from the host to `to` (as in
/// latency.rs).
fn median_rtt_ms(to: SocketAddr) -> f64 {
    let out = Command::new(bin("fl-probe"))
        .args(["udp-rtt", &to.to_string(), "200"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let r: ProbeResult = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r.ok, 200, "every ping answered: {:?}", r.errors);
    let mut v = r.rtt_us;
    v.sort_by(f64::total_cmp);
    v[v.len() / 2] / 1e3
}

/// SIGKILL of the agent while every packet fault kind is active on an
/// interface, each kind on its own port and shown active first: loss,
/// duplicates and corruption on numbered datagrams; a bandwidth limit on
/// a blast, measured at the receiver; latency (where fq runs) on
/// ping-pongs. Right after the kill each effect is gone.
#[tokio::test]
async fn every_interface_fault_kind_vanishes_with_the_agent() {
    require_root().unwrap();
    let mut agent = Agent::start();
    if !supported_or_skip(&agent, "tcx").await {
        return;
    }
    let (fq, _) = capability(&agent, "tcx+fq").await;
    let mut c = agent.client().await;
    let ns = TestNetns::new();
    const PORT: u16 = 7500;
    const BW_PORT: u16 = 7501;
    const RTT_PORT: u16 = 7502;
    let m = || Some(udp_to_port(PORT));
    let egress = pb::Direction::Egress.into();
    // 200 kbit/s with the smallest burst accepted (the bucket holds at most
    // that, and at most one second's refill). What a one-second blast may
    // deliver, policed (rate x 1 s + the bucket) or shaped by fq (rate x
    // (1 s + its 2 s horizon)), is bounded by rate x 3 s + burst. Payload
    // bytes are counted, so this bound is above what the limiter counts.
    const RATE_BITS: u64 = 200_000;
    const BURST: u32 = 65_549;
    let bw_cap = (RATE_BITS / 8 * 3 + u64::from(BURST)) as f64;
    const DELAY_MS: f64 = 5.0;
    let mut faults = vec![
        packet_loss(0.3, 0.0, pb::Direction::Egress, udp_to_port(PORT)).into(),
        pb::FaultSpec {
            kind: Some(pb::fault_spec::Kind::Duplicate(pb::Duplicate {
                probability: 0.3,
                direction: egress,
                r#match: m(),
            })),
        },
        pb::FaultSpec {
            kind: Some(pb::fault_spec::Kind::Corrupt(pb::Corrupt {
                probability: 0.3,
                recompute_checksums: true,
                direction: egress,
                r#match: m(),
            })),
        },
        bandwidth(
            RATE_BITS,
            BURST,
            pb::Direction::Egress,
            udp_to_port(BW_PORT),
        )
        .into(),
    ];
    let echo_at: SocketAddr = (ns.peer_ips[0], RTT_PORT).into();
    let _echo = ns.probe_server(&["udp-echo", &format!("0.0.0.0:{RTT_PORT}")]);
    let base_rtt = fq.then(|| median_rtt_ms(echo_at));
    if fq {
        faults.push(latency(DELAY_MS, 0.0, udp_to_port(RTT_PORT)).into());
    }
    start(
        &mut c,
        pb::StartExperimentRequest {
            spec: Some(pb::ExperimentSpec {
                impact: 0,
                name: "all-kinds".into(),
                faults,
                target: Some(interface_target(&ns.host_if)),
                duration_ms: 60_000,
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    const N: u32 = 2000;
    let during = numbered_flow(&ns, PORT, N);
    assert!(
        during.ok < u64::from(N) && during.errno("repeats") > 0 && during.errno("corrupted") > 0,
        "loss, duplicates and corruption are active: {during:?}"
    );
    let limited = blasted_bytes(&ns, BW_PORT) as f64;
    assert!(
        limited > 0.0 && limited <= bw_cap,
        "the bandwidth limit is active: {limited} bytes arrived, at most {bw_cap} may"
    );
    if let Some(base) = base_rtt {
        let added = median_rtt_ms(echo_at) - base;
        // As latency.rs: never early by more than 1 ms; a busy host's guest
        // timers fire late, so the VM allows 3 ms late.
        let late = if in_vm() { 3.0 } else { 1.0 };
        assert!(
            added >= DELAY_MS - 1.0 && added <= DELAY_MS + late,
            "the latency is active: added {added:.3} ms, want {DELAY_MS} -1/+{late}"
        );
    }
    // Egress faults only: the egress TCX link alone, shared by all of them.
    assert_eq!(
        agent.links().len(),
        1,
        "one link for the egress side: {:?}",
        agent.links()
    );
    // The default config keeps the TCX hooks on with two links of its own.
    let keepers = agent.keeper_links();
    assert_eq!(keepers.len(), 2, "ingress and egress keeper links");
    agent.kill();
    let after = numbered_flow(&ns, PORT, N);
    assert_eq!(after.ok, u64::from(N), "every datagram arrives: {after:?}");
    assert_eq!(after.errno("repeats"), 0, "none twice: {after:?}");
    assert_eq!(after.errno("corrupted"), 0, "none corrupted: {after:?}");
    let free = blasted_bytes(&ns, BW_PORT) as f64;
    eprintln!("bandwidth: {limited} bytes in a 1 s blast while limited, {free} after the kill");
    assert!(
        free > 2.0 * bw_cap,
        "no bandwidth limit: {free} bytes arrived in 1 s, limited {limited}"
    );
    if let Some(base) = base_rtt {
        let added = median_rtt_ms(echo_at) - base;
        // Half the delay: far from it, yet clear of the VM's timer noise.
        assert!(
            added < DELAY_MS / 2.0,
            "no latency: added {added:.3} ms of {DELAY_MS}"
        );
    }
    assert!(
        wait_for(Duration::from_secs(5), || {
            let live = live_links();
            keepers.iter().all(|l| !live.contains(l))
        }),
        "the keeper links (and their private namespace) went with the agent: {keepers:?}"
    );
}

/// Interface scope on the cgroup_skb programs, the only way on kernels
/// without TCX (Debian 12's 6.1); forced here by configuration so that
/// every kernel runs it. Loss on one interface's egress lies within the
/// binomial bounds and spares another interface; an ingress blackhole
/// partitions TCP; kinds that need TCX are refused with the reason; the
/// faults vanish with the agent.
#[tokio::test]
async fn interface_faults_run_on_cgroup_skb_where_tcx_is_missing() {
    require_root().unwrap();
    if in_vm() && expected("tcx") {
        eprintln!(
            "skipped: this guest has tcx; the forced fallback runs on the host and in the 6.1 guest"
        );
        return;
    }
    let mut agent = Agent::start_with(&["--interface-hooks", "cgroup_skb"]);
    if !supported_or_skip(&agent, "cgroup_skb").await {
        return;
    }
    let mut c = agent.client().await;
    let ns = TestNetns::new();
    let other = TestNetns::new();
    const PORT: u16 = 7600;
    let rate = RateCheck::new(0.1, 0.015);
    let (p, n) = (rate.p, rate.n32());

    // Loss on ns's interface: the datagrams local sockets send through it.
    let exp = start(
        &mut c,
        experiment(
            packet_loss(p, 0.0, pb::Direction::Egress, udp_to_port(PORT)),
            interface_target(&ns.host_if),
            Duration::from_secs(120),
        ),
    )
    .await;
    assert_eq!(exp.faults[0].mechanism, "cgroup_skb", "{exp:?}");
    let hit = numbered_flow(&ns, PORT, n);
    let spared = numbered_flow(&other, PORT, n);
    let lost = rate.n - hit.ok;
    eprintln!(
        "cgroup_skb interface loss p={p}: lost {lost} of {n} ({}..={}); the other interface received {}",
        rate.lo, rate.hi, spared.ok
    );
    rate.assert(lost, "datagrams lost on the faulted interface");
    assert_eq!(spared.ok, rate.n, "another interface loses nothing");
    let view = c
        .get_experiment(pb::GetExperimentRequest { id: exp.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(view.injected, lost, "the kernel counted every drop");
    c.stop_experiment(pb::StopExperimentRequest { id: exp.id })
        .await
        .unwrap();

    // Ingress blackhole: the SYN-ACKs from ns never reach the connecting
    // socket; the same connect into `other` works.
    let _a = ns.spawn_acceptor("0.0.0.0:7601".parse().unwrap());
    let _b = other.spawn_acceptor("0.0.0.0:7601".parse().unwrap());
    let into_ns: SocketAddr = (ns.peer_ips[0], 7601).into();
    let into_other: SocketAddr = (other.peer_ips[0], 7601).into();
    assert!(tcp_reachable(into_ns, Duration::from_secs(2)));
    let exp = start(
        &mut c,
        experiment(
            blackhole(pb::Direction::Ingress, any_packet()),
            interface_target(&ns.host_if),
            Duration::from_secs(120),
        ),
    )
    .await;
    assert!(
        !tcp_reachable(into_ns, Duration::from_secs(1)),
        "connect through the blackholed interface times out"
    );
    assert!(tcp_reachable(into_other, Duration::from_secs(2)));
    c.stop_experiment(pb::StopExperimentRequest { id: exp.id })
        .await
        .unwrap();
    assert!(
        tcp_reachable(into_ns, Duration::from_secs(2)),
        "stop lifts the partition at once"
    );

    // Copying a packet needs TCX: refused, naming the fault and the reason.
    let s = c
        .start_experiment(experiment(
            pb::FaultSpec {
                kind: Some(pb::fault_spec::Kind::Duplicate(pb::Duplicate {
                    probability: 0.5,
                    direction: pb::Direction::Egress.into(),
                    r#match: Some(udp_to_port(PORT)),
                })),
            },
            interface_target(&ns.host_if),
            Duration::from_secs(10),
        ))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::FailedPrecondition, "{s:?}");
    assert!(
        s.message().starts_with("spec.faults[0].duplicate") && s.message().contains("cgroup_skb"),
        "{}",
        s.message()
    );

    // The capability rows say what interface scope runs on here.
    let caps = c
        .get_capabilities(pb::GetCapabilitiesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        caps.capabilities
            .iter()
            .any(|r| r.fault_kind == "packet_loss"
                && r.mechanism == "cgroup_skb"
                && r.covers.iter().any(|c| c == "interface scope")
                && r.supported),
        "{caps:?}"
    );

    // SIGKILL with 50 % loss armed: the next flow is whole.
    start(
        &mut c,
        experiment(
            packet_loss(0.5, 0.0, pb::Direction::Egress, udp_to_port(PORT)),
            interface_target(&ns.host_if),
            Duration::from_secs(120),
        ),
    )
    .await;
    let during = numbered_flow(&ns, PORT, 2000);
    assert!(during.ok < 1500, "the fault is active: {during:?}");
    agent.kill();
    let after = numbered_flow(&ns, PORT, 2000);
    assert_eq!(after.ok, 2000, "every datagram arrives: {after:?}");
}
