//! The engine's side of impact measurement: whether an experiment asks
//! for it, and its session, opened before the faults are armed (the
//! baseline) and finished when the experiment ends.

use std::sync::Arc;

use super::Engine;
use crate::{
    domain::{ExperimentSpec, SpecError},
    impact::{Selector, Session},
    kernel::KernelOps,
};

/// The processes to measure if `spec` asks for impact data: explicitly,
/// or by default when one of its kinds measures by default. Only a cgroup
/// or pid target has processes to measure; an explicit request without
/// one is refused, naming the field.
pub(super) fn wanted(spec: &ExperimentSpec) -> Result<Option<Selector>, SpecError> {
    let asked = spec
        .impact
        .unwrap_or_else(|| spec.faults.iter().any(|f| f.impact_by_default()));
    let t = &spec.target;
    if !asked {
        return Ok(None);
    }
    if t.cgroup.is_none() && t.pids.is_empty() {
        if spec.impact == Some(true) {
            return Err(SpecError::invalid(
                "spec.impact",
                "impact is measured on a cgroup or pid target, and this experiment has neither",
            ));
        }
        return Ok(None);
    }
    Ok(Some(Selector {
        cgroup: t.cgroup.as_ref().map(|c| c.path.clone()),
        pids: t.pids.clone(),
        comm: t.comm.clone(),
        exclude_pids: t.exclude_pids.clone(),
        exclude_comm: t.exclude_comm.clone(),
    }))
}

impl<K: KernelOps> Engine<K> {
    /// Opens the impact session of `spec` if it asks for one (after the
    /// policy check, so a refused request is refused at once). The caller
    /// waits the baseline out without the engine's lock, then starts the
    /// experiment with it (`start_measured`).
    pub fn open_impact(
        &mut self,
        spec: &ExperimentSpec,
    ) -> Result<Option<Arc<Session>>, SpecError> {
        self.policy.check(spec, self.agent_pid)?;
        Ok(wanted(spec)?.map(|sel| Session::open(sel, &mut self.kernel)))
    }

    /// Ends a session: its last figures stay readable in the record.
    pub(super) fn close_impact(&mut self, session: Option<&Arc<Session>>) {
        if let Some(s) = session {
            s.finish(&mut self.kernel);
        }
    }
}
