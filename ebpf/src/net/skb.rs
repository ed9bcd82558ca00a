//! The cgroup_skb programs (`fl_skb_egress`, `fl_skb_ingress`): `packet_loss`,
//! `blackhole` and `bandwidth` policing in cgroup scope (attached at the
//! cgroup2 root, filtered by the socket's cgroup), and interface scope
//! where TCX is not used (`flags::VIA_CGROUP_SKB`). Only drops: a cgroup
//! program cannot change or hold a packet.
//!
//! Egress drops return 2 (drop, congestion notified) so the sender sees no
//! error, as with a real lossy network. SSH (port 22) and the agent's own
//! control port are never dropped unless a slot allows SSH.

use aya_ebpf::{
    helpers::generated::bpf_skb_ancestor_cgroup_id,
    macros::{cgroup_skb, map},
    maps::ProgramArray,
    programs::SkBuffContext,
};
use faultline_common::direction;

use super::{
    decide::{Hook, Verdict, decide},
    dns,
    parse::parse,
};
use crate::slots::CONFIG;

/// Tail-call target for DNS queries (see `dns`): `fl_skb_dns` at 0. One
/// array per program type, since a program array serves only one type
/// (`FL_DNS_TC` in `tc` is the other).
#[map(name = "FL_DNS_SKB")]
static DNS_SKB: ProgramArray = ProgramArray::with_max_entries(1, 0);

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
        // SAFETY: `skb` is the context pointer the kernel passed, valid for the
        // program's run; the verifier checks the field read.
        skb_ifindex: unsafe { (*skb).ifindex },
    };
    // SAFETY: bpf_skb_ancestor_cgroup_id gets the program's own context
    // pointer (valid for the run) and a level by value; it returns 0 for a
    // level deeper than the socket's cgroup.
    let drop = decide(cfg, dir, hook, &p, |level| unsafe {
        bpf_skb_ancestor_cgroup_id(skb.cast(), level as i32)
    }) == Verdict::Drop;
    if !drop && dns::wanted(cfg, dir, &p) {
        // SAFETY: a tail call only jumps; the kernel checks that the program in
        // the array has this program's type (the agent puts `fl_skb_dns` there), and on
        // an empty slot the call returns and the packet passes.
        unsafe { DNS_SKB.tail_call(ctx, 0) };
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
