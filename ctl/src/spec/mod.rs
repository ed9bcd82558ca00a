//! The experiment file: what `faultctl apply -f` reads, what `inject` builds
//! from flags, and what `--output json` prints as an experiment's `spec`.
//! One set of types, read and written with serde ([`file`], [`fields`]),
//! converted to and from the wire `ExperimentSpec` ([`proto`]), with the
//! value parsers that flags and files share ([`units`]). Each fault kind's
//! own fields are in its module, `crate::kinds::<kind>`.
//!
//! These are our own serde types on purpose: the proto types stay free of
//! serde, and the file format can reject unknown fields and use `30s`
//! durations instead of `duration_ms`.

pub mod fields;
mod file;
mod proto;
#[cfg(test)]
mod tests;
mod units;

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

#[cfg(test)]
pub use self::file::{FileFormat, parse};
pub use self::{
    file::{SpecError, load},
    proto::WireError,
    units::{
        parse_burst, parse_burst_length, parse_byte_rate, parse_duration, parse_ports,
        parse_probability, parse_rate, parse_short_duration, parse_size,
    },
};
pub use crate::kinds::Fault;

/// The fault kinds, as experiment files, `--output json` and the agent name
/// them (defined once, in `faultline_proto::names`, from the proto), in the
/// proto's order. Each kind's module is `crate::kinds::<name>`.
pub mod kind {
    pub use faultline_proto::names::KINDS as ALL;
}

/// One experiment: what to inject, into whom, for how long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    #[serde(default)]
    pub name: String,
    /// Written `30s`, `2m`, `1h 30m` or `1500ms`.
    #[serde(
        serialize_with = "fields::serialize_duration",
        deserialize_with = "fields::deserialize_duration"
    )]
    pub duration: Duration,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub target: Target,
    pub faults: Vec<Fault>,
}

/// Who the faults apply to; the agent requires at least one of `pids`,
/// `cgroup`, `comm` or `interface`. Network faults are scoped by either
/// `cgroup` or `interface`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Target {
    pub pids: Vec<u32>,
    pub cgroup: String,
    pub comm: String,
    pub exclude_pids: Vec<u32>,
    pub exclude_comm: String,
    /// Network faults only: scope to this interface instead of a cgroup.
    pub interface: String,
    /// Consent to a cgroup that covers the host's own machinery (the
    /// cgroup2 root or an ancestor of the agent's cgroup): network faults or
    /// a dry run only.
    pub allow_host_wide: bool,
}
