//! Leases (the dead-man switch), idempotent start and `faultctl run`, end
//! to end: a real agent on a loopback TCP listener, a forwarder of the
//! test's own between a client and the agent (to cut the link), and the
//! target process whose `connect` fails under the fault and succeeds again
//! once the agent has stopped it.
#![expect(
    unused_crate_dependencies,
    reason = "each integration test is its own crate; the package's dependencies serve them all"
)]

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use faultline_proto::v1::{self as pb, fault_service_client::FaultServiceClient};
use faultline_tests::*;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};
use tonic::{Code, transport::Channel};

/// An agent that also serves TCP on loopback, and that address. The one
/// place the listener is set up (plain TCP today; mutual TLS once the
/// agent has it).
fn tcp_agent() -> (Agent, SocketAddr) {
    let addr = free_loopback_port();
    let agent = Agent::start_with(&[
        "--listen",
        &addr.to_string(),
        "--insecure-listen",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    (agent, addr)
}

/// A client of the agent's TCP listener at `addr` (or a forwarder to it).
async fn tcp_client(addr: SocketAddr) -> FaultServiceClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect("connect over TCP");
    FaultServiceClient::new(channel)
}

/// A TCP forwarder on loopback whose link can be cut by black-holing:
/// after `cut`, bytes are read and dropped and nothing is closed, as when a
/// network path dies without a reset.
struct Forwarder {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    async fn new(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let c = cut.clone();
        let task = tokio::spawn(async move {
            let mut pipes = tokio::task::JoinSet::new();
            while let Ok((down, _)) = listener.accept().await {
                let Ok(up) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (dr, dw) = down.into_split();
                let (ur, uw) = up.into_split();
                pipes.spawn(pipe(dr, uw, c.clone()));
                pipes.spawn(pipe(ur, dw, c.clone()));
            }
        });
        Self { addr, cut, task }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        // The JoinSet of pipes goes with the task.
        self.task.abort();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Black-holed: keep reading (so the sender sees no back-pressure
        // error either) and drop everything; both sockets stay open.
        if cut.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A connect-error fault on the port of `acc` for the processes of `cg`.
fn fault_on(cg: &TestCgroup, acc: &Acceptor, lease: Duration) -> pb::StartExperimentRequest {
    let mut req = experiment(
        connect_error("ECONNREFUSED", 1.0, acc.addr.port(), ""),
        cgroup_target(cg),
        Duration::from_secs(60),
    );
    req.lease_ttl_ms = lease.as_millis() as u32;
    req
}

/// Whether one `connect` from inside `cg` to `acc` fails now.
fn faulted(cg: &TestCgroup, acc: &Acceptor) -> bool {
    let r = probe(Some(cg), "connect", acc.addr, 1);
    r.errno("ECONNREFUSED") == 1
}

/// Waits until the target's `connect` succeeds again; how long that took
/// from `since`.
fn wait_unfaulted(cg: &TestCgroup, acc: &Acceptor, since: Instant, limit: Duration) -> Duration {
    while since.elapsed() < limit {
        if !faulted(cg, acc) {
            return since.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the fault still held {limit:?} after {since:?}");
}

async fn get(c: &mut FaultServiceClient<Channel>, id: &str) -> pb::Experiment {
    c.get_experiment(pb::GetExperimentRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
}

/// The experiment once it has ended: its faults leave the kernel first, and
/// its record says so a moment later.
async fn ended(c: &mut FaultServiceClient<Channel>, id: &str) -> pb::Experiment {
    for _ in 0..200 {
        let e = get(c, id).await;
        if e.state != pb::ExperimentState::Running as i32 {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{id} still running 2 s after its fault was gone");
}

async fn renew(c: &mut FaultServiceClient<Channel>, id: &str) -> pb::LeaseStatus {
    c.renew_lease(pb::RenewLeaseRequest {
        ids: vec![id.into()],
    })
    .await
    .unwrap()
    .into_inner()
    .leases
    .remove(0)
}

// Two workers: the renewers keep running while the test waits on the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_link_is_cut_loses_its_experiment_within_the_ttl_and_a_renewing_one_keeps_it()
 {
    require_root().unwrap();
    let (agent, addr) = tcp_agent();
    let ttl = Duration::from_millis(1500);
    let (cg_a, acc_a) = (TestCgroup::new("lease-cut"), Acceptor::new("127.0.0.1"));
    let (cg_b, acc_b) = (TestCgroup::new("lease-kept"), Acceptor::new("127.0.0.1"));
    let fwd = Forwarder::new(addr).await;
    let mut a = tcp_client(fwd.addr).await;
    let mut b = tcp_client(addr).await;
    let exp_a = start(&mut a, fault_on(&cg_a, &acc_a, ttl)).await;
    let exp_b = start(&mut b, fault_on(&cg_b, &acc_b, ttl)).await;
    // The lease fields, in the start's answer and in GetExperiment.
    for e in [&exp_a, &get(&mut b, &exp_a.id).await] {
        assert_eq!(e.lease_ttl_ms, 1500, "{e:?}");
        let left = e.lease_expires_at_ms.saturating_sub(e.started_at_ms);
        assert!(
            (1400..=1600).contains(&left),
            "expiry {left} ms after start: {e:?}"
        );
        assert!(!e.owner.is_empty(), "{e:?}");
    }
    assert!(faulted(&cg_a, &acc_a) && faulted(&cg_b, &acc_b));

    // B renews every TTL/3 throughout; A renews through the forwarder
    // until its link is cut, and keeps trying after.
    let b_id = exp_b.id.clone();
    let b_renewer = tokio::spawn(async move {
        loop {
            tokio::time::sleep(ttl / 3).await;
            assert!(renew(&mut b, &b_id).await.renewed);
        }
    });
    let last_a = Arc::new(Mutex::new(Instant::now()));
    let (a_id, last) = (exp_a.id.clone(), last_a.clone());
    let a_renewer = tokio::spawn(async move {
        loop {
            tokio::time::sleep(ttl / 3).await;
            let r = tokio::time::timeout(ttl / 3, renew(&mut a, &a_id)).await;
            if let Ok(s) = r {
                assert!(s.renewed, "{s:?}");
                *last.lock().unwrap() = Instant::now();
            }
        }
    });
    tokio::time::sleep(ttl * 2).await;
    let before = get(&mut tcp_client(addr).await, &exp_a.id).await;
    assert_eq!(
        before.state,
        pb::ExperimentState::Running as i32,
        "renewed: {before:?}"
    );
    assert!(
        before.lease_expires_at_ms > exp_a.lease_expires_at_ms,
        "{before:?}"
    );
    fwd.cut();
    // A renewal answered just before the cut may still be on its way back.
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Measured from A's last renewal that was answered (the agent may have
    // taken one more whose answer was black-holed: later, so this errs long).
    let since = *last_a.lock().unwrap();
    let took = tokio::task::block_in_place(|| {
        wait_unfaulted(&cg_a, &acc_a, since, ttl + Duration::from_secs(3))
    });
    assert!(
        took <= ttl + Duration::from_secs(1),
        "the target's connect succeeded {took:?} after the last renewal (TTL {ttl:?})"
    );
    let mut c = tcp_client(addr).await;
    let ended = ended(&mut c, &exp_a.id).await;
    assert_eq!(
        ended.state,
        pb::ExperimentState::Stopped as i32,
        "{ended:?}"
    );
    assert_eq!(ended.message, "lease expired", "{ended:?}");
    let r = renew(&mut c, &exp_a.id).await;
    assert!(!r.renewed && r.reason.contains("ended"), "{r:?}");

    // B's experiment outlived A's lease by more than a TTL, and still holds.
    tokio::time::sleep(ttl).await;
    assert!(faulted(&cg_b, &acc_b), "a renewed experiment was stopped");
    let kept = get(&mut c, &exp_b.id).await;
    assert_eq!(kept.state, pb::ExperimentState::Running as i32, "{kept:?}");
    b_renewer.abort();
    a_renewer.abort();
    c.stop_experiment(pb::StopExperimentRequest { id: exp_b.id })
        .await
        .unwrap();
    assert!(agent.log().contains("lease expired"), "{}", agent.log());
    // One lapse (the cut client's; the stopped one had its lease renewed).
    let (_, metrics) = http_get(agent.metrics_addr(), "/metrics").expect("GET /metrics");
    assert!(
        metrics.contains("\nfaultline_lease_expiries_total 1\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn leases_default_over_tcp_not_on_the_socket_and_bad_values_name_the_field() {
    require_root().unwrap();
    let (agent, addr) = tcp_agent();
    let cg = TestCgroup::new("lease-default");
    let acc = Acceptor::new("127.0.0.1");
    let mut tcp = tcp_client(addr).await;
    let mut unix = agent.client().await;
    let over_tcp = start(&mut tcp, fault_on(&cg, &acc, Duration::ZERO)).await;
    assert_eq!(
        over_tcp.lease_ttl_ms, 15_000,
        "TCP's default lease: {over_tcp:?}"
    );
    let local = start(&mut unix, fault_on(&cg, &acc, Duration::ZERO)).await;
    assert_eq!(
        (local.lease_ttl_ms, local.lease_expires_at_ms),
        (0, 0),
        "no lease on the socket unless asked: {local:?}"
    );
    assert_eq!(local.owner, "uid:0", "{local:?}");
    let r = renew(&mut unix, &local.id).await;
    assert!(!r.renewed && r.reason.contains("no lease"), "{r:?}");
    let r = renew(&mut unix, "exp-nonexistent").await;
    assert!(!r.renewed && r.reason.contains("no experiment"), "{r:?}");
    let r = renew(&mut unix, &over_tcp.id).await;
    assert!(
        r.renewed && r.lease_expires_at_ms >= over_tcp.lease_expires_at_ms,
        "{r:?}"
    );
    for (ttl_ms, request_id, field) in [
        (100, "", "lease_ttl_ms"),
        (3_600_001, "", "lease_ttl_ms"),
        (0, "a\nb", "request_id"),
        (0, &"x".repeat(129)[..], "request_id"),
    ] {
        let mut req = fault_on(&cg, &acc, Duration::ZERO);
        req.lease_ttl_ms = ttl_ms;
        req.request_id = request_id.into();
        let s = unix.start_experiment(req).await.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        assert!(s.message().starts_with(field), "{s:?}");
    }
    for id in [over_tcp.id, local.id] {
        unix.stop_experiment(pb::StopExperimentRequest { id })
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_id_sent_100_times_concurrently_starts_one_experiment() {
    require_root().unwrap();
    let agent = Agent::start();
    let cg = TestCgroup::new("lease-idem");
    let acc = Acceptor::new("127.0.0.1");
    let mut req = fault_on(&cg, &acc, Duration::from_secs(5));
    req.request_id = "controller-7/run-42".into();
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(agent.client().await);
    }
    let calls: Vec<_> = (0..100)
        .map(|i| {
            let mut c = clients[i % 4].clone();
            let r = req.clone();
            tokio::spawn(async move { c.start_experiment(r).await })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for call in calls {
        let e = call
            .await
            .unwrap()
            .expect("every call succeeds")
            .into_inner();
        ids.insert(e.experiment.unwrap().id);
    }
    assert_eq!(ids.len(), 1, "100 calls, one id: {ids:?}");
    let id = ids.into_iter().next().unwrap();
    let mut c = agent.client().await;
    let running = running_experiments(&mut c).await;
    assert_eq!(
        running.len(),
        1,
        "exactly one experiment started: {running:?}"
    );
    assert_eq!(running[0].request_id, "controller-7/run-42");
    assert_eq!(get(&mut c, &id).await.request_id, "controller-7/run-42");
    assert!(faulted(&cg, &acc));

    // The same id with another spec is refused, naming the field.
    let mut other = req.clone();
    other.spec.as_mut().unwrap().duration_ms = 30_000;
    let s = c.start_experiment(other).await.unwrap_err();
    assert_eq!(s.code(), Code::AlreadyExists, "{s:?}");
    assert!(
        s.message().contains("request_id") && s.message().contains(&id),
        "{s:?}"
    );
    // After it ended, a retry still gets that experiment, not a new one.
    c.stop_experiment(pb::StopExperimentRequest { id: id.clone() })
        .await
        .unwrap();
    let again = start(&mut c, req.clone()).await;
    assert_eq!(again.id, id);
    assert_eq!(again.state, pb::ExperimentState::Stopped as i32);

    // A failed start keeps nothing: the id then starts the good request.
    let mut bad = req.clone();
    bad.request_id = "run-43".into();
    bad.spec.as_mut().unwrap().target = Some(pid_target(1));
    let s = c.start_experiment(bad).await.unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    let mut good = req.clone();
    good.request_id = "run-43".into();
    let fresh = start(&mut c, good).await;
    assert_ne!(fresh.id, id);
    assert_eq!(fresh.state, pb::ExperimentState::Running as i32);
    c.stop_experiment(pb::StopExperimentRequest { id: fresh.id })
        .await
        .unwrap();
}

/// `faultctl run` of a connect-error experiment file; its id (first line of
/// its standard output) and the child.
fn faultctl_run(
    agent: &Agent,
    cg: &TestCgroup,
    acc: &Acceptor,
    lease: &str,
) -> (String, std::process::Child) {
    let file = agent.dir.join(format!(
        "run-{}.json",
        cg.path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(
        &file,
        format!(
            r#"{{"name": "run", "duration": "60s", "target": {{"cgroup": "{}"}},
                "faults": [{{"syscall_error": {{"syscall": "connect", "errno": "ECONNREFUSED", "port": {}}}}}]}}"#,
            cg.path_str(),
            acc.addr.port()
        ),
    )
    .unwrap();
    let mut child = Command::new(bin("faultctl"))
        .arg("--socket")
        .arg(&agent.socket)
        .args(["run", "-f", file.to_str().unwrap(), "--lease", lease])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run faultctl");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let id = line.trim().to_owned();
    assert!(id.starts_with("exp-"), "faultctl run printed {line:?}");
    (id, child)
}

#[tokio::test]
async fn faultctl_run_renews_and_a_sigkill_of_it_lets_the_lease_lapse() {
    require_root().unwrap();
    let agent = Agent::start();
    let cg = TestCgroup::new("lease-run-kill");
    let acc = Acceptor::new("127.0.0.1");
    let ttl = Duration::from_secs(1);
    let (id, mut child) = faultctl_run(&agent, &cg, &acc, "1s");
    let mut c = agent.client().await;
    // Renewed past three TTLs.
    tokio::time::sleep(ttl * 3).await;
    let e = get(&mut c, &id).await;
    assert_eq!(e.state, pb::ExperimentState::Running as i32, "{e:?}");
    assert_eq!(e.lease_ttl_ms, 1000, "{e:?}");
    assert!(faulted(&cg, &acc));
    child.kill().unwrap();
    let killed = Instant::now();
    let killed_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    child.wait().unwrap();
    let took = wait_unfaulted(&cg, &acc, killed, ttl + Duration::from_secs(3));
    let e = ended(&mut c, &id).await;
    assert_eq!(
        (e.state, e.message.as_str()),
        (pb::ExperimentState::Stopped as i32, "lease expired"),
        "{e:?}"
    );
    // The agent ended it within the TTL of the kill (the last renewal came
    // before it), give or take the timer's precision.
    let after_kill = e.ended_at_ms.saturating_sub(killed_ms);
    assert!(
        after_kill <= 1000 + 200,
        "ended {after_kill} ms after faultctl was killed (lease 1s)"
    );
    assert!(
        took <= ttl + Duration::from_secs(1),
        "target saw it gone after {took:?}"
    );
}

#[tokio::test]
async fn ctrl_c_of_faultctl_run_stops_the_experiment_at_once() {
    require_root().unwrap();
    let agent = Agent::start();
    let cg = TestCgroup::new("lease-run-int");
    let acc = Acceptor::new("127.0.0.1");
    let (id, mut child) = faultctl_run(&agent, &cg, &acc, "10s");
    assert!(faulted(&cg, &acc));
    let t0 = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "exit status after SIGINT");
    let took = wait_unfaulted(&cg, &acc, t0, Duration::from_secs(3));
    assert!(
        took < Duration::from_secs(1),
        "stopped {took:?} after SIGINT"
    );
    let e = ended(&mut agent.client().await, &id).await;
    assert_eq!(
        (e.state, e.message.as_str()),
        (pb::ExperimentState::Stopped as i32, "stopped by request"),
        "{e:?}"
    );
}
