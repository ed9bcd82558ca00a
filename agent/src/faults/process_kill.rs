//! `process_kill`: the agent signals the target's processes once, or every
//! interval; with `pick: one-random`, one random match per interval, with a
//! probability and a minimum gap between kills (Chaos Monkey). No kernel
//! program: the slot is empty, the work is `procs::kill`'s.

use std::time::Duration;

use faultline_proto::v1 as pb;

use super::{Fault, FaultKind, Plan, probability, process_scope};
use crate::{
    caps::Capability,
    domain::{Probability, Resolver, SpecError, Target},
    kernel::{KernelOps, Probed},
    names::SignalName,
    procs::{
        Matcher,
        kill::{Killer, KillPlan, MIN_INTERVAL, Pick},
    },
    worker::{Action, Report, Worker, WorkerEnv},
};

#[derive(Clone, Debug, PartialEq)]
pub struct ProcessKill {
    pub signal: SignalName,
    /// None: once, at the start.
    pub interval: Option<Duration>,
    pub pick: Pick,
    /// Chance per round; 0 on the wire is 0 (no round signals anyone), as
    /// for every probability: a client that forgets it kills nothing.
    pub probability: Probability,
    pub min_gap: Duration,
}

impl FaultKind for ProcessKill {
    const NAME: &'static str = faultline_proto::names::PROCESS_KILL;
    type Wire = pb::ProcessKill;

    fn from_wire(field: &str, w: &pb::ProcessKill, _: &dyn Resolver) -> Result<Self, SpecError> {
        let inv = |sub: &str, reason: String| SpecError::invalid(format!("{field}.{sub}"), reason);
        let signal = if w.signal.trim().is_empty() {
            return Err(inv("signal", "a signal is required, e.g. KILL".into()));
        } else {
            SignalName::parse(&w.signal).map_err(|r| inv("signal", r))?
        };
        let interval = match w.interval_ms {
            0 => None,
            ms if Duration::from_millis(ms) < MIN_INTERVAL => {
                return Err(inv(
                    "interval_ms",
                    format!(
                        "{ms} ms is below the minimum of {} ms (0 = once)",
                        MIN_INTERVAL.as_millis()
                    ),
                ));
            }
            ms => Some(Duration::from_millis(ms)),
        };
        if interval.is_none() && w.min_gap_ms != 0 {
            return Err(inv(
                "min_gap_ms",
                "a gap between kills needs an interval (interval_ms is 0: one round only)".into(),
            ));
        }
        let pick = match pb::KillPick::try_from(w.pick) {
            Ok(pb::KillPick::Unspecified | pb::KillPick::All) => Pick::All,
            Ok(pb::KillPick::OneRandom) => Pick::OneRandom,
            Err(_) => return Err(inv("pick", format!("unknown pick {}", w.pick))),
        };
        Ok(Self {
            signal,
            interval,
            pick,
            probability: probability(field, w.probability)?,
            min_gap: Duration::from_millis(w.min_gap_ms),
        })
    }

    fn capabilities(_: &dyn Probed) -> Vec<Capability> {
        vec![Capability::new(
            Self::NAME,
            "signals",
            &["once", "every interval", "one random per interval"],
            None::<String>,
        )]
    }

    #[cfg(test)]
    fn example() -> (pb::ProcessKill, pb::Target) {
        let wire = pb::ProcessKill {
            signal: "SIGTERM".into(),
            interval_ms: 30_000,
            pick: pb::KillPick::OneRandom.into(),
            probability: 0.5,
            min_gap_ms: 10_000,
        };
        let target = pb::Target {
            comm: "worker".into(),
            ..Default::default()
        };
        (wire, target)
    }
}

impl Fault for ProcessKill {
    fn summary(&self) -> String {
        let when = self.interval.map_or_else(
            || "once".to_owned(),
            |i| format!("every {}", humantime::format_duration(i)),
        );
        let whom = match self.pick {
            Pick::All => "all",
            Pick::OneRandom => "one random",
        };
        let mut s = format!("{} {whom} {when}", self.signal.name());
        if self.probability.value() < 1.0 {
            s.push_str(&format!(" p={}", self.probability.value()));
        }
        if !self.min_gap.is_zero() {
            s.push_str(&format!(" min-gap {}", humantime::format_duration(self.min_gap)));
        }
        s
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
        let plan = KillPlan {
            signal: self.signal.0,
            interval: self.interval,
            pick: self.pick,
            probability: self.probability.value(),
            min_gap: self.min_gap,
        };
        Ok(Some(Box::new(KillWorker(Killer::new(
            plan,
            matcher,
            env.dry_run,
        )))))
    }

    fn to_wire(&self) -> pb::fault_spec::Kind {
        pb::fault_spec::Kind::ProcessKill(pb::ProcessKill {
            signal: self.signal.name().into(),
            interval_ms: self.interval.map_or(0, |i| i.as_millis() as u64),
            pick: match self.pick {
                Pick::All => pb::KillPick::All,
                Pick::OneRandom => pb::KillPick::OneRandom,
            }
            .into(),
            probability: self.probability.value(),
            min_gap_ms: self.min_gap.as_millis() as u64,
        })
    }
}

#[derive(Debug)]
struct KillWorker(Killer);

impl Worker for KillWorker {
    fn mechanism(&self) -> &'static str {
        "signals"
    }

    fn start(&self) -> Result<(), String> {
        self.0.start()
    }

    fn stop(&self) {
        self.0.stop();
    }

    fn report(&self) -> Report {
        let (seen, sent, kills) = self.0.progress();
        Report {
            matched: Some(seen),
            injected: Some(sent),
            actions: kills
                .into_iter()
                .map(|k| Action {
                    at: k.at,
                    pid: k.pid,
                    what: k.what(),
                    comm: k.comm,
                })
                .collect(),
            ..Report::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::HostResolver;

    fn wire(interval_ms: u64, min_gap_ms: u64, probability: f64, signal: &str) -> pb::ProcessKill {
        pb::ProcessKill {
            signal: signal.into(),
            interval_ms,
            pick: pb::KillPick::OneRandom.into(),
            probability,
            min_gap_ms,
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let f = "spec.faults[0].process_kill";
        let field = |w: pb::ProcessKill| {
            ProcessKill::from_wire(f, &w, &HostResolver).unwrap_err().field
        };
        assert_eq!(field(wire(999, 0, 1.0, "KILL")), format!("{f}.interval_ms"));
        assert_eq!(field(wire(0, 10, 1.0, "KILL")), format!("{f}.min_gap_ms"));
        assert_eq!(field(wire(1000, 0, 1.5, "KILL")), format!("{f}.probability"));
        assert_eq!(field(wire(1000, 0, 1.0, "NOPE")), format!("{f}.signal"));
        assert_eq!(field(wire(1000, 0, 1.0, "")), format!("{f}.signal"));
        let mut w = wire(1000, 0, 1.0, "KILL");
        w.pick = 7;
        assert_eq!(field(w), format!("{f}.pick"));
        // A gap longer than the interval is fine: rounds in between pass.
        assert!(ProcessKill::from_wire(f, &wire(1000, 5000, 1.0, "KILL"), &HostResolver).is_ok());
    }
}
