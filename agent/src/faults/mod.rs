//! One module per fault kind. Each turns a validated spec into the kernel
//! slot its program reads, and names the mechanism that must be attached.

pub mod lsm_error;
pub mod packet_drop;
pub mod syscall_error;
pub mod syscall_signal;

use faultline_common::{COMM_LEN, FaultSlot, TargetSel, flags, pid_role};

use crate::domain::{Direction, DnsFailure, ErrorCall, FaultSpec, Target};

/// A kernel attachment that faults share; attached while any fault needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mechanism {
    /// cgroup sock_addr programs (connect/bind/sendmsg, v4 and v6) on the cgroup2 root.
    CgroupSockAddr,
    /// raw tracepoint `sys_enter`.
    SysEnter,
    /// cgroup_skb ingress and egress programs on the cgroup2 root.
    CgroupSkb,
    /// The TCX program of one side (ingress or egress) of one interface
    /// (by ifindex). A fault attaches only the sides it acts on: each TCX
    /// attach costs the kernel an RCU grace period.
    Tcx(u32, TcSide),
    /// One BPF LSM program (index into `lsm_error::HOOKS`, normalised by
    /// `lsm_error::attach_index` so rows sharing a program share it).
    Lsm(usize),
}

/// Which TCX hook of an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TcSide {
    Ingress,
    Egress,
}

impl Mechanism {
    /// The key for what every interface and side shares (the programs'
    /// load result, capability rows).
    pub const TCX: Self = Self::Tcx(0, TcSide::Egress);

    pub fn name(self) -> &'static str {
        match self {
            Self::CgroupSockAddr => "cgroup_sock_addr",
            Self::SysEnter => "raw_tracepoint",
            Self::CgroupSkb => "cgroup_skb",
            Self::Tcx(..) => "tcx",
            Self::Lsm(i) => lsm_error::HOOKS[i].mechanism,
        }
    }
}

/// What arming one fault writes into the kernel.
#[derive(Clone, Debug)]
pub struct KernelFault {
    pub slot: FaultSlot,
    pub mechanisms: Vec<Mechanism>,
    /// Syscall number to mark as watched (signal faults).
    pub watched_syscall: Option<u32>,
    /// (pid, `pid_role::*`) entries for the `FL_PIDS` map.
    pub pid_roles: Vec<(u32, u32)>,
    /// Interface (ifindex) whose root qdisc must be fq (latency faults).
    pub fq: Option<u32>,
}

/// The attachments a fault needs: one, or for an interface fault acting in
/// both directions, the TCX programs of both sides. `via_cgroup`: interface
/// scope runs on the cgroup_skb programs (no TCX here, or configured so).
pub fn mechanisms_of(spec: &FaultSpec, target: &Target, via_cgroup: bool) -> Vec<Mechanism> {
    let direction = match spec {
        FaultSpec::SyscallError(e) => {
            return vec![match e.call {
                ErrorCall::Sock(_) => Mechanism::CgroupSockAddr,
                ErrorCall::Lsm { hook, .. } => Mechanism::Lsm(lsm_error::attach_index(hook)),
            }];
        }
        FaultSpec::SyscallSignal(_) => return vec![Mechanism::SysEnter],
        FaultSpec::PacketLoss(s) => s.direction,
        FaultSpec::Blackhole(s) => s.direction,
        FaultSpec::Duplicate(s) => s.direction,
        FaultSpec::Corrupt(s) => s.direction,
        FaultSpec::Bandwidth(s) => s.direction,
        // A DNS answer is made on egress and redirected to ingress by the
        // egress program itself.
        FaultSpec::Latency(_) | FaultSpec::DnsError(_) => Direction::Egress,
    };
    let Some(i) = target.interface.as_ref().filter(|_| !via_cgroup) else {
        return vec![Mechanism::CgroupSkb];
    };
    let sides: &[TcSide] = match direction {
        Direction::Ingress => &[TcSide::Ingress],
        Direction::Egress => &[TcSide::Egress],
        Direction::Both => &[TcSide::Ingress, TcSide::Egress],
    };
    sides
        .iter()
        .map(|&s| Mechanism::Tcx(i.ifindex, s))
        .collect()
}

/// Why an interface fault of this kind cannot run on the cgroup_skb
/// programs (which can drop a packet, not copy, change or delay it), if so.
pub fn needs_tcx(spec: &FaultSpec) -> Option<&'static str> {
    match spec {
        FaultSpec::Duplicate(_) => Some("copy"),
        FaultSpec::Corrupt(_) => Some("change"),
        FaultSpec::Latency(_) => Some("delay"),
        FaultSpec::DnsError(d) if d.failure != DnsFailure::Drop => Some("answer"),
        _ => None,
    }
}

pub fn to_kernel(
    spec: &FaultSpec,
    target: &Target,
    deadline_ns: u64,
    dry_run: bool,
    via_cgroup: bool,
) -> KernelFault {
    let mut slot = FaultSlot {
        deadline_ns,
        flags: if dry_run { flags::DRY_RUN } else { 0 },
        target: target_sel(target),
        ..FaultSlot::default()
    };
    let watched_syscall = match spec {
        FaultSpec::SyscallError(s) => {
            syscall_error::fill(s, &mut slot);
            None
        }
        FaultSpec::SyscallSignal(s) => {
            syscall_signal::fill(s, &mut slot);
            Some(s.syscall.number())
        }
        FaultSpec::PacketLoss(l) => {
            packet_drop::fill_loss(l, target, &mut slot);
            None
        }
        FaultSpec::Blackhole(b) => {
            packet_drop::fill_blackhole(b, target, &mut slot);
            None
        }
        FaultSpec::Duplicate(d) => {
            packet_drop::fill_duplicate(d, target, &mut slot);
            None
        }
        FaultSpec::Corrupt(c) => {
            packet_drop::fill_corrupt(c, target, &mut slot);
            None
        }
        FaultSpec::Bandwidth(b) => {
            packet_drop::fill_bandwidth(b, target, &mut slot);
            None
        }
        FaultSpec::Latency(l) => {
            packet_drop::fill_latency(l, target, &mut slot);
            None
        }
        FaultSpec::DnsError(d) => {
            packet_drop::fill_dns(d, target, &mut slot);
            None
        }
    };
    let pid_roles = target
        .pids
        .iter()
        .map(|p| (*p, pid_role::INCLUDE))
        .chain(target.exclude_pids.iter().map(|p| (*p, pid_role::EXCLUDE)))
        .collect();
    if via_cgroup && slot.net.ifindex != 0 {
        slot.flags |= flags::VIA_CGROUP_SKB;
    }
    KernelFault {
        slot,
        mechanisms: mechanisms_of(spec, target, via_cgroup),
        watched_syscall,
        pid_roles,
        fq: match spec {
            FaultSpec::Latency(_) => target.interface.as_ref().map(|i| i.ifindex),
            _ => None,
        },
    }
}

fn comm_bytes(s: &str) -> [u8; COMM_LEN] {
    let mut out = [0u8; COMM_LEN];
    let b = s.as_bytes();
    let n = b.len().min(COMM_LEN - 1);
    out[..n].copy_from_slice(&b[..n]);
    out
}

pub fn target_sel(t: &Target) -> TargetSel {
    TargetSel {
        cgroup_id: t.cgroup.as_ref().map_or(0, |c| c.id),
        cgroup_level: t.cgroup.as_ref().map_or(0, |c| c.level),
        npids: t.pids.len() as u32,
        nexclude_pids: t.exclude_pids.len() as u32,
        has_comm: u32::from(t.comm.is_some()),
        comm: comm_bytes(t.comm.as_deref().unwrap_or("")),
        has_exclude_comm: u32::from(t.exclude_comm.is_some()),
        exclude_comm: comm_bytes(t.exclude_comm.as_deref().unwrap_or("")),
        _pad: 0,
    }
}
