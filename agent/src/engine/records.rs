//! The experiments the engine knows, readable without the engine's lock:
//! the engine writes a record when it arms or ends an experiment (briefly,
//! under a write lock); views read it and the live counters through their
//! own handle on the counters map.

use std::{collections::BTreeMap, time::SystemTime};

use faultline_common::FaultCounters;

use super::{ExperimentView, FaultView, State};
use crate::{
    domain::ExperimentSpec,
    kernel::{CounterSource, Resource},
};

/// Finished experiments kept for `GetExperiment`/`ListExperiments`.
const KEEP_FINISHED: usize = 1000;

#[derive(Clone)]
pub(super) struct FaultRecord {
    pub slot: Option<u32>,
    pub resources: Vec<Resource>,
    /// Holds the first `held` of `resources`.
    pub held: usize,
    /// Counters when the fault was disarmed.
    pub last: FaultCounters,
}

impl FaultRecord {
    /// The mechanism shown for the fault: its first attachment.
    fn mechanism(&self) -> &'static str {
        self.resources
            .iter()
            .find_map(|r| match r {
                Resource::Attach(m) => Some(m.name()),
                _ => None,
            })
            .unwrap_or("none")
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
}

/// Every experiment, by id.
#[derive(Default)]
pub struct Records {
    pub(super) map: BTreeMap<String, Record>,
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
                FaultView {
                    index: i as u32,
                    kind: spec.kind(),
                    mechanism: f.mechanism(),
                    matched: c.matched,
                    injected: c.injected,
                    not_injected_map_full: c.not_injected_map_full,
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

    pub fn running_ids(&self) -> Vec<String> {
        self.map
            .values()
            .filter(|r| r.state == State::Running)
            .map(|r| r.id.clone())
            .collect()
    }

    /// Forgets the oldest finished experiments beyond `KEEP_FINISHED`.
    pub(super) fn prune(&mut self) {
        let mut finished: Vec<(SystemTime, String)> = self
            .map
            .values()
            .filter(|r| r.state != State::Running)
            .map(|r| (r.started_at, r.id.clone()))
            .collect();
        if finished.len() > KEEP_FINISHED {
            finished.sort();
            for (_, id) in finished.iter().take(finished.len() - KEEP_FINISHED) {
                self.map.remove(id);
            }
        }
    }
}
