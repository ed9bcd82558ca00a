//! Run-queue latency of impact targets: the time a target thread waits
//! between becoming runnable (woken, or preempted while still runnable)
//! and being switched in.
//!
//! Every event is attributed to the task it is about — the woken task,
//! `prev` and `next` of `sched_switch` — read from the tracepoint's
//! arguments, never from `bpf_get_current_*`: a wakeup runs in the waker's
//! context (libbpf-tools' runqlat filters its cgroup that way and so counts
//! the wrong tasks). The agent attaches these programs only while an
//! experiment measures impact, since `sched_switch` runs on every context
//! switch; a task outside every target costs a field read and an array
//! read per task an event is about (a tgid prefilter), and a hash lookup
//! only when the prefilter lets it through.

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, generated::bpf_ktime_get_ns},
    macros::{map, raw_tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::RawTracePointContext,
};
use faultline_common::runq::{
    MAX_IMPACT, MAX_RUNQ_TARGETS, MAX_RUNQ_WAITING, RUNQ_BUCKETS, RUNQ_FILTER_WORDS, RunqConfig,
    RunqHist, RunqStart,
};

/// The task_struct offsets (index 0).
#[map(name = "FL_RQ_CONFIG")]
pub static RQ_CONFIG: Array<RunqConfig> = Array::with_max_entries(1, 0);

/// tgid → the sessions measuring that process (bit i = session i).
#[map(name = "FL_RQ_TARGETS")]
pub static RQ_TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_RUNQ_TARGETS, 0);

/// The tgid prefilter: bit `tgid % 65536` set when a measured process may
/// have that tgid (word `(tgid / 64) % 1024`, bit `tgid % 64`).
#[map(name = "FL_RQ_FILTER")]
pub static RQ_FILTER: Array<u64> = Array::with_max_entries(RUNQ_FILTER_WORDS, 0);

/// Thread id → when it became runnable, for target threads waiting for a CPU.
#[map(name = "FL_RQ_START")]
pub static RQ_START: LruHashMap<u32, RunqStart> = LruHashMap::with_max_entries(MAX_RUNQ_WAITING, 0);

/// Per session, per CPU: the latency histogram (log2 µs).
#[map(name = "FL_RQ_HIST")]
pub static RQ_HIST: PerCpuArray<RunqHist> = PerCpuArray::with_max_entries(MAX_IMPACT, 0);

/// Reads a u32 field of a task at a BTF offset.
#[inline(always)]
fn task_u32(task: *const u8, offset: u32) -> Option<u32> {
    // SAFETY: bpf_probe_read_kernel copies from any kernel address and
    // returns Err on a fault instead of faulting; `task` is a task_struct
    // pointer from the tracepoint's arguments and the offset a u32 member
    // of it from the running kernel's BTF.
    unsafe { bpf_probe_read_kernel(task.add(offset as usize).cast::<u32>()).ok() }
}

/// Whether `task`'s process may be measured: false for almost every task,
/// at the cost of an array read (inlined by the verifier).
#[inline(always)]
fn maybe_target(tgid: u32) -> bool {
    RQ_FILTER
        .get((tgid >> 6) & (RUNQ_FILTER_WORDS - 1))
        .is_some_and(|w| w & (1u64 << (tgid & 63)) != 0)
}

/// The sessions measuring `task`'s process; 0 for most tasks.
#[inline(always)]
fn sessions_of(task: *const u8, cfg: &RunqConfig) -> u32 {
    let Some(tgid) = task_u32(task, cfg.task_tgid) else {
        return 0;
    };
    if !maybe_target(tgid) {
        return 0;
    }
    // SAFETY: HashMap::get is unsafe because user space may change the
    // value while the reference lives; it is copied at once (a torn read
    // is impossible for an aligned u32).
    unsafe { RQ_TARGETS.get(&tgid) }.copied().unwrap_or(0)
}

/// `task` (a target's thread, `mask` its sessions) became runnable now.
#[inline(always)]
fn runnable(task: *const u8, cfg: &RunqConfig, mask: u32) {
    let Some(tid) = task_u32(task, cfg.task_pid) else {
        return;
    };
    let start = RunqStart {
        // SAFETY: bpf_ktime_get_ns takes no arguments.
        since_ns: unsafe { bpf_ktime_get_ns() },
        mask,
        _pad: 0,
    };
    let _ = RQ_START.insert(&tid, &start, 0);
}

#[inline(always)]
fn on_wakeup(ctx: &RawTracePointContext) -> i32 {
    // TP_PROTO(struct task_struct *p): the woken task.
    let task: *const u8 = ctx.arg(0);
    let Some(cfg) = RQ_CONFIG.get(0) else {
        return 0;
    };
    if cfg.task_tgid == 0 {
        return 0;
    }
    let mask = sessions_of(task, cfg);
    if mask != 0 {
        runnable(task, cfg, mask);
    }
    0
}

#[raw_tracepoint(tracepoint = "sched_wakeup")]
pub fn fl_rq_wakeup(ctx: RawTracePointContext) -> i32 {
    on_wakeup(&ctx)
}

#[raw_tracepoint(tracepoint = "sched_wakeup_new")]
pub fn fl_rq_wakeup_new(ctx: RawTracePointContext) -> i32 {
    on_wakeup(&ctx)
}

/// TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct
/// *next, unsigned int prev_state), the same on 5.18 and later (6.1, 6.12,
/// 6.18; the agent checks the prototype in the kernel's BTF before
/// attaching).
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn fl_rq_switch(ctx: RawTracePointContext) -> i32 {
    let Some(cfg) = RQ_CONFIG.get(0) else {
        return 0;
    };
    if cfg.task_tgid == 0 {
        return 0;
    }
    let preempt: u64 = ctx.arg(0);
    let prev: *const u8 = ctx.arg(1);
    let next: *const u8 = ctx.arg(2);
    let prev_state: u64 = ctx.arg(3);

    let mask = sessions_of(prev, cfg);
    if mask != 0 {
        // A preempted task stays on the run queue whatever its state says;
        // otherwise state 0 (TASK_RUNNING) means it yielded and waits again.
        if preempt & 0xff != 0 || prev_state as u32 == 0 {
            runnable(prev, cfg, mask);
        } else if let Some(tid) = task_u32(prev, cfg.task_pid) {
            // It blocks: forget a wakeup it got while still on the CPU,
            // which no switch-in would end.
            let _ = RQ_START.remove(&tid);
        }
    }

    // Only a measured process's threads have a start time to end.
    if !task_u32(next, cfg.task_tgid).is_some_and(maybe_target) {
        return 0;
    }
    let Some(tid) = task_u32(next, cfg.task_pid) else {
        return 0;
    };
    let Some(p) = RQ_START.get_ptr(&tid) else {
        return 0;
    };
    // SAFETY: `p` is non-null (a successful lookup) and points at the value
    // in the map, valid for the program's run; copied at once.
    let start = unsafe { *p };
    let _ = RQ_START.remove(&tid);
    // SAFETY: bpf_ktime_get_ns takes no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let bucket = log2(now.saturating_sub(start.since_ns) / 1000);
    let mut i = 0;
    while i < MAX_IMPACT {
        if start.mask & (1 << i) != 0
            && let Some(h) = RQ_HIST.get_ptr_mut(i)
        {
            // SAFETY: a successful per-CPU lookup: this CPU's value, valid
            // for the program's run. sched_switch runs with interrupts off,
            // and no other program writes the histograms, so the plain add
            // cannot race.
            unsafe { (*h).buckets[bucket] += 1 };
        }
        i += 1;
    }
    0
}

/// floor(log2(v)) capped at the last bucket; 0 for v < 2. Written out
/// because BPF has no count-leading-zeros instruction.
#[inline(always)]
fn log2(mut v: u64) -> usize {
    let mut r = 0usize;
    if v >> 32 != 0 {
        v >>= 32;
        r += 32;
    }
    if v >> 16 != 0 {
        v >>= 16;
        r += 16;
    }
    if v >> 8 != 0 {
        v >>= 8;
        r += 8;
    }
    if v >> 4 != 0 {
        v >>= 4;
        r += 4;
    }
    if v >> 2 != 0 {
        v >>= 2;
        r += 2;
    }
    if v >> 1 != 0 {
        r += 1;
    }
    if r >= RUNQ_BUCKETS {
        r = RUNQ_BUCKETS - 1;
    }
    r & (RUNQ_BUCKETS - 1)
}
