//! Which network slot, if any, acts on a packet: the slot list, the
//! address/port/protocol match, the scope test (interface or cgroup) and
//! the verdict the cgroup_skb and TCX programs act on.

use aya_ebpf::{macros::map, maps::Array};
use faultline_common::{
    AgentConfig, FaultSlot, MAX_FAULTS, MAX_NET_SLOTS, NetMatch, direction, flags, kind,
};

use super::{
    loss::lose,
    parse::Packet,
    rate::{departure, jittered, over_rate},
};
use crate::slots::{SLOTS, count, dry_run, live};

/// Indices of the slots holding network faults (`AgentConfig::net_slot_count` valid).
#[map(name = "FL_NET_SLOTS")]
static NET_SLOTS: Array<u32> = Array::with_max_entries(MAX_NET_SLOTS, 0);

/// The `j`th listed network slot: None past the end of the list, else its
/// index and the slot (None for an index out of range).
#[inline(always)]
pub(crate) fn listed_slot(cfg: &AgentConfig, j: u32) -> Option<(u32, Option<&'static FaultSlot>)> {
    let listed = if cfg.net_slot_count > MAX_NET_SLOTS {
        MAX_NET_SLOTS
    } else {
        cfg.net_slot_count
    };
    if j >= listed {
        return None;
    }
    let i = *NET_SLOTS.get(j)?;
    Some((i, if i < MAX_FAULTS { SLOTS.get(i) } else { None }))
}

#[inline(always)]
fn mask(bits: u32) -> u32 {
    if bits == 0 {
        0
    } else if bits >= 32 {
        u32::MAX
    } else {
        u32::MAX << (32 - bits)
    }
}

#[expect(
    clippy::implicit_saturating_sub,
    reason = "explicit branches: the code shape the kernels' verifiers accepted is kept"
)]
#[inline(always)]
fn in_net(addr: &[u32; 4], net: &[u32; 4], prefix: u32, words: usize) -> bool {
    let mut i = 0;
    while i < 4 {
        if i >= words {
            break;
        }
        let lo = 32 * i as u32;
        let bits = if prefix >= lo + 32 {
            32
        } else if prefix > lo {
            prefix - lo
        } else {
            0
        };
        let m = mask(bits);
        if (u32::from_be(addr[i]) & m) != (u32::from_be(net[i]) & m) {
            return false;
        }
        i += 1;
    }
    true
}

#[inline(always)]
pub(crate) fn packet_matches(m: &NetMatch, fl: u32, p: &Packet, ctl_port: u32) -> bool {
    // Unless the fault includes SSH: never a packet to or from an SSH
    // port, nor one that may be TCP whose ports could not be read.
    if fl & flags::INCLUDE_SSH == 0 && p.ssh != 0 {
        return false;
    }
    if ctl_port != 0 && (p.sport == ctl_port || p.dport == ctl_port) {
        return false;
    }
    if m.proto != 0 && m.proto != p.proto && !(m.proto == 1 && p.v6 && p.proto == 58) {
        return false;
    }
    if p.v6 {
        if fl & flags::FAMILY_V6 == 0
            || !in_net(&p.src, &m.src_v6, m.src_v6_prefix, 4)
            || !in_net(&p.dst, &m.dst_v6, m.dst_v6_prefix, 4)
        {
            return false;
        }
    } else {
        let src = [m.src_v4, 0, 0, 0];
        let dst = [m.dst_v4, 0, 0, 0];
        if fl & flags::FAMILY_V4 == 0
            || !in_net(&p.src, &src, m.src_v4_prefix, 1)
            || !in_net(&p.dst, &dst, m.dst_v4_prefix, 1)
        {
            return false;
        }
    }
    p.sport >= m.sport_lo && p.sport <= m.sport_hi && p.dport >= m.dport_lo && p.dport <= m.dport_hi
}

/// Where a packet program runs: a TCX program on interface `ifindex`, or
/// (`ifindex` 0) a cgroup_skb program seeing a packet of interface
/// `skb_ifindex`.
#[derive(Clone, Copy)]
pub(crate) struct Hook {
    pub ifindex: u32,
    pub skb_ifindex: u32,
}

/// Whether a network slot's scope covers a packet at `hook`: its interface
/// (TCX, or cgroup_skb standing in for TCX), or its cgroup, whose ancestor
/// at a level `cgroup_of` gives. A cgroup-scope slot without a cgroup never
/// matches host-wide traffic, whatever the agent wrote.
#[inline(always)]
pub(crate) fn in_scope(slot: &FaultSlot, hook: Hook, cgroup_of: impl Fn(u32) -> u64) -> bool {
    if hook.ifindex != 0 {
        slot.net.ifindex == hook.ifindex && slot.flags & flags::VIA_CGROUP_SKB == 0
    } else if slot.flags & flags::VIA_CGROUP_SKB != 0 {
        slot.net.ifindex != 0 && slot.net.ifindex == hook.skb_ifindex
    } else {
        slot.net.ifindex == 0
            && slot.target.cgroup_id != 0
            && cgroup_of(slot.target.cgroup_level) == slot.target.cgroup_id
    }
}

/// Decides one packet at `hook`; `cgroup_of` gives the socket's cgroup
/// ancestor at a level (cgroup scope).
#[inline(always)]
pub(super) fn decide(
    cfg: &AgentConfig,
    dir: u32,
    hook: Hook,
    p: &Packet,
    cgroup_of: impl Fn(u32) -> u64,
) -> Verdict {
    let ifindex = hook.ifindex;
    // Delays of every matching latency slot add up; a drop still wins.
    let mut delay: u64 = 0;
    let mut j = 0;
    while j < MAX_NET_SLOTS {
        j += 1;
        let Some((i, slot)) = listed_slot(cfg, j - 1) else {
            break;
        };
        if let Some(slot) = slot {
            // Duplication, corruption and delay need a TCX program (they
            // change, copy or time the packet).
            let kind_ok = slot.kind == kind::PACKET_DROP
                || slot.kind == kind::PACKET_RATE
                || ((slot.kind == kind::PACKET_DUP
                    || slot.kind == kind::PACKET_CORRUPT
                    || slot.kind == kind::PACKET_DELAY)
                    && ifindex != 0);
            if kind_ok
                && slot.net.direction & dir != 0
                && live(slot)
                && in_scope(slot, hook, &cgroup_of)
                && packet_matches(&slot.net, slot.flags, p, cfg.control_port)
            {
                if slot.kind == kind::PACKET_RATE
                    && slot.flags & flags::SHAPE != 0
                    && dir == direction::EGRESS
                    && ifindex != 0
                {
                    // Shaped: a departure time, or a drop when the queue
                    // it implies is longer than the horizon.
                    match departure(i, slot, p.len) {
                        Some(wait) => {
                            count(i, wait > 0);
                            if !dry_run(slot) {
                                delay += wait;
                            }
                        }
                        None => {
                            count(i, true);
                            if !dry_run(slot) {
                                return Verdict::Drop;
                            }
                        }
                    }
                    continue;
                }
                let hit = if slot.kind == kind::PACKET_RATE {
                    over_rate(i, slot, p.len)
                } else {
                    lose(i, slot)
                };
                count(i, hit);
                if hit && !dry_run(slot) && slot.kind == kind::PACKET_DELAY {
                    delay += jittered(&slot.net);
                } else if hit && !dry_run(slot) {
                    return if slot.kind == kind::PACKET_DUP {
                        Verdict::Duplicate
                    } else if slot.kind == kind::PACKET_CORRUPT {
                        Verdict::Corrupt(slot.op != 0)
                    } else {
                        Verdict::Drop
                    };
                }
            }
        }
    }
    if delay > 0 {
        Verdict::Delay(delay)
    } else {
        Verdict::Pass
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Pass,
    Drop,
    /// Hold the packet this many nanoseconds (earliest departure time).
    Delay(u64),
    Duplicate,
    /// Flip one bit; `true` recomputes the L4 checksum.
    Corrupt(bool),
}
