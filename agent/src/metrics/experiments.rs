//! The experiments' metrics, read at scrape time from the engine's records
//! (their read lock only, never the engine's): running experiments by kind,
//! and each fault's matched and injected counters, live from the kernel's
//! counters map as `GetExperiment` reports them.
//!
//! Cardinality is bounded: the per-fault series cover the running
//! experiments and the `KEEP_ENDED` that ended last (so a scrape after an
//! experiment's end still sees its final counts); older ones drop out.

use std::collections::BTreeMap;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

use crate::{
    engine::{EngineHandle, State},
    faults,
};

/// Ended experiments whose per-fault series are still shown.
pub const KEEP_ENDED: usize = 32;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// One fault of one experiment.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaultLabels {
    experiment: String,
    name: String,
    kind: &'static str,
    index: u32,
}

pub struct Experiments {
    engine: EngineHandle,
}

impl Experiments {
    pub fn new(engine: EngineHandle) -> Self {
        Self { engine }
    }
}

impl std::fmt::Debug for Experiments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Experiments")
    }
}

impl Collector for Experiments {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let views = self.engine.recent(KEEP_ENDED);

        // Every kind, 0 when none runs: a series that exists is easier to
        // alert on than one that appears.
        let mut active: BTreeMap<&'static str, i64> =
            faults::KINDS.iter().map(|k| (*k, 0)).collect();
        for v in views.iter().filter(|v| v.state == State::Running) {
            let mut kinds: Vec<&'static str> = v.faults.iter().map(|f| f.kind).collect();
            kinds.sort_unstable();
            kinds.dedup();
            for k in kinds {
                *active.entry(k).or_default() += 1;
            }
        }
        let mut m = encoder.encode_descriptor(
            "faultline_experiments_active",
            "Running experiments with a fault of this kind (one with two kinds counts under both)",
            None,
            MetricType::Gauge,
        )?;
        for (kind, n) in active {
            let labels = KindLabel { kind };
            ConstGauge::new(n).encode(m.encode_family(&labels)?)?;
        }

        let faults: Vec<(FaultLabels, u64, u64)> = views
            .iter()
            .flat_map(|v| {
                v.faults.iter().map(|f| {
                    (
                        FaultLabels {
                            experiment: v.id.clone(),
                            name: v.spec.name.clone(),
                            kind: f.kind,
                            index: f.index,
                        },
                        f.matched,
                        f.injected,
                    )
                })
            })
            .collect();
        let mut m = encoder.encode_descriptor(
            "faultline_fault_matched",
            "Events a fault's target match selected (before probability), per experiment and fault",
            None,
            MetricType::Counter,
        )?;
        for (labels, matched, _) in &faults {
            ConstCounter::new(*matched).encode(m.encode_family(labels)?)?;
        }
        let mut m = encoder.encode_descriptor(
            "faultline_fault_injected",
            "Faults injected, per experiment and fault (the counter GetExperiment reports)",
            None,
            MetricType::Counter,
        )?;
        for (labels, _, injected) in &faults {
            ConstCounter::new(*injected).encode(m.encode_family(labels)?)?;
        }
        let expiries = ConstCounter::new(self.engine.lease_expiries());
        let m = encoder.encode_descriptor(
            "faultline_lease_expiries",
            "Experiments stopped because their lease was not renewed in time",
            None,
            expiries.metric_type(),
        )?;
        expiries.encode(m)?;
        Ok(())
    }
}
