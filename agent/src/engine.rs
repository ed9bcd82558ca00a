//! The experiment engine: arms every fault of an experiment or none, keeps
//! counters, expires experiments at their deadline and stops them on demand.
//!
//! The kernel enforces each deadline by itself; the timer here only tidies
//! up (detach, free the slot) and reports.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use faultline_common::{FaultCounters, MAX_FAULTS};
use tokio::sync::broadcast;
use tracing::{Instrument as _, info, info_span, warn};

use crate::{
    domain::{Direction, ExperimentSpec, FaultSpec, SpecError},
    faults::{self, Mechanism},
    kernel::{Kernel, KernelError},
};

/// Finished experiments kept for `GetExperiment`/`ListExperiments`.
const KEEP_FINISHED: usize = 1000;

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
    pub summary: String,
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Started,
    Counters,
    Expired,
    Stopped,
    Failed,
}

#[derive(Clone, Debug)]
pub struct Event {
    pub kind: EventKind,
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
    Kernel(#[from] KernelError),
}

/// Who may never be faulted.
#[derive(Clone, Debug)]
pub struct Policy {
    pub max_duration: Duration,
    pub protected_pids: Vec<u32>,
    pub protected_comms: Vec<String>,
}

struct FaultRecord {
    slot: Option<u32>,
    mechanisms: Vec<Mechanism>,
    watched: Option<u32>,
    last: FaultCounters,
    /// Holds a reference on the first `acquired` of `mechanisms`.
    acquired: usize,
    /// Holds a reference on the fq qdisc of this interface.
    fq: Option<u32>,
}

struct Record {
    id: String,
    spec: ExperimentSpec,
    state: State,
    started_at: SystemTime,
    deadline: SystemTime,
    ended_at: Option<SystemTime>,
    message: String,
    faults: Vec<FaultRecord>,
}

pub struct Engine {
    kernel: Kernel,
    records: BTreeMap<String, Record>,
    free: BTreeSet<u32>,
    policy: Policy,
    agent_pid: u32,
}

fn boottime_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .unwrap_or_else(|_| nix::sys::time::TimeSpec::new(0, 0));
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

fn new_id() -> String {
    format!("exp-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

fn process_comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim_end().to_owned())
}

impl Engine {
    pub fn new(mut kernel: Kernel, policy: Policy) -> Result<Self, KernelError> {
        kernel.set_protected_comms(&policy.protected_comms)?;
        Ok(Self {
            kernel,
            records: BTreeMap::new(),
            free: (0..MAX_FAULTS).collect(),
            policy,
            agent_pid: std::process::id(),
        })
    }

    pub fn kernel_mut(&mut self) -> &mut Kernel {
        &mut self.kernel
    }

    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    fn check_policy(&mut self, spec: &ExperimentSpec) -> Result<(), SpecError> {
        if spec.duration > self.policy.max_duration {
            return Err(SpecError::invalid(
                "spec.duration_ms",
                format!(
                    "{} exceeds this agent's maximum of {}",
                    humantime::format_duration(spec.duration),
                    humantime::format_duration(self.policy.max_duration)
                ),
            ));
        }
        let t = &spec.target;
        for (i, pid) in t.pids.iter().enumerate() {
            let field = format!("spec.target.pids[{i}]");
            if *pid == self.agent_pid {
                return Err(SpecError::protected(
                    field,
                    "the agent itself can never be targeted",
                ));
            }
            if *pid == 1 {
                return Err(SpecError::protected(field, "PID 1 can never be targeted"));
            }
            if self.policy.protected_pids.contains(pid) {
                return Err(SpecError::protected(
                    field,
                    format!("pid {pid} is on the protected list"),
                ));
            }
            if let Some(comm) =
                process_comm(*pid).filter(|c| self.policy.protected_comms.contains(c))
            {
                return Err(SpecError::protected(
                    field,
                    format!("pid {pid} ({comm}) is a protected process"),
                ));
            }
        }
        if let Some(comm) = &t.comm
            && self.policy.protected_comms.contains(comm)
        {
            return Err(SpecError::protected(
                "spec.target.comm",
                format!("{comm:?} is a protected process name"),
            ));
        }
        let via_cgroup = t.interface.is_some() && self.kernel.interface_via_cgroup();
        for (i, f) in spec.faults.iter().enumerate() {
            if let Some(what) = faults::needs_tcx(f).filter(|_| via_cgroup) {
                let why = self.kernel.reason(Mechanism::TCX).map_or_else(
                    || "the agent is configured with interface_hooks = \"cgroup_skb\"".to_owned(),
                    |r| format!("tcx is unavailable on this kernel: {r}"),
                );
                return Err(SpecError::unsupported(
                    format!("spec.faults[{i}].{}", f.kind_name()),
                    format!(
                        "interface scope runs on cgroup_skb here, which cannot {what} packets ({why})"
                    ),
                ));
            }
            let m = faults::mechanisms_of(f, &spec.target, via_cgroup)[0];
            if let Some(reason) = self.kernel.unavailable(m) {
                return Err(SpecError::unsupported(
                    format!("spec.faults[{i}].{}", f.kind_name()),
                    format!("{} is unavailable on this kernel: {reason}", m.name()),
                ));
            }
            if let (FaultSpec::Latency(_), Some(reason)) = (f, self.kernel.fq_unavailable()) {
                return Err(SpecError::unsupported(
                    format!("spec.faults[{i}].latency"),
                    reason.to_owned(),
                ));
            }
        }
        Ok(())
    }

    fn refresh_slot_limit(&mut self) -> Result<(), KernelError> {
        let limit = (0..MAX_FAULTS)
            .rev()
            .find(|s| !self.free.contains(s))
            .map_or(0, |s| s + 1);
        self.kernel.set_slot_limit(limit)
    }

    /// Arms one fault; on failure it leaves nothing behind.
    fn arm_one(&mut self, kf: faults::KernelFault) -> Result<FaultRecord, KernelError> {
        let slot = self
            .free
            .pop_first()
            .ok_or_else(|| KernelError::Unavailable {
                mechanism: "fault slots",
                reason: "none free".into(),
            })?;
        let mut rec = FaultRecord {
            slot: Some(slot),
            mechanisms: kf.mechanisms,
            watched: None,
            last: FaultCounters::default(),
            acquired: 0,
            fq: None,
        };
        let res = (|| {
            // fq first: a delay stamped on packets means nothing without it.
            if let Some(ifindex) = kf.fq {
                self.kernel.acquire_fq(ifindex)?;
                rec.fq = Some(ifindex);
            }
            self.kernel.reset_counters(slot)?;
            self.kernel.write_pids(slot, &kf.pid_roles)?;
            self.kernel.write_slot(slot, &kf.slot)?;
            self.refresh_slot_limit()?;
            if let Some(nr) = kf.watched_syscall {
                self.kernel.watch_syscall(nr, true)?;
                rec.watched = Some(nr);
            }
            for &m in &rec.mechanisms {
                self.kernel.acquire(m)?;
                rec.acquired += 1;
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

    /// Reads final counters, clears the slot and drops the attachment.
    fn disarm(&mut self, rec: &mut FaultRecord) {
        let Some(slot) = rec.slot.take() else { return };
        if let Ok(c) = self.kernel.read_counters(slot) {
            rec.last = c;
        }
        if let Err(e) = self.kernel.clear_slot(slot) {
            warn!(slot, error = %e, "clearing a fault slot failed");
        }
        if let Some(nr) = rec.watched.take()
            && let Err(e) = self.kernel.watch_syscall(nr, false)
        {
            warn!(slot, error = %e, "unwatching a syscall failed");
        }
        for &m in &rec.mechanisms[..rec.acquired] {
            if let Err(e) = self.kernel.release(m) {
                warn!(slot, error = %e, "detaching failed");
            }
        }
        rec.acquired = 0;
        if let Some(ifindex) = rec.fq.take() {
            self.kernel.release_fq(ifindex);
        }
        self.free.insert(slot);
        if let Err(e) = self.refresh_slot_limit() {
            warn!(error = %e, "updating the slot limit failed");
        }
    }

    /// Arms every fault of `spec`, or none of them.
    pub fn start(&mut self, spec: ExperimentSpec) -> Result<ExperimentView, EngineError> {
        self.check_policy(&spec)?;
        if self.free.len() < spec.faults.len() {
            return Err(EngineError::Exhausted(format!(
                "all {MAX_FAULTS} fault slots are in use; stop an experiment first"
            )));
        }
        self.kernel.set_protected(&self.policy.protected_pids)?;

        let deadline_ns = boottime_ns() + spec.duration.as_nanos() as u64;
        let mut armed: Vec<FaultRecord> = Vec::with_capacity(spec.faults.len());
        let via_cgroup =
            spec.target.interface.is_some() && self.kernel.interface_via_cgroup_probed();
        for f in &spec.faults {
            let mut kf = faults::to_kernel(f, &spec.target, deadline_ns, spec.dry_run, via_cgroup);
            // Where fq can hold packets, an interface's egress bandwidth is
            // shaped rather than policed (TCP then sees a slow link instead
            // of bursts of loss).
            if let FaultSpec::Bandwidth(b) = f
                && kf.slot.net.ifindex != 0
                && !via_cgroup
                && b.direction != Direction::Ingress
                && self.kernel.fq_unavailable().is_none()
            {
                kf.slot.flags |= faultline_common::flags::SHAPE;
                kf.fq = Some(kf.slot.net.ifindex);
            }
            // Where the kernel refuses the sock_ops program, the cgroup
            // connect hooks pace the TCP connections the target opens.
            if let FaultSpec::Bandwidth(b) = f
                && kf.slot.net.ifindex == 0
                && b.direction != Direction::Ingress
                && self.kernel.sock_ops_reason().is_some()
                && self.kernel.unavailable(Mechanism::CgroupSockAddr).is_none()
            {
                kf.mechanisms.push(Mechanism::CgroupSockAddr);
            }
            match self.arm_one(kf) {
                Ok(rec) => armed.push(rec),
                Err(e) => {
                    for mut rec in armed {
                        self.disarm(&mut rec);
                    }
                    return Err(e.into());
                }
            }
        }
        let now = SystemTime::now();
        let id = new_id();
        let rec = Record {
            id: id.clone(),
            deadline: now + spec.duration,
            spec,
            state: State::Running,
            started_at: now,
            ended_at: None,
            message: String::new(),
            faults: armed,
        };
        self.records.insert(id.clone(), rec);
        self.prune();
        Ok(self.view(&id).expect("just inserted"))
    }

    /// Ends a running experiment; a finished one is returned unchanged.
    pub fn finish(
        &mut self,
        id: &str,
        state: State,
        message: &str,
    ) -> Result<(ExperimentView, bool), EngineError> {
        let mut rec = self
            .records
            .remove(id)
            .ok_or_else(|| EngineError::NotFound(id.to_owned()))?;
        let changed = rec.state == State::Running;
        if changed {
            for f in &mut rec.faults {
                self.disarm(f);
            }
            rec.state = state;
            rec.ended_at = Some(SystemTime::now());
            rec.message = message.to_owned();
        }
        self.records.insert(id.to_owned(), rec);
        Ok((self.view(id).expect("present"), changed))
    }

    pub fn running_ids(&self) -> Vec<String> {
        self.records
            .values()
            .filter(|r| r.state == State::Running)
            .map(|r| r.id.clone())
            .collect()
    }

    pub fn view(&self, id: &str) -> Option<ExperimentView> {
        let r = self.records.get(id)?;
        let faults = r
            .faults
            .iter()
            .zip(&r.spec.faults)
            .enumerate()
            .map(|(i, (f, spec))| {
                let c = f
                    .slot
                    .and_then(|s| self.kernel.read_counters(s).ok())
                    .unwrap_or(f.last);
                FaultView {
                    index: i as u32,
                    kind: spec.kind_name(),
                    mechanism: f.mechanisms[0].name(),
                    matched: c.matched,
                    injected: c.injected,
                    summary: spec.summary(),
                }
            })
            .collect();
        Some(ExperimentView {
            id: r.id.clone(),
            spec: r.spec.clone(),
            state: r.state,
            started_at: r.started_at,
            deadline: r.deadline,
            ended_at: r.ended_at,
            message: r.message.clone(),
            faults,
        })
    }

    /// All experiments, oldest first.
    pub fn list(&self, running_only: bool) -> Vec<ExperimentView> {
        let mut v: Vec<ExperimentView> = self
            .records
            .values()
            .filter(|r| !running_only || r.state == State::Running)
            .filter_map(|r| self.view(&r.id))
            .collect();
        v.sort_by_key(|e| e.started_at);
        v
    }

    fn prune(&mut self) {
        let finished: Vec<(SystemTime, String)> = self
            .records
            .values()
            .filter(|r| r.state != State::Running)
            .map(|r| (r.started_at, r.id.clone()))
            .collect();
        if finished.len() > KEEP_FINISHED {
            let mut finished = finished;
            finished.sort();
            for (_, id) in finished.iter().take(finished.len() - KEEP_FINISHED) {
                self.records.remove(id);
            }
        }
    }
}

/// Shared handle used by the gRPC service and the expiry timers.
#[derive(Clone)]
pub struct EngineHandle {
    inner: Arc<Mutex<Engine>>,
    events: broadcast::Sender<Event>,
}

impl EngineHandle {
    pub fn new(engine: Engine) -> Self {
        let (events, _) = broadcast::channel(4096);
        Self {
            inner: Arc::new(Mutex::new(engine)),
            events,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Engine> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn emit(&self, kind: EventKind, experiment: ExperimentView, message: String) {
        let _ = self.events.send(Event {
            kind,
            at: SystemTime::now(),
            experiment,
            message,
        });
    }

    pub fn start(&self, spec: ExperimentSpec) -> Result<ExperimentView, EngineError> {
        let duration = spec.duration;
        let name = spec.name.clone();
        let view = self.lock().start(spec)?;
        let span = info_span!("experiment", id = %view.id, name = %name);
        span.in_scope(|| {
            for f in &view.faults {
                info!(fault = f.index, kind = f.kind, mechanism = f.mechanism, summary = %f.summary, "fault armed");
            }
            info!(duration = %humantime::format_duration(duration), dry_run = view.spec.dry_run, "experiment started");
        });
        self.emit(EventKind::Started, view.clone(), String::new());
        let me = self.clone();
        let id = view.id.clone();
        tokio::spawn(
            async move {
                tokio::time::sleep(duration).await;
                me.end(&id, State::Expired, "reached its deadline");
            }
            .instrument(span),
        );
        Ok(view)
    }

    fn end(&self, id: &str, state: State, message: &str) -> Option<ExperimentView> {
        let res = self.lock().finish(id, state, message);
        match res {
            Ok((view, true)) => {
                info!(
                    id,
                    state = state.name(),
                    matched = view.faults.iter().map(|f| f.matched).sum::<u64>(),
                    injected = view.faults.iter().map(|f| f.injected).sum::<u64>(),
                    "experiment ended"
                );
                let kind = match state {
                    State::Expired => EventKind::Expired,
                    State::Failed => EventKind::Failed,
                    State::Running | State::Stopped => EventKind::Stopped,
                };
                self.emit(kind, view.clone(), message.to_owned());
                Some(view)
            }
            Ok((view, false)) => Some(view),
            Err(_) => None,
        }
    }

    pub fn stop(&self, id: &str) -> Result<ExperimentView, EngineError> {
        self.end(id, State::Stopped, "stopped by request")
            .ok_or_else(|| EngineError::NotFound(id.to_owned()))
    }

    pub fn stop_all(&self, message: &str) -> Vec<String> {
        let ids = self.lock().running_ids();
        ids.into_iter()
            .filter(|id| self.end(id, State::Stopped, message).is_some())
            .collect()
    }
}
