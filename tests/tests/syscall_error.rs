//! `syscall_error` on socket calls, end to end: a real agent, a real cgroup,
//! a real target process, and the errno that process saw.
#![expect(
    unused_crate_dependencies,
    reason = "each integration test is its own crate; the package's dependencies serve them all"
)]

use std::time::Duration;

use faultline_tests::*;

#[tokio::test]
async fn connect_fails_at_configured_probability_only_inside_the_cgroup() {
    require_root().unwrap();
    let agent = Agent::start();
    let mut client = agent.client().await;
    let cg = TestCgroup::new("connect");
    let target = Acceptor::new("127.0.0.1");
    let other_port = Acceptor::new("127.0.0.1");
    let rate = RateCheck::new(0.5, 0.05);
    let calls = rate.n;

    let exp = start(
        &mut client,
        experiment(
            connect_error("ECONNREFUSED", rate.p, target.addr.port(), ""),
            cgroup_target(&cg),
            Duration::from_secs(60),
        ),
    )
    .await;

    let inside = probe(Some(&cg), "connect", target.addr, calls);
    rate.assert(
        inside.errno("ECONNREFUSED"),
        &format!("connects refused inside the cgroup ({inside:?})"),
    );
    assert_eq!(inside.total(), calls);
    assert_eq!(
        inside.ok + inside.errno("ECONNREFUSED"),
        calls,
        "only ECONNREFUSED expected: {inside:?}"
    );

    let outside = probe(None, "connect", target.addr, 300);
    assert_eq!(
        outside.ok, 300,
        "a process outside the cgroup must be unaffected: {outside:?}"
    );
    let other = probe(Some(&cg), "connect", other_port.addr, 300);
    assert_eq!(
        other.ok, 300,
        "connects to another port must be unaffected: {other:?}"
    );

    // The in-kernel counters agree with what the target saw.
    let status = client
        .get_experiment(faultline_proto::v1::GetExperimentRequest { id: exp.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.injected,
        inside.errno("ECONNREFUSED"),
        "injected counter vs errors seen: {status:?}"
    );
    assert_eq!(
        status.matched, calls,
        "matched counter counts only the target's calls to the port: {status:?}"
    );

    client
        .stop_experiment(faultline_proto::v1::StopExperimentRequest { id: exp.id })
        .await
        .unwrap();
    let after = probe(Some(&cg), "connect", target.addr, 200);
    assert_eq!(
        after.ok, 200,
        "after stop every connect must succeed: {after:?}"
    );
}

#[tokio::test]
async fn ipv6_connect_fails_with_the_configured_errno() {
    require_root().unwrap();
    let agent = Agent::start();
    let mut client = agent.client().await;
    let cg = TestCgroup::new("connect6");
    let v6 = Acceptor::new("[::1]");
    let v4 = Acceptor::new("127.0.0.1");

    start(
        &mut client,
        experiment(
            connect_error("ETIMEDOUT", 1.0, 0, "::1/128"),
            cgroup_target(&cg),
            Duration::from_secs(60),
        ),
    )
    .await;
    let six = probe(Some(&cg), "connect", v6.addr, 200);
    assert_eq!(
        six.errno("ETIMEDOUT"),
        200,
        "every IPv6 connect to ::1 must fail with ETIMEDOUT: {six:?}"
    );
    let four = probe(Some(&cg), "connect", v4.addr, 200);
    assert_eq!(
        four.ok, 200,
        "an IPv6 CIDR must not touch IPv4 connects: {four:?}"
    );
}

#[tokio::test]
async fn cidr_filter_spares_other_destinations() {
    require_root().unwrap();
    let agent = Agent::start();
    let mut client = agent.client().await;
    let cg = TestCgroup::new("cidr");
    let a = Acceptor::new("127.0.0.1");
    let b = Acceptor::new("127.0.0.2");

    start(
        &mut client,
        experiment(
            connect_error("ENETUNREACH", 1.0, 0, "127.0.0.1/32"),
            cgroup_target(&cg),
            Duration::from_secs(60),
        ),
    )
    .await;
    let hit = probe(Some(&cg), "connect", a.addr, 200);
    assert_eq!(
        hit.errno("ENETUNREACH"),
        200,
        "127.0.0.1 is inside the CIDR: {hit:?}"
    );
    let spared = probe(Some(&cg), "connect", b.addr, 200);
    assert_eq!(
        spared.ok, 200,
        "127.0.0.2 is outside 127.0.0.1/32: {spared:?}"
    );
}

#[tokio::test]
async fn bind_and_udp_sendmsg_fail() {
    require_root().unwrap();
    let agent = Agent::start();
    let mut client = agent.client().await;
    let cg = TestCgroup::new("bind-send");
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let sink_addr = sink.local_addr().unwrap();
    let free_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();

    let mut req = experiment(
        syscall_error("bind", "EADDRINUSE", 1.0, free_port.port(), ""),
        cgroup_target(&cg),
        Duration::from_secs(60),
    );
    req.spec
        .as_mut()
        .unwrap()
        .faults
        .push(syscall_error("sendmsg", "EHOSTUNREACH", 1.0, sink_addr.port(), "").into());
    start(&mut client, req).await;

    let bind = probe(Some(&cg), "bind", free_port, 100);
    assert_eq!(
        bind.errno("EADDRINUSE"),
        100,
        "bind to the faulted port must fail: {bind:?}"
    );
    let send = probe(Some(&cg), "sendto", sink_addr, 100);
    assert_eq!(
        send.errno("EHOSTUNREACH"),
        100,
        "UDP sendto the faulted port must fail: {send:?}"
    );
    let outside = probe(None, "sendto", sink_addr, 100);
    assert_eq!(
        outside.ok, 100,
        "outside the cgroup sendto must work: {outside:?}"
    );
}

#[tokio::test]
async fn pid_and_comm_selectors_narrow_the_target() {
    require_root().unwrap();
    let agent = Agent::start();
    let mut client = agent.client().await;
    let acc = Acceptor::new("127.0.0.1");
    let mut target = ProbeServer::spawn(None);
    let mut bystander = ProbeServer::spawn(None);

    start(
        &mut client,
        experiment(
            connect_error("ECONNRESET", 1.0, acc.addr.port(), ""),
            pid_target(target.pid()),
            Duration::from_secs(60),
        ),
    )
    .await;
    let hit = target.run("connect", acc.addr, 100);
    assert_eq!(
        hit.errno("ECONNRESET"),
        100,
        "the targeted pid must fail: {hit:?}"
    );
    let spared = bystander.run("connect", acc.addr, 100);
    assert_eq!(
        spared.ok, 100,
        "another process of the same binary must be spared: {spared:?}"
    );

    // comm selector with an excluded pid: both probes are named fl-probe.
    client
        .stop_all(faultline_proto::v1::StopAllRequest {})
        .await
        .unwrap();
    let mut t = pid_target(0);
    t.pids.clear();
    t.comm = "fl-probe".into();
    t.exclude_pids = vec![bystander.pid()];
    start(
        &mut client,
        experiment(
            connect_error("ECONNRESET", 1.0, acc.addr.port(), ""),
            t,
            Duration::from_secs(60),
        ),
    )
    .await;
    let hit = target.run("connect", acc.addr, 100);
    assert_eq!(
        hit.errno("ECONNRESET"),
        100,
        "comm fl-probe must fail: {hit:?}"
    );
    let spared = bystander.run("connect", acc.addr, 100);
    assert_eq!(
        spared.ok, 100,
        "the excluded pid must be spared: {spared:?}"
    );
}

#[tokio::test]
async fn exclude_comm_spares_that_name_inside_the_targeted_cgroup() {
    require_root().unwrap();
    if in_vm() {
        eprintln!(
            "SKIP in the VM: the excluded name is matched by the shared target check, which the other \
             tests of this file already run on each kernel"
        );
        return;
    }
    let agent = Agent::start();
    let mut client = agent.client().await;
    let acc = Acceptor::new("127.0.0.1");
    let cg = TestCgroup::new("exclude-comm");
    let mut faulted = ProbeServer::spawn(Some(&cg));
    let mut spared = ProbeServer::spawn_as(Some(&cg), "fl-spared");
    let comm = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(comm(spared.pid()), "fl-spared");
    assert_eq!(comm(faulted.pid()), "fl-probe");

    let mut target = cgroup_target(&cg);
    target.exclude_comm = "fl-spared".into();
    start(
        &mut client,
        experiment(
            connect_error("ECONNRESET", 1.0, acc.addr.port(), ""),
            target,
            Duration::from_secs(60),
        ),
    )
    .await;
    let hit = faulted.run("connect", acc.addr, 100);
    assert_eq!(
        hit.errno("ECONNRESET"),
        100,
        "the other process of the cgroup is faulted: {hit:?}"
    );
    let kept = spared.run("connect", acc.addr, 100);
    assert_eq!(
        kept.ok, 100,
        "the process named by exclude_comm is spared: {kept:?}"
    );
}

/// A UDP socket on `ip` with a free port: a receiver whose datagrams can be
/// counted, or (dropped at once) a port nothing else will take soon.
fn udp_socket(ip: &str) -> std::net::UdpSocket {
    let s = std::net::UdpSocket::bind(format!("{ip}:0")).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s
}

/// Datagrams waiting on `sock`, read until 300 ms pass with none.
fn datagrams(sock: &std::net::UdpSocket) -> u64 {
    let mut buf = [0u8; 64];
    std::iter::from_fn(|| sock.recv(&mut buf).ok()).count() as u64
}

/// UDP connect (both families), IPv6 bind and IPv6 sendmsg fail in the
/// target with the errno configured; the same calls to another port, to
/// another family, or from outside the cgroup succeed. The errnos are ones
/// no socket call on loopback returns on its own (ENOLINK, ESTALE, EDOM), so
/// only the fault can have produced them; the receiver counts what arrived.
#[tokio::test]
async fn udp_connect_and_ipv6_bind_and_sendmsg_fail_with_the_configured_errno() {
    require_root().unwrap();
    if in_vm() {
        eprintln!(
            "SKIP in the VM: the cgroup sock_addr hooks and their families are the same on every \
             kernel; the other tests of this file run them there"
        );
        return;
    }
    let agent = Agent::start();
    let mut client = agent.client().await;
    let cg = TestCgroup::new("udp-v6");
    let port_of = |s: &std::net::UdpSocket| s.local_addr().unwrap().port();
    // UDP connect needs no peer: the ports only have to be free.
    let connect_port = port_of(&udp_socket("127.0.0.1"));
    let other_port = port_of(&udp_socket("127.0.0.1"));
    let bind_port = port_of(&udp_socket("[::1]"));
    let bind_other = port_of(&udp_socket("[::1]"));
    let sink = udp_socket("[::1]");
    let sink_other = udp_socket("[::1]");

    let mut req = experiment(
        connect_error("ENOLINK", 1.0, connect_port, ""),
        cgroup_target(&cg),
        Duration::from_secs(60),
    );
    let faults = &mut req.spec.as_mut().unwrap().faults;
    faults.push(syscall_error("bind", "ESTALE", 1.0, bind_port, "::1/128").into());
    faults.push(syscall_error("sendmsg", "EDOM", 1.0, port_of(&sink), "::1/128").into());
    start(&mut client, req).await;

    let v4 = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let v6 = |port: u16| std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    let n = 100;
    let seen = |op: &str, addr, inside: bool| probe(inside.then_some(&cg), op, addr, n);

    let r = seen("udp-connect", v4(connect_port), true);
    assert_eq!(r.errno("ENOLINK"), n, "UDP connect (IPv4) fails: {r:?}");
    let r = seen("udp-connect", v6(connect_port), true);
    assert_eq!(r.errno("ENOLINK"), n, "UDP connect (IPv6) fails: {r:?}");
    let r = seen("udp-connect", v4(other_port), true);
    assert_eq!(r.ok, n, "UDP connect to another port works: {r:?}");
    let r = seen("udp-connect", v4(connect_port), false);
    assert_eq!(r.ok, n, "UDP connect outside the cgroup works: {r:?}");

    let r = seen("bind", v6(bind_port), true);
    assert_eq!(r.errno("ESTALE"), n, "IPv6 bind to the port fails: {r:?}");
    let r = seen("bind", v6(bind_other), true);
    assert_eq!(r.ok, n, "IPv6 bind to another port works: {r:?}");
    let r = seen("bind", v4(bind_port), true);
    assert_eq!(r.ok, n, "IPv4 bind, outside ::1/128, works: {r:?}");
    let r = seen("bind", v6(bind_port), false);
    assert_eq!(r.ok, n, "IPv6 bind outside the cgroup works: {r:?}");

    let r = seen("sendto", sink.local_addr().unwrap(), true);
    assert_eq!(r.errno("EDOM"), n, "IPv6 sendto the port fails: {r:?}");
    assert_eq!(datagrams(&sink), 0, "and none of its datagrams arrived");
    let r = seen("sendto", sink_other.local_addr().unwrap(), true);
    assert_eq!(r.ok, n, "IPv6 sendto another port works: {r:?}");
    assert_eq!(datagrams(&sink_other), n, "and every datagram arrived");
    let r = seen("sendto", sink.local_addr().unwrap(), false);
    assert_eq!(r.ok, n, "IPv6 sendto outside the cgroup works: {r:?}");
    assert_eq!(datagrams(&sink), n, "and every datagram arrived");
}
