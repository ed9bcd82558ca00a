//! `packet_loss` and `blackhole`: drop matching packets, scoped to a cgroup
//! (cgroup_skb on the cgroup2 root, filtered by the socket's cgroup) or to
//! an interface (TCX on that interface).
//!
//! Egress drops in cgroup_skb return 2 (drop, congestion notified) so the
//! sender sees no error, as with a real lossy network. SSH (port 22) and the
//! agent's own control port are never dropped unless a slot allows SSH.

use aya_ebpf::{
    bindings::TC_ACT_OK as TC_OK,
    helpers::generated::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_prandom_u32, bpf_ktime_get_boot_ns,
        bpf_ktime_get_ns, bpf_setsockopt, bpf_skb_ancestor_cgroup_id,
    },
    macros::{cgroup_skb, classifier, map, sock_ops},
    maps::{Array, PerCpuArray, ProgramArray},
    programs::{SkBuffContext, SockOpsContext, TcContext},
};
use faultline_common::{
    AgentConfig, FaultSlot, MAX_FAULTS, MAX_NET_SLOTS, NetMatch, direction, flags, kind,
};

use crate::{
    dns,
    slots::{CONFIG, SLOTS, count, dry_run, live},
};

/// Token bucket of a `bandwidth` slot, in nano-bytes (bytes x 1e9) so that
/// refills need no division and lose no fractions.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Bucket {
    tokens: u64,
    last_ns: u64,
}

/// One bucket per slot, shared by all CPUs. Updated without atomics (the
/// bpfel target has none in core): two CPUs racing may both spend the same
/// tokens, which lets a little more through than the rate at worst.
#[map(name = "FL_BUCKETS")]
static BUCKETS: Array<Bucket> = Array::with_max_entries(MAX_FAULTS, 0);

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

/// Gilbert model state per slot and CPU: 0 = good, 1 = bad (dropping).
#[map(name = "FL_GE_STATE")]
static GE_STATE: PerCpuArray<u32> = PerCpuArray::with_max_entries(MAX_FAULTS, 0);

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
pub(crate) const ETH_HLEN: usize = 14;
pub(crate) const TC_ACT_SHOT: i32 = 2;

/// The fields of one packet that faults match on.
pub(crate) struct Packet {
    /// Bytes on the wire as the hook sees them (skb->len).
    pub(crate) len: u32,
    pub(crate) v6: bool,
    pub(crate) l3: usize,
    pub(crate) l4: usize,
    /// Offset of the L4 payload (after the UDP or TCP header).
    pub(crate) payload: usize,
    pub(crate) proto: u32,
    pub(crate) src: [u32; 4],
    pub(crate) dst: [u32; 4],
    pub(crate) sport: u32,
    pub(crate) dport: u32,
}

/// Fixed-size reads from a packet (`bpf_skb_load_bytes` with a constant
/// length: the verifier refuses a length that could be zero).
pub(crate) trait Headers {
    fn read<T>(&self, off: usize) -> Option<T>;
}

impl Headers for SkBuffContext {
    fn read<T>(&self, off: usize) -> Option<T> {
        self.load::<T>(off).ok()
    }
}

impl Headers for TcContext {
    fn read<T>(&self, off: usize) -> Option<T> {
        self.load::<T>(off).ok()
    }
}

/// Reads L3/L4 headers starting at `l3`.
#[inline(always)]
pub(crate) fn parse(eth_proto: u16, l3: usize, ctx: &impl Headers) -> Option<Packet> {
    let mut p = Packet {
        len: 0,
        v6: false,
        l3,
        l4: 0,
        payload: 0,
        proto: 0,
        src: [0; 4],
        dst: [0; 4],
        sport: 0,
        dport: 0,
    };
    let l4 = if eth_proto == ETH_P_IP {
        let h: [u8; 20] = ctx.read(l3)?;
        p.proto = u32::from(h[9]);
        p.src[0] = u32::from_ne_bytes([h[12], h[13], h[14], h[15]]);
        p.dst[0] = u32::from_ne_bytes([h[16], h[17], h[18], h[19]]);
        l3 + usize::from(h[0] & 0x0f) * 4
    } else if eth_proto == ETH_P_IPV6 {
        let h: [u8; 40] = ctx.read(l3)?;
        p.v6 = true;
        p.proto = u32::from(h[6]);
        let mut i = 0;
        while i < 4 {
            p.src[i] =
                u32::from_ne_bytes([h[8 + 4 * i], h[9 + 4 * i], h[10 + 4 * i], h[11 + 4 * i]]);
            p.dst[i] =
                u32::from_ne_bytes([h[24 + 4 * i], h[25 + 4 * i], h[26 + 4 * i], h[27 + 4 * i]]);
            i += 1;
        }
        l3 + 40
    } else {
        return None;
    };
    p.l4 = l4;
    p.payload = l4;
    if p.proto == 17 {
        p.payload = l4 + 8;
    } else if p.proto == 6
        && let Some(off) = ctx.read::<u8>(l4 + 12)
    {
        p.payload = l4 + usize::from(off >> 4) * 4;
    }
    if p.proto == 6 || p.proto == 17 {
        if let Some(ports) = ctx.read::<[u8; 4]>(l4) {
            p.sport = u32::from(u16::from_be_bytes([ports[0], ports[1]]));
            p.dport = u32::from(u16::from_be_bytes([ports[2], ports[3]]));
        }
    }
    Some(p)
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
    if fl & flags::INCLUDE_SSH == 0 && (p.sport == 22 || p.dport == 22) {
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

/// Token-bucket policing: true when the packet exceeds the rate.
#[inline(always)]
fn over_rate(index: u32, slot: &FaultSlot, len: u32) -> bool {
    const NANO: u64 = 1_000_000_000;
    let Some(b) = BUCKETS.get_ptr_mut(index) else {
        return false;
    };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    // SAFETY: the pointer is valid for the program's run (see BUCKETS).
    unsafe {
        // At most one second of refill: rate x elapsed then stays below 2^64
        // for rates up to 10 GB/s (validated by the agent).
        let elapsed = if now > (*b).last_ns {
            now - (*b).last_ns
        } else {
            0
        };
        let elapsed = if elapsed > NANO { NANO } else { elapsed };
        let cap = u64::from(slot.net.burst_bytes) * NANO;
        let mut tokens = (*b).tokens + elapsed * slot.net.rate_bytes_per_sec;
        if tokens > cap {
            tokens = cap;
        }
        (*b).last_ns = now;
        let cost = u64::from(len) * NANO;
        let pass = tokens >= cost;
        (*b).tokens = if pass { tokens - cost } else { tokens };
        !pass
    }
}

/// Longest queue a shaped flow may build, in time: beyond it packets are
/// dropped (like a full qdisc), well inside fq's 10 s horizon.
const SHAPE_HORIZON_NS: u64 = 2_000_000_000;

/// Earliest-departure-time shaping (as fq-based shapers do): packets leave
/// `len / rate` apart. Returns how long this one waits from now, or None
/// to drop it. The slot's bucket holds the next free departure time.
#[inline(always)]
fn departure(index: u32, slot: &FaultSlot, len: u32) -> Option<u64> {
    let b = BUCKETS.get_ptr_mut(index)?;
    // SAFETY: plain helper call; tc timestamps are CLOCK_MONOTONIC.
    let now = unsafe { bpf_ktime_get_ns() };
    let rate = slot.net.rate_bytes_per_sec;
    let gap = if rate == 0 {
        0
    } else {
        u64::from(len) * 1_000_000_000 / rate
    };
    // SAFETY: the pointer is valid for the program's run (see BUCKETS).
    unsafe {
        let next = (*b).last_ns;
        let at = if next > now { next } else { now };
        if at - now > SHAPE_HORIZON_NS {
            return None;
        }
        (*b).last_ns = at + gap;
        Some(at - now)
    }
}

/// Bernoulli, or the Gilbert model when `leave_bad` is set.
#[inline(always)]
fn lose(index: u32, slot: &FaultSlot) -> bool {
    // SAFETY: plain helper call.
    let r = u64::from(unsafe { bpf_get_prandom_u32() });
    if slot.net.leave_bad == 0 {
        return r < slot.threshold;
    }
    let Some(state) = GE_STATE.get_ptr_mut(index) else {
        return false;
    };
    // SAFETY: per-CPU value; these programs run with migration disabled.
    unsafe {
        if *state == 0 {
            if r < slot.threshold {
                *state = 1;
            }
        } else if r < u64::from(slot.net.leave_bad) {
            *state = 0;
        }
        *state == 1
    }
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
fn decide(
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

/// The slot's delay with uniform jitter in [delay - jitter, delay + jitter].
#[inline(always)]
fn jittered(net: &NetMatch) -> u64 {
    if net.jitter_ns == 0 {
        return net.delay_ns;
    }
    // SAFETY: plain helper call.
    let r = u64::from(unsafe { bpf_get_prandom_u32() });
    let span = 2 * net.jitter_ns + 1;
    // r / 2^32 * span, without overflow for spans up to 2^32 ns (4.3 s).
    let offset = (r * (span >> 16)) >> 16;
    (net.delay_ns + offset).saturating_sub(net.jitter_ns)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    Drop,
    /// Hold the packet this many nanoseconds (earliest departure time).
    Delay(u64),
    Duplicate,
    /// Flip one bit; `true` recomputes the L4 checksum.
    Corrupt(bool),
}

pub(crate) const BPF_F_MARK_MANGLED_0: u64 = 1 << 5;

/// Flips one random bit. Left wrong (IPv4): in the IP header's
/// identification field, whose header checksum every receiver verifies, so
/// the frame is dropped as a corrupted one would be. Otherwise in the first
/// two payload bytes, with the L4 checksum fixed when `recompute` (the
/// receiver gets corrupted data) or not (dropped wherever the checksum is
/// verified).
#[inline(always)]
fn corrupt(ctx: &TcContext, p: &Packet, recompute: bool) {
    // SAFETY: plain helper call.
    let bit = unsafe { bpf_get_prandom_u32() } % 16;
    let (off, fix_l4) = if !recompute && !p.v6 {
        (p.l3 + 4, false)
    } else {
        (p.payload, recompute)
    };
    let Ok(old) = ctx.load::<u16>(off) else {
        return;
    };
    let new = old ^ (1u16 << bit);
    if ctx.store(off, &new, 0).is_err() || !fix_l4 {
        return;
    }
    let csum_off = if p.proto == 17 {
        p.l4 + 6
    } else if p.proto == 6 {
        p.l4 + 16
    } else {
        return;
    };
    let mangled = if p.proto == 17 {
        BPF_F_MARK_MANGLED_0
    } else {
        0
    };
    let _ = ctx.l4_csum_replace(csum_off, u64::from(old), u64::from(new), 2 | mangled);
}

/// skb mark on our own duplicates, so the copy is not judged again when it
/// passes the same hook. Restored on the original at once.
const DUP_MARK: u32 = 0x464c_4450;
pub(crate) const BPF_F_INGRESS: u64 = 1;

/// Tail-call targets for DNS queries (see `dns`): `fl_skb_dns` at 0. One
/// array per program type, since a program array serves only one type.
#[map(name = "FL_DNS_SKB")]
static DNS_SKB: ProgramArray = ProgramArray::with_max_entries(1, 0);
/// `fl_tc_dns` at 0.
#[map(name = "FL_DNS_TC")]
static DNS_TC: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Drop this packet? Packets the DNS program should see next are handed to
/// it (a tail call does not return; if it fails, the packet passes).
#[inline(always)]
fn cgroup_skb_drop(ctx: &SkBuffContext, dir: u32) -> bool {
    let Some(cfg) = CONFIG.get(0) else {
        return false;
    };
    let eth_proto = u16::from_be(ctx.skb.protocol() as u16);
    let Some(mut p) = parse(eth_proto, 0, ctx) else {
        return false;
    };
    p.len = ctx.len();
    let skb = ctx.skb.skb;
    let hook = Hook {
        ifindex: 0,
        // SAFETY: reading the context's field.
        skb_ifindex: unsafe { (*skb).ifindex },
    };
    // SAFETY: plain helper call on the program's own context.
    let drop = decide(cfg, dir, hook, &p, |level| unsafe {
        bpf_skb_ancestor_cgroup_id(skb.cast(), level as i32)
    }) == Verdict::Drop;
    if !drop && dns::wanted(cfg, dir, &p) {
        // SAFETY: the program array holds a program of this type.
        let _ = unsafe { DNS_SKB.tail_call(ctx, 0) };
    }
    drop
}

#[cgroup_skb(egress)]
pub fn fl_skb_egress(ctx: SkBuffContext) -> i32 {
    // 2: drop with congestion notification, which UDP senders do not see.
    if cgroup_skb_drop(&ctx, direction::EGRESS) {
        2
    } else {
        1
    }
}

#[cgroup_skb(ingress)]
pub fn fl_skb_ingress(ctx: SkBuffContext) -> i32 {
    if cgroup_skb_drop(&ctx, direction::INGRESS) {
        0
    } else {
        1
    }
}

#[inline(always)]
fn tc_drop(ctx: &TcContext, dir: u32) -> i32 {
    let eth_proto = u16::from_be(ctx.skb.protocol() as u16);
    // SAFETY: reading the context's fields.
    let (ifindex, mark) = unsafe { ((*ctx.skb.skb).ifindex, (*ctx.skb.skb).mark) };
    if mark == DUP_MARK {
        return TC_OK as i32;
    }
    let Some(mut p) = parse(eth_proto, ETH_HLEN, ctx) else {
        return TC_OK as i32;
    };
    p.len = ctx.len();
    let Some(cfg) = CONFIG.get(0) else {
        return TC_OK as i32;
    };
    let hook = Hook {
        ifindex,
        skb_ifindex: ifindex,
    };
    let verdict = decide(cfg, dir, hook, &p, |_| 0);
    if matches!(verdict, Verdict::Pass | Verdict::Delay(_)) && dns::wanted(cfg, dir, &p) {
        if let Verdict::Delay(ns) = verdict {
            delay(ctx, ns);
        }
        // SAFETY: the program array holds a program of this type.
        let _ = unsafe { DNS_TC.tail_call(ctx, 0) };
        return TC_OK as i32;
    }
    match verdict {
        Verdict::Pass => TC_OK as i32,
        Verdict::Delay(ns) => {
            delay(ctx, ns);
            TC_OK as i32
        }
        Verdict::Drop => TC_ACT_SHOT,
        Verdict::Corrupt(recompute) => {
            corrupt(ctx, &p, recompute);
            TC_OK as i32
        }
        Verdict::Duplicate => {
            ctx.skb.set_mark(DUP_MARK);
            let flags = if dir == direction::INGRESS {
                BPF_F_INGRESS
            } else {
                0
            };
            let _ = ctx.clone_redirect(ifindex, flags);
            ctx.skb.set_mark(mark);
            TC_OK as i32
        }
    }
}

/// Earliest departure `ns` from now (the interface's fq qdisc holds the
/// packet until then). A time already set (TCP's own pacing) is kept as the
/// base, so the delay adds to it.
#[inline(always)]
fn delay(ctx: &TcContext, ns: u64) {
    // SAFETY: plain helper call; tstamp is a writable context field for tc programs.
    unsafe {
        let now = bpf_ktime_get_ns();
        let cur = (*ctx.skb.skb).tstamp;
        (*ctx.skb.skb).tstamp = if cur > now { cur } else { now } + ns;
    }
}

#[classifier]
pub fn fl_tc_egress(ctx: TcContext) -> i32 {
    tc_drop(&ctx, direction::EGRESS)
}

#[classifier]
pub fn fl_tc_ingress(ctx: TcContext) -> i32 {
    tc_drop(&ctx, direction::INGRESS)
}

/// Attached by the agent to the loopback device of a private network
/// namespace, where no packet ever passes: its links keep the kernel's TCX
/// hooks switched on, so a fault's first TCX link takes effect at once
/// instead of after an RCU grace period and a code patch.
#[classifier]
pub fn fl_tcx_keep(_ctx: TcContext) -> i32 {
    // TCX_NEXT: let the next program (or the stack) decide.
    -1
}

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
    // SAFETY: the context is valid for the program's run; plain u32 fields.
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
    let p = Packet {
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
    };
    if let Some(mut rate) = pacing_rate(cfg, &p, listen) {
        // SAFETY: valid context and option buffer of the size passed.
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
        // SAFETY: plain helper call.
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
