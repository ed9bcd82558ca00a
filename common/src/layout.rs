//! The layouts the kernel programs and the agent agree on, checked at
//! compile time (for both the BPF target and the host).

use crate::{
    AgentConfig, COMM_LEN, FaultCounters, FaultSlot, FileMatch, KernelOffsets, NetMatch, SlotPid,
    TargetSel,
    runq::{RUNQ_BUCKETS, RunqConfig, RunqHist, RunqStart},
};

/// Compile-time layout checks: `$t` is `$size` bytes, each listed field has
/// the listed type and sits at the listed offset, and the field sizes add up
/// to `$size`, so the type has no implicit padding (padding is an explicit
/// `_pad` field, zeroed by `Default`, so no byte of a map value is undefined).
/// Change a layout only together with both sides of the map.
macro_rules! assert_layout {
    ($t:ty, $size:expr, { $($field:ident: $ft:ty = $off:expr),+ $(,)? }) => {
        const _: () = {
            assert!(
                core::mem::size_of::<$t>() == $size,
                concat!("size of ", stringify!($t))
            );
            assert!(
                0 $(+ core::mem::size_of::<$ft>())+ == $size,
                concat!("implicit padding in ", stringify!($t))
            );
            $(assert!(
                core::mem::offset_of!($t, $field) == $off,
                concat!("offset of ", stringify!($t), ".", stringify!($field))
            );)+
        };
        // The listed field types are the real ones.
        const _: () = {
            $(let _: fn(&$t) -> &$ft = |v| &v.$field;)+
        };
    };
}

assert_layout!(TargetSel, 64, {
    cgroup_id: u64 = 0,
    cgroup_level: u32 = 8,
    npids: u32 = 12,
    nexclude_pids: u32 = 16,
    has_comm: u32 = 20,
    comm: [u8; COMM_LEN] = 24,
    has_exclude_comm: u32 = 40,
    _pad: u32 = 44,
    exclude_comm: [u8; COMM_LEN] = 48,
});

assert_layout!(NetMatch, 128, {
    ifindex: u32 = 0,
    direction: u32 = 4,
    proto: u32 = 8,
    src_v4: u32 = 12,
    src_v4_prefix: u32 = 16,
    dst_v4: u32 = 20,
    dst_v4_prefix: u32 = 24,
    src_v6_prefix: u32 = 28,
    src_v6: [u32; 4] = 32,
    dst_v6: [u32; 4] = 48,
    dst_v6_prefix: u32 = 64,
    sport_lo: u32 = 68,
    sport_hi: u32 = 72,
    dport_lo: u32 = 76,
    dport_hi: u32 = 80,
    leave_bad: u32 = 84,
    burst_bytes: u32 = 88,
    _pad: u32 = 92,
    rate_bytes_per_sec: u64 = 96,
    delay_ns: u64 = 104,
    jitter_ns: u64 = 112,
    dns_hash: u64 = 120,
});

assert_layout!(FileMatch, 24, {
    ino: u64 = 0,
    dev: u32 = 8,
    has_path: u32 = 12,
    generation: u32 = 16,
    has_generation: u32 = 20,
});

assert_layout!(FaultSlot, 296, {
    kind: u32 = 0,
    flags: u32 = 4,
    deadline_ns: u64 = 8,
    threshold: u64 = 16,
    errno: u32 = 24,
    signal: u32 = 28,
    op: u32 = 32,
    port: u32 = 36,
    nth_call: u64 = 40,
    v4_addr: u32 = 48,
    v4_prefix: u32 = 52,
    v6_addr: [u32; 4] = 56,
    v6_prefix: u32 = 72,
    _pad: u32 = 76,
    target: TargetSel = 80,
    net: NetMatch = 144,
    file: FileMatch = 272,
});

assert_layout!(KernelOffsets, 52, {
    valid: u32 = 0,
    file_dentry: u32 = 4,
    dentry_parent: u32 = 8,
    dentry_inode: u32 = 12,
    inode_ino: u32 = 16,
    inode_sb: u32 = 20,
    inode_mode: u32 = 24,
    sb_dev: u32 = 28,
    bprm_file: u32 = 32,
    vma_file: u32 = 36,
    socket_sk: u32 = 40,
    sock_num: u32 = 44,
    inode_generation: u32 = 48,
});

assert_layout!(FaultCounters, 24, {
    matched: u64 = 0,
    injected: u64 = 8,
    not_injected_map_full: u64 = 16,
});

assert_layout!(AgentConfig, 48, {
    agent_tgid: u32 = 0,
    slot_limit: u32 = 4,
    control_port: u32 = 8,
    net_slot_count: u32 = 12,
    lsm_slot_count: u32 = 16,
    dns_slot_count: u32 = 20,
    pace_at_connect: u32 = 24,
    task_flags_offset: u32 = 28,
    agent_cgroup_id: u64 = 32,
    agent_cgroup_level: u32 = 40,
    _pad: u32 = 44,
});

assert_layout!(SlotPid, 8, {
    slot: u32 = 0,
    tgid: u32 = 4,
});

assert_layout!(RunqConfig, 8, {
    task_pid: u32 = 0,
    task_tgid: u32 = 4,
});

assert_layout!(RunqStart, 16, {
    since_ns: u64 = 0,
    mask: u32 = 8,
    _pad: u32 = 12,
});

assert_layout!(RunqHist, 256, {
    buckets: [u64; RUNQ_BUCKETS] = 0,
});
