//! `disk_fill`: fill a filesystem with a file the agent owns.

use clap::{ArgGroup, Args};
use faultline_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::{CtlKind, Injection};
use crate::{
    cli::inject::RunArgs,
    spec::{self, WireError, fields},
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskFill {
    /// A directory on the filesystem to fill.
    pub path: String,
    /// Exactly one of: bytes to leave free (`1GiB`),
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "fields::deserialize_size"
    )]
    pub free: u64,
    /// percent of the filesystem to leave free,
    #[serde(default, skip_serializing_if = "is_zero_f")]
    pub free_percent: f64,
    /// or bytes to write.
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "fields::deserialize_size"
    )]
    pub size: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_f(n: &f64) -> bool {
    *n == 0.0
}

/// Fill the filesystem holding a directory until only so much is free (or
/// by so much); the file goes when the fault ends.
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("amount")
        .args(["free", "free_percent", "size"])
        .required(true)
))]
pub struct DiskFillArgs {
    /// A directory on the filesystem to fill.
    #[arg(long, value_name = "DIR")]
    pub path: String,
    /// Leave this much free, e.g. 1GiB.
    #[arg(long, value_parser = spec::parse_size)]
    pub free: Option<u64>,
    /// Leave this percent of the filesystem free.
    #[arg(long)]
    pub free_percent: Option<f64>,
    /// Write this much, e.g. 2GiB.
    #[arg(long, value_parser = spec::parse_size)]
    pub size: Option<u64>,
    #[command(flatten)]
    pub run: RunArgs,
}

impl CtlKind for DiskFill {
    type Wire = pb::DiskFill;
    type Args = DiskFillArgs;

    fn to_wire(self) -> pb::DiskFill {
        pb::DiskFill {
            path: self.path,
            free_bytes: self.free,
            free_percent: self.free_percent,
            size_bytes: self.size,
        }
    }

    fn from_wire(f: &pb::DiskFill) -> Result<Self, WireError> {
        Ok(Self {
            path: f.path.clone(),
            free: f.free_bytes,
            free_percent: f.free_percent,
            size: f.size_bytes,
        })
    }

    #[cfg(test)]
    fn examples() -> Vec<pb::DiskFill> {
        vec![
            pb::DiskFill {
                path: "/mnt/data".into(),
                free_bytes: 1 << 30,
                free_percent: 0.0,
                size_bytes: 0,
            },
            pb::DiskFill {
                path: "/var/tmp".into(),
                free_bytes: 0,
                free_percent: 5.0,
                size_bytes: 0,
            },
        ]
    }

    fn from_args(args: DiskFillArgs) -> anyhow::Result<Injection<Self>> {
        Ok(Injection {
            fault: Self {
                path: args.path,
                free: args.free.unwrap_or(0),
                free_percent: args.free_percent.unwrap_or(0.0),
                size: args.size.unwrap_or(0),
            },
            target: spec::Target::default(),
            run: args.run,
        })
    }
}
