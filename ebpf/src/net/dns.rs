//! `dns_error`: programs (`fl_skb_dns`, `fl_tc_dns`) reached by tail call
//! from the `skb` and `tc` programs when an egress packet to port 53 passes
//! them while a DNS fault is active. Programs of their own, so parsing a
//! name (a loop over up to 128 bytes) does not add to the verification of
//! the packet programs.
//!
//! Names are matched by domain with one pass: with P(k) the polynomial hash
//! of the first k bytes of the name, the hash of bytes i..n is
//! P(n) - P(i) * B^(n-i), and B^(n-i) = B^n * (B^-1)^i; so it is enough to
//! remember P(i) and (B^-1)^i at each label start.

use aya_ebpf::{
    bindings::{__sk_buff, TC_ACT_OK},
    cty::c_void,
    helpers::generated::{bpf_redirect, bpf_skb_load_bytes},
    macros::{cgroup_skb, classifier, map},
    maps::{Array, PerCpuArray},
    programs::{SkBuffContext, TcContext},
};
use faultline_common::{
    AgentConfig, MAX_DNS_SLOTS, MAX_FAULTS, direction,
    dns::{B, INV_B, MAX_LABELS, MAX_NAME, fold},
    flags, kind,
};

use super::{
    decide::{Hook, in_scope, packet_matches},
    mutate::{BPF_F_INGRESS, BPF_F_MARK_MANGLED_0},
    parse::{ETH_HLEN, Headers, Packet, parse},
    tc::TC_ACT_SHOT,
};
use crate::slots::{CONFIG, SLOTS, coin, count, dry_run, live};

/// Per-CPU scratch space for parsing a name (far beyond the 512-byte stack):
/// the name's bytes and, for every prefix length k, P(k), B^k and B^-k.
#[repr(C)]
pub struct Scratch {
    name: [u8; MAX_NAME],
    prefix: [u64; MAX_NAME + 1],
    pow: [u64; MAX_NAME + 1],
    inv_pow: [u64; MAX_NAME + 1],
    /// The last `MAX_LABELS` label starts, and where the name ends. Kept
    /// here rather than on the stack: read back from a map they are plain
    /// unknowns to the verifier, so every way out of the label walk looks
    /// the same to it and is verified once.
    starts: [u64; MAX_LABELS],
    end: u64,
}

#[map(name = "FL_DNS_SCRATCH")]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Labels a name may have (the last `MAX_LABELS` are matched).
const MAX_NAME_LABELS: usize = 64;

/// Indices of the slots holding DNS faults (`AgentConfig::dns_slot_count` valid).
#[map(name = "FL_DNS_SLOTS")]
static DNS_SLOTS: Array<u32> = Array::with_max_entries(MAX_DNS_SLOTS, 0);

/// The hashes of a query's name from each of its last `MAX_LABELS` label
/// starts to its end. A name with fewer labels repeats the whole name's
/// hash in the unused entries, so every entry is always valid (fewer
/// branches for the verifier).
struct Query {
    hashes: [u64; MAX_LABELS],
}

impl Query {
    #[inline(always)]
    fn under(&self, domain_hash: u64) -> bool {
        let mut hit = false;
        let mut i = 0;
        while i < MAX_LABELS {
            hit |= self.hashes[i] == domain_hash;
            i += 1;
        }
        hit
    }
}

/// The query in a DNS message at `msg` (UDP payload, or TCP payload after
/// the two length bytes): None unless it is a query whose name fits in
/// `MAX_NAME` bytes. Two loops without data-dependent branches per byte,
/// which keeps verification small: prefix hashes of every length, then a
/// walk over the labels.
#[inline(always)]
fn query(msg: usize, ctx: &impl Headers, skb: *mut __sk_buff) -> Option<Query> {
    let header: [u8; 12] = ctx.read(msg)?;
    // QR = 0 (a query), QDCOUNT >= 1.
    if header[2] & 0x80 != 0 || (header[4] == 0 && header[5] == 0) {
        return None;
    }
    // SAFETY: the pointer is non-null (checked by `?`) and points at this
    // CPU's value of a map, valid for the program's run; per-CPU, and these
    // programs run with migration disabled, so this is the only reference.
    let s = unsafe { &mut *SCRATCH.get_ptr_mut(0)? };
    // What is left of the packet after the header, 1..=MAX_NAME bytes (the
    // verifier refuses a load that could be zero bytes long).
    // SAFETY: `skb` is the context pointer the kernel passed, valid for the
    // program's run; the verifier checks the field read.
    let left = (unsafe { (*skb).len } as usize).checked_sub(msg + 12)?;
    if left == 0 {
        return None;
    }
    let avail = ((left - 1) & (MAX_NAME - 1)) + 1;
    let avail = if left >= MAX_NAME { MAX_NAME } else { avail };
    // SAFETY: `skb` is the program's context; `name` has MAX_NAME bytes and
    // `avail` is within 1..=MAX_NAME (bounded above for the verifier), so the
    // helper writes inside `name`; it checks the packet range itself.
    let r = unsafe {
        bpf_skb_load_bytes(
            skb as *const c_void,
            (msg + 12) as u32,
            s.name.as_mut_ptr().cast::<c_void>(),
            avail as u32,
        )
    };
    if r != 0 {
        return None;
    }
    // Every prefix, also past the packet's end (stale bytes there are never
    // used: the name ends before `avail`); no exit inside the loop.
    let (mut h, mut pw, mut ipw) = (0u64, 1u64, 1u64);
    let mut k = 0usize;
    while k < MAX_NAME {
        s.prefix[k] = h;
        s.pow[k] = pw;
        s.inv_pow[k] = ipw;
        h = h.wrapping_mul(B).wrapping_add(u64::from(fold(s.name[k])));
        pw = pw.wrapping_mul(B);
        ipw = ipw.wrapping_mul(INV_B);
        k += 1;
    }
    // Label starts, keeping the last MAX_LABELS (0, the whole name, where
    // there are fewer).
    s.starts = [0; MAX_LABELS];
    let mut pos = 0usize;
    let mut found = false;
    let mut l = 0;
    while l < MAX_NAME_LABELS {
        if pos >= MAX_NAME || pos >= avail {
            return None;
        }
        let c = s.name[pos];
        if c == 0 {
            s.end = pos as u64;
            found = true;
            break;
        }
        if c > 63 {
            // A compression pointer or a reserved label type.
            return None;
        }
        s.starts[l % MAX_LABELS] = pos as u64;
        pos += usize::from(c) + 1;
        l += 1;
    }
    if !found {
        return None;
    }
    // SAFETY: a read of a field of the live scratch value `s` (see above).
    let n = unsafe { core::ptr::read_volatile(&s.end) } as usize;
    if n >= MAX_NAME {
        return None;
    }
    let mut q = Query {
        hashes: [0; MAX_LABELS],
    };
    let mut j = 0;
    while j < MAX_LABELS {
        // SAFETY: as above; `j < MAX_LABELS` keeps the index in bounds.
        let i = (unsafe { core::ptr::read_volatile(&s.starts[j]) } as usize) & (MAX_NAME - 1);
        // hash(i..n) = P(n) - P(i) * B^n * B^-i
        q.hashes[j] = s.prefix[n].wrapping_sub(
            s.prefix[i]
                .wrapping_mul(s.pow[n])
                .wrapping_mul(s.inv_pow[i]),
        );
        j += 1;
    }
    Some(q)
}

/// How a matching query fails: None passes it, Some(0) drops it,
/// Some(rcode) answers it.
#[inline(always)]
fn decide(
    cfg: &AgentConfig,
    hook: Hook,
    p: &Packet,
    q: &Query,
    cgroup_of: impl Fn(u32) -> u64,
) -> Option<u32> {
    let listed = if cfg.dns_slot_count > MAX_DNS_SLOTS {
        MAX_DNS_SLOTS
    } else {
        cfg.dns_slot_count
    };
    let mut j = 0;
    while j < MAX_DNS_SLOTS {
        if j >= listed {
            break;
        }
        let Some(&i) = DNS_SLOTS.get(j) else { break };
        j += 1;
        let Some(slot) = (if i < MAX_FAULTS { SLOTS.get(i) } else { None }) else {
            continue;
        };
        if slot.kind == kind::PACKET_DNS
            && live(slot)
            && in_scope(slot, hook, &cgroup_of)
            && packet_matches(&slot.net, slot.flags, p, cfg.control_port)
            && (slot.flags & flags::DNS_ANY_NAME != 0 || q.under(slot.net.dns_hash))
        {
            let hit = coin(slot);
            count(i, hit);
            if hit && !dry_run(slot) {
                return Some(slot.op);
            }
        }
    }
    None
}

/// Offset of the DNS message in a packet to port 53.
#[inline(always)]
fn message(p: &Packet) -> Option<usize> {
    if p.dport != 53 {
        None
    } else if p.proto == 17 {
        Some(p.payload)
    } else if p.proto == 6 {
        // DNS over TCP: two length bytes first.
        Some(p.payload + 2)
    } else {
        None
    }
}

#[cgroup_skb(egress)]
pub fn fl_skb_dns(ctx: SkBuffContext) -> i32 {
    let Some(cfg) = CONFIG.get(0) else { return 1 };
    let eth_proto = u16::from_be(ctx.skb.protocol() as u16);
    let Some(mut p) = parse(eth_proto, 0, &ctx) else {
        return 1;
    };
    p.len = ctx.len();
    let Some(q) = message(&p).and_then(|m| query(m, &ctx, ctx.skb.skb)) else {
        return 1;
    };
    let skb = ctx.skb.skb;
    let hook = Hook {
        ifindex: 0,
        // SAFETY: `skb` is the context pointer the kernel passed, valid for the
        // program's run; the verifier checks the field read.
        skb_ifindex: unsafe { (*skb).ifindex },
    };
    // SAFETY: bpf_skb_ancestor_cgroup_id gets the program's own context
    // pointer (valid for the run) and a level by value; it returns 0 for a
    // level deeper than the socket's cgroup.
    let verdict = decide(cfg, hook, &p, &q, |level| unsafe {
        aya_ebpf::helpers::generated::bpf_skb_ancestor_cgroup_id(skb.cast(), level as i32)
    });
    // A cgroup program cannot rewrite the packet: every failure is a drop
    // (2: dropped with congestion notification, silent for UDP senders).
    if verdict.is_some() { 2 } else { 1 }
}

#[classifier]
pub fn fl_tc_dns(ctx: TcContext) -> i32 {
    let Some(cfg) = CONFIG.get(0) else {
        return TC_ACT_OK;
    };
    let eth_proto = u16::from_be(ctx.skb.protocol() as u16);
    // SAFETY: `ctx.skb.skb` is the context pointer the kernel passed, valid
    // for the program's run; the verifier checks the field read.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some(mut p) = parse(eth_proto, ETH_HLEN, &ctx) else {
        return TC_ACT_OK;
    };
    p.len = ctx.len();
    let Some(q) = message(&p).and_then(|m| query(m, &ctx, ctx.skb.skb)) else {
        return TC_ACT_OK;
    };
    let hook = Hook {
        ifindex,
        skb_ifindex: ifindex,
    };
    match decide(cfg, hook, &p, &q, |_| 0) {
        None => TC_ACT_OK,
        // Answers only for UDP; a TCP query is lost, as on a dead resolver.
        Some(rcode) if rcode != 0 && p.proto == 17 => answer(&ctx, &p, ifindex, rcode),
        Some(_) => TC_ACT_SHOT,
    }
}

const TC_ACT_REDIRECT: i32 = 7;

/// Turns the DNS query in this egress packet into a response carrying
/// `rcode` and delivers it back to the sender (ingress of the same
/// interface): addresses, ports and MACs swapped, QR and RA set, the RCODE
/// written, the UDP checksum adjusted for the one changed word.
#[inline(always)]
fn answer(ctx: &TcContext, p: &Packet, ifindex: u32, rcode: u32) -> i32 {
    let Ok(eth) = ctx.load::<[u8; 12]>(0) else {
        return TC_ACT_SHOT;
    };
    let mut macs = [0u8; 12];
    let mut i = 0;
    while i < 6 {
        macs[i] = eth[6 + i];
        macs[6 + i] = eth[i];
        i += 1;
    }
    if ctx.store(0, &macs, 0).is_err() {
        return TC_ACT_SHOT;
    }
    // Swapping source and destination changes no checksum (a sum is
    // commutative); neither does swapping the ports.
    let swapped = if p.v6 {
        ctx.load::<[[u8; 16]; 2]>(p.l3 + 8)
            .ok()
            .is_some_and(|a| ctx.store(p.l3 + 8, &[a[1], a[0]], 0).is_ok())
    } else {
        ctx.load::<[[u8; 4]; 2]>(p.l3 + 12)
            .ok()
            .is_some_and(|a| ctx.store(p.l3 + 12, &[a[1], a[0]], 0).is_ok())
    };
    let ports_swapped = ctx
        .load::<[[u8; 2]; 2]>(p.l4)
        .ok()
        .is_some_and(|pt| ctx.store(p.l4, &[pt[1], pt[0]], 0).is_ok());
    let Ok(old) = ctx.load::<[u8; 2]>(p.payload + 2) else {
        return TC_ACT_SHOT;
    };
    // QR = 1, opcode and RD kept, AA/TC cleared; RA = 1, Z/AD/CD cleared, RCODE.
    let new = [(old[0] | 0x80) & 0xf9, 0x80 | (rcode as u8 & 0x0f)];
    if !swapped || !ports_swapped || ctx.store(p.payload + 2, &new, 0).is_err() {
        return TC_ACT_SHOT;
    }
    let _ = ctx.l4_csum_replace(
        p.l4 + 6,
        u64::from(u16::from_ne_bytes(old)),
        u64::from(u16::from_ne_bytes(new)),
        2 | BPF_F_MARK_MANGLED_0,
    );
    // SAFETY: bpf_redirect takes an ifindex and flags by value and touches no
    // memory.
    let r = unsafe { bpf_redirect(ifindex, BPF_F_INGRESS) };
    if r as i32 == TC_ACT_REDIRECT {
        TC_ACT_REDIRECT
    } else {
        TC_ACT_SHOT
    }
}

/// Whether the packet programs should hand this packet to a DNS program.
#[inline(always)]
pub fn wanted(cfg: &AgentConfig, dir: u32, p: &Packet) -> bool {
    cfg.dns_slot_count != 0 && dir == direction::EGRESS && message(p).is_some()
}
