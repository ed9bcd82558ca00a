//! Validated domain types. Everything here has passed validation; the kernel
//! structs are built from these only.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use crate::{
    cgroup::Cgroup,
    names::{ErrnoName, SignalName, SyscallName},
};

/// Why a request was refused, with the field at fault. Maps to a gRPC code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SpecError {
    pub field: String,
    pub reason: String,
    pub kind: SpecErrorKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecErrorKind {
    /// Malformed or out-of-range input.
    Invalid,
    /// A well-formed request for something that may never be faulted.
    Protected,
    /// Valid, but this kernel cannot do it.
    Unsupported,
}

impl SpecError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
            kind: SpecErrorKind::Invalid,
        }
    }
    pub fn protected(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
            kind: SpecErrorKind::Protected,
        }
    }
    pub fn unsupported(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
            kind: SpecErrorKind::Unsupported,
        }
    }
}

/// A probability in [0, 1].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Probability(f64);

impl Probability {
    pub fn new(p: f64) -> Result<Self, String> {
        if p.is_finite() && (0.0..=1.0).contains(&p) {
            Ok(Self(p))
        } else {
            Err(format!("must be within [0, 1], got {p}"))
        }
    }

    pub fn value(self) -> f64 {
        self.0
    }

    /// Threshold for `bpf_get_prandom_u32() < threshold`; 1.0 maps to 2^32 (always).
    pub fn threshold(self) -> u64 {
        (self.0 * 4_294_967_296.0).round() as u64
    }
}

/// An IP network in CIDR form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("prefix length in {s:?} must be 0..={max}"))?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Socket calls `syscall_error` can fail on this kernel (cgroup sock_addr hooks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SockCall {
    Connect,
    Bind,
    Sendmsg,
}

impl SockCall {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "connect" => Some(Self::Connect),
            "bind" => Some(Self::Bind),
            "sendmsg" | "sendto" => Some(Self::Sendmsg),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Bind => "bind",
            Self::Sendmsg => "sendmsg",
        }
    }
}

/// The call a `syscall_error` fault fails, and the mechanism behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCall {
    /// connect/bind/sendmsg: cgroup sock_addr hooks (any kernel with cgroup BPF).
    Sock(SockCall),
    /// Everything else: a BPF LSM hook (`faults::lsm_error::HOOKS[hook]`),
    /// asked for by this syscall name.
    Lsm { syscall: &'static str, hook: usize },
}

impl ErrorCall {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sock(c) => c.name(),
            Self::Lsm { syscall, .. } => syscall,
        }
    }
}

/// A file or directory an LSM fault is limited to (with everything below
/// it), resolved when the experiment starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathMatch {
    pub path: String,
    pub ino: u64,
    /// The device as the kernel's `super_block::s_dev` encodes it.
    pub kernel_dev: u32,
}

impl PathMatch {
    pub fn resolve(path: &str) -> Result<Self, String> {
        use std::os::unix::fs::MetadataExt as _;
        if !path.starts_with('/') {
            return Err(format!("{path:?} is not an absolute path"));
        }
        let meta = std::fs::metadata(path).map_err(|e| format!("{path}: {e}"))?;
        let dev = meta.dev();
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        Ok(Self {
            path: path.to_owned(),
            ino: meta.ino(),
            kernel_dev: (major << 20) | minor,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SyscallErrorSpec {
    pub call: ErrorCall,
    pub errno: ErrnoName,
    pub probability: Probability,
    /// 0 = any port.
    pub port: u16,
    /// None = any address of either family.
    pub cidr: Option<Cidr>,
    /// LSM file calls only: the subtree the fault applies to.
    pub path: Option<PathMatch>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SyscallSignalSpec {
    pub syscall: SyscallName,
    pub signal: SignalName,
    pub probability: Probability,
    /// Signal at exactly this matching call per process; 0 = use probability.
    pub nth_call: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Ingress,
    Egress,
    Both,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
            Self::Both => "both",
        }
    }
}

/// An inclusive port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub const ANY: Self = Self {
        lo: 0,
        hi: u16::MAX,
    };

    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(Self::ANY);
        }
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| format!("{p:?} is not a port (0..=65535)"))
        };
        let (lo, hi) = match s.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(s)?, port(s)?),
        };
        if lo > hi {
            return Err(format!("range {s:?} is empty"));
        }
        Ok(Self { lo, hi })
    }

    pub fn is_any(self) -> bool {
        self == Self::ANY
    }
}

/// Which packets a network fault applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketMatch {
    /// IP protocol number; None = any.
    pub proto: Option<u8>,
    pub src: Option<Cidr>,
    pub dst: Option<Cidr>,
    pub sports: PortRange,
    pub dports: PortRange,
    pub include_ssh: bool,
}

impl PacketMatch {
    fn summary(&self) -> String {
        let mut out = String::new();
        if let Some(p) = self.proto {
            out.push_str(match p {
                6 => " tcp",
                17 => " udp",
                _ => " icmp",
            });
        }
        if let Some(c) = self.src {
            out.push_str(&format!(" src={c}"));
        }
        if let Some(c) = self.dst {
            out.push_str(&format!(" dst={c}"));
        }
        for (name, r) in [("sport", self.sports), ("dport", self.dports)] {
            if !r.is_any() {
                out.push_str(&format!(" {name}={}-{}", r.lo, r.hi));
            }
        }
        out
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct PacketLossSpec {
    pub probability: Probability,
    /// Mean burst length in packets; 1.0 = independent losses.
    pub burst_length: f64,
    pub direction: Direction,
    pub matching: PacketMatch,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BlackholeSpec {
    pub direction: Direction,
    pub matching: PacketMatch,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DuplicateSpec {
    pub probability: Probability,
    pub direction: Direction,
    pub matching: PacketMatch,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CorruptSpec {
    pub probability: Probability,
    pub recompute_checksums: bool,
    pub direction: Direction,
    pub matching: PacketMatch,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BandwidthSpec {
    pub rate_bytes_per_sec: u64,
    pub burst_bytes: u32,
    pub direction: Direction,
    pub matching: PacketMatch,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LatencySpec {
    pub delay: Duration,
    pub jitter: Duration,
    pub matching: PacketMatch,
}

/// How a matching DNS query fails: dropped, or answered with this RCODE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsFailure {
    Drop,
    ServFail,
    NxDomain,
}

impl DnsFailure {
    pub fn name(self) -> &'static str {
        match self {
            Self::Drop => "drop",
            Self::ServFail => "servfail",
            Self::NxDomain => "nxdomain",
        }
    }

    /// The RCODE written into the answer; 0 = drop.
    pub fn rcode(self) -> u32 {
        match self {
            Self::Drop => 0,
            Self::ServFail => 2,
            Self::NxDomain => 3,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct DnsErrorSpec {
    /// Lowercase, without a trailing dot; empty = every name.
    pub domain: String,
    pub failure: DnsFailure,
    pub probability: Probability,
    pub resolver: Option<Cidr>,
}

impl DnsErrorSpec {
    /// The domain in DNS wire format (length-prefixed labels, no final zero).
    pub fn wire(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for label in self.domain.split('.').filter(|l| !l.is_empty()) {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out
    }

    /// Validates and normalises a domain: labels of 1..=63 bytes of
    /// letters, digits, '-' and '_', at most `MAX_LABELS` of them.
    pub fn parse_domain(text: &str) -> Result<String, String> {
        let d = text.trim().trim_end_matches('.').to_ascii_lowercase();
        if d.is_empty() {
            return Ok(d);
        }
        let labels: Vec<&str> = d.split('.').collect();
        if labels.len() > faultline_common::dns::MAX_LABELS {
            return Err(format!(
                "{text:?} has {} labels; at most {} are supported",
                labels.len(),
                faultline_common::dns::MAX_LABELS
            ));
        }
        for l in &labels {
            if l.is_empty() || l.len() > 63 {
                return Err(format!(
                    "{text:?} has an empty label or one longer than 63 bytes"
                ));
            }
            if !l
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(format!(
                    "{text:?}: labels may hold letters, digits, '-' and '_' only"
                ));
            }
        }
        Ok(d)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum FaultSpec {
    SyscallError(SyscallErrorSpec),
    SyscallSignal(SyscallSignalSpec),
    PacketLoss(PacketLossSpec),
    Blackhole(BlackholeSpec),
    Duplicate(DuplicateSpec),
    Corrupt(CorruptSpec),
    Bandwidth(BandwidthSpec),
    Latency(LatencySpec),
    DnsError(DnsErrorSpec),
}

impl FaultSpec {
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::SyscallError(_) => "syscall_error",
            Self::SyscallSignal(_) => "syscall_signal",
            Self::PacketLoss(_) => "packet_loss",
            Self::Blackhole(_) => "blackhole",
            Self::Duplicate(_) => "duplicate",
            Self::Corrupt(_) => "corrupt",
            Self::Bandwidth(_) => "bandwidth",
            Self::Latency(_) => "latency",
            Self::DnsError(_) => "dns_error",
        }
    }

    pub fn is_network(&self) -> bool {
        matches!(
            self,
            Self::PacketLoss(_)
                | Self::Blackhole(_)
                | Self::Duplicate(_)
                | Self::Corrupt(_)
                | Self::Bandwidth(_)
                | Self::Latency(_)
                | Self::DnsError(_)
        )
    }

    pub fn summary(&self) -> String {
        match self {
            Self::SyscallError(s) => {
                let mut out = format!(
                    "{} -> {} p={}",
                    s.call.name(),
                    s.errno.name(),
                    s.probability.value()
                );
                if s.port != 0 {
                    out.push_str(&format!(" port={}", s.port));
                }
                if let Some(c) = s.cidr {
                    out.push_str(&format!(" cidr={c}"));
                }
                if let Some(p) = &s.path {
                    out.push_str(&format!(" path={}", p.path));
                }
                out
            }
            Self::SyscallSignal(s) => {
                let when = if s.nth_call != 0 {
                    format!("call #{}", s.nth_call)
                } else {
                    format!("p={}", s.probability.value())
                };
                format!("{} -> {} {when}", s.syscall.name(), s.signal.name())
            }
            Self::PacketLoss(l) => {
                let burst = if l.burst_length > 1.0 {
                    format!(" burst={}", l.burst_length)
                } else {
                    String::new()
                };
                format!(
                    "{} loss p={}{burst}{}",
                    l.direction.name(),
                    l.probability.value(),
                    l.matching.summary()
                )
            }
            Self::Blackhole(b) => {
                format!("{} blackhole{}", b.direction.name(), b.matching.summary())
            }
            Self::DnsError(d) => format!(
                "dns {} -> {} p={}{}",
                if d.domain.is_empty() { "*" } else { &d.domain },
                d.failure.name(),
                d.probability.value(),
                d.resolver
                    .map(|c| format!(" resolver={c}"))
                    .unwrap_or_default()
            ),
            Self::Latency(l) => format!(
                "egress delay={:?} jitter={:?}{}",
                l.delay,
                l.jitter,
                l.matching.summary()
            ),
            Self::Bandwidth(b) => format!(
                "{} rate={} bit/s burst={} B{}",
                b.direction.name(),
                b.rate_bytes_per_sec * 8,
                b.burst_bytes,
                b.matching.summary()
            ),
            Self::Corrupt(c) => format!(
                "{} corrupt p={}{}{}",
                c.direction.name(),
                c.probability.value(),
                if c.recompute_checksums {
                    " checksums=recomputed"
                } else {
                    " checksums=wrong"
                },
                c.matching.summary()
            ),
            Self::Duplicate(d) => format!(
                "{} duplicate p={}{}",
                d.direction.name(),
                d.probability.value(),
                d.matching.summary()
            ),
        }
    }
}

/// Who is faulted. A process must match every selector that is set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    pub pids: Vec<u32>,
    pub cgroup: Option<Cgroup>,
    pub comm: Option<String>,
    pub exclude_pids: Vec<u32>,
    pub exclude_comm: Option<String>,
    /// Network faults: an interface instead of a cgroup.
    pub interface: Option<Interface>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ExperimentSpec {
    pub name: String,
    pub faults: Vec<FaultSpec>,
    pub target: Target,
    pub duration: Duration,
    pub dry_run: bool,
    pub labels: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probability_bounds_and_threshold() {
        assert!(Probability::new(-0.1).is_err());
        assert!(Probability::new(1.5).is_err());
        assert!(Probability::new(f64::NAN).is_err());
        assert_eq!(Probability::new(1.0).unwrap().threshold(), 1 << 32);
        assert_eq!(Probability::new(0.0).unwrap().threshold(), 0);
        assert_eq!(Probability::new(0.5).unwrap().threshold(), 1 << 31);
    }

    #[test]
    fn cidr_forms() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert_eq!((c.addr.to_string().as_str(), c.prefix), ("10.1.0.0", 16));
        assert_eq!(Cidr::parse("::1").unwrap().prefix, 128);
        assert_eq!(Cidr::parse("127.0.0.1").unwrap().prefix, 32);
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope/8").is_err());
    }
}
