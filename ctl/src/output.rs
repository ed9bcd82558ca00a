//! How `faultctl` prints agent answers: aligned tables for people, JSON for
//! scripts. Every command prints an experiment through [`ExperimentJson`], so
//! `inject`, `apply`, `status`, `ls` and `watch` agree on its shape.

use std::{
    collections::BTreeMap,
    io::{self, Write},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use faultline_proto::v1 as pb;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

/// Lowercase state name: "running", "expired", "stopped", "failed".
pub fn state_name(state: i32) -> &'static str {
    match pb::ExperimentState::try_from(state) {
        Ok(pb::ExperimentState::Running) => "running",
        Ok(pb::ExperimentState::Expired) => "expired",
        Ok(pb::ExperimentState::Stopped) => "stopped",
        Ok(pb::ExperimentState::Failed) => "failed",
        Ok(pb::ExperimentState::Unspecified) => "unspecified",
        // A newer agent may know states that this build does not.
        Err(_) => "unknown",
    }
}

/// Lowercase event type: "started", "counters", "expired", "stopped", "failed".
pub fn event_type_name(event_type: i32) -> &'static str {
    match pb::EventType::try_from(event_type) {
        Ok(pb::EventType::Started) => "started",
        Ok(pb::EventType::Counters) => "counters",
        Ok(pb::EventType::Expired) => "expired",
        Ok(pb::EventType::Stopped) => "stopped",
        Ok(pb::EventType::Failed) => "failed",
        Ok(pb::EventType::Unspecified) => "unspecified",
        Err(_) => "unknown",
    }
}

/// The JSON form of an experiment.
#[derive(Debug, Serialize)]
pub struct ExperimentJson {
    pub id: String,
    pub name: String,
    pub state: &'static str,
    pub dry_run: bool,
    pub labels: BTreeMap<String, String>,
    pub target: TargetJson,
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
}

#[derive(Debug, Default, Serialize)]
pub struct TargetJson {
    pub pids: Vec<u32>,
    pub cgroup: String,
    pub comm: String,
    pub exclude_pids: Vec<u32>,
    pub exclude_comm: String,
    /// Network faults scoped to an interface instead of a cgroup.
    pub interface: String,
}

#[derive(Debug, Serialize)]
pub struct FaultJson {
    pub index: u32,
    pub kind: String,
    pub mechanism: String,
    /// Calls (packets, for network faults) that matched.
    pub matched: u64,
    pub injected: u64,
    pub summary: String,
    /// The fault as requested, in the experiment file's shape
    /// (`{"packet_loss": {...}}`); null when the agent did not return it.
    pub spec: Option<FaultSpecJson>,
}

/// One fault of the spec, keyed by its kind like in an experiment file.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultSpecJson {
    SyscallError {
        syscall: String,
        errno: String,
        probability: f64,
        port: u32,
        cidr: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        path: String,
    },
    SyscallSignal {
        syscall: String,
        signal: String,
        probability: f64,
        nth_call: u64,
    },
    PacketLoss(NetworkFaultJson),
    Blackhole(NetworkFaultJson),
    Duplicate(NetworkFaultJson),
    Corrupt(NetworkFaultJson),
    Bandwidth(NetworkFaultJson),
    Latency(NetworkFaultJson),
    DnsError {
        domain: String,
        failure: String,
        probability: f64,
        resolver_cidr: String,
    },
}

/// A network fault: the settings of its kind, then the direction and the
/// packets it applies to. Settings that a kind does not have are left out.
#[derive(Debug, Serialize)]
pub struct NetworkFaultJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst_length: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recompute_checksums: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_bits_per_sec: Option<u64>,
    /// 0 asks the agent to pick; the agent may report the depth it picked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst_bytes: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<f64>,
    pub direction: &'static str,
    #[serde(rename = "match")]
    pub matching: PacketMatchJson,
}

#[derive(Debug, Serialize)]
pub struct PacketMatchJson {
    /// tcp, udp, icmp or any.
    pub protocol: String,
    pub src_cidr: String,
    pub dst_cidr: String,
    pub src_ports: String,
    pub dst_ports: String,
    pub include_ssh: bool,
}

impl From<&pb::Experiment> for ExperimentJson {
    fn from(experiment: &pb::Experiment) -> Self {
        let spec = experiment.spec.clone().unwrap_or_default();
        let target = spec.target.map(TargetJson::from).unwrap_or_default();
        Self {
            id: experiment.id.clone(),
            name: spec.name,
            state: state_name(experiment.state),
            dry_run: spec.dry_run,
            labels: spec.labels.into_iter().collect(),
            target,
            duration_ms: spec.duration_ms,
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
                        .and_then(|index| spec.faults.get(index));
                    FaultJson::new(status, fault)
                })
                .collect(),
        }
    }
}

impl From<pb::Target> for TargetJson {
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

impl FaultJson {
    /// A fault's status, with its part of the spec when the agent returned it.
    fn new(status: &pb::FaultStatus, fault: Option<&pb::FaultSpec>) -> Self {
        let spec = fault
            .and_then(|fault| fault.kind.as_ref())
            .map(FaultSpecJson::from);
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
            summary: status.summary.clone(),
            spec,
        }
    }
}

impl FaultSpecJson {
    /// The kind as the agent names it, e.g. "packet_loss".
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::SyscallError { .. } => "syscall_error",
            Self::SyscallSignal { .. } => "syscall_signal",
            Self::PacketLoss { .. } => "packet_loss",
            Self::Blackhole { .. } => "blackhole",
            Self::Duplicate { .. } => "duplicate",
            Self::Corrupt { .. } => "corrupt",
            Self::Bandwidth { .. } => "bandwidth",
            Self::Latency { .. } => "latency",
            Self::DnsError { .. } => "dns_error",
        }
    }
}

impl From<&pb::fault_spec::Kind> for FaultSpecJson {
    fn from(kind: &pb::fault_spec::Kind) -> Self {
        use pb::fault_spec::Kind;
        match kind {
            Kind::SyscallError(f) => Self::SyscallError {
                syscall: f.syscall.clone(),
                errno: f.errno.clone(),
                probability: f.probability,
                port: f.port,
                cidr: f.cidr.clone(),
                path: f.path.clone(),
            },
            Kind::SyscallSignal(f) => Self::SyscallSignal {
                syscall: f.syscall.clone(),
                signal: f.signal.clone(),
                probability: f.probability,
                nth_call: f.nth_call,
            },
            Kind::PacketLoss(f) => Self::PacketLoss(NetworkFaultJson {
                probability: Some(f.probability),
                burst_length: Some(f.burst_length),
                ..NetworkFaultJson::new(f.direction, f.r#match.as_ref())
            }),
            Kind::Blackhole(f) => {
                Self::Blackhole(NetworkFaultJson::new(f.direction, f.r#match.as_ref()))
            }
            Kind::Duplicate(f) => Self::Duplicate(NetworkFaultJson {
                probability: Some(f.probability),
                ..NetworkFaultJson::new(f.direction, f.r#match.as_ref())
            }),
            Kind::Corrupt(f) => Self::Corrupt(NetworkFaultJson {
                probability: Some(f.probability),
                recompute_checksums: Some(f.recompute_checksums),
                ..NetworkFaultJson::new(f.direction, f.r#match.as_ref())
            }),
            Kind::DnsError(f) => Self::DnsError {
                domain: f.domain.clone(),
                failure: pb::DnsFailure::try_from(f.failure).map_or_else(
                    |_| f.failure.to_string(),
                    |v| {
                        v.as_str_name()
                            .trim_start_matches("DNS_FAILURE_")
                            .to_lowercase()
                    },
                ),
                probability: f.probability,
                resolver_cidr: f.resolver_cidr.clone(),
            },
            Kind::Latency(f) => Self::Latency(NetworkFaultJson {
                delay_ms: Some(f.delay_ms),
                jitter_ms: Some(f.jitter_ms),
                ..NetworkFaultJson::new(pb::Direction::Egress as i32, f.r#match.as_ref())
            }),
            Kind::Bandwidth(f) => Self::Bandwidth(NetworkFaultJson {
                rate_bits_per_sec: Some(f.rate_bits_per_sec),
                burst_bytes: Some(f.burst_bytes),
                ..NetworkFaultJson::new(f.direction, f.r#match.as_ref())
            }),
        }
    }
}

impl NetworkFaultJson {
    /// What every network fault has, without the settings of its kind: an
    /// unspecified direction is egress and a missing match is any packet.
    fn new(direction: i32, matching: Option<&pb::PacketMatch>) -> Self {
        Self {
            probability: None,
            burst_length: None,
            recompute_checksums: None,
            rate_bits_per_sec: None,
            burst_bytes: None,
            delay_ms: None,
            jitter_ms: None,
            direction: direction_name(direction),
            matching: matching.map(PacketMatchJson::from).unwrap_or_default(),
        }
    }
}

impl Default for PacketMatchJson {
    fn default() -> Self {
        Self::from(&pb::PacketMatch::default())
    }
}

impl From<&pb::PacketMatch> for PacketMatchJson {
    fn from(matching: &pb::PacketMatch) -> Self {
        let protocol = matching.protocol.trim();
        Self {
            protocol: if protocol.is_empty() {
                "any".to_owned()
            } else {
                protocol.to_ascii_lowercase()
            },
            src_cidr: matching.src_cidr.clone(),
            dst_cidr: matching.dst_cidr.clone(),
            src_ports: matching.src_ports.clone(),
            dst_ports: matching.dst_ports.clone(),
            include_ssh: matching.include_ssh,
        }
    }
}

/// Lowercase direction of a network fault; unspecified means egress.
pub fn direction_name(direction: i32) -> &'static str {
    match pb::Direction::try_from(direction) {
        Ok(pb::Direction::Unspecified | pb::Direction::Egress) => "egress",
        Ok(pb::Direction::Ingress) => "ingress",
        Ok(pb::Direction::Both) => "both",
        Err(_) => "unknown",
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
            experiment: experiment.map(ExperimentJson::from),
        }
    }
}

/// Pretty JSON followed by a newline.
pub fn write_json(out: &mut impl Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)
}

/// Compact JSON on one line (NDJSON).
pub fn write_json_line(out: &mut impl Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    writeln!(out)
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn write(&self, out: &mut impl Write) -> io::Result<()> {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|row| row.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

pub fn write_capabilities_table(
    out: &mut impl Write,
    caps: &pb::GetCapabilitiesResponse,
) -> io::Result<()> {
    writeln!(
        out,
        "agent {}, kernel {}, longest duration {}",
        or_dash(&caps.agent_version),
        or_dash(&caps.kernel_release),
        compact_duration(Duration::from_millis(caps.max_duration_ms)),
    )?;
    let mut table = Table::new(&["KIND", "MECHANISM", "COVERS", "SUPPORTED", "REASON"]);
    for cap in &caps.capabilities {
        table.row(vec![
            cap.fault_kind.clone(),
            cap.mechanism.clone(),
            or_dash(&cap.covers.join(",")).to_owned(),
            if cap.supported { "yes" } else { "no" }.to_owned(),
            cap.reason.clone(),
        ]);
    }
    table.write(out)
}

pub fn write_experiments_table(
    out: &mut impl Write,
    experiments: &[pb::Experiment],
    now_ms: u64,
) -> io::Result<()> {
    let mut table = Table::new(&[
        "ID",
        "NAME",
        "STATE",
        "FAULTS",
        "MATCHED",
        "INJECTED",
        "REMAINING",
    ]);
    for experiment in experiments {
        let spec = experiment.spec.as_ref();
        let mut state = state_name(experiment.state).to_owned();
        if spec.is_some_and(|s| s.dry_run) {
            state.push_str(" (dry run)");
        }
        table.row(vec![
            experiment.id.clone(),
            or_dash(spec.map_or("", |s| s.name.as_str())).to_owned(),
            state,
            experiment.faults.len().to_string(),
            experiment.matched.to_string(),
            experiment.injected.to_string(),
            remaining(experiment, now_ms),
        ]);
    }
    table.write(out)
}

/// `faultctl status`: the experiment, then one row per fault.
pub fn write_experiment_detail(
    out: &mut impl Write,
    experiment: &pb::Experiment,
    now_ms: u64,
) -> io::Result<()> {
    let json = ExperimentJson::from(experiment);
    let mut state = json.state.to_owned();
    if json.dry_run {
        state.push_str(" (dry run: nothing is injected)");
    }
    let labels: Vec<String> = json
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut deadline = format_time(json.deadline_ms);
    if experiment.state == pb::ExperimentState::Running as i32 {
        deadline.push_str(&format!(" (in {})", remaining(experiment, now_ms)));
    }
    let fields = [
        ("ID", json.id.clone()),
        ("Name", or_dash(&json.name).to_owned()),
        ("State", state),
        ("Target", describe_target(&json.target)),
        ("Labels", or_dash(&labels.join(",")).to_owned()),
        (
            "Duration",
            compact_duration(Duration::from_millis(json.duration_ms)),
        ),
        ("Started", format_time(json.started_at_ms)),
        ("Deadline", deadline),
        ("Ended", format_time(json.ended_at_ms)),
        ("Matched", json.matched.to_string()),
        ("Injected", json.injected.to_string()),
        ("Message", or_dash(&json.message).to_owned()),
    ];
    for (key, value) in fields {
        writeln!(out, "{:<10}{}", format!("{key}:"), value.replace('\n', " "))?;
    }
    if json.faults.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    let mut table = Table::new(&["#", "KIND", "MECHANISM", "MATCHED", "INJECTED", "SUMMARY"]);
    for fault in &json.faults {
        table.row(vec![
            fault.index.to_string(),
            fault.kind.clone(),
            or_dash(&fault.mechanism).to_owned(),
            fault.matched.to_string(),
            fault.injected.to_string(),
            or_dash(&fault.summary).to_owned(),
        ]);
    }
    table.write(out)
}

/// One line per event, self-describing because `watch` prints no header.
pub fn write_event_line(out: &mut impl Write, event: &pb::Event) -> io::Result<()> {
    let json = EventJson::from(event);
    let mut line = format!(
        "{}  {:<8}  {}  matched={} injected={}",
        format_time_millis(json.at_ms),
        json.event_type,
        or_dash(&json.id),
        json.matched,
        json.injected,
    );
    if !json.message.is_empty() {
        line.push_str("  ");
        line.push_str(&json.message.replace('\n', " "));
    }
    writeln!(out, "{line}")
}

/// Time left for a running experiment; `-` once it has ended.
fn remaining(experiment: &pb::Experiment, now_ms: u64) -> String {
    if experiment.state != pb::ExperimentState::Running as i32 {
        return "-".to_owned();
    }
    // Round up so that a running experiment never shows 0s.
    let left_ms = experiment.deadline_ms.saturating_sub(now_ms);
    compact_duration(Duration::from_secs(left_ms.div_ceil(1000)))
}

/// `1h02m03s`, `4m05s`, `12s`: no spaces, so table columns stay intact.
pub fn compact_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (hours, minutes, seconds) = (secs / 3600, secs / 60 % 60, secs % 60);
    if hours > 0 {
        format!("{hours}h{minutes:02}m{seconds:02}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds:02}s")
    } else if secs == 0 && duration.subsec_millis() > 0 {
        format!("{}ms", duration.subsec_millis())
    } else {
        format!("{seconds}s")
    }
}

/// RFC 3339 in UTC, or `-` for an unset (zero) timestamp.
fn format_time(epoch_ms: u64) -> String {
    if epoch_ms == 0 {
        return "-".to_owned();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(epoch_ms)).to_string()
}

fn format_time_millis(epoch_ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(epoch_ms)).to_string()
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

fn describe_target(target: &TargetJson) -> String {
    let join = |ids: &[u32]| ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let mut parts = Vec::new();
    if !target.pids.is_empty() {
        parts.push(format!("pids={}", join(&target.pids)));
    }
    if !target.cgroup.is_empty() {
        parts.push(format!("cgroup={}", target.cgroup));
    }
    if !target.comm.is_empty() {
        parts.push(format!("comm={}", target.comm));
    }
    if !target.exclude_pids.is_empty() {
        parts.push(format!("exclude_pids={}", join(&target.exclude_pids)));
    }
    if !target.exclude_comm.is_empty() {
        parts.push(format!("exclude_comm={}", target.exclude_comm));
    }
    if !target.interface.is_empty() {
        parts.push(format!("interface={}", target.interface));
    }
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(" ")
    }
}

fn or_dash(text: &str) -> &str {
    if text.is_empty() { "-" } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{bandwidth, blackhole, corrupt, duplicate, packet_loss, to_ports};

    fn running_experiment() -> pb::Experiment {
        pb::Experiment {
            id: "exp-1".into(),
            spec: Some(pb::ExperimentSpec {
                name: "checkout".into(),
                faults: vec![],
                target: Some(pb::Target {
                    cgroup: "/sys/fs/cgroup/app".into(),
                    ..Default::default()
                }),
                duration_ms: 30_000,
                dry_run: true,
                labels: [("team".to_owned(), "payments".to_owned())].into(),
            }),
            state: pb::ExperimentState::Running as i32,
            started_at_ms: 1_700_000_000_000,
            deadline_ms: 1_700_000_030_000,
            ended_at_ms: 0,
            message: String::new(),
            faults: vec![
                pb::FaultStatus {
                    index: 0,
                    kind: "syscall_error".into(),
                    mechanism: "cgroup_sock_addr".into(),
                    matched: 10,
                    injected: 4,
                    summary: "connect -> ECONNREFUSED p=0.5".into(),
                },
                pb::FaultStatus {
                    index: 1,
                    kind: "syscall_signal".into(),
                    mechanism: "raw_tracepoint".into(),
                    matched: 3,
                    injected: 1,
                    summary: "openat -> SIGSEGV at call 3".into(),
                },
            ],
            matched: 13,
            injected: 5,
        }
    }

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
                       "exclude_pids": [], "exclude_comm": "", "interface": ""},
            "duration_ms": 30_000,
            "started_at_ms": 1_700_000_000_000_u64,
            "deadline_ms": 1_700_000_030_000_u64,
            "ended_at_ms": 0,
            "message": "",
            "matched": 13,
            "injected": 5,
            "faults": [
                {"index": 0, "kind": "syscall_error", "mechanism": "cgroup_sock_addr",
                 "matched": 10, "injected": 4, "summary": "connect -> ECONNREFUSED p=0.5",
                 "spec": null},
                {"index": 1, "kind": "syscall_signal", "mechanism": "raw_tracepoint",
                 "matched": 3, "injected": 1, "summary": "openat -> SIGSEGV at call 3",
                 "spec": null},
            ],
        });
        assert_eq!(value, expected, "JSON shape of an experiment");
    }

    fn network_experiment() -> pb::Experiment {
        use pb::Direction::{Both, Egress, Ingress, Unspecified};
        let tcp_to_db = pb::PacketMatch {
            protocol: "tcp".into(),
            dst_cidr: "10.0.0.0/8".into(),
            dst_ports: "5432".into(),
            ..Default::default()
        };
        let udp_from_dns = pb::PacketMatch {
            protocol: "UDP".into(),
            src_ports: "53".into(),
            include_ssh: true,
            ..Default::default()
        };
        let spec = pb::ExperimentSpec {
            name: "partition".into(),
            faults: [
                packet_loss(0.25, 3.0, Both, Some(tcp_to_db)),
                blackhole(Unspecified, None),
                duplicate(0.1, Ingress, Some(udp_from_dns)),
                corrupt(0.01, true, Egress, to_ports("tcp", "5432")),
                bandwidth(10_000_000, 65_536, Egress, to_ports("udp", "")),
            ]
            .map(|kind| pb::FaultSpec { kind: Some(kind) })
            .into(),
            target: Some(pb::Target {
                interface: "eth0".into(),
                ..Default::default()
            }),
            duration_ms: 60_000,
            ..Default::default()
        };
        pb::Experiment {
            id: "exp-net".into(),
            spec: Some(spec),
            state: pb::ExperimentState::Running as i32,
            faults: vec![
                pb::FaultStatus {
                    index: 0,
                    kind: "packet_loss".into(),
                    mechanism: "tcx".into(),
                    matched: 100,
                    injected: 25,
                    summary: "both loss p=0.25 burst=3 tcp dst=10.0.0.0/8 dport=5432-5432".into(),
                },
                pb::FaultStatus {
                    index: 1,
                    kind: String::new(),
                    mechanism: "tcx".into(),
                    matched: 7,
                    injected: 7,
                    summary: String::new(),
                },
                pb::FaultStatus {
                    index: 2,
                    kind: "duplicate".into(),
                    mechanism: "tcx".into(),
                    matched: 40,
                    injected: 4,
                    summary: "ingress duplicate p=0.1 udp sport=53-53".into(),
                },
                pb::FaultStatus {
                    index: 3,
                    kind: "corrupt".into(),
                    mechanism: "tcx".into(),
                    matched: 200,
                    injected: 2,
                    summary: "egress corrupt p=0.01 checksums=recomputed tcp dport=5432-5432"
                        .into(),
                },
                pb::FaultStatus {
                    index: 4,
                    kind: "bandwidth".into(),
                    mechanism: "tcx".into(),
                    matched: 1_000,
                    injected: 30,
                    summary: "egress rate=10000000 bit/s burst=65536 B udp".into(),
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn network_faults_show_their_spec_in_json() {
        let value = to_value(&network_experiment());
        assert_eq!(value["target"]["interface"], "eth0", "{value}");
        let expected = serde_json::json!([
            {"index": 0, "kind": "packet_loss", "mechanism": "tcx", "matched": 100, "injected": 25,
             "summary": "both loss p=0.25 burst=3 tcp dst=10.0.0.0/8 dport=5432-5432",
             "spec": {"packet_loss": {
                 "probability": 0.25, "burst_length": 3.0, "direction": "both",
                 "match": {"protocol": "tcp", "src_cidr": "", "dst_cidr": "10.0.0.0/8",
                           "src_ports": "", "dst_ports": "5432", "include_ssh": false}}}},
            // Without a kind from the agent, the spec names it; unspecified
            // direction is egress, and a missing match is "any packet".
            {"index": 1, "kind": "blackhole", "mechanism": "tcx", "matched": 7, "injected": 7,
             "summary": "",
             "spec": {"blackhole": {
                 "direction": "egress",
                 "match": {"protocol": "any", "src_cidr": "", "dst_cidr": "",
                           "src_ports": "", "dst_ports": "", "include_ssh": false}}}},
            {"index": 2, "kind": "duplicate", "mechanism": "tcx", "matched": 40, "injected": 4,
             "summary": "ingress duplicate p=0.1 udp sport=53-53",
             "spec": {"duplicate": {
                 "probability": 0.1, "direction": "ingress",
                 "match": {"protocol": "udp", "src_cidr": "", "dst_cidr": "",
                           "src_ports": "53", "dst_ports": "", "include_ssh": true}}}},
            {"index": 3, "kind": "corrupt", "mechanism": "tcx", "matched": 200, "injected": 2,
             "summary": "egress corrupt p=0.01 checksums=recomputed tcp dport=5432-5432",
             "spec": {"corrupt": {
                 "probability": 0.01, "recompute_checksums": true, "direction": "egress",
                 "match": {"protocol": "tcp", "src_cidr": "", "dst_cidr": "",
                           "src_ports": "", "dst_ports": "5432", "include_ssh": false}}}},
            {"index": 4, "kind": "bandwidth", "mechanism": "tcx", "matched": 1_000, "injected": 30,
             "summary": "egress rate=10000000 bit/s burst=65536 B udp",
             "spec": {"bandwidth": {
                 "rate_bits_per_sec": 10_000_000, "burst_bytes": 65_536, "direction": "egress",
                 "match": {"protocol": "udp", "src_cidr": "", "dst_cidr": "",
                           "src_ports": "", "dst_ports": "", "include_ssh": false}}}},
        ]);
        assert_eq!(value["faults"], expected, "JSON of network faults");
    }

    #[test]
    fn network_experiment_detail_shows_interface_and_faults() {
        let mut out = Vec::new();
        if let Err(err) = write_experiment_detail(&mut out, &network_experiment(), 0) {
            panic!("writing to a Vec failed: {err}");
        }
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("Target:   interface=eth0\n"),
            "the target line names the interface:\n{text}"
        );
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip_while(|line| !line.starts_with('#'))
            .skip(1)
            .map(|line| {
                line.split("  ")
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .collect()
            })
            .collect();
        assert_eq!(
            rows,
            [
                vec![
                    "0",
                    "packet_loss",
                    "tcx",
                    "100",
                    "25",
                    "both loss p=0.25 burst=3 tcp dst=10.0.0.0/8 dport=5432-5432"
                ],
                vec!["1", "blackhole", "tcx", "7", "7", "-"],
                vec![
                    "2",
                    "duplicate",
                    "tcx",
                    "40",
                    "4",
                    "ingress duplicate p=0.1 udp sport=53-53"
                ],
                vec![
                    "3",
                    "corrupt",
                    "tcx",
                    "200",
                    "2",
                    "egress corrupt p=0.01 checksums=recomputed tcp dport=5432-5432"
                ],
                vec![
                    "4",
                    "bandwidth",
                    "tcx",
                    "1000",
                    "30",
                    "egress rate=10000000 bit/s burst=65536 B udp"
                ],
            ],
            "one row per fault:\n{text}"
        );
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
                r#""probability":0.0,"burst_length":0.0,"#,
            ),
            (Kind::Blackhole(pb::Blackhole::default()), "blackhole", ""),
            (
                Kind::Duplicate(pb::Duplicate::default()),
                "duplicate",
                r#""probability":0.0,"#,
            ),
            (
                Kind::Corrupt(pb::Corrupt::default()),
                "corrupt",
                r#""probability":0.0,"recompute_checksums":false,"#,
            ),
            (
                Kind::Bandwidth(pb::Bandwidth::default()),
                "bandwidth",
                r#""rate_bits_per_sec":0,"burst_bytes":0,"#,
            ),
        ] {
            assert_eq!(FaultSpecJson::from(&kind).kind_name(), name);
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
                format!(r#"{{"{name}":{{{own}"direction":"egress",{any}}}}}"#),
                "a default {name} spec"
            );
        }
    }

    #[test]
    fn direction_names() {
        for (direction, name) in [
            (pb::Direction::Unspecified, "egress"),
            (pb::Direction::Ingress, "ingress"),
            (pb::Direction::Egress, "egress"),
            (pb::Direction::Both, "both"),
        ] {
            assert_eq!(direction_name(direction.into()), name, "{direction:?}");
        }
        assert_eq!(direction_name(42), "unknown");
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

    #[test]
    fn experiments_table_shows_remaining_time() {
        let mut stopped = running_experiment();
        stopped.id = "exp-2".into();
        stopped.state = pb::ExperimentState::Stopped as i32;
        let mut out = Vec::new();
        let now = 1_700_000_017_500;
        if let Err(err) = write_experiments_table(&mut out, &[running_experiment(), stopped], now) {
            panic!("writing to a Vec failed: {err}");
        }
        let text = String::from_utf8_lossy(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "header and two rows, got:\n{text}");
        assert!(lines[0].starts_with("ID "), "header first, got:\n{text}");
        let running: Vec<&str> = lines[1]
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            running,
            [
                "exp-1",
                "checkout",
                "running (dry run)",
                "2",
                "13",
                "5",
                "13s"
            ],
            "running row, got:\n{text}"
        );
        assert!(
            lines[2].trim_end().ends_with(" -"),
            "a stopped experiment has no remaining time, got:\n{text}"
        );
    }

    #[test]
    fn event_line_has_time_type_id_and_counters() {
        let event = pb::Event {
            r#type: pb::EventType::Counters as i32,
            at_ms: 1_700_000_001_234,
            experiment: Some(running_experiment()),
            message: String::new(),
        };
        let mut out = Vec::new();
        if let Err(err) = write_event_line(&mut out, &event) {
            panic!("writing to a Vec failed: {err}");
        }
        assert_eq!(
            String::from_utf8_lossy(&out),
            "2023-11-14T22:13:21.234Z  counters  exp-1  matched=13 injected=5\n"
        );
    }

    #[test]
    fn compact_durations() {
        for (secs, text) in [(0, "0s"), (12, "12s"), (245, "4m05s"), (3723, "1h02m03s")] {
            assert_eq!(
                compact_duration(Duration::from_secs(secs)),
                text,
                "{secs} seconds"
            );
        }
    }
}
