//! The experiment file to and from the wire `ExperimentSpec`. To the wire is
//! what `apply` and `inject` send; from the wire is how `status`, `ls` and
//! `watch` print what the agent runs, in the shape `apply -f` takes back.

use std::time::Duration;

use faultline_proto::v1 as pb;

use super::{Experiment, Fault, Target, units::duration_ms};

/// A value from the agent that this build has no name for, such as an enum
/// value added by a newer agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(pub(crate) String);

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
            impact: pb::ImpactMode::Default.into(),
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
            allow_host_wide: target.allow_host_wide,
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
            allow_host_wide: target.allow_host_wide,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        kinds::net::{Direction, Protocol},
        spec::{
            file::{FileFormat, parse},
            kind,
        },
        test_support::to_ports,
    };

    /// One fault of every kind, with every field set away from its default
    /// (each kind's `CtlKind::examples`), in the proto's order.
    fn every_kind() -> Vec<pb::fault_spec::Kind> {
        crate::kinds::examples()
    }

    fn spec_with(kinds: Vec<pb::fault_spec::Kind>) -> pb::ExperimentSpec {
        pb::ExperimentSpec {
            impact: 0,
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
                allow_host_wide: false,
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
