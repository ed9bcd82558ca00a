//! The names the wire's kinds and enums go by in experiment files, JSON,
//! flags, capability rows and test expectations: defined once here, for
//! the agent, `faultctl` and the tests alike.

use crate::v1::{self as pb, fault_spec::Kind};

pub const SYSCALL_ERROR: &str = "syscall_error";
pub const SYSCALL_SIGNAL: &str = "syscall_signal";
pub const PACKET_LOSS: &str = "packet_loss";
pub const BLACKHOLE: &str = "blackhole";
pub const DUPLICATE: &str = "duplicate";
pub const CORRUPT: &str = "corrupt";
pub const BANDWIDTH: &str = "bandwidth";
pub const LATENCY: &str = "latency";
pub const DNS_ERROR: &str = "dns_error";

/// Every fault kind, in the order of `FaultSpec.kind`'s fields.
pub const KINDS: [&str; 9] = [
    SYSCALL_ERROR,
    SYSCALL_SIGNAL,
    PACKET_LOSS,
    BLACKHOLE,
    DUPLICATE,
    CORRUPT,
    BANDWIDTH,
    LATENCY,
    DNS_ERROR,
];

/// The name of a wire fault's kind (exhaustive: a new kind must be named).
pub fn kind_of(kind: &Kind) -> &'static str {
    match kind {
        Kind::SyscallError(_) => SYSCALL_ERROR,
        Kind::SyscallSignal(_) => SYSCALL_SIGNAL,
        Kind::PacketLoss(_) => PACKET_LOSS,
        Kind::Blackhole(_) => BLACKHOLE,
        Kind::Duplicate(_) => DUPLICATE,
        Kind::Corrupt(_) => CORRUPT,
        Kind::Bandwidth(_) => BANDWIDTH,
        Kind::Latency(_) => LATENCY,
        Kind::DnsError(_) => DNS_ERROR,
    }
}

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
    fn every_kind_is_named_once_in_order() {
        let kinds = [
            Kind::SyscallError(Default::default()),
            Kind::SyscallSignal(Default::default()),
            Kind::PacketLoss(Default::default()),
            Kind::Blackhole(Default::default()),
            Kind::Duplicate(Default::default()),
            Kind::Corrupt(Default::default()),
            Kind::Bandwidth(Default::default()),
            Kind::Latency(Default::default()),
            Kind::DnsError(Default::default()),
        ];
        let names: Vec<&str> = kinds.iter().map(kind_of).collect();
        assert_eq!(names, KINDS);
    }
}
