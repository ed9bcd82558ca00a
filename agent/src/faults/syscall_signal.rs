//! `syscall_signal`: the `sys_enter` raw tracepoint sends a signal to a
//! target that enters the chosen syscall (crash-at-syscall).

use faultline_common::{FaultSlot, kind};

use crate::domain::SyscallSignalSpec;

pub fn fill(spec: &SyscallSignalSpec, slot: &mut FaultSlot) {
    slot.kind = kind::SYSCALL_SIGNAL;
    slot.op = spec.syscall.number();
    slot.signal = spec.signal.number();
    slot.threshold = spec.probability.threshold();
    slot.nth_call = spec.nth_call;
}
