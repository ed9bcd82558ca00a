//! `syscall_signal`: the `sys_enter` raw tracepoint sends a signal to a
//! target that enters the chosen syscall (crash-at-syscall), with a
//! probability or at exactly its Nth such call. The program is attached
//! only while such a fault runs (it costs every syscall of every process).

use faultline_common::{FaultSlot, kind};
use faultline_proto::v1 as pb;

use super::{Fault, FaultKind, Plan, probability, process_scope};
use crate::{
    caps::Capability,
    domain::{Probability, Resolver, SpecError, Target},
    kernel::{KernelOps, Mechanism, Probed, Resource},
    names::{SignalName, SyscallName},
};

#[derive(Clone, Debug, PartialEq)]
pub struct SyscallSignal {
    pub syscall: SyscallName,
    pub signal: SignalName,
    pub probability: Probability,
    /// Signal at exactly this matching call per process; 0 = use probability.
    pub nth_call: u64,
}

impl FaultKind for SyscallSignal {
    const NAME: &'static str = faultline_proto::names::SYSCALL_SIGNAL;
    type Wire = pb::SyscallSignal;

    fn from_wire(field: &str, s: &pb::SyscallSignal, _: &dyn Resolver) -> Result<Self, SpecError> {
        let inv = |sub: &str, reason: String| SpecError::invalid(format!("{field}.{sub}"), reason);
        Ok(Self {
            syscall: SyscallName::parse(&s.syscall).map_err(|r| inv("syscall", r))?,
            signal: SignalName::parse(&s.signal).map_err(|r| inv("signal", r))?,
            probability: probability(field, s.probability)?,
            nth_call: s.nth_call,
        })
    }

    fn capabilities(kernel: &dyn Probed) -> Vec<Capability> {
        vec![Capability::row(
            kernel,
            Self::NAME,
            Mechanism::SysEnter,
            &["any syscall"],
        )]
    }

    #[cfg(test)]
    fn example() -> (pb::SyscallSignal, pb::Target) {
        let wire = pb::SyscallSignal {
            syscall: "getpid".into(),
            signal: "SIGSTOP".into(),
            probability: 0.0,
            nth_call: 3,
        };
        let target = pb::Target {
            pids: vec![10],
            ..Default::default()
        };
        (wire, target)
    }
}

impl Fault for SyscallSignal {
    fn summary(&self) -> String {
        let when = if self.nth_call != 0 {
            format!("call #{}", self.nth_call)
        } else {
            format!("p={}", self.probability.value())
        };
        format!("{} -> {} {when}", self.syscall.name(), self.signal.name())
    }

    fn check_target(&self, _field: &str, target: &Target) -> Result<(), SpecError> {
        process_scope(Self::NAME, target)
    }

    fn plan(&self, _: &str, _: &Target, _: &mut dyn KernelOps) -> Result<Plan, SpecError> {
        let slot = FaultSlot {
            kind: kind::SYSCALL_SIGNAL,
            op: self.syscall.number(),
            signal: self.signal.number(),
            threshold: self.probability.threshold(),
            nth_call: self.nth_call,
            ..FaultSlot::default()
        };
        Ok(Plan {
            slot,
            resources: vec![
                Resource::WatchSyscall(self.syscall.number()),
                Resource::Attach(Mechanism::SysEnter),
            ],
        })
    }

    fn to_wire(&self) -> pb::fault_spec::Kind {
        pb::fault_spec::Kind::SyscallSignal(pb::SyscallSignal {
            syscall: self.syscall.name().into(),
            signal: self.signal.name().into(),
            probability: self.probability.value(),
            nth_call: self.nth_call,
        })
    }
}
