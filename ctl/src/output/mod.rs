//! How `faultctl` prints agent answers: aligned tables for people
//! ([`table`]), JSON for scripts ([`json`]). Every command prints an
//! experiment through [`ExperimentJson`], so `inject`, `apply`, `status`,
//! `ls` and `watch` agree on its shape.

#[cfg(test)]
mod fixtures;
mod impact;
mod json;
mod table;

use std::{
    io::{self, Write},
    time::{SystemTime, UNIX_EPOCH},
};

use faultline_proto::v1 as pb;
use serde::Serialize;

pub use self::{
    json::{CapabilitiesJson, EventJson, ExperimentJson},
    table::{
        compact_duration, write_capabilities_table, write_event_line, write_experiment_detail,
        write_experiments_table,
    },
};

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

/// Lowercase event type: "started", "counters", "expired", "stopped", "failed", "lagged".
pub fn event_type_name(event_type: i32) -> &'static str {
    match pb::EventType::try_from(event_type) {
        Ok(pb::EventType::Started) => "started",
        Ok(pb::EventType::Counters) => "counters",
        Ok(pb::EventType::Expired) => "expired",
        Ok(pb::EventType::Stopped) => "stopped",
        Ok(pb::EventType::Failed) => "failed",
        Ok(pb::EventType::Lagged) => "lagged",
        Ok(pb::EventType::Unspecified) => "unspecified",
        Err(_) => "unknown",
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

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}
