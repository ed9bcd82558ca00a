//! Engine views -> proto: what `GetExperiment`, `ListExperiments` and
//! `WatchEvents` answer. Requests are converted by `domain::spec_from_proto`.

use std::time::{SystemTime, UNIX_EPOCH};

use faultline_proto::v1 as pb;

use crate::{
    domain::spec_to_proto,
    engine::{
        Event, EventKind, ExperimentView, State,
        lease::{LeaseInfo, NotRenewed},
    },
    impact::{ImpactView, WindowView},
};

pub(super) fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn experiment_to_proto(v: &ExperimentView) -> pb::Experiment {
    let state = match v.state {
        State::Running => pb::ExperimentState::Running,
        State::Expired => pb::ExperimentState::Expired,
        State::Stopped => pb::ExperimentState::Stopped,
        State::Failed => pb::ExperimentState::Failed,
    };
    pb::Experiment {
        id: v.id.clone(),
        spec: Some(spec_to_proto(&v.spec)),
        state: state.into(),
        started_at_ms: ms(v.started_at),
        deadline_ms: ms(v.deadline),
        ended_at_ms: v.ended_at.map_or(0, ms),
        message: v.message.clone(),
        matched: v.faults.iter().map(|f| f.matched).sum(),
        injected: v.faults.iter().map(|f| f.injected).sum(),
        impact: v.impact.as_ref().map(impact_to_proto),
        lease_ttl_ms: v
            .origin
            .lease
            .map_or(0, |l| u32::try_from(l.ttl.as_millis()).unwrap_or(u32::MAX)),
        lease_expires_at_ms: v.origin.lease.map_or(0, |l| ms(l.expires_at)),
        request_id: v.origin.request_id.clone(),
        owner: v.origin.owner.clone(),
        faults: v
            .faults
            .iter()
            .map(|f| pb::FaultStatus {
                index: f.index,
                kind: f.kind.into(),
                mechanism: f.mechanism.into(),
                matched: f.matched,
                injected: f.injected,
                not_injected_map_full: f.not_injected_map_full,
                summary: f.summary.clone(),
                metrics: f
                    .metrics
                    .iter()
                    .map(|m| pb::Metric {
                        name: m.name.clone(),
                        value: m.value,
                        unit: m.unit.clone(),
                    })
                    .collect(),
                actions: f
                    .actions
                    .iter()
                    .map(|a| pb::FaultAction {
                        at_ms: ms(a.at),
                        pid: a.pid,
                        comm: a.comm.clone(),
                        what: a.what.clone(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// One id's answer to `RenewLease`.
pub fn lease_to_proto(id: &str, renewed: Result<LeaseInfo, NotRenewed>) -> pb::LeaseStatus {
    match renewed {
        Ok(l) => pb::LeaseStatus {
            id: id.to_owned(),
            renewed: true,
            lease_expires_at_ms: ms(l.expires_at),
            reason: String::new(),
        },
        Err(why) => pb::LeaseStatus {
            id: id.to_owned(),
            renewed: false,
            lease_expires_at_ms: 0,
            reason: why.reason(),
        },
    }
}

pub fn event_to_proto(e: &Event) -> pb::Event {
    let t = match e.kind {
        EventKind::Started => pb::EventType::Started,
        EventKind::Counters => pb::EventType::Counters,
        EventKind::Expired => pb::EventType::Expired,
        EventKind::Stopped => pb::EventType::Stopped,
        EventKind::Failed => pb::EventType::Failed,
    };
    pb::Event {
        r#type: t.into(),
        at_ms: ms(e.at),
        experiment: Some(experiment_to_proto(&e.experiment)),
        message: e.message.clone(),
        lost: 0,
    }
}

fn impact_to_proto(i: &ImpactView) -> pb::Impact {
    let window = |w: &WindowView| pb::ImpactWindow {
        duration_ms: w.duration.as_millis() as u64,
        pressure: w
            .pressure
            .iter()
            .map(|p| pb::PressureStall {
                resource: p.resource.to_owned(),
                some_avg10: p.some_avg10,
                full_avg10: p.full_avg10,
                some_percent: p.some_percent,
                full_percent: p.full_percent,
            })
            .collect(),
        run_queue: w.run_queue.as_ref().map(|r| pb::RunQueueLatency {
            buckets: r.buckets.clone(),
            count: r.count,
            p50_us: r.p50_us,
            p99_us: r.p99_us,
        }),
    };
    pb::Impact {
        source: i.source.clone(),
        before: i.before.as_ref().map(window),
        during: i.during.as_ref().map(window),
        unavailable: i.unavailable.clone(),
    }
}
