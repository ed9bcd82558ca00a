//! The experiment file: what `faultctl apply -f` reads, what `inject` builds
//! from flags, and what `--output json` prints as an experiment's `spec`.
//! One set of types, read and written with serde ([`file`], [`fields`]),
//! converted to and from the wire `ExperimentSpec` ([`proto`]), with the
//! value parsers that flags and files share ([`units`]).
//!
//! These are our own serde types on purpose: the proto types stay free of
//! serde, and the file format can reject unknown fields and use `30s`
//! durations instead of `duration_ms`.

mod fields;
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
    units::{
        parse_burst, parse_burst_length, parse_duration, parse_ports, parse_probability,
        parse_rate, parse_short_duration,
    },
};

/// The fault kinds, as experiment files, `--output json` and the agent name
/// them (defined once, in `faultline_proto::names`). [`FaultEntry`]'s fields
/// carry the same names (a test checks).
pub mod kind {
    pub use faultline_proto::names::{
        BANDWIDTH, BLACKHOLE, CORRUPT, DNS_ERROR, DUPLICATE, KINDS as ALL, LATENCY, PACKET_LOSS,
        SYSCALL_ERROR, SYSCALL_SIGNAL,
    };
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
}

/// One fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "FaultEntry", into = "FaultEntry")]
pub enum Fault {
    SyscallError(SyscallError),
    SyscallSignal(SyscallSignal),
    PacketLoss(PacketLoss),
    Blackhole(Blackhole),
    Duplicate(Duplicate),
    Corrupt(Corrupt),
    Bandwidth(Bandwidth),
    Latency(Latency),
    DnsError(DnsError),
}

impl Fault {
    /// The kind's name, e.g. "packet_loss": the key of the fault in a file.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::SyscallError(_) => kind::SYSCALL_ERROR,
            Self::SyscallSignal(_) => kind::SYSCALL_SIGNAL,
            Self::PacketLoss(_) => kind::PACKET_LOSS,
            Self::Blackhole(_) => kind::BLACKHOLE,
            Self::Duplicate(_) => kind::DUPLICATE,
            Self::Corrupt(_) => kind::CORRUPT,
            Self::Bandwidth(_) => kind::BANDWIDTH,
            Self::Latency(_) => kind::LATENCY,
            Self::DnsError(_) => kind::DNS_ERROR,
        }
    }
}

/// How a fault is written: a map whose single key is the fault kind,
/// `- syscall_error: {...}`. A struct rather than a serde enum because
/// `yaml_serde` (like `serde_yaml` 0.9) wants enums as `!tags`, and so that a
/// misspelt kind is an "unknown field" that lists the known kinds, in YAML
/// and JSON alike. The field names are [`kind`]'s.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultEntry {
    #[serde(skip_serializing_if = "Option::is_none")]
    syscall_error: Option<SyscallError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    syscall_signal: Option<SyscallSignal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    packet_loss: Option<PacketLoss>,
    #[serde(skip_serializing_if = "Option::is_none")]
    blackhole: Option<Blackhole>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duplicate: Option<Duplicate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    corrupt: Option<Corrupt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bandwidth: Option<Bandwidth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency: Option<Latency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns_error: Option<DnsError>,
}

impl TryFrom<FaultEntry> for Fault {
    type Error = String;

    fn try_from(entry: FaultEntry) -> Result<Self, Self::Error> {
        let FaultEntry {
            syscall_error,
            syscall_signal,
            packet_loss,
            blackhole,
            duplicate,
            corrupt,
            bandwidth,
            latency,
            dns_error,
        } = entry;
        let mut kinds = [
            syscall_error.map(Self::SyscallError),
            syscall_signal.map(Self::SyscallSignal),
            packet_loss.map(Self::PacketLoss),
            blackhole.map(Self::Blackhole),
            duplicate.map(Self::Duplicate),
            corrupt.map(Self::Corrupt),
            bandwidth.map(Self::Bandwidth),
            latency.map(Self::Latency),
            dns_error.map(Self::DnsError),
        ]
        .into_iter()
        .flatten();
        match (kinds.next(), kinds.next()) {
            (Some(fault), None) => Ok(fault),
            (None, _) => {
                let (last, others) = kind::ALL.split_last().unwrap_or((&"", &[]));
                Err(format!(
                    "a fault needs its kind as the key: {} or {last}",
                    others.join(", ")
                ))
            }
            (Some(_), Some(_)) => {
                Err("a fault has exactly one kind: put each kind in its own list item".to_owned())
            }
        }
    }
}

impl From<Fault> for FaultEntry {
    fn from(fault: Fault) -> Self {
        let mut entry = Self::default();
        match fault {
            Fault::SyscallError(f) => entry.syscall_error = Some(f),
            Fault::SyscallSignal(f) => entry.syscall_signal = Some(f),
            Fault::PacketLoss(f) => entry.packet_loss = Some(f),
            Fault::Blackhole(f) => entry.blackhole = Some(f),
            Fault::Duplicate(f) => entry.duplicate = Some(f),
            Fault::Corrupt(f) => entry.corrupt = Some(f),
            Fault::Bandwidth(f) => entry.bandwidth = Some(f),
            Fault::Latency(f) => entry.latency = Some(f),
            Fault::DnsError(f) => entry.dns_error = Some(f),
        }
        entry
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyscallError {
    pub syscall: String,
    pub errno: String,
    #[serde(
        default = "always",
        deserialize_with = "fields::deserialize_probability"
    )]
    pub probability: f64,
    /// 0 = any port.
    #[serde(default)]
    pub port: u32,
    /// Empty = any address.
    #[serde(default)]
    pub cidr: String,
    /// File calls: only files at or below this path. Empty = every file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyscallSignal {
    pub syscall: String,
    /// A name or a number; YAML `signal: 9` is accepted as well as `"9"`.
    #[serde(deserialize_with = "fields::deserialize_name_or_number")]
    pub signal: String,
    #[serde(
        default = "always",
        deserialize_with = "fields::deserialize_probability"
    )]
    pub probability: f64,
    /// 0 = not set; the probability decides.
    #[serde(default)]
    pub nth_call: u64,
}

/// Drop a fraction of matching packets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacketLoss {
    /// Mean fraction of packets lost, in [0, 1].
    #[serde(deserialize_with = "fields::deserialize_probability")]
    pub probability: f64,
    /// Mean length of a loss burst in packets; 0 or 1 = independent losses.
    #[serde(default, deserialize_with = "fields::deserialize_burst_length")]
    pub burst_length: f64,
    #[serde(default)]
    pub direction: Direction,
    #[serde(default, rename = "match")]
    pub matching: PacketMatch,
}

/// Drop every matching packet: a partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Blackhole {
    #[serde(default)]
    pub direction: Direction,
    #[serde(default, rename = "match")]
    pub matching: PacketMatch,
}

/// Send a fraction of matching packets twice. Interface scope only: the agent
/// refuses it for a cgroup target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Duplicate {
    /// Fraction of packets sent twice, in [0, 1].
    #[serde(deserialize_with = "fields::deserialize_probability")]
    pub probability: f64,
    #[serde(default)]
    pub direction: Direction,
    #[serde(default, rename = "match")]
    pub matching: PacketMatch,
}

/// Flip one bit in a fraction of matching packets. Interface scope only: the
/// agent refuses it for a cgroup target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Corrupt {
    /// Fraction of packets corrupted, in [0, 1].
    #[serde(deserialize_with = "fields::deserialize_probability")]
    pub probability: f64,
    /// false: checksums stay wrong and the receiver drops the packet; true:
    /// the L4 checksum is recomputed and corrupted data is delivered.
    #[serde(default)]
    pub recompute_checksums: bool,
    #[serde(default)]
    pub direction: Direction,
    #[serde(default, rename = "match")]
    pub matching: PacketMatch,
}

/// Police matching traffic to a rate; packets over it are dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bandwidth {
    /// Bits per second; also written `rate`, and either may be text such as
    /// `10mbit` (see [`parse_rate`]). Written back as a number.
    #[serde(alias = "rate", deserialize_with = "fields::deserialize_rate")]
    pub rate_bits_per_sec: u64,
    /// Bucket depth in bytes; 0 = the agent picks.
    #[serde(default)]
    pub burst_bytes: u32,
    #[serde(default)]
    pub direction: Direction,
    #[serde(default, rename = "match")]
    pub matching: PacketMatch,
}

/// Delay the matching egress packets of an interface; there is no direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    pub delay_ms: f64,
    #[serde(default)]
    pub jitter_ms: f64,
    #[serde(default, rename = "match")]
    pub matching: PacketMatch,
}

/// Fail DNS queries for names in a domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsError {
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub failure: DnsFailure,
    #[serde(
        default = "always",
        deserialize_with = "fields::deserialize_probability"
    )]
    pub probability: f64,
    #[serde(default)]
    pub resolver_cidr: String,
}

// The enums below are named once: serde (files, JSON) and clap (flags) both
// take the lowercase variant names.

/// How a matching DNS query fails; written in lowercase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DnsFailure {
    #[default]
    Drop,
    Servfail,
    Nxdomain,
}

/// Which way the packets of a network fault travel; written in lowercase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    #[default]
    Egress,
    Both,
}

/// The IP protocol a network fault matches; written in lowercase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Any,
    Tcp,
    Udp,
    Icmp,
}

/// Which packets a network fault applies to; every field defaults to "any".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PacketMatch {
    pub protocol: Protocol,
    /// IPv4 or IPv6 CIDR; empty = any address.
    pub src_cidr: String,
    pub dst_cidr: String,
    /// `80` or `8000-8100`; empty = any port.
    #[serde(deserialize_with = "fields::deserialize_ports")]
    pub src_ports: String,
    #[serde(deserialize_with = "fields::deserialize_ports")]
    pub dst_ports: String,
    /// SSH (port 22) is spared unless this is set.
    pub include_ssh: bool,
}

fn always() -> f64 {
    1.0
}
