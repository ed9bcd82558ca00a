//! `faultctl certs`: a development CA and certificates for mutual TLS.

use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Write a new CA (DIR/ca.pem, DIR/ca-key.pem) and the agent's
    /// certificate (DIR/agent.pem, DIR/agent-key.pem; SANs localhost,
    /// 127.0.0.1, ::1, this host's name and every --san).
    Init {
        /// Where the files go (created 0700 if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Another name or IP address the agent is reached by (repeatable).
        #[arg(long, value_name = "NAME")]
        san: Vec<String>,
    },
    /// Write a client certificate DIR/NAME.pem and key DIR/NAME-key.pem
    /// signed by DIR's CA, and record NAME's role in DIR/roles.toml (the
    /// agent's --roles file).
    Issue {
        /// The client's identity (the certificate's CN).
        name: String,
        /// What the client may do.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The directory `certs init` wrote.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Viewer,
    Operator,
    Admin,
}

impl RoleArg {
    pub fn name(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}
