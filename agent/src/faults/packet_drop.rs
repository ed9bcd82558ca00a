//! `packet_loss` and `blackhole`: the cgroup_skb (cgroup scope) or TCX
//! (interface scope) programs drop matching packets.

use std::net::IpAddr;

use faultline_common::{FaultSlot, direction, flags, kind};

use crate::domain::{
    BandwidthSpec, BlackholeSpec, Cidr, CorruptSpec, Direction, DnsErrorSpec, DuplicateSpec,
    LatencySpec, PacketLossSpec, PacketMatch, PortRange, Target,
};

/// 2^32: probabilities are compared against `bpf_get_prandom_u32()`.
const SCALE: f64 = 4_294_967_296.0;

fn v6_words(c: Cidr) -> [u32; 4] {
    let IpAddr::V6(a) = c.addr else { return [0; 4] };
    let o = a.octets();
    std::array::from_fn(|i| {
        u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
    })
}

fn fill_match(m: &PacketMatch, dir: Direction, target: &Target, slot: &mut FaultSlot) {
    let net = &mut slot.net;
    net.ifindex = target.interface.as_ref().map_or(0, |i| i.ifindex);
    net.direction = match dir {
        Direction::Ingress => direction::INGRESS,
        Direction::Egress => direction::EGRESS,
        Direction::Both => direction::INGRESS | direction::EGRESS,
    };
    net.proto = m.proto.map_or(0, u32::from);
    net.sport_lo = u32::from(m.sports.lo);
    net.sport_hi = u32::from(m.sports.hi);
    net.dport_lo = u32::from(m.dports.lo);
    net.dport_hi = u32::from(m.dports.hi);
    // A CIDR of one family limits the fault to that family.
    let family = [m.src, m.dst]
        .into_iter()
        .flatten()
        .next()
        .map(|c| c.addr.is_ipv4());
    slot.flags |= match family {
        Some(true) => flags::FAMILY_V4,
        Some(false) => flags::FAMILY_V6,
        None => flags::FAMILY_V4 | flags::FAMILY_V6,
    };
    if m.include_ssh {
        slot.flags |= flags::INCLUDE_SSH;
    }
    for (cidr, is_src) in [(m.src, true), (m.dst, false)] {
        let Some(c) = cidr else { continue };
        match (c.addr, is_src) {
            (IpAddr::V4(a), true) => {
                net.src_v4 = u32::from_ne_bytes(a.octets());
                net.src_v4_prefix = u32::from(c.prefix);
            }
            (IpAddr::V4(a), false) => {
                net.dst_v4 = u32::from_ne_bytes(a.octets());
                net.dst_v4_prefix = u32::from(c.prefix);
            }
            (IpAddr::V6(_), true) => {
                net.src_v6 = v6_words(c);
                net.src_v6_prefix = u32::from(c.prefix);
            }
            (IpAddr::V6(_), false) => {
                net.dst_v6 = v6_words(c);
                net.dst_v6_prefix = u32::from(c.prefix);
            }
        }
    }
}

/// Gilbert model parameters for a mean loss `p` and mean burst length `b`
/// (packets): leave the bad state with r = 1/b, enter it with p*r/(1-p), so
/// the stationary share of the bad state is p.
pub fn gilbert(p: f64, b: f64) -> (f64, f64) {
    let r = 1.0 / b;
    (p * r / (1.0 - p), r)
}

pub fn fill_loss(spec: &PacketLossSpec, target: &Target, slot: &mut FaultSlot) {
    slot.kind = kind::PACKET_DROP;
    fill_match(&spec.matching, spec.direction, target, slot);
    let p = spec.probability.value();
    if spec.burst_length > 1.0 {
        let (enter, leave) = gilbert(p, spec.burst_length);
        slot.threshold = (enter * SCALE).round() as u64;
        slot.net.leave_bad = ((leave * SCALE).round() as u64).min(u64::from(u32::MAX)) as u32;
    } else {
        slot.threshold = spec.probability.threshold();
    }
}

pub fn fill_duplicate(spec: &DuplicateSpec, target: &Target, slot: &mut FaultSlot) {
    slot.kind = kind::PACKET_DUP;
    fill_match(&spec.matching, spec.direction, target, slot);
    slot.threshold = spec.probability.threshold();
}

pub fn fill_corrupt(spec: &CorruptSpec, target: &Target, slot: &mut FaultSlot) {
    slot.kind = kind::PACKET_CORRUPT;
    slot.op = u32::from(spec.recompute_checksums);
    fill_match(&spec.matching, spec.direction, target, slot);
    slot.threshold = spec.probability.threshold();
}

pub fn fill_bandwidth(spec: &BandwidthSpec, target: &Target, slot: &mut FaultSlot) {
    slot.kind = kind::PACKET_RATE;
    fill_match(&spec.matching, spec.direction, target, slot);
    slot.net.rate_bytes_per_sec = spec.rate_bytes_per_sec;
    slot.net.burst_bytes = spec.burst_bytes;
}

pub fn fill_dns(spec: &DnsErrorSpec, target: &Target, slot: &mut FaultSlot) {
    slot.kind = kind::PACKET_DNS;
    let matching = PacketMatch {
        proto: None,
        src: None,
        dst: spec.resolver,
        sports: PortRange::ANY,
        dports: PortRange { lo: 53, hi: 53 },
        include_ssh: false,
    };
    fill_match(&matching, Direction::Egress, target, slot);
    slot.threshold = spec.probability.threshold();
    slot.op = spec.failure.rcode();
    if spec.domain.is_empty() {
        slot.flags |= flags::DNS_ANY_NAME;
    } else {
        slot.net.dns_hash = faultline_common::dns::suffix_hash(&spec.wire());
    }
}

pub fn fill_latency(spec: &LatencySpec, target: &Target, slot: &mut FaultSlot) {
    slot.kind = kind::PACKET_DELAY;
    fill_match(&spec.matching, Direction::Egress, target, slot);
    slot.threshold = 1 << 32;
    slot.net.delay_ns = spec.delay.as_nanos() as u64;
    slot.net.jitter_ns = spec.jitter.as_nanos() as u64;
}

pub fn fill_blackhole(spec: &BlackholeSpec, target: &Target, slot: &mut FaultSlot) {
    slot.kind = kind::PACKET_DROP;
    fill_match(&spec.matching, spec.direction, target, slot);
    slot.threshold = 1 << 32;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gilbert_keeps_the_mean_loss() {
        let (enter, leave) = gilbert(0.1, 4.0);
        assert!((leave - 0.25).abs() < 1e-12);
        // Stationary bad share = enter / (enter + leave).
        assert!((enter / (enter + leave) - 0.1).abs() < 1e-12);
    }
}
