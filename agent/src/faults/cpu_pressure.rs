//! `cpu_pressure`: L % of N CPUs (or of a CPU list), host-wide or charged
//! to the target's cgroup, by a stressor process of the agent's own
//! (`stress::cpu`: one pinned closed-loop duty cycle per CPU).

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Instant,
};

use faultline_proto::v1 as pb;

use super::{Fault, FaultKind, Plan, charged_target_only};
use crate::{
    caps::Capability,
    domain::{Resolver, SpecError, Target},
    kernel::{KernelOps, Probed},
    stress::{
        cpu::{CpuStress, cpu_busy_ns},
        process::{Launch, Stressor, describe, online_cpus},
    },
    worker::{Metric, Report, Worker, WorkerEnv},
};

#[derive(Clone, Debug, PartialEq)]
pub struct CpuPressure {
    wire: pb::CpuPressure,
    /// The CPUs to load, resolved from `cpus` or `cpu_list`.
    cpus: Vec<u32>,
}

impl FaultKind for CpuPressure {
    const NAME: &'static str = faultline_proto::names::CPU_PRESSURE;
    type Wire = pb::CpuPressure;

    fn from_wire(field: &str, w: &pb::CpuPressure, _: &dyn Resolver) -> Result<Self, SpecError> {
        let load = w.load_percent;
        if !(load > 0.0 && load <= 100.0) {
            return Err(SpecError::invalid(
                format!("{field}.load_percent"),
                format!("{load} is outside (0, 100]"),
            ));
        }
        let online = online_cpus();
        let shown = online
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let cpus = if w.cpu_list.is_empty() {
            let n = w.cpus.max(1) as usize;
            if n > online.len() {
                return Err(SpecError::invalid(
                    format!("{field}.cpus"),
                    format!("{n} CPUs asked for; this machine has {} online ({shown})", online.len()),
                ));
            }
            online[..n].to_vec()
        } else {
            if w.cpus != 0 {
                return Err(SpecError::invalid(
                    format!("{field}.cpus"),
                    "give cpus or cpu_list, not both",
                ));
            }
            for (i, c) in w.cpu_list.iter().enumerate() {
                if !online.contains(c) {
                    return Err(SpecError::invalid(
                        format!("{field}.cpu_list[{i}]"),
                        format!("CPU {c} is not online (online: {shown})"),
                    ));
                }
                if w.cpu_list[..i].contains(c) {
                    return Err(SpecError::invalid(
                        format!("{field}.cpu_list[{i}]"),
                        format!("CPU {c} is listed twice"),
                    ));
                }
            }
            w.cpu_list.clone()
        };
        Ok(Self {
            wire: w.clone(),
            cpus,
        })
    }

    fn capabilities(_: &dyn Probed) -> Vec<Capability> {
        vec![Capability::new(
            Self::NAME,
            "stressor process",
            &["host-wide", "charged to a cgroup (v2, and v1 cpu/cpuacct)"],
            None::<String>,
        )]
    }

    #[cfg(test)]
    fn example() -> (pb::CpuPressure, pb::Target) {
        (
            pb::CpuPressure {
                load_percent: 50.0,
                cpus: 1,
                cpu_list: Vec::new(),
                host: true,
                top_up: true,
            },
            pb::Target::default(),
        )
    }
}

impl Fault for CpuPressure {
    fn summary(&self) -> String {
        let cpus: Vec<String> = self.cpus.iter().map(ToString::to_string).collect();
        format!(
            "cpu_pressure {}{} % on CPU {}{}",
            if self.wire.top_up { "up to " } else { "" },
            self.wire.load_percent,
            cpus.join(","),
            if self.wire.host { ", host-wide" } else { "" }
        )
    }

    fn check_target(&self, field: &str, target: &Target) -> Result<(), SpecError> {
        charged_target_only(field, target)?;
        match (self.wire.host, target.cgroup.is_some()) {
            (true, true) => Err(SpecError::invalid(
                format!("{field}.host"),
                "host-wide load and a cgroup target exclude each other: give one",
            )),
            (false, false) => Err(SpecError::invalid(
                format!("{field}.host"),
                "the load is charged to a cgroup (spec.target.cgroup) or host-wide (host: true); neither is given",
            )),
            _ => Ok(()),
        }
    }

    fn plan(&self, _: &str, _: &Target, _: &mut dyn KernelOps) -> Result<Plan, SpecError> {
        Ok(Plan::agent_side())
    }

    fn needs_no_target(&self) -> bool {
        self.wire.host
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
        let spec = CpuStress {
            load_percent: self.wire.load_percent,
            cpus: self.cpus.clone(),
            top_up: self.wire.top_up,
        };
        let arg = serde_json::to_string(&spec)
            .map_err(|e| SpecError::invalid(field, format!("cannot encode the stressor's spec: {e}")))?;
        Ok(Some(Box::new(CpuWorker {
            launch: Launch {
                role: "cpu",
                arg,
                target: target.cgroup.clone(),
                controllers: &["cpu", "cpuacct"],
                token: env.token.clone(),
                journal: Arc::clone(&env.journal),
            },
            spec,
            dry_run: env.dry_run,
            state: Mutex::default(),
        })))
    }

    fn to_wire(&self) -> pb::fault_spec::Kind {
        pb::fault_spec::Kind::CpuPressure(self.wire.clone())
    }
}

/// Samples of the stressor's CPU time kept for the load "over the last second".
const WINDOW_NS: u128 = 1_000_000_000;
/// The shortest window a load is reported over.
const MIN_WINDOW_NS: u128 = 200_000_000;

#[derive(Debug)]
struct CpuWorker {
    launch: Launch,
    spec: CpuStress,
    dry_run: bool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    stressor: Option<Stressor>,
    /// (when, the stressor's CPU ns, the CPUs' busy ns from /proc/stat).
    samples: VecDeque<(Instant, u64, i64)>,
    last: Vec<Metric>,
    failure: Option<String>,
}

impl CpuWorker {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn busy_ns(&self) -> i64 {
        std::fs::read_to_string("/proc/stat").map_or(0, |stat| {
            self.spec
                .cpus
                .iter()
                .filter_map(|&c| cpu_busy_ns(&stat, c))
                .sum()
        })
    }
}

impl Worker for CpuWorker {
    fn mechanism(&self) -> &'static str {
        "stressor process"
    }

    fn start(&self) -> Result<(), String> {
        if self.dry_run {
            return Ok(());
        }
        let s = Stressor::start(&self.launch)?;
        let mut st = self.lock();
        // The base is what it used by now: exec and start-up are no load.
        let base = s.cpu_ns().unwrap_or(0);
        st.samples.push_back((Instant::now(), base, self.busy_ns()));
        st.stressor = Some(s);
        Ok(())
    }

    fn stop(&self) {
        let mut st = self.lock();
        if let Some(s) = st.stressor.take() {
            s.stop();
        }
    }

    fn report(&self) -> Report {
        let mut st = self.lock();
        let Some(s) = st.stressor.as_ref() else {
            return Report {
                metrics: st.last.clone(),
                failure: st.failure.clone(),
                ..Report::default()
            };
        };
        if let Some(status) = s.exited() {
            st.failure = Some(format!(
                "the CPU stressor (pid {}) ended by itself: {}",
                s.pid,
                describe(status)
            ));
        } else if let Some(ns) = s.cpu_ns() {
            let now = Instant::now();
            let busy = if self.spec.top_up { self.busy_ns() } else { 0 };
            st.samples.push_back((now, ns, busy));
            // Keep the newest sample at least a second old as the base.
            while st.samples.len() > 2 && now.duration_since(st.samples[1].0).as_nanos() >= WINDOW_NS {
                st.samples.pop_front();
            }
            let (t0, ns0, busy0) = st.samples[0];
            let wall = now.duration_since(t0).as_nanos() as f64 * self.spec.cpus.len() as f64;
            // A shorter window says more about start-up than about the load.
            if now.duration_since(t0).as_nanos() >= MIN_WINDOW_NS {
                let mut m = vec![Metric::new(
                    "achieved_load_percent",
                    ns.saturating_sub(ns0) as f64 / wall * 100.0,
                    "%",
                )];
                if self.spec.top_up {
                    m.push(Metric::new(
                        "cpu_busy_percent",
                        (busy - busy0) as f64 / wall * 100.0,
                        "%",
                    ));
                }
                st.last = m;
            }
        }
        Report {
            metrics: st.last.clone(),
            failure: st.failure.clone(),
            ..Report::default()
        }
    }
}
