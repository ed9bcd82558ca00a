//! Wire faults written compactly, for tests and tools: one constructor per
//! kind and the packet matches they use. `faultctl`'s tests and the
//! end-to-end suite share these.

use crate::v1::{self as pb, fault_spec::Kind};

impl From<Kind> for pb::FaultSpec {
    fn from(kind: Kind) -> Self {
        Self { kind: Some(kind) }
    }
}

/// A `syscall_error` on a socket call (`port` 0 and `cidr` "" = any).
pub fn syscall_error(call: &str, errno: &str, probability: f64, port: u16, cidr: &str) -> Kind {
    Kind::SyscallError(pb::SyscallError {
        syscall: call.into(),
        errno: errno.into(),
        probability,
        port: u32::from(port),
        cidr: cidr.into(),
        path: String::new(),
    })
}

/// `syscall_error` on connect.
pub fn connect_error(errno: &str, probability: f64, port: u16, cidr: &str) -> Kind {
    syscall_error("connect", errno, probability, port, cidr)
}

/// A `syscall_error` on an LSM call (file, process and socket calls beyond
/// connect/bind/sendmsg); `path` "" = every file, `port` 0 = any.
pub fn lsm_error(call: &str, errno: &str, probability: f64, path: &str, port: u16) -> Kind {
    Kind::SyscallError(pb::SyscallError {
        syscall: call.into(),
        errno: errno.into(),
        probability,
        port: u32::from(port),
        cidr: String::new(),
        path: path.into(),
    })
}

pub fn syscall_signal(syscall: &str, signal: &str, probability: f64, nth_call: u64) -> Kind {
    Kind::SyscallSignal(pb::SyscallSignal {
        syscall: syscall.into(),
        signal: signal.into(),
        probability,
        nth_call,
    })
}

pub fn packet_loss(
    probability: f64,
    burst_length: f64,
    direction: pb::Direction,
    matching: impl Into<Option<pb::PacketMatch>>,
) -> Kind {
    Kind::PacketLoss(pb::PacketLoss {
        probability,
        burst_length,
        direction: direction.into(),
        r#match: matching.into(),
    })
}

pub fn blackhole(direction: pb::Direction, matching: impl Into<Option<pb::PacketMatch>>) -> Kind {
    Kind::Blackhole(pb::Blackhole {
        direction: direction.into(),
        r#match: matching.into(),
    })
}

pub fn duplicate(
    probability: f64,
    direction: pb::Direction,
    matching: impl Into<Option<pb::PacketMatch>>,
) -> Kind {
    Kind::Duplicate(pb::Duplicate {
        probability,
        direction: direction.into(),
        r#match: matching.into(),
    })
}

pub fn corrupt(
    probability: f64,
    recompute_checksums: bool,
    direction: pb::Direction,
    matching: impl Into<Option<pb::PacketMatch>>,
) -> Kind {
    Kind::Corrupt(pb::Corrupt {
        probability,
        recompute_checksums,
        direction: direction.into(),
        r#match: matching.into(),
    })
}

pub fn bandwidth(
    rate_bits_per_sec: u64,
    burst_bytes: u32,
    direction: pb::Direction,
    matching: impl Into<Option<pb::PacketMatch>>,
) -> Kind {
    Kind::Bandwidth(pb::Bandwidth {
        rate_bits_per_sec,
        burst_bytes,
        direction: direction.into(),
        r#match: matching.into(),
    })
}

pub fn latency(
    delay_ms: f64,
    jitter_ms: f64,
    matching: impl Into<Option<pb::PacketMatch>>,
) -> Kind {
    Kind::Latency(pb::Latency {
        delay_ms,
        jitter_ms,
        r#match: matching.into(),
    })
}

pub fn dns_error(
    domain: &str,
    failure: pb::DnsFailure,
    probability: f64,
    resolver_cidr: &str,
) -> Kind {
    Kind::DnsError(pb::DnsError {
        domain: domain.into(),
        failure: failure.into(),
        probability,
        resolver_cidr: resolver_cidr.into(),
    })
}

/// A match with every field set: tcp from 10.0.0.0/8 port 8000-8100 to
/// 10.1.0.0/16 port 5432, SSH included.
pub fn full_match() -> pb::PacketMatch {
    pb::PacketMatch {
        protocol: "tcp".into(),
        src_cidr: "10.0.0.0/8".into(),
        dst_cidr: "10.1.0.0/16".into(),
        src_ports: "8000-8100".into(),
        dst_ports: "5432".into(),
        include_ssh: true,
    }
}

/// The match of a fault that sets none: any packet.
pub fn any_packet() -> pb::PacketMatch {
    pb::PacketMatch::default()
}

/// A match on the protocol and the destination ports only.
pub fn to_ports(protocol: &str, dst_ports: &str) -> pb::PacketMatch {
    pb::PacketMatch {
        protocol: protocol.into(),
        dst_ports: dst_ports.into(),
        ..Default::default()
    }
}

/// Every UDP datagram to destination port `port`.
pub fn udp_to_port(port: u16) -> pb::PacketMatch {
    to_ports("udp", &port.to_string())
}
