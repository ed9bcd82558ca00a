//! `latency`: delay the matching egress packets of an interface.

use std::time::Duration;

use clap::Args;
use faultline_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::{
    CtlKind, Injection,
    net::{Direction, InterfaceOnly, NetworkArgs, PacketMatch},
};
use crate::spec::{self, WireError};

/// Delay the matching egress packets of an interface; there is no direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    pub delay_ms: f64,
    #[serde(default)]
    pub jitter_ms: f64,
    #[serde(default, rename = "match")]
    pub matching: PacketMatch,
}

/// Delay the matching packets an interface sends (egress), with
/// optional jitter; the agent installs the fq qdisc while it runs.
#[derive(Debug, Args)]
#[command(mut_arg("direction", |arg| {
    arg.help("Latency delays sent (egress) packets only").hide(true)
}))]
pub struct LatencyArgs {
    /// Fixed delay, e.g. 50ms or 1.5ms (up to 10s).
    #[arg(long, value_name = "DURATION", value_parser = spec::parse_short_duration)]
    pub delay: Duration,
    /// Uniform jitter around the delay, e.g. 10ms (at most the delay).
    #[arg(long, value_name = "DURATION", value_parser = spec::parse_short_duration)]
    pub jitter: Option<Duration>,
    #[command(flatten)]
    pub network: NetworkArgs<InterfaceOnly>,
}

impl CtlKind for Latency {
    type Wire = pb::Latency;
    type Args = LatencyArgs;

    fn to_wire(self) -> pb::Latency {
        pb::Latency {
            delay_ms: self.delay_ms,
            jitter_ms: self.jitter_ms,
            r#match: self.matching.wire(),
        }
    }

    fn from_wire(f: &pb::Latency) -> Result<Self, WireError> {
        Ok(Self {
            delay_ms: f.delay_ms,
            jitter_ms: f.jitter_ms,
            matching: PacketMatch::from_wire(f.r#match.as_ref())?,
        })
    }

    #[cfg(test)]
    fn examples() -> Vec<pb::Latency> {
        vec![pb::Latency {
            delay_ms: 1.5,
            jitter_ms: 0.25,
            r#match: Some(crate::test_support::to_ports("udp", "8000-8100")),
        }]
    }

    fn from_args(args: LatencyArgs) -> anyhow::Result<Injection<Self>> {
        if args.network.direction != Direction::Egress {
            anyhow::bail!("--direction: latency delays egress packets only");
        }
        Ok(args.network.into_injection(|_, matching| Self {
            delay_ms: args.delay.as_secs_f64() * 1e3,
            jitter_ms: args.jitter.unwrap_or_default().as_secs_f64() * 1e3,
            matching,
        }))
    }
}
