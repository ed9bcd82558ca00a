//! `bandwidth` and `latency` arithmetic: the per-slot token bucket that
//! polices a rate, earliest-departure-time shaping, and the jittered delay.

use aya_ebpf::{
    helpers::generated::{bpf_get_prandom_u32, bpf_ktime_get_boot_ns, bpf_ktime_get_ns},
    macros::map,
    maps::Array,
};
use faultline_common::{FaultSlot, MAX_FAULTS, NetMatch};

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

/// Token-bucket policing: true when the packet exceeds the rate.
#[expect(
    clippy::implicit_saturating_sub,
    reason = "explicit branch: the code shape the kernels' verifiers accepted is kept"
)]
#[inline(always)]
pub(super) fn over_rate(index: u32, slot: &FaultSlot, len: u32) -> bool {
    const NANO: u64 = 1_000_000_000;
    let Some(b) = BUCKETS.get_ptr_mut(index) else {
        return false;
    };
    // SAFETY: bpf_ktime_get_boot_ns takes no arguments and touches no memory.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    // SAFETY: `b` is non-null (a successful lookup) and points at a `Bucket`
    // in the map, valid for the program's run. Another CPU may update it at
    // the same time: plain u64 loads and stores, so a race only miscounts
    // tokens (see BUCKETS), it cannot tear a pointer or index.
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
#[expect(
    clippy::manual_checked_ops,
    reason = "explicit zero test: the code shape the kernels' verifiers accepted is kept"
)]
#[inline(always)]
pub(super) fn departure(index: u32, slot: &FaultSlot, len: u32) -> Option<u64> {
    let b = BUCKETS.get_ptr_mut(index)?;
    // SAFETY: bpf_ktime_get_ns takes no arguments and touches no memory (tc
    // timestamps are CLOCK_MONOTONIC, hence this clock).
    let now = unsafe { bpf_ktime_get_ns() };
    let rate = slot.net.rate_bytes_per_sec;
    let gap = if rate == 0 {
        0
    } else {
        u64::from(len) * 1_000_000_000 / rate
    };
    // SAFETY: `b` is non-null (a successful lookup) and points at a `Bucket`
    // in the map, valid for the program's run. Another CPU may update it at
    // the same time: plain u64 loads and stores, so a race only miscounts
    // tokens (see BUCKETS), it cannot tear a pointer or index.
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

/// The slot's delay with uniform jitter in [delay - jitter, delay + jitter].
#[inline(always)]
pub(super) fn jittered(net: &NetMatch) -> u64 {
    if net.jitter_ns == 0 {
        return net.delay_ns;
    }
    // SAFETY: bpf_get_prandom_u32 takes no arguments and touches no memory.
    let r = u64::from(unsafe { bpf_get_prandom_u32() });
    let span = 2 * net.jitter_ns + 1;
    // r / 2^32 * span, without overflow for spans up to 2^32 ns (4.3 s).
    let offset = (r * (span >> 16)) >> 16;
    (net.delay_ns + offset).saturating_sub(net.jitter_ns)
}
