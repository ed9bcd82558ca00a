//! `syscall_signal`: deliver a signal when a target enters a chosen syscall.
//!
//! A raw tracepoint on `sys_enter` runs on every syscall of every process,
//! so the agent attaches it only while such a fault is active, and the
//! program leaves through one array lookup for syscalls nobody watches.

use aya_ebpf::{
    helpers::generated::bpf_send_signal,
    macros::{map, raw_tracepoint},
    maps::Array,
    programs::RawTracePointContext,
};
use faultline_common::{MAX_FAULTS, MAX_SYSCALL_NR, SlotPid, kind};

use crate::slots::{
    Caller, NTH, SLOTS, coin, count, count_map_full, dry_run, live, scan_limit, target_matches,
};

/// Number of active signal faults per syscall number.
#[map(name = "FL_WATCHED")]
pub static WATCHED: Array<u32> = Array::with_max_entries(MAX_SYSCALL_NR, 0);

#[raw_tracepoint(tracepoint = "sys_enter")]
#[expect(
    clippy::collapsible_if,
    reason = "collapsing into a let chain changes the generated code (2 more instructions)"
)]
pub fn fl_sys_enter(ctx: RawTracePointContext) -> i32 {
    let nr: u64 = ctx.arg(1);
    if nr >= u64::from(MAX_SYSCALL_NR) {
        return 0;
    }
    let nr = nr as u32;
    match WATCHED.get(nr) {
        Some(n) if *n != 0 => {}
        _ => return 0,
    }
    let caller = Caller::current();
    let Some(limit) = scan_limit(&caller) else {
        return 0;
    };
    let mut i = 0;
    while i < MAX_FAULTS {
        if i >= limit {
            break;
        }
        if let Some(slot) = SLOTS.get(i) {
            if slot.kind == kind::SYSCALL_SIGNAL
                && slot.op == nr
                && live(slot)
                && target_matches(i, &slot.target, &caller)
            {
                let hit = if slot.nth_call != 0 {
                    match nth_reached(i, caller.tgid, slot.nth_call) {
                        Some(hit) => hit,
                        None => {
                            // FL_NTH is full: this process's calls cannot be
                            // counted, so none of them is its Nth. Fail
                            // closed (no signal) and say so in the counters.
                            count_map_full(i);
                            false
                        }
                    }
                } else {
                    coin(slot)
                };
                count(i, hit);
                if hit && !dry_run(slot) {
                    // SAFETY: bpf_send_signal takes a signal number by value and touches no
                    // memory; it signals the current process.
                    unsafe { bpf_send_signal(slot.signal) };
                    return 0;
                }
            }
        }
        i += 1;
    }
    0
}

/// Counts this process's calls for the slot; true exactly at the Nth, None
/// when the process has no count and the map has no room for one.
/// Not atomic: two threads racing on two CPUs may share a count.
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "passing the key by value changes the generated code of fl_sys_enter"
)]
#[inline(always)]
fn nth_reached(slot: u32, tgid: u32, nth: u64) -> Option<bool> {
    let key = SlotPid { slot, tgid };
    let n = match NTH.get_ptr_mut(&key) {
        // SAFETY: `p` is non-null (a successful lookup) and points at the value
        // in the map, valid for the program's run. Two threads of one
        // process on two CPUs may race here: a plain u64, so a race only
        // loses a count (see above).
        Some(p) => unsafe {
            *p += 1;
            *p
        },
        None => {
            NTH.insert(&key, &1, 0).ok()?;
            1
        }
    };
    Some(n == nth)
}
