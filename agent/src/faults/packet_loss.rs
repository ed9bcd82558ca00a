//! `packet_loss`: drop matching packets with a probability, independently
//! or in Gilbert bursts (cgroup_skb for a cgroup, TCX for an interface).

use faultline_common::kind;
use faultline_proto::v1 as pb;

use super::{
    Fault, FaultKind, Plan, net,
    net::{Direction, Needs, PacketMatch},
    probability,
};
use crate::{
    caps::Capability,
    domain::{Probability, Resolver, SpecError, Target},
    kernel::{KernelOps, Probed, ScanList},
};

/// 2^32: probabilities are compared against `bpf_get_prandom_u32()`.
const SCALE: f64 = 4_294_967_296.0;

#[derive(Clone, Debug, PartialEq)]
pub struct PacketLoss {
    pub probability: Probability,
    /// Mean burst length in packets; 1.0 (or 0) = independent losses.
    pub burst_length: f64,
    pub direction: Direction,
    pub matching: PacketMatch,
}

/// Gilbert model parameters for a mean loss `p` and mean burst length `b`
/// (packets): leave the bad state with r = 1/b, enter it with p*r/(1-p), so
/// the stationary share of the bad state is p.
pub fn gilbert(p: f64, b: f64) -> (f64, f64) {
    let r = 1.0 / b;
    (p * r / (1.0 - p), r)
}

impl FaultKind for PacketLoss {
    const NAME: &'static str = faultline_proto::names::PACKET_LOSS;
    type Wire = pb::PacketLoss;

    fn from_wire(field: &str, l: &pb::PacketLoss, _: &dyn Resolver) -> Result<Self, SpecError> {
        let probability = probability(field, l.probability)?;
        let burst_length = l.burst_length;
        if !burst_length.is_finite() || !(0.0..=1e6).contains(&burst_length) {
            return Err(SpecError::invalid(
                format!("{field}.burst_length"),
                "must be 0 (independent) or between 1 and 1e6 packets",
            ));
        }
        if burst_length > 1.0 {
            let (enter, _) = gilbert(probability.value(), burst_length);
            if probability.value() >= 1.0 || enter > 1.0 {
                return Err(SpecError::invalid(
                    format!("{field}.burst_length"),
                    format!(
                        "a mean loss of {} cannot have bursts of {burst_length} packets",
                        probability.value()
                    ),
                ));
            }
        }
        Ok(Self {
            probability,
            burst_length,
            direction: Direction::from_wire(field, l.direction)?,
            matching: PacketMatch::from_wire(field, l.r#match.as_ref())?,
        })
    }

    fn capabilities(kernel: &dyn Probed) -> Vec<Capability> {
        net::drop_rows(kernel, Self::NAME)
    }

    #[cfg(test)]
    fn example() -> (pb::PacketLoss, pb::Target) {
        let (m, target) = net::example_scope();
        let wire = pb::PacketLoss {
            probability: 0.1,
            burst_length: 4.0,
            direction: pb::Direction::Both.into(),
            r#match: m,
        };
        (wire, target)
    }
}

impl Fault for PacketLoss {
    fn summary(&self) -> String {
        let burst = if self.burst_length > 1.0 {
            format!(" burst={}", self.burst_length)
        } else {
            String::new()
        };
        format!(
            "{} loss p={}{burst}{}",
            self.direction.name(),
            self.probability.value(),
            self.matching.summary()
        )
    }

    fn check_target(&self, field: &str, target: &Target) -> Result<(), SpecError> {
        net::check_scope(field, Self::NAME, Needs::Drop, target)
    }

    fn plan(&self, field: &str, target: &Target, k: &mut dyn KernelOps) -> Result<Plan, SpecError> {
        let mut plan = net::plan_packets(
            field,
            Needs::Drop,
            ScanList::Net,
            self.direction,
            &self.matching,
            target,
            k,
        )?;
        let slot = &mut plan.slot;
        slot.kind = kind::PACKET_DROP;
        if self.burst_length > 1.0 {
            let (enter, leave) = gilbert(self.probability.value(), self.burst_length);
            slot.threshold = (enter * SCALE).round() as u64;
            slot.net.leave_bad = ((leave * SCALE).round() as u64).min(u64::from(u32::MAX)) as u32;
        } else {
            slot.threshold = self.probability.threshold();
        }
        Ok(plan)
    }

    fn to_wire(&self) -> pb::fault_spec::Kind {
        pb::fault_spec::Kind::PacketLoss(pb::PacketLoss {
            probability: self.probability.value(),
            burst_length: self.burst_length,
            direction: self.direction.to_wire(),
            r#match: self.matching.to_wire(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gilbert_keeps_the_mean_loss() {
        let (enter, leave) = gilbert(0.1, 4.0);
        assert!((leave - 0.25).abs() < 1e-12);
        // Stationary bad share = enter / (enter + leave).
        assert!((enter / (enter + leave) - 0.1).abs() < 1e-12);
    }
}
