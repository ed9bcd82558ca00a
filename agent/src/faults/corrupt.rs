//! `corrupt`: the TCX programs flip a byte of matching packets' payload,
//! with checksums recomputed or left wrong (interface scope only).

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

const NEEDS: Needs = Needs::Tcx("change");

#[derive(Clone, Debug, PartialEq)]
pub struct Corrupt {
    pub probability: Probability,
    pub recompute_checksums: bool,
    pub direction: Direction,
    pub matching: PacketMatch,
}

impl FaultKind for Corrupt {
    const NAME: &'static str = faultline_proto::names::CORRUPT;
    type Wire = pb::Corrupt;

    fn from_wire(field: &str, c: &pb::Corrupt, _: &dyn Resolver) -> Result<Self, SpecError> {
        Ok(Self {
            probability: probability(field, c.probability)?,
            recompute_checksums: c.recompute_checksums,
            direction: Direction::from_wire(field, c.direction)?,
            matching: PacketMatch::from_wire(field, c.r#match.as_ref())?,
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
    fn example() -> (pb::Corrupt, pb::Target) {
        let (m, target) = net::example_scope();
        let wire = pb::Corrupt {
            probability: 0.5,
            recompute_checksums: true,
            direction: pb::Direction::Both.into(),
            r#match: m,
        };
        (wire, target)
    }
}

impl Fault for Corrupt {
    fn summary(&self) -> String {
        format!(
            "{} corrupt p={}{}{}",
            self.direction.name(),
            self.probability.value(),
            if self.recompute_checksums {
                " checksums=recomputed"
            } else {
                " checksums=wrong"
            },
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
        plan.slot.kind = kind::PACKET_CORRUPT;
        plan.slot.op = u32::from(self.recompute_checksums);
        plan.slot.threshold = self.probability.threshold();
        Ok(plan)
    }

    fn to_wire(&self) -> pb::fault_spec::Kind {
        pb::fault_spec::Kind::Corrupt(pb::Corrupt {
            probability: self.probability.value(),
            recompute_checksums: self.recompute_checksums,
            direction: self.direction.to_wire(),
            r#match: self.matching.to_wire(),
        })
    }
}
