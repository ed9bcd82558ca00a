//! `duplicate`: the TCX programs send a copy of matching packets
//! (interface scope only).

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
    kernel::{KernelOps, Mechanism, Probed, ScanList},
};

const NEEDS: Needs = Needs::Tcx("copy");

#[derive(Clone, Debug, PartialEq)]
pub struct Duplicate {
    pub probability: Probability,
    pub direction: Direction,
    pub matching: PacketMatch,
}

impl FaultKind for Duplicate {
    const NAME: &'static str = faultline_proto::names::DUPLICATE;
    type Wire = pb::Duplicate;

    fn from_wire(field: &str, d: &pb::Duplicate, _: &dyn Resolver) -> Result<Self, SpecError> {
        Ok(Self {
            probability: probability(field, d.probability)?,
            direction: Direction::from_wire(field, d.direction)?,
            matching: PacketMatch::from_wire(field, d.r#match.as_ref())?,
        })
    }

    fn capabilities(kernel: &dyn Probed) -> Vec<Capability> {
        vec![Capability::row(
            kernel,
            Self::NAME,
            Mechanism::TCX,
            &["interface scope", "ingress", "egress"],
        )]
    }

    #[cfg(test)]
    fn example() -> (pb::Duplicate, pb::Target) {
        let (m, target) = net::example_scope();
        let wire = pb::Duplicate {
            probability: 0.5,
            direction: pb::Direction::Both.into(),
            r#match: m,
        };
        (wire, target)
    }
}

impl Fault for Duplicate {
    fn summary(&self) -> String {
        format!(
            "{} duplicate p={}{}",
            self.direction.name(),
            self.probability.value(),
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
            self.direction,
            &self.matching,
            target,
            k,
        )?;
        plan.slot.kind = kind::PACKET_DUP;
        plan.slot.threshold = self.probability.threshold();
        Ok(plan)
    }

    fn to_wire(&self) -> pb::fault_spec::Kind {
        pb::fault_spec::Kind::Duplicate(pb::Duplicate {
            probability: self.probability.value(),
            direction: self.direction.to_wire(),
            r#match: self.matching.to_wire(),
        })
    }
}
