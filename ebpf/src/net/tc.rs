//! The TCX programs (`fl_tc_egress`, `fl_tc_ingress`, `fl_tcx_keep`):
//! network faults in interface scope (except slots marked
//! `flags::VIA_CGROUP_SKB`, which `skb` handles). Besides dropping, they
//! delay (`latency`, shaped `bandwidth`), duplicate and corrupt packets,
//! which only a tc program can do.

use aya_ebpf::{
    bindings::TC_ACT_OK as TC_OK,
    macros::{classifier, map},
    maps::ProgramArray,
    programs::TcContext,
};
use faultline_common::direction;

use super::{
    decide::{Hook, Verdict, decide},
    dns,
    mutate::{BPF_F_INGRESS, DUP_MARK, corrupt, delay},
    parse::{ETH_HLEN, parse},
};
use crate::slots::CONFIG;

pub(crate) const TC_ACT_SHOT: i32 = 2;

/// Tail-call target for DNS queries (see `dns`): `fl_tc_dns` at 0 (a
/// program array serves only one program type; `FL_DNS_SKB` in `skb` is
/// the cgroup_skb one).
#[map(name = "FL_DNS_TC")]
static DNS_TC: ProgramArray = ProgramArray::with_max_entries(1, 0);

#[inline(always)]
fn tc_drop(ctx: &TcContext, dir: u32) -> i32 {
    let eth_proto = u16::from_be(ctx.skb.protocol() as u16);
    // SAFETY: `ctx.skb.skb` is the context pointer the kernel passed, valid
    // for the program's run; the verifier checks the field reads.
    let (ifindex, mark) = unsafe { ((*ctx.skb.skb).ifindex, (*ctx.skb.skb).mark) };
    if mark == DUP_MARK {
        return TC_OK;
    }
    let Some(mut p) = parse(eth_proto, ETH_HLEN, ctx) else {
        return TC_OK;
    };
    p.len = ctx.len();
    let Some(cfg) = CONFIG.get(0) else {
        return TC_OK;
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
        // SAFETY: a tail call only jumps; the kernel checks that the program in
        // the array has this program's type (the agent puts `fl_tc_dns` there), and on
        // an empty slot the call returns and the packet passes.
        unsafe { DNS_TC.tail_call(ctx, 0) };
        return TC_OK;
    }
    match verdict {
        Verdict::Pass => TC_OK,
        Verdict::Delay(ns) => {
            delay(ctx, ns);
            TC_OK
        }
        Verdict::Drop => TC_ACT_SHOT,
        Verdict::Corrupt(recompute) => {
            corrupt(ctx, &p, recompute);
            TC_OK
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
            TC_OK
        }
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
