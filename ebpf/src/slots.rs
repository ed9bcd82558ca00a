//! Maps shared by all fault programs and the target/deadline/probability logic.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        generated::{
            bpf_get_current_ancestor_cgroup_id, bpf_get_current_task, bpf_get_prandom_u32,
            bpf_ktime_get_boot_ns,
        },
    },
    macros::map,
    maps::{Array, HashMap, LpmTrie, PerCpuArray, lpm_trie::Key},
};
use faultline_common::{
    AgentConfig, COMM_LEN, FaultCounters, FaultSlot, MAX_FAULTS, MAX_PROTECTED_NAMES,
    MAX_PROTECTED_PIDS, PF_KTHREAD, SlotPid, TargetSel, flags, pid_role,
};

#[map(name = "FL_SLOTS")]
pub static SLOTS: Array<FaultSlot> = Array::with_max_entries(MAX_FAULTS, 0);

#[map(name = "FL_COUNTERS")]
pub static COUNTERS: PerCpuArray<FaultCounters> = PerCpuArray::with_max_entries(MAX_FAULTS, 0);

#[map(name = "FL_CONFIG")]
pub static CONFIG: Array<AgentConfig> = Array::with_max_entries(1, 0);

/// Per-process call counts for `nth_call` faults, shared by every slot.
/// The agent sets its size at load (config `nth_call_capacity`); when it is
/// full, a process without a count is never signalled.
#[map(name = "FL_NTH")]
pub static NTH: HashMap<SlotPid, u64> = HashMap::with_max_entries(8192, 0);

/// Pids a slot's target includes or excludes (`pid_role::*`).
#[map(name = "FL_PIDS")]
pub static PIDS: HashMap<SlotPid, u32> = HashMap::with_max_entries(4096, 0);

/// Processes that are never faulted (besides the agent and PID 1): the
/// configured protected pids and processes with a protected name.
#[map(name = "FL_PROTECTED")]
pub static PROTECTED: HashMap<u32, u8> = HashMap::with_max_entries(MAX_PROTECTED_PIDS, 0);

/// Process names that are never faulted, checked on every event so that a
/// protected process started after the experiment is spared too. Longest
/// prefix match: an exact name is stored with its terminating NUL (`sshd`
/// is 5 bytes), a pattern `sshd*` without (4 bytes), so the one lookup of
/// the task's NUL-padded comm answers both.
#[map(name = "FL_PROT_COMMS")]
pub static PROTECTED_COMMS: LpmTrie<[u8; COMM_LEN], u8> =
    LpmTrie::with_max_entries(MAX_PROTECTED_NAMES, 0);

/// The calling task. Only the tgid is read up front: a process that no
/// slot targets pays for one helper call, and its name is read only when a
/// slot needs it (each read is a fresh helper call, not a cached Option,
/// which would double the states the verifier walks per slot).
pub struct Caller {
    pub tgid: u32,
}

impl Caller {
    #[inline(always)]
    pub fn current() -> Self {
        Self {
            tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        }
    }
}

#[inline(always)]
fn current_comm() -> [u8; COMM_LEN] {
    bpf_get_current_comm().unwrap_or([0; COMM_LEN])
}

/// How far to scan, or None for the agent, PID 1 and kernel threads, which
/// are never faulted whatever a slot says.
#[inline(always)]
pub fn scan_limit(caller: &Caller) -> Option<u32> {
    let cfg = CONFIG.get(0)?;
    if caller.tgid <= 1 || caller.tgid == cfg.agent_tgid {
        return None;
    }
    Some(if cfg.slot_limit > MAX_FAULTS {
        MAX_FAULTS
    } else {
        cfg.slot_limit
    })
}

/// Kernel threads, the agent's own cgroup, configured protected pids and
/// names. Checked only once a slot matched, so processes no fault targets
/// never pay for these lookups.
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "passing the keys by value changes the generated code (measured: one more instruction in each LSM program)"
)]
#[inline(always)]
pub fn protected(caller: &Caller) -> bool {
    if let Some(cfg) = CONFIG.get(0) {
        if kernel_thread(cfg) {
            return true;
        }
        // SAFETY: bpf_get_current_ancestor_cgroup_id takes a level by value
        // and touches no memory.
        if cfg.agent_cgroup_id != 0
            && unsafe { bpf_get_current_ancestor_cgroup_id(cfg.agent_cgroup_level as i32) }
                == cfg.agent_cgroup_id
        {
            return true;
        }
    }
    // SAFETY: HashMap::get is unsafe because another CPU or user space may
    // change or delete the value while the reference lives; here no value is
    // read, only whether the key is present.
    if unsafe { PROTECTED.get(&caller.tgid).is_some() } {
        return true;
    }
    let key = Key::new((COMM_LEN * 8) as u32, current_comm());
    PROTECTED_COMMS.get(&key).is_some()
}

/// Is the current task a kernel thread (`PF_KTHREAD`)?
#[inline(always)]
fn kernel_thread(cfg: &AgentConfig) -> bool {
    if cfg.task_flags_offset == 0 {
        return false;
    }
    // SAFETY: bpf_get_current_task takes no arguments and returns the
    // current task's address; bpf_probe_read_kernel copies from any kernel
    // address and returns Err on a fault instead of faulting, and the offset
    // is `task_struct.flags` from the running kernel's BTF.
    let flags = unsafe {
        let task = bpf_get_current_task() as *const u8;
        bpf_probe_read_kernel(task.add(cfg.task_flags_offset as usize).cast::<u32>())
    };
    flags.map_or(false, |f| f & PF_KTHREAD != 0)
}

#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "passing the keys by value changes the generated code (measured: one more instruction in each LSM program)"
)]
#[inline(always)]
pub fn target_matches(index: u32, t: &TargetSel, caller: &Caller) -> bool {
    if t.cgroup_id != 0 {
        // SAFETY: bpf_get_current_ancestor_cgroup_id takes a level by value and
        // touches no memory (it returns 0 for a level deeper than the task's).
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(t.cgroup_level as i32) };
        if id != t.cgroup_id {
            return false;
        }
    }
    if t.npids != 0 || t.nexclude_pids != 0 {
        let key = SlotPid {
            slot: index,
            tgid: caller.tgid,
        };
        // SAFETY: the value is copied out at once, so no reference outlives a
        // concurrent update (a race yields the old or the new role).
        let role = unsafe { PIDS.get(&key) }.copied().unwrap_or(0);
        if t.npids != 0 && role & pid_role::INCLUDE == 0 {
            return false;
        }
        if role & pid_role::EXCLUDE != 0 {
            return false;
        }
    }
    if t.has_comm != 0 && current_comm() != t.comm {
        return false;
    }
    if t.has_exclude_comm != 0 && current_comm() == t.exclude_comm {
        return false;
    }
    !protected(caller)
}

/// Still before the slot's in-kernel deadline?
#[inline(always)]
pub fn live(slot: &FaultSlot) -> bool {
    // SAFETY: bpf_ktime_get_boot_ns takes no arguments and touches no memory.
    unsafe { bpf_ktime_get_boot_ns() < slot.deadline_ns }
}

#[inline(always)]
pub fn coin(slot: &FaultSlot) -> bool {
    // SAFETY: bpf_get_prandom_u32 takes no arguments and touches no memory.
    u64::from(unsafe { bpf_get_prandom_u32() }) < slot.threshold
}

#[inline(always)]
pub fn dry_run(slot: &FaultSlot) -> bool {
    slot.flags & flags::DRY_RUN != 0
}

#[inline(always)]
pub fn count(index: u32, injected: bool) {
    if let Some(c) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: `c` is non-null (a successful lookup) and points at this CPU's
        // value of a map, valid for the program's run; per-CPU, and these
        // programs run with migration disabled, so nothing else writes it.
        unsafe {
            (*c).matched += 1;
            if injected {
                (*c).injected += 1;
            }
        }
    }
}

/// A call an `nth_call` fault could not count (`FL_NTH` full).
#[inline(always)]
pub fn count_map_full(index: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: as in `count`: this CPU's value, valid for the program's run.
        unsafe { (*c).not_injected_map_full += 1 };
    }
}
