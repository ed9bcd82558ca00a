//! The hostile mix's parts: the agent with small limits on its socket and
//! on mutual TLS, the calls, the codes each may get, and the checks that
//! nothing is left.

use std::{collections::HashSet, net::SocketAddr, path::PathBuf, time::Duration};

use faultline_proto::v1::{self as pb, fault_service_client::FaultServiceClient};
use faultline_tests::{
    tls::{CertDir, tls_channel},
    *,
};
use tonic::{Code, transport::Channel};

pub const CALLS: usize = 10_000;
pub const CONNECTIONS: usize = 32;
/// For the 1,250 watchers that never read: at most 79 streams on each.
pub const WATCH_CONNECTIONS: usize = 16;
/// What the mix may add to the agent's resident memory: 10,000 calls in
/// flight at once (about 13 KiB each, measured: HTTP/2 stream state and
/// tonic's buffers) and 1,250 open streams. Before the limits it grew by
/// 530 MiB, holding every 1 MB label it accepted (issue 13).
pub const RSS_GROWTH_BOUND_KIB: u64 = 192 * 1024;
/// What a second, identical mix may add: nothing accumulates (experiments,
/// events and answers are bounded by `limits.rs`), so only allocator noise.
pub const RSS_REPEAT_BOUND_KIB: u64 = 64 * 1024;
pub const MAX_RUNNING: usize = 8;

/// Who a connection of the mix speaks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Who {
    /// Root on the unix socket (some connections with a small HTTP/2 window).
    Root,
    /// An operator's certificate over mutual TLS.
    Operator,
    /// A certificate of the agent's CA whose identity the roles file does
    /// not name: every call is refused, naming it.
    NoRole,
}

/// The ways into the hostile agent: its unix socket, and mutual TLS on a
/// loopback port with the certificates of `certs`.
pub struct Via {
    pub socket: PathBuf,
    pub certs: CertDir,
    pub tcp: SocketAddr,
}

impl Via {
    pub async fn channel(&self, who: Who, small_window: bool) -> Channel {
        match who {
            Who::Root if small_window => small_window_channel(&self.socket).await.unwrap(),
            Who::Root => unix_channel(&self.socket).await.unwrap(),
            Who::Operator => self.certs.channel(self.tcp, Some("ops")).await.unwrap(),
            Who::NoRole => self.certs.channel(self.tcp, Some(NO_ROLE)).await.unwrap(),
        }
    }

    /// What connection `i` of the mix is.
    pub fn who(i: usize) -> Who {
        match i % 8 {
            1 => Who::Operator,
            5 => Who::NoRole,
            _ => Who::Root,
        }
    }

    /// A client of the TCP port without a client certificate.
    pub fn no_certificate(&self) -> NoCertificate {
        NoCertificate {
            tcp: self.tcp,
            ca: self.certs.path("ca.pem"),
        }
    }
}

pub struct NoCertificate {
    tcp: SocketAddr,
    ca: PathBuf,
}

impl NoCertificate {
    /// One call: the TLS handshake is refused, so nothing is answered;
    /// Ok(()) when that is what happened.
    pub async fn call(self) -> Result<(), String> {
        let Ok(ch) = tls_channel(self.tcp, &self.ca, None).await else {
            return Ok(());
        };
        match FaultServiceClient::new(ch)
            .list_experiments(pb::ListExperimentsRequest::default())
            .await
        {
            Ok(_) => Err("a call without a client certificate was answered".into()),
            // The refusal arrives as the connection closing under the call.
            Err(s)
                if matches!(
                    s.code(),
                    Code::Unavailable | Code::Unknown | Code::Cancelled
                ) =>
            {
                Ok(())
            }
            Err(s) => Err(format!(
                "without a certificate: {:?}: {}",
                s.code(),
                s.message()
            )),
        }
    }
}

/// Calls without a client certificate beside the mix.
pub const NO_CERT_CALLS: usize = 200;

/// The identity with a certificate and no role.
pub const NO_ROLE: &str = "stranger";

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

pub fn spec(cg: &TestCgroup, fault: pb::fault_spec::Kind) -> pb::ExperimentSpec {
    pb::ExperimentSpec {
        name: "hostile".into(),
        faults: vec![fault.into()],
        target: Some(cgroup_target(cg)),
        duration_ms: 3_000,
        dry_run: true,
        ..Default::default()
    }
}

pub fn start_req(spec: pb::ExperimentSpec) -> pb::StartExperimentRequest {
    pb::StartExperimentRequest {
        spec: Some(spec),
        ..Default::default()
    }
}

/// Every experiment, page by page, checking each page's bounds.
pub async fn list_all(
    c: &mut FaultServiceClient<Channel>,
    running_only: bool,
) -> Vec<pb::Experiment> {
    list_pages(c, running_only, 0).await
}

pub async fn list_pages(
    c: &mut FaultServiceClient<Channel>,
    running_only: bool,
    page_size: u32,
) -> Vec<pb::Experiment> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = c
            .list_experiments(pb::ListExperimentsRequest {
                running_only,
                page_size,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        let size = if page_size == 0 {
            100
        } else {
            page_size as usize
        };
        assert!(page.experiments.len() <= size, "a page has at most {size}");
        out.extend(page.experiments);
        if page.next_page_token.is_empty() {
            return out;
        }
        page_token = page.next_page_token;
    }
}

/// The agent holds nothing beyond its idle set.
pub async fn assert_idle(agent: &Agent, c: &mut FaultServiceClient<Channel>, idle: &HashSet<u32>) {
    c.stop_all(pb::StopAllRequest {}).await.unwrap();
    assert!(
        list_all(c, true).await.is_empty(),
        "no experiment is left running"
    );
    assert!(
        wait_for(Duration::from_secs(5), || agent.links().is_empty()),
        "links left: {:?}",
        agent.links()
    );
    let extra: Vec<u32> = agent
        .programs()
        .into_iter()
        .filter(|p| !idle.contains(p))
        .collect();
    assert!(extra.is_empty(), "programs beyond the idle set: {extra:?}");
}

/// Loads every program group (GetCapabilities) so the idle set is stable.
pub async fn idle_set(agent: &Agent, c: &mut FaultServiceClient<Channel>) -> HashSet<u32> {
    c.get_capabilities(pb::GetCapabilitiesRequest::default())
        .await
        .unwrap();
    agent.programs().into_iter().collect()
}

/// An agent with small limits, on its unix socket and on mutual TLS on a
/// loopback port (`ops` an operator; `stranger`'s certificate is the CA's
/// but the roles file does not name it).
pub fn agent_with_limits() -> (Agent, Via, tempdir::Dir) {
    let dir = tempdir::Dir::new();
    let cfg = dir.0.join("limits.toml");
    std::fs::write(
        &cfg,
        format!("max_running_experiments = {MAX_RUNNING}\nkeep_ended_experiments = 300\n"),
    )
    .unwrap();
    let certs = CertDir::init(&[]);
    certs.issue("ops", "operator").issue(NO_ROLE, "viewer");
    let roles = certs.path("roles.toml");
    let text = std::fs::read_to_string(&roles).unwrap();
    let kept: Vec<&str> = text.lines().filter(|l| !l.contains(NO_ROLE)).collect();
    std::fs::write(&roles, kept.join("\n") + "\n").unwrap();
    let tcp = free_loopback_port();
    let mut args = vec!["--config".to_owned(), cfg.display().to_string()];
    args.extend(certs.agent_args(tcp));
    let agent = Agent::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let via = Via {
        socket: agent.socket.clone(),
        certs,
        tcp,
    };
    (agent, via, dir)
}

pub mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            let d = std::env::temp_dir().join(format!("fl-hostile-{}", std::process::id()));
            std::fs::create_dir_all(&d).unwrap();
            Self(d)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// What one call of the mix is, and the codes it may get.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Call {
    Valid,
    NanProbability,
    BigLabel,
    Oversized,
    List,
    BadPage,
    Watch,
    Unknown,
}

pub const MIX: [Call; 8] = [
    Call::Valid,
    Call::NanProbability,
    Call::BigLabel,
    Call::Oversized,
    Call::List,
    Call::BadPage,
    Call::Watch,
    Call::Unknown,
];

pub fn check(who: Who, call: Call, r: &Result<(), tonic::Status>) -> Result<(), String> {
    if who == Who::NoRole {
        return match r {
            Err(s) if s.code() == Code::PermissionDenied && s.message().contains(NO_ROLE) => Ok(()),
            r => Err(format!(
                "{call:?} as {NO_ROLE}: expected PermissionDenied naming it, got {r:?}"
            )),
        };
    }
    let named = |s: &tonic::Status, code: Code, field: &str| {
        if s.code() == code && s.message().starts_with(field) {
            Ok(())
        } else {
            Err(format!(
                "{call:?}: expected {code:?} naming {field}, got {:?}: {}",
                s.code(),
                s.message()
            ))
        }
    };
    match (call, r) {
        (Call::Valid | Call::List | Call::Watch, Ok(())) => Ok(()),
        // More than MAX_RUNNING at once.
        (Call::Valid, Err(s))
            if s.code() == Code::ResourceExhausted
                && s.message().contains("max_running_experiments") =>
        {
            Ok(())
        }
        (Call::NanProbability, Err(s)) => named(
            s,
            Code::InvalidArgument,
            "spec.faults[0].syscall_error.probability",
        ),
        (Call::BigLabel, Err(s)) => named(s, Code::InvalidArgument, "spec.labels[\"big\"]"),
        // tonic's answer to a request beyond max_decoding_message_size.
        (Call::Oversized, Err(s))
            if s.code() == Code::OutOfRange && s.message().contains("too large") =>
        {
            Ok(())
        }
        (Call::BadPage, Err(s)) => named(s, Code::InvalidArgument, "page_token"),
        (Call::Unknown, Err(s)) if s.code() == Code::NotFound => Ok(()),
        (call, r) => Err(format!(
            "{call:?}: unexpected {:?}",
            r.as_ref()
                .map_err(|s| (s.code(), s.message().chars().take(200).collect::<String>()))
        )),
    }
}
