//! Run-queue latency of the targets of impact measurement: the scheduler
//! programs (`ebpf/src/runq.rs`) and the agent (`agent/src/kernel/runq.rs`)
//! share these.

/// Impact sessions measured at once; each owns one bit of a target's mask
/// and one histogram.
pub const MAX_IMPACT: u32 = 16;
/// Histogram buckets: bucket i counts latencies in [2^i, 2^(i+1)) µs
/// (bucket 0 also those under 1 µs; the last also everything longer).
pub const RUNQ_BUCKETS: usize = 32;
/// Processes (tgids) all sessions together may measure (`FL_RQ_TARGETS`).
pub const MAX_RUNQ_TARGETS: u32 = 8192;
/// Runnable target threads waiting for a CPU at once (`FL_RQ_START`, an
/// LRU map: a lost entry loses one sample, never a wrong one).
pub const MAX_RUNQ_WAITING: u32 = 16384;
/// Words of the tgid prefilter (`FL_RQ_FILTER`): bit `tgid % 65536` is set
/// when some measured process has that remainder, so the programs skip
/// almost every other task with an array read instead of a hash lookup.
pub const RUNQ_FILTER_WORDS: u32 = 1024;

/// Where the programs read a task's ids (`FL_RQ_CONFIG`, index 0), from
/// the running kernel's BTF. `task_tgid == 0` (unknown) makes the programs
/// do nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunqConfig {
    /// Byte offset of `task_struct.pid` (the thread id).
    pub task_pid: u32,
    /// Byte offset of `task_struct.tgid` (the process id).
    pub task_tgid: u32,
}

/// A target thread became runnable (`FL_RQ_START`, by thread id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunqStart {
    /// `bpf_ktime_get_ns` when it was woken or preempted.
    pub since_ns: u64,
    /// The sessions measuring its process (bit i = session i).
    pub mask: u32,
    pub _pad: u32,
}

/// One session's histogram (`FL_RQ_HIST`, per CPU, by session index).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunqHist {
    pub buckets: [u64; RUNQ_BUCKETS],
}

impl Default for RunqHist {
    fn default() -> Self {
        Self {
            buckets: [0; RUNQ_BUCKETS],
        }
    }
}
