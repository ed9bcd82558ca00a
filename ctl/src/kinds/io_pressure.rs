//! `io_pressure`: read and/or write a file at a target throughput.

use clap::{Args, ValueEnum};
use faultline_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::{CtlKind, Injection, host::ChargedTo};
use crate::spec::{self, WireError, fields};

/// What the I/O stressor does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum IoMode {
    #[default]
    Write,
    Read,
    Mixed,
}

impl IoMode {
    fn wire(self) -> i32 {
        match self {
            Self::Write => pb::IoMode::Write,
            Self::Read => pb::IoMode::Read,
            Self::Mixed => pb::IoMode::Mixed,
        }
        .into()
    }

    fn from_wire(v: i32) -> Result<Self, WireError> {
        match pb::IoMode::try_from(v) {
            Ok(pb::IoMode::Unspecified | pb::IoMode::Write) => Ok(Self::Write),
            Ok(pb::IoMode::Read) => Ok(Self::Read),
            Ok(pb::IoMode::Mixed) => Ok(Self::Mixed),
            Err(_) => Err(WireError(format!("unknown I/O mode {v}"))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IoPressure {
    pub path: String,
    #[serde(default)]
    pub mode: IoMode,
    /// Bytes per second (`50MiB/s`).
    #[serde(deserialize_with = "fields::deserialize_byte_rate")]
    pub rate: u64,
    /// O_DIRECT instead of synchronous buffered I/O.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub direct: bool,
}

/// Read and/or write a file in a directory at a target throughput, charged
/// to a cgroup when given.
#[derive(Debug, Args)]
pub struct IoPressureArgs {
    /// A directory on the filesystem to load.
    #[arg(long, value_name = "DIR")]
    pub path: String,
    #[arg(long, value_enum, default_value_t = IoMode::Write)]
    pub mode: IoMode,
    /// Throughput, e.g. 50MiB/s.
    #[arg(long, value_parser = spec::parse_byte_rate)]
    pub rate: u64,
    /// O_DIRECT instead of synchronous buffered I/O.
    #[arg(long)]
    pub direct: bool,
    #[command(flatten)]
    pub charged: ChargedTo,
}

impl CtlKind for IoPressure {
    type Wire = pb::IoPressure;
    type Args = IoPressureArgs;

    fn to_wire(self) -> pb::IoPressure {
        pb::IoPressure {
            path: self.path,
            mode: self.mode.wire(),
            rate_bytes_per_sec: self.rate,
            direct: self.direct,
        }
    }

    fn from_wire(f: &pb::IoPressure) -> Result<Self, WireError> {
        Ok(Self {
            path: f.path.clone(),
            mode: IoMode::from_wire(f.mode)?,
            rate: f.rate_bytes_per_sec,
            direct: f.direct,
        })
    }

    #[cfg(test)]
    fn examples() -> Vec<pb::IoPressure> {
        vec![pb::IoPressure {
            path: "/mnt/data".into(),
            mode: pb::IoMode::Mixed.into(),
            rate_bytes_per_sec: 50 << 20,
            direct: true,
        }]
    }

    fn from_args(args: IoPressureArgs) -> anyhow::Result<Injection<Self>> {
        Ok(Injection {
            fault: Self {
                path: args.path,
                mode: args.mode,
                rate: args.rate,
                direct: args.direct,
            },
            target: ChargedTo::target(args.charged.cgroup),
            run: args.charged.run,
        })
    }
}
