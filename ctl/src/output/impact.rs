//! What the experiment did to its target (proto `Impact`): the JSON
//! `impact` object and the before/during table of `faultctl status`.

use std::io::{self, Write};

use faultline_proto::{text::escape_controls, v1 as pb};
use serde::Serialize;

#[derive(Debug, Serialize, PartialEq)]
pub struct ImpactJson {
    /// Where the pressure figures come from: a cgroup's directory or `/proc/pressure`.
    pub source: String,
    /// The baseline, taken just before the faults were armed.
    pub before: Option<WindowJson>,
    /// Since the faults were armed (to now, or to the end).
    pub during: Option<WindowJson>,
    /// What could not be measured, and why; empty when everything was.
    pub unavailable: String,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct WindowJson {
    pub duration_ms: u64,
    pub pressure: Vec<StallJson>,
    pub run_queue: Option<RunQueueJson>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct StallJson {
    pub resource: String,
    /// The kernel's 10 s averages at the window's end, percent.
    pub some_avg10: f64,
    pub full_avg10: f64,
    /// Share of the window stalled, percent (from the kernel's stall total).
    pub some_percent: f64,
    pub full_percent: f64,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct RunQueueJson {
    /// Bucket i: latencies in [2^i, 2^(i+1)) µs.
    pub buckets: Vec<u64>,
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
}

impl From<&pb::Impact> for ImpactJson {
    fn from(i: &pb::Impact) -> Self {
        Self {
            source: i.source.clone(),
            before: i.before.as_ref().map(WindowJson::from),
            during: i.during.as_ref().map(WindowJson::from),
            unavailable: i.unavailable.clone(),
        }
    }
}

impl From<&pb::ImpactWindow> for WindowJson {
    fn from(w: &pb::ImpactWindow) -> Self {
        Self {
            duration_ms: w.duration_ms,
            pressure: w
                .pressure
                .iter()
                .map(|p| StallJson {
                    resource: p.resource.clone(),
                    some_avg10: p.some_avg10,
                    full_avg10: p.full_avg10,
                    some_percent: p.some_percent,
                    full_percent: p.full_percent,
                })
                .collect(),
            run_queue: w.run_queue.as_ref().map(|r| RunQueueJson {
                buckets: r.buckets.clone(),
                count: r.count,
                p50_us: r.p50_us,
                p99_us: r.p99_us,
            }),
        }
    }
}

/// The before/during table: one row per PSI resource (some and full, as
/// the window's stalled share, with avg10 beside it) and the run-queue
/// latency percentiles and sample count.
pub fn write_impact(out: &mut impl Write, i: &pb::Impact) -> io::Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "Impact (pressure from {}):",
        escape_controls(&i.source)
    )?;
    let secs = |w: Option<&pb::ImpactWindow>| {
        w.map_or_else(
            || "-".to_owned(),
            |w| format!("{:.1}s", w.duration_ms as f64 / 1000.0),
        )
    };
    let mut rows = vec![vec![
        String::new(),
        format!("BEFORE ({})", secs(i.before.as_ref())),
        format!("DURING ({})", secs(i.during.as_ref())),
    ]];
    let stall = |w: Option<&pb::ImpactWindow>, res: &str, full: bool| {
        let Some(p) = w.and_then(|w| w.pressure.iter().find(|p| p.resource == res)) else {
            return "-".to_owned();
        };
        let (share, avg10) = if full {
            (p.full_percent, p.full_avg10)
        } else {
            (p.some_percent, p.some_avg10)
        };
        format!("{share:.2}% (avg10 {avg10:.2})")
    };
    let resources: Vec<String> = i
        .before
        .iter()
        .chain(&i.during)
        .flat_map(|w| w.pressure.iter().map(|p| p.resource.clone()))
        .fold(Vec::new(), |mut v, r| {
            if !v.contains(&r) {
                v.push(r);
            }
            v
        });
    for res in &resources {
        for (which, full) in [("some", false), ("full", true)] {
            rows.push(vec![
                format!("{} {which}", escape_controls(res)),
                stall(i.before.as_ref(), res, full),
                stall(i.during.as_ref(), res, full),
            ]);
        }
    }
    let rq = |w: Option<&pb::ImpactWindow>, f: &dyn Fn(&pb::RunQueueLatency) -> String| {
        w.and_then(|w| w.run_queue.as_ref())
            .map_or_else(|| "-".to_owned(), f)
    };
    if i.before
        .iter()
        .chain(&i.during)
        .any(|w| w.run_queue.is_some())
    {
        for (name, f) in [
            (
                "run queue p50",
                &(|r: &pb::RunQueueLatency| format!("{:.0} µs", r.p50_us))
                    as &dyn Fn(&pb::RunQueueLatency) -> String,
            ),
            ("run queue p99", &|r| format!("{:.0} µs", r.p99_us)),
            ("run queue count", &|r| r.count.to_string()),
        ] {
            rows.push(vec![
                name.to_owned(),
                rq(i.before.as_ref(), f),
                rq(i.during.as_ref(), f),
            ]);
        }
    }
    let width = |c: usize| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0);
    let (w0, w1) = (width(0), width(1));
    for r in &rows {
        let line = format!("  {:<w0$}  {:<w1$}  {}", r[0], r[1], r[2]);
        writeln!(out, "{}", line.trim_end())?;
    }
    if !i.unavailable.is_empty() {
        writeln!(out, "  unavailable: {}", escape_controls(&i.unavailable))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(ms: u64, some: f64, p99: f64) -> pb::ImpactWindow {
        pb::ImpactWindow {
            duration_ms: ms,
            pressure: vec![pb::PressureStall {
                resource: "cpu".into(),
                some_avg10: some / 2.0,
                full_avg10: 0.0,
                some_percent: some,
                full_percent: 0.0,
            }],
            run_queue: Some(pb::RunQueueLatency {
                buckets: vec![1; 32],
                count: 32,
                p50_us: 3.0,
                p99_us: p99,
            }),
        }
    }

    #[test]
    fn before_and_during_side_by_side() {
        let i = pb::Impact {
            source: "/sys/fs/cgroup/app".into(),
            before: Some(window(1000, 0.5, 12.0)),
            during: Some(window(5200, 41.25, 9000.0)),
            unavailable: String::new(),
        };
        let mut out = Vec::new();
        write_impact(&mut out, &i).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("Impact (pressure from /sys/fs/cgroup/app):"),
            "{text}"
        );
        assert!(
            text.contains("BEFORE (1.0s)") && text.contains("DURING (5.2s)"),
            "{text}"
        );
        let cpu = text.lines().find(|l| l.contains("cpu some")).unwrap();
        assert!(
            cpu.contains("0.50% (avg10 0.25)") && cpu.contains("41.25% (avg10 20.62)"),
            "{cpu}"
        );
        let p99 = text.lines().find(|l| l.contains("run queue p99")).unwrap();
        assert!(p99.contains("12 µs") && p99.contains("9000 µs"), "{p99}");
        let json = serde_json::to_value(ImpactJson::from(&i)).unwrap();
        assert_eq!(json["during"]["run_queue"]["p99_us"], 9000.0);
        assert_eq!(json["before"]["pressure"][0]["resource"], "cpu");
    }

    #[test]
    fn the_reason_for_missing_figures_is_shown() {
        let i = pb::Impact {
            source: "/proc/pressure".into(),
            before: Some(pb::ImpactWindow::default()),
            during: None,
            unavailable: "run-queue latency unavailable: the kernel refused fl_rq_switch".into(),
        };
        let mut out = Vec::new();
        write_impact(&mut out, &i).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("unavailable: run-queue latency unavailable"),
            "{text}"
        );
        assert!(!text.contains("run queue p50"), "{text}");
    }
}
