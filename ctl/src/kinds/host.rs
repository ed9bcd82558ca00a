//! What the host-level kinds (pressure, disk fill) share: a target that is
//! an optional cgroup, charged with the work, or the host.

use clap::Args;

use crate::{cli::inject::RunArgs, spec};

/// `--cgroup PATH`: whose cgroup the work is charged to; none = the host.
#[derive(Debug, Args)]
pub struct ChargedTo {
    /// Charge the work to this cgroup v2 directory (it competes with the
    /// processes there); without it, to no target.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<String>,
    #[command(flatten)]
    pub run: RunArgs,
}

impl ChargedTo {
    pub fn target(cgroup: Option<String>) -> spec::Target {
        spec::Target {
            cgroup: cgroup.unwrap_or_default(),
            ..spec::Target::default()
        }
    }
}
