//! `bandwidth`: a token bucket per fault. Packets over the rate are
//! dropped (policed); where fq can hold them, an interface's egress is
//! shaped instead, and TCP a cgroup target sends is paced to the rate
//! (sock_ops, or the connect hooks where sock_ops lacks its helper).

use faultline_common::{flags, kind};
use faultline_proto::v1 as pb;

use super::{
    Fault, FaultKind, Plan, net,
    net::{Direction, Needs, PacketMatch},
};
use crate::{
    caps::Capability,
    domain::{Resolver, SpecError, Target},
    kernel::{KernelOps, Mechanism, Probed, Resource, SOCK_OPS, ScanList},
};

/// The smallest bucket accepted: the largest packet a hook can see without
/// jumbograms or BIG TCP — a 65,535-byte IP packet (a 64 KiB GSO or GRO
/// segment, or loopback's largest datagram) plus its 14-byte Ethernet
/// header (TCX counts it; cgroup_skb does not). A packet longer than the
/// bucket never finds enough tokens, so a smaller burst would drop every
/// such packet whatever the rate: refused, not raised, so that the fault
/// that runs is the one requested.
pub const MIN_BURST_BYTES: u32 = 65_535 + 14;
/// The largest bucket accepted (1 GiB).
const MAX_BURST_BYTES: u32 = 1 << 30;

#[derive(Clone, Debug, PartialEq)]
pub struct Bandwidth {
    pub rate_bytes_per_sec: u64,
    pub burst_bytes: u32,
    pub direction: Direction,
    pub matching: PacketMatch,
}

impl FaultKind for Bandwidth {
    const NAME: &'static str = faultline_proto::names::BANDWIDTH;
    type Wire = pb::Bandwidth;

    fn from_wire(field: &str, b: &pb::Bandwidth, _: &dyn Resolver) -> Result<Self, SpecError> {
        if !(8_000..=80_000_000_000).contains(&b.rate_bits_per_sec) {
            return Err(SpecError::invalid(
                format!("{field}.rate_bits_per_sec"),
                format!(
                    "{} is outside 8000 ..= 80000000000 bit/s",
                    b.rate_bits_per_sec
                ),
            ));
        }
        let rate_bytes_per_sec = b.rate_bits_per_sec / 8;
        let burst_bytes = match b.burst_bytes {
            // 20 ms at the rate, and at least four 64 KiB GSO segments.
            0 => (rate_bytes_per_sec / 50).clamp(256 * 1024, u64::from(MAX_BURST_BYTES)) as u32,
            n if (MIN_BURST_BYTES..=MAX_BURST_BYTES).contains(&n) => n,
            n => {
                return Err(SpecError::invalid(
                    format!("{field}.burst_bytes"),
                    format!(
                        "{n} is outside {MIN_BURST_BYTES} ..= {MAX_BURST_BYTES} bytes: the \
                         bucket must hold the largest packet (a 64 KiB GSO segment and its \
                         headers), else every such packet is dropped"
                    ),
                ));
            }
        };
        Ok(Self {
            rate_bytes_per_sec,
            burst_bytes,
            direction: Direction::from_wire(field, b.direction)?,
            matching: PacketMatch::from_wire(field, b.r#match.as_ref())?,
        })
    }

    fn capabilities(kernel: &dyn Probed) -> Vec<Capability> {
        let mut rows = net::drop_rows(kernel, Self::NAME);
        let pacing = Capability::new(
            Self::NAME,
            SOCK_OPS,
            &["cgroup scope", "tcp pacing"],
            kernel.reason(Mechanism::CgroupSkb),
        )
        .unless(kernel.sock_ops_reason());
        let connect_pacing =
            !pacing.supported && kernel.reason(Mechanism::CgroupSockAddr).is_none();
        rows.push(pacing);
        if connect_pacing {
            // The cgroup connect hooks stand in for connections the target opens.
            rows.push(Capability::row(
                kernel,
                Self::NAME,
                Mechanism::CgroupSockAddr,
                &["cgroup scope", "tcp pacing", "connect only"],
            ));
        }
        rows
    }

    #[cfg(test)]
    fn example() -> (pb::Bandwidth, pb::Target) {
        let (m, target) = net::example_scope();
        let wire = pb::Bandwidth {
            rate_bits_per_sec: 40_000_000,
            burst_bytes: 131072,
            direction: pb::Direction::Both.into(),
            r#match: m,
        };
        (wire, target)
    }
}

impl Fault for Bandwidth {
    fn summary(&self) -> String {
        format!(
            "{} rate={} bit/s burst={} B{}",
            self.direction.name(),
            self.rate_bytes_per_sec * 8,
            self.burst_bytes,
            self.matching.summary()
        )
    }

    fn check_target(&self, field: &str, target: &Target) -> Result<(), SpecError> {
        net::check_scope(field, Self::NAME, Needs::Drop, target)
    }

    fn plan(&self, field: &str, target: &Target, k: &mut dyn KernelOps) -> Result<Plan, SpecError> {
        let mut plan = net::plan_packets(
            field,
            Needs::Drop,
            ScanList::Net,
            self.direction,
            &self.matching,
            target,
            k,
        )?;
        let slot = &mut plan.slot;
        slot.kind = kind::PACKET_RATE;
        slot.net.rate_bytes_per_sec = self.rate_bytes_per_sec;
        slot.net.burst_bytes = self.burst_bytes;
        let via_cgroup = slot.flags & flags::VIA_CGROUP_SKB != 0;
        let sends = self.direction != Direction::Ingress;
        match &target.interface {
            // Where fq can hold packets, an interface's egress is shaped
            // rather than policed (TCP then sees a slow link instead of
            // bursts of loss).
            Some(i) if sends && !via_cgroup && k.fq_reason().is_none() => {
                slot.flags |= flags::SHAPE;
                plan.resources.insert(0, Resource::Fq(i.ifindex));
            }
            // Where the kernel refuses the sock_ops program, the cgroup
            // connect hooks pace the TCP connections the target opens.
            None if sends
                && k.sock_ops_unavailable().is_some()
                && k.unavailable(Mechanism::CgroupSockAddr).is_none() =>
            {
                plan.resources
                    .push(Resource::Attach(Mechanism::CgroupSockAddr));
            }
            _ => {}
        }
        Ok(plan)
    }

    fn to_wire(&self) -> pb::fault_spec::Kind {
        pb::fault_spec::Kind::Bandwidth(pb::Bandwidth {
            rate_bits_per_sec: self.rate_bytes_per_sec * 8,
            burst_bytes: self.burst_bytes,
            direction: self.direction.to_wire(),
            r#match: self.matching.to_wire(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::HostResolver;

    fn with_burst(burst_bytes: u32) -> Result<Bandwidth, SpecError> {
        let wire = pb::Bandwidth {
            rate_bits_per_sec: 10_000_000,
            burst_bytes,
            ..Default::default()
        };
        Bandwidth::from_wire("faults[0].bandwidth", &wire, &HostResolver)
    }

    #[test]
    fn a_burst_below_the_largest_packet_is_refused_naming_the_field() {
        for n in [1, 1514, 65_536, MIN_BURST_BYTES - 1, MAX_BURST_BYTES + 1] {
            let e = with_burst(n).expect_err("refused").to_string();
            assert!(
                e.contains("faults[0].bandwidth.burst_bytes")
                    && e.contains("65549")
                    && e.contains("64 KiB GSO"),
                "{n}: {e}"
            );
        }
        for n in [MIN_BURST_BYTES, 131_072, MAX_BURST_BYTES] {
            assert_eq!(with_burst(n).expect("accepted").burst_bytes, n);
        }
        // 0: the agent picks, never below the minimum.
        assert!(with_burst(0).expect("accepted").burst_bytes >= MIN_BURST_BYTES);
    }
}
