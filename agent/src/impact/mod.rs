//! What a fault did to its target: the target's pressure stall
//! information (PSI) and its run-queue latency, in a baseline window just
//! before the faults are armed and in the window while they run.
//!
//! `psi` reads pressure files, `hist` turns the kernel's log2 histogram
//! into percentiles, `session` keeps one experiment's windows. The
//! run-queue histogram comes from the scheduler programs
//! (`kernel/runq.rs`), attached only while some session runs.

pub mod hist;
pub mod psi;
mod session;

use std::time::Duration;

pub use session::{REFRESH, Selector, Session};

/// How long the baseline window lasts before the faults are armed.
pub const BASELINE: Duration = Duration::from_secs(1);

/// An experiment's impact figures (proto `Impact`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImpactView {
    /// Where the pressure was read: a cgroup's directory or `/proc/pressure`.
    pub source: String,
    pub before: Option<WindowView>,
    pub during: Option<WindowView>,
    /// What could not be measured, and why (empty when everything was).
    pub unavailable: String,
}

/// One window (proto `ImpactWindow`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowView {
    pub duration: Duration,
    pub pressure: Vec<Stall>,
    pub run_queue: Option<RunQueueView>,
}

/// One resource's stall (proto `PressureStall`): the kernel's avg10 at the
/// window's end, and the share of the window stalled, from `total`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stall {
    pub resource: &'static str,
    pub some_avg10: f64,
    pub full_avg10: f64,
    pub some_percent: f64,
    pub full_percent: f64,
}

/// The run-queue latency of the window (proto `RunQueueLatency`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunQueueView {
    /// Bucket i: latencies in [2^i, 2^(i+1)) µs.
    pub buckets: Vec<u64>,
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
}
