//! A target pid leaves the kernel's maps with its process.
//!
//! A raw tracepoint on `sched_process_exit` deletes the exiting process's
//! entries in the pid map and the call-count map of every slot in use. It
//! runs before the pid is released, so a new process that is given the same
//! pid never inherits a fault (a SIGKILL, say). The agent attaches it only
//! while some slot lists pids or counts calls.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::raw_tracepoint, programs::RawTracePointContext,
};
use faultline_common::{MAX_FAULTS, SlotPid};

use crate::slots::{CONFIG, NTH, PIDS};

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn fl_process_exit(_ctx: RawTracePointContext) -> i32 {
    let id = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((id >> 32) as u32, id as u32);
    // Threads exit here too; the process is the thread-group leader.
    if tgid != tid {
        return 0;
    }
    let Some(cfg) = CONFIG.get(0) else {
        return 0;
    };
    let limit = cfg.slot_limit;
    let mut i = 0;
    while i < MAX_FAULTS {
        if i >= limit {
            break;
        }
        let key = SlotPid { slot: i, tgid };
        // Most keys are absent: a miss costs one hash lookup.
        let _ = PIDS.remove(&key);
        let _ = NTH.remove(&key);
        i += 1;
    }
    0
}
