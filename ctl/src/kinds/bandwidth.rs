//! `bandwidth`: police matching traffic to a rate.

use clap::Args;
use faultline_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::{
    CtlKind, Injection,
    net::{CgroupOrInterface, Direction, NetworkArgs, PacketMatch},
};
use crate::spec::{self, WireError, fields};

/// Police matching traffic to a rate; packets over it are dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bandwidth {
    /// Bits per second; also written `rate`, and either may be text such as
    /// `10mbit` (see [`spec::parse_rate`]). Written back as a number.
    #[serde(alias = "rate", deserialize_with = "fields::deserialize_rate")]
    pub rate_bits_per_sec: u64,
    /// Bucket depth in bytes, at least 65549 (the agent refuses less: a
    /// 64 KiB packet and its headers must fit); 0 = the agent picks.
    #[serde(default)]
    pub burst_bytes: u32,
    #[serde(default)]
    pub direction: Direction,
    #[serde(default, rename = "match")]
    pub matching: PacketMatch,
}

/// Limit the matching traffic of a cgroup or an interface to a rate;
/// packets over it are dropped.
#[derive(Debug, Args)]
#[command(mut_arg("direction", |arg| {
    arg.help("Limit received (ingress) or sent (egress) packets, or both")
}))]
pub struct BandwidthArgs {
    /// Rate in bits per second: a number, or one with kbit, mbit or gbit
    /// (×1000), e.g. 500kbit, 10mbit, 2.5gbit; kbps, mbps and gbps mean the
    /// same (bits, not bytes).
    #[arg(long, value_name = "RATE", value_parser = spec::parse_rate)]
    pub rate: u64,
    /// Bucket depth in bytes, with k or m for ×1024, e.g. 128k; at least
    /// 65549 (a 64 KiB packet and its headers); 0 lets the agent pick
    /// max(256k, 20ms at the rate).
    #[arg(long, value_name = "BYTES", default_value_t = 0, value_parser = spec::parse_burst)]
    pub burst: u32,
    #[command(flatten)]
    pub network: NetworkArgs<CgroupOrInterface>,
}

impl CtlKind for Bandwidth {
    type Wire = pb::Bandwidth;
    type Args = BandwidthArgs;

    fn to_wire(self) -> pb::Bandwidth {
        pb::Bandwidth {
            rate_bits_per_sec: self.rate_bits_per_sec,
            burst_bytes: self.burst_bytes,
            direction: self.direction.wire(),
            r#match: self.matching.wire(),
        }
    }

    fn from_wire(f: &pb::Bandwidth) -> Result<Self, WireError> {
        Ok(Self {
            rate_bits_per_sec: f.rate_bits_per_sec,
            burst_bytes: f.burst_bytes,
            direction: Direction::from_wire(f.direction)?,
            matching: PacketMatch::from_wire(f.r#match.as_ref())?,
        })
    }

    #[cfg(test)]
    fn examples() -> Vec<pb::Bandwidth> {
        vec![pb::Bandwidth {
            rate_bits_per_sec: 2_500_000_000,
            burst_bytes: 131_072,
            direction: pb::Direction::Egress.into(),
            r#match: Some(crate::test_support::to_ports("icmp", "")),
        }]
    }

    fn from_args(args: BandwidthArgs) -> anyhow::Result<Injection<Self>> {
        Ok(args.network.into_injection(|direction, matching| Self {
            rate_bits_per_sec: args.rate,
            burst_bytes: args.burst,
            direction,
            matching,
        }))
    }
}
