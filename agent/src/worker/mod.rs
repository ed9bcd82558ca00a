//! Agent-side work: what a fault does from user space while it runs (a
//! stressor process, signals, a freeze, a fill file), beside or instead of
//! its kernel slot. A kind gives the engine a [`Worker`] while planning; the
//! engine starts it after the kernel part is armed, reports it in status and
//! stops it before the kernel part is disarmed. The engine knows workers only
//! through the trait.
//!
//! What a worker changes on the host outside the agent's own process is
//! recorded in the undo [`journal`] before it is changed, so that the reaper
//! (a small process holding a pipe from the agent) undoes it when the agent
//! dies, and start-up undoes it again if the reaper died too. Child processes
//! are started by [`spawn`] so that they die with the agent.

pub mod journal;
pub mod placement;
mod roles;
pub mod spawn;

use std::{ffi::OsString, fmt, path::PathBuf, sync::Arc, time::SystemTime};

pub use journal::{Journal, Undo};

use crate::engine::Policy;

/// The agent-side work of one fault.
pub trait Worker: Send + Sync + fmt::Debug {
    /// Shown as the fault's mechanism ("stressor process", "signals", …).
    fn mechanism(&self) -> &'static str;
    /// Starts it; on error nothing is left running or recorded. Runs on
    /// the blocking pool.
    fn start(&self) -> Result<(), String>;
    /// Stops it and undoes what it did. Idempotent; also called after a
    /// failed start.
    fn stop(&self);
    /// Progress so far, read on every status and watch: keep it cheap.
    fn report(&self) -> Report;
}

/// A measured figure of a worker.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

impl Metric {
    pub fn new(name: &str, value: f64, unit: &str) -> Self {
        Self {
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
        }
    }
}

/// One act of a worker: a kill, a pause.
#[derive(Clone, Debug, PartialEq)]
pub struct Action {
    pub at: SystemTime,
    pub pid: u32,
    pub comm: String,
    pub what: String,
}

/// What a worker has done so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Replaces the fault's kernel `matched` counter in status when set.
    pub matched: Option<u64>,
    /// Replaces the fault's kernel `injected` counter when set.
    pub injected: Option<u64>,
    pub metrics: Vec<Metric>,
    pub actions: Vec<Action>,
    /// The work failed by itself (the stressor was OOM-killed…): the engine
    /// ends the experiment as failed with this message.
    pub failure: Option<String>,
}

/// What every worker may use: made once by the agent, copied per fault.
#[derive(Clone)]
pub struct WorkerEnv {
    /// Protected pids and names, the agent's cgroup: checked again at the
    /// moment of every act, since processes come and go.
    pub policy: Policy,
    pub state_dir: PathBuf,
    pub journal: Arc<Journal>,
    /// Set per experiment by the engine.
    pub dry_run: bool,
    /// Unique per fault (`<experiment>-<index>`), for file and cgroup names.
    pub token: String,
}

impl fmt::Debug for WorkerEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerEnv")
            .field("state_dir", &self.state_dir)
            .field("dry_run", &self.dry_run)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// The flag that makes `faultline-agent` run as one of its own helpers.
pub const INTERNAL_FLAG: &str = "--internal";

/// If the process was started as a helper (`--internal ROLE ARG`), runs
/// that role and returns its exit status; `None` for a normal start.
pub fn internal_role(args: &[OsString]) -> Option<i32> {
    if args.get(1).is_none_or(|a| a != INTERNAL_FLAG) {
        return None;
    }
    let role = args.get(2).and_then(|a| a.to_str()).unwrap_or("");
    let arg = args.get(3).and_then(|a| a.to_str()).unwrap_or("");
    Some(roles::run(role, arg))
}
