//! `memory_pressure`: make memory resident, charged to a cgroup or the host.

use clap::{ArgGroup, Args};
use faultline_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::{CtlKind, Injection, host::ChargedTo};
use crate::spec::{self, WireError, fields};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryPressure {
    /// Bytes to make resident (`1GiB`); or `percent`.
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "fields::deserialize_size"
    )]
    pub size: u64,
    /// Percent of MemAvailable, or of the cgroup's limit, in (0, 100].
    #[serde(default, skip_serializing_if = "is_zero_f")]
    pub percent: f64,
    /// Bytes per second to take it at (`256MiB/s`); 0 = as fast as possible.
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "fields::deserialize_byte_rate"
    )]
    pub ramp: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_f(n: &f64) -> bool {
    *n == 0.0
}

/// Make memory resident and keep it so, charged to a cgroup when given;
/// never below the agent's memory floor.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("amount").args(["size", "percent"]).required(true)))]
pub struct MemoryPressureArgs {
    /// How much, e.g. 1GiB, 512MiB.
    #[arg(long, value_parser = spec::parse_size)]
    pub size: Option<u64>,
    /// Percent of MemAvailable (or of the cgroup's memory limit), in (0, 100].
    #[arg(long)]
    pub percent: Option<f64>,
    /// How fast to take it, e.g. 256MiB/s [default: as fast as possible].
    #[arg(long, value_parser = spec::parse_byte_rate)]
    pub ramp: Option<u64>,
    #[command(flatten)]
    pub charged: ChargedTo,
}

impl CtlKind for MemoryPressure {
    type Wire = pb::MemoryPressure;
    type Args = MemoryPressureArgs;

    fn to_wire(self) -> pb::MemoryPressure {
        pb::MemoryPressure {
            size_bytes: self.size,
            percent: self.percent,
            ramp_bytes_per_sec: self.ramp,
        }
    }

    fn from_wire(f: &pb::MemoryPressure) -> Result<Self, WireError> {
        Ok(Self {
            size: f.size_bytes,
            percent: f.percent,
            ramp: f.ramp_bytes_per_sec,
        })
    }

    #[cfg(test)]
    fn examples() -> Vec<pb::MemoryPressure> {
        vec![
            pb::MemoryPressure {
                size_bytes: 1 << 30,
                percent: 0.0,
                ramp_bytes_per_sec: 256 << 20,
            },
            pb::MemoryPressure {
                size_bytes: 0,
                percent: 20.0,
                ramp_bytes_per_sec: 0,
            },
        ]
    }

    fn from_args(args: MemoryPressureArgs) -> anyhow::Result<Injection<Self>> {
        Ok(Injection {
            fault: Self {
                size: args.size.unwrap_or(0),
                percent: args.percent.unwrap_or(0.0),
                ramp: args.ramp.unwrap_or(0),
            },
            target: ChargedTo::target(args.charged.cgroup),
            run: args.charged.run,
        })
    }
}
