//! `packet_loss`: drop a fraction of matching packets.

use clap::Args;
use faultline_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::{
    CtlKind, Injection,
    net::{CgroupOrInterface, Direction, NetworkArgs, PacketMatch},
};
use crate::spec::{self, WireError, fields};

/// Drop a fraction of matching packets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacketLoss {
    /// Mean fraction of packets lost, in [0, 1].
    #[serde(deserialize_with = "fields::deserialize_probability")]
    pub probability: f64,
    /// Mean length of a loss burst in packets; 0 or 1 = independent losses.
    #[serde(default, deserialize_with = "fields::deserialize_burst_length")]
    pub burst_length: f64,
    #[serde(default)]
    pub direction: Direction,
    #[serde(default, rename = "match")]
    pub matching: PacketMatch,
}

/// Drop a fraction of the matching packets of a cgroup or an interface.
#[derive(Debug, Args)]
pub struct PacketLossArgs {
    /// Mean fraction of matching packets lost, in [0, 1].
    #[arg(long, value_parser = spec::parse_probability)]
    pub probability: f64,
    /// Mean length of a loss burst in packets; 0 or 1 = independent losses.
    #[arg(long, value_name = "N", default_value_t = 0.0, value_parser = spec::parse_burst_length)]
    pub burst_length: f64,
    #[command(flatten)]
    pub network: NetworkArgs<CgroupOrInterface>,
}

impl CtlKind for PacketLoss {
    type Wire = pb::PacketLoss;
    type Args = PacketLossArgs;

    fn to_wire(self) -> pb::PacketLoss {
        pb::PacketLoss {
            probability: self.probability,
            burst_length: self.burst_length,
            direction: self.direction.wire(),
            r#match: self.matching.wire(),
        }
    }

    fn from_wire(f: &pb::PacketLoss) -> Result<Self, WireError> {
        Ok(Self {
            probability: f.probability,
            burst_length: f.burst_length,
            direction: Direction::from_wire(f.direction)?,
            matching: PacketMatch::from_wire(f.r#match.as_ref())?,
        })
    }

    #[cfg(test)]
    fn examples() -> Vec<pb::PacketLoss> {
        vec![pb::PacketLoss {
            probability: 0.3,
            burst_length: 4.0,
            direction: pb::Direction::Both.into(),
            r#match: Some(crate::test_support::full_match()),
        }]
    }

    fn from_args(args: PacketLossArgs) -> anyhow::Result<Injection<Self>> {
        Ok(args.network.into_injection(|direction, matching| Self {
            probability: args.probability,
            burst_length: args.burst_length,
            direction,
            matching,
        }))
    }
}
