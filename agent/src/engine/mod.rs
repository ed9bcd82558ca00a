//! The experiment engine: arms every fault of an experiment or none, keeps
//! counters, expires experiments at their deadline and stops them on demand.
//!
//! The kernel enforces each deadline by itself; the timer here only tidies
//! up (detach, free the slot) and reports. The engine knows fault kinds only
//! through `faults::Fault` and the kernel only through `KernelOps`.
//! Experiments live in a `Records` store that reads take without the
//! engine's lock, so a slow start (program loading, verification, TCX
//! attachment) never holds up `GetExperiment` or `ListExperiments`.

mod handle;
mod impact;
pub mod lease;
mod policy;
mod records;
pub mod request_ids;
mod start;
#[cfg(test)]
mod tests;

use std::{
    collections::BTreeSet,
    sync::{Arc, RwLock},
    time::SystemTime,
};

use faultline_common::{FaultCounters, MAX_FAULTS};
pub use handle::EngineHandle;
pub use policy::Policy;
pub use records::{CatchUp, Records};
use records::{FaultRecord, Record};
pub use start::StartOptions;
use tracing::warn;

use crate::{
    domain::{ExperimentSpec, SpecError, process_start},
    faults,
    kernel::{KernelError, KernelOps, Resource},
    worker::{Action, Journal, Metric, WorkerEnv},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Running,
    Expired,
    Stopped,
    Failed,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Expired => "expired",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug)]
pub struct FaultView {
    pub index: u32,
    pub kind: &'static str,
    pub mechanism: &'static str,
    pub matched: u64,
    pub injected: u64,
    /// `nth_call` calls not injected because the kernel's count map was full.
    pub not_injected_map_full: u64,
    pub summary: String,
    /// What the fault's agent-side work measured and did.
    pub metrics: Vec<Metric>,
    pub actions: Vec<Action>,
}

#[derive(Clone, Debug)]
pub struct ExperimentView {
    pub id: String,
    pub spec: ExperimentSpec,
    pub state: State,
    pub started_at: SystemTime,
    pub deadline: SystemTime,
    pub ended_at: Option<SystemTime>,
    pub message: String,
    pub faults: Vec<FaultView>,
    /// What the faults did to the target, when the experiment measures it.
    pub impact: Option<crate::impact::ImpactView>,
    /// Who started it, with which request id and lease.
    pub origin: Origin,
}

/// Who started an experiment and how: its owner, request id and lease.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// The caller's identity (`Caller::identity`).
    pub owner: String,
    /// The client's request id; empty if it gave none.
    pub request_id: String,
    /// None: no lease (the in-kernel deadline still holds).
    pub lease: Option<lease::LeaseInfo>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Started,
    Counters,
    Expired,
    Stopped,
    Failed,
}

impl EventKind {
    /// The event that announces an experiment ending in `state`.
    pub fn ending(state: State) -> Self {
        match state {
            State::Expired => Self::Expired,
            State::Failed => Self::Failed,
            State::Running | State::Stopped => Self::Stopped,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Event {
    pub kind: EventKind,
    /// Position in the engine's event stream (1, 2, ...); 0 for events a
    /// stream makes itself (counters, deliveries after a lag).
    pub seq: u64,
    pub at: SystemTime,
    pub experiment: ExperimentView,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("no experiment with id {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Exhausted(String),
    #[error(transparent)]
    Reused(#[from] request_ids::Reused),
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

pub struct Engine<K: KernelOps> {
    kernel: K,
    records: Arc<RwLock<Records>>,
    free: BTreeSet<u32>,
    policy: Policy,
    agent_pid: u32,
    /// Where agent-side work records what it must undo, in which state
    /// directory; detached (every record refused) unless `with_journal`.
    journal: Arc<Journal>,
    state_dir: std::path::PathBuf,
    /// Experiments running at once, at most (`ResourceExhausted` beyond).
    max_running: usize,
}

fn boottime_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .unwrap_or_else(|_| nix::sys::time::TimeSpec::new(0, 0));
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

fn new_id() -> String {
    format!("exp-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

impl<K: KernelOps> Engine<K> {
    pub fn new(kernel: K, policy: Policy) -> Self {
        Self {
            kernel,
            records: Arc::default(),
            free: (0..MAX_FAULTS).collect(),
            policy,
            agent_pid: std::process::id(),
            journal: Journal::detached(),
            state_dir: std::path::PathBuf::new(),
            max_running: crate::limits::Limits::default().max_running,
        }
    }

    /// How many experiments may run at once and how many ended ones are kept.
    #[must_use]
    pub fn with_limits(mut self, limits: crate::limits::Limits) -> Self {
        self.write_records().keep_ended = limits.keep_ended;
        self.max_running = limits.max_running;
        self
    }

    /// Lets faults do agent-side work, recording it in `journal` (in the
    /// state directory `state_dir`).
    #[must_use]
    pub fn with_journal(mut self, journal: Arc<Journal>, state_dir: std::path::PathBuf) -> Self {
        self.journal = journal;
        self.state_dir = state_dir;
        self
    }

    /// What the workers of fault `i` of experiment `id` are given.
    fn worker_env(&self, id: &str, i: usize, dry_run: bool) -> WorkerEnv {
        WorkerEnv {
            policy: self.policy.clone(),
            state_dir: self.state_dir.clone(),
            journal: self.journal.clone(),
            dry_run,
            token: format!("{id}-{i}"),
        }
    }

    pub fn kernel_mut(&mut self) -> &mut K {
        &mut self.kernel
    }

    pub fn kernel(&self) -> &K {
        &self.kernel
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The store views read, shared with the handle.
    pub fn records(&self) -> Arc<RwLock<Records>> {
        self.records.clone()
    }

    fn read_records(&self) -> std::sync::RwLockReadGuard<'_, Records> {
        self.records
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_records(&self) -> std::sync::RwLockWriteGuard<'_, Records> {
        self.records
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Plans every fault and checks that this kernel has what each holds
    /// (attachments first, then the rest), before anything is armed.
    fn plan(&mut self, id: &str, spec: &ExperimentSpec) -> Result<Vec<faults::Armable>, SpecError> {
        let mut out = Vec::with_capacity(spec.faults.len());
        for (i, f) in spec.faults.iter().enumerate() {
            let field = faults::field_of(i, f);
            let env = self.worker_env(id, i, spec.dry_run);
            let armable = faults::prepare(f, &field, &spec.target, &env, &mut self.kernel)?;
            let (attach, rest): (Vec<Resource>, Vec<Resource>) = armable
                .resources
                .iter()
                .partition(|r| matches!(r, Resource::Attach(_)));
            for r in attach.into_iter().chain(rest) {
                if let Some(reason) = self.kernel.resource_unavailable(r) {
                    return Err(SpecError::unsupported(field, reason));
                }
            }
            out.push(armable);
        }
        Ok(out)
    }

    fn refresh_slot_limit(&mut self) -> Result<(), KernelError> {
        let limit = (0..MAX_FAULTS)
            .rev()
            .find(|s| !self.free.contains(s))
            .map_or(0, |s| s + 1);
        self.kernel.set_slot_limit(limit)
    }

    /// Arms one fault; on failure it leaves nothing behind.
    fn arm_one(&mut self, a: faults::Armable) -> Result<FaultRecord, KernelError> {
        let slot = self
            .free
            .pop_first()
            .ok_or_else(|| KernelError::Unavailable {
                mechanism: "fault slots",
                reason: "none free".into(),
            })?;
        let mut rec = FaultRecord {
            slot: Some(slot),
            resources: a.resources,
            held: 0,
            last: FaultCounters::default(),
            worker: a.worker.map(Arc::from),
            last_report: None,
        };
        let res = (|| {
            self.kernel.write_fault(slot, &a.slot, &a.pid_roles)?;
            self.refresh_slot_limit()?;
            for i in 0..rec.resources.len() {
                self.kernel.acquire(slot, rec.resources[i])?;
                rec.held += 1;
            }
            // Agent-side work last: it acts at once, the kernel part only
            // when a program meets a match.
            if let Some(w) = &rec.worker {
                w.start().map_err(|reason| KernelError::Unavailable {
                    mechanism: w.mechanism(),
                    reason,
                })?;
            }
            Ok(())
        })();
        match res {
            Ok(()) => Ok(rec),
            Err(e) => {
                self.disarm(&mut rec);
                Err(e)
            }
        }
    }

    /// Gives back what the fault holds (in reverse), keeps its final
    /// counters and frees its slot.
    fn disarm(&mut self, rec: &mut FaultRecord) {
        let Some(slot) = rec.slot.take() else { return };
        if let Some(w) = &rec.worker {
            w.stop();
            rec.last_report = Some(w.report());
        }
        for &r in rec.resources[..rec.held].iter().rev() {
            self.kernel.release(slot, r);
        }
        rec.held = 0;
        if let Ok(c) = self.kernel.read_counters(slot) {
            rec.last = c;
        }
        if let Err(e) = self.kernel.clear_fault(slot) {
            warn!(slot, error = %e, "clearing a fault slot failed");
        }
        self.free.insert(slot);
        if let Err(e) = self.refresh_slot_limit() {
            warn!(error = %e, "updating the slot limit failed");
        }
    }

    /// Arms every fault of `spec`, or none of them.
    pub fn start(&mut self, spec: ExperimentSpec) -> Result<String, EngineError> {
        self.start_measured(spec, None)
    }

    /// `start`, with the impact session opened for it (`open_impact`): its
    /// baseline ends as the faults are armed. On error the session ends too.
    pub fn start_measured(
        &mut self,
        spec: ExperimentSpec,
        impact: Option<Arc<crate::impact::Session>>,
    ) -> Result<String, EngineError> {
        self.start_with(spec, impact, Origin::default())
    }

    /// `start_measured`, recording who started it and how (`origin`; a
    /// lease's expiry counts from the moment the record is written).
    pub fn start_with(
        &mut self,
        spec: ExperimentSpec,
        impact: Option<Arc<crate::impact::Session>>,
        origin: Origin,
    ) -> Result<String, EngineError> {
        let res = self.start_inner(spec, impact.clone(), origin);
        if res.is_err() {
            self.close_impact(impact.as_ref());
        }
        res
    }

    fn start_inner(
        &mut self,
        spec: ExperimentSpec,
        impact: Option<Arc<crate::impact::Session>>,
        mut origin: Origin,
    ) -> Result<String, EngineError> {
        let host_wide = self.policy.check(&spec, self.agent_pid)?;
        let running = self.read_records().running_ids().len();
        if running >= self.max_running {
            return Err(EngineError::Exhausted(format!(
                "{running} experiments are running, the most this agent runs at once \
                 (config `max_running_experiments`); stop one first"
            )));
        }
        if self.free.len() < spec.faults.len() {
            return Err(EngineError::Exhausted(format!(
                "all {MAX_FAULTS} fault slots are in use; stop an experiment first"
            )));
        }
        let id = new_id();
        let mut plans = self.plan(&id, &spec)?;
        policy::check_host_wide(&spec, host_wide, plans.iter().map(|p| &p.slot))?;
        // The deadline counts from here, after planning: planning loads the
        // programs a fault needs, which takes seconds under emulation.
        let deadline_ns = boottime_ns() + spec.duration.as_nanos() as u64;
        for p in &mut plans {
            p.slot.deadline_ns = deadline_ns;
        }
        self.kernel.set_protected(&self.policy.protected_pids)?;
        self.kernel.refresh_ssh_ports()?;
        if let Some(s) = &impact {
            s.begin_during();
        }
        let mut armed: Vec<FaultRecord> = Vec::with_capacity(plans.len());
        for (i, a) in plans.into_iter().enumerate() {
            match self.arm_one(a) {
                Ok(rec) => armed.push(rec),
                Err(e) => {
                    for mut rec in armed {
                        self.disarm(&mut rec);
                    }
                    // What the host refuses is the request's to change:
                    // name the fault it concerns.
                    return Err(match e {
                        KernelError::Conflict { .. } | KernelError::Unavailable { .. } => {
                            SpecError::unsupported(
                                faults::field_of(i, &spec.faults[i]),
                                e.to_string(),
                            )
                            .into()
                        }
                        e => e.into(),
                    });
                }
            }
        }
        // A target that exited between validation and now may have given its
        // pid to a new process, which the entries just written would fault;
        // from here on the kernel removes a target's entries when it exits.
        if let Some(i) = spec
            .target
            .pid_starts
            .iter()
            .enumerate()
            .position(|(i, start)| {
                *start != 0 && process_start(spec.target.pids[i]) != Some(*start)
            })
        {
            for mut rec in armed {
                self.disarm(&mut rec);
            }
            return Err(SpecError::invalid(
                format!("spec.target.pids[{i}]"),
                format!(
                    "process {} exited before its faults were armed",
                    spec.target.pids[i]
                ),
            )
            .into());
        }
        let now = SystemTime::now();
        if let Some(l) = &mut origin.lease {
            l.expires_at = now + l.ttl;
        }
        let rec = Record {
            id: id.clone(),
            deadline: now + spec.duration,
            spec,
            state: State::Running,
            started_at: now,
            ended_at: None,
            message: String::new(),
            faults: armed,
            end_seq: None,
            impact,
            origin,
        };
        let mut records = self.write_records();
        records.map.insert(id.clone(), rec);
        records.prune();
        Ok(id)
    }

    /// Ends a running experiment; false if it had ended already.
    pub fn finish(&mut self, id: &str, state: State, message: &str) -> Result<bool, EngineError> {
        // Disarmed from a copy, so the records' lock is never held across
        // kernel work; readers see the experiment running until it ends.
        let (mut faults, impact) = {
            let records = self.read_records();
            let rec = records
                .map
                .get(id)
                .ok_or_else(|| EngineError::NotFound(id.to_owned()))?;
            if rec.state != State::Running {
                return Ok(false);
            }
            (rec.faults.clone(), rec.impact.clone())
        };
        // The during window ends with the faults, before they are disarmed.
        self.close_impact(impact.as_ref());
        for f in &mut faults {
            self.disarm(f);
        }
        let mut records = self.write_records();
        if let Some(rec) = records.map.get_mut(id) {
            rec.faults = faults;
            rec.state = state;
            rec.ended_at = Some(SystemTime::now());
            rec.message = message.to_owned();
        }
        Ok(true)
    }

    pub fn running_ids(&self) -> Vec<String> {
        self.read_records().running_ids()
    }

    pub fn view(&self, id: &str) -> Option<ExperimentView> {
        self.read_records().view(id, &*self.kernel.counter_source())
    }
}
