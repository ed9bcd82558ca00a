//! Aligned tables and one-line events, for people. Every text that came
//! from a request (names, labels, comm, paths) or the agent is shown with
//! its control characters escaped, so it cannot move the cursor, recolour
//! the terminal or fake a row.

use std::{
    io::{self, Write},
    time::{Duration, UNIX_EPOCH},
};

use faultline_proto::{text::escape_controls, v1 as pb};

use super::{EventJson, ExperimentJson, state_name};
use crate::spec;

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
        self.rows.push(
            cells
                .iter()
                .map(|cell| escape_controls(cell).into_owned())
                .collect(),
        );
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
    let header = format!(
        "agent {}, kernel {}, longest duration {}",
        or_dash(&caps.agent_version),
        or_dash(&caps.kernel_release),
        compact_duration(Duration::from_millis(caps.max_duration_ms)),
    );
    writeln!(out, "{}", escape_controls(&header))?;
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
    let mut fields = vec![
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
    // Shown when set: agents before leases, and unix-socket starts, have none.
    if json.lease_ttl_ms > 0 {
        let mut lease = compact_duration(Duration::from_millis(json.lease_ttl_ms.into()));
        if experiment.state == pb::ExperimentState::Running as i32 {
            let left = json.lease_expires_at_ms.saturating_sub(now_ms);
            lease.push_str(&format!(
                " (lapses in {} unless renewed)",
                compact_duration(Duration::from_millis(left))
            ));
        }
        fields.push(("Lease", lease));
    }
    if !json.request_id.is_empty() {
        fields.push(("Request", json.request_id.clone()));
    }
    if !json.owner.is_empty() {
        fields.push(("Owner", json.owner.clone()));
    }
    for (key, value) in fields {
        writeln!(out, "{:<10}{}", format!("{key}:"), escape_controls(&value))?;
    }
    if json.faults.is_empty() {
        if let Some(impact) = &experiment.impact {
            super::impact::write_impact(out, impact)?;
        }
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
    table.write(out)?;
    for fault in &json.faults {
        if !fault.metrics.is_empty() {
            let figures: Vec<String> = fault
                .metrics
                .iter()
                .map(|m| format!("{}={} {}", m.name, compact_number(m.value), m.unit))
                .collect();
            writeln!(
                out,
                "fault #{}: {}",
                fault.index,
                escape_controls(&figures.join(", "))
            )?;
        }
    }
    let acts: Vec<_> = json
        .faults
        .iter()
        .flat_map(|f| f.actions.iter().map(move |a| (f.index, a)))
        .collect();
    if !acts.is_empty() {
        writeln!(out)?;
        let mut table = Table::new(&["#", "TIME", "PID", "COMM", "ACTION"]);
        for (index, a) in acts {
            table.row(vec![
                index.to_string(),
                format_time_millis(a.at_ms),
                a.pid.to_string(),
                escape_controls(&a.comm).into_owned(),
                escape_controls(&a.what).into_owned(),
            ]);
        }
        table.write(out)?;
    }
    for fault in json.faults.iter().filter(|f| f.not_injected_map_full > 0) {
        writeln!(
            out,
            "fault #{}: {} calls not signalled: the agent's nth_call count map was full \
             (raise the agent's nth_call_capacity)",
            fault.index, fault.not_injected_map_full
        )?;
    }
    if let Some(impact) = &experiment.impact {
        super::impact::write_impact(out, impact)?;
    }
    Ok(())
}

/// A figure with at most two decimals and no trailing zeros.
fn compact_number(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// One line per event, self-describing because `watch` prints no header.
pub fn write_event_line(out: &mut impl Write, event: &pb::Event) -> io::Result<()> {
    let json = EventJson::from(event);
    if let Some(lost) = json.lost {
        // No experiment: the stream's own notice, with what it lost.
        return writeln!(
            out,
            "{}  {:<8}  -  lost={lost}  {}",
            format_time_millis(json.at_ms),
            json.event_type,
            json.message.replace('\n', " "),
        );
    }
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
        line.push_str(&json.message);
    }
    writeln!(out, "{}", escape_controls(&line))
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

fn describe_target(target: &spec::Target) -> String {
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
    use crate::output::fixtures::{network_experiment, running_experiment};

    #[test]
    fn calls_not_signalled_for_a_full_map_are_shown_under_the_faults() {
        let mut out = Vec::new();
        if let Err(err) = write_experiment_detail(&mut out, &running_experiment(), 0) {
            panic!("writing to a Vec failed: {err}");
        }
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains(
                "fault #1: 2 calls not signalled: the agent's nth_call count map was full"
            ),
            "{text}"
        );
        assert!(
            !text.contains("fault #0:"),
            "only faults with such calls:\n{text}"
        );
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
                    "egress rate=10000000 bit/s burst=131072 B udp"
                ],
            ],
            "one row per fault:\n{text}"
        );
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
            lost: 0,
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
    fn control_characters_are_escaped_in_tables_and_details() {
        let mut evil = running_experiment();
        if let Some(spec) = evil.spec.as_mut() {
            spec.name = "red\x1b[31mX\nfake".into();
            spec.labels
                .insert("team".into(), "a\x1b]0;title\x07".into());
        }
        let mut out = Vec::new();
        if let Err(err) = write_experiments_table(&mut out, std::slice::from_ref(&evil), 0) {
            panic!("writing to a Vec failed: {err}");
        }
        if let Err(err) = write_experiment_detail(&mut out, &evil, 0) {
            panic!("writing to a Vec failed: {err}");
        }
        let text = String::from_utf8_lossy(&out);
        assert!(
            !text.contains('\x1b') && !text.contains('\x07'),
            "no raw control characters:\n{text:?}"
        );
        assert!(
            text.contains("red\\x1b[31mX\\nfake") && text.contains("team=a\\x1b]0;title\\x07"),
            "the name and the label, escaped:\n{text}"
        );
    }

    #[test]
    fn lagged_event_line_and_json_name_the_loss() {
        let event = pb::Event {
            r#type: pb::EventType::Lagged as i32,
            at_ms: 1_700_000_001_234,
            experiment: None,
            message: "this stream fell behind; 7 events were dropped".into(),
            lost: 7,
        };
        let mut out = Vec::new();
        if let Err(err) = write_event_line(&mut out, &event) {
            panic!("writing to a Vec failed: {err}");
        }
        assert_eq!(
            String::from_utf8_lossy(&out),
            "2023-11-14T22:13:21.234Z  lagged    -  lost=7  this stream fell behind; 7 events were dropped\n"
        );
        let json = serde_json::to_value(EventJson::from(&event)).unwrap_or_default();
        assert_eq!(json["type"], "lagged");
        assert_eq!(json["lost"], 7);
        assert!(json["experiment"].is_null());
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
