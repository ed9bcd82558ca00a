//! The experiment that `faultctl` sends: read from an experiment file (`apply`)
//! or built from flags (`inject`), then converted to the wire `ExperimentSpec`.
//!
//! These are our own serde types on purpose: the proto types stay free of
//! serde, and the file format can reject unknown fields and use `30s`
//! durations instead of `duration_ms`.

use std::{
    collections::BTreeMap,
    fmt, fs,
    io::{self, Read},
    path::Path,
    time::Duration,
};

use faultline_proto::v1 as pb;
use serde::{Deserialize, Deserializer, de};

/// One experiment: what to inject, into whom, for how long.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    #[serde(default)]
    pub name: String,
    #[serde(deserialize_with = "deserialize_duration")]
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
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "FaultEntry")]
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

/// How a fault is written: a map whose single key is the fault kind,
/// `- syscall_error: {...}`. A struct rather than a serde enum because
/// `yaml_serde` (like `serde_yaml` 0.9) wants enums as `!tags`, and so that a misspelt kind is an
/// "unknown field" that lists the known kinds, in YAML and JSON alike.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultEntry {
    syscall_error: Option<SyscallError>,
    syscall_signal: Option<SyscallSignal>,
    packet_loss: Option<PacketLoss>,
    blackhole: Option<Blackhole>,
    duplicate: Option<Duplicate>,
    corrupt: Option<Corrupt>,
    bandwidth: Option<Bandwidth>,
    latency: Option<Latency>,
    dns_error: Option<DnsError>,
}

impl TryFrom<FaultEntry> for Fault {
    type Error = &'static str;

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
            (None, _) => Err(
                "a fault needs its kind as the key: syscall_error, syscall_signal, packet_loss, blackhole, duplicate, corrupt, bandwidth, latency or dns_error",
            ),
            (Some(_), Some(_)) => {
                Err("a fault has exactly one kind: put each kind in its own list item")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyscallError {
    pub syscall: String,
    pub errno: String,
    #[serde(default = "always")]
    pub probability: f64,
    /// 0 = any port.
    #[serde(default)]
    pub port: u32,
    /// Empty = any address.
    #[serde(default)]
    pub cidr: String,
    /// File calls: only files at or below this path. Empty = every file.
    #[serde(default)]
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyscallSignal {
    pub syscall: String,
    /// A name or a number; YAML `signal: 9` is accepted as well as `"9"`.
    #[serde(deserialize_with = "deserialize_name_or_number")]
    pub signal: String,
    #[serde(default = "always")]
    pub probability: f64,
    /// 0 = not set; the probability decides.
    #[serde(default)]
    pub nth_call: u64,
}

/// Drop a fraction of matching packets.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacketLoss {
    /// Mean fraction of packets lost, in [0, 1].
    pub probability: f64,
    /// Mean length of a loss burst in packets; 0 or 1 = independent losses.
    #[serde(default)]
    pub burst_length: f64,
    #[serde(default)]
    pub direction: Direction,
    #[serde(default, rename = "match")]
    pub matching: PacketMatch,
}

/// Drop every matching packet: a partition.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Blackhole {
    #[serde(default)]
    pub direction: Direction,
    #[serde(default, rename = "match")]
    pub matching: PacketMatch,
}

/// Send a fraction of matching packets twice. Interface scope only: the agent
/// refuses it for a cgroup target.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Duplicate {
    /// Fraction of packets sent twice, in [0, 1].
    pub probability: f64,
    #[serde(default)]
    pub direction: Direction,
    #[serde(default, rename = "match")]
    pub matching: PacketMatch,
}

/// Flip one bit in a fraction of matching packets. Interface scope only: the
/// agent refuses it for a cgroup target.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Corrupt {
    /// Fraction of packets corrupted, in [0, 1].
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bandwidth {
    /// Bits per second; also written `rate`, and either may be text such as
    /// `10mbit` (see [`parse_rate`]).
    #[serde(alias = "rate", deserialize_with = "deserialize_rate")]
    pub rate_bits_per_sec: u64,
    /// Bucket depth in bytes; 0 = the agent picks.
    #[serde(default)]
    pub burst_bytes: u32,
    #[serde(default)]
    pub direction: Direction,
    #[serde(default, rename = "match")]
    pub matching: PacketMatch,
}

/// Delay the matching egress packets of an interface.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    pub delay_ms: f64,
    #[serde(default)]
    pub jitter_ms: f64,
    #[serde(default, rename = "match")]
    pub matching: PacketMatch,
}

/// Fail DNS queries for names in a domain.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsError {
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub failure: DnsFailure,
    #[serde(default = "always")]
    pub probability: f64,
    #[serde(default)]
    pub resolver_cidr: String,
}

/// How a matching DNS query fails; written in lowercase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DnsFailure {
    #[default]
    Drop,
    Servfail,
    Nxdomain,
}

impl DnsFailure {
    pub fn wire(self) -> i32 {
        match self {
            Self::Drop => pb::DnsFailure::Drop,
            Self::Servfail => pb::DnsFailure::Servfail,
            Self::Nxdomain => pb::DnsFailure::Nxdomain,
        }
        .into()
    }
}

/// Which way the packets of a network fault travel; written in lowercase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    #[default]
    Egress,
    Both,
}

/// The IP protocol a network fault matches; written in lowercase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Any,
    Tcp,
    Udp,
    Icmp,
}

/// Which packets a network fault applies to; every field defaults to "any".
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PacketMatch {
    pub protocol: Protocol,
    /// IPv4 or IPv6 CIDR; empty = any address.
    pub src_cidr: String,
    pub dst_cidr: String,
    /// `80` or `8000-8100`; empty = any port.
    #[serde(deserialize_with = "deserialize_ports")]
    pub src_ports: String,
    #[serde(deserialize_with = "deserialize_ports")]
    pub dst_ports: String,
    /// SSH (port 22) is spared unless this is set.
    pub include_ssh: bool,
}

fn always() -> f64 {
    1.0
}

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
}

impl Protocol {
    /// The wire form: the lowercase name, or empty for any protocol.
    pub fn wire_name(self) -> &'static str {
        match self {
            Self::Any => "",
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Icmp => "icmp",
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

/// Whole milliseconds, saturating; the agent caps durations far below `u64::MAX`.
pub fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Parses a human duration such as `30s`, `2m`, `1h30m` or `1500ms`.
///
/// The wire format counts milliseconds, so anything shorter than 1ms is
/// rejected here instead of silently becoming 0.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|err| format!("invalid duration {text:?}: {err}"))?;
    if duration < Duration::from_millis(1) {
        return Err(format!("invalid duration {text:?}: must be at least 1ms"));
    }
    Ok(duration)
}

/// Parses a delay such as `50ms`, `1.5ms` or `2s` (sub-millisecond allowed).
pub fn parse_short_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Some(ms) = t.strip_suffix("ms")
        && let Ok(v) = ms.trim().parse::<f64>()
    {
        if !(v.is_finite() && v >= 0.0) {
            return Err(format!("invalid duration {text:?}"));
        }
        return Ok(Duration::from_secs_f64(v / 1e3));
    }
    humantime::parse_duration(t).map_err(|err| format!("invalid duration {text:?}: {err}"))
}

/// Parses a port or an inclusive port range, `80` or `8000-8100`, into its
/// wire form; empty means any port.
pub fn parse_ports(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(String::new());
    }
    let invalid = |why: &str| {
        format!(
            "invalid ports {text:?}: {why}; expected a port such as 80 or a range such as 8000-8100"
        )
    };
    let port = |part: &str| {
        part.trim()
            .parse::<u16>()
            .map_err(|_| invalid(&format!("{:?} is not a port (0-65535)", part.trim())))
    };
    match text.split_once('-') {
        None => Ok(port(text)?.to_string()),
        Some((low, high)) => {
            let (low, high) = (port(low)?, port(high)?);
            if low > high {
                return Err(invalid("the range is empty"));
            }
            Ok(format!("{low}-{high}"))
        }
    }
}

/// Parses a rate in bits per second: a plain number (`64000`), or a number
/// with a decimal unit (×1000): `500kbit`, `10mbit`, `2.5gbit`. `bit`, `bps`,
/// `kbps`, `mbps` and `gbps` count bits per second too (`10mbps` is
/// `10mbit`, not megabytes as in `tc`). Units are case-insensitive.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let invalid = |why: &str| {
        format!(
            "invalid rate {text:?}: {why}; expected bits per second such as 64000, 500kbit, \
             10mbit or 2.5gbit (also kbps, mbps, gbps)"
        )
    };
    let (number, unit) = split_unit(text);
    if number.is_empty() {
        return Err(invalid("not a number"));
    }
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "bit" | "bps" => 1,
        "kbit" | "kbps" => 1_000,
        "mbit" | "mbps" => 1_000_000,
        "gbit" | "gbps" => 1_000_000_000,
        _ => return Err(invalid(&format!("unknown unit {unit:?}"))),
    };
    let bits = scale(number, multiplier, "bit/s").map_err(|why| invalid(&why))?;
    match u64::try_from(bits) {
        Ok(0) => Err(invalid("must be more than 0")),
        Ok(bits) => Ok(bits),
        Err(_) => Err(invalid("too large")),
    }
}

/// Parses a bucket depth in bytes: a plain number (`1514`), or one with a
/// binary unit (×1024): `64k`, `1m`, `1.5m`. 0 lets the agent pick.
pub fn parse_burst(text: &str) -> Result<u32, String> {
    let invalid = |why: &str| {
        format!("invalid burst {text:?}: {why}; expected bytes such as 1514, 64k or 1m (×1024)")
    };
    let (number, unit) = split_unit(text);
    if number.is_empty() {
        return Err(invalid("not a number"));
    }
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        _ => return Err(invalid(&format!("unknown unit {unit:?}"))),
    };
    let bytes = scale(number, multiplier, "bytes").map_err(|why| invalid(&why))?;
    u32::try_from(bytes).map_err(|_| invalid(&format!("more than {} bytes", u32::MAX)))
}

/// `10mbit` → (`10`, `mbit`): the number is everything up to the first
/// character that cannot be part of it; both halves trimmed.
fn split_unit(text: &str) -> (&str, &str) {
    let text = text.trim();
    let end = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(end);
    (number, unit.trim())
}

/// `number × multiplier`, exactly: `number` is decimal digits with at most
/// one `.`, and the product must be a whole number of `units`.
fn scale(number: &str, multiplier: u64, units: &str) -> Result<u128, String> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let fraction = fraction.trim_end_matches('0');
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty() || !digits(whole) || !digits(fraction) {
        return Err("not a number".to_owned());
    }
    let too_large = || "too large".to_owned();
    let multiplier = u128::from(multiplier);
    let whole = match whole {
        "" => 0,
        _ => whole.parse::<u128>().map_err(|_| too_large())?,
    }
    .checked_mul(multiplier)
    .ok_or_else(too_large)?;
    if fraction.is_empty() {
        return Ok(whole);
    }
    // Without its trailing zeros, a fraction too long for u128 cannot come
    // out whole.
    let fraction = u32::try_from(fraction.len())
        .ok()
        .and_then(|len| 10_u128.checked_pow(len))
        .zip(fraction.parse::<u128>().ok())
        .and_then(|(denominator, fraction)| {
            let scaled = fraction.checked_mul(multiplier)?;
            (scaled % denominator == 0).then_some(scaled / denominator)
        })
        .ok_or_else(|| format!("not a whole number of {units}"))?;
    whole.checked_add(fraction).ok_or_else(too_large)
}

/// `rate: 10mbit` in a file; a plain number is bits per second.
fn deserialize_rate<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    struct Rate;
    impl de::Visitor<'_> for Rate {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a rate such as \"10mbit\" or a number of bits per second")
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<u64, E> {
            parse_rate(text).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, number: u64) -> Result<u64, E> {
            parse_rate(&number.to_string()).map_err(E::custom)
        }
    }
    deserializer.deserialize_any(Rate)
}

fn deserialize_ports<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    struct Ports;
    impl de::Visitor<'_> for Ports {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a port such as 80 or a range such as \"8000-8100\"")
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<String, E> {
            parse_ports(text).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, number: u64) -> Result<String, E> {
            parse_ports(&number.to_string()).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, number: i64) -> Result<String, E> {
            parse_ports(&number.to_string()).map_err(E::custom)
        }
    }
    deserializer.deserialize_any(Ports)
}

fn deserialize_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    struct DurationVisitor;
    impl de::Visitor<'_> for DurationVisitor {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration with a unit, such as \"30s\", \"2m\" or \"1500ms\"")
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            parse_duration(text).map_err(E::custom)
        }
    }
    deserializer.deserialize_str(DurationVisitor)
}

fn deserialize_name_or_number<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<String, D::Error> {
    struct NameOrNumber;
    impl de::Visitor<'_> for NameOrNumber {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a signal name or number, such as \"KILL\", \"SIGSEGV\" or 9")
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<String, E> {
            Ok(text.to_owned())
        }
        fn visit_u64<E: de::Error>(self, number: u64) -> Result<String, E> {
            Ok(number.to_string())
        }
        fn visit_i64<E: de::Error>(self, number: i64) -> Result<String, E> {
            Ok(number.to_string())
        }
    }
    deserializer.deserialize_any(NameOrNumber)
}

/// How an experiment file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Yaml,
    Json,
}

impl FileFormat {
    /// By extension when it says, else by content: JSON documents start with `{`.
    pub fn detect(path: &Path, text: &str) -> Self {
        match path.extension().and_then(|ext| ext.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("json") => Self::Json,
            Some(ext) if ext.eq_ignore_ascii_case("yaml") || ext.eq_ignore_ascii_case("yml") => {
                Self::Yaml
            }
            _ if text.trim_start().starts_with('{') => Self::Json,
            _ => Self::Yaml,
        }
    }
}

impl fmt::Display for FileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Yaml => "YAML",
            Self::Json => "JSON",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read experiment file {file}")]
    Read { file: String, source: io::Error },
    #[error("invalid experiment file {file} ({format}): {message}")]
    Invalid {
        file: String,
        format: FileFormat,
        message: String,
    },
}

/// Reads an experiment file; `-` reads standard input.
pub fn load(path: &Path) -> Result<Experiment, SpecError> {
    let file = if path == Path::new("-") {
        "<stdin>".to_owned()
    } else {
        path.display().to_string()
    };
    let text = if path == Path::new("-") {
        let mut text = String::new();
        io::stdin().read_to_string(&mut text).map(|_| text)
    } else {
        fs::read_to_string(path)
    }
    .map_err(|source| SpecError::Read {
        file: file.clone(),
        source,
    })?;
    let format = FileFormat::detect(path, &text);
    parse(&text, format).map_err(|message| SpecError::Invalid {
        file,
        format,
        message,
    })
}

/// Parses an experiment document. The error names the offending field: serde
/// reports unknown fields by name, and YAML errors carry the path to them.
pub fn parse(text: &str, format: FileFormat) -> Result<Experiment, String> {
    if text.trim().is_empty() {
        return Err("the file is empty".to_owned());
    }
    match format {
        FileFormat::Yaml => yaml_serde::from_str(text).map_err(|err| err.to_string()),
        FileFormat::Json => {
            let deserializer = &mut serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(deserializer).map_err(|err| {
                let path = err.path().to_string();
                let inner = err.into_inner();
                if path == "." {
                    inner.to_string()
                } else {
                    format!("{path}: {inner}")
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{
        any_packet, bandwidth, blackhole, corrupt, duplicate, full_match, packet_loss, to_ports,
    };

    const YAML: &str = r#"
name: checkout-connect-refused
duration: 30s
dry_run: false
labels: {team: payments}
target:
  cgroup: /sys/fs/cgroup/unified/app
  pids: [1234]
  comm: curl
  exclude_pids: []
  exclude_comm: ""
faults:
  - syscall_error: {syscall: connect, errno: ECONNREFUSED, probability: 0.5, port: 8080, cidr: 127.0.0.0/8}
  - syscall_signal: {syscall: openat, signal: SEGV, nth_call: 3}
"#;

    fn expected_spec() -> pb::ExperimentSpec {
        pb::ExperimentSpec {
            name: "checkout-connect-refused".into(),
            faults: vec![
                pb::FaultSpec {
                    kind: Some(pb::fault_spec::Kind::SyscallError(pb::SyscallError {
                        syscall: "connect".into(),
                        errno: "ECONNREFUSED".into(),
                        probability: 0.5,
                        port: 8080,
                        cidr: "127.0.0.0/8".into(),
                        path: String::new(),
                    })),
                },
                pb::FaultSpec {
                    kind: Some(pb::fault_spec::Kind::SyscallSignal(pb::SyscallSignal {
                        syscall: "openat".into(),
                        signal: "SEGV".into(),
                        probability: 1.0,
                        nth_call: 3,
                    })),
                },
            ],
            target: Some(pb::Target {
                pids: vec![1234],
                cgroup: "/sys/fs/cgroup/unified/app".into(),
                comm: "curl".into(),
                exclude_pids: vec![],
                exclude_comm: String::new(),
                interface: String::new(),
            }),
            duration_ms: 30_000,
            dry_run: false,
            labels: [("team".to_owned(), "payments".to_owned())].into(),
        }
    }

    fn parse_ok(text: &str, format: FileFormat) -> pb::ExperimentSpec {
        match parse(text, format) {
            Ok(experiment) => experiment.into(),
            Err(err) => panic!("expected the {format} document to parse, got error: {err}"),
        }
    }

    fn parse_err(text: &str, format: FileFormat) -> String {
        match parse(text, format) {
            Ok(experiment) => panic!("expected a {format} parse error, got {experiment:?}"),
            Err(err) => err,
        }
    }

    #[test]
    fn yaml_spec_converts_to_proto() {
        assert_eq!(parse_ok(YAML, FileFormat::Yaml), expected_spec());
    }

    #[test]
    fn json_spec_converts_to_proto() {
        let json = r#"{
          "name": "checkout-connect-refused",
          "duration": "30s",
          "labels": {"team": "payments"},
          "target": {"cgroup": "/sys/fs/cgroup/unified/app", "pids": [1234], "comm": "curl"},
          "faults": [
            {"syscall_error": {"syscall": "connect", "errno": "ECONNREFUSED", "probability": 0.5,
                               "port": 8080, "cidr": "127.0.0.0/8"}},
            {"syscall_signal": {"syscall": "openat", "signal": "SEGV", "nth_call": 3}}
          ]
        }"#;
        assert_eq!(parse_ok(json, FileFormat::Json), expected_spec());
    }

    #[test]
    fn defaults_fill_in_optional_fields() {
        let yaml = "duration: 2m\ntarget: {comm: curl}\nfaults:\n  - syscall_error: {syscall: connect, errno: ECONNREFUSED}\n";
        let spec = parse_ok(yaml, FileFormat::Yaml);
        assert_eq!(spec.duration_ms, 120_000, "2m should be 120000 ms");
        assert!(!spec.dry_run, "dry_run should default to false");
        let Some(pb::fault_spec::Kind::SyscallError(fault)) = &spec.faults[0].kind else {
            panic!("expected a syscall_error fault, got {:?}", spec.faults[0]);
        };
        assert!(
            (fault.probability - 1.0).abs() < f64::EPSILON,
            "probability should default to 1.0, got {}",
            fault.probability
        );
        assert_eq!(
            (fault.port, fault.cidr.as_str()),
            (0, ""),
            "port and cidr should default to any"
        );
    }

    #[test]
    fn numeric_signal_is_accepted() {
        let yaml = "duration: 1s\ntarget: {pids: [1]}\nfaults:\n  - syscall_signal: {syscall: openat, signal: 9}\n";
        let spec = parse_ok(yaml, FileFormat::Yaml);
        let Some(pb::fault_spec::Kind::SyscallSignal(fault)) = &spec.faults[0].kind else {
            panic!("expected a syscall_signal fault, got {:?}", spec.faults[0]);
        };
        assert_eq!(fault.signal, "9");
    }

    #[test]
    fn unknown_fields_are_rejected_by_name() {
        let cases = [
            (YAML.replace("dry_run: false", "dry_rnu: false"), FileFormat::Yaml, "dry_rnu", ""),
            (
                YAML.replace("comm: curl", "command: curl"),
                FileFormat::Yaml,
                "command",
                "target",
            ),
            (
                YAML.replace("port: 8080", "prot: 8080"),
                FileFormat::Yaml,
                "prot",
                "faults[0].syscall_error",
            ),
            (
                r#"{"duration": "1s", "target": {"pids": [1]},
                    "faults": [{"syscall_signal": {"syscall": "openat", "signal": "KILL", "nth": 3}}]}"#
                    .to_owned(),
                FileFormat::Json,
                "nth",
                "faults[0].syscall_signal",
            ),
        ];
        for (text, format, field, path) in cases {
            let err = parse_err(&text, format);
            assert!(
                err.contains(&format!("unknown field `{field}`")),
                "expected the {format} error to name the unknown field `{field}`, got: {err}"
            );
            assert!(
                err.contains(path),
                "expected the {format} error to give the path {path:?}, got: {err}"
            );
        }
    }

    #[test]
    fn unknown_fault_kind_is_rejected_by_name() {
        let yaml = "duration: 1s\ntarget: {pids: [1]}\nfaults:\n  - disk_full: {}\n";
        let err = parse_err(yaml, FileFormat::Yaml);
        assert!(
            err.contains("disk_full"),
            "expected the error to name `disk_full`, got: {err}"
        );
    }

    #[test]
    fn a_fault_has_exactly_one_kind() {
        let none = "duration: 1s\ntarget: {pids: [1]}\nfaults:\n  - {}\n";
        let err = parse_err(none, FileFormat::Yaml);
        assert!(
            err.contains("needs its kind"),
            "expected a missing-kind error, got: {err}"
        );
        let both = r#"{"duration": "1s", "target": {"pids": [1]}, "faults": [
            {"syscall_error": {"syscall": "connect", "errno": "EPERM"},
             "syscall_signal": {"syscall": "openat", "signal": "KILL"}}]}"#;
        let err = parse_err(both, FileFormat::Json);
        assert!(
            err.contains("exactly one kind"),
            "expected a two-kinds error, got: {err}"
        );
    }

    const NETWORK_YAML: &str = r#"
name: partition-db
duration: 1m
target:
  interface: eth0
faults:
  - packet_loss:
      probability: 0.3
      burst_length: 4
      direction: both
      match:
        protocol: tcp
        src_cidr: 10.0.0.0/8
        dst_cidr: 10.1.0.0/16
        src_ports: 8000-8100
        dst_ports: 5432
        include_ssh: true
  - blackhole: {direction: ingress, match: {protocol: udp, dst_ports: "53"}}
  - blackhole: {}
"#;

    fn network_faults(spec: &pb::ExperimentSpec) -> Vec<pb::fault_spec::Kind> {
        spec.faults.iter().filter_map(|f| f.kind.clone()).collect()
    }

    /// A document whose only fault is `fault`, on interface `lo`.
    fn one_fault(fault: &str, format: FileFormat) -> String {
        match format {
            FileFormat::Yaml => {
                format!("duration: 1s\ntarget: {{interface: lo}}\nfaults:\n  - {fault}\n")
            }
            FileFormat::Json => format!(
                r#"{{"duration": "1s", "target": {{"interface": "lo"}}, "faults": [{{{fault}}}]}}"#
            ),
        }
    }

    #[test]
    fn yaml_network_faults_convert_to_proto() {
        use pb::Direction::{Both, Egress, Ingress};
        let spec = parse_ok(NETWORK_YAML, FileFormat::Yaml);
        assert_eq!(
            spec.target,
            Some(pb::Target {
                interface: "eth0".into(),
                ..Default::default()
            }),
            "target.interface goes on the wire"
        );
        let expected = vec![
            packet_loss(0.3, 4.0, Both, full_match()),
            blackhole(Ingress, to_ports("udp", "53")),
            // Everything defaults: egress, any packet, SSH spared.
            blackhole(Egress, any_packet()),
        ];
        assert_eq!(network_faults(&spec), expected);
    }

    #[test]
    fn json_network_faults_convert_to_proto() {
        let json = r#"{
          "duration": "30s",
          "target": {"cgroup": "/sys/fs/cgroup/app"},
          "faults": [
            {"packet_loss": {"probability": 0.1, "match": {"protocol": "icmp"}}},
            {"blackhole": {"direction": "egress", "match": {"dst_cidr": "fd00::/8", "dst_ports": 443}}}
          ]
        }"#;
        let spec = parse_ok(json, FileFormat::Json);
        let fd00_https = pb::PacketMatch {
            dst_cidr: "fd00::/8".into(),
            dst_ports: "443".into(),
            ..Default::default()
        };
        let expected = vec![
            packet_loss(0.1, 0.0, pb::Direction::Egress, to_ports("icmp", "")),
            blackhole(pb::Direction::Egress, Some(fd00_https)),
        ];
        assert_eq!(network_faults(&spec), expected);
        assert_eq!(
            spec.target.map(|t| (t.cgroup, t.interface)),
            Some(("/sys/fs/cgroup/app".to_owned(), String::new()))
        );
    }

    #[test]
    fn direction_strings_map_to_the_wire_enum() {
        for (direction, expected) in [
            ("direction: ingress", pb::Direction::Ingress),
            ("direction: egress", pb::Direction::Egress),
            ("direction: both", pb::Direction::Both),
            ("", pb::Direction::Egress),
        ] {
            let yaml = one_fault(&format!("blackhole: {{{direction}}}"), FileFormat::Yaml);
            let spec = parse_ok(&yaml, FileFormat::Yaml);
            match network_faults(&spec).as_slice() {
                [pb::fault_spec::Kind::Blackhole(fault)] => assert_eq!(
                    fault.direction(),
                    expected,
                    "{direction:?} should be {expected:?}"
                ),
                other => panic!("expected one blackhole fault, got {other:?}"),
            }
        }
    }

    #[test]
    fn bad_direction_is_rejected_naming_the_field() {
        let cases = [
            (
                NETWORK_YAML.replace("direction: both", "direction: sideways"),
                FileFormat::Yaml,
                "sideways",
                "faults[0].packet_loss.direction",
            ),
            (
                NETWORK_YAML.replace("direction: ingress", "direction: Ingress"),
                FileFormat::Yaml,
                "Ingress",
                "faults[1].blackhole.direction",
            ),
            (
                r#"{"duration": "1s", "target": {"interface": "lo"},
                    "faults": [{"blackhole": {"direction": "up"}}]}"#
                    .to_owned(),
                FileFormat::Json,
                "up",
                "faults[0].blackhole.direction",
            ),
        ];
        for (text, format, value, path) in cases {
            let err = parse_err(&text, format);
            assert!(
                err.contains(path) && err.contains(&format!("`{value}`")),
                "expected the {format} error to name {path} and {value:?}, got: {err}"
            );
            assert!(
                err.contains("`ingress`, `egress`, `both`"),
                "expected the {format} error to list the directions, got: {err}"
            );
        }
    }

    #[test]
    fn bad_packet_match_fields_are_rejected_naming_the_field() {
        let cases = [
            (
                NETWORK_YAML.replace("protocol: tcp", "protocol: sctp"),
                "faults[0].packet_loss.match.protocol",
                "sctp",
            ),
            (
                NETWORK_YAML.replace("dst_ports: 5432", "dst_ports: 70000"),
                "faults[0].packet_loss.match.dst_ports",
                "70000",
            ),
            (
                NETWORK_YAML.replace("src_ports: 8000-8100", "src_ports: 8100-8000"),
                "faults[0].packet_loss.match.src_ports",
                "empty",
            ),
            (
                NETWORK_YAML.replace("include_ssh: true", "ssh: true"),
                "faults[0].packet_loss.match",
                "unknown field `ssh`",
            ),
            (
                NETWORK_YAML.replace("burst_length: 4", "burst: 4"),
                "faults[0].packet_loss",
                "unknown field `burst`",
            ),
            (
                NETWORK_YAML.replace("interface: eth0", "iface: eth0"),
                "target",
                "unknown field `iface`",
            ),
        ];
        for (text, path, detail) in cases {
            let err = parse_err(&text, FileFormat::Yaml);
            assert!(
                err.contains(path) && err.contains(detail),
                "expected the error to name {path} and {detail:?}, got: {err}"
            );
        }
    }

    /// `full_match()` in YAML.
    const FULL_MATCH: &str = "{protocol: tcp, src_cidr: 10.0.0.0/8, dst_cidr: 10.1.0.0/16, \
                              src_ports: 8000-8100, dst_ports: 5432, include_ssh: true}";

    /// Each network kind with the fields it needs, written so that YAML and
    /// JSON both read them.
    const NETWORK_KINDS: [(&str, &str); 5] = [
        ("packet_loss", r#""probability": 0.5, "#),
        ("blackhole", ""),
        ("duplicate", r#""probability": 0.5, "#),
        ("corrupt", r#""probability": 0.5, "#),
        ("bandwidth", r#""rate_bits_per_sec": 1000000, "#),
    ];

    #[test]
    fn network_kinds_convert_to_proto() {
        use FileFormat::{Json, Yaml};
        use pb::Direction::{Both, Egress, Ingress};
        // A port may be a number.
        let udp_53 = r#""match": {"protocol": "udp", "dst_ports": 53}"#;
        let cases = [
            // Every field.
            (
                Yaml,
                format!(
                    "packet_loss: {{probability: 0.3, burst_length: 4, direction: both, \
                     match: {FULL_MATCH}}}"
                ),
                packet_loss(0.3, 4.0, Both, full_match()),
            ),
            (
                Yaml,
                format!("blackhole: {{direction: both, match: {FULL_MATCH}}}"),
                blackhole(Both, full_match()),
            ),
            (
                Yaml,
                format!("duplicate: {{probability: 0.05, direction: both, match: {FULL_MATCH}}}"),
                duplicate(0.05, Both, full_match()),
            ),
            (
                Yaml,
                format!(
                    "corrupt: {{probability: 0.01, recompute_checksums: true, direction: both, \
                     match: {FULL_MATCH}}}"
                ),
                corrupt(0.01, true, Both, full_match()),
            ),
            (
                Yaml,
                format!(
                    "bandwidth: {{rate_bits_per_sec: 10000000, burst_bytes: 65536, \
                     direction: both, match: {FULL_MATCH}}}"
                ),
                bandwidth(10_000_000, 65_536, Both, full_match()),
            ),
            // Everything but the probability defaults: no bursts, checksums
            // left wrong, egress, any packet.
            (
                Yaml,
                "packet_loss: {probability: 1}".into(),
                packet_loss(1.0, 0.0, Egress, any_packet()),
            ),
            (
                Yaml,
                "blackhole: {}".into(),
                blackhole(Egress, any_packet()),
            ),
            (
                Yaml,
                "duplicate: {probability: 1}".into(),
                duplicate(1.0, Egress, any_packet()),
            ),
            (
                Yaml,
                "corrupt: {probability: 1}".into(),
                corrupt(1.0, false, Egress, any_packet()),
            ),
            // The agent picks the burst.
            (
                Yaml,
                "bandwidth: {rate_bits_per_sec: 8000}".into(),
                bandwidth(8_000, 0, Egress, any_packet()),
            ),
            // The friendlier spelling of the rate, as text or a number.
            (
                Yaml,
                "bandwidth: {rate: 2.5gbit, burst_bytes: 1514}".into(),
                bandwidth(2_500_000_000, 1_514, Egress, any_packet()),
            ),
            (
                Yaml,
                "bandwidth: {rate: 64000}".into(),
                bandwidth(64_000, 0, Egress, any_packet()),
            ),
            (
                Json,
                format!(
                    r#""packet_loss": {{"probability": 0.5, "direction": "ingress", {udp_53}}}"#
                ),
                packet_loss(0.5, 0.0, Ingress, to_ports("udp", "53")),
            ),
            (
                Json,
                format!(r#""blackhole": {{"direction": "ingress", {udp_53}}}"#),
                blackhole(Ingress, to_ports("udp", "53")),
            ),
            (
                Json,
                format!(r#""duplicate": {{"probability": 0.5, "direction": "ingress", {udp_53}}}"#),
                duplicate(0.5, Ingress, to_ports("udp", "53")),
            ),
            (
                Json,
                format!(
                    r#""corrupt": {{"probability": 0.5, "recompute_checksums": false,
                                   "direction": "ingress", {udp_53}}}"#
                ),
                corrupt(0.5, false, Ingress, to_ports("udp", "53")),
            ),
            (
                Json,
                format!(
                    r#""bandwidth": {{"rate_bits_per_sec": 10000000, "burst_bytes": 65536,
                                     "direction": "ingress", {udp_53}}}"#
                ),
                bandwidth(10_000_000, 65_536, Ingress, to_ports("udp", "53")),
            ),
            (
                Json,
                format!(r#""bandwidth": {{"rate": "10mbit", "direction": "ingress", {udp_53}}}"#),
                bandwidth(10_000_000, 0, Ingress, to_ports("udp", "53")),
            ),
        ];
        for (format, fault, expected) in cases {
            let spec = parse_ok(&one_fault(&fault, format), format);
            assert_eq!(network_faults(&spec), [expected], "{format} {fault}");
            assert_eq!(
                spec.target.map(|t| t.interface).as_deref(),
                Some("lo"),
                "target.interface goes on the wire"
            );
        }
    }

    #[test]
    fn bad_network_fields_are_rejected_naming_the_field() {
        let rejected = |format, fault: &str, path: &str, detail: &str| {
            let err = parse_err(&one_fault(fault, format), format);
            assert!(
                err.contains(path) && err.contains(detail),
                "expected the {format} error for {fault:?} to name {path} and {detail:?}: {err}"
            );
        };
        for (kind, needed) in NETWORK_KINDS {
            let at = format!("faults[0].{kind}");
            rejected(
                FileFormat::Yaml,
                &format!("{kind}: {{{needed}direction: sideways}}"),
                &format!("{at}.direction"),
                "`sideways`",
            );
            rejected(
                FileFormat::Yaml,
                &format!("{kind}: {{{needed}match: {{dst_ports: 70000}}}}"),
                &format!("{at}.match.dst_ports"),
                "70000",
            );
            rejected(
                FileFormat::Json,
                &format!(r#""{kind}": {{{needed}"match": {{"protocol": "sctp"}}}}"#),
                &format!("{at}.match.protocol"),
                "sctp",
            );
            if kind != "packet_loss" {
                rejected(
                    FileFormat::Yaml,
                    &format!("{kind}: {{{needed}burst_length: 2}}"),
                    &at,
                    "unknown field `burst_length`",
                );
            }
            if let Some(field) = needed.split('"').nth(1) {
                rejected(
                    FileFormat::Yaml,
                    &format!("{kind}: {{direction: both}}"),
                    &at,
                    &format!("missing field `{field}`"),
                );
            }
        }
        rejected(
            FileFormat::Yaml,
            "corrupt: {probability: 0.5, recompute_checksums: maybe}",
            "faults[0].corrupt.recompute_checksums",
            "maybe",
        );
    }

    #[test]
    fn bad_bandwidth_fields_are_rejected_naming_the_field() {
        use FileFormat::{Json, Yaml};
        for (format, fault, path, detail) in [
            (
                Yaml,
                "bandwidth: {rate: 10mb}",
                "faults[0].bandwidth.rate",
                "unknown unit \"mb\"",
            ),
            (
                Json,
                r#""bandwidth": {"rate": "0"}"#,
                "faults[0].bandwidth.rate",
                "more than 0",
            ),
            (
                Yaml,
                "bandwidth: {rate: 10mbit, rate_bits_per_sec: 10000000}",
                "faults[0].bandwidth",
                "duplicate field `rate_bits_per_sec`",
            ),
            (
                Json,
                r#""bandwidth": {"direction": "both"}"#,
                "faults[0].bandwidth",
                "missing field `rate_bits_per_sec`",
            ),
            (
                Yaml,
                "bandwidth: {rate_bits_per_sec: 1.5}",
                "faults[0].bandwidth.rate_bits_per_sec",
                "expected a rate such as \"10mbit\"",
            ),
            (
                Yaml,
                "bandwidth: {rate: 10mbit, burst_bytes: 64k}",
                "faults[0].bandwidth.burst_bytes",
                "invalid type",
            ),
            (
                Yaml,
                "bandwidth: {rate: 10mbit, burst_bytes: 4294967296}",
                "faults[0].bandwidth.burst_bytes",
                "4294967296",
            ),
            (
                Yaml,
                "bandwidth: {rate: 10mbit, burst: 64k}",
                "faults[0].bandwidth",
                "unknown field `burst`",
            ),
        ] {
            let err = parse_err(&one_fault(fault, format), format);
            assert!(
                err.contains(path) && err.contains(detail),
                "expected the {format} error for {fault:?} to name {path} and {detail:?}: {err}"
            );
        }
    }

    #[test]
    fn rates_parse_to_bits_per_second() {
        for (text, bits) in [
            ("1", 1),
            ("64000", 64_000),
            (" 64000bit ", 64_000),
            ("8000bps", 8_000),
            ("500kbit", 500_000),
            ("500kbps", 500_000),
            ("10mbit", 10_000_000),
            ("10 mbit", 10_000_000),
            ("10Mbit", 10_000_000),
            ("10MBPS", 10_000_000),
            ("1.5mbit", 1_500_000),
            ("2.5gbit", 2_500_000_000),
            ("0.001kbit", 1),
            ("80gbps", 80_000_000_000),
            (".5kbit", 500),
            ("7.kbit", 7_000),
            (
                "1.000000000000000000000000000000000000000000gbit",
                1_000_000_000,
            ),
            ("18446744073709551615", u64::MAX),
        ] {
            assert_eq!(parse_rate(text), Ok(bits), "{text:?}");
        }
    }

    #[test]
    fn bad_rates_are_rejected_with_the_reason() {
        for (text, reason) in [
            ("", "not a number"),
            ("mbit", "not a number"),
            ("fast", "not a number"),
            ("-1mbit", "not a number"),
            (".mbit", "not a number"),
            ("1.2.3mbit", "not a number"),
            ("0", "must be more than 0"),
            ("0.0mbit", "must be more than 0"),
            ("10mb", "unknown unit \"mb\""),
            ("10MB/s", "unknown unit \"MB/s\""),
            ("10 mbit/s", "unknown unit \"mbit/s\""),
            ("1e6", "unknown unit \"e6\""),
            ("1.5", "not a whole number of bit/s"),
            ("0.0001kbit", "not a whole number of bit/s"),
            ("1.0000000001gbit", "not a whole number of bit/s"),
            ("18446744073709551616", "too large"),
            ("18446744073.709551616gbit", "too large"),
            ("99999999999999999999999999999999999999999gbit", "too large"),
        ] {
            match parse_rate(text) {
                Ok(bits) => panic!("expected {text:?} to be rejected, got {bits}"),
                Err(err) => assert!(
                    err.starts_with(&format!("invalid rate {text:?}: {reason}"))
                        && err.contains("10mbit"),
                    "expected {reason:?} and an example in the error for {text:?}, got: {err}"
                ),
            }
        }
    }

    #[test]
    fn bursts_parse_to_bytes() {
        for (text, bytes) in [
            ("0", 0),
            ("1514", 1_514),
            ("64k", 65_536),
            ("64K", 65_536),
            (" 64 k ", 65_536),
            ("1m", 1_048_576),
            ("1.5m", 1_572_864),
            ("0.5k", 512),
            ("4294967295", u32::MAX),
        ] {
            assert_eq!(parse_burst(text), Ok(bytes), "{text:?}");
        }
        for (text, reason) in [
            ("", "not a number"),
            ("k", "not a number"),
            ("-1", "not a number"),
            ("64kb", "unknown unit \"kb\""),
            ("64kib", "unknown unit \"kib\""),
            ("1g", "unknown unit \"g\""),
            ("0.3k", "not a whole number of bytes"),
            ("4294967296", "more than 4294967295 bytes"),
            ("4194304k", "more than 4294967295 bytes"),
        ] {
            match parse_burst(text) {
                Ok(bytes) => panic!("expected {text:?} to be rejected, got {bytes}"),
                Err(err) => assert!(
                    err.starts_with(&format!("invalid burst {text:?}: {reason}"))
                        && err.contains("64k"),
                    "expected {reason:?} and an example in the error for {text:?}, got: {err}"
                ),
            }
        }
    }

    #[test]
    fn ports_parse_to_their_wire_form() {
        for (text, expected) in [
            ("", ""),
            ("80", "80"),
            (" 8000-8100 ", "8000-8100"),
            ("8000 - 8100", "8000-8100"),
            ("0-65535", "0-65535"),
            ("22-22", "22-22"),
        ] {
            assert_eq!(parse_ports(text).as_deref(), Ok(expected), "{text:?}");
        }
        for text in ["http", "65536", "-80", "80-", "90-80", "1-2-3"] {
            if let Ok(ports) = parse_ports(text) {
                panic!("expected {text:?} to be rejected, got {ports:?}");
            }
        }
    }

    #[test]
    fn missing_duration_is_reported() {
        let yaml = "target: {pids: [1]}\nfaults: []\n";
        let err = parse_err(yaml, FileFormat::Yaml);
        assert!(
            err.contains("duration"),
            "expected the error to name `duration`, got: {err}"
        );
    }

    #[test]
    fn bad_duration_names_the_field() {
        let yaml = "duration: 30\ntarget: {pids: [1]}\nfaults: []\n";
        let err = parse_err(yaml, FileFormat::Yaml);
        assert!(
            err.contains("duration"),
            "expected the error to name `duration`, got: {err}"
        );
        let json = r#"{"duration": "soon", "target": {"pids": [1]}, "faults": []}"#;
        let err = parse_err(json, FileFormat::Json);
        assert!(
            err.starts_with("duration: invalid duration \"soon\""),
            "expected the error to start with the field and the bad value, got: {err}"
        );
    }

    #[test]
    fn empty_file_is_reported() {
        assert_eq!(parse_err("  \n", FileFormat::Yaml), "the file is empty");
    }

    #[test]
    fn durations_parse() {
        for (text, ms) in [
            ("30s", 30_000),
            ("2m", 120_000),
            ("1500ms", 1_500),
            ("1h 30m", 5_400_000),
        ] {
            match parse_duration(text) {
                Ok(duration) => assert_eq!(duration_ms(duration), ms, "{text:?} in milliseconds"),
                Err(err) => panic!("expected {text:?} to parse, got error: {err}"),
            }
        }
    }

    #[test]
    fn bad_durations_are_rejected() {
        for text in ["30", "soon", "", "0s", "500us", "-1s"] {
            if let Ok(duration) = parse_duration(text) {
                panic!("expected {text:?} to be rejected, got {duration:?}");
            }
        }
    }

    #[test]
    fn format_is_detected_by_extension_then_content() {
        let cases = [
            ("x.json", "name: a", FileFormat::Json),
            ("x.YML", "{}", FileFormat::Yaml),
            ("x.yaml", "{}", FileFormat::Yaml),
            ("-", "  {\"a\": 1}", FileFormat::Json),
            ("spec", "name: a", FileFormat::Yaml),
        ];
        for (path, text, expected) in cases {
            assert_eq!(
                FileFormat::detect(Path::new(path), text),
                expected,
                "format of {path} with {text:?}"
            );
        }
    }
}
