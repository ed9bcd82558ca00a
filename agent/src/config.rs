//! Agent configuration: the embedded defaults, then a TOML file, then
//! environment variables and flags. Validated once; a bad value is reported
//! with its key and the agent exits with status 64 (EX_USAGE).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use faultline_common::{MAX_PROTECTED_NAMES, MAX_PROTECTED_PIDS};
use serde::Deserialize;

use crate::domain::ProtectedName;

pub const DEFAULT_CONFIG: &str = include_str!("../default-config.toml");
/// Exit status for configuration errors (sysexits' EX_USAGE).
pub const EXIT_CONFIG: i32 = 64;
/// Experiments can never be longer than this, whatever the config says.
const HARD_MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);
/// `FL_NTH`'s size unless configured.
const DEFAULT_NTH_CALL_CAPACITY: u32 = 8192;
/// 16 Mi entries (about 0.5 GiB of kernel memory at most): beyond that a
/// typo, not a plan.
const MAX_NTH_CALL_CAPACITY: u32 = 1 << 24;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("config file {0}: {1}")]
    Parse(String, String),
    #[error("config key `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    socket: Option<PathBuf>,
    listen: Option<String>,
    insecure_listen: Option<bool>,
    state_dir: Option<PathBuf>,
    max_duration: Option<String>,
    protected_pids: Option<Vec<u32>>,
    protected_comms: Option<Vec<String>>,
    log: Option<String>,
    probe: Option<String>,
    keep_tcx_hooks: Option<bool>,
    interface_hooks: Option<String>,
    nth_call_capacity: Option<u32>,
    ssh_ports: Option<Vec<u16>>,
    metrics_listen: Option<String>,
    default_lease: Option<String>,
    max_running_experiments: Option<u32>,
    keep_ended_experiments: Option<u32>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    roles: Option<PathBuf>,
    audit_log: Option<PathBuf>,
    tls_handshake_timeout: Option<String>,
    max_connections: Option<u32>,
}

/// Command line; every flag also reads an environment variable.
#[derive(Debug, Default, clap::Parser)]
#[command(
    name = "faultline-agent",
    version,
    about = "Faultline host fault-injection agent"
)]
pub struct Cli {
    /// TOML config file (overrides the embedded defaults).
    #[arg(long, env = "FAULTLINE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Unix socket to serve gRPC on.
    #[arg(long, env = "FAULTLINE_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Also serve gRPC on this TCP address, e.g. 127.0.0.1:50051: with
    /// mutual TLS (--tls-cert, --tls-key, --tls-client-ca) on any address,
    /// or plain on loopback only with --insecure-listen.
    #[arg(long, env = "FAULTLINE_LISTEN")]
    pub listen: Option<String>,
    /// Accept that --listen serves the root API unauthenticated to anyone
    /// who can reach the port (any local user, hostNetwork containers).
    #[arg(long, env = "FAULTLINE_INSECURE_LISTEN")]
    pub insecure_listen: bool,
    /// Directory for runtime state (lock file).
    #[arg(long, env = "FAULTLINE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Longest experiment accepted, e.g. 1h, 30m.
    #[arg(long, env = "FAULTLINE_MAX_DURATION")]
    pub max_duration: Option<String>,
    /// A pid that can never be targeted (repeatable); adds to the config's list.
    #[arg(long = "protected-pid")]
    pub protected_pids: Vec<u32>,
    /// A process name (or prefix pattern, e.g. `postgres*`) that can never
    /// be targeted (repeatable); adds to the list.
    #[arg(long = "protected-comm")]
    pub protected_comms: Vec<String>,
    /// tracing filter, e.g. info or faultline_agent=debug.
    #[arg(long, env = "FAULTLINE_LOG")]
    pub log: Option<String>,
    /// When to load and verify the kernel programs: "start" (in the
    /// background right after start-up) or "lazy" (on first use).
    #[arg(long, env = "FAULTLINE_PROBE")]
    pub probe: Option<String>,
    /// Keep the kernel's TCX hooks on while the agent runs, so interface
    /// faults take effect at once: true or false.
    #[arg(long, env = "FAULTLINE_KEEP_TCX_HOOKS")]
    pub keep_tcx_hooks: Option<bool>,
    /// Programs behind interface-scope network faults: "auto" (TCX where
    /// the kernel has it, else cgroup_skb) or "cgroup_skb".
    #[arg(long, env = "FAULTLINE_INTERFACE_HOOKS")]
    pub interface_hooks: Option<String>,
    /// Per-process call counts the kernel keeps for `nth_call` signal
    /// faults, all slots together (a process without room is not signalled).
    #[arg(long, env = "FAULTLINE_NTH_CALL_CAPACITY")]
    pub nth_call_capacity: Option<u32>,
    /// Serve Prometheus metrics (`GET /metrics`) on this loopback TCP
    /// address, e.g. 127.0.0.1:9464. Off unless set.
    #[arg(long, env = "FAULTLINE_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Lease of experiments started over TCP that ask for none, e.g. 15s;
    /// "off" for none (the in-kernel deadline still holds).
    #[arg(long, env = "FAULTLINE_DEFAULT_LEASE")]
    pub default_lease: Option<String>,
    /// PEM certificate (chain) the TCP listener presents.
    #[arg(long, env = "FAULTLINE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "FAULTLINE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA(s) client certificates must chain to (required with TLS).
    #[arg(long, env = "FAULTLINE_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Roles file: which client identity, uid or group gets which role
    /// (`faultctl certs issue` writes it). Reloaded on SIGHUP.
    #[arg(long, env = "FAULTLINE_ROLES")]
    pub roles: Option<PathBuf>,
    /// Audit log (JSON lines; default <state dir>/audit.log).
    #[arg(long, env = "FAULTLINE_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,
    /// How long a TCP client gets to complete the TLS handshake, e.g. 10s.
    #[arg(long, env = "FAULTLINE_TLS_HANDSHAKE_TIMEOUT")]
    pub tls_handshake_timeout: Option<String>,
    /// Open TCP connections at most (handshaking or not); more are closed at once.
    #[arg(long, env = "FAULTLINE_MAX_CONNECTIONS")]
    pub max_connections: Option<u32>,
    /// Print the effective configuration and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Undo what a stopped agent left on the host (its undo journal, its
    /// recorded fq qdiscs: what start-up undoes), then exit. Refused while
    /// an agent holds the state directory. The systemd unit's ExecStopPost.
    #[arg(long, conflicts_with = "print_config")]
    pub cleanup: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub socket: PathBuf,
    pub listen: Option<SocketAddr>,
    pub state_dir: PathBuf,
    pub max_duration: Duration,
    pub protected_pids: Vec<u32>,
    pub protected_comms: Vec<ProtectedName>,
    pub log: String,
    pub probe: ProbeMode,
    /// Hold the kernel's TCX hooks on while the agent runs, so interface
    /// faults take effect at once (see the default config).
    pub keep_tcx_hooks: bool,
    /// Interface scope on the cgroup_skb programs even where TCX exists.
    pub interface_via_cgroup: bool,
    /// Entries of the kernel's `nth_call` count map (`FL_NTH`).
    pub nth_call_capacity: u32,
    /// Ports network faults spare (unless `include_ssh`), besides those
    /// sshd is found listening on.
    pub ssh_ports: Vec<u16>,
    /// Where Prometheus metrics are served (loopback only), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// The lease of an experiment started over TCP that asks for none.
    pub default_lease: Option<Duration>,
    /// Experiments running at once, and ended ones kept (`crate::limits`).
    pub limits: crate::limits::Limits,
    /// TLS, roles, audit log, connection limits (`remote::settings`).
    pub remote: crate::remote::settings::Settings,
}

/// When the agent loads (and the kernel verifies) its programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeMode {
    /// In a background thread right after start-up, so capabilities are
    /// known (and logged) within moments while requests are already served.
    Start,
    /// Each group on first use (or at GetCapabilities). For slow machines
    /// such as emulated test VMs, where verification takes many seconds.
    Lazy,
}

fn parse_toml(name: &str, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse(name.to_owned(), e.to_string()))
}

fn overlay(base: &mut FileConfig, top: FileConfig) {
    macro_rules! take {
        ($($f:ident),*) => { $( if top.$f.is_some() { base.$f = top.$f; } )* };
    }
    take!(
        socket,
        listen,
        insecure_listen,
        state_dir,
        max_duration,
        protected_pids,
        protected_comms,
        log,
        probe,
        keep_tcx_hooks,
        interface_hooks,
        nth_call_capacity,
        ssh_ports,
        metrics_listen,
        default_lease,
        max_running_experiments,
        keep_ended_experiments,
        tls_cert,
        tls_key,
        tls_client_ca,
        roles,
        audit_log,
        tls_handshake_timeout,
        max_connections
    );
}

impl Config {
    pub fn load(cli: &Cli) -> Result<Self, ConfigError> {
        let mut merged = parse_toml("(embedded default)", DEFAULT_CONFIG)?;
        if let Some(path) = &cli.config {
            let text =
                std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.clone(), e))?;
            overlay(&mut merged, parse_toml(&path.display().to_string(), &text)?);
        }
        overlay(
            &mut merged,
            FileConfig {
                socket: cli.socket.clone(),
                listen: cli.listen.clone(),
                insecure_listen: cli.insecure_listen.then_some(true),
                state_dir: cli.state_dir.clone(),
                max_duration: cli.max_duration.clone(),
                protected_pids: None,
                protected_comms: None,
                log: cli.log.clone(),
                probe: cli.probe.clone(),
                keep_tcx_hooks: cli.keep_tcx_hooks,
                interface_hooks: cli.interface_hooks.clone(),
                nth_call_capacity: cli.nth_call_capacity,
                ssh_ports: None,
                metrics_listen: cli.metrics_listen.clone(),
                default_lease: cli.default_lease.clone(),
                max_running_experiments: None,
                keep_ended_experiments: None,
                tls_cert: cli.tls_cert.clone(),
                tls_key: cli.tls_key.clone(),
                tls_client_ca: cli.tls_client_ca.clone(),
                roles: cli.roles.clone(),
                audit_log: cli.audit_log.clone(),
                tls_handshake_timeout: cli.tls_handshake_timeout.clone(),
                max_connections: cli.max_connections,
            },
        );
        let mut cfg = Self::validate(merged)?;
        cfg.protected_pids.extend(&cli.protected_pids);
        for c in &cli.protected_comms {
            cfg.protected_comms.push(check_comm(c)?);
        }
        check_limits(&cfg)?;
        Ok(cfg)
    }

    fn validate(f: FileConfig) -> Result<Self, ConfigError> {
        let limits = limits(&f)?;
        let socket = f
            .socket
            .unwrap_or_else(|| "/run/faultline/agent.sock".into());
        if !socket.is_absolute() {
            return Err(ConfigError::Invalid {
                key: "socket",
                reason: "must be an absolute path".into(),
            });
        }
        let state_dir = f.state_dir.unwrap_or_else(|| "/run/faultline".into());
        let remote = crate::remote::settings::Settings::validate(
            crate::remote::settings::Raw {
                tls_cert: f.tls_cert,
                tls_key: f.tls_key,
                tls_client_ca: f.tls_client_ca,
                roles: f.roles,
                audit_log: f.audit_log,
                tls_handshake_timeout: f.tls_handshake_timeout,
                max_connections: f.max_connections,
            },
            &state_dir,
        )?;
        let listen = match f.listen.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => {
                let addr: SocketAddr = s.parse().map_err(|_| ConfigError::Invalid {
                    key: "listen",
                    reason: format!("{s:?} is not an address:port"),
                })?;
                if remote.tls.is_none() && !addr.ip().is_loopback() {
                    return Err(ConfigError::Invalid {
                        key: "listen",
                        reason: format!(
                            "{addr} is not a loopback address and no TLS is configured: TCP beyond loopback is \
                             served only with mutual TLS (tls_cert, tls_key, tls_client_ca)"
                        ),
                    });
                }
                if remote.tls.is_none() && f.insecure_listen != Some(true) {
                    return Err(ConfigError::Invalid {
                        key: "listen",
                        reason: format!(
                            "plain TCP on {addr} has no authentication: any local user or hostNetwork container \
                             reaching it gets the agent's root API. Use the unix socket or mutual TLS \
                             (tls_cert, tls_key, tls_client_ca), or accept the risk with `insecure_listen = true` \
                             (--insecure-listen, FAULTLINE_INSECURE_LISTEN)"
                        ),
                    });
                }
                Some(addr)
            }
        };
        let max = f.max_duration.unwrap_or_else(|| "1h".into());
        let max_duration = humantime::parse_duration(&max).map_err(|e| ConfigError::Invalid {
            key: "max_duration",
            reason: format!("{max:?}: {e}"),
        })?;
        if max_duration.is_zero() || max_duration > HARD_MAX_DURATION {
            return Err(ConfigError::Invalid {
                key: "max_duration",
                reason: format!("must be between 1s and 7d, got {max}"),
            });
        }
        let protected_comms = f
            .protected_comms
            .unwrap_or_default()
            .iter()
            .map(|c| check_comm(c))
            .collect::<Result<Vec<_>, _>>()?;
        let log = f.log.unwrap_or_else(|| "info".into());
        tracing_subscriber::EnvFilter::try_new(&log).map_err(|e| ConfigError::Invalid {
            key: "log",
            reason: e.to_string(),
        })?;
        let probe = match f.probe.as_deref().map(str::trim) {
            None | Some("start") => ProbeMode::Start,
            Some("lazy") => ProbeMode::Lazy,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "probe",
                    reason: format!("{other:?} is neither \"start\" nor \"lazy\""),
                });
            }
        };
        let interface_via_cgroup = match f.interface_hooks.as_deref().map(str::trim) {
            None | Some("auto") => false,
            Some("cgroup_skb") => true,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "interface_hooks",
                    reason: format!("{other:?} is neither \"auto\" nor \"cgroup_skb\""),
                });
            }
        };
        let nth_call_capacity = f.nth_call_capacity.unwrap_or(DEFAULT_NTH_CALL_CAPACITY);
        if !(1..=MAX_NTH_CALL_CAPACITY).contains(&nth_call_capacity) {
            return Err(ConfigError::Invalid {
                key: "nth_call_capacity",
                reason: format!(
                    "must be between 1 and {MAX_NTH_CALL_CAPACITY} entries, got {nth_call_capacity}"
                ),
            });
        }
        let ssh_ports = f.ssh_ports.unwrap_or_else(|| vec![22]);
        if ssh_ports.contains(&0) {
            return Err(ConfigError::Invalid {
                key: "ssh_ports",
                reason: "0 is not a port".into(),
            });
        }
        let metrics_listen = metrics_addr(f.metrics_listen.as_deref())?;
        let default_lease = match f.default_lease.as_deref().map(str::trim) {
            None => Some(crate::engine::lease::DEFAULT_TTL),
            Some("off" | "0" | "0s") => None,
            Some(text) => {
                let invalid = |reason: String| ConfigError::Invalid {
                    key: "default_lease",
                    reason,
                };
                let ttl = humantime::parse_duration(text)
                    .map_err(|e| invalid(format!("{text:?}: {e} (or \"off\")")))?;
                Some(crate::engine::lease::check_ttl(ttl).map_err(invalid)?)
            }
        };
        Ok(Self {
            metrics_listen,
            default_lease,
            limits,
            ssh_ports,
            nth_call_capacity,
            probe,
            interface_via_cgroup,
            keep_tcx_hooks: f.keep_tcx_hooks.unwrap_or(true),
            socket,
            listen,
            state_dir,
            remote,
            max_duration,
            protected_pids: f.protected_pids.unwrap_or_default(),
            protected_comms,
            log,
        })
    }

    pub fn lock_path(&self) -> PathBuf {
        self.state_dir.join("agent.lock")
    }

    pub fn socket_dir(&self) -> Option<&Path> {
        self.socket.parent()
    }
}

/// The metrics endpoint is plain HTTP: loopback only until it can be
/// served over TLS.
fn metrics_addr(value: Option<&str>) -> Result<Option<SocketAddr>, ConfigError> {
    let s = match value.map(str::trim) {
        None | Some("") => return Ok(None),
        Some(s) => s,
    };
    let addr: SocketAddr = s.parse().map_err(|_| ConfigError::Invalid {
        key: "metrics_listen",
        reason: format!("{s:?} is not an address:port"),
    })?;
    if !addr.ip().is_loopback() {
        return Err(ConfigError::Invalid {
            key: "metrics_listen",
            reason: format!(
                "{addr} is not a loopback address; metrics are plain HTTP and served on loopback only \
                 until TLS for metrics comes with the mTLS work"
            ),
        });
    }
    Ok(Some(addr))
}

/// `max_running_experiments` (at most the kernel's fault slots) and
/// `keep_ended_experiments`.
fn limits(f: &FileConfig) -> Result<crate::limits::Limits, ConfigError> {
    use crate::limits::{DEFAULT_KEEP_ENDED, DEFAULT_MAX_RUNNING, MAX_KEEP_ENDED};
    let max_running = f.max_running_experiments.unwrap_or(DEFAULT_MAX_RUNNING);
    let slots = faultline_common::MAX_FAULTS;
    if !(1..=slots).contains(&max_running) {
        return Err(ConfigError::Invalid {
            key: "max_running_experiments",
            reason: format!(
                "must be between 1 and {slots} (the kernel's fault slots), got {max_running}"
            ),
        });
    }
    let keep_ended = f.keep_ended_experiments.unwrap_or(DEFAULT_KEEP_ENDED);
    if keep_ended > MAX_KEEP_ENDED {
        return Err(ConfigError::Invalid {
            key: "keep_ended_experiments",
            reason: format!("must be at most {MAX_KEEP_ENDED}, got {keep_ended}"),
        });
    }
    Ok(crate::limits::Limits {
        max_running: max_running as usize,
        keep_ended: keep_ended as usize,
    })
}

fn check_comm(c: &str) -> Result<ProtectedName, ConfigError> {
    ProtectedName::parse(c).map_err(|reason| ConfigError::Invalid {
        key: "protected_comms",
        reason,
    })
}

/// The kernel's protected sets have fixed sizes: a longer list is refused,
/// never cut short.
fn check_limits(cfg: &Config) -> Result<(), ConfigError> {
    if cfg.protected_pids.len() > MAX_PROTECTED_PIDS as usize {
        return Err(ConfigError::Invalid {
            key: "protected_pids",
            reason: format!(
                "{} pids (file and --protected-pid together); the kernel's set holds {MAX_PROTECTED_PIDS}",
                cfg.protected_pids.len()
            ),
        });
    }
    if cfg.protected_comms.len() > MAX_PROTECTED_NAMES as usize {
        return Err(ConfigError::Invalid {
            key: "protected_comms",
            reason: format!(
                "{} names (file and --protected-comm together); the kernel's set holds {MAX_PROTECTED_NAMES}",
                cfg.protected_comms.len()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
