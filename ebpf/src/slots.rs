//! Maps shared by all fault programs and the target/deadline/probability logic.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid,
        generated::{bpf_get_current_ancestor_cgroup_id, bpf_get_prandom_u32, bpf_ktime_get_boot_ns},
    },
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use faultline_common::{
    AgentConfig, COMM_LEN, FaultCounters, FaultSlot, MAX_FAULTS, MAX_TARGET_PIDS, NthKey, TargetSel,
    flags,
};

#[map(name = "FL_SLOTS")]
pub static SLOTS: Array<FaultSlot> = Array::with_max_entries(MAX_FAULTS, 0);

#[map(name = "FL_COUNTERS")]
pub static COUNTERS: PerCpuArray<FaultCounters> = PerCpuArray::with_max_entries(MAX_FAULTS, 0);

#[map(name = "FL_CONFIG")]
pub static CONFIG: Array<AgentConfig> = Array::with_max_entries(1, 0);

/// Per-process call counts for `nth_call` faults.
#[map(name = "FL_NTH")]
pub static NTH: HashMap<NthKey, u64> = HashMap::with_max_entries(8192, 0);

/// The calling task, read lazily: `comm` costs a helper call.
pub struct Caller {
    pub tgid: u32,
    comm: Option<[u8; COMM_LEN]>,
}

impl Caller {
    #[inline(always)]
    pub fn current() -> Self {
        Self {
            tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
            comm: None,
        }
    }

    #[inline(always)]
    fn comm(&mut self) -> [u8; COMM_LEN] {
        match self.comm {
            Some(c) => c,
            None => {
                let c = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
                self.comm = Some(c);
                c
            }
        }
    }
}

/// The agent, PID 1 and kernel threads are never faulted, whatever a slot says.
#[inline(always)]
pub fn protected(caller: &Caller) -> Option<u32> {
    let cfg = CONFIG.get(0)?;
    if caller.tgid <= 1 || caller.tgid == cfg.agent_tgid {
        return None;
    }
    Some(if cfg.slot_limit > MAX_FAULTS { MAX_FAULTS } else { cfg.slot_limit })
}

#[inline(always)]
fn pid_in(list: &[u32; MAX_TARGET_PIDS], n: u32, pid: u32) -> bool {
    let mut i = 0;
    while i < MAX_TARGET_PIDS {
        if i as u32 >= n {
            return false;
        }
        if list[i] == pid {
            return true;
        }
        i += 1;
    }
    false
}

#[inline(always)]
pub fn target_matches(t: &TargetSel, caller: &mut Caller) -> bool {
    if t.cgroup_id != 0 {
        // SAFETY: plain helper call.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(t.cgroup_level as i32) };
        if id != t.cgroup_id {
            return false;
        }
    }
    if t.npids != 0 && !pid_in(&t.pids, t.npids, caller.tgid) {
        return false;
    }
    if t.nexclude_pids != 0 && pid_in(&t.exclude_pids, t.nexclude_pids, caller.tgid) {
        return false;
    }
    if t.has_comm != 0 && caller.comm() != t.comm {
        return false;
    }
    if t.has_exclude_comm != 0 && caller.comm() == t.exclude_comm {
        return false;
    }
    true
}

/// Still before the slot's in-kernel deadline?
#[inline(always)]
pub fn live(slot: &FaultSlot) -> bool {
    // SAFETY: plain helper call.
    unsafe { bpf_ktime_get_boot_ns() < slot.deadline_ns }
}

#[inline(always)]
pub fn coin(slot: &FaultSlot) -> bool {
    // SAFETY: plain helper call.
    u64::from(unsafe { bpf_get_prandom_u32() }) < slot.threshold
}

#[inline(always)]
pub fn dry_run(slot: &FaultSlot) -> bool {
    slot.flags & flags::DRY_RUN != 0
}

#[inline(always)]
pub fn count(index: u32, injected: bool) {
    if let Some(c) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU value, and these programs run with migration disabled.
        unsafe {
            (*c).matched += 1;
            if injected {
                (*c).injected += 1;
            }
        }
    }
}
