//! Packet loss and blackhole end to end: numbered UDP datagrams counted at
//! a real receiver (independent and bursty loss, in a cgroup's scope), a TCP
//! transfer recovering from loss, and TCP connects through a veth pair into a
//! test namespace cut by a blackhole. Traffic goes only to loopback and to addresses inside
//! namespaces these tests create.
#![expect(
    unused_crate_dependencies,
    reason = "each integration test is its own crate; the package's dependencies serve them all"
)]

use std::{
    net::{SocketAddr, UdpSocket},
    process::Command,
    time::Duration,
};

use faultline_proto::v1 as pb;
use faultline_tests::*;

/// Sends `count` numbered datagrams from a process (optionally in `cg`,
/// pinned to CPU 0) to `to`, and returns the sequence numbers that arrived.
fn send_numbered(
    cg: Option<&TestCgroup>,
    rx: &UdpSocket,
    count: u32,
) -> std::collections::BTreeSet<u32> {
    let to = rx.local_addr().unwrap();
    let receiver = rx.try_clone().unwrap();
    let handle =
        std::thread::spawn(move || receive_numbered(&receiver, Duration::from_millis(700)));
    let mut cmd = match cg {
        Some(cg) => cg.command("taskset"),
        None => Command::new("taskset"),
    };
    let out = cmd
        .args(["-c", "0"])
        .arg(bin("fl-probe"))
        .args(["udp-send", &to.to_string(), &count.to_string()])
        .output()
        .expect("run fl-probe udp-send");
    assert!(
        out.status.success(),
        "udp-send failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: ProbeResult = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        sent.ok,
        u64::from(count),
        "silent loss: the sender must see no error: {sent:?}"
    );
    handle.join().unwrap()
}

#[tokio::test]
async fn udp_loss_matches_the_configured_probability_and_stays_in_scope() {
    require_root().unwrap();
    let agent = Agent::start();
    let mut c = agent.client().await;
    let cg = TestCgroup::new("loss");
    let rx = udp_receiver("127.0.0.1");
    let port = rx.local_addr().unwrap().port();
    // Tolerances as tight as about 20,000 datagrams allow (a fraction of
    // a second each), for 1 % down to half a point.
    for (p, delta) in [(0.01, 0.005), (0.10, 0.015), (0.50, 0.02)] {
        let rate = RateCheck::new(p, delta);
        let n = rate.n32();
        let exp = start(
            &mut c,
            experiment(
                packet_loss(p, 0.0, pb::Direction::Egress, udp_to_port(port)),
                cgroup_target(&cg),
                Duration::from_secs(60),
            ),
        )
        .await;
        let seen = send_numbered(Some(&cg), &rx, n);
        let lost = rate.n - seen.len() as u64;
        rate.assert(lost, &format!("p={p}: datagrams lost"));
        let view = c
            .get_experiment(pb::GetExperimentRequest { id: exp.id.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            view.injected, lost,
            "p={p}: the kernel's drop counter equals the datagrams that did not arrive"
        );
        assert_eq!(
            view.matched, rate.n,
            "p={p}: every datagram of the flow matched"
        );

        if p == 0.50 {
            let outside = send_numbered(None, &rx, 5_000);
            assert_eq!(
                outside.len(),
                5_000,
                "a sender outside the cgroup loses nothing"
            );
            let other_rx = udp_receiver("127.0.0.1");
            let other_port = send_numbered(Some(&cg), &other_rx, 5_000);
            assert_eq!(
                other_port.len(),
                5_000,
                "another destination port loses nothing"
            );
        }
        c.stop_experiment(pb::StopExperimentRequest { id: exp.id })
            .await
            .unwrap();
    }

    // A CIDR filter: only 127.0.0.1 is in scope, 127.0.0.2 is not.
    let m = pb::PacketMatch {
        protocol: "udp".into(),
        dst_cidr: "127.0.0.1/32".into(),
        ..Default::default()
    };
    let rate = RateCheck::new(0.5, 0.05);
    start(
        &mut c,
        experiment(
            packet_loss(rate.p, 0.0, pb::Direction::Egress, m),
            cgroup_target(&cg),
            Duration::from_secs(60),
        ),
    )
    .await;
    let rx2 = udp_receiver("127.0.0.2");
    assert_eq!(
        send_numbered(Some(&cg), &rx2, 5_000).len(),
        5_000,
        "another CIDR loses nothing"
    );
    let seen = send_numbered(Some(&cg), &rx, rate.n32()).len() as u64;
    rate.assert(rate.n - seen, "the CIDR in scope loses at its rate");
}

/// Gilbert loss drops every datagram of its bad state, so losses come in
/// runs and a binomial bound on the mean loss would be far too narrow (the
/// variance of the count is (1+ρ)/(1-ρ) = 6.2 times the binomial one here).
/// The model's two transitions are independent trials, though: by the
/// Markov property, what follows each visit of a state is a fresh draw. So
/// the check is on them, with exact binomial bounds: after a lost datagram
/// the next is lost with 1 - 1/burst, after a delivered one with
/// p / burst / (1 - p). The two fix the mean loss, enter / (enter + leave),
/// for any stationary pattern. (The sender stays on one CPU: the state is
/// per CPU.)
#[tokio::test]
async fn bursty_loss_has_the_configured_mean_and_burst_length() {
    require_root().unwrap();
    let agent = Agent::start();
    let mut c = agent.client().await;
    let cg = TestCgroup::new("burst");
    let rx = udp_receiver("127.0.0.1");
    let port = rx.local_addr().unwrap().port();
    let (p, burst) = (0.10, 4.0);
    // Burst length within about ±0.5 packet; the mean loss within about
    // ±0.02 (an error of 0.05 moves `enter` by more than 0.013).
    let stay = RateCheck::new(1.0 - 1.0 / burst, 0.03);
    let enter = RateCheck::new(p / burst / (1.0 - p), 0.005);
    // Enough datagrams that the losses outnumber `stay.n` by five standard
    // deviations of their (burst-inflated) count.
    const N: u32 = 80_000;

    start(
        &mut c,
        experiment(
            packet_loss(p, burst, pb::Direction::Egress, udp_to_port(port)),
            cgroup_target(&cg),
            Duration::from_secs(60),
        ),
    )
    .await;
    let seen = send_numbered(Some(&cg), &rx, N);
    let lost = |s: u32| !seen.contains(&s);
    // What followed each lost and each delivered datagram, in order.
    let (after_loss, after_delivery): (Vec<_>, Vec<_>) = (0..N - 1)
        .map(|s| (lost(s), lost(s + 1)))
        .partition(|&(l, _)| l);
    let count = |v: &[(bool, bool)], check: &RateCheck, what: &str| {
        assert!(
            v.len() as u64 >= check.n,
            "only {} datagrams {what}, the check needs {}: the loss rate is off",
            v.len(),
            check.n
        );
        v[..check.n as usize]
            .iter()
            .filter(|&&(_, next)| next)
            .count() as u64
    };
    let stayed = count(&after_loss, &stay, "lost");
    let entered = count(&after_delivery, &enter, "delivered");
    let total = (0..N).filter(|&s| lost(s)).count();
    eprintln!(
        "bursty loss p={p} burst={burst}: lost {total} of {N}; next also lost {stayed} of {}, \
         a loss after a delivery {entered} of {}",
        stay.n, enter.n
    );
    stay.assert(
        stayed,
        "datagrams lost right after a lost one (burst length)",
    );
    enter.assert(
        entered,
        "datagrams lost right after a delivered one (mean loss)",
    );
}

#[tokio::test]
async fn blackhole_on_an_interface_partitions_one_cidr_and_lifts_at_once() {
    require_root().unwrap();
    let mut agent = Agent::start();
    if !supported_or_skip(&agent, "tcx").await {
        return;
    }
    let mut c = agent.client().await;
    let ns = TestNetns::new();
    let _acceptor = ns.spawn_acceptor("0.0.0.0:7000".parse().unwrap());
    let cut: SocketAddr = (ns.peer_ips[0], 7000).into();
    let other: SocketAddr = (ns.peer_ips[1], 7000).into();
    let t = Duration::from_millis(800);
    assert!(
        tcp_reachable(cut, t) && tcp_reachable(other, t),
        "both addresses answer before the fault"
    );

    let m = pb::PacketMatch {
        protocol: "tcp".into(),
        dst_cidr: format!("{}/32", ns.peer_ips[0]),
        ..Default::default()
    };
    let exp = start(
        &mut c,
        experiment(
            blackhole(pb::Direction::Egress, m.clone()),
            interface_target(&ns.host_if),
            Duration::from_secs(60),
        ),
    )
    .await;
    assert!(
        !tcp_reachable(cut, t),
        "a connect to the blackholed address must time out"
    );
    assert!(
        tcp_reachable(other, t),
        "another address behind the same interface still works"
    );
    let view = c
        .get_experiment(pb::GetExperimentRequest { id: exp.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(
        view.injected >= 1,
        "the SYNs were counted as dropped: {view:?}"
    );

    c.stop_experiment(pb::StopExperimentRequest { id: exp.id })
        .await
        .unwrap();
    assert!(tcp_reachable(cut, t), "removal restores the path at once");

    // Agent death lifts it too.
    start(
        &mut c,
        experiment(
            blackhole(pb::Direction::Egress, m),
            interface_target(&ns.host_if),
            Duration::from_secs(60),
        ),
    )
    .await;
    assert!(!tcp_reachable(cut, t));
    agent.kill();
    assert!(
        tcp_reachable(cut, t),
        "traffic is normal right after SIGKILL of the agent"
    );
}

#[tokio::test]
async fn tcp_transfer_completes_under_five_percent_loss_with_retransmissions() {
    require_root().unwrap();
    let agent = Agent::start();
    let mut c = agent.client().await;
    let cg = TestCgroup::new("tcp-loss");
    // The receiver runs in the cgroup and loses 5 % of what arrives: an
    // ingress drop is silent, so the sender sees real loss and retransmits.
    // (An egress drop in cgroup scope is reported to the local TCP stack,
    // which backs off and resends without counting a retransmission.)
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut cmd = cg.command(bin("fl-probe"));
    cmd.args(["tcp-sink", &addr.to_string()])
        .stderr(std::process::Stdio::piped());
    let sink = Listener::spawn(cmd);

    let m = pb::PacketMatch {
        protocol: "tcp".into(),
        dst_ports: port.to_string(),
        ..Default::default()
    };
    let exp = start(
        &mut c,
        experiment(
            packet_loss(0.05, 0.0, pb::Direction::Ingress, m),
            cgroup_target(&cg),
            Duration::from_secs(120),
        ),
    )
    .await;

    const BYTES: usize = 64 << 20;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(&mut s, &vec![7u8; BYTES]).unwrap();
    // Wait for the sink to read everything and close: by then every loss
    // was recovered, so the socket's retransmission count is final.
    s.shutdown(std::net::Shutdown::Write).unwrap();
    std::io::Read::read_to_end(&mut s, &mut Vec::new()).unwrap();
    let retrans = tcp_total_retrans(&s);
    drop(s);
    let report = sink.stderr();
    assert_eq!(
        report.trim(),
        format!("received {BYTES}"),
        "every byte arrives: TCP recovered the losses"
    );
    let view = c
        .get_experiment(pb::GetExperimentRequest { id: exp.id })
        .await
        .unwrap()
        .into_inner();
    eprintln!(
        "matched {} injected {} retransmitted {retrans}",
        view.matched, view.injected
    );
    // TCP decides how many segments pass (about 17 per MiB on loopback's
    // 64 KiB MTU), so the interval is sized for the count that came; it
    // must still tell 5 % from 0 % and 10 %.
    let rate = RateCheck::with_n(0.05, 0.05, view.matched);
    assert!(
        rate.miss() <= 0.01,
        "too few segments for the rate check: {rate:?}"
    );
    rate.assert(view.injected, "segments dropped at 5 %");
    // Every dropped data segment is sent again; a dropped pure ACK (the
    // handshake's last, the one for the sink's FIN) is not.
    assert!(
        u64::from(retrans) + 2 >= view.injected && retrans > 0,
        "the sender's own socket retransmitted what was dropped: {retrans} for {} drops",
        view.injected
    );
}

/// Loss on both sides of a TCX interface: numbered datagrams into a test
/// namespace (egress) and out of it (ingress), counted at the receiver,
/// lose the configured share within binomial bounds; the same flow through
/// another namespace's interface loses nothing, and the kernel's drop
/// counter equals what did not arrive.
#[tokio::test]
async fn loss_on_a_tcx_interface_matches_the_configured_probability_both_ways() {
    require_root().unwrap();
    if in_vm() {
        eprintln!(
            "SKIP in the VM: the TCX loss path is the same program on every kernel that has TCX"
        );
        return;
    }
    let agent = Agent::start();
    if !supported_or_skip(&agent, "tcx").await {
        return;
    }
    let mut c = agent.client().await;
    let ns = TestNetns::new();
    let other = TestNetns::new();
    const PORT: u16 = 7700;
    let p = 0.1;
    let rate = RateCheck::new(p, 0.015);
    let trials = rate.n32();

    // Egress: host → namespace, counted by a receiver inside it.
    let into = |ns: &TestNetns| {
        let to: SocketAddr = (ns.peer_ips[0], PORT).into();
        let rx = ns.probe_server(&["udp-count", &to.to_string(), "700"]);
        let sent = Command::new(bin("fl-probe"))
            .args(["udp-send", &to.to_string(), &trials.to_string()])
            .output()
            .unwrap();
        assert!(sent.status.success(), "{sent:?}");
        rx.result::<ProbeResult>().ok
    };
    // Ingress: namespace → host, counted by a receiver on the host side.
    let out_of = |ns: &TestNetns, rx: &UdpSocket| {
        let to = rx.local_addr().unwrap();
        let receiver = rx.try_clone().unwrap();
        let counted =
            std::thread::spawn(move || receive_numbered(&receiver, Duration::from_millis(700)));
        let sent = ns
            .command(bin("fl-probe"))
            .args(["udp-send", &to.to_string(), &trials.to_string()])
            .output()
            .unwrap();
        assert!(sent.status.success(), "{sent:?}");
        counted.join().unwrap().len() as u64
    };

    for direction in [pb::Direction::Egress, pb::Direction::Ingress] {
        // Ingress: receivers on the host side of both pairs, on one port,
        // so that only the interface differs.
        let rx = udp_receiver(&ns.host_ip.to_string());
        let port = if direction == pb::Direction::Egress {
            PORT
        } else {
            rx.local_addr().unwrap().port()
        };
        let exp = start(
            &mut c,
            experiment(
                packet_loss(p, 0.0, direction, udp_to_port(port)),
                interface_target(&ns.host_if),
                Duration::from_secs(60),
            ),
        )
        .await;
        assert_eq!(exp.faults[0].mechanism, "tcx", "{exp:?}");
        let (arrived, spared) = if direction == pb::Direction::Egress {
            (into(&ns), into(&other))
        } else {
            let rx_other = UdpSocket::bind((other.host_ip, port)).unwrap();
            force_receive_buffer(&rx_other);
            (out_of(&ns, &rx), out_of(&other, &rx_other))
        };
        let lost = u64::from(trials) - arrived;
        eprintln!(
            "TCX {direction:?} loss p={p}: lost {lost} of {trials}; \
             through the other interface {spared} of {trials} arrived"
        );
        rate.assert(lost, &format!("TCX {direction:?}: datagrams lost"));
        assert_eq!(
            spared,
            u64::from(trials),
            "{direction:?}: another interface loses nothing"
        );
        let view = c
            .get_experiment(pb::GetExperimentRequest { id: exp.id.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            view.injected, lost,
            "{direction:?}: the kernel counted every drop"
        );
        assert_eq!(
            view.matched,
            u64::from(trials),
            "{direction:?}: every datagram matched"
        );
        c.stop_experiment(pb::StopExperimentRequest { id: exp.id })
            .await
            .unwrap();
    }
}

/// Blackhole in cgroup scope, both ways: nothing the target sends to the
/// matched port arrives (and its sender sees no error), nothing sent to the
/// target's socket on that port reaches it; another port, and a process
/// outside the cgroup, lose nothing; StopExperiment lifts it at once.
#[tokio::test]
async fn blackhole_in_cgroup_scope_cuts_the_targets_flows_both_ways() {
    require_root().unwrap();
    if in_vm() {
        eprintln!("SKIP in the VM: the cgroup_skb drop path is the same on every kernel");
        return;
    }
    let agent = Agent::start();
    let mut c = agent.client().await;
    let cg = TestCgroup::new("blackhole");
    let rx = udp_receiver("127.0.0.1");
    let rx_other = udp_receiver("127.0.0.1");
    let port = rx.local_addr().unwrap().port();
    const N: u32 = 2_000;

    // The target's own receiver, on the matched port of another address.
    let target_rx: SocketAddr = ([127, 0, 0, 2], port).into();
    let mut cmd = cg.command(bin("fl-probe"));
    cmd.args(["udp-count", &target_rx.to_string(), "700"]);
    let target = Listener::spawn(cmd);

    let exp = start(
        &mut c,
        experiment(
            blackhole(pb::Direction::Both, udp_to_port(port)),
            cgroup_target(&cg),
            Duration::from_secs(60),
        ),
    )
    .await;
    let egress = send_numbered(Some(&cg), &rx, N);
    assert!(
        egress.is_empty(),
        "none of the target's datagrams arrive: {} did",
        egress.len()
    );
    assert_eq!(
        send_numbered(Some(&cg), &rx_other, N).len(),
        N as usize,
        "the target's datagrams to another port all arrive"
    );
    assert_eq!(
        send_numbered(None, &rx, N).len(),
        N as usize,
        "a sender outside the cgroup loses nothing"
    );
    // Into the target: the receiver waits for its first datagram, so a
    // flow it never sees leaves no trace until the second one, sent after
    // the stop: it must count each number once, with no repeats.
    let send_to_target = || {
        let out = Command::new(bin("fl-probe"))
            .args(["udp-send", &target_rx.to_string(), &N.to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    send_to_target();
    let view = c
        .get_experiment(pb::GetExperimentRequest { id: exp.id.clone() })
        .await
        .unwrap()
        .into_inner();
    c.stop_experiment(pb::StopExperimentRequest { id: exp.id })
        .await
        .unwrap();
    send_to_target();
    let into: ProbeResult = target.result();
    assert_eq!(
        (into.ok, into.errno("repeats")),
        (u64::from(N), 0),
        "the target received only the flow sent after the stop: {into:?}"
    );
    assert_eq!(
        view.injected,
        2 * u64::from(N),
        "the kernel dropped the target's flow and the flow into it: {view:?}"
    );
    assert_eq!(
        send_numbered(Some(&cg), &rx, N).len(),
        N as usize,
        "after the stop the target's datagrams arrive"
    );
}

/// IPv6 extension headers are walked to the TCP header: a connection
/// whose every packet carries a destination-options header, to a port an
/// `sshd` listens on, passes a cgroup-wide blackhole; the same to a control
/// port is cut. (Read at a fixed 40 bytes, the ports would be the
/// extension header's bytes, and the SSH connection cut.)
#[tokio::test]
async fn ssh_behind_an_ipv6_extension_header_is_still_spared() {
    require_root().unwrap();
    let agent = Agent::start();
    let mut c = agent.client().await;
    let cg = TestCgroup::new("ssh-ext-header");
    let acceptor = |comm: &str, port: u16| {
        spawn_named(comm, |exe| {
            let mut cmd = Command::new(exe);
            cmd.args(["accept", &format!("[::1]:{port}")]);
            cmd
        })
    };
    let _sshd = acceptor("sshd", 2422);
    let _control = acceptor("fl-control", 2423);
    start(
        &mut c,
        experiment(
            blackhole(pb::Direction::Both, any_packet()),
            cgroup_target(&cg),
            Duration::from_secs(60),
        ),
    )
    .await;
    let connect = |port: u16| {
        let out = cg
            .command(bin("fl-probe"))
            .args(["connect-dstopts", &format!("[::1]:{port}")])
            .output()
            .expect("run fl-probe connect-dstopts");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_ne!(connect(2423), "ok", "the control port is blackholed");
    assert_eq!(
        connect(2422),
        "ok",
        "sshd's port is spared behind the extension header"
    );
}
