//! The remote-operation settings (TLS files, roles file, audit log,
//! connection limits), validated with the rest of the configuration.

use std::{path::PathBuf, time::Duration};

use crate::config::ConfigError;

pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1024;
/// HTTP/2 streams per connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 128;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub tls: Option<TlsFiles>,
    pub roles: Option<PathBuf>,
    pub audit_log: PathBuf,
    pub handshake_timeout: Duration,
    pub max_connections: u32,
}

/// The raw values, from the file, the environment and flags.
#[derive(Debug, Default)]
pub struct Raw {
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    pub roles: Option<PathBuf>,
    pub audit_log: Option<PathBuf>,
    pub tls_handshake_timeout: Option<String>,
    pub max_connections: Option<u32>,
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

impl Settings {
    /// Checked whole: the TLS files are read and must make a server
    /// configuration, the roles file must parse.
    pub fn validate(raw: Raw, state_dir: &std::path::Path) -> Result<Self, ConfigError> {
        let tls = match (raw.tls_cert, raw.tls_key, raw.tls_client_ca) {
            (None, None, None) => None,
            (Some(cert), Some(key), Some(client_ca)) => Some(TlsFiles {
                cert,
                key,
                client_ca,
            }),
            (cert, key, _) => {
                let missing = if cert.is_none() {
                    "tls_cert"
                } else if key.is_none() {
                    "tls_key"
                } else {
                    "tls_client_ca"
                };
                return Err(invalid(
                    missing,
                    "TLS needs all three of tls_cert, tls_key and tls_client_ca \
                     (--tls-cert, --tls-key, --tls-client-ca): the agent serves TCP only with mutual TLS",
                ));
            }
        };
        if let Some(files) = &tls {
            super::tls::server_config(files).map_err(|e| invalid(e.key, e.reason))?;
        }
        if let Some(path) = &raw.roles {
            super::roles::Roles::load(path).map_err(|e| invalid("roles", e.to_string()))?;
        }
        let handshake_timeout = match raw.tls_handshake_timeout {
            None => DEFAULT_HANDSHAKE_TIMEOUT,
            Some(s) => humantime::parse_duration(&s)
                .ok()
                .filter(|d| !d.is_zero() && *d <= Duration::from_secs(600))
                .ok_or_else(|| {
                    invalid(
                        "tls_handshake_timeout",
                        format!("{s:?} is not a duration between 1ms and 10m"),
                    )
                })?,
        };
        let max_connections = raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if !(1..=1 << 20).contains(&max_connections) {
            return Err(invalid(
                "max_connections",
                format!("must be between 1 and 1048576, got {max_connections}"),
            ));
        }
        let audit_log = raw.audit_log.unwrap_or_else(|| state_dir.join("audit.log"));
        if !audit_log.is_absolute() {
            return Err(invalid("audit_log", "must be an absolute path"));
        }
        Ok(Self {
            tls,
            roles: raw.roles,
            audit_log,
            handshake_timeout,
            max_connections,
        })
    }
}
