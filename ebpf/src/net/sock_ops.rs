//! The sock_ops program (`fl_sock_ops`): `bandwidth` for TCP in cgroup
//! scope by capping a socket's pacing rate, and `pacing_rate`, which the
//! connect hooks (`sock_error`) use for the same purpose on kernels where
//! this program is refused.

use aya_ebpf::{
    helpers::generated::{bpf_get_current_ancestor_cgroup_id, bpf_setsockopt},
    macros::sock_ops,
    programs::SockOpsContext,
};
use faultline_common::{AgentConfig, MAX_NET_SLOTS, direction, kind};

use super::{
    decide::{listed_slot, packet_matches},
    parse::{Packet, ssh_ports},
};
use crate::slots::{CONFIG, dry_run, live};

const BPF_SOCK_OPS_TCP_CONNECT_CB: u32 = 3;
const BPF_SOCK_OPS_TCP_LISTEN_CB: u32 = 11;
pub(crate) const SOL_SOCKET: i32 = 1;
pub(crate) const SO_MAX_PACING_RATE: i32 = 47;
const AF_INET: u32 = 2;

/// `bandwidth` for TCP in cgroup scope: when a target process opens a TCP
/// connection, or starts listening on a port, that a bandwidth slot
/// matches, cap the socket's pacing rate (TCP's own pacing, no qdisc
/// needed), so the flow is shaped to the rate instead of being policed in
/// 64 KiB GSO chunks. Connections accepted on a listener inherit its cap
/// (the kernel copies the listener into each new socket). The policer
/// still holds the aggregate. Both callbacks run in the calling task, so
/// the cgroup check is the task's.
#[sock_ops]
pub fn fl_sock_ops(ctx: SockOpsContext) -> u32 {
    let op = ctx.op();
    let listen = op == BPF_SOCK_OPS_TCP_LISTEN_CB;
    if op != BPF_SOCK_OPS_TCP_CONNECT_CB && !listen {
        return 1;
    }
    let Some(cfg) = CONFIG.get(0) else { return 1 };
    // Every context field is read unconditionally: a read behind a branch
    // lets the compiler form a moved context pointer, which the verifier
    // refuses ("dereference of modified ctx ptr").
    // (Volatile, so LLVM cannot fold the two address reads into one load
    // through a selected pointer either.)
    let ops = ctx.ops;
    // SAFETY: `ops` is the context pointer the kernel passed, valid for the
    // program's run; plain u32 fields, each read checked by the verifier.
    let (family, ip4, ip6, port, local_port) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*ops).family),
            core::ptr::read_volatile(&raw const (*ops).remote_ip4),
            [
                core::ptr::read_volatile(&raw const (*ops).remote_ip6[0]),
                core::ptr::read_volatile(&raw const (*ops).remote_ip6[1]),
                core::ptr::read_volatile(&raw const (*ops).remote_ip6[2]),
                core::ptr::read_volatile(&raw const (*ops).remote_ip6[3]),
            ],
            core::ptr::read_volatile(&raw const (*ops).remote_port),
            core::ptr::read_volatile(&raw const (*ops).local_port),
        )
    };
    let v4 = family == AF_INET;
    let remote = if v4 { [ip4, 0, 0, 0] } else { ip6 };
    // Connect: the peer is known, the source side is not picked yet.
    // Listen: the local port is known, no peer yet.
    let mut p = Packet {
        len: 0,
        v6: !v4,
        l3: 0,
        l4: 0,
        payload: 0,
        proto: 6,
        src: [0; 4],
        dst: if listen { [0; 4] } else { remote },
        sport: if listen { local_port } else { 0 },
        dport: if listen { 0 } else { u32::from_be(port) },
        ssh: 0,
    };
    // Spared like a packet of the connection (a failed lookup: spared).
    p.ssh = ssh_ports(p.sport, p.dport).unwrap_or(1);
    if let Some(mut rate) = pacing_rate(cfg, &p, listen) {
        // SAFETY: the program's own context; `rate` is a live u32 on the stack
        // and the length passed is its size.
        unsafe {
            bpf_setsockopt(
                ctx.ops.cast(),
                SOL_SOCKET,
                SO_MAX_PACING_RATE,
                (&raw mut rate).cast(),
                core::mem::size_of::<u32>() as i32,
            );
        }
    }
    1
}

/// The pacing cap (bytes/s) for a TCP socket the current task connects
/// (`p` has the peer) or listens on (`listen`: `p` has the local port),
/// from the first cgroup-scope egress `bandwidth` slot that matches it.
#[inline(always)]
pub(crate) fn pacing_rate(cfg: &AgentConfig, p: &Packet, listen: bool) -> Option<u32> {
    let mut j = 0;
    while j < MAX_NET_SLOTS {
        j += 1;
        let Some((_, slot)) = listed_slot(cfg, j - 1) else {
            break;
        };
        let Some(slot) = slot else { continue };
        if slot.kind != kind::PACKET_RATE
            || slot.net.ifindex != 0
            || slot.net.direction & direction::EGRESS == 0
            || slot.target.cgroup_id == 0
            || dry_run(slot)
            || !live(slot)
        {
            continue;
        }
        // SAFETY: bpf_get_current_ancestor_cgroup_id takes a level by value and
        // touches no memory (it returns 0 for a level deeper than the task's).
        if unsafe { bpf_get_current_ancestor_cgroup_id(slot.target.cgroup_level as i32) }
            != slot.target.cgroup_id
        {
            continue;
        }
        let mut m = slot.net;
        // The side not known yet matches anything; the policer still
        // applies its filters to every packet.
        if listen {
            m.dst_v4_prefix = 0;
            m.dst_v6_prefix = 0;
            m.dport_lo = 0;
            m.dport_hi = 65535;
        } else {
            m.src_v4_prefix = 0;
            m.src_v6_prefix = 0;
            m.sport_lo = 0;
            m.sport_hi = 65535;
        }
        if !packet_matches(&m, slot.flags, p, cfg.control_port) {
            continue;
        }
        // Pace a little under the policer so timing jitter never makes
        // the policer drop a paced flow.
        let rate = slot.net.rate_bytes_per_sec / 100 * 97;
        return Some(if rate > u64::from(u32::MAX - 1) {
            u32::MAX - 1
        } else {
            rate as u32
        });
    }
    None
}
