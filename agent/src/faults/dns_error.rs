//! `dns_error`: DNS queries (to port 53) for names under a domain are
//! dropped (cgroup or interface scope), or answered with SERVFAIL or
//! NXDOMAIN by turning the query into a response (TCX, UDP).

use faultline_common::{flags, kind};
use faultline_proto::v1 as pb;

use super::{
    Fault, FaultKind, Plan, net,
    net::{Direction, Needs, PacketMatch},
    probability,
};
use crate::{
    caps::Capability,
    domain::{Cidr, Probability, Resolver, SpecError, Target},
    kernel::{KernelOps, Mechanism, Probed, ScanList},
};

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
pub struct DnsError {
    /// Lowercase, without a trailing dot; empty = every name.
    pub domain: String,
    pub failure: DnsFailure,
    pub probability: Probability,
    pub resolver: Option<Cidr>,
}

impl DnsError {
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
    /// letters, digits, '-' and '_', at most `MAX_LABELS` of them, and at
    /// most `MAX_DOMAIN_WIRE` bytes in wire format (longer ones the kernel
    /// programs can never match).
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
        let wire_len = d.len() + 1;
        if wire_len > faultline_common::dns::MAX_DOMAIN_WIRE {
            return Err(format!(
                "{text:?} is {wire_len} bytes in DNS wire format; the kernel reads names of at most \
                 {} ({} characters written with dots), so it could never match",
                faultline_common::dns::MAX_DOMAIN_WIRE,
                faultline_common::dns::MAX_DOMAIN_WIRE - 1
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

impl DnsError {
    fn needs(&self) -> Needs {
        if self.failure == DnsFailure::Drop {
            Needs::Drop
        } else {
            Needs::Tcx("answer")
        }
    }
}

impl FaultKind for DnsError {
    const NAME: &'static str = faultline_proto::names::DNS_ERROR;
    type Wire = pb::DnsError;

    fn from_wire(field: &str, d: &pb::DnsError, _: &dyn Resolver) -> Result<Self, SpecError> {
        let failure = match pb::DnsFailure::try_from(d.failure) {
            Ok(pb::DnsFailure::Unspecified | pb::DnsFailure::Drop) => DnsFailure::Drop,
            Ok(pb::DnsFailure::Servfail) => DnsFailure::ServFail,
            Ok(pb::DnsFailure::Nxdomain) => DnsFailure::NxDomain,
            Err(_) => {
                return Err(SpecError::invalid(
                    format!("{field}.failure"),
                    format!("{} is not a DnsFailure", d.failure),
                ));
            }
        };
        let resolver = match d.resolver_cidr.trim() {
            "" => None,
            c => Some(
                Cidr::parse(c)
                    .map_err(|r| SpecError::invalid(format!("{field}.resolver_cidr"), r))?,
            ),
        };
        Ok(Self {
            domain: Self::parse_domain(&d.domain)
                .map_err(|r| SpecError::invalid(format!("{field}.domain"), r))?,
            failure,
            probability: probability(field, d.probability)?,
            resolver,
        })
    }

    fn capabilities(kernel: &dyn Probed) -> Vec<Capability> {
        let mut rows = vec![
            Capability::row(
                kernel,
                Self::NAME,
                Mechanism::CgroupSkb,
                &["cgroup scope", "drop", "udp", "tcp"],
            ),
            Capability::row(
                kernel,
                Self::NAME,
                Mechanism::TCX,
                &["interface scope", "drop", "servfail", "nxdomain (udp)"],
            ),
        ];
        if kernel.interface_via_cgroup_probed() {
            rows.push(Capability::row(
                kernel,
                Self::NAME,
                Mechanism::CgroupSkb,
                &[
                    "interface scope",
                    "local sockets' queries only",
                    "drop",
                    "udp",
                    "tcp",
                ],
            ));
        }
        rows
    }

    #[cfg(test)]
    fn example() -> (pb::DnsError, pb::Target) {
        let (_, target) = net::example_scope();
        let wire = pb::DnsError {
            domain: "example.com".into(),
            failure: pb::DnsFailure::Nxdomain.into(),
            probability: 1.0,
            resolver_cidr: "127.0.0.53/32".into(),
        };
        (wire, target)
    }
}

impl Fault for DnsError {
    fn summary(&self) -> String {
        format!(
            "dns {} -> {} p={}{}",
            if self.domain.is_empty() {
                "*"
            } else {
                &self.domain
            },
            self.failure.name(),
            self.probability.value(),
            self.resolver
                .map(|c| format!(" resolver={c}"))
                .unwrap_or_default()
        )
    }

    fn check_target(&self, field: &str, target: &Target) -> Result<(), SpecError> {
        net::check_scope(field, Self::NAME, Needs::Drop, target)?;
        if self.failure != DnsFailure::Drop && target.interface.is_none() {
            return Err(SpecError::invalid(
                format!("{field}.failure"),
                format!(
                    "answering with {} needs an interface scope (spec.target.interface): cgroup_skb programs \
                     cannot rewrite packets; use drop for a cgroup",
                    self.failure.name()
                ),
            ));
        }
        Ok(())
    }

    fn plan(&self, field: &str, target: &Target, k: &mut dyn KernelOps) -> Result<Plan, SpecError> {
        // A DNS answer is made on egress and redirected to ingress by the
        // egress program itself.
        let mut plan = net::plan_packets(
            field,
            self.needs(),
            ScanList::Dns,
            Direction::Egress,
            &PacketMatch::dns(self.resolver),
            target,
            k,
        )?;
        let slot = &mut plan.slot;
        slot.kind = kind::PACKET_DNS;
        slot.threshold = self.probability.threshold();
        slot.op = self.failure.rcode();
        if self.domain.is_empty() {
            slot.flags |= flags::DNS_ANY_NAME;
        } else {
            slot.net.dns_hash = faultline_common::dns::suffix_hash(&self.wire());
        }
        Ok(plan)
    }

    fn to_wire(&self) -> pb::fault_spec::Kind {
        pb::fault_spec::Kind::DnsError(pb::DnsError {
            domain: self.domain.clone(),
            failure: match self.failure {
                DnsFailure::Drop => pb::DnsFailure::Drop,
                DnsFailure::ServFail => pb::DnsFailure::Servfail,
                DnsFailure::NxDomain => pb::DnsFailure::Nxdomain,
            }
            .into(),
            probability: self.probability.value(),
            resolver_cidr: self.resolver.map(|c| c.to_string()).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::DnsError;

    #[test]
    fn a_domain_longer_than_the_kernel_reads_is_refused() {
        // 126 characters (127 wire bytes) fit; 127 do not.
        let name = |n: usize| format!("{}.{}", "x".repeat(63), "y".repeat(n - 64));
        assert_eq!(DnsError::parse_domain(&name(126)), Ok(name(126)));
        // A trailing dot is not counted.
        assert_eq!(DnsError::parse_domain(&format!("{}.", name(126))), Ok(name(126)));
        let e = DnsError::parse_domain(&name(127)).expect_err("too long");
        assert!(e.contains("128 bytes") && e.contains("at most 127"), "{e}");
        // Label length and count are checked too.
        assert!(DnsError::parse_domain(&"x".repeat(64)).is_err());
        assert!(DnsError::parse_domain("a.b.c.d.e.f.g.h.i").is_err());
    }
}
