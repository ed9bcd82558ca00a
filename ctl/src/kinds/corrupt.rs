//! `corrupt`: flip one bit in a fraction of matching packets.

use clap::Args;
use faultline_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::{
    CtlKind, Injection,
    net::{Direction, InterfaceOnly, NetworkArgs, PacketMatch},
};
use crate::spec::{self, WireError, fields};

/// Flip one bit in a fraction of matching packets. Interface scope only: the
/// agent refuses it for a cgroup target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Corrupt {
    /// Fraction of packets corrupted, in [0, 1].
    #[serde(deserialize_with = "fields::deserialize_probability")]
    pub probability: f64,
    /// false: checksums stay wrong and the receiver drops the packet; true:
    /// the L4 checksum is recomputed and corrupted data is delivered.
    #[serde(default)]
    pub recompute_checksums: bool,
    #[serde(default)]
    pub direction: Direction,
    #[serde(default, rename = "match")]
    pub matching: PacketMatch,
}

/// Flip one bit in a fraction of the matching packets of an interface.
#[derive(Debug, Args)]
#[command(mut_arg("direction", |arg| {
    arg.help("Corrupt received (ingress) or sent (egress) packets, or both")
}))]
pub struct CorruptArgs {
    /// Fraction of matching packets with one bit flipped, in [0, 1].
    #[arg(long, value_parser = spec::parse_probability)]
    pub probability: f64,
    /// Recompute the L4 checksum so that the corrupted data is delivered;
    /// by default the checksums stay wrong and the receiver drops the packet.
    #[arg(long)]
    pub recompute_checksums: bool,
    #[command(flatten)]
    pub network: NetworkArgs<InterfaceOnly>,
}

impl CtlKind for Corrupt {
    type Wire = pb::Corrupt;
    type Args = CorruptArgs;

    fn to_wire(self) -> pb::Corrupt {
        pb::Corrupt {
            probability: self.probability,
            recompute_checksums: self.recompute_checksums,
            direction: self.direction.wire(),
            r#match: self.matching.wire(),
        }
    }

    fn from_wire(f: &pb::Corrupt) -> Result<Self, WireError> {
        Ok(Self {
            probability: f.probability,
            recompute_checksums: f.recompute_checksums,
            direction: Direction::from_wire(f.direction)?,
            matching: PacketMatch::from_wire(f.r#match.as_ref())?,
        })
    }

    #[cfg(test)]
    fn examples() -> Vec<pb::Corrupt> {
        vec![pb::Corrupt {
            probability: 0.01,
            recompute_checksums: true,
            direction: pb::Direction::Both.into(),
            r#match: Some(crate::test_support::to_ports("tcp", "5432")),
        }]
    }

    fn from_args(args: CorruptArgs) -> anyhow::Result<Injection<Self>> {
        Ok(args.network.into_injection(|direction, matching| Self {
            probability: args.probability,
            recompute_checksums: args.recompute_checksums,
            direction,
            matching,
        }))
    }
}
