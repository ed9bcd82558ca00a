//! The experiments the engine knows, readable without the engine's lock:
//! the engine writes a record when it arms or ends an experiment (briefly,
//! under a write lock); views read it and the live counters through their
//! own handle on the counters map.

use std::{
    collections::{BTreeMap, HashMap},
    time::SystemTime,
};

use faultline_common::FaultCounters;

use super::{EventKind, ExperimentView, FaultView, Origin, State};
use std::sync::Arc;

use crate::{
    domain::ExperimentSpec,
    kernel::{CounterSource, Resource},
    worker::{Report, Worker},
};

#[derive(Clone)]
pub(super) struct FaultRecord {
    pub slot: Option<u32>,
    pub resources: Vec<Resource>,
    /// Holds the first `held` of `resources`.
    pub held: usize,
    /// Counters when the fault was disarmed.
    pub last: FaultCounters,
    /// Its agent-side work, if any.
    pub worker: Option<Arc<dyn Worker>>,
    /// The work's report when it was stopped.
    pub last_report: Option<Report>,
}

impl FaultRecord {
    /// The mechanism shown for the fault: its first attachment, else its
    /// agent-side work.
    fn mechanism(&self) -> &'static str {
        self.resources
            .iter()
            .find_map(|r| match r {
                Resource::Attach(m) => Some(m.name()),
                _ => None,
            })
            .or_else(|| self.worker.as_ref().map(|w| w.mechanism()))
            .unwrap_or("none")
    }

    /// The work's report: live while armed, the final one after.
    pub fn report(&self) -> Option<Report> {
        match (&self.last_report, &self.worker) {
            (Some(r), _) => Some(r.clone()),
            (None, Some(w)) if self.slot.is_some() => Some(w.report()),
            _ => None,
        }
    }
}

pub(super) struct Record {
    pub id: String,
    pub spec: ExperimentSpec,
    pub state: State,
    pub started_at: SystemTime,
    pub deadline: SystemTime,
    pub ended_at: Option<SystemTime>,
    pub message: String,
    pub faults: Vec<FaultRecord>,
    /// Sequence number of the event that announced the end; `None` while
    /// running, and for the moment between the end and its event.
    pub end_seq: Option<u64>,
    /// Its impact session: live figures while running (read here, without
    /// the engine's lock), the final ones after.
    pub impact: Option<Arc<crate::impact::Session>>,
    pub origin: Origin,
}

/// Every experiment, by id.
pub struct Records {
    pub(super) map: BTreeMap<String, Record>,
    /// Ended experiments kept for `GetExperiment`/`ListExperiments`.
    pub(super) keep_ended: usize,
    /// Experiments an event stream has announced as running and whose end
    /// it has not passed on yet: never pruned, so a stream that lags can
    /// still deliver their final state. Counted per stream.
    pins: HashMap<String, usize>,
}

/// What a lagging event stream must deliver again, read under one lock.
pub struct CatchUp {
    /// Ended since the stream's last event, oldest end first.
    pub ended: Vec<(EventKind, ExperimentView)>,
    /// Running but not announced to the stream yet; now pinned for it.
    pub started: Vec<ExperimentView>,
}

impl Default for Records {
    fn default() -> Self {
        Self {
            map: BTreeMap::new(),
            keep_ended: crate::limits::Limits::default().keep_ended,
            pins: HashMap::new(),
        }
    }
}

impl Records {
    pub fn view(&self, id: &str, counters: &dyn CounterSource) -> Option<ExperimentView> {
        let r = self.map.get(id)?;
        let faults = r
            .faults
            .iter()
            .zip(&r.spec.faults)
            .enumerate()
            .map(|(i, (f, spec))| {
                let c = f.slot.and_then(|s| counters.read(s)).unwrap_or(f.last);
                let report = f.report().unwrap_or_default();
                FaultView {
                    index: i as u32,
                    kind: spec.kind(),
                    mechanism: f.mechanism(),
                    matched: report.matched.unwrap_or(c.matched),
                    injected: report.injected.unwrap_or(c.injected),
                    not_injected_map_full: c.not_injected_map_full,
                    summary: spec.summary(),
                    metrics: report.metrics,
                    actions: report.actions,
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
            impact: r.impact.as_ref().map(|s| s.view()),
            origin: r.origin.clone(),
        })
    }

    /// A renewed lease's new expiry, shown in views.
    pub(super) fn set_lease(&mut self, id: &str, lease: super::lease::LeaseInfo) {
        if let Some(r) = self.map.get_mut(id) {
            r.origin.lease = Some(lease);
        }
    }

    /// Whether `id` is running, has a lease, or why it cannot be renewed.
    pub(super) fn renewable(&self, id: &str) -> Result<(), super::lease::NotRenewed> {
        use super::lease::NotRenewed;
        let r = self.map.get(id).ok_or(NotRenewed::NotFound)?;
        match (r.state, &r.origin.lease) {
            (State::Running, Some(_)) => Ok(()),
            (State::Running, None) => Err(NotRenewed::NoLease),
            (state, _) => Err(NotRenewed::Ended(state.name())),
        }
    }

    /// Whether a running experiment has agent-side work.
    pub fn has_workers(&self, id: &str) -> bool {
        self.map
            .get(id)
            .is_some_and(|r| r.faults.iter().any(|f| f.worker.is_some()))
    }

    /// Why a running experiment's agent-side work failed, if it did.
    pub fn failure(&self, id: &str) -> Option<String> {
        let r = self.map.get(id).filter(|r| r.state == State::Running)?;
        r.faults.iter().enumerate().find_map(|(i, f)| {
            f.slot?;
            let failure = f.worker.as_ref()?.report().failure?;
            Some(format!(
                "fault {i} ({}): {failure}",
                r.spec.faults[i].kind()
            ))
        })
    }

    /// All experiments, oldest first.
    pub fn list(&self, running_only: bool, counters: &dyn CounterSource) -> Vec<ExperimentView> {
        let mut v: Vec<ExperimentView> = self
            .map
            .values()
            .filter(|r| !running_only || r.state == State::Running)
            .filter_map(|r| self.view(&r.id, counters))
            .collect();
        v.sort_by_key(|e| e.started_at);
        v
    }

    /// The running experiments and the `ended` that ended last (what the
    /// metrics endpoint shows: a bounded set of series).
    pub fn recent(&self, ended: usize, counters: &dyn CounterSource) -> Vec<ExperimentView> {
        let mut done: Vec<(SystemTime, &str)> = self
            .map
            .values()
            .filter(|r| r.state != State::Running)
            .map(|r| (r.ended_at.unwrap_or(r.started_at), r.id.as_str()))
            .collect();
        done.sort_unstable();
        let last = done.iter().rev().take(ended).map(|(_, id)| *id);
        self.map
            .values()
            .filter(|r| r.state == State::Running)
            .map(|r| r.id.as_str())
            .chain(last)
            .filter_map(|id| self.view(id, counters))
            .collect()
    }

    /// Walks the experiments oldest first (by start, then id), from just
    /// after `after`, giving each view to `take` until it declines one
    /// (returns false); true if it declined one, i.e. some remain.
    pub fn walk(
        &self,
        running_only: bool,
        after: Option<(SystemTime, &str)>,
        counters: &dyn CounterSource,
        take: &mut dyn FnMut(ExperimentView) -> bool,
    ) -> bool {
        let mut keys: Vec<(SystemTime, &str)> = self
            .map
            .values()
            .filter(|r| !running_only || r.state == State::Running)
            .map(|r| (r.started_at, r.id.as_str()))
            .filter(|k| after.is_none_or(|a| *k > a))
            .collect();
        keys.sort_unstable();
        keys.into_iter()
            .filter_map(|(_, id)| self.view(id, counters))
            .any(|v| !take(v))
    }

    pub fn running_ids(&self) -> Vec<String> {
        self.map
            .values()
            .filter(|r| r.state == State::Running)
            .map(|r| r.id.clone())
            .collect()
    }

    /// Pins the running experiments `wanted` selects; returns their ids.
    pub fn pin_running(&mut self, wanted: &dyn Fn(&str) -> bool) -> Vec<String> {
        let ids: Vec<String> = self
            .running_ids()
            .into_iter()
            .filter(|id| wanted(id))
            .collect();
        for id in &ids {
            *self.pins.entry(id.clone()).or_default() += 1;
        }
        ids
    }

    /// Pins `id` if it is still known; false if it was pruned already.
    pub fn pin(&mut self, id: &str) -> bool {
        if !self.map.contains_key(id) {
            return false;
        }
        *self.pins.entry(id.to_owned()).or_default() += 1;
        true
    }

    pub fn unpin(&mut self, id: &str) {
        if let Some(n) = self.pins.get_mut(id) {
            *n -= 1;
            if *n == 0 {
                self.pins.remove(id);
            }
        }
    }

    pub(super) fn set_end_seq(&mut self, id: &str, seq: u64) {
        if let Some(r) = self.map.get_mut(id) {
            r.end_seq = Some(seq);
        }
    }

    /// For a stream whose last event was `since` and that has announced
    /// `announced` as running: the experiments `wanted` selects that ended
    /// after `since` (or are announced and ended), and those running that
    /// it has not announced, which are pinned for it here.
    pub fn catch_up(
        &mut self,
        since: u64,
        announced: &dyn Fn(&str) -> bool,
        wanted: &dyn Fn(&str) -> bool,
        counters: &dyn CounterSource,
    ) -> CatchUp {
        let mut ended: Vec<(u64, EventKind, ExperimentView)> = Vec::new();
        let mut started = Vec::new();
        for r in self.map.values().filter(|r| wanted(&r.id)) {
            let Some(view) = self.view(&r.id, counters) else {
                continue;
            };
            match (r.state, r.end_seq) {
                (State::Running, _) if !announced(&r.id) => started.push(view),
                (State::Running, _) => {}
                // Its event is not out yet; it will follow in the stream,
                // where the caller drops it as delivered.
                (state, None) => ended.push((u64::MAX, EventKind::ending(state), view)),
                (state, Some(seq)) if seq > since || announced(&r.id) => {
                    ended.push((seq, EventKind::ending(state), view));
                }
                _ => {}
            }
        }
        for v in &started {
            *self.pins.entry(v.id.clone()).or_default() += 1;
        }
        ended.sort_by_key(|(seq, _, v)| (*seq, v.ended_at));
        started.sort_by_key(|v| v.started_at);
        CatchUp {
            ended: ended.into_iter().map(|(_, k, v)| (k, v)).collect(),
            started,
        }
    }

    /// Forgets the oldest finished experiments beyond `keep_ended`,
    /// except those an event stream still owes its subscriber.
    pub(super) fn prune(&mut self) {
        let mut finished: Vec<(SystemTime, String)> = self
            .map
            .values()
            .filter(|r| r.state != State::Running && !self.pins.contains_key(&r.id))
            .map(|r| (r.started_at, r.id.clone()))
            .collect();
        if finished.len() > self.keep_ended {
            finished.sort();
            for (_, id) in finished.iter().take(finished.len() - self.keep_ended) {
                self.map.remove(id);
            }
        }
    }
}
