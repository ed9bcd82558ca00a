//! `blackhole`: drop every matching packet (a partition).

use faultline_common::kind;
use faultline_proto::v1 as pb;

use super::{
    Fault, FaultKind, Plan, net,
    net::{Direction, Needs, PacketMatch},
};
use crate::{
    caps::Capability,
    domain::{Resolver, SpecError, Target},
    kernel::{KernelOps, Probed, ScanList},
};

#[derive(Clone, Debug, PartialEq)]
pub struct Blackhole {
    pub direction: Direction,
    pub matching: PacketMatch,
}

impl FaultKind for Blackhole {
    const NAME: &'static str = faultline_proto::names::BLACKHOLE;
    type Wire = pb::Blackhole;

    fn from_wire(field: &str, b: &pb::Blackhole, _: &dyn Resolver) -> Result<Self, SpecError> {
        Ok(Self {
            direction: Direction::from_wire(field, b.direction)?,
            matching: PacketMatch::from_wire(field, b.r#match.as_ref())?,
        })
    }

    fn capabilities(kernel: &dyn Probed) -> Vec<Capability> {
        net::drop_rows(kernel, Self::NAME)
    }

    #[cfg(test)]
    fn example() -> (pb::Blackhole, pb::Target) {
        let (m, target) = net::example_scope();
        let wire = pb::Blackhole {
            direction: pb::Direction::Both.into(),
            r#match: m,
        };
        (wire, target)
    }
}

impl Fault for Blackhole {
    fn summary(&self) -> String {
        format!(
            "{} blackhole{}",
            self.direction.name(),
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
        plan.slot.kind = kind::PACKET_DROP;
        plan.slot.threshold = 1 << 32;
        Ok(plan)
    }

    fn to_wire(&self) -> pb::fault_spec::Kind {
        pb::fault_spec::Kind::Blackhole(pb::Blackhole {
            direction: self.direction.to_wire(),
            r#match: self.matching.to_wire(),
        })
    }
}
