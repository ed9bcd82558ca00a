//! The control plane itself: capabilities, events, health, reflection and
//! the faultctl CLI against a real agent.
#![expect(
    unused_crate_dependencies,
    reason = "each integration test is its own crate; the package's dependencies serve them all"
)]

use std::{process::Command, time::Duration};

use faultline_proto::v1 as pb;
use faultline_tests::*;
use tokio_stream::StreamExt as _;

#[tokio::test]
async fn capabilities_report_what_this_kernel_supports() {
    require_root().unwrap();
    let agent = Agent::start();
    let mut c = agent.client().await;
    let caps = c
        .get_capabilities(pb::GetCapabilitiesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let row = |kind: &str, mech: &str| {
        caps.capabilities
            .iter()
            .find(|r| r.fault_kind == kind && r.mechanism == mech)
            .unwrap_or_else(|| panic!("no {kind}/{mech} row in {caps:?}"))
            .clone()
    };
    // What every kernel this agent supports has (cgroup BPF, raw
    // tracepoints): a program the verifier refuses would show up here first.
    assert!(row("syscall_error", "cgroup_sock_addr").supported);
    assert!(row("syscall_signal", "raw_tracepoint").supported);
    for kind in ["packet_loss", "blackhole", "bandwidth"] {
        assert!(row(kind, "cgroup_skb").supported, "{kind}");
    }
    // The rest depends on the kernel: FAULTLINE_EXPECT (set per kernel by
    // `cargo xtask test`) names what must load here.
    for r in &caps.capabilities {
        let key = match r.mechanism.as_str() {
            "tcx" => "tcx",
            "tcx+fq" => "fq",
            m if m.starts_with("bpf_lsm:") => "lsm",
            _ => "",
        };
        if !key.is_empty() && expected(key) {
            assert!(
                r.supported,
                "{}/{} should load on this kernel: {}",
                r.fault_kind, r.mechanism, r.reason
            );
        }
        if r.supported {
            assert!(r.reason.is_empty(), "{r:?}");
        } else {
            assert!(
                !r.reason.is_empty(),
                "an unsupported row carries its reason: {r:?}"
            );
            assert!(r.reason.len() < 600, "reasons stay short: {r:?}");
        }
    }
    // One row per LSM hook, each naming the syscalls it fails.
    let open = row("syscall_error", "bpf_lsm:file_open");
    assert!(open.covers.iter().any(|c| c == "openat"), "{open:?}");
    assert_eq!(
        caps.capabilities
            .iter()
            .filter(|r| r.mechanism.starts_with("bpf_lsm:"))
            .count(),
        19
    );
    // Asking for one mechanism answers its rows only.
    let only = c
        .get_capabilities(pb::GetCapabilitiesRequest {
            mechanisms: vec!["raw_tracepoint".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(only.capabilities.len(), 1, "{only:?}");
    assert_eq!(only.capabilities[0].fault_kind, "syscall_signal");
    assert_eq!(caps.max_duration_ms, 3_600_000, "default cap is 1 h");
    assert!(!caps.kernel_release.is_empty());
}

#[tokio::test]
async fn watch_streams_started_counters_and_expired() {
    require_root().unwrap();
    if in_vm() {
        eprintln!(
            "skipped in the VMs: the event stream is the agent's own code, the same on every kernel; it runs on the host"
        );
        return;
    }
    let agent = Agent::start();
    let mut c = agent.client().await;
    let cg = TestCgroup::new("watch");
    let acc = Acceptor::new("127.0.0.1");
    let mut stream = c
        .watch_events(pb::WatchEventsRequest {
            experiment_id: String::new(),
            counters_interval_ms: 100,
        })
        .await
        .unwrap()
        .into_inner();
    let exp = start(
        &mut c,
        experiment(
            connect_error("ECONNREFUSED", 1.0, acc.addr.port(), ""),
            cgroup_target(&cg),
            Duration::from_millis(1200),
        ),
    )
    .await;
    probe(Some(&cg), "connect", acc.addr, 30);

    let mut types = Vec::new();
    let mut max_injected = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, stream.next()).await {
        let ev = ev.unwrap();
        let e = ev.experiment.as_ref().unwrap();
        assert_eq!(e.id, exp.id);
        max_injected = max_injected.max(e.injected);
        types.push(ev.r#type());
        if ev.r#type() == pb::EventType::Expired {
            break;
        }
    }
    assert_eq!(types.first(), Some(&pb::EventType::Started), "{types:?}");
    assert!(types.contains(&pb::EventType::Counters), "{types:?}");
    assert_eq!(types.last(), Some(&pb::EventType::Expired), "{types:?}");
    assert_eq!(
        max_injected, 30,
        "live counters showed the 30 injected connects"
    );
}

#[tokio::test]
async fn health_and_reflection_answer_generic_clients() {
    require_root().unwrap();
    if in_vm() {
        eprintln!(
            "skipped in the VMs: the gRPC surface, nothing kernel-specific; it runs on the host"
        );
        return;
    }
    let agent = Agent::start();
    let channel = unix_channel(&agent.socket).await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "faultline.v1.FaultService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut refl = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = refl
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let msg = resp.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("unexpected {msg:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"faultline.v1.FaultService".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );
}

fn faultctl(agent: &Agent, args: &[&str]) -> std::process::Output {
    Command::new(bin("faultctl"))
        .arg("--socket")
        .arg(&agent.socket)
        .args(args)
        .output()
        .expect("run faultctl")
}

#[tokio::test]
async fn faultctl_inject_status_stop_against_a_real_agent() {
    require_root().unwrap();
    if in_vm() {
        eprintln!(
            "skipped in the VMs: faultctl against the agent, nothing kernel-specific; it runs on the host"
        );
        return;
    }
    let agent = Agent::start();
    let cg = TestCgroup::new("faultctl");
    let acc = Acceptor::new("127.0.0.1");
    let port = acc.addr.port().to_string();
    let out = faultctl(
        &agent,
        &[
            "--output",
            "json",
            "inject",
            "syscall-error",
            "--syscall",
            "connect",
            "--errno",
            "ECONNREFUSED",
            "--probability",
            "0.5",
            "--port",
            &port,
            "--cgroup",
            &cg.path_str(),
            "--duration",
            "30s",
        ],
    );
    assert!(
        out.status.success(),
        "inject failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v["id"].as_str().expect("inject prints an id").to_owned();

    let seen = probe(Some(&cg), "connect", acc.addr, 400);
    let out = faultctl(&agent, &["--output", "json", "status", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["state"], "running");
    assert_eq!(st["matched"], 400);
    assert_eq!(st["injected"].as_u64(), Some(seen.errno("ECONNREFUSED")));

    let out = faultctl(&agent, &["stop", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(probe(Some(&cg), "connect", acc.addr, 100).ok, 100);

    let out = faultctl(
        &agent,
        &[
            "inject",
            "syscall-error",
            "--syscall",
            "connect",
            "--errno",
            "EBOGUS",
            "--cgroup",
            &cg.path_str(),
            "--duration",
            "30s",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid argument") && err.contains("errno"),
        "one readable line naming the field: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// The stock Python grpcio client (from PyPI, installed by `cargo xtask
/// setup`) over the unix socket: health, both reflection versions and
/// ListExperiments, with the one option README documents. Without it gRPC's
/// C core sends the socket path as `:authority`, which the h2 server
/// rejects (RST_STREAM PROTOCOL_ERROR): checked too, so the README stays true.
#[tokio::test]
async fn stock_grpcio_client_works_over_the_socket() {
    require_root().unwrap();
    if in_vm() {
        eprintln!("skipped: the VMs carry no Python; this outside check runs on the host");
        return;
    }
    let agent = Agent::start();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("grpcio/client.py");
    let run = |extra: &[&str]| {
        Command::new("python3")
            .arg(&script)
            .arg(&agent.socket)
            .args(extra)
            .output()
            .expect("python3 (cargo xtask setup installs grpcio)")
    };
    let out = run(&["--default-authority"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "grpcio with grpc.default_authority=localhost failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "ok health SERVING",
        "ok reflection v1alpha",
        "ok reflection v1",
        "ok ListExperiments 0 experiments",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("RST_STREAM"),
        "grpcio without the authority option: expected the documented RST_STREAM refusal, got {}:\n{}\n{stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Every kind this kernel runs: started with `faultctl apply`, its running
/// status (`--output json`) is itself a valid experiment file: applied
/// again, it is accepted and shows the same spec.
#[tokio::test]
async fn status_json_of_every_kind_applies_again_unchanged() {
    require_root().unwrap();
    if in_vm() && !expected("tcx") {
        eprintln!(
            "skipped: the round trip is the same code on every kernel; the 6.12 guest runs it with the LSM kinds"
        );
        return;
    }
    let agent = Agent::start();
    let cg = TestCgroup::new("roundtrip");
    let ns = TestNetns::new();
    let dir = agent.dir.join("roundtrip");
    std::fs::create_dir_all(&dir).unwrap();
    let cgroup = cg.path.display().to_string();
    let m = r#""match": {"protocol": "udp", "dst_cidr": "10.99.0.0/16", "dst_ports": "5000-5010"}"#;
    // (capability row's mechanism, target, fault)
    let kinds: Vec<(&str, String, String)> = vec![
        ("cgroup_sock_addr", format!(r#"{{"cgroup": "{cgroup}"}}"#),
            r#"{"syscall_error": {"syscall": "connect", "errno": "ECONNREFUSED", "probability": 0.5, "port": 9, "cidr": "127.0.0.0/8"}}"#.into()),
        ("bpf_lsm:file_open", format!(r#"{{"cgroup": "{cgroup}"}}"#),
            format!(r#"{{"syscall_error": {{"syscall": "openat", "errno": "EIO", "probability": 0.25, "path": "{}"}}}}"#, dir.display())),
        ("raw_tracepoint", format!(r#"{{"cgroup": "{cgroup}"}}"#),
            r#"{"syscall_signal": {"syscall": "getppid", "signal": "SIGSTOP", "nth_call": 3}}"#.into()),
        ("cgroup_skb", format!(r#"{{"cgroup": "{cgroup}"}}"#),
            format!(r#"{{"packet_loss": {{"probability": 0.1, "burst_length": 4, "direction": "both", {m}}}}}"#)),
        ("cgroup_skb", format!(r#"{{"cgroup": "{cgroup}"}}"#),
            format!(r#"{{"blackhole": {{"direction": "ingress", {m}}}}}"#)),
        ("tcx", format!(r#"{{"interface": "{}"}}"#, ns.host_if),
            format!(r#"{{"duplicate": {{"probability": 0.5, {m}}}}}"#)),
        ("tcx", format!(r#"{{"interface": "{}"}}"#, ns.host_if),
            format!(r#"{{"corrupt": {{"probability": 0.5, "recompute_checksums": true, {m}}}}}"#)),
        ("cgroup_skb", format!(r#"{{"cgroup": "{cgroup}"}}"#),
            format!(r#"{{"bandwidth": {{"rate": "40mbit", "direction": "egress", {m}}}}}"#)),
        ("tcx+fq", format!(r#"{{"interface": "{}"}}"#, ns.host_if),
            format!(r#"{{"latency": {{"delay_ms": 5, "jitter_ms": 1, {m}}}}}"#)),
        ("cgroup_skb", format!(r#"{{"cgroup": "{cgroup}"}}"#),
            r#"{"dns_error": {"domain": "example.com", "failure": "drop", "probability": 1}}"#.into()),
    ];
    let status_spec = |id: &str| -> serde_json::Value {
        let out = faultctl(&agent, &["--output", "json", "status", id]);
        assert!(out.status.success(), "status {id}: {out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["spec"].clone()
    };
    let apply = |path: &std::path::Path| -> String {
        let out = faultctl(
            &agent,
            &["--output", "json", "apply", "-f", path.to_str().unwrap()],
        );
        assert!(
            out.status.success(),
            "apply {}: {}\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["id"].as_str().unwrap().to_owned()
    };
    let mut tried = 0;
    for (i, (mechanism, target, fault)) in kinds.iter().enumerate() {
        if !supported_or_skip(&agent, mechanism).await {
            continue;
        }
        tried += 1;
        let file = dir.join(format!("{i}.json"));
        std::fs::write(
            &file,
            format!(r#"{{"name": "rt-{i}", "duration": "30s", "labels": {{"k": "v"}}, "target": {target}, "faults": [{fault}]}}"#),
        )
        .unwrap();
        let first = apply(&file);
        let spec = status_spec(&first);
        assert!(spec.is_object(), "kind #{i}: no spec in the status: {spec}");
        let again = dir.join(format!("{i}-again.json"));
        std::fs::write(&again, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
        let second = apply(&again);
        assert_eq!(
            status_spec(&second),
            spec,
            "kind #{i} ({fault}) changed on the way round"
        );
        for id in [first, second] {
            assert!(faultctl(&agent, &["stop", &id]).status.success());
        }
    }
    // Socket errors, signals and the cgroup packet kinds load everywhere.
    assert!(tried >= 6, "only {tried} kinds could be tried");
}

#[tokio::test]
async fn the_socket_is_mode_0600() {
    require_root().unwrap();
    if in_vm() {
        eprintln!("SKIP in the VM: the socket's mode is the same on every kernel");
        return;
    }
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
    let agent = Agent::start();
    let meta = std::fs::metadata(&agent.socket).unwrap();
    assert!(meta.file_type().is_socket(), "{meta:?}");
    assert_eq!(
        meta.mode() & 0o7777,
        0o600,
        "the agent's socket is reachable by its owner only: {:o}",
        meta.mode()
    );
    assert_eq!(meta.uid(), 0, "owned by root");
}

#[tokio::test]
async fn watch_streams_stopped_after_stop_experiment() {
    require_root().unwrap();
    if in_vm() {
        eprintln!("SKIP in the VM: the event stream is the same on every kernel");
        return;
    }
    let agent = Agent::start();
    let mut c = agent.client().await;
    let cg = TestCgroup::new("watch-stop");
    let mut stream = c
        .watch_events(pb::WatchEventsRequest {
            experiment_id: String::new(),
            counters_interval_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let exp = start(
        &mut c,
        experiment(
            connect_error("ECONNREFUSED", 1.0, 9, ""),
            cgroup_target(&cg),
            Duration::from_secs(60),
        ),
    )
    .await;
    c.stop_experiment(pb::StopExperimentRequest { id: exp.id.clone() })
        .await
        .unwrap();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, stream.next()).await {
        let ev = ev.unwrap();
        assert_eq!(ev.experiment.as_ref().unwrap().id, exp.id);
        if ev.r#type() == pb::EventType::Counters {
            continue;
        }
        seen.push(ev.r#type());
        if ev.r#type() != pb::EventType::Started {
            let e = ev.experiment.unwrap();
            assert_eq!(e.state(), pb::ExperimentState::Stopped, "{e:?}");
            break;
        }
    }
    assert_eq!(
        seen,
        [pb::EventType::Started, pb::EventType::Stopped],
        "StopExperiment is streamed as Stopped (not Expired)"
    );
}

/// StopAll ends every experiment, of every kind, in the kernel too: the
/// target sees each fault before (connects fail, sendto fails, datagrams
/// vanish), and none right after; the answer names every experiment and
/// nothing stays attached.
#[tokio::test]
async fn stop_all_stops_every_fault_the_target_sees() {
    require_root().unwrap();
    if in_vm() {
        eprintln!("SKIP in the VM: StopAll is the engine's, the same on every kernel");
        return;
    }
    let agent = Agent::start();
    let mut c = agent.client().await;
    let cg = TestCgroup::new("stop-all");
    let acc = Acceptor::new("127.0.0.1");
    let udp = || {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        s
    };
    let (refused, cut) = (udp(), udp());
    let addr = |s: &std::net::UdpSocket| s.local_addr().unwrap();
    // Datagrams waiting on a socket, read until 300 ms pass with none.
    let arrived = |s: &std::net::UdpSocket| {
        let mut buf = [0u8; 64];
        std::iter::from_fn(|| s.recv(&mut buf).ok()).count() as u64
    };
    let faults: [pb::FaultSpec; 3] = [
        connect_error("ENOLINK", 1.0, acc.addr.port(), "").into(),
        syscall_error("sendmsg", "EDOM", 1.0, addr(&refused).port(), "").into(),
        blackhole(pb::Direction::Egress, udp_to_port(addr(&cut).port())).into(),
    ];
    let mut ids = Vec::new();
    for f in faults {
        ids.push(
            start(
                &mut c,
                experiment(f, cgroup_target(&cg), Duration::from_secs(60)),
            )
            .await
            .id,
        );
    }
    const N: u64 = 50;
    let r = probe(Some(&cg), "connect", acc.addr, N);
    assert_eq!(r.errno("ENOLINK"), N, "before: connects fail: {r:?}");
    let r = probe(Some(&cg), "sendto", addr(&refused), N);
    assert_eq!(r.errno("EDOM"), N, "before: sendto fails: {r:?}");
    assert_eq!(arrived(&refused), 0, "before: nothing sent arrives");
    let r = probe(Some(&cg), "sendto", addr(&cut), N);
    assert_eq!(r.ok, N, "a blackhole is silent: {r:?}");
    assert_eq!(arrived(&cut), 0, "before: the blackholed datagrams vanish");

    let mut stopped = c
        .stop_all(pb::StopAllRequest {})
        .await
        .unwrap()
        .into_inner()
        .stopped_ids;
    stopped.sort();
    ids.sort();
    assert_eq!(stopped, ids, "StopAll names every experiment it stopped");

    let r = probe(Some(&cg), "connect", acc.addr, N);
    assert_eq!(r.ok, N, "after: every connect succeeds: {r:?}");
    let r = probe(Some(&cg), "sendto", addr(&refused), N);
    assert_eq!(r.ok, N, "after: every sendto succeeds: {r:?}");
    assert_eq!(arrived(&refused), N, "after: and arrives");
    let r = probe(Some(&cg), "sendto", addr(&cut), N);
    assert_eq!(r.ok, N, "{r:?}");
    assert_eq!(arrived(&cut), N, "after: the datagrams arrive again");
    assert!(
        agent.links().is_empty(),
        "nothing stays attached: {:?}",
        agent.links()
    );
    let list = c
        .list_experiments(pb::ListExperimentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        list.experiments
            .iter()
            .all(|e| e.state() == pb::ExperimentState::Stopped),
        "every experiment is stopped: {list:?}"
    );
}
