//! `process_kill`: signal the target's processes once or every interval;
//! one random match per interval is Chaos Monkey.

use std::time::Duration;

use clap::{Args, ValueEnum};
use faultline_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::{CtlKind, Injection};
use crate::{
    cli::inject::ExperimentArgs,
    spec::{self, WireError, fields},
};

/// Whom each round signals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Pick {
    #[default]
    All,
    OneRandom,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessKill {
    /// A name or a number; default SIGKILL.
    #[serde(
        default = "sigkill",
        deserialize_with = "fields::deserialize_name_or_number"
    )]
    pub signal: String,
    /// Signal every interval; absent = once.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "fields::deserialize_opt_duration",
        serialize_with = "fields::serialize_opt_duration"
    )]
    pub interval: Option<Duration>,
    #[serde(default)]
    pub pick: Pick,
    /// Chance per round, in [0, 1].
    #[serde(
        default = "fields::always",
        deserialize_with = "fields::deserialize_probability"
    )]
    pub probability: f64,
    /// At least this long between two kills.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "fields::deserialize_opt_duration",
        serialize_with = "fields::serialize_opt_duration"
    )]
    pub min_gap: Option<Duration>,
}

fn sigkill() -> String {
    "SIGKILL".to_owned()
}

fn opt_ms(d: Option<Duration>) -> u64 {
    d.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_ms(ms: u64) -> Option<Duration> {
    (ms != 0).then(|| Duration::from_millis(ms))
}

/// Signal the target's processes once, or every interval; with
/// `--pick one-random`, one random match per interval (Chaos Monkey).
#[derive(Debug, Args)]
pub struct ProcessKillArgs {
    /// Signal name or number: KILL, TERM, 9.
    #[arg(long, default_value = "KILL")]
    pub signal: String,
    /// Signal every interval, e.g. 30s [default: once].
    #[arg(long, value_parser = spec::parse_duration)]
    pub interval: Option<Duration>,
    #[arg(long, value_enum, default_value_t = Pick::All)]
    pub pick: Pick,
    /// Chance per interval that anyone is signalled, in [0, 1] [default: 1].
    #[arg(long, value_parser = spec::parse_probability)]
    pub probability: Option<f64>,
    /// At least this long between two kills, e.g. 10s.
    #[arg(long, value_parser = spec::parse_duration)]
    pub min_gap: Option<Duration>,
    #[command(flatten)]
    pub experiment: ExperimentArgs,
}

impl CtlKind for ProcessKill {
    type Wire = pb::ProcessKill;
    type Args = ProcessKillArgs;

    fn to_wire(self) -> pb::ProcessKill {
        pb::ProcessKill {
            signal: self.signal,
            interval_ms: opt_ms(self.interval),
            pick: match self.pick {
                Pick::All => pb::KillPick::All,
                Pick::OneRandom => pb::KillPick::OneRandom,
            }
            .into(),
            probability: self.probability,
            min_gap_ms: opt_ms(self.min_gap),
        }
    }

    fn from_wire(f: &pb::ProcessKill) -> Result<Self, WireError> {
        let pick = match pb::KillPick::try_from(f.pick) {
            Ok(pb::KillPick::Unspecified | pb::KillPick::All) => Pick::All,
            Ok(pb::KillPick::OneRandom) => Pick::OneRandom,
            Err(_) => return Err(WireError(format!("unknown kill pick {}", f.pick))),
        };
        Ok(Self {
            signal: f.signal.clone(),
            interval: from_ms(f.interval_ms),
            pick,
            probability: f.probability,
            min_gap: from_ms(f.min_gap_ms),
        })
    }

    #[cfg(test)]
    fn examples() -> Vec<pb::ProcessKill> {
        vec![pb::ProcessKill {
            signal: "SIGTERM".into(),
            interval_ms: 30_000,
            pick: pb::KillPick::OneRandom.into(),
            probability: 0.5,
            min_gap_ms: 10_000,
        }]
    }

    fn from_args(args: ProcessKillArgs) -> anyhow::Result<Injection<Self>> {
        Ok(args.experiment.into_injection(Self {
            signal: args.signal,
            interval: args.interval,
            pick: args.pick,
            probability: args.probability.unwrap_or(1.0),
            min_gap: args.min_gap,
        }))
    }
}
