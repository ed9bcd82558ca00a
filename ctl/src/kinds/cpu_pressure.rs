//! `cpu_pressure`: load CPUs, charged to a cgroup or host-wide.

use clap::{ArgGroup, Args};
use faultline_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::{CtlKind, Injection, host::ChargedTo};
use crate::spec::WireError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuPressure {
    /// Percent of each CPU, in (0, 100].
    pub load_percent: f64,
    /// How many CPUs; 0 = one (or the cpu_list).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cpus: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpu_list: Vec<u32>,
    /// Host-wide: charged to no target.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host: bool,
    /// Top each CPU's total load up to load_percent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub top_up: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Load CPUs to a percentage, charged to a cgroup (competing with it for its
/// CPU and quota) or host-wide.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("whom").args(["cgroup", "host"]).required(true)))]
pub struct CpuPressureArgs {
    /// Percent of each CPU, in (0, 100].
    #[arg(long)]
    pub load: f64,
    /// How many CPUs to load [default: 1].
    #[arg(long, conflicts_with = "cpu_list")]
    pub cpus: Option<u32>,
    /// Exactly these CPUs, e.g. 0,1.
    #[arg(long, value_delimiter = ',', value_name = "CPU,...")]
    pub cpu_list: Vec<u32>,
    /// Host-wide: charged to no target.
    #[arg(long)]
    pub host: bool,
    /// Top each CPU's total load up to --load instead of adding --load.
    #[arg(long)]
    pub top_up: bool,
    #[command(flatten)]
    pub charged: ChargedTo,
}

impl CtlKind for CpuPressure {
    type Wire = pb::CpuPressure;
    type Args = CpuPressureArgs;

    fn to_wire(self) -> pb::CpuPressure {
        pb::CpuPressure {
            load_percent: self.load_percent,
            cpus: self.cpus,
            cpu_list: self.cpu_list,
            host: self.host,
            top_up: self.top_up,
        }
    }

    fn from_wire(f: &pb::CpuPressure) -> Result<Self, WireError> {
        Ok(Self {
            load_percent: f.load_percent,
            cpus: f.cpus,
            cpu_list: f.cpu_list.clone(),
            host: f.host,
            top_up: f.top_up,
        })
    }

    #[cfg(test)]
    fn examples() -> Vec<pb::CpuPressure> {
        vec![
            pb::CpuPressure {
                load_percent: 50.0,
                cpus: 2,
                cpu_list: Vec::new(),
                host: true,
                top_up: true,
            },
            pb::CpuPressure {
                load_percent: 25.5,
                cpus: 0,
                cpu_list: vec![0, 1],
                host: false,
                top_up: false,
            },
        ]
    }

    fn from_args(args: CpuPressureArgs) -> anyhow::Result<Injection<Self>> {
        let cpus = if args.cpu_list.is_empty() {
            args.cpus.unwrap_or(1)
        } else {
            0
        };
        Ok(Injection {
            fault: Self {
                load_percent: args.load,
                cpus,
                cpu_list: args.cpu_list,
                host: args.host,
                top_up: args.top_up,
            },
            target: ChargedTo::target(args.charged.cgroup),
            run: args.charged.run,
        })
    }
}
