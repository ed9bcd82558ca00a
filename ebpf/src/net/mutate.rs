//! Changes the TCX programs make to a packet they let through: a flipped
//! bit (`corrupt`), the mark on duplicates (`duplicate`), and the earliest
//! departure time (`latency`, shaped `bandwidth`).

use aya_ebpf::{
    helpers::generated::{bpf_get_prandom_u32, bpf_ktime_get_ns},
    programs::TcContext,
};

use super::parse::Packet;

pub(crate) const BPF_F_MARK_MANGLED_0: u64 = 1 << 5;

/// Flips one random bit. Left wrong (IPv4): in the IP header's
/// identification field, whose header checksum every receiver verifies, so
/// the frame is dropped as a corrupted one would be. Otherwise in the first
/// two payload bytes, with the L4 checksum fixed when `recompute` (the
/// receiver gets corrupted data) or not (dropped wherever the checksum is
/// verified).
#[inline(always)]
pub(super) fn corrupt(ctx: &TcContext, p: &Packet, recompute: bool) {
    // SAFETY: bpf_get_prandom_u32 takes no arguments and touches no memory.
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
pub(super) const DUP_MARK: u32 = 0x464c_4450;
pub(crate) const BPF_F_INGRESS: u64 = 1;

/// Earliest departure `ns` from now (the interface's fq qdisc holds the
/// packet until then). A time already set (TCP's own pacing) is kept as the
/// base, so the delay adds to it.
#[inline(always)]
pub(super) fn delay(ctx: &TcContext, ns: u64) {
    // SAFETY: bpf_ktime_get_ns takes no arguments; `ctx.skb.skb` is the
    // context pointer the kernel passed, valid for the program's run, and
    // `tstamp` is a field tc programs may read and write (the verifier checks
    // every context access).
    unsafe {
        let now = bpf_ktime_get_ns();
        let cur = (*ctx.skb.skb).tstamp;
        (*ctx.skb.skb).tstamp = if cur > now { cur } else { now } + ns;
    }
}
