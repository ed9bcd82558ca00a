//! Whether a matching packet is hit, for every packet kind but `bandwidth`
//! (`packet_loss`, `blackhole`, `duplicate`, `corrupt`, `latency`):
//! Bernoulli with the slot's threshold, or the Gilbert two-state model with
//! its per-CPU state.

use aya_ebpf::{helpers::generated::bpf_get_prandom_u32, macros::map, maps::PerCpuArray};
use faultline_common::{FaultSlot, MAX_FAULTS};

/// Gilbert model state per slot and CPU: 0 = good, 1 = bad (dropping).
#[map(name = "FL_GE_STATE")]
static GE_STATE: PerCpuArray<u32> = PerCpuArray::with_max_entries(MAX_FAULTS, 0);

/// Bernoulli, or the Gilbert model when `leave_bad` is set.
#[inline(always)]
pub(super) fn lose(index: u32, slot: &FaultSlot) -> bool {
    // SAFETY: bpf_get_prandom_u32 takes no arguments and touches no memory.
    let r = u64::from(unsafe { bpf_get_prandom_u32() });
    if slot.net.leave_bad == 0 {
        return r < slot.threshold;
    }
    let Some(state) = GE_STATE.get_ptr_mut(index) else {
        return false;
    };
    // SAFETY: `state` is non-null (checked by the let-else above) and points
    // at this CPU's value of a map, valid for the program's run; the value is
    // per-CPU and these programs run with migration disabled, so nothing else
    // accesses it meanwhile.
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
