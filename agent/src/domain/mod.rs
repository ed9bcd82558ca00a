//! Validated domain types. Everything here has passed validation; the kernel
//! structs are built from these only. `wire` converts from and to the proto
//! types (the only place that does), `resolve` looks names up on the host.

mod file_identity;
mod protected;
mod resolve;
mod wire;

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

pub use protected::{ProtectedName, protecting};
pub use resolve::{HostResolver, Process, Resolver, process_start};
pub use wire::{spec_from_proto, spec_to_proto};

use crate::cgroup::Cgroup;
pub use crate::faults::FaultSpec;

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

/// A file or directory an LSM fault is limited to (with everything below
/// it), resolved when the experiment starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathMatch {
    pub path: String,
    pub ino: u64,
    /// The device as the kernel's `super_block::s_dev` encodes it (from
    /// mountinfo, not `st_dev`, which differs on btrfs subvolumes).
    pub kernel_dev: u32,
    /// The inode's `i_generation`, compared with the inode number, so a
    /// reused number is another file; `None` on file systems that never
    /// reuse inode numbers and give no generation (tmpfs, ramfs).
    pub generation: Option<u32>,
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

/// Who is faulted. A process must match every selector that is set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    pub pids: Vec<u32>,
    /// When each of `pids` started (clock ticks after boot, as
    /// /proc/PID/stat gives it; 0 = not known), so that a pid the kernel
    /// gives to a new process is never taken for the one validated.
    pub pid_starts: Vec<u64>,
    pub cgroup: Option<Cgroup>,
    /// The spec's explicit consent to a cgroup target that covers the
    /// host's own machinery (the cgroup2 root or an ancestor of the agent's
    /// cgroup); only network faults or a dry run are accepted then.
    pub allow_host_wide: bool,
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
    /// Measure the target's impact: `None` = as the kinds do by default.
    pub impact: Option<bool>,
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
