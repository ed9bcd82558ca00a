//! Types shared by the kernel programs (`faultline-ebpf`) and the agent.
//!
//! Every struct is `#[repr(C)]`, contains no `bool` and no implicit padding, so
//! the same bytes mean the same thing on both sides of the map.
#![no_std]

/// Number of fault slots. One active fault occupies one slot.
pub const MAX_FAULTS: u32 = 128;
/// Pids a target may list explicitly (include and exclude each).
pub const MAX_TARGET_PIDS: usize = 64;
/// Length of a task's `comm`, including the trailing NUL.
pub const COMM_LEN: usize = 16;
/// Capacity of the kernel's protected-pid set (`FL_PROTECTED`).
pub const MAX_PROTECTED_PIDS: u32 = 4096;
/// Capacity of the kernel's protected-name set (`FL_PROT_COMMS`, exact names and prefixes).
pub const MAX_PROTECTED_NAMES: u32 = 64;
/// Network faults active at once: the packet programs scan only the slots
/// listed in `FL_NET_SLOTS`, which keeps their per-packet cost and their
/// verification small.
pub const MAX_NET_SLOTS: u32 = 32;
/// `dns_error` faults active at once (listed in `FL_DNS_SLOTS`; the DNS
/// programs are the most expensive to verify per slot).
pub const MAX_DNS_SLOTS: u32 = 4;
/// Highest syscall number the signal program can watch (x86_64 uses < 512).
pub const MAX_SYSCALL_NR: u32 = 512;
/// LSM faults active at once: the LSM programs scan only the slots listed in
/// `FL_LSM_SLOTS`, for the same reasons as `MAX_NET_SLOTS`.
pub const MAX_LSM_SLOTS: u32 = 16;
/// Directory levels the LSM programs climb when matching a path (a file
/// deeper than this below the fault's path is not matched).
pub const MAX_PATH_DEPTH: u32 = 32;

/// Which kernel program evaluates a slot.
pub mod kind {
    pub const NONE: u32 = 0;
    /// `syscall_error` through cgroup sock_addr hooks.
    pub const SOCK_ERROR: u32 = 1;
    /// `syscall_signal` through the `sys_enter` raw tracepoint.
    pub const SYSCALL_SIGNAL: u32 = 2;
    /// `packet_loss` and `blackhole` through cgroup_skb or TCX programs.
    pub const PACKET_DROP: u32 = 3;
    /// `duplicate` through TCX programs (interface scope only).
    pub const PACKET_DUP: u32 = 4;
    /// `corrupt` through TCX programs (interface scope only); `FaultSlot::op`
    /// is 1 to recompute checksums, 0 to leave them wrong.
    pub const PACKET_CORRUPT: u32 = 5;
    /// `bandwidth`: a token-bucket policer; packets over the rate are dropped.
    pub const PACKET_RATE: u32 = 6;

    /// `syscall_error` through BPF LSM hooks; `FaultSlot::op` holds `lsm_op::*`.
    pub const LSM_ERROR: u32 = 7;
    /// `latency`: the TCX egress program sets an earliest departure time
    /// (`skb->tstamp`), which the interface's fq qdisc honours.
    pub const PACKET_DELAY: u32 = 8;
    /// `dns_error`: DNS queries (to port 53) for names under a domain are
    /// dropped, or answered with `FaultSlot::op` as the RCODE (2 SERVFAIL,
    /// 3 NXDOMAIN) by turning the query into a response (TCX, UDP).
    pub const PACKET_DNS: u32 = 9;

    /// Kinds the packet programs handle (listed in `FL_NET_SLOTS`);
    /// `PACKET_DNS` has its own list (`FL_DNS_SLOTS`) and programs.
    pub const fn is_network(kind: u32) -> bool {
        (kind >= PACKET_DROP && kind <= PACKET_RATE) || kind == PACKET_DELAY
    }
}

/// Packet directions (bit flags in `NetMatch::direction`).
pub mod direction {
    pub const INGRESS: u32 = 1 << 0;
    pub const EGRESS: u32 = 1 << 1;
}

/// Socket operations the sock_addr programs can fail (bit flags in `FaultSlot::op`).
pub mod sock_op {
    pub const CONNECT: u32 = 1 << 0;
    pub const BIND: u32 = 1 << 1;
    pub const SENDMSG: u32 = 1 << 2;
}

/// Operations the LSM programs can fail (bit flags in `FaultSlot::op`), one
/// per group of syscalls that reach the same hook.
pub mod lsm_op {
    /// `file_open`: open, openat, openat2, creat.
    pub const OPEN: u32 = 1 << 0;
    /// `file_permission` with MAY_READ: read, pread64, readv, preadv.
    pub const READ: u32 = 1 << 1;
    /// `file_permission` with MAY_WRITE or MAY_APPEND: write, pwrite64, writev, pwritev.
    pub const WRITE: u32 = 1 << 2;
    /// `mmap_file`: mmap (file-backed and anonymous).
    pub const MMAP: u32 = 1 << 3;
    /// `file_mprotect`: mprotect.
    pub const MPROTECT: u32 = 1 << 4;
    /// `file_ioctl`: ioctl.
    pub const IOCTL: u32 = 1 << 5;
    /// `bprm_check_security`: execve, execveat.
    pub const EXEC: u32 = 1 << 6;
    /// `task_alloc`: fork, vfork, clone, clone3 (threads too).
    pub const FORK: u32 = 1 << 7;
    /// `task_kill`: kill, tkill, tgkill.
    pub const KILL: u32 = 1 << 8;
    /// `socket_create` (user sockets only): socket.
    pub const SOCKET: u32 = 1 << 9;
    /// `socket_accept`: accept, accept4.
    pub const ACCEPT: u32 = 1 << 10;
    /// `socket_listen`: listen.
    pub const LISTEN: u32 = 1 << 11;
    /// `socket_recvmsg`: recvmsg, recvfrom, recvmmsg.
    pub const RECVMSG: u32 = 1 << 12;
    /// `inode_unlink`: unlink, unlinkat.
    pub const UNLINK: u32 = 1 << 13;
    /// `inode_rmdir`: rmdir.
    pub const RMDIR: u32 = 1 << 14;
    /// `inode_mkdir`: mkdir, mkdirat.
    pub const MKDIR: u32 = 1 << 15;
    /// `inode_rename`: rename, renameat, renameat2.
    pub const RENAME: u32 = 1 << 16;
    /// `inode_link`: link, linkat.
    pub const LINK: u32 = 1 << 17;
    /// `inode_symlink`: symlink, symlinkat.
    pub const SYMLINK: u32 = 1 << 18;
}

/// Bit flags in `FaultSlot::flags`.
pub mod flags {
    /// Count what would be injected, inject nothing.
    pub const DRY_RUN: u32 = 1 << 0;
    /// Match IPv4 destinations.
    pub const FAMILY_V4: u32 = 1 << 1;
    /// Match IPv6 destinations.
    pub const FAMILY_V6: u32 = 1 << 2;
    /// Network faults may touch SSH (port 22) traffic.
    pub const INCLUDE_SSH: u32 = 1 << 3;
    /// `dns_error`: every name, not only those under `NetMatch::dns_hash`.
    pub const DNS_ANY_NAME: u32 = 1 << 4;
    /// `bandwidth` on an interface with fq: egress packets are shaped
    /// (given departure times `len / rate` apart) instead of policed.
    pub const SHAPE: u32 = 1 << 5;
    /// Interface scope without TCX: the cgroup_skb programs on the cgroup2
    /// root act on the packets local sockets send or receive through
    /// `NetMatch::ifindex` (forwarded packets are not seen there).
    pub const VIA_CGROUP_SKB: u32 = 1 << 6;
}

/// Who a fault applies to. Zero / empty fields mean "no constraint", but the
/// agent never writes a slot whose target has no constraint at all.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetSel {
    /// cgroup v2 id (inode) of the target cgroup; 0 = any cgroup.
    pub cgroup_id: u64,
    /// Depth of that cgroup below the cgroup2 root (root = 0).
    pub cgroup_level: u32,
    /// Number of included pids; they are keys in the `FL_PIDS` map
    /// (`PidKey` -> `pid_role::INCLUDE`), so matching is one lookup.
    pub npids: u32,
    /// Number of excluded pids (`pid_role::EXCLUDE` in `FL_PIDS`).
    pub nexclude_pids: u32,
    /// Non-zero when `comm` must match.
    pub has_comm: u32,
    pub comm: [u8; COMM_LEN],
    /// Non-zero when tasks whose comm equals `exclude_comm` are spared.
    pub has_exclude_comm: u32,
    pub _pad: u32,
    pub exclude_comm: [u8; COMM_LEN],
}

/// Which packets a network fault applies to. Addresses are big-endian words
/// as they appear in the packet; a prefix of 0 matches any address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetMatch {
    /// Interface scope (TCX on this ifindex); 0 = cgroup scope (cgroup_skb).
    pub ifindex: u32,
    /// `direction::*` bits.
    pub direction: u32,
    /// IP protocol number (6 tcp, 17 udp, 1 icmp / 58 icmpv6); 0 = any.
    pub proto: u32,
    pub src_v4: u32,
    pub src_v4_prefix: u32,
    pub dst_v4: u32,
    pub dst_v4_prefix: u32,
    pub src_v6_prefix: u32,
    pub src_v6: [u32; 4],
    pub dst_v6: [u32; 4],
    pub dst_v6_prefix: u32,
    /// Inclusive port ranges in host byte order; 0..=65535 = any.
    pub sport_lo: u32,
    pub sport_hi: u32,
    pub dport_lo: u32,
    pub dport_hi: u32,
    /// Gilbert loss model: when non-zero, `threshold` is P(good -> bad) and
    /// this is P(bad -> good), per packet, scaled to 2^32. Every packet in the
    /// bad state is dropped.
    pub leave_bad: u32,
    /// `bandwidth`: bucket depth in bytes.
    pub burst_bytes: u32,
    pub _pad: u32,
    /// `bandwidth`: token rate in bytes per second.
    pub rate_bytes_per_sec: u64,
    /// `latency`: fixed delay, and the half-width of the uniform jitter
    /// around it, in nanoseconds.
    pub delay_ns: u64,
    pub jitter_ns: u64,
    /// `dns_error`: `dns::suffix_hash` of the domain in DNS wire format.
    pub dns_hash: u64,
}

pub mod dns;

/// One fault's parameters, written by the agent and read by the programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultSlot {
    /// `kind::*`; `kind::NONE` means the slot is free.
    pub kind: u32,
    /// `flags::*`.
    pub flags: u32,
    /// `CLOCK_BOOTTIME` nanoseconds after which the program stops injecting.
    pub deadline_ns: u64,
    /// Inject when `bpf_get_prandom_u32() < threshold` (0..=2^32).
    pub threshold: u64,
    /// Positive errno for `SOCK_ERROR`.
    pub errno: u32,
    /// Signal number for `SYSCALL_SIGNAL`.
    pub signal: u32,
    /// `sock_op::*` for `SOCK_ERROR`, syscall number for `SYSCALL_SIGNAL`.
    pub op: u32,
    /// Destination (or bound) port in host byte order; 0 = any.
    pub port: u32,
    /// Signal at the Nth matching call of a process (1-based); 0 = use `threshold`.
    pub nth_call: u64,
    /// IPv4 network in network byte order, as `bpf_sock_addr::user_ip4` holds it.
    pub v4_addr: u32,
    /// IPv4 prefix length; 0 = any address.
    pub v4_prefix: u32,
    /// IPv6 network, four big-endian words as in `bpf_sock_addr::user_ip6`.
    pub v6_addr: [u32; 4],
    /// IPv6 prefix length; 0 = any address.
    pub v6_prefix: u32,
    pub _pad: u32,
    pub target: TargetSel,
    pub net: NetMatch,
    pub file: FileMatch,
}

/// The file-system subtree an LSM fault applies to: a file or directory,
/// identified by inode number, device and inode generation, matched by
/// climbing `d_parent` from the file a call touches. `has_path == 0`
/// matches every file.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileMatch {
    pub ino: u64,
    /// The kernel's `super_block::s_dev` (`major << 20 | minor`).
    pub dev: u32,
    pub has_path: u32,
    /// `inode::i_generation`, compared when `has_generation != 0`: an inode
    /// number reused after a delete then names another file.
    pub generation: u32,
    pub has_generation: u32,
}

/// Byte offsets of the kernel struct fields the LSM programs read, taken
/// from the running kernel's BTF at start-up (rustc emits no CO-RE
/// relocations for the BPF target). `valid == 0` until the agent filled them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub valid: u32,
    /// `file.f_path.dentry`.
    pub file_dentry: u32,
    pub dentry_parent: u32,
    pub dentry_inode: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub inode_mode: u32,
    pub sb_dev: u32,
    /// `linux_binprm.file`.
    pub bprm_file: u32,
    /// `vm_area_struct.vm_file`.
    pub vma_file: u32,
    /// `socket.sk`.
    pub socket_sk: u32,
    /// `sock.__sk_common.skc_num` (local port, host byte order).
    pub sock_num: u32,
    /// `inode.i_generation`.
    pub inode_generation: u32,
}

/// Per-CPU counters of one slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounters {
    /// Calls that matched the fault's target and filters while it was live.
    pub matched: u64,
    /// Calls that were failed (or, in dry-run, would have been).
    pub injected: u64,
    /// Calls of an `nth_call` fault not counted, and so not injected,
    /// because `FL_NTH` was full: the program fails closed.
    pub not_injected_map_full: u64,
}

/// Global settings, index 0 of the `CONFIG` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentConfig {
    /// The agent's own tgid: never injected into.
    pub agent_tgid: u32,
    /// One past the highest slot in use, so programs scan only that far.
    pub slot_limit: u32,
    /// The agent's own TCP control-plane port (0 = none): never dropped.
    pub control_port: u32,
    /// Number of valid entries in `FL_NET_SLOTS`.
    pub net_slot_count: u32,
    /// Number of valid entries in `FL_LSM_SLOTS`.
    pub lsm_slot_count: u32,
    /// Number of valid entries in `FL_DNS_SLOTS`: DNS names are parsed
    /// only while > 0.
    pub dns_slot_count: u32,
    /// Non-zero where the kernel refuses the sock_ops pacing program: the
    /// cgroup connect hooks cap the pacing rate of TCP connections that a
    /// `bandwidth` slot matches instead.
    pub pace_at_connect: u32,
    /// Byte offset of `task_struct.flags` (from BTF; 0 = unknown): tasks
    /// with `PF_KTHREAD` are never faulted.
    pub task_flags_offset: u32,
    /// The agent's own cgroup (v2 id; 0 = none): its processes, the agent's
    /// helpers included, are never faulted.
    pub agent_cgroup_id: u64,
    /// Its depth below the cgroup2 root.
    pub agent_cgroup_level: u32,
    pub _pad: u32,
}

/// `PF_KTHREAD` in `task_struct.flags` (include/linux/sched.h).
pub const PF_KTHREAD: u32 = 0x0020_0000;

/// Role of a pid in a slot's target (value in the `FL_PIDS` map).
pub mod pid_role {
    pub const INCLUDE: u32 = 1;
    pub const EXCLUDE: u32 = 2;
}

/// Key of the per-process call counter used by `nth_call`, and of `FL_PIDS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SlotPid {
    pub slot: u32,
    pub tgid: u32,
}

mod layout;
pub mod runq;

#[cfg(feature = "user")]
mod pod {
    // SAFETY (each impl): repr(C), made only of integers and arrays of
    // integers (nested structs included), with no implicit padding (checked
    // by `assert_layout!` above), so every bit pattern is a valid value and
    // no byte is uninitialised.
    // SAFETY: as above (288 bytes, layout asserted).
    unsafe impl aya::Pod for super::FaultSlot {}
    // SAFETY: as above (three u64).
    unsafe impl aya::Pod for super::FaultCounters {}
    // SAFETY: as above (seven u32).
    unsafe impl aya::Pod for super::AgentConfig {}
    // SAFETY: as above (two u32).
    unsafe impl aya::Pod for super::SlotPid {}
    // SAFETY: as above (twelve u32).
    unsafe impl aya::Pod for super::KernelOffsets {}
    // SAFETY: as above (two u32).
    unsafe impl aya::Pod for super::runq::RunqConfig {}
    // SAFETY: as above (u64, two u32).
    unsafe impl aya::Pod for super::runq::RunqStart {}
    // SAFETY: as above (32 u64).
    unsafe impl aya::Pod for super::runq::RunqHist {}
}
