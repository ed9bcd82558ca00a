//! A fake agent that serves `faultline.v1` on a unix socket in a temporary
//! directory, and a runner for the `faultctl` binary against it.

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

#[path = "../../src/test_support.rs"]
pub mod test_support;

pub const ID: &str = "0a1b2c3d";

/// The experiment as the agent reports it: one status per fault of the spec,
/// or a syscall_error status when there is no spec yet.
pub fn experiment(spec: pb::ExperimentSpec, state: pb::ExperimentState) -> pb::Experiment {
    let status = |index: u32, kind: &str, mechanism: &str, summary: &str| pb::FaultStatus {
        metrics: Vec::new(),
        actions: Vec::new(),
        index,
        kind: kind.into(),
        mechanism: mechanism.into(),
        matched: 7,
        injected: 3,
        not_injected_map_full: 0,
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
                "egress rate=10000000 bit/s burst=131072 B udp",
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
        impact: None,
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
        ..Default::default()
    }
}

/// Records every started spec; rejects the errno `EFOO` the way the agent does.
#[derive(Clone, Default)]
pub struct FakeAgent {
    pub started: Arc<Mutex<Vec<pb::ExperimentSpec>>>,
}

impl FakeAgent {
    pub fn last_spec(&self) -> pb::ExperimentSpec {
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

    async fn renew_lease(
        &self,
        _: Request<pb::RenewLeaseRequest>,
    ) -> Result<Response<pb::RenewLeaseResponse>, Status> {
        Err(Status::unimplemented("the fake agent has no leases"))
    }

    async fn list_experiments(
        &self,
        _: Request<pb::ListExperimentsRequest>,
    ) -> Result<Response<pb::ListExperimentsResponse>, Status> {
        Ok(Response::new(pb::ListExperimentsResponse {
            experiments: vec![experiment(self.last_spec(), pb::ExperimentState::Running)],
            next_page_token: String::new(),
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
            lost: 0,
        };
        let events = vec![
            Ok(event(pb::EventType::Started, pb::ExperimentState::Running)),
            Ok(event(pb::EventType::Expired, pb::ExperimentState::Expired)),
        ];
        Ok(Response::new(Box::pin(tokio_stream::iter(events))))
    }
}

/// A fake agent on a socket in its own directory, removed on drop.
pub struct Agent {
    pub dir: PathBuf,
    pub fake: FakeAgent,
}

impl Agent {
    pub fn start(test: &str) -> Self {
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

    pub fn socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub async fn faultctl(socket: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_faultctl"));
    command
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("FAULTLINE_SOCKET")
        .env_remove("FAULTLINE_ENDPOINT")
        .env_remove("FAULTCTL_TIMEOUT")
        .kill_on_drop(true)
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

pub fn success(run: Run, args: &[&str]) -> String {
    assert_eq!(
        run.code,
        Some(0),
        "faultctl {args:?} should succeed; stderr: {}",
        run.stderr
    );
    run.stdout
}

pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|err| panic!("expected JSON, got {err}:\n{text}"))
}
