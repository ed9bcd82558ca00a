//! `memory_pressure`: make X bytes, or X % of MemAvailable (of the target
//! cgroup's memory limit when it has one), resident and keep them so,
//! charged to the target's cgroup when one is given, by a stressor process
//! (`stress::memory`). The agent never takes the host below its floor: a
//! request that would is refused up front, and the stressor gives memory
//! back while other load keeps the host below it.

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use faultline_proto::v1 as pb;

use super::{Fault, FaultKind, Plan, charged_target_only};
use crate::{
    caps::Capability,
    cgroup::{Cgroup, cgroup2_mount},
    domain::{Resolver, SpecError, Target},
    kernel::{KernelOps, Probed},
    stress::{
        default_floor, mem_available, mem_total,
        memory::MemoryStress,
        process::{Launch, Stressor, describe},
    },
    worker::{Metric, Report, Worker, WorkerEnv, placement::v1_mount},
};

#[derive(Clone, Debug, PartialEq)]
pub struct MemoryPressure(pb::MemoryPressure);

impl FaultKind for MemoryPressure {
    const NAME: &'static str = faultline_proto::names::MEMORY_PRESSURE;
    type Wire = pb::MemoryPressure;

    fn from_wire(field: &str, w: &pb::MemoryPressure, _: &dyn Resolver) -> Result<Self, SpecError> {
        match (w.size_bytes, w.percent) {
            (0, 0.0) => Err(SpecError::invalid(
                format!("{field}.size_bytes"),
                "give size_bytes (above 0) or percent",
            )),
            (s, p) if s > 0 && p != 0.0 => Err(SpecError::invalid(
                format!("{field}.percent"),
                "give size_bytes or percent, not both",
            )),
            (0, p) if !(p > 0.0 && p <= 100.0) => Err(SpecError::invalid(
                format!("{field}.percent"),
                format!("{p} is outside (0, 100]"),
            )),
            _ => Ok(Self(*w)),
        }
    }

    fn capabilities(_: &dyn Probed) -> Vec<Capability> {
        vec![Capability::new(
            Self::NAME,
            "stressor process",
            &["host-wide", "charged to a cgroup (v2, and v1 memory)"],
            None::<String>,
        )]
    }

    #[cfg(test)]
    fn example() -> (pb::MemoryPressure, pb::Target) {
        (
            pb::MemoryPressure {
                size_bytes: 64 << 20,
                percent: 0.0,
                ramp_bytes_per_sec: 256 << 20,
            },
            pb::Target::default(),
        )
    }
}

impl Fault for MemoryPressure {
    fn summary(&self) -> String {
        let amount = if self.0.size_bytes > 0 {
            format!("{} MiB", self.0.size_bytes >> 20)
        } else {
            format!("{} %", self.0.percent)
        };
        let ramp = if self.0.ramp_bytes_per_sec > 0 {
            format!(" at {} MiB/s", self.0.ramp_bytes_per_sec >> 20)
        } else {
            String::new()
        };
        format!("memory_pressure {amount}{ramp}")
    }

    fn check_target(&self, field: &str, target: &Target) -> Result<(), SpecError> {
        charged_target_only(field, target)
    }

    fn plan(&self, _: &str, _: &Target, _: &mut dyn KernelOps) -> Result<Plan, SpecError> {
        Ok(Plan::agent_side())
    }

    fn needs_no_target(&self) -> bool {
        true
    }

    fn impact_by_default(&self) -> bool {
        true
    }

    fn worker(
        &self,
        field: &str,
        target: &Target,
        env: &WorkerEnv,
    ) -> Result<Option<Box<dyn Worker>>, SpecError> {
        let (Some(total), Some(avail)) = (mem_total(), mem_available()) else {
            return Err(SpecError::unsupported(field, "cannot read /proc/meminfo"));
        };
        let floor = default_floor(total);
        let (bytes, which) = if self.0.size_bytes > 0 {
            (self.0.size_bytes, "size_bytes")
        } else {
            let limit = target.cgroup.as_ref().and_then(memory_limit);
            let base = limit.unwrap_or(avail);
            ((base as f64 * self.0.percent / 100.0) as u64, "percent")
        };
        if bytes == 0 {
            return Err(SpecError::invalid(format!("{field}.{which}"), "comes to 0 bytes"));
        }
        if avail.saturating_sub(bytes) < floor {
            return Err(SpecError::unsupported(
                format!("{field}.{which}"),
                format!(
                    "{} MiB would leave MemAvailable at {} MiB, below the agent's floor of {} MiB \
                     (the larger of 5 % of RAM and 512 MiB; {} MiB available now)",
                    bytes >> 20,
                    avail.saturating_sub(bytes) >> 20,
                    floor >> 20,
                    avail >> 20
                ),
            ));
        }
        let spec = MemoryStress {
            size_bytes: bytes,
            ramp_bytes_per_sec: self.0.ramp_bytes_per_sec,
            floor_bytes: floor,
        };
        let arg = serde_json::to_string(&spec)
            .map_err(|e| SpecError::invalid(field, format!("cannot encode the stressor's spec: {e}")))?;
        Ok(Some(Box::new(MemoryWorker {
            launch: Launch {
                role: "memory",
                arg,
                target: target.cgroup.clone(),
                controllers: &["memory"],
                token: env.token.clone(),
                journal: Arc::clone(&env.journal),
            },
            bytes,
            dry_run: env.dry_run,
            state: Mutex::default(),
        })))
    }

    fn to_wire(&self) -> pb::fault_spec::Kind {
        pb::fault_spec::Kind::MemoryPressure(self.0)
    }
}

/// The target's memory limit: v2 `memory.max`, else (hybrid host) the v1
/// `memory.limit_in_bytes` of the same path; `None` when unlimited.
fn memory_limit(cg: &Cgroup) -> Option<u64> {
    let read = |p: &Path| std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok();
    let v1 = || {
        let rel = cg.path.strip_prefix(cgroup2_mount().ok()?).ok()?.to_path_buf();
        read(&v1_mount("memory")?.join(rel).join("memory.limit_in_bytes"))
    };
    // v1 says "unlimited" with a number near 2^63.
    read(&cg.path.join("memory.max"))
        .or_else(v1)
        .filter(|&l| l < 1 << 60)
}

/// The OOM kills counted for the stressor's cgroups: v2 `memory.events`
/// oom_kill, v1 `memory.oom_control` oom_kill, and the host's /proc/vmstat.
fn oom_kills(s: &Stressor) -> u64 {
    let field = |path: &Path, name: &str| -> u64 {
        std::fs::read_to_string(path).ok().and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        })
        .unwrap_or(0)
    };
    let mut n = field(Path::new("/proc/vmstat"), "oom_kill ");
    if let Some(v2) = &s.placement.v2 {
        n += field(&v2.join("memory.events"), "oom_kill ");
    }
    for (c, dir) in &s.placement.v1 {
        if c == "memory" {
            n += field(&dir.join("memory.oom_control"), "oom_kill ");
        }
    }
    n
}

#[derive(Debug)]
struct MemoryWorker {
    launch: Launch,
    bytes: u64,
    dry_run: bool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    stressor: Option<Stressor>,
    oom_before: u64,
    resident: u64,
    failure: Option<String>,
}

impl Worker for MemoryWorker {
    fn mechanism(&self) -> &'static str {
        "stressor process"
    }

    fn start(&self) -> Result<(), String> {
        if self.dry_run {
            return Ok(());
        }
        let s = Stressor::start(&self.launch)?;
        let mut st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        st.oom_before = oom_kills(&s);
        st.stressor = Some(s);
        Ok(())
    }

    fn stop(&self) {
        let mut st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = st.stressor.take() {
            s.stop();
        }
    }

    fn report(&self) -> Report {
        let mut st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = st.stressor.as_ref() {
            if let Some(status) = s.exited() {
                if st.failure.is_none() {
                    let ooms = oom_kills(s).saturating_sub(st.oom_before);
                    let why = if ooms > 0 && status.code().is_none() {
                        format!(
                            "the memory stressor (pid {}) was OOM-killed ({} OOM kill(s) counted; {}) at about {} of {} MiB: \
                             the cgroup's memory limit or the host is below the request",
                            s.pid,
                            ooms,
                            describe(status),
                            st.resident >> 20,
                            self.bytes >> 20
                        )
                    } else {
                        format!("the memory stressor (pid {}) ended by itself: {}", s.pid, describe(status))
                    };
                    st.failure = Some(why);
                }
            } else if let Some(rss) = s.rss_bytes() {
                st.resident = rss;
            }
        }
        Report {
            metrics: vec![
                Metric::new("resident_bytes", st.resident as f64, "bytes"),
                Metric::new("requested_bytes", self.bytes as f64, "bytes"),
            ],
            failure: st.failure.clone(),
            ..Report::default()
        }
    }
}
