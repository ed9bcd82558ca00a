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
            0 => (rate_bytes_per_sec / 50).clamp(256 * 1024, 1 << 30) as u32,
            n if (1514..=1 << 30).contains(&n) => n,
            n => {
                return Err(SpecError::invalid(
                    format!("{field}.burst_bytes"),
                    format!("{n} must hold a full frame: 1514 ..= 1073741824 bytes"),
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
            burst_bytes: 65536,
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
