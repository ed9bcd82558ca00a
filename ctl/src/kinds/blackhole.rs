//! `blackhole`: drop every matching packet, a partition.

use clap::Args;
use faultline_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::{
    CtlKind, Injection,
    net::{CgroupOrInterface, Direction, NetworkArgs, PacketMatch},
};
use crate::spec::WireError;

/// Drop every matching packet: a partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Blackhole {
    #[serde(default)]
    pub direction: Direction,
    #[serde(default, rename = "match")]
    pub matching: PacketMatch,
}

/// Drop every matching packet of a cgroup or an interface: a partition.
#[derive(Debug, Args)]
pub struct BlackholeArgs {
    #[command(flatten)]
    pub network: NetworkArgs<CgroupOrInterface>,
}

impl CtlKind for Blackhole {
    type Wire = pb::Blackhole;
    type Args = BlackholeArgs;

    fn to_wire(self) -> pb::Blackhole {
        pb::Blackhole {
            direction: self.direction.wire(),
            r#match: self.matching.wire(),
        }
    }

    fn from_wire(f: &pb::Blackhole) -> Result<Self, WireError> {
        Ok(Self {
            direction: Direction::from_wire(f.direction)?,
            matching: PacketMatch::from_wire(f.r#match.as_ref())?,
        })
    }

    #[cfg(test)]
    fn examples() -> Vec<pb::Blackhole> {
        vec![pb::Blackhole {
            direction: pb::Direction::Ingress.into(),
            r#match: Some(crate::test_support::to_ports("udp", "53")),
        }]
    }

    fn from_args(args: BlackholeArgs) -> anyhow::Result<Injection<Self>> {
        Ok(args.network.into_injection(|direction, matching| Self {
            direction,
            matching,
        }))
    }
}
