//! The JSON that `--output json` prints, for scripts. An experiment's spec,
//! and each fault's, is printed as the experiment file types of [`spec`]
//! serialize it, so that it can be applied again.

use std::collections::BTreeMap;

use faultline_proto::v1 as pb;
use serde::Serialize;

use super::{event_type_name, state_name};
use crate::spec;

/// The JSON form of an experiment: who and what as top-level fields, the
/// state and counters, one entry per fault, and the whole request as an
/// experiment file under `spec`.
#[derive(Debug, Serialize)]
pub struct ExperimentJson {
    pub id: String,
    pub name: String,
    pub state: &'static str,
    pub dry_run: bool,
    pub labels: BTreeMap<String, String>,
    pub target: spec::Target,
    pub duration_ms: u64,
    pub started_at_ms: u64,
    pub deadline_ms: u64,
    /// 0 while running.
    pub ended_at_ms: u64,
    pub message: String,
    /// Totals over all faults.
    pub matched: u64,
    pub injected: u64,
    pub faults: Vec<FaultJson>,
    /// What the faults did to the target (pressure stall, run-queue
    /// latency, before and during), when the experiment measures it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impact: Option<super::impact::ImpactJson>,
    /// The lease (0: none), its expiry, the client's request id and who
    /// started it; left out when unset.
    #[serde(skip_serializing_if = "is_zero")]
    pub lease_ttl_ms: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub lease_expires_at_ms: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub request_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub owner: String,
    /// The experiment as requested, in the experiment file's shape:
    /// `faultctl apply -f` takes it back. null when the agent did not return
    /// the spec, or it holds a value that this build has no name for.
    pub spec: Option<spec::Experiment>,
}

fn is_zero<T: Default + PartialEq>(n: &T) -> bool {
    *n == T::default()
}

#[derive(Debug, Serialize)]
pub struct FaultJson {
    pub index: u32,
    pub kind: String,
    pub mechanism: String,
    /// Calls (packets, for network faults) that matched.
    pub matched: u64,
    pub injected: u64,
    /// `nth_call` calls not signalled because the agent's count map was full.
    pub not_injected_map_full: u64,
    pub summary: String,
    /// What the fault's agent-side work measured (`achieved_load_percent`…).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricJson>,
    /// What it did, one entry per act (a kill, a pause).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionJson>,
    /// The fault as requested, in the experiment file's shape
    /// (`{"packet_loss": {...}}`); null when the agent did not return it.
    pub spec: Option<spec::Fault>,
}

#[derive(Debug, Serialize)]
pub struct MetricJson {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

#[derive(Debug, Serialize)]
pub struct ActionJson {
    pub at_ms: u64,
    pub pid: u32,
    pub comm: String,
    pub what: String,
}

impl From<&pb::Experiment> for ExperimentJson {
    fn from(experiment: &pb::Experiment) -> Self {
        let wire = experiment.spec.clone().unwrap_or_default();
        let spec = experiment
            .spec
            .as_ref()
            .and_then(|spec| spec::Experiment::try_from(spec).ok());
        Self {
            id: experiment.id.clone(),
            name: wire.name,
            state: state_name(experiment.state),
            dry_run: wire.dry_run,
            labels: wire.labels.into_iter().collect(),
            target: wire.target.map(spec::Target::from).unwrap_or_default(),
            duration_ms: wire.duration_ms,
            started_at_ms: experiment.started_at_ms,
            deadline_ms: experiment.deadline_ms,
            ended_at_ms: experiment.ended_at_ms,
            message: experiment.message.clone(),
            matched: experiment.matched,
            injected: experiment.injected,
            faults: experiment
                .faults
                .iter()
                .map(|status| {
                    let fault = usize::try_from(status.index)
                        .ok()
                        .and_then(|index| wire.faults.get(index));
                    FaultJson::new(status, fault)
                })
                .collect(),
            impact: experiment.impact.as_ref().map(Into::into),
            lease_ttl_ms: experiment.lease_ttl_ms,
            lease_expires_at_ms: experiment.lease_expires_at_ms,
            request_id: experiment.request_id.clone(),
            owner: experiment.owner.clone(),
            spec,
        }
    }
}

impl FaultJson {
    /// A fault's status, with its part of the spec when the agent returned it.
    fn new(status: &pb::FaultStatus, fault: Option<&pb::FaultSpec>) -> Self {
        let spec = fault.and_then(|fault| spec::Fault::try_from(fault).ok());
        let kind = match (&spec, status.kind.is_empty()) {
            (Some(spec), true) => spec.kind_name().to_owned(),
            _ => status.kind.clone(),
        };
        Self {
            index: status.index,
            kind,
            mechanism: status.mechanism.clone(),
            matched: status.matched,
            injected: status.injected,
            not_injected_map_full: status.not_injected_map_full,
            summary: status.summary.clone(),
            metrics: status
                .metrics
                .iter()
                .map(|m| MetricJson {
                    name: m.name.clone(),
                    value: m.value,
                    unit: m.unit.clone(),
                })
                .collect(),
            actions: status
                .actions
                .iter()
                .map(|a| ActionJson {
                    at_ms: a.at_ms,
                    pid: a.pid,
                    comm: a.comm.clone(),
                    what: a.what.clone(),
                })
                .collect(),
            spec,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct CapabilitiesJson {
    pub kernel_release: String,
    pub agent_version: String,
    pub max_duration_ms: u64,
    pub capabilities: Vec<CapabilityJson>,
}

#[derive(Debug, Serialize)]
pub struct CapabilityJson {
    pub kind: String,
    pub mechanism: String,
    pub covers: Vec<String>,
    pub supported: bool,
    pub reason: String,
}

impl From<&pb::GetCapabilitiesResponse> for CapabilitiesJson {
    fn from(caps: &pb::GetCapabilitiesResponse) -> Self {
        Self {
            kernel_release: caps.kernel_release.clone(),
            agent_version: caps.agent_version.clone(),
            max_duration_ms: caps.max_duration_ms,
            capabilities: caps
                .capabilities
                .iter()
                .map(|cap| CapabilityJson {
                    kind: cap.fault_kind.clone(),
                    mechanism: cap.mechanism.clone(),
                    covers: cap.covers.clone(),
                    supported: cap.supported,
                    reason: cap.reason.clone(),
                })
                .collect(),
        }
    }
}

/// One line of `faultctl watch --output json`.
#[derive(Debug, Serialize)]
pub struct EventJson {
    #[serde(rename = "type")]
    pub event_type: &'static str,
    pub at_ms: u64,
    pub id: String,
    pub matched: u64,
    pub injected: u64,
    pub message: String,
    /// `lagged` only: events the agent dropped for this stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost: Option<u64>,
    pub experiment: Option<ExperimentJson>,
}

impl From<&pb::Event> for EventJson {
    fn from(event: &pb::Event) -> Self {
        let experiment = event.experiment.as_ref();
        Self {
            event_type: event_type_name(event.r#type),
            at_ms: event.at_ms,
            id: experiment.map(|e| e.id.clone()).unwrap_or_default(),
            matched: experiment.map_or(0, |e| e.matched),
            injected: experiment.map_or(0, |e| e.injected),
            message: event.message.clone(),
            lost: (event.r#type == pb::EventType::Lagged as i32).then_some(event.lost),
            experiment: experiment.map(ExperimentJson::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        output::fixtures::{network_experiment, running_experiment},
        test_support::to_ports,
    };

    fn to_value(experiment: &pb::Experiment) -> serde_json::Value {
        match serde_json::to_value(ExperimentJson::from(experiment)) {
            Ok(value) => value,
            Err(err) => panic!("expected the experiment to serialize, got error: {err}"),
        }
    }

    #[test]
    fn experiment_json_has_state_string_and_counters() {
        let value = to_value(&running_experiment());
        let expected = serde_json::json!({
            "id": "exp-1",
            "name": "checkout",
            "state": "running",
            "dry_run": true,
            "labels": {"team": "payments"},
            "target": {"pids": [], "cgroup": "/sys/fs/cgroup/app", "comm": "",
                       "exclude_pids": [], "exclude_comm": "", "interface": "",
                       "allow_host_wide": false},
            "duration_ms": 30_000,
            "started_at_ms": 1_700_000_000_000_u64,
            "deadline_ms": 1_700_000_030_000_u64,
            "ended_at_ms": 0,
            "message": "",
            "matched": 13,
            "injected": 5,
            "faults": [
                {"index": 0, "kind": "syscall_error", "mechanism": "cgroup_sock_addr",
                 "matched": 10, "injected": 4, "not_injected_map_full": 0,
                 "summary": "connect -> ECONNREFUSED p=0.5",
                 "spec": null},
                {"index": 1, "kind": "syscall_signal", "mechanism": "raw_tracepoint",
                 "matched": 3, "injected": 1, "not_injected_map_full": 2,
                 "summary": "openat -> SIGSEGV at call 3",
                 "spec": null},
            ],
            "spec": {"name": "checkout", "duration": "30s", "dry_run": true,
                     "labels": {"team": "payments"},
                     "target": {"pids": [], "cgroup": "/sys/fs/cgroup/app", "comm": "",
                                "exclude_pids": [], "exclude_comm": "", "interface": "",
                       "allow_host_wide": false},
                     "faults": []},
        });
        assert_eq!(value, expected, "JSON shape of an experiment");
    }

    #[test]
    fn network_faults_show_their_spec_in_json() {
        let value = to_value(&network_experiment());
        assert_eq!(value["target"]["interface"], "eth0", "{value}");
        let expected = serde_json::json!([
            {"index": 0, "kind": "packet_loss", "mechanism": "tcx", "matched": 100, "injected": 25, "not_injected_map_full": 0,
             "summary": "both loss p=0.25 burst=3 tcp dst=10.0.0.0/8 dport=5432-5432",
             "spec": {"packet_loss": {
                 "probability": 0.25, "burst_length": 3.0, "direction": "both",
                 "match": {"protocol": "tcp", "src_cidr": "", "dst_cidr": "10.0.0.0/8",
                           "src_ports": "", "dst_ports": "5432", "include_ssh": false}}}},
            // Without a kind from the agent, the spec names it; unspecified
            // direction is egress, and a missing match is "any packet".
            {"index": 1, "kind": "blackhole", "mechanism": "tcx", "matched": 7, "injected": 7, "not_injected_map_full": 0,
             "summary": "",
             "spec": {"blackhole": {
                 "direction": "egress",
                 "match": {"protocol": "any", "src_cidr": "", "dst_cidr": "",
                           "src_ports": "", "dst_ports": "", "include_ssh": false}}}},
            {"index": 2, "kind": "duplicate", "mechanism": "tcx", "matched": 40, "injected": 4, "not_injected_map_full": 0,
             "summary": "ingress duplicate p=0.1 udp sport=53-53",
             "spec": {"duplicate": {
                 "probability": 0.1, "direction": "ingress",
                 "match": {"protocol": "udp", "src_cidr": "", "dst_cidr": "",
                           "src_ports": "53", "dst_ports": "", "include_ssh": true}}}},
            {"index": 3, "kind": "corrupt", "mechanism": "tcx", "matched": 200, "injected": 2, "not_injected_map_full": 0,
             "summary": "egress corrupt p=0.01 checksums=recomputed tcp dport=5432-5432",
             "spec": {"corrupt": {
                 "probability": 0.01, "recompute_checksums": true, "direction": "egress",
                 "match": {"protocol": "tcp", "src_cidr": "", "dst_cidr": "",
                           "src_ports": "", "dst_ports": "5432", "include_ssh": false}}}},
            {"index": 4, "kind": "bandwidth", "mechanism": "tcx", "matched": 1_000, "injected": 30, "not_injected_map_full": 0,
             "summary": "egress rate=10000000 bit/s burst=131072 B udp",
             "spec": {"bandwidth": {
                 "rate_bits_per_sec": 10_000_000, "burst_bytes": 131_072, "direction": "egress",
                 "match": {"protocol": "udp", "src_cidr": "", "dst_cidr": "",
                           "src_ports": "", "dst_ports": "", "include_ssh": false}}}},
        ]);
        assert_eq!(value["faults"], expected, "JSON of network faults");
    }

    #[test]
    fn network_faults_are_named_by_their_spec() {
        use pb::fault_spec::Kind;
        let any = concat!(
            r#""match":{"protocol":"any","src_cidr":"","dst_cidr":"","#,
            r#""src_ports":"","dst_ports":"","include_ssh":false}"#
        );
        // Each kind at its defaults, with the fields of its own in front.
        for (kind, name, own) in [
            (
                Kind::PacketLoss(pb::PacketLoss::default()),
                "packet_loss",
                r#""probability":0.0,"burst_length":0.0,"direction":"egress","#,
            ),
            (
                Kind::Blackhole(pb::Blackhole::default()),
                "blackhole",
                r#""direction":"egress","#,
            ),
            (
                Kind::Duplicate(pb::Duplicate::default()),
                "duplicate",
                r#""probability":0.0,"direction":"egress","#,
            ),
            (
                Kind::Corrupt(pb::Corrupt::default()),
                "corrupt",
                r#""probability":0.0,"recompute_checksums":false,"direction":"egress","#,
            ),
            (
                Kind::Bandwidth(pb::Bandwidth::default()),
                "bandwidth",
                r#""rate_bits_per_sec":0,"burst_bytes":0,"direction":"egress","#,
            ),
            // Latency delays egress packets only: it has no direction.
            (
                Kind::Latency(pb::Latency::default()),
                "latency",
                r#""delay_ms":0.0,"jitter_ms":0.0,"#,
            ),
        ] {
            let status = pb::FaultStatus {
                index: 0,
                mechanism: "tcx".into(),
                ..Default::default()
            };
            let fault = FaultJson::new(&status, Some(&pb::FaultSpec { kind: Some(kind) }));
            assert_eq!(fault.kind, name, "without a kind from the agent");
            let json = serde_json::to_string(&fault.spec)
                .unwrap_or_else(|err| panic!("expected the spec to serialize, got error: {err}"));
            assert_eq!(
                json,
                format!(r#"{{"{name}":{{{own}{any}}}}}"#),
                "a default {name} spec"
            );
        }
    }

    /// `faultctl --output json status ID | jq .spec > file; faultctl apply -f file`
    /// starts the same experiment again.
    #[test]
    fn the_spec_of_status_json_is_an_experiment_file() {
        let mut experiment = network_experiment();
        if let Some(spec) = experiment.spec.as_mut() {
            spec.faults.push(pb::FaultSpec {
                kind: Some(pb::fault_spec::Kind::Latency(pb::Latency {
                    delay_ms: 20.0,
                    jitter_ms: 5.0,
                    r#match: Some(to_ports("tcp", "443")),
                })),
            });
        }
        let value = to_value(&experiment);
        let text = value["spec"].to_string();
        let file = spec::parse(&text, spec::FileFormat::Json)
            .unwrap_or_else(|err| panic!("the spec is no experiment file: {err}\n{text}"));
        let mut sent = experiment.spec.unwrap_or_default();
        // Unspecified comes back as egress, a missing match as "any
        // packet", an upper-case protocol in lower case.
        for fault in &mut sent.faults {
            match fault.kind.as_mut() {
                Some(pb::fault_spec::Kind::Blackhole(b)) => {
                    b.direction = pb::Direction::Egress.into();
                    b.r#match = Some(pb::PacketMatch::default());
                }
                Some(pb::fault_spec::Kind::Duplicate(d)) => {
                    if let Some(m) = d.r#match.as_mut() {
                        m.protocol = m.protocol.to_lowercase();
                    }
                }
                _ => {}
            }
        }
        assert_eq!(pb::ExperimentSpec::from(file), sent, "{text}");
        assert_eq!(
            value["spec"]["faults"][5]["latency"]["delay_ms"], 20.0,
            "{value}"
        );
        // Each fault's own spec is the same entry as in the file.
        assert_eq!(
            value["faults"][0]["spec"], value["spec"]["faults"][0],
            "{value}"
        );
    }

    #[test]
    fn every_state_has_a_lowercase_name() {
        let cases = [
            (pb::ExperimentState::Running, "running"),
            (pb::ExperimentState::Expired, "expired"),
            (pb::ExperimentState::Stopped, "stopped"),
            (pb::ExperimentState::Failed, "failed"),
        ];
        for (state, name) in cases {
            let experiment = pb::Experiment {
                state: state as i32,
                ..running_experiment()
            };
            assert_eq!(
                to_value(&experiment)["state"],
                name,
                "JSON state of {state:?}"
            );
        }
        assert_eq!(
            state_name(99),
            "unknown",
            "a state this build does not know"
        );
    }

    #[test]
    fn experiment_without_spec_still_serializes() {
        let value = to_value(&pb::Experiment {
            id: "bare".into(),
            ..Default::default()
        });
        assert_eq!(value["id"], "bare");
        assert_eq!(value["state"], "unspecified");
        assert_eq!(value["faults"], serde_json::json!([]));
    }
}
