//! Who may never be faulted, checked before anything is planned: the
//! duration cap, protected pids and names, kernel threads, and cgroups that
//! would reach the host's own machinery or the agent.

use std::time::Duration;

use faultline_common::{FaultSlot, kind};

use crate::{
    cgroup::Cgroup,
    domain::{ExperimentSpec, ProtectedName, SpecError, protecting},
};

/// The protection rules one agent enforces.
#[derive(Clone, Debug)]
pub struct Policy {
    pub max_duration: Duration,
    pub protected_pids: Vec<u32>,
    pub protected_comms: Vec<ProtectedName>,
    /// The agent's own cgroup (None when it could not be told, or it is the
    /// root): never a target, nor anything inside it.
    pub agent_cgroup: Option<Cgroup>,
}

fn process_comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim_end().to_owned())
}

/// Whether a spec that passed `check` reaches host-wide: then only network
/// faults, or a dry run, may follow (see `check_host_wide`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostWide(pub bool);

impl Policy {
    /// The duration cap and the protected targets.
    pub fn check(&self, spec: &ExperimentSpec, agent_pid: u32) -> Result<HostWide, SpecError> {
        if spec.duration > self.max_duration {
            return Err(SpecError::invalid(
                "spec.duration_ms",
                format!(
                    "{} exceeds this agent's maximum of {}",
                    humantime::format_duration(spec.duration),
                    humantime::format_duration(self.max_duration)
                ),
            ));
        }
        let t = &spec.target;
        for (i, pid) in t.pids.iter().enumerate() {
            let field = format!("spec.target.pids[{i}]");
            if *pid == agent_pid {
                return Err(SpecError::protected(
                    field,
                    "the agent itself can never be targeted",
                ));
            }
            if *pid == 1 {
                return Err(SpecError::protected(field, "PID 1 can never be targeted"));
            }
            if self.protected_pids.contains(pid) {
                return Err(SpecError::protected(
                    field,
                    format!("pid {pid} is on the protected list"),
                ));
            }
            if let Some(comm) = process_comm(*pid)
                && let Some(p) = protecting(&self.protected_comms, &comm)
            {
                return Err(SpecError::protected(
                    field,
                    format!("pid {pid} ({comm}) is a protected process (protected_comms \"{p}\")"),
                ));
            }
        }
        if let Some(comm) = &t.comm
            && let Some(p) = protecting(&self.protected_comms, comm)
        {
            return Err(SpecError::protected(
                "spec.target.comm",
                format!("{comm:?} is a protected process name (protected_comms \"{p}\")"),
            ));
        }
        let Some(cg) = &t.cgroup else {
            return Ok(HostWide(false));
        };
        let shown = cg.path.display();
        if let Some(agent) = &self.agent_cgroup
            && cg.path.starts_with(&agent.path)
        {
            return Err(SpecError::protected(
                "spec.target.cgroup",
                format!(
                    "{shown} is the agent's own cgroup ({}) or inside it",
                    agent.path.display()
                ),
            ));
        }
        let why = if cg.level == 0 {
            Some("is the cgroup2 root: it holds every process on the host".to_owned())
        } else {
            self.agent_cgroup
                .as_ref()
                .filter(|a| a.path.starts_with(&cg.path))
                .map(|a| {
                    format!(
                        "contains the agent's own cgroup ({}), so it reaches the host's own machinery",
                        a.path.display()
                    )
                })
        };
        match why {
            None => Ok(HostWide(false)),
            Some(_) if t.allow_host_wide => Ok(HostWide(true)),
            Some(why) => Err(SpecError::protected(
                "spec.target.cgroup",
                format!("{shown} {why}; set allow_host_wide for network faults or a dry run there"),
            )),
        }
    }
}

/// A host-wide target takes network faults only, or a dry run: a syscall
/// fault there would reach the host's own daemons.
pub fn check_host_wide<'a>(
    spec: &ExperimentSpec,
    host_wide: HostWide,
    slots: impl IntoIterator<Item = &'a FaultSlot>,
) -> Result<(), SpecError> {
    if !host_wide.0 || spec.dry_run {
        return Ok(());
    }
    match slots.into_iter().position(|s| !kind::is_network(s.kind)) {
        None => Ok(()),
        Some(i) => Err(SpecError::protected(
            "spec.target.allow_host_wide",
            format!(
                "a host-wide target takes network faults or a dry run only; spec.faults[{i}] ({}) is neither",
                spec.faults.get(i).map_or("?", |f| f.kind())
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::domain::Target;

    fn cg(path: &str, level: u32) -> Cgroup {
        Cgroup {
            path: PathBuf::from(path),
            id: 100 + u64::from(level),
            level,
        }
    }

    fn policy() -> Policy {
        Policy {
            max_duration: Duration::from_secs(60),
            protected_pids: vec![4242],
            protected_comms: ["sshd*", "auditd"]
                .iter()
                .map(|s| ProtectedName::parse(s).unwrap())
                .collect(),
            agent_cgroup: Some(cg("/cg/user.slice/session/faultline-agent", 3)),
        }
    }

    fn spec(target: Target) -> ExperimentSpec {
        ExperimentSpec {
            name: String::new(),
            faults: Vec::new(),
            target,
            duration: Duration::from_secs(1),
            dry_run: false,
            labels: std::collections::BTreeMap::new(),
            impact: None,
        }
    }

    fn cgroup_target(path: &str, level: u32, allow_host_wide: bool) -> Target {
        Target {
            cgroup: Some(cg(path, level)),
            allow_host_wide,
            ..Target::default()
        }
    }

    #[test]
    fn cgroups_that_reach_the_host_or_the_agent() {
        let p = policy();
        let refused = |t: Target| {
            let e = p.check(&spec(t), 1).unwrap_err();
            assert_eq!(e.field, "spec.target.cgroup");
            assert_eq!(e.kind, crate::domain::SpecErrorKind::Protected);
            e.reason
        };
        assert!(refused(cgroup_target("/cg", 0, false)).contains("cgroup2 root"));
        assert!(refused(cgroup_target("/cg/user.slice", 1, false)).contains("agent's own cgroup"));
        let inside = "/cg/user.slice/session/faultline-agent/x";
        assert!(refused(cgroup_target(inside, 4, true)).contains("inside it"));
        let own = "/cg/user.slice/session/faultline-agent";
        assert!(refused(cgroup_target(own, 3, true)).contains("inside it"));
        assert_eq!(
            p.check(&spec(cgroup_target("/cg/app", 1, false)), 1),
            Ok(HostWide(false))
        );
        // A sibling whose name merely starts like the agent's is not inside it.
        let sibling = "/cg/user.slice/session/faultline-agent2";
        assert_eq!(
            p.check(&spec(cgroup_target(sibling, 3, false)), 1),
            Ok(HostWide(false))
        );
        assert_eq!(
            p.check(&spec(cgroup_target("/cg", 0, true)), 1),
            Ok(HostWide(true))
        );
    }

    #[test]
    fn host_wide_takes_network_faults_or_a_dry_run() {
        let mut s = spec(cgroup_target("/cg", 0, true));
        let net = FaultSlot {
            kind: kind::PACKET_DROP,
            ..FaultSlot::default()
        };
        let sys = FaultSlot {
            kind: kind::SYSCALL_SIGNAL,
            ..FaultSlot::default()
        };
        assert!(check_host_wide(&s, HostWide(true), [&net]).is_ok());
        assert!(check_host_wide(&s, HostWide(false), [&sys]).is_ok());
        let e = check_host_wide(&s, HostWide(true), [&net, &sys]).unwrap_err();
        assert_eq!(e.field, "spec.target.allow_host_wide");
        assert!(e.reason.contains("spec.faults[1]"), "{}", e.reason);
        s.dry_run = true;
        assert!(check_host_wide(&s, HostWide(true), [&net, &sys]).is_ok());
    }

    #[test]
    fn protected_names_by_pattern() {
        let p = policy();
        for comm in ["sshd", "sshd-session", "auditd"] {
            let t = Target {
                comm: Some(comm.into()),
                ..Target::default()
            };
            let e = p.check(&spec(t), 1).unwrap_err();
            assert_eq!(e.field, "spec.target.comm", "{comm}");
        }
        let t = Target {
            comm: Some("auditd2".into()),
            ..Target::default()
        };
        assert!(p.check(&spec(t), 1).is_ok());
    }
}
