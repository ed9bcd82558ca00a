//! Reaching the agent's gRPC API, over its unix socket (the default) or TCP,
//! within a deadline, and turning gRPC failures into one readable line.

use std::{error::Error as _, fmt, future::Future, io, path::PathBuf, time::Duration};

use faultline_proto::v1::{self as pb, fault_service_client::FaultServiceClient};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::{
    Code, Status,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri},
};

/// How often `watch` pings an agent that has sent nothing (HTTP/2
/// keepalive); the ping's answer then gets `--timeout`.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);

pub type Client = FaultServiceClient<Channel>;

/// Where the agent listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentAddress {
    Socket(PathBuf),
    /// A URL such as `http://127.0.0.1:50051`.
    Endpoint(String),
    /// An `https://` URL, reached with mutual TLS.
    Tls(String, Box<ClientTls>),
}

/// The client side of mutual TLS: the CA the agent's certificate must
/// chain to, and this client's certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ClientTls {
    fn config(&self) -> Result<ClientTlsConfig, ConnectError> {
        let read = |flag: &'static str, p: &PathBuf| {
            std::fs::read(p).map_err(|e| ConnectError::Tls {
                flag,
                reason: format!("{}: {e}", p.display()),
            })
        };
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read("--tls-ca", &self.ca)?))
            .identity(Identity::from_pem(
                read("--tls-cert", &self.cert)?,
                read("--tls-key", &self.key)?,
            )))
    }
}

impl AgentAddress {
    /// The flag that changes this address, for the hint in errors.
    fn flag(&self) -> &'static str {
        match self {
            Self::Socket(_) => "--socket",
            Self::Endpoint(_) | Self::Tls(..) => "--endpoint",
        }
    }
}

impl fmt::Display for AgentAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Socket(path) => write!(f, "{}", path.display()),
            Self::Endpoint(url) | Self::Tls(url, _) => f.write_str(url),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid --endpoint {url:?}: {reason} (expected a URL such as http://127.0.0.1:50051)")]
    InvalidEndpoint { url: String, reason: String },
    #[error(
        "cannot reach the agent at {address}: {reason} (is faultline-agent running? use {flag})"
    )]
    Unreachable {
        address: AgentAddress,
        reason: String,
        flag: &'static str,
    },
    #[error("{flag}: {reason}")]
    Tls { flag: &'static str, reason: String },
    #[error(transparent)]
    NoAnswer(#[from] NoAnswer),
}

/// The agent took the connection, or the request, and then said nothing.
#[derive(Debug, thiserror::Error)]
#[error(
    "the agent at {address} did not answer {what}: it may be stopped (SIGSTOP, a debugger), wedged \
     or overloaded; check the faultline-agent process and its log (allow longer with --timeout)"
)]
pub struct NoAnswer {
    address: AgentAddress,
    /// "within 2s", "to keepalive pings (nothing for 7s)".
    what: String,
}

/// A call that failed: the agent's answer, or none in time.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error(transparent)]
    NoAnswer(#[from] NoAnswer),
    /// Reconnecting after a stream broke failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
}

/// A connected agent and the time it gets to answer each call.
pub struct Agent {
    client: Client,
    address: AgentAddress,
    timeout: Duration,
}

impl Agent {
    /// One unary call, bounded by the deadline as a whole (headers, message
    /// and trailers). The deadline is not sent to the agent: a request it
    /// cancelled half-way would help nobody.
    pub async fn call<T, F>(&self, call: impl FnOnce(Client) -> F) -> Result<T, CallError>
    where
        F: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        match tokio::time::timeout(self.timeout, call(self.client.clone())).await {
            Ok(answer) => Ok(answer.map_err(RpcError)?.into_inner()),
            Err(_) => Err(self
                .no_answer(format!(
                    "within {}",
                    humantime::format_duration(self.timeout)
                ))
                .into()),
        }
    }

    /// An error on an open stream (`watch`). A status the agent sent is
    /// shown as it is. A broken connection (keepalive pings unanswered for
    /// the interval plus the deadline, or the agent gone) reads the same to
    /// hyper, so the agent is asked again, once, within the deadline: no
    /// answer is an agent gone silent, a refused connection one that exited.
    pub async fn stream_error(&self, status: Status) -> CallError {
        let transport = status
            .source()
            .is_some_and(|s| s.downcast_ref::<hyper::Error>().is_some());
        if !transport {
            return RpcError(status).into();
        }
        let broken = innermost_message(&status);
        let again = match connect(&self.address, self.timeout).await {
            Ok(agent) => agent
                .call(|mut c| async move {
                    c.list_experiments(pb::ListExperimentsRequest {
                        running_only: true,
                        ..Default::default()
                    })
                    .await
                })
                .await
                .map(drop),
            Err(ConnectError::NoAnswer(e)) => Err(e.into()),
            Err(e) => return e.into(),
        };
        match again {
            Err(CallError::NoAnswer(_)) => self
                .no_answer(format!(
                    "to keepalive pings for {} (the stream broke: {broken}), nor to a new call within {}",
                    humantime::format_duration(KEEPALIVE_INTERVAL + self.timeout),
                    humantime::format_duration(self.timeout)
                ))
                .into(),
            _ => RpcError(status).into(),
        }
    }

    /// `call`, with a deadline of its own (a lease renewal must not wait
    /// longer than the time left on the lease).
    pub async fn call_within<T, F>(
        &self,
        timeout: Duration,
        call: impl FnOnce(Client) -> F,
    ) -> Result<T, CallError>
    where
        F: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        match tokio::time::timeout(timeout, call(self.client.clone())).await {
            Ok(answer) => Ok(answer.map_err(RpcError)?.into_inner()),
            Err(_) => Err(self
                .no_answer(format!("within {}", humantime::format_duration(timeout)))
                .into()),
        }
    }

    fn no_answer(&self, what: String) -> NoAnswer {
        NoAnswer {
            address: self.address.clone(),
            what,
        }
    }
}

/// Connects eagerly, so that an absent agent is reported as such rather than
/// as a failure of the first call; connecting gets `timeout` too (a stopped
/// agent's socket still takes connections into its backlog). Open streams
/// ping an agent that has been silent for [`KEEPALIVE_INTERVAL`] and give
/// up when the answer takes longer than `timeout`.
pub async fn connect(address: &AgentAddress, timeout: Duration) -> Result<Agent, ConnectError> {
    let endpoint = |uri: String| {
        Endpoint::from_shared(uri).map(|e| {
            e.connect_timeout(timeout)
                .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                .keep_alive_timeout(timeout)
        })
    };
    let connecting = async {
        match address {
            AgentAddress::Socket(path) => {
                let path = path.clone();
                // The URI is a placeholder: the connector ignores it and dials the socket.
                endpoint("http://[::]:50051".to_owned())
                    .expect("a valid placeholder URI")
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
                    }))
                    .await
                    .map_err(|err| unreachable(address, &err))
            }
            AgentAddress::Endpoint(url) => {
                // Accept `host:port` as well as a full URL.
                let full = if url.contains("://") {
                    url.clone()
                } else {
                    format!("http://{url}")
                };
                endpoint(full)
                    .map_err(|err| ConnectError::InvalidEndpoint {
                        url: url.clone(),
                        reason: innermost_message(&err),
                    })?
                    .connect()
                    .await
                    .map_err(|err| unreachable(address, &err))
            }
            AgentAddress::Tls(url, tls) => endpoint(url.clone())
                .map_err(|err| ConnectError::InvalidEndpoint {
                    url: url.clone(),
                    reason: innermost_message(&err),
                })?
                .tls_config(tls.config()?)
                .map_err(|err| ConnectError::Tls {
                    flag: "--tls-cert",
                    reason: innermost_message(&err),
                })?
                .connect()
                .await
                .map_err(|err| unreachable(address, &err)),
        }
    };
    let channel = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| NoAnswer {
            address: address.clone(),
            what: format!(
                "within {} of connecting",
                humantime::format_duration(timeout)
            ),
        })??;
    Ok(Agent {
        client: FaultServiceClient::new(channel),
        address: address.clone(),
        timeout,
    })
}

fn unreachable(address: &AgentAddress, err: &tonic::transport::Error) -> ConnectError {
    ConnectError::Unreachable {
        address: address.clone(),
        reason: innermost_message(err),
        flag: address.flag(),
    }
}

/// The transport error itself only says "transport error"; the useful part
/// ("No such file or directory", "Connection refused") is at the bottom of
/// the chain.
fn innermost_message(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

/// A failed call, shown as `invalid argument: <the agent's message>`. The
/// agent's message names the offending field, so it is printed unchanged.
#[derive(Debug)]
pub struct RpcError(pub Status);

impl From<Status> for RpcError {
    fn from(status: Status) -> Self {
        Self(status)
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words = code_words(self.0.code());
        let message = self.0.message().trim();
        if message.is_empty() {
            // Transport failures carry their reason in the source, not the message.
            match self.0.source() {
                Some(source) => write!(f, "{words}: {}", innermost_message(source)),
                None => f.write_str(words),
            }
        } else {
            write!(f, "{words}: {message}")
        }
    }
}

// Not `source()`: the status is already rendered above, and anyhow's `{:#}`
// would repeat it.
impl std::error::Error for RpcError {}

fn code_words(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown error",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal error",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_error_reads_code_in_words_then_message() {
        let status =
            Status::invalid_argument("spec.faults[0].syscall_error.errno: unknown errno \"EFOO\"");
        assert_eq!(
            RpcError(status).to_string(),
            "invalid argument: spec.faults[0].syscall_error.errno: unknown errno \"EFOO\""
        );
        assert_eq!(RpcError(Status::not_found("")).to_string(), "not found");
    }

    #[tokio::test]
    async fn missing_socket_is_reported_with_a_hint() {
        let address = AgentAddress::Socket(PathBuf::from("/nonexistent/faultline/agent.sock"));
        let err = match connect(&address, Duration::from_secs(10)).await {
            Ok(_) => panic!("expected connecting to {address} to fail"),
            Err(err) => err.to_string(),
        };
        assert_eq!(
            err,
            "cannot reach the agent at /nonexistent/faultline/agent.sock: No such file or \
             directory (os error 2) (is faultline-agent running? use --socket)"
        );
    }
}
