//! The names the wire's kinds and enums go by in experiment files, JSON,
//! flags, capability rows and test expectations: defined once here, for
//! the agent, `faultctl` and the tests alike.

use crate::v1::{self as pb, fault_spec::Kind};

// The kinds' names (`PACKET_LOSS`, …), `KINDS` and `kind_of`, generated
// from the proto so that they cannot drift from it.
include!(concat!(env!("OUT_DIR"), "/kinds.rs"));

/// A direction's name; unspecified means egress.
pub fn direction(d: pb::Direction) -> &'static str {
    match d {
        pb::Direction::Ingress => "ingress",
        pb::Direction::Unspecified | pb::Direction::Egress => "egress",
        pb::Direction::Both => "both",
    }
}

/// A DNS failure's name; unspecified means drop.
pub fn dns_failure(f: pb::DnsFailure) -> &'static str {
    match f {
        pb::DnsFailure::Unspecified | pb::DnsFailure::Drop => "drop",
        pb::DnsFailure::Servfail => "servfail",
        pb::DnsFailure::Nxdomain => "nxdomain",
    }
}

/// The protocols a packet match names (`PacketMatch.protocol`); empty is any.
pub const PROTOCOLS: [&str; 4] = ["any", "tcp", "udp", "icmp"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_named_by_its_oneof_field() {
        macro_rules! check {
            ($($variant:ident $name:ident),+ $(,)?) => {
                let named = [$(kind_of(&Kind::$variant(Default::default()))),+];
                assert_eq!(named, [$(stringify!($name)),+]);
                assert_eq!(named, KINDS);
            };
        }
        for_each_kind!(check);
    }
}
