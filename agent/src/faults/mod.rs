//! Fault kinds: one module per kind, behind one trait the engine drives.
//!
//! A kind's module holds everything about it: its validated type and the
//! conversion from and to the wire (with field-named errors), the scope it
//! applies to, how it fills its kernel slot and what it holds while armed
//! (attachments, scan lists, fq, watched syscalls), its one-line summary and
//! its capability rows. The engine, the kernel layer, `caps` and the gRPC
//! adapter know kinds only through `Fault` and the `registry!` below.

pub mod net;

use std::{any::Any, fmt};

use faultline_common::{COMM_LEN, FaultSlot, TargetSel, flags, pid_role};
use faultline_proto::v1 as pb;

use crate::{
    caps::Capability,
    domain::{Resolver, SpecError, Target},
    kernel::{KernelOps, Probed, Resource},
    worker::{Worker, WorkerEnv},
};

/// The kind-specific part of arming a fault: its slot (kind, parameters,
/// match) and what it holds while armed, in the order to take it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub slot: FaultSlot,
    pub resources: Vec<Resource>,
}

impl Plan {
    /// The plan of a kind the agent does itself (`Fault::worker`): a slot
    /// no program scans, and nothing held in the kernel.
    pub fn agent_side() -> Self {
        Self {
            slot: FaultSlot {
                kind: faultline_common::kind::NONE,
                ..FaultSlot::default()
            },
            resources: Vec::new(),
        }
    }
}

/// The scope rule of a host-level kind: of the target's selectors, only
/// those named in `allowed` may be set; `why` says what the kind is
/// aimed at instead.
pub fn only_selectors(target: &Target, allowed: &[&str], why: &str) -> Result<(), SpecError> {
    let set = [
        (!target.pids.is_empty(), "pids"),
        (target.cgroup.is_some(), "cgroup"),
        (target.comm.is_some(), "comm"),
        (!target.exclude_pids.is_empty(), "exclude_pids"),
        (target.exclude_comm.is_some(), "exclude_comm"),
        (target.interface.is_some(), "interface"),
    ];
    match set.iter().find(|(on, name)| *on && !allowed.contains(name)) {
        Some((_, name)) => Err(SpecError::invalid(format!("spec.target.{name}"), why)),
        None => Ok(()),
    }
}

/// Pressure kinds are charged to a cgroup or the host: pids and names are
/// no targets of theirs.
pub fn charged_target_only(field: &str, target: &Target) -> Result<(), SpecError> {
    if !target.pids.is_empty() || target.comm.is_some() || target.interface.is_some() {
        return Err(SpecError::invalid(
            "spec.target",
            format!(
                "{field} is charged to a cgroup (spec.target.cgroup) or the host; pids, names and interfaces are not its targets"
            ),
        ));
    }
    Ok(())
}

/// One validated fault of some kind.
pub trait Fault: DynFault + fmt::Debug + Send + Sync {
    /// One line for logs and `faultctl status`.
    fn summary(&self) -> String;

    /// Whether the fault can apply to `target` at all (scope rules).
    /// `field` is the fault's own (`spec.faults[i].<kind>`).
    fn check_target(&self, field: &str, target: &Target) -> Result<(), SpecError>;

    /// The slot and resources, given what this kernel can do. A request the
    /// kernel cannot serve is refused here, naming the field and why.
    fn plan(
        &self,
        field: &str,
        target: &Target,
        kernel: &mut dyn KernelOps,
    ) -> Result<Plan, SpecError>;

    /// The wire form (the inverse of `FaultKind::from_wire`).
    fn to_wire(&self) -> pb::fault_spec::Kind;

    /// The agent-side work of the fault, if any (a stressor, signals, a
    /// freeze). Made while planning, so a request the host cannot take (a
    /// memory floor, free space, an unknown path) is refused before anything
    /// is armed.
    fn worker(
        &self,
        _field: &str,
        _target: &Target,
        _env: &WorkerEnv,
    ) -> Result<Option<Box<dyn Worker>>, SpecError> {
        Ok(None)
    }

    /// The fault applies to the whole host with no target selector (CPU
    /// pressure on the host, a disk fill): the rule that a target needs a
    /// selector does not apply to it.
    fn needs_no_target(&self) -> bool {
        false
    }

    /// Whether its experiment measures the target's impact (pressure stall,
    /// run-queue latency) unless the spec says otherwise.
    fn impact_by_default(&self) -> bool {
        false
    }
}

/// The static side of a kind: its name, wire message and capability rows.
pub trait FaultKind: Fault + Clone + PartialEq + Sized + 'static {
    /// The kind's name on the wire, in experiment files and in fields.
    const NAME: &'static str;
    type Wire;

    /// Validates a wire message; every error names its field below `field`.
    fn from_wire(
        field: &str,
        wire: &Self::Wire,
        resolver: &dyn Resolver,
    ) -> Result<Self, SpecError>;

    /// What this kernel can do for the kind, one row per mechanism.
    fn capabilities(kernel: &dyn Probed) -> Vec<Capability>;

    /// A valid wire fault of the kind with every field set, and a target it
    /// applies to: the tests walk every kind through every layer with it.
    #[cfg(test)]
    fn example() -> (Self::Wire, pb::Target);
}

/// Object-safe plumbing every `FaultKind` gets for free.
pub trait DynFault {
    fn kind(&self) -> &'static str;
    fn clone_box(&self) -> Box<dyn Fault>;
    fn eq_dyn(&self, other: &dyn Fault) -> bool;
    fn as_any(&self) -> &dyn Any;
}

impl<T: FaultKind> DynFault for T {
    fn kind(&self) -> &'static str {
        T::NAME
    }
    fn clone_box(&self) -> Box<dyn Fault> {
        Box::new(self.clone())
    }
    fn eq_dyn(&self, other: &dyn Fault) -> bool {
        other.as_any().downcast_ref::<T>() == Some(self)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A validated fault of any kind.
pub struct FaultSpec(Box<dyn Fault>);

impl FaultSpec {
    pub fn new<T: FaultKind>(fault: T) -> Self {
        Self(Box::new(fault))
    }

    /// The fault as its kind's type, if it is of that kind.
    pub fn get<T: FaultKind>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref()
    }
}

impl std::ops::Deref for FaultSpec {
    type Target = dyn Fault;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl Clone for FaultSpec {
    fn clone(&self) -> Self {
        Self(self.0.clone_box())
    }
}

impl PartialEq for FaultSpec {
    fn eq(&self, other: &Self) -> bool {
        self.0.eq_dyn(&*other.0)
    }
}

impl fmt::Debug for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The one table of kinds, made from the proto's `FaultSpec.kind`
/// (`faultline_proto::for_each_kind!`): for each, the module named after it
/// (`faults/<kind>.rs`) and its type named after the wire variant. A kind
/// added to the proto without its module does not compile.
macro_rules! registry {
    ($($variant:ident $module:ident),+ $(,)?) => {
        $(mod $module;)+

        /// Every kind's name, in the proto's order.
        pub const KINDS: &[&str] = &[$(<$module::$variant as FaultKind>::NAME),+];

        /// Validates one wire fault (`spec.faults[i]`).
        pub fn from_wire(
            i: usize,
            kind: Option<&pb::fault_spec::Kind>,
            resolver: &dyn Resolver,
        ) -> Result<FaultSpec, SpecError> {
            match kind {
                None => Err(SpecError::invalid(
                    format!("spec.faults[{i}]"),
                    format!("no fault kind set (one of: {})", KINDS.join(", ")),
                )),
                $(Some(pb::fault_spec::Kind::$variant(w)) => {
                    let field = format!("spec.faults[{i}].{}", <$module::$variant as FaultKind>::NAME);
                    <$module::$variant as FaultKind>::from_wire(&field, w, resolver).map(FaultSpec::new)
                })+
            }
        }

        /// Every kind's capability rows.
        pub fn capabilities(kernel: &dyn Probed) -> Vec<Capability> {
            let mut rows = Vec::new();
            $(rows.extend(<$module::$variant as FaultKind>::capabilities(kernel));)+
            rows
        }

        /// Every kind's example (`FaultKind::example`).
        #[cfg(test)]
        pub fn examples() -> Vec<(pb::fault_spec::Kind, pb::Target)> {
            vec![$({
                let (wire, target) = <$module::$variant as FaultKind>::example();
                (pb::fault_spec::Kind::$variant(wire), target)
            }),+]
        }
    };
}

faultline_proto::for_each_kind!(registry);

/// The field a fault's errors are reported under.
pub fn field_of(i: usize, f: &FaultSpec) -> String {
    format!("spec.faults[{i}].{}", f.kind())
}

/// A fault ready to arm: its complete slot, its pids, its resources and
/// its agent-side work.
#[derive(Debug)]
pub struct Armable {
    pub slot: FaultSlot,
    /// (pid, `pid_role::*`) entries for the `FL_PIDS` map.
    pub pid_roles: Vec<(u32, u32)>,
    pub resources: Vec<Resource>,
    pub worker: Option<Box<dyn Worker>>,
}

/// Plans one fault and completes its slot with what every kind shares:
/// dry-run and the target selectors. The engine sets the deadline, once
/// every fault of the experiment is planned.
pub fn prepare(
    f: &FaultSpec,
    field: &str,
    target: &Target,
    env: &WorkerEnv,
    kernel: &mut dyn KernelOps,
) -> Result<Armable, SpecError> {
    let dry_run = env.dry_run;
    let Plan {
        mut slot,
        resources,
    } = f.plan(field, target, kernel)?;
    let worker = f.worker(field, target, env)?;
    if dry_run {
        slot.flags |= flags::DRY_RUN;
    }
    slot.target = target_sel(target);
    let pid_roles = target
        .pids
        .iter()
        .map(|p| (*p, pid_role::INCLUDE))
        .chain(target.exclude_pids.iter().map(|p| (*p, pid_role::EXCLUDE)))
        .collect();
    Ok(Armable {
        slot,
        pid_roles,
        resources,
        worker,
    })
}

fn comm_bytes(s: &str) -> [u8; COMM_LEN] {
    let mut out = [0u8; COMM_LEN];
    let b = s.as_bytes();
    let n = b.len().min(COMM_LEN - 1);
    out[..n].copy_from_slice(&b[..n]);
    out
}

fn target_sel(t: &Target) -> TargetSel {
    TargetSel {
        cgroup_id: t.cgroup.as_ref().map_or(0, |c| c.id),
        cgroup_level: t.cgroup.as_ref().map_or(0, |c| c.level),
        npids: t.pids.len() as u32,
        nexclude_pids: t.exclude_pids.len() as u32,
        has_comm: u32::from(t.comm.is_some()),
        comm: comm_bytes(t.comm.as_deref().unwrap_or("")),
        has_exclude_comm: u32::from(t.exclude_comm.is_some()),
        exclude_comm: comm_bytes(t.exclude_comm.as_deref().unwrap_or("")),
        _pad: 0,
    }
}

/// The scope rule of process faults (syscall errors and signals): they are
/// matched by process, not by interface.
pub fn process_scope(kind: &str, target: &Target) -> Result<(), SpecError> {
    if target.interface.is_some() {
        return Err(SpecError::invalid(
            "spec.target.interface",
            format!("{kind} faults are not scoped by interface"),
        ));
    }
    Ok(())
}

/// A probability field.
pub fn probability(field: &str, p: f64) -> Result<crate::domain::Probability, SpecError> {
    crate::domain::Probability::new(p)
        .map_err(|r| SpecError::invalid(format!("{field}.probability"), r))
}
