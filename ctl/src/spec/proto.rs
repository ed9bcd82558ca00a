//! The experiment file to and from the wire `ExperimentSpec`. To the wire is
//! what `apply` and `inject` send; from the wire is how `status`, `ls` and
//! `watch` print what the agent runs, in the shape `apply -f` takes back.

use std::time::Duration;

use faultline_proto::v1 as pb;

use super::{
    Bandwidth, Blackhole, Corrupt, Direction, DnsError, DnsFailure, Duplicate, Experiment, Fault,
    Latency, PacketLoss, PacketMatch, Protocol, SyscallError, SyscallSignal, Target,
    units::duration_ms,
};

/// A value from the agent that this build has no name for, such as an enum
/// value added by a newer agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(String);

impl From<Experiment> for pb::ExperimentSpec {
    fn from(experiment: Experiment) -> Self {
        Self {
            name: experiment.name,
            faults: experiment
                .faults
                .into_iter()
                .map(pb::FaultSpec::from)
                .collect(),
            target: Some(experiment.target.into()),
            duration_ms: duration_ms(experiment.duration),
            dry_run: experiment.dry_run,
            labels: experiment.labels.into_iter().collect(),
        }
    }
}

impl TryFrom<&pb::ExperimentSpec> for Experiment {
    type Error = WireError;

    fn try_from(spec: &pb::ExperimentSpec) -> Result<Self, WireError> {
        Ok(Self {
            name: spec.name.clone(),
            duration: Duration::from_millis(spec.duration_ms),
            dry_run: spec.dry_run,
            labels: spec
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            target: spec.target.clone().map(Target::from).unwrap_or_default(),
            faults: spec
                .faults
                .iter()
                .map(Fault::try_from)
                .collect::<Result<_, _>>()?,
        })
    }
}

impl From<Target> for pb::Target {
    fn from(target: Target) -> Self {
        Self {
            pids: target.pids,
            cgroup: target.cgroup,
            comm: target.comm,
            exclude_pids: target.exclude_pids,
            exclude_comm: target.exclude_comm,
            interface: target.interface,
        }
    }
}

impl From<pb::Target> for Target {
    fn from(target: pb::Target) -> Self {
        Self {
            pids: target.pids,
            cgroup: target.cgroup,
            comm: target.comm,
            exclude_pids: target.exclude_pids,
            exclude_comm: target.exclude_comm,
            interface: target.interface,
        }
    }
}

impl From<Direction> for pb::Direction {
    fn from(direction: Direction) -> Self {
        match direction {
            Direction::Ingress => Self::Ingress,
            Direction::Egress => Self::Egress,
            Direction::Both => Self::Both,
        }
    }
}

impl Direction {
    /// The wire form, as a network fault's `direction` field holds it.
    fn wire(self) -> i32 {
        pb::Direction::from(self).into()
    }

    /// Unspecified on the wire means egress.
    fn from_wire(direction: i32) -> Result<Self, WireError> {
        match pb::Direction::try_from(direction) {
            Ok(pb::Direction::Unspecified | pb::Direction::Egress) => Ok(Self::Egress),
            Ok(pb::Direction::Ingress) => Ok(Self::Ingress),
            Ok(pb::Direction::Both) => Ok(Self::Both),
            Err(_) => Err(WireError(format!("unknown direction {direction}"))),
        }
    }
}

impl DnsFailure {
    fn wire(self) -> i32 {
        match self {
            Self::Drop => pb::DnsFailure::Drop,
            Self::Servfail => pb::DnsFailure::Servfail,
            Self::Nxdomain => pb::DnsFailure::Nxdomain,
        }
        .into()
    }

    /// Unspecified on the wire means drop.
    fn from_wire(failure: i32) -> Result<Self, WireError> {
        match pb::DnsFailure::try_from(failure) {
            Ok(pb::DnsFailure::Unspecified | pb::DnsFailure::Drop) => Ok(Self::Drop),
            Ok(pb::DnsFailure::Servfail) => Ok(Self::Servfail),
            Ok(pb::DnsFailure::Nxdomain) => Ok(Self::Nxdomain),
            Err(_) => Err(WireError(format!("unknown DNS failure {failure}"))),
        }
    }
}

impl Protocol {
    /// The wire form: the lowercase name, or empty for any protocol.
    fn wire_name(self) -> &'static str {
        match self {
            Self::Any => "",
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Icmp => "icmp",
        }
    }

    /// Empty on the wire means any; the agent takes any case.
    fn from_wire(protocol: &str) -> Result<Self, WireError> {
        match protocol.trim().to_ascii_lowercase().as_str() {
            "" | "any" => Ok(Self::Any),
            "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            "icmp" => Ok(Self::Icmp),
            _ => Err(WireError(format!("unknown protocol {protocol:?}"))),
        }
    }
}

impl From<PacketMatch> for pb::PacketMatch {
    fn from(matching: PacketMatch) -> Self {
        Self {
            protocol: matching.protocol.wire_name().to_owned(),
            src_cidr: matching.src_cidr,
            dst_cidr: matching.dst_cidr,
            src_ports: matching.src_ports,
            dst_ports: matching.dst_ports,
            include_ssh: matching.include_ssh,
        }
    }
}

impl PacketMatch {
    /// A missing match is any packet.
    fn from_wire(matching: Option<&pb::PacketMatch>) -> Result<Self, WireError> {
        let Some(m) = matching else {
            return Ok(Self::default());
        };
        Ok(Self {
            protocol: Protocol::from_wire(&m.protocol)?,
            src_cidr: m.src_cidr.clone(),
            dst_cidr: m.dst_cidr.clone(),
            src_ports: m.src_ports.clone(),
            dst_ports: m.dst_ports.clone(),
            include_ssh: m.include_ssh,
        })
    }
}

impl From<Fault> for pb::FaultSpec {
    fn from(fault: Fault) -> Self {
        let kind = match fault {
            Fault::SyscallError(f) => pb::fault_spec::Kind::SyscallError(pb::SyscallError {
                syscall: f.syscall,
                errno: f.errno,
                probability: f.probability,
                port: f.port,
                cidr: f.cidr,
                path: f.path,
            }),
            Fault::SyscallSignal(f) => pb::fault_spec::Kind::SyscallSignal(pb::SyscallSignal {
                syscall: f.syscall,
                signal: f.signal,
                probability: f.probability,
                nth_call: f.nth_call,
            }),
            Fault::PacketLoss(f) => pb::fault_spec::Kind::PacketLoss(pb::PacketLoss {
                probability: f.probability,
                burst_length: f.burst_length,
                direction: f.direction.wire(),
                r#match: Some(f.matching.into()),
            }),
            Fault::Blackhole(f) => pb::fault_spec::Kind::Blackhole(pb::Blackhole {
                direction: f.direction.wire(),
                r#match: Some(f.matching.into()),
            }),
            Fault::Duplicate(f) => pb::fault_spec::Kind::Duplicate(pb::Duplicate {
                probability: f.probability,
                direction: f.direction.wire(),
                r#match: Some(f.matching.into()),
            }),
            Fault::Corrupt(f) => pb::fault_spec::Kind::Corrupt(pb::Corrupt {
                probability: f.probability,
                recompute_checksums: f.recompute_checksums,
                direction: f.direction.wire(),
                r#match: Some(f.matching.into()),
            }),
            Fault::DnsError(f) => pb::fault_spec::Kind::DnsError(pb::DnsError {
                domain: f.domain,
                failure: f.failure.wire(),
                probability: f.probability,
                resolver_cidr: f.resolver_cidr,
            }),
            Fault::Latency(f) => pb::fault_spec::Kind::Latency(pb::Latency {
                delay_ms: f.delay_ms,
                jitter_ms: f.jitter_ms,
                r#match: Some(f.matching.into()),
            }),
            Fault::Bandwidth(f) => pb::fault_spec::Kind::Bandwidth(pb::Bandwidth {
                rate_bits_per_sec: f.rate_bits_per_sec,
                burst_bytes: f.burst_bytes,
                direction: f.direction.wire(),
                r#match: Some(f.matching.into()),
            }),
        };
        Self { kind: Some(kind) }
    }
}

impl TryFrom<&pb::FaultSpec> for Fault {
    type Error = WireError;

    fn try_from(fault: &pb::FaultSpec) -> Result<Self, WireError> {
        use pb::fault_spec::Kind;
        let matching = PacketMatch::from_wire;
        Ok(match fault.kind.as_ref() {
            None => return Err(WireError("a fault without a kind".to_owned())),
            Some(Kind::SyscallError(f)) => Self::SyscallError(SyscallError {
                syscall: f.syscall.clone(),
                errno: f.errno.clone(),
                probability: f.probability,
                port: f.port,
                cidr: f.cidr.clone(),
                path: f.path.clone(),
            }),
            Some(Kind::SyscallSignal(f)) => Self::SyscallSignal(SyscallSignal {
                syscall: f.syscall.clone(),
                signal: f.signal.clone(),
                probability: f.probability,
                nth_call: f.nth_call,
            }),
            Some(Kind::PacketLoss(f)) => Self::PacketLoss(PacketLoss {
                probability: f.probability,
                burst_length: f.burst_length,
                direction: Direction::from_wire(f.direction)?,
                matching: matching(f.r#match.as_ref())?,
            }),
            Some(Kind::Blackhole(f)) => Self::Blackhole(Blackhole {
                direction: Direction::from_wire(f.direction)?,
                matching: matching(f.r#match.as_ref())?,
            }),
            Some(Kind::Duplicate(f)) => Self::Duplicate(Duplicate {
                probability: f.probability,
                direction: Direction::from_wire(f.direction)?,
                matching: matching(f.r#match.as_ref())?,
            }),
            Some(Kind::Corrupt(f)) => Self::Corrupt(Corrupt {
                probability: f.probability,
                recompute_checksums: f.recompute_checksums,
                direction: Direction::from_wire(f.direction)?,
                matching: matching(f.r#match.as_ref())?,
            }),
            Some(Kind::Bandwidth(f)) => Self::Bandwidth(Bandwidth {
                rate_bits_per_sec: f.rate_bits_per_sec,
                burst_bytes: f.burst_bytes,
                direction: Direction::from_wire(f.direction)?,
                matching: matching(f.r#match.as_ref())?,
            }),
            Some(Kind::Latency(f)) => Self::Latency(Latency {
                delay_ms: f.delay_ms,
                jitter_ms: f.jitter_ms,
                matching: matching(f.r#match.as_ref())?,
            }),
            Some(Kind::DnsError(f)) => Self::DnsError(DnsError {
                domain: f.domain.clone(),
                failure: DnsFailure::from_wire(f.failure)?,
                probability: f.probability,
                resolver_cidr: f.resolver_cidr.clone(),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        spec::{
            file::{FileFormat, parse},
            kind,
        },
        test_support::{
            bandwidth, blackhole, corrupt, duplicate, full_match, packet_loss, to_ports,
        },
    };

    /// One fault of every kind, with every field set away from its default.
    fn every_kind() -> Vec<pb::fault_spec::Kind> {
        use pb::{Direction::*, fault_spec::Kind};
        vec![
            Kind::SyscallError(pb::SyscallError {
                syscall: "connect".into(),
                errno: "ECONNREFUSED".into(),
                probability: 0.5,
                port: 8080,
                cidr: "10.0.0.0/8".into(),
                path: String::new(),
            }),
            // An LSM call, with a path.
            Kind::SyscallError(pb::SyscallError {
                syscall: "openat".into(),
                errno: "EACCES".into(),
                probability: 0.25,
                port: 0,
                cidr: String::new(),
                path: "/var/lib/app".into(),
            }),
            Kind::SyscallSignal(pb::SyscallSignal {
                syscall: "openat".into(),
                signal: "SIGSEGV".into(),
                probability: 1.0,
                nth_call: 3,
            }),
            packet_loss(0.3, 4.0, Both, full_match()),
            blackhole(Ingress, to_ports("udp", "53")),
            duplicate(0.2, Ingress, full_match()),
            corrupt(0.01, true, Both, to_ports("tcp", "5432")),
            bandwidth(2_500_000_000, 65_536, Egress, to_ports("icmp", "")),
            Kind::Latency(pb::Latency {
                delay_ms: 1.5,
                jitter_ms: 0.25,
                r#match: Some(to_ports("udp", "8000-8100")),
            }),
            Kind::DnsError(pb::DnsError {
                domain: "example.com".into(),
                failure: pb::DnsFailure::Nxdomain.into(),
                probability: 0.75,
                resolver_cidr: "10.0.0.53/32".into(),
            }),
        ]
    }

    fn spec_with(kinds: Vec<pb::fault_spec::Kind>) -> pb::ExperimentSpec {
        pb::ExperimentSpec {
            name: "round-trip".into(),
            faults: kinds
                .into_iter()
                .map(|kind| pb::FaultSpec { kind: Some(kind) })
                .collect(),
            target: Some(pb::Target {
                pids: vec![7],
                cgroup: "/sys/fs/cgroup/app".into(),
                comm: "curl".into(),
                exclude_pids: vec![9],
                exclude_comm: "sshd".into(),
                interface: "eth0".into(),
            }),
            duration_ms: 90_500,
            dry_run: true,
            labels: [("team".to_owned(), "db".to_owned())].into(),
        }
    }

    /// What the agent reports, printed as `--output json` prints it and
    /// read back as an experiment file, is what was sent.
    #[test]
    fn every_kind_round_trips_through_the_experiment_file() {
        for kind in every_kind() {
            let wire = spec_with(vec![kind]);
            let file = Experiment::try_from(&wire)
                .unwrap_or_else(|err| panic!("{wire:?} has no file form: {err}"));
            for format in [FileFormat::Json, FileFormat::Yaml] {
                let text = match format {
                    FileFormat::Json => {
                        serde_json::to_string_pretty(&file).map_err(|e| e.to_string())
                    }
                    FileFormat::Yaml => yaml_serde::to_string(&file).map_err(|e| e.to_string()),
                }
                .unwrap_or_else(|err| panic!("{file:?} does not serialize: {err}"));
                let back = parse(&text, format).unwrap_or_else(|err| {
                    panic!("the printed {format} is no experiment file: {err}\n{text}")
                });
                assert_eq!(back, file, "{format}:\n{text}");
                assert_eq!(pb::ExperimentSpec::from(back), wire, "{format}:\n{text}");
            }
        }
    }

    #[test]
    fn file_json_is_keyed_by_the_kind_name() {
        let all = spec_with(every_kind());
        let file = Experiment::try_from(&all).unwrap_or_else(|err| panic!("{err}"));
        let json = serde_json::to_value(&file).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(json["duration"], "1m 30s 500ms");
        let mut seen: Vec<&str> = Vec::new();
        for (fault, value) in file
            .faults
            .iter()
            .zip(json["faults"].as_array().into_iter().flatten())
        {
            let keys: Vec<&String> = value
                .as_object()
                .map(|o| o.keys().collect())
                .unwrap_or_default();
            assert_eq!(keys, [fault.kind_name()], "{value}");
            if !seen.contains(&fault.kind_name()) {
                seen.push(fault.kind_name());
            }
        }
        assert_eq!(
            seen,
            kind::ALL,
            "one fault of every kind, in the order of kind::ALL"
        );
        // The latency fault has no direction: the file refuses one.
        assert_eq!(
            json["faults"][8]["latency"].get("direction"),
            None,
            "{}",
            json["faults"][8]
        );
    }

    #[test]
    fn wire_defaults_and_unknown_values() {
        use pb::fault_spec::Kind;
        let blackhole = pb::FaultSpec {
            kind: Some(Kind::Blackhole(pb::Blackhole {
                direction: pb::Direction::Unspecified.into(),
                r#match: Some(pb::PacketMatch {
                    protocol: "UDP".into(),
                    ..Default::default()
                }),
            })),
        };
        match Fault::try_from(&blackhole) {
            Ok(Fault::Blackhole(b)) => {
                assert_eq!(
                    (b.direction, b.matching.protocol),
                    (Direction::Egress, Protocol::Udp)
                );
            }
            other => panic!("expected a blackhole, got {other:?}"),
        }
        for (fault, why) in [
            (pb::FaultSpec { kind: None }, "without a kind"),
            (
                pb::FaultSpec {
                    kind: Some(Kind::Blackhole(pb::Blackhole {
                        direction: 42,
                        r#match: None,
                    })),
                },
                "unknown direction 42",
            ),
            (
                pb::FaultSpec {
                    kind: Some(Kind::Latency(pb::Latency {
                        delay_ms: 1.0,
                        jitter_ms: 0.0,
                        r#match: Some(to_ports("sctp", "")),
                    })),
                },
                "unknown protocol \"sctp\"",
            ),
            (
                pb::FaultSpec {
                    kind: Some(Kind::DnsError(pb::DnsError {
                        failure: 9,
                        ..Default::default()
                    })),
                },
                "unknown DNS failure 9",
            ),
        ] {
            match Fault::try_from(&fault) {
                Ok(fault) => panic!("expected {why:?}, got {fault:?}"),
                Err(err) => assert!(err.to_string().contains(why), "{err}"),
            }
        }
    }
}
