//! `process_pause`: the agent pauses the target for the experiment: a
//! cgroup with the cgroup freezer, pids and names with SIGSTOP (SIGCONT at
//! the end). Each pause is in the undo journal before it is made, so the
//! reaper resumes the target if the agent dies. No kernel program.

use faultline_proto::v1 as pb;

use super::{Fault, FaultKind, Plan, process_scope};
use crate::{
    caps::Capability,
    domain::{Resolver, SpecError, Target},
    kernel::{KernelOps, Probed},
    procs::{Matcher, pause::Pauser},
    worker::{Report, Worker, WorkerEnv},
};

#[derive(Clone, Debug, PartialEq)]
pub struct ProcessPause;

impl FaultKind for ProcessPause {
    const NAME: &'static str = faultline_proto::names::PROCESS_PAUSE;
    type Wire = pb::ProcessPause;

    fn from_wire(_: &str, _: &pb::ProcessPause, _: &dyn Resolver) -> Result<Self, SpecError> {
        Ok(Self)
    }

    fn capabilities(_: &dyn Probed) -> Vec<Capability> {
        vec![
            Capability::new(Self::NAME, "cgroup freezer", &["cgroup"], None::<String>),
            Capability::new(Self::NAME, "signals", &["pids", "comm"], None::<String>),
        ]
    }

    #[cfg(test)]
    fn example() -> (pb::ProcessPause, pb::Target) {
        let target = pb::Target {
            comm: "worker".into(),
            ..Default::default()
        };
        (pb::ProcessPause {}, target)
    }
}

impl Fault for ProcessPause {
    fn summary(&self) -> String {
        "pause".to_owned()
    }

    fn check_target(&self, _: &str, target: &Target) -> Result<(), SpecError> {
        process_scope(Self::NAME, target)
    }

    fn plan(&self, _: &str, _: &Target, _: &mut dyn KernelOps) -> Result<Plan, SpecError> {
        Ok(Plan::agent_side())
    }

    fn worker(
        &self,
        field: &str,
        target: &Target,
        env: &WorkerEnv,
    ) -> Result<Option<Box<dyn Worker>>, SpecError> {
        let matcher =
            Matcher::new(target, &env.policy).map_err(|r| SpecError::unsupported(field, r))?;
        // The freezer takes a target that is a cgroup and nothing else.
        let cgroup_only = target.cgroup.is_some()
            && target.pids.is_empty()
            && target.comm.is_none()
            && target.exclude_pids.is_empty()
            && target.exclude_comm.is_none();
        Ok(Some(Box::new(PauseWorker {
            pauser: Pauser::new(matcher, env.journal.clone(), env.dry_run),
            cgroup_only,
        })))
    }

    fn to_wire(&self) -> pb::fault_spec::Kind {
        pb::fault_spec::Kind::ProcessPause(pb::ProcessPause {})
    }
}

#[derive(Debug)]
struct PauseWorker {
    pauser: Pauser,
    cgroup_only: bool,
}

impl Worker for PauseWorker {
    fn mechanism(&self) -> &'static str {
        // Where a protected process shares the cgroup, signals are used
        // instead; each action says which.
        if self.cgroup_only {
            "cgroup freezer"
        } else {
            "signals"
        }
    }

    fn start(&self) -> Result<(), String> {
        self.pauser.start()
    }

    fn stop(&self) {
        self.pauser.stop();
    }

    fn report(&self) -> Report {
        let (seen, paused, actions) = self.pauser.progress();
        Report {
            matched: Some(seen),
            injected: Some(paused),
            actions,
            ..Report::default()
        }
    }
}
