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

use super::{Engine, EngineError, Event, EventKind, ExperimentView, Records, State};
use crate::{
    caps::{self, Capability},
    domain::ExperimentSpec,
    kernel::{CounterSource, Kernel, KernelOps as _},
};

/// Shared handle used by the gRPC service and the expiry timers.
#[derive(Clone)]
pub struct EngineHandle {
    inner: Arc<Mutex<Engine<Kernel>>>,
    records: Arc<RwLock<Records>>,
    counters: Arc<dyn CounterSource + Send + Sync>,
    events: broadcast::Sender<Event>,
}

/// Runs `f` on the blocking pool (or here, outside a runtime).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
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
        let (events, _) = broadcast::channel(4096);
        Self {
            records: engine.records(),
            counters: engine.kernel().counter_source(),
            inner: Arc::new(Mutex::new(engine)),
            events,
        }
    }

    /// The engine itself, for slow work; never hold it on an async worker.
    pub fn lock(&self) -> MutexGuard<'_, Engine<Kernel>> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn records(&self) -> std::sync::RwLockReadGuard<'_, Records> {
        self.records
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub fn view(&self, id: &str) -> Option<ExperimentView> {
        self.records().view(id, &*self.counters)
    }

    pub fn list(&self, running_only: bool) -> Vec<ExperimentView> {
        self.records().list(running_only, &*self.counters)
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
        let _ = self.events.send(Event {
            kind,
            at: SystemTime::now(),
            experiment,
            // Shown as it is in `watch` and by controllers: no controls.
            message: escape_controls(message).into_owned(),
        });
    }

    pub async fn start(&self, spec: ExperimentSpec) -> Result<ExperimentView, EngineError> {
        let duration = spec.duration;
        let name = spec.name.clone();
        let me = self.clone();
        let id = blocking(move || me.lock().start(spec)).await?;
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
        self.emit(EventKind::Started, view.clone(), "");
        let me = self.clone();
        tokio::spawn(
            async move {
                tokio::time::sleep(duration).await;
                me.end(id, State::Expired, "reached its deadline").await;
            }
            .instrument(span),
        );
        Ok(view)
    }

    async fn end(&self, id: String, state: State, message: &'static str) -> Option<ExperimentView> {
        let me = self.clone();
        let key = id.clone();
        let changed = blocking(move || me.lock().finish(&key, state, message)).await;
        let view = self.view(&id);
        match (changed, view) {
            (Ok(true), Some(view)) => {
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
                self.emit(kind, view.clone(), message);
                Some(view)
            }
            (Ok(false), view) => view,
            _ => None,
        }
    }

    pub async fn stop(&self, id: &str) -> Result<ExperimentView, EngineError> {
        self.end(id.to_owned(), State::Stopped, "stopped by request")
            .await
            .ok_or_else(|| EngineError::NotFound(id.to_owned()))
    }

    pub async fn stop_all(&self, message: &'static str) -> Vec<String> {
        let mut stopped = Vec::new();
        for id in self.running_ids() {
            if self
                .end(id.clone(), State::Stopped, message)
                .await
                .is_some()
            {
                stopped.push(id);
            }
        }
        stopped
    }
}
