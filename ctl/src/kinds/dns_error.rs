//! `dns_error`: fail DNS queries for names in a domain.

use clap::Args;
use faultline_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::{CtlKind, Injection, net::CgroupOrInterface};
use crate::{
    cli::inject::RunArgs,
    spec::{self, WireError, fields},
};

/// Fail DNS queries for names in a domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsError {
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub failure: DnsFailure,
    #[serde(
        default = "fields::always",
        deserialize_with = "fields::deserialize_probability"
    )]
    pub probability: f64,
    #[serde(default)]
    pub resolver_cidr: String,
}

/// How a matching DNS query fails; written in lowercase (serde and clap
/// both take the lowercase variant names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DnsFailure {
    #[default]
    Drop,
    Servfail,
    Nxdomain,
}

impl DnsFailure {
    fn wire(self) -> i32 {
        match self {
            Self::Drop => pb::DnsFailure::Drop,
            Self::Servfail => pb::DnsFailure::Servfail,
            Self::Nxdomain => pb::DnsFailure::Nxdomain,
        }
        .into()
    }

    /// Unspecified on the wire means drop.
    fn from_wire(failure: i32) -> Result<Self, WireError> {
        match pb::DnsFailure::try_from(failure) {
            Ok(pb::DnsFailure::Unspecified | pb::DnsFailure::Drop) => Ok(Self::Drop),
            Ok(pb::DnsFailure::Servfail) => Ok(Self::Servfail),
            Ok(pb::DnsFailure::Nxdomain) => Ok(Self::Nxdomain),
            Err(_) => Err(WireError(format!("unknown DNS failure {failure}"))),
        }
    }
}

/// Fail the DNS queries a cgroup or an interface sends for names in a
/// domain: drop them, or answer SERVFAIL or NXDOMAIN (interface only).
#[derive(Debug, Args)]
pub struct DnsErrorArgs {
    /// Names in this domain fail (example.com: it and every name below it);
    /// omit for every name.
    #[arg(long, default_value = "")]
    pub domain: String,
    /// drop (the client times out), servfail or nxdomain (answers need
    /// --interface).
    #[arg(long, value_enum, default_value_t = DnsFailure::Drop)]
    pub failure: DnsFailure,
    /// Chance that a matching query fails, in [0, 1].
    #[arg(long, default_value_t = 1.0, value_parser = spec::parse_probability)]
    pub probability: f64,
    /// Only queries to resolvers in this CIDR.
    #[arg(long, value_name = "CIDR")]
    pub resolver_cidr: Option<String>,
    #[command(flatten)]
    pub scope: CgroupOrInterface,
    #[command(flatten)]
    pub run: RunArgs,
}

impl CtlKind for DnsError {
    type Wire = pb::DnsError;
    type Args = DnsErrorArgs;

    fn to_wire(self) -> pb::DnsError {
        pb::DnsError {
            domain: self.domain,
            failure: self.failure.wire(),
            probability: self.probability,
            resolver_cidr: self.resolver_cidr,
        }
    }

    fn from_wire(f: &pb::DnsError) -> Result<Self, WireError> {
        Ok(Self {
            domain: f.domain.clone(),
            failure: DnsFailure::from_wire(f.failure)?,
            probability: f.probability,
            resolver_cidr: f.resolver_cidr.clone(),
        })
    }

    #[cfg(test)]
    fn examples() -> Vec<pb::DnsError> {
        vec![pb::DnsError {
            domain: "example.com".into(),
            failure: pb::DnsFailure::Nxdomain.into(),
            probability: 0.75,
            resolver_cidr: "10.0.0.53/32".into(),
        }]
    }

    fn from_args(args: DnsErrorArgs) -> anyhow::Result<Injection<Self>> {
        Ok(Injection {
            fault: Self {
                domain: args.domain,
                failure: args.failure,
                probability: args.probability,
                resolver_cidr: args.resolver_cidr.unwrap_or_default(),
            },
            target: args.scope.into(),
            run: args.run,
        })
    }
}
