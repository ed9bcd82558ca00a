//! `latency`: the TCX egress program stamps an earliest departure time on
//! matching packets, which the interface's fq root qdisc honours
//! (interface scope, egress only).

use std::time::Duration;

use faultline_common::kind;
use faultline_proto::v1 as pb;

use super::{
    Fault, FaultKind, Plan, net,
    net::{Direction, Needs, PacketMatch},
};
use crate::{
    caps::Capability,
    domain::{Resolver, SpecError, Target},
    kernel::{KernelOps, Mechanism, Probed, Resource, ScanList, TCX_FQ},
};

/// fq's default horizon: packets scheduled further out are dropped.
const MAX_DELAY_MS: f64 = 10_000.0;
const NEEDS: Needs = Needs::Tcx("delay");

#[derive(Clone, Debug, PartialEq)]
pub struct Latency {
    pub delay: Duration,
    pub jitter: Duration,
    pub matching: PacketMatch,
}

impl FaultKind for Latency {
    const NAME: &'static str = faultline_proto::names::LATENCY;
    type Wire = pb::Latency;

    fn from_wire(field: &str, l: &pb::Latency, _: &dyn Resolver) -> Result<Self, SpecError> {
        if !(l.delay_ms.is_finite() && l.delay_ms > 0.0 && l.delay_ms <= MAX_DELAY_MS) {
            return Err(SpecError::invalid(
                format!("{field}.delay_ms"),
                format!(
                    "{} must be in (0, {MAX_DELAY_MS}] ms (fq drops packets scheduled beyond its 10 s horizon)",
                    l.delay_ms
                ),
            ));
        }
        if !l.jitter_ms.is_finite() || !(0.0..=l.delay_ms).contains(&l.jitter_ms) {
            return Err(SpecError::invalid(
                format!("{field}.jitter_ms"),
                format!("{} must be in [0, delay_ms = {}]", l.jitter_ms, l.delay_ms),
            ));
        }
        Ok(Self {
            delay: Duration::from_secs_f64(l.delay_ms / 1e3),
            jitter: Duration::from_secs_f64(l.jitter_ms / 1e3),
            matching: PacketMatch::from_wire(field, l.r#match.as_ref())?,
        })
    }

    fn capabilities(kernel: &dyn Probed) -> Vec<Capability> {
        vec![
            Capability::new(
                Self::NAME,
                TCX_FQ,
                &["interface scope", "egress", "delay", "jitter"],
                kernel.reason(Mechanism::TCX),
            )
            .unless(kernel.fq_reason()),
        ]
    }

    #[cfg(test)]
    fn example() -> (pb::Latency, pb::Target) {
        let (m, target) = net::example_scope();
        let wire = pb::Latency {
            delay_ms: 20.0,
            jitter_ms: 5.0,
            r#match: m,
        };
        (wire, target)
    }
}

impl Fault for Latency {
    fn summary(&self) -> String {
        format!(
            "egress delay={:?} jitter={:?}{}",
            self.delay,
            self.jitter,
            self.matching.summary()
        )
    }

    fn check_target(&self, field: &str, target: &Target) -> Result<(), SpecError> {
        net::check_scope(field, Self::NAME, NEEDS, target)
    }

    fn plan(&self, field: &str, target: &Target, k: &mut dyn KernelOps) -> Result<Plan, SpecError> {
        let mut plan = net::plan_packets(
            field,
            NEEDS,
            ScanList::Net,
            Direction::Egress,
            &self.matching,
            target,
            k,
        )?;
        let slot = &mut plan.slot;
        slot.kind = kind::PACKET_DELAY;
        slot.threshold = 1 << 32;
        slot.net.delay_ns = self.delay.as_nanos() as u64;
        slot.net.jitter_ns = self.jitter.as_nanos() as u64;
        // fq first: a delay stamped on packets means nothing without it.
        if let Some(i) = &target.interface {
            plan.resources.insert(0, Resource::Fq(i.ifindex));
        }
        Ok(plan)
    }

    fn to_wire(&self) -> pb::fault_spec::Kind {
        pb::fault_spec::Kind::Latency(pb::Latency {
            delay_ms: self.delay.as_secs_f64() * 1e3,
            jitter_ms: self.jitter.as_secs_f64() * 1e3,
            r#match: self.matching.to_wire(),
        })
    }
}
