//! `process_pause`: freeze the target (cgroup freezer, or SIGSTOP/SIGCONT).

use clap::Args;
use faultline_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::{CtlKind, Injection};
use crate::{cli::inject::ExperimentArgs, spec::WireError};

/// Nothing to set: the target and the duration say it all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessPause {}

/// Freeze the target for the duration: a cgroup with the cgroup freezer,
/// pids and names with SIGSTOP (SIGCONT at the end).
#[derive(Debug, Args)]
pub struct ProcessPauseArgs {
    #[command(flatten)]
    pub experiment: ExperimentArgs,
}

impl CtlKind for ProcessPause {
    type Wire = pb::ProcessPause;
    type Args = ProcessPauseArgs;

    fn to_wire(self) -> pb::ProcessPause {
        pb::ProcessPause {}
    }

    fn from_wire(_: &pb::ProcessPause) -> Result<Self, WireError> {
        Ok(Self {})
    }

    #[cfg(test)]
    fn examples() -> Vec<pb::ProcessPause> {
        vec![pb::ProcessPause {}]
    }

    fn from_args(args: ProcessPauseArgs) -> anyhow::Result<Injection<Self>> {
        Ok(args.experiment.into_injection(Self {}))
    }
}
