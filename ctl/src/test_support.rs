//! Wire values for the tests, written compactly: the network faults as the
//! agent receives them, and the packet matches they use. The unit tests and
//! `tests/cli.rs` share this file.

use faultline_proto::v1::{self as pb, fault_spec::Kind};

pub fn packet_loss(
    probability: f64,
    burst_length: f64,
    direction: pb::Direction,
    matching: Option<pb::PacketMatch>,
) -> Kind {
    Kind::PacketLoss(pb::PacketLoss {
        probability,
        burst_length,
        direction: direction.into(),
        r#match: matching,
    })
}

pub fn blackhole(direction: pb::Direction, matching: Option<pb::PacketMatch>) -> Kind {
    Kind::Blackhole(pb::Blackhole {
        direction: direction.into(),
        r#match: matching,
    })
}

pub fn duplicate(
    probability: f64,
    direction: pb::Direction,
    matching: Option<pb::PacketMatch>,
) -> Kind {
    Kind::Duplicate(pb::Duplicate {
        probability,
        direction: direction.into(),
        r#match: matching,
    })
}

pub fn corrupt(
    probability: f64,
    recompute_checksums: bool,
    direction: pb::Direction,
    matching: Option<pb::PacketMatch>,
) -> Kind {
    Kind::Corrupt(pb::Corrupt {
        probability,
        recompute_checksums,
        direction: direction.into(),
        r#match: matching,
    })
}

pub fn bandwidth(
    rate_bits_per_sec: u64,
    burst_bytes: u32,
    direction: pb::Direction,
    matching: Option<pb::PacketMatch>,
) -> Kind {
    Kind::Bandwidth(pb::Bandwidth {
        rate_bits_per_sec,
        burst_bytes,
        direction: direction.into(),
        r#match: matching,
    })
}

/// A match with every field set: tcp from 10.0.0.0/8 port 8000-8100 to
/// 10.1.0.0/16 port 5432, SSH included.
pub fn full_match() -> Option<pb::PacketMatch> {
    Some(pb::PacketMatch {
        protocol: "tcp".into(),
        src_cidr: "10.0.0.0/8".into(),
        dst_cidr: "10.1.0.0/16".into(),
        src_ports: "8000-8100".into(),
        dst_ports: "5432".into(),
        include_ssh: true,
    })
}

/// The `inject` flags that make `full_match()`.
pub const FULL_MATCH_FLAGS: &str = "--protocol tcp --src-cidr 10.0.0.0/8 --dst-cidr 10.1.0.0/16 \
                                    --src-ports 8000-8100 --dst-ports 5432 --include-ssh";

/// The match of a fault that sets none: any packet.
pub fn any_packet() -> Option<pb::PacketMatch> {
    Some(pb::PacketMatch::default())
}

/// A match on the protocol and the destination ports only.
pub fn to_ports(protocol: &str, dst_ports: &str) -> Option<pb::PacketMatch> {
    Some(pb::PacketMatch {
        protocol: protocol.into(),
        dst_ports: dst_ports.into(),
        ..Default::default()
    })
}
