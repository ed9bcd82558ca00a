//! `memory_pressure`: placeholder of the framework commit; its helper replaces it.

use faultline_common::{FaultSlot, kind};
use faultline_proto::v1 as pb;

use super::{Fault, FaultKind, Plan};
use crate::{
    caps::Capability,
    domain::{Resolver, SpecError, Target},
    kernel::{KernelOps, Probed},
};

#[derive(Clone, Debug, PartialEq)]
pub struct MemoryPressure(pb::MemoryPressure);

impl FaultKind for MemoryPressure {
    const NAME: &'static str = faultline_proto::names::MEMORY_PRESSURE;
    type Wire = pb::MemoryPressure;

    fn from_wire(_: &str, w: &pb::MemoryPressure, _: &dyn Resolver) -> Result<Self, SpecError> {
        Ok(Self(*w))
    }

    fn capabilities(_: &dyn Probed) -> Vec<Capability> {
        vec![Capability::new(
            Self::NAME,
            "stressor process",
            &[],
            Some("not implemented yet"),
        )]
    }

    #[cfg(test)]
    fn example() -> (pb::MemoryPressure, pb::Target) {
        (pb::MemoryPressure::default(), pb::Target::default())
    }
}

impl Fault for MemoryPressure {
    fn summary(&self) -> String {
        Self::NAME.to_owned()
    }

    fn check_target(&self, _: &str, _: &Target) -> Result<(), SpecError> {
        Ok(())
    }

    fn plan(&self, _: &str, _: &Target, _: &mut dyn KernelOps) -> Result<Plan, SpecError> {
        Ok(Plan {
            slot: FaultSlot {
                kind: kind::NONE,
                ..FaultSlot::default()
            },
            resources: Vec::new(),
        })
    }

    fn needs_no_target(&self) -> bool {
        true
    }

    fn worker(
        &self,
        field: &str,
        _: &Target,
        _: &crate::worker::WorkerEnv,
    ) -> Result<Option<Box<dyn crate::worker::Worker>>, SpecError> {
        Err(SpecError::unsupported(field, "not implemented yet"))
    }

    fn to_wire(&self) -> pb::fault_spec::Kind {
        pb::fault_spec::Kind::MemoryPressure(self.0)
    }
}
