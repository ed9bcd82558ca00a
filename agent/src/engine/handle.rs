//! The engine as the async server uses it. Work that may be slow (program
//! loading and verification, TCX attachment, qdisc changes over netlink) runs on the blocking pool
//! under the engine's lock; reads take only the records' lock, so they never
//! wait behind a slow start.

use std::{
    sync::{Arc, Mutex, MutexGuard, RwLock},
    time::SystemTime,
};

use faultline_proto::text::{Escaped, escape_controls};
use tokio::sync::broadcast;
use tracing::{Instrument as _, info, info_span};

use super::{
    CatchUp, Engine, EngineError, Event, EventKind, ExperimentView, Origin, Records, State,
    lease::{Lapse, Leases},
    request_ids::RequestIds,
};
use crate::{
    caps::{self, Capability},
    domain::ExperimentSpec,
    kernel::{CounterSource, Kernel, KernelOps as _},
};

/// How often a running experiment's agent-side work is checked for a
/// failure of its own.
const WORK_CHECK: std::time::Duration = std::time::Duration::from_millis(250);

/// Shared handle used by the gRPC service and the expiry timers.
#[derive(Clone)]
pub struct EngineHandle {
    inner: Arc<Mutex<Engine<Kernel>>>,
    records: Arc<RwLock<Records>>,
    counters: Arc<dyn CounterSource + Send + Sync>,
    /// Shared views: a receiver's copy is a reference count.
    events: broadcast::Sender<Arc<Event>>,
    /// The last event's sequence number; held while sending, so the
    /// stream's order is the numbers' order.
    seq: Arc<Mutex<u64>>,
    /// The running experiments' lease timers (`start.rs`).
    pub(super) leases: Arc<Leases>,
    pub(super) request_ids: RequestIds,
    /// The lease of an experiment started over TCP that asks for none.
    default_lease: Option<std::time::Duration>,
}

/// Runs `f` on the blocking pool (or here, outside a runtime).
pub(super) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => rt
            .spawn_blocking(f)
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())),
        Err(_) => f(),
    }
}

impl EngineHandle {
    pub fn new(engine: Engine<Kernel>) -> Self {
        let (events, _) = broadcast::channel(crate::limits::EVENT_BUFFER);
        Self {
            records: engine.records(),
            counters: engine.kernel().counter_source(),
            inner: Arc::new(Mutex::new(engine)),
            events,
            seq: Arc::default(),
            leases: Arc::default(),
            request_ids: RequestIds::default(),
            default_lease: Some(super::lease::DEFAULT_TTL),
        }
    }

    /// Sets the lease of experiments started over TCP that ask for none
    /// (None: no lease unless asked).
    #[must_use]
    pub fn with_default_lease(mut self, ttl: Option<std::time::Duration>) -> Self {
        self.default_lease = ttl;
        self
    }

    pub fn default_lease(&self) -> Option<std::time::Duration> {
        self.default_lease
    }

    /// Experiments stopped because their lease expired, since start-up
    /// (for the metrics endpoint).
    pub fn lease_expiries(&self) -> u64 {
        self.leases.expiries()
    }

    /// The engine itself, for slow work; never hold it on an async worker.
    pub fn lock(&self) -> MutexGuard<'_, Engine<Kernel>> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn records(&self) -> std::sync::RwLockReadGuard<'_, Records> {
        self.records
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn write_records(&self) -> std::sync::RwLockWriteGuard<'_, Records> {
        self.records
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn seq(&self) -> MutexGuard<'_, u64> {
        self.seq
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A receiver of every later event, and the sequence number of the
    /// last event before it.
    pub fn subscribe(&self) -> (broadcast::Receiver<Arc<Event>>, u64) {
        let seq = self.seq();
        (self.events.subscribe(), *seq)
    }

    /// Keeps the running experiments `wanted` selects in the records until
    /// `unpin`; returns their ids.
    pub fn pin_running(&self, wanted: &dyn Fn(&str) -> bool) -> Vec<String> {
        self.write_records().pin_running(wanted)
    }

    /// Keeps `id` in the records until `unpin`; false if it is gone.
    pub fn pin(&self, id: &str) -> bool {
        self.write_records().pin(id)
    }

    pub fn unpin(&self, id: &str) {
        self.write_records().unpin(id);
    }

    /// See `Records::catch_up`.
    pub fn catch_up(
        &self,
        since: u64,
        announced: &dyn Fn(&str) -> bool,
        wanted: &dyn Fn(&str) -> bool,
    ) -> CatchUp {
        self.write_records()
            .catch_up(since, announced, wanted, &*self.counters)
    }

    pub fn view(&self, id: &str) -> Option<ExperimentView> {
        self.records().view(id, &*self.counters)
    }

    pub fn list(&self, running_only: bool) -> Vec<ExperimentView> {
        self.records().list(running_only, &*self.counters)
    }

    /// See `Records::recent`.
    pub fn recent(&self, ended: usize) -> Vec<ExperimentView> {
        self.records().recent(ended, &*self.counters)
    }

    /// See `Records::walk`: one page's walk, under one read lock.
    pub fn walk(
        &self,
        running_only: bool,
        after: Option<(SystemTime, &str)>,
        take: &mut dyn FnMut(ExperimentView) -> bool,
    ) -> bool {
        self.records()
            .walk(running_only, after, &*self.counters, take)
    }

    pub fn running_ids(&self) -> Vec<String> {
        self.records().running_ids()
    }

    /// Capability rows (only those of `only`, if given), loading what the
    /// answer needs; and the agent's maximum duration.
    pub async fn capabilities(&self, only: Vec<String>) -> (Vec<Capability>, std::time::Duration) {
        let me = self.clone();
        blocking(move || {
            let mut e = me.lock();
            let max = e.policy().max_duration;
            (caps::probe(e.kernel_mut(), &only), max)
        })
        .await
    }

    fn emit(&self, kind: EventKind, experiment: ExperimentView, message: &str) {
        let mut seq = self.seq();
        *seq += 1;
        if kind != EventKind::Started {
            // Before the send: a stream catching up after a lag then
            // either sees the number or finds the event still to come.
            self.write_records().set_end_seq(&experiment.id, *seq);
        }
        let _ = self.events.send(Arc::new(Event {
            kind,
            seq: *seq,
            at: SystemTime::now(),
            experiment,
            // Shown as it is in `watch` and by controllers: no controls.
            message: escape_controls(message).into_owned(),
        }));
    }

    pub async fn start(&self, spec: ExperimentSpec) -> Result<ExperimentView, EngineError> {
        self.start_as(spec, super::StartOptions::default()).await
    }

    /// Starts one experiment, recording its origin; arms its lease timer
    /// (if it has a lease) before it returns.
    pub(super) async fn start_once(
        &self,
        spec: ExperimentSpec,
        origin: Origin,
    ) -> Result<ExperimentView, EngineError> {
        let duration = spec.duration;
        let name = spec.name.clone();
        let me = self.clone();
        let id = blocking(move || {
            // The baseline is waited out without the engine's lock.
            let impact = me.lock().open_impact(&spec)?;
            if impact.is_some() {
                std::thread::sleep(crate::impact::BASELINE);
            }
            me.lock().start_with(spec, impact, origin)
        })
        .await?;
        let view = self
            .view(&id)
            .ok_or_else(|| EngineError::NotFound(id.clone()))?;
        // Names, labels and summaries (comm, paths, domains) are the
        // caller's text: escaped, so they cannot forge log lines.
        let span = info_span!("experiment", id = %view.id, name = %Escaped(&name));
        let labels: Vec<String> = view
            .spec
            .labels
            .iter()
            .map(|(k, v)| format!("{}={}", escape_controls(k), escape_controls(v)))
            .collect();
        span.in_scope(|| {
            for f in &view.faults {
                info!(fault = f.index, kind = f.kind, mechanism = f.mechanism, summary = %Escaped(&f.summary), "fault armed");
            }
            info!(
                duration = %humantime::format_duration(duration),
                dry_run = view.spec.dry_run,
                labels = %labels.join(","),
                "experiment started"
            );
        });
        // Counted from the same moment as the lease's expiry in the record.
        let mut lapse: Option<Lapse> = view.origin.lease.map(|l| self.leases.arm(&id, l.ttl));
        self.emit(EventKind::Started, view.clone(), "");
        let me = self.clone();
        let watch_work = self.records().has_workers(&id);
        tokio::spawn(
            async move {
                let deadline = tokio::time::Instant::now() + duration;
                let mut tick = tokio::time::interval(WORK_CHECK);
                let lapsed = async {
                    match lapse.as_mut() {
                        Some(l) => l.lapsed().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::pin!(lapsed);
                loop {
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline) => {
                            me.end(id, State::Expired, "reached its deadline".into()).await;
                            break;
                        }
                        () = &mut lapsed => {
                            // No renewal is taken from here on.
                            me.leases.remove(&id);
                            if me.end_inner(id, State::Stopped, "lease expired".into()).await.0 {
                                me.leases.count_expiry();
                            }
                            break;
                        }
                        _ = tick.tick(), if watch_work => {
                            // Agent-side work that failed by itself (an
                            // OOM-killed stressor) ends its experiment.
                            let failure = me.records().failure(&id);
                            if let Some(why) = failure {
                                me.end(id, State::Failed, why).await;
                                break;
                            }
                            let running = me.records().map.get(&id).is_some_and(|r| r.state == State::Running);
                            if !running {
                                break;
                            }
                        }
                    }
                }
            }
            .instrument(span),
        );
        Ok(view)
    }

    async fn end(&self, id: String, state: State, message: String) -> Option<ExperimentView> {
        self.end_inner(id, state, message).await.1
    }

    /// Ends `id` (if running): whether this call ended it, and its view.
    async fn end_inner(
        &self,
        id: String,
        state: State,
        message: String,
    ) -> (bool, Option<ExperimentView>) {
        let me = self.clone();
        let key = id.clone();
        let msg = message.clone();
        let changed = blocking(move || me.lock().finish(&key, state, &msg)).await;
        if matches!(changed, Ok(true)) {
            self.leases.remove(&id);
        }
        let view = self.view(&id);
        let changed = matches!(changed, Ok(true));
        match (changed, view) {
            (true, Some(view)) => {
                info!(
                    id,
                    state = state.name(),
                    reason = %Escaped(&message),
                    matched = view.faults.iter().map(|f| f.matched).sum::<u64>(),
                    injected = view.faults.iter().map(|f| f.injected).sum::<u64>(),
                    "experiment ended"
                );
                self.emit(EventKind::ending(state), view.clone(), &message);
                (true, Some(view))
            }
            (changed, view) => (changed, view),
        }
    }

    pub async fn stop(&self, id: &str) -> Result<ExperimentView, EngineError> {
        self.end(id.to_owned(), State::Stopped, "stopped by request".into())
            .await
            .ok_or_else(|| EngineError::NotFound(id.to_owned()))
    }

    pub async fn stop_all(&self, message: &'static str) -> Vec<String> {
        let mut stopped = Vec::new();
        for id in self.running_ids() {
            if self
                .end(id.clone(), State::Stopped, message.into())
                .await
                .is_some()
            {
                stopped.push(id);
            }
        }
        stopped
    }
}
