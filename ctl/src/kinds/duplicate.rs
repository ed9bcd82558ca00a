//! `duplicate`: send a fraction of matching packets twice.

use clap::Args;
use faultline_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::{
    CtlKind, Injection,
    net::{Direction, InterfaceOnly, NetworkArgs, PacketMatch},
};
use crate::spec::{self, WireError, fields};

/// Send a fraction of matching packets twice. Interface scope only: the agent
/// refuses it for a cgroup target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Duplicate {
    /// Fraction of packets sent twice, in [0, 1].
    #[serde(deserialize_with = "fields::deserialize_probability")]
    pub probability: f64,
    #[serde(default)]
    pub direction: Direction,
    #[serde(default, rename = "match")]
    pub matching: PacketMatch,
}

/// Send a fraction of the matching packets of an interface twice.
#[derive(Debug, Args)]
#[command(mut_arg("direction", |arg| {
    arg.help("Duplicate received (ingress) or sent (egress) packets, or both")
}))]
pub struct DuplicateArgs {
    /// Fraction of matching packets sent twice, in [0, 1].
    #[arg(long, value_parser = spec::parse_probability)]
    pub probability: f64,
    #[command(flatten)]
    pub network: NetworkArgs<InterfaceOnly>,
}

impl CtlKind for Duplicate {
    type Wire = pb::Duplicate;
    type Args = DuplicateArgs;

    fn to_wire(self) -> pb::Duplicate {
        pb::Duplicate {
            probability: self.probability,
            direction: self.direction.wire(),
            r#match: self.matching.wire(),
        }
    }

    fn from_wire(f: &pb::Duplicate) -> Result<Self, WireError> {
        Ok(Self {
            probability: f.probability,
            direction: Direction::from_wire(f.direction)?,
            matching: PacketMatch::from_wire(f.r#match.as_ref())?,
        })
    }

    #[cfg(test)]
    fn examples() -> Vec<pb::Duplicate> {
        vec![pb::Duplicate {
            probability: 0.2,
            direction: pb::Direction::Ingress.into(),
            r#match: Some(crate::test_support::full_match()),
        }]
    }

    fn from_args(args: DuplicateArgs) -> anyhow::Result<Injection<Self>> {
        Ok(args.network.into_injection(|direction, matching| Self {
            probability: args.probability,
            direction,
            matching,
        }))
    }
}
