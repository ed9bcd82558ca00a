//! End-to-end tests of the `faultctl` binary against a fake agent that serves
//! `faultline.v1` on a unix socket in a temporary directory. No root needed.

use std::{
    path::{Path, PathBuf},
    pin::Pin,
    process::Stdio,
    sync::{Arc, Mutex},
};

use faultline_proto::v1::{
    self as pb,
    fault_service_server::{FaultService, FaultServiceServer},
};
use tokio::{io::AsyncWriteExt as _, net::UnixListener, process::Command};
use tokio_stream::{Stream, wrappers::UnixListenerStream};
use tonic::{Request, Response, Status};

#[path = "../src/test_support.rs"]
mod test_support;
use test_support::{
    FULL_MATCH_FLAGS, any_packet, bandwidth, blackhole, corrupt, duplicate, full_match,
    packet_loss, to_ports,
};

const ID: &str = "0a1b2c3d";

/// The experiment as the agent reports it: one status per fault of the spec,
/// or a syscall_error status when there is no spec yet.
fn experiment(spec: pb::ExperimentSpec, state: pb::ExperimentState) -> pb::Experiment {
    let status = |index: u32, kind: &str, mechanism: &str, summary: &str| pb::FaultStatus {
        index,
        kind: kind.into(),
        mechanism: mechanism.into(),
        matched: 7,
        injected: 3,
        summary: summary.into(),
    };
    let network = if spec
        .target
        .as_ref()
        .is_some_and(|t| !t.interface.is_empty())
    {
        "tcx"
    } else {
        "cgroup_skb"
    };
    let mut faults: Vec<pb::FaultStatus> = spec
        .faults
        .iter()
        .zip(0..)
        .map(|(fault, index)| match &fault.kind {
            Some(pb::fault_spec::Kind::SyscallSignal(_)) => status(
                index,
                "syscall_signal",
                "raw_tracepoint",
                "openat -> SIGSEGV",
            ),
            Some(pb::fault_spec::Kind::PacketLoss(_)) => {
                status(index, "packet_loss", network, "both loss p=0.3")
            }
            Some(pb::fault_spec::Kind::Blackhole(_)) => {
                status(index, "blackhole", network, "egress blackhole")
            }
            Some(pb::fault_spec::Kind::Duplicate(_)) => {
                status(index, "duplicate", network, "ingress duplicate p=0.2")
            }
            Some(pb::fault_spec::Kind::Corrupt(_)) => status(
                index,
                "corrupt",
                network,
                "both corrupt p=0.05 checksums=recomputed",
            ),
            Some(pb::fault_spec::Kind::Bandwidth(_)) => status(
                index,
                "bandwidth",
                network,
                "egress rate=10000000 bit/s burst=65536 B udp",
            ),
            _ => status(
                index,
                "syscall_error",
                "cgroup_sock_addr",
                "connect -> ECONNREFUSED",
            ),
        })
        .collect();
    if faults.is_empty() {
        faults.push(status(
            0,
            "syscall_error",
            "cgroup_sock_addr",
            "connect -> ECONNREFUSED",
        ));
    }
    pb::Experiment {
        id: ID.into(),
        spec: Some(spec),
        state: state as i32,
        started_at_ms: 1_700_000_000_000,
        deadline_ms: 1_700_000_030_000,
        ended_at_ms: 0,
        message: String::new(),
        faults,
        matched: 7,
        injected: 3,
    }
}

/// Records every started spec; rejects the errno `EFOO` the way the agent does.
#[derive(Clone, Default)]
struct FakeAgent {
    started: Arc<Mutex<Vec<pb::ExperimentSpec>>>,
}

impl FakeAgent {
    fn last_spec(&self) -> pb::ExperimentSpec {
        self.started
            .lock()
            .ok()
            .and_then(|s| s.last().cloned())
            .unwrap_or_default()
    }
}

#[tonic::async_trait]
impl FaultService for FakeAgent {
    type WatchEventsStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

    async fn get_capabilities(
        &self,
        _: Request<pb::GetCapabilitiesRequest>,
    ) -> Result<Response<pb::GetCapabilitiesResponse>, Status> {
        Ok(Response::new(pb::GetCapabilitiesResponse {
            kernel_release: "6.8.0".into(),
            agent_version: "0.1.0".into(),
            capabilities: vec![
                pb::Capability {
                    fault_kind: "syscall_error".into(),
                    mechanism: "cgroup_sock_addr".into(),
                    covers: vec!["connect".into(), "bind".into()],
                    supported: true,
                    reason: String::new(),
                },
                pb::Capability {
                    fault_kind: "syscall_signal".into(),
                    mechanism: "raw_tracepoint".into(),
                    covers: vec!["*".into()],
                    supported: false,
                    reason: "BPF LSM is not active".into(),
                },
            ],
            max_duration_ms: 3_600_000,
        }))
    }

    async fn start_experiment(
        &self,
        request: Request<pb::StartExperimentRequest>,
    ) -> Result<Response<pb::StartExperimentResponse>, Status> {
        let spec = request.into_inner().spec.unwrap_or_default();
        if let Some(pb::fault_spec::Kind::SyscallError(fault)) =
            spec.faults.first().and_then(|f| f.kind.as_ref())
            && fault.errno == "EFOO"
        {
            return Err(Status::invalid_argument(
                "spec.faults[0].syscall_error.errno: unknown errno \"EFOO\"",
            ));
        }
        if let Ok(mut started) = self.started.lock() {
            started.push(spec.clone());
        }
        Ok(Response::new(pb::StartExperimentResponse {
            experiment: Some(experiment(spec, pb::ExperimentState::Running)),
        }))
    }

    async fn get_experiment(
        &self,
        request: Request<pb::GetExperimentRequest>,
    ) -> Result<Response<pb::Experiment>, Status> {
        let id = request.into_inner().id;
        if id != ID {
            return Err(Status::not_found(format!("no experiment {id:?}")));
        }
        Ok(Response::new(experiment(
            self.last_spec(),
            pb::ExperimentState::Expired,
        )))
    }

    async fn list_experiments(
        &self,
        _: Request<pb::ListExperimentsRequest>,
    ) -> Result<Response<pb::ListExperimentsResponse>, Status> {
        Ok(Response::new(pb::ListExperimentsResponse {
            experiments: vec![experiment(self.last_spec(), pb::ExperimentState::Running)],
        }))
    }

    async fn stop_experiment(
        &self,
        _: Request<pb::StopExperimentRequest>,
    ) -> Result<Response<pb::Experiment>, Status> {
        Ok(Response::new(experiment(
            self.last_spec(),
            pb::ExperimentState::Stopped,
        )))
    }

    async fn stop_all(
        &self,
        _: Request<pb::StopAllRequest>,
    ) -> Result<Response<pb::StopAllResponse>, Status> {
        Ok(Response::new(pb::StopAllResponse {
            stopped_ids: vec![ID.into(), "ffff".into()],
        }))
    }

    async fn watch_events(
        &self,
        _: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let event = |event_type: pb::EventType, state| pb::Event {
            r#type: event_type as i32,
            at_ms: 1_700_000_000_000,
            experiment: Some(experiment(self.last_spec(), state)),
            message: String::new(),
        };
        let events = vec![
            Ok(event(pb::EventType::Started, pb::ExperimentState::Running)),
            Ok(event(pb::EventType::Expired, pb::ExperimentState::Expired)),
        ];
        Ok(Response::new(Box::pin(tokio_stream::iter(events))))
    }
}

/// A fake agent on a socket in its own directory, removed on drop.
struct Agent {
    dir: PathBuf,
    fake: FakeAgent,
}

impl Agent {
    fn start(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("faultctl-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|err| panic!("cannot create {}: {err}", dir.display()));
        let socket = dir.join("agent.sock");
        let listener = UnixListener::bind(&socket)
            .unwrap_or_else(|err| panic!("cannot bind {}: {err}", socket.display()));
        let fake = FakeAgent::default();
        let service = FaultServiceServer::new(fake.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(UnixListenerStream::new(listener))
                .await
        });
        Self { dir, fake }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn faultctl(socket: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_faultctl"));
    command
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("FAULTLINE_SOCKET")
        .env_remove("FAULTLINE_ENDPOINT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run faultctl {args:?}: {err}"));
    if let Some(mut pipe) = child.stdin.take() {
        if let Some(text) = stdin {
            pipe.write_all(text.as_bytes())
                .await
                .unwrap_or_else(|err| panic!("cannot write faultctl's stdin: {err}"));
        }
        drop(pipe);
    }
    let output = child
        .wait_with_output()
        .await
        .unwrap_or_else(|err| panic!("faultctl {args:?} did not finish: {err}"));
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn success(run: Run, args: &[&str]) -> String {
    assert_eq!(
        run.code,
        Some(0),
        "faultctl {args:?} should succeed; stderr: {}",
        run.stderr
    );
    run.stdout
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|err| panic!("expected JSON, got {err}:\n{text}"))
}

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
            &["bandwidth --rate 10mbit --burst 64k", "--protocol udp"][..],
            true,
            bandwidth(10_000_000, 65_536, Egress, to_ports("udp", "")),
            json!({"bandwidth": {"rate_bits_per_sec": 10_000_000, "burst_bytes": 65_536,
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
            && detail.contains("egress rate=10000000 bit/s burst=65536 B udp"),
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
