//! What the packet kinds share: direction, the packet match (wire form,
//! slot form, summary), their scope rule and the attachments a scope needs
//! (cgroup_skb for a cgroup, the TCX side(s) of an interface, or cgroup_skb
//! filtered by interface where TCX is missing).

use std::net::IpAddr;

use faultline_common::{FaultSlot, direction, flags};
use faultline_proto::v1 as pb;

use crate::{
    domain::{Cidr, PortRange, SpecError, Target},
    kernel::{KernelOps, Mechanism, Resource, ScanList, TcSide},
};

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

    /// `{field}.direction`; unspecified means egress.
    pub fn from_wire(field: &str, d: i32) -> Result<Self, SpecError> {
        match pb::Direction::try_from(d) {
            Ok(pb::Direction::Unspecified | pb::Direction::Egress) => Ok(Self::Egress),
            Ok(pb::Direction::Ingress) => Ok(Self::Ingress),
            Ok(pb::Direction::Both) => Ok(Self::Both),
            Err(_) => Err(SpecError::invalid(
                format!("{field}.direction"),
                format!("unknown direction {d}"),
            )),
        }
    }

    pub fn to_wire(self) -> i32 {
        match self {
            Self::Ingress => pb::Direction::Ingress,
            Self::Egress => pb::Direction::Egress,
            Self::Both => pb::Direction::Both,
        }
        .into()
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
    /// Only DNS queries (to port 53), optionally to one resolver network.
    pub fn dns(resolver: Option<Cidr>) -> Self {
        Self {
            proto: None,
            src: None,
            dst: resolver,
            sports: PortRange::ANY,
            dports: PortRange { lo: 53, hi: 53 },
            include_ssh: false,
        }
    }

    /// `{field}.match`; absent means every packet.
    pub fn from_wire(field: &str, m: Option<&pb::PacketMatch>) -> Result<Self, SpecError> {
        let default = pb::PacketMatch::default();
        let m = m.unwrap_or(&default);
        let inv =
            |sub: &str, reason: String| SpecError::invalid(format!("{field}.match.{sub}"), reason);
        let proto = match m.protocol.trim().to_ascii_lowercase().as_str() {
            "" | "any" => None,
            "tcp" => Some(6),
            "udp" => Some(17),
            "icmp" => Some(1),
            other => {
                return Err(inv(
                    "protocol",
                    format!("{other:?}: expected tcp, udp, icmp or any"),
                ));
            }
        };
        let cidr = |sub: &str, s: &str| match s.trim() {
            "" => Ok(None),
            c => Cidr::parse(c).map(Some).map_err(|r| inv(sub, r)),
        };
        let src = cidr("src_cidr", &m.src_cidr)?;
        let dst = cidr("dst_cidr", &m.dst_cidr)?;
        if let (Some(a), Some(b)) = (src, dst)
            && a.addr.is_ipv4() != b.addr.is_ipv4()
        {
            return Err(inv(
                "dst_cidr",
                "source and destination CIDRs must be of the same family".into(),
            ));
        }
        let ports = |sub: &str, s: &str| PortRange::parse(s).map_err(|r| inv(sub, r));
        let sports = ports("src_ports", &m.src_ports)?;
        let dports = ports("dst_ports", &m.dst_ports)?;
        if (!sports.is_any() || !dports.is_any()) && proto.is_some_and(|p| p != 6 && p != 17) {
            return Err(inv("protocol", "ports apply to tcp and udp only".into()));
        }
        Ok(Self {
            proto,
            src,
            dst,
            sports,
            dports,
            include_ssh: m.include_ssh,
        })
    }

    pub fn to_wire(&self) -> Option<pb::PacketMatch> {
        let range = |r: PortRange| {
            if r.is_any() {
                String::new()
            } else if r.lo == r.hi {
                r.lo.to_string()
            } else {
                format!("{}-{}", r.lo, r.hi)
            }
        };
        Some(pb::PacketMatch {
            protocol: match self.proto {
                Some(6) => "tcp".into(),
                Some(17) => "udp".into(),
                Some(_) => "icmp".into(),
                None => String::new(),
            },
            src_cidr: self.src.map(|c| c.to_string()).unwrap_or_default(),
            dst_cidr: self.dst.map(|c| c.to_string()).unwrap_or_default(),
            src_ports: range(self.sports),
            dst_ports: range(self.dports),
            include_ssh: self.include_ssh,
        })
    }

    /// The match's part of a summary line (leading space, or empty).
    pub fn summary(&self) -> String {
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

fn v6_words(c: Cidr) -> [u32; 4] {
    let IpAddr::V6(a) = c.addr else { return [0; 4] };
    let o = a.octets();
    std::array::from_fn(|i| {
        u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
    })
}

/// Writes the match, direction and interface into a packet kind's slot.
pub fn fill_match(m: &PacketMatch, dir: Direction, target: &Target, slot: &mut FaultSlot) {
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

/// What a packet kind needs of its scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// Runs on either scope, and on cgroup_skb where TCX is missing.
    Drop,
    /// Interface scope on TCX only: the cgroup_skb programs cannot do
    /// this (the verb: "copy", "change", "delay", "answer").
    Tcx(&'static str),
}

/// The scope rule of packet kinds: a cgroup or an interface, never pids
/// or a process name; TCX-only kinds need an interface.
pub fn check_scope(
    field: &str,
    kind: &str,
    needs: Needs,
    target: &Target,
) -> Result<(), SpecError> {
    if target.cgroup.is_none() && target.interface.is_none() {
        return Err(SpecError::invalid(
            field,
            "network faults are scoped by a cgroup or an interface: set spec.target.cgroup or spec.target.interface",
        ));
    }
    if !target.pids.is_empty() || target.comm.is_some() {
        return Err(SpecError::invalid(
            field,
            "packets are matched by cgroup or interface; pids and comm do not apply to network faults",
        ));
    }
    if matches!(needs, Needs::Tcx(_)) && target.interface.is_none() {
        return Err(SpecError::invalid(
            field,
            format!(
                "{kind} needs an interface scope (spec.target.interface): cgroup_skb programs cannot change, copy or delay packets"
            ),
        ));
    }
    Ok(())
}

/// Where a packet fault runs: the resources it holds (its scan list, then
/// the programs of its scope) and whether interface scope goes through
/// cgroup_skb here. A TCX-only kind on such a kernel is refused.
pub fn placement(
    field: &str,
    needs: Needs,
    list: ScanList,
    direction: Direction,
    target: &Target,
    kernel: &mut dyn KernelOps,
) -> Result<(Vec<Resource>, bool), SpecError> {
    let mut resources = vec![Resource::Listed(list)];
    let Some(interface) = &target.interface else {
        resources.push(Resource::Attach(Mechanism::CgroupSkb));
        return Ok((resources, false));
    };
    if kernel.interface_via_cgroup() {
        if let Needs::Tcx(what) = needs {
            let why = kernel.reason(Mechanism::TCX).map_or_else(
                || "the agent is configured with interface_hooks = \"cgroup_skb\"".to_owned(),
                |r| format!("tcx is unavailable on this kernel: {r}"),
            );
            return Err(SpecError::unsupported(
                field,
                format!(
                    "interface scope runs on cgroup_skb here, which cannot {what} packets ({why})"
                ),
            ));
        }
        resources.push(Resource::Attach(Mechanism::CgroupSkb));
        return Ok((resources, true));
    }
    let sides: &[TcSide] = match direction {
        Direction::Ingress => &[TcSide::Ingress],
        Direction::Egress => &[TcSide::Egress],
        Direction::Both => &[TcSide::Ingress, TcSide::Egress],
    };
    resources.extend(
        sides
            .iter()
            .map(|&s| Resource::Attach(Mechanism::Tcx(interface.ifindex, s))),
    );
    Ok((resources, false))
}

/// A packet kind's slot and resources: kind, match, scope, listing.
pub fn plan_packets(
    field: &str,
    needs: Needs,
    list: ScanList,
    direction: Direction,
    matching: &PacketMatch,
    target: &Target,
    kernel: &mut dyn KernelOps,
) -> Result<super::Plan, SpecError> {
    let (resources, via_cgroup) = placement(field, needs, list, direction, target, kernel)?;
    let mut slot = FaultSlot::default();
    fill_match(matching, direction, target, &mut slot);
    if via_cgroup {
        slot.flags |= flags::VIA_CGROUP_SKB;
    }
    Ok(super::Plan { slot, resources })
}

/// The capability rows of a packet kind that runs on both scopes.
pub fn drop_rows(
    kernel: &dyn crate::kernel::Probed,
    kind: &'static str,
) -> Vec<crate::caps::Capability> {
    use crate::caps::Capability;
    let mut rows = vec![
        Capability::row(
            kernel,
            kind,
            Mechanism::CgroupSkb,
            &["cgroup scope", "ingress", "egress"],
        ),
        Capability::row(
            kernel,
            kind,
            Mechanism::TCX,
            &["interface scope", "ingress", "egress"],
        ),
    ];
    if kernel.interface_via_cgroup_probed() {
        rows.push(Capability::row(
            kernel,
            kind,
            Mechanism::CgroupSkb,
            &LOCAL_ONLY,
        ));
    }
    rows
}

/// What interface scope on cgroup_skb covers (no TCX here, or configured so).
pub const LOCAL_ONLY: [&str; 4] = [
    "interface scope",
    "local sockets' packets only",
    "ingress",
    "egress",
];

/// The match and interface target the packet kinds' examples use.
#[cfg(test)]
pub fn example_scope() -> (Option<pb::PacketMatch>, pb::Target) {
    let m = pb::PacketMatch {
        protocol: "udp".into(),
        dst_cidr: "10.0.0.0/8".into(),
        dst_ports: "5000-5010".into(),
        ..Default::default()
    };
    let target = pb::Target {
        interface: "veth-x".into(),
        ..Default::default()
    };
    (Some(m), target)
}
