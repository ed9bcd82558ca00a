//! End-to-end tests of the `faultctl` binary against a fake agent that serves
//! `faultline.v1` on a unix socket in a temporary directory. No root needed.
#![expect(
    unused_crate_dependencies,
    reason = "each integration test is its own crate; the package's dependencies serve them all"
)]

mod fake;

use fake::{test_support::*, *};
use faultline_proto::v1 as pb;

const INJECT: [&str; 14] = [
    "inject",
    "syscall-error",
    "--syscall",
    "connect",
    "--errno",
    "ECONNREFUSED",
    "--probability",
    "0.5",
    "--port",
    "8080",
    "--cgroup",
    "/sys/fs/cgroup/unified/app",
    "--duration",
    "30s",
];

#[tokio::test]
async fn inject_prints_the_id_and_sends_the_spec() {
    let agent = Agent::start("inject");
    let stdout = success(faultctl(&agent.socket(), &INJECT, None).await, &INJECT);
    assert_eq!(stdout, format!("{ID}\n"), "table mode prints just the id");
    let spec = agent.fake.last_spec();
    assert_eq!(spec.duration_ms, 30_000);
    assert_eq!(
        spec.target.map(|t| t.cgroup).as_deref(),
        Some("/sys/fs/cgroup/unified/app")
    );
    match spec.faults.first().and_then(|f| f.kind.clone()) {
        Some(pb::fault_spec::Kind::SyscallError(fault)) => {
            assert_eq!(
                (fault.syscall.as_str(), fault.errno.as_str(), fault.port),
                ("connect", "ECONNREFUSED", 8080)
            );
        }
        other => panic!("expected one syscall_error fault, got {other:?}"),
    }

    let args: Vec<&str> = INJECT.iter().copied().chain(["--output", "json"]).collect();
    let value = json(&success(
        faultctl(&agent.socket(), &args, None).await,
        &args,
    ));
    assert_eq!(value["id"], ID, "inject --output json: {value}");
    assert_eq!(value["state"], "running", "inject --output json: {value}");
}

#[tokio::test]
async fn inject_network_faults_send_the_spec_and_print_it() {
    use pb::Direction::{Both, Egress, Ingress};
    use serde_json::json;
    let any = json!({"protocol": "any", "src_cidr": "", "dst_cidr": "", "src_ports": "",
                     "dst_ports": "", "include_ssh": false});
    let tcp_5432 = json!({"protocol": "tcp", "src_cidr": "", "dst_cidr": "", "src_ports": "",
                          "dst_ports": "5432", "include_ssh": false});
    let udp = json!({"protocol": "udp", "src_cidr": "", "dst_cidr": "", "src_ports": "",
                     "dst_ports": "", "include_ssh": false});
    let full = json!({"protocol": "tcp", "src_cidr": "10.0.0.0/8", "dst_cidr": "10.1.0.0/16",
                      "src_ports": "8000-8100", "dst_ports": "5432", "include_ssh": true});
    // The flags after `inject` and whether to add --dry-run; the fault that
    // the agent should receive; the fault's spec in `--output json`.
    let cases = [
        (
            &[
                "packet-loss --probability 0.3 --burst-length 4 --direction both",
                "--protocol tcp --dst-ports 5432",
            ][..],
            false,
            packet_loss(0.3, 4.0, Both, to_ports("tcp", "5432")),
            json!({"packet_loss": {"probability": 0.3, "burst_length": 4.0, "direction": "both",
                                   "match": tcp_5432}}),
        ),
        (
            &["blackhole"][..],
            true,
            blackhole(Egress, any_packet()),
            json!({"blackhole": {"direction": "egress", "match": any}}),
        ),
        (
            &[
                "duplicate --probability 0.2 --direction ingress",
                FULL_MATCH_FLAGS,
            ][..],
            true,
            duplicate(0.2, Ingress, full_match()),
            json!({"duplicate": {"probability": 0.2, "direction": "ingress", "match": full}}),
        ),
        (
            &[
                "corrupt --probability 0.05 --recompute-checksums --direction both",
                "--protocol tcp --dst-ports 5432",
            ][..],
            false,
            corrupt(0.05, true, Both, to_ports("tcp", "5432")),
            json!({"corrupt": {"probability": 0.05, "recompute_checksums": true,
                               "direction": "both", "match": tcp_5432}}),
        ),
        (
            &["bandwidth --rate 10mbit --burst 128k", "--protocol udp"][..],
            true,
            bandwidth(10_000_000, 131_072, Egress, to_ports("udp", "")),
            json!({"bandwidth": {"rate_bits_per_sec": 10_000_000, "burst_bytes": 131_072,
                                 "direction": "egress", "match": udp}}),
        ),
    ];
    for (flags, dry_run, fault, spec_json) in cases {
        let line = format!(
            "--output json inject {} --interface lo --duration 20s --label team=db --name net-db{}",
            flags.join(" "),
            if dry_run { " --dry-run" } else { "" }
        );
        let args: Vec<&str> = line.split_whitespace().collect();
        let (subcommand, kind) = (args[3], args[3].replace('-', "_"));
        let agent = Agent::start(subcommand);
        let value = json(&success(
            faultctl(&agent.socket(), &args, None).await,
            &args,
        ));

        let expected = pb::ExperimentSpec {
            impact: 0,
            name: "net-db".into(),
            faults: vec![pb::FaultSpec { kind: Some(fault) }],
            // Only the interface is targeted.
            target: Some(pb::Target {
                interface: "lo".into(),
                ..Default::default()
            }),
            duration_ms: 20_000,
            dry_run,
            labels: [("team".to_owned(), "db".to_owned())].into(),
        };
        assert_eq!(
            agent.fake.last_spec(),
            expected,
            "the spec sent by {line:?}"
        );

        assert_eq!(value["target"]["interface"], "lo", "{value}");
        let printed = &value["faults"][0];
        assert_eq!(printed["kind"], kind, "{value}");
        assert_eq!(printed["mechanism"], "tcx", "{value}");
        assert_eq!(printed["spec"], spec_json, "{value}");

        // The table form of status shows the fault like the other kinds.
        let detail = success(
            faultctl(&agent.socket(), &["status", ID], None).await,
            &["status", ID],
        );
        let summary = printed["summary"].as_str().unwrap_or_default();
        assert!(
            detail.contains("Target:   interface=lo")
                && detail.contains(&kind)
                && !summary.is_empty()
                && detail.contains(summary),
            "status table shows the {kind} fault and its summary {summary:?}:\n{detail}"
        );
    }
}

#[tokio::test]
async fn inject_bandwidth_on_a_cgroup_sends_the_rate_in_bits() {
    let agent = Agent::start("bandwidth-cgroup");
    let args = [
        "inject",
        "bandwidth",
        "--rate",
        "2.5gbit",
        "--direction",
        "ingress",
        "--cgroup",
        "/sys/fs/cgroup/app",
        "--duration",
        "20s",
    ];
    let stdout = success(faultctl(&agent.socket(), &args, None).await, &args);
    assert_eq!(stdout, format!("{ID}\n"), "table mode prints just the id");
    let spec = agent.fake.last_spec();
    assert_eq!(
        spec.faults,
        [pb::FaultSpec {
            // No --burst: 0 lets the agent pick.
            kind: Some(bandwidth(
                2_500_000_000,
                0,
                pb::Direction::Ingress,
                any_packet()
            )),
        }]
    );
    assert_eq!(
        spec.target,
        Some(pb::Target {
            cgroup: "/sys/fs/cgroup/app".into(),
            ..Default::default()
        })
    );
    let detail = success(
        faultctl(&agent.socket(), &["status", ID], None).await,
        &["status", ID],
    );
    assert!(
        detail.contains("Target:   cgroup=/sys/fs/cgroup/app")
            && detail.contains("bandwidth")
            && detail.contains("cgroup_skb")
            && detail.contains("egress rate=10000000 bit/s burst=131072 B udp"),
        "status table shows the bandwidth fault and its summary:\n{detail}"
    );

    let mut bad = args;
    bad[3] = "10mb";
    let run = faultctl(&agent.socket(), &bad, None).await;
    assert_eq!(run.code, Some(2), "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains("'--rate <RATE>'") && run.stderr.contains("unknown unit \"mb\""),
        "stderr: {}",
        run.stderr
    );
    assert_eq!(
        agent.fake.started.lock().map(|s| s.len()).ok(),
        Some(1),
        "the usage error sent nothing"
    );
}

#[tokio::test]
async fn duplicate_and_corrupt_refuse_a_cgroup_before_reaching_the_agent() {
    for kind in ["duplicate", "corrupt"] {
        let agent = Agent::start(&format!("{kind}-cgroup"));
        let args = [
            "inject",
            kind,
            "--probability",
            "0.2",
            "--cgroup",
            "/sys/fs/cgroup/app",
            "--duration",
            "20s",
        ];
        let run = faultctl(&agent.socket(), &args, None).await;
        assert_eq!(run.code, Some(2), "{kind}: stderr: {}", run.stderr);
        assert!(run.stderr.contains("--cgroup"), "stderr: {}", run.stderr);
        assert_eq!(
            agent.fake.started.lock().map(|s| s.len()).ok(),
            Some(0),
            "the usage error sent nothing"
        );
    }
}

#[tokio::test]
async fn apply_reads_yaml_from_stdin() {
    let agent = Agent::start("apply");
    let yaml = "name: from-stdin\nduration: 2m\nlabels: {team: payments}\ntarget: {comm: curl}\n\
                faults:\n  - syscall_signal: {syscall: openat, signal: SEGV, nth_call: 3}\n";
    let args = ["apply", "-f", "-"];
    let stdout = success(faultctl(&agent.socket(), &args, Some(yaml)).await, &args);
    assert_eq!(stdout, format!("{ID}\n"));
    let spec = agent.fake.last_spec();
    assert_eq!(
        (spec.name.as_str(), spec.duration_ms),
        ("from-stdin", 120_000)
    );
    assert_eq!(
        spec.labels.get("team").map(String::as_str),
        Some("payments")
    );
}

#[tokio::test]
async fn server_errors_are_one_line_with_the_code_in_words() {
    let agent = Agent::start("server-error");
    let mut args = INJECT;
    args[5] = "EFOO";
    let run = faultctl(&agent.socket(), &args, None).await;
    assert_eq!(
        run.code,
        Some(1),
        "a rejected spec exits 1; stderr: {}",
        run.stderr
    );
    assert_eq!(
        run.stderr,
        "error: invalid argument: spec.faults[0].syscall_error.errno: unknown errno \"EFOO\"\n"
    );
    assert_eq!(run.stdout, "", "nothing on stdout after an error");

    let run = faultctl(&agent.socket(), &["status", "nope"], None).await;
    assert_eq!(run.code, Some(1));
    assert_eq!(run.stderr, "error: not found: no experiment \"nope\"\n");
}

#[tokio::test]
async fn status_and_ls_share_the_json_shape() {
    let agent = Agent::start("status");
    let args = ["status", ID, "--output", "json"];
    let status = json(&success(
        faultctl(&agent.socket(), &args, None).await,
        &args,
    ));
    for (key, expected) in [
        ("id", serde_json::json!(ID)),
        ("state", serde_json::json!("expired")),
        ("matched", serde_json::json!(7)),
        ("injected", serde_json::json!(3)),
        ("deadline_ms", serde_json::json!(1_700_000_030_000_u64)),
    ] {
        assert_eq!(status[key], expected, "status JSON field {key}: {status}");
    }
    for key in [
        "dry_run",
        "faults",
        "started_at_ms",
        "ended_at_ms",
        "message",
        "labels",
        "name",
    ] {
        assert!(
            status.get(key).is_some(),
            "status JSON lacks {key}: {status}"
        );
    }
    assert_eq!(status["faults"][0]["kind"], "syscall_error", "{status}");

    let args = ["ls", "--output", "json"];
    let list = json(&success(
        faultctl(&agent.socket(), &args, None).await,
        &args,
    ));
    let keys = |value: &serde_json::Value| -> Vec<String> {
        value
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(
        keys(&list[0]),
        keys(&status),
        "ls and status print experiments alike"
    );

    let table = success(faultctl(&agent.socket(), &["ls"], None).await, &["ls"]);
    assert!(
        table.starts_with("ID") && table.contains(ID),
        "ls table has a header and the experiment:\n{table}"
    );
    let detail = success(
        faultctl(&agent.socket(), &["status", ID], None).await,
        &["status", ID],
    );
    assert!(
        detail.contains("State:    expired"),
        "status table shows the state:\n{detail}"
    );
}

#[tokio::test]
async fn caps_stop_and_watch() {
    let agent = Agent::start("misc");
    let caps = success(faultctl(&agent.socket(), &["caps"], None).await, &["caps"]);
    assert!(
        caps.contains("BPF LSM is not active") && caps.contains("connect,bind"),
        "caps table shows covers and reasons:\n{caps}"
    );

    let stopped = success(
        faultctl(&agent.socket(), &["stop", "--all"], None).await,
        &["stop", "--all"],
    );
    assert_eq!(stopped, format!("{ID}\nffff\n"));
    let stopped = success(
        faultctl(&agent.socket(), &["stop", ID], None).await,
        &["stop", ID],
    );
    assert!(
        stopped.contains("stopped"),
        "stop prints the new state: {stopped}"
    );

    let args = ["watch", "--output", "json"];
    let events = success(faultctl(&agent.socket(), &args, None).await, &args);
    let types: Vec<serde_json::Value> = events
        .lines()
        .map(|line| json(line)["type"].clone())
        .collect();
    assert_eq!(
        types,
        ["started", "expired"],
        "one JSON object per event:\n{events}"
    );
}

#[tokio::test]
async fn absent_agent_is_reported_with_a_hint() {
    let dir = std::env::temp_dir().join(format!("faultctl-{}-absent", std::process::id()));
    let socket = dir.join("agent.sock");
    let run = faultctl(&socket, &["ls"], None).await;
    assert_eq!(run.code, Some(1), "stderr: {}", run.stderr);
    assert_eq!(
        run.stderr,
        format!(
            "error: cannot reach the agent at {}: No such file or directory (os error 2) \
             (is faultline-agent running? use --socket)\n",
            socket.display()
        )
    );
}

/// A socket that takes connections and never says a word: an agent that
/// is stopped (SIGSTOP) or wedged looks like this from outside.
#[tokio::test]
async fn a_silent_agent_is_an_error_within_the_timeout() {
    let dir = std::env::temp_dir().join(format!("faultctl-{}-silent", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("agent.sock");
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            open.push(conn);
        }
    });
    let t0 = std::time::Instant::now();
    let run = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        faultctl(&socket, &["--timeout", "500ms", "ls"], None),
    )
    .await
    .expect("faultctl must give up on its own");
    let took = t0.elapsed();
    held.abort();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(run.code, Some(1), "stderr: {}", run.stderr);
    assert!(took < std::time::Duration::from_secs(3), "took {took:?}");
    assert!(
        run.stderr.contains(&format!(
            "the agent at {} did not answer within 500ms",
            socket.display()
        )) && run.stderr.contains("stopped (SIGSTOP"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn completion_and_man_need_no_agent() {
    let socket = std::env::temp_dir().join(format!("faultctl-{}-none.sock", std::process::id()));
    let args = ["completion", "bash"];
    let script = success(faultctl(&socket, &args, None).await, &args);
    assert!(
        script.contains("faultctl")
            && script.contains("inject")
            && script.contains("--probability"),
        "a bash completion script for faultctl's subcommands and flags:\n{script}"
    );
    for shell in ["zsh", "fish"] {
        let args = ["completion", shell];
        let script = success(faultctl(&socket, &args, None).await, &args);
        assert!(script.contains("inject"), "{shell} completion:\n{script}");
    }
    let run = faultctl(&socket, &["completion", "tcsh"], None).await;
    assert_eq!(
        run.code,
        Some(2),
        "an unknown shell is a usage error: {}",
        run.stderr
    );
    let page = success(faultctl(&socket, &["man"], None).await, &["man"]);
    assert!(
        page.contains(".TH faultctl 1") && page.contains("inject"),
        "a roff man page listing the subcommands:\n{page}"
    );
}

/// `faultctl --output json status ID | jq .spec | faultctl apply -f -` starts
/// the same experiment again: the status prints the experiment file's shape.
#[tokio::test]
async fn the_spec_that_status_prints_can_be_applied_again() {
    let agent = Agent::start("reapply");
    for inject in [
        "inject latency --delay 1.5ms --jitter 500us --protocol udp --interface lo --duration 90s",
        "inject syscall-error --syscall openat --errno EACCES --path /var/lib/app --comm app \
         --probability 0.25 --duration 1500ms --label team=db",
        "inject dns-error --domain example.com --failure servfail --interface lo --duration 1m",
        "inject packet-loss --probability 0.3 --burst-length 4 --direction both --cgroup /sys/fs/cgroup/app \
         --dst-ports 5432 --duration 20s --dry-run --name lossy",
    ] {
        let args: Vec<&str> = inject.split_whitespace().collect();
        success(faultctl(&agent.socket(), &args, None).await, &args);
        let sent = agent.fake.last_spec();

        let args = ["--output", "json", "status", ID];
        let status = json(&success(
            faultctl(&agent.socket(), &args, None).await,
            &args,
        ));
        let file = status["spec"].to_string();
        let args = ["apply", "-f", "-"];
        success(faultctl(&agent.socket(), &args, Some(&file)).await, &args);
        assert_eq!(agent.fake.last_spec(), sent, "{inject}: applied {file}");
    }
}
