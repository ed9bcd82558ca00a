//! `syscall_signal`: send a signal to the target when it enters a syscall.

use clap::Args;
use faultline_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::{CtlKind, Injection};
use crate::{
    cli::inject::ExperimentArgs,
    spec::{self, WireError, fields},
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyscallSignal {
    pub syscall: String,
    /// A name or a number; YAML `signal: 9` is accepted as well as `"9"`.
    #[serde(deserialize_with = "fields::deserialize_name_or_number")]
    pub signal: String,
    #[serde(
        default = "fields::always",
        deserialize_with = "fields::deserialize_probability"
    )]
    pub probability: f64,
    /// 0 = not set; the probability decides.
    #[serde(default)]
    pub nth_call: u64,
}

/// Send a signal to the target when it enters a syscall.
#[derive(Debug, Args)]
pub struct SyscallSignalArgs {
    /// Syscall name, e.g. openat.
    #[arg(long)]
    pub syscall: String,
    /// Signal name or number: KILL, SIGSEGV, 9.
    #[arg(long)]
    pub signal: String,
    /// Chance per matching call, in [0, 1] [default: 1].
    #[arg(long, value_parser = spec::parse_probability, conflicts_with = "nth_call")]
    pub probability: Option<f64>,
    /// Signal exactly at the Nth matching call of each target process (1-based).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub nth_call: Option<u64>,
    #[command(flatten)]
    pub experiment: ExperimentArgs,
}

impl CtlKind for SyscallSignal {
    type Wire = pb::SyscallSignal;
    type Args = SyscallSignalArgs;

    fn to_wire(self) -> pb::SyscallSignal {
        pb::SyscallSignal {
            syscall: self.syscall,
            signal: self.signal,
            probability: self.probability,
            nth_call: self.nth_call,
        }
    }

    fn from_wire(f: &pb::SyscallSignal) -> Result<Self, WireError> {
        Ok(Self {
            syscall: f.syscall.clone(),
            signal: f.signal.clone(),
            probability: f.probability,
            nth_call: f.nth_call,
        })
    }

    #[cfg(test)]
    fn examples() -> Vec<pb::SyscallSignal> {
        vec![pb::SyscallSignal {
            syscall: "openat".into(),
            signal: "SIGSEGV".into(),
            probability: 1.0,
            nth_call: 3,
        }]
    }

    fn from_args(args: SyscallSignalArgs) -> anyhow::Result<Injection<Self>> {
        Ok(args.experiment.into_injection(Self {
            syscall: args.syscall,
            signal: args.signal,
            // The agent ignores the probability when nth_call is set.
            probability: args.probability.unwrap_or(1.0),
            nth_call: args.nth_call.unwrap_or(0),
        }))
    }
}
