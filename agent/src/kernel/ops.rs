//! The seam between the engine and the kernel: what a fault holds while it
//! is armed (`Resource`), what the kernel can do (`Probed`), and the few
//! operations the engine drives (`KernelOps`). The engine's unit tests put a
//! fake kernel behind it.

use faultline_common::{FaultCounters, FaultSlot};

use super::{KernelError, Mechanism, Reason, catalogue};

/// The scan list a slot is on: the programs of one family look only at
/// the slots listed for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScanList {
    /// The packet programs (`FL_NET_SLOTS`).
    Net,
    /// The DNS programs (`FL_DNS_SLOTS`).
    Dns,
    /// The LSM programs (`FL_LSM_SLOTS`).
    Lsm,
}

/// Something an armed fault holds in the kernel. The engine takes a fault's
/// resources in the order its kind lists them, after writing its slot, and
/// gives them back in reverse; shared ones are reference-counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// An fq root qdisc on this interface (by ifindex), shared. Listed
    /// before the slot goes on a scan list: a departure time stamped on a
    /// packet means nothing without it.
    Fq(u32),
    /// The fault's slot on a scan list (taken after the slot is complete,
    /// so a program never sees half of it).
    Listed(ScanList),
    /// A count in `FL_WATCHED` for this syscall number (signal faults).
    WatchSyscall(u32),
    /// The programs of a mechanism, attached while any fault holds them.
    Attach(Mechanism),
}

impl Resource {
    /// What to call it in an error.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fq(_) => "fq qdisc",
            Self::Listed(_) => "fault slot list",
            Self::WatchSyscall(_) => catalogue::RAW_TRACEPOINT,
            Self::Attach(m) => m.name(),
        }
    }
}

/// Live per-slot counters, readable without the kernel's owner.
pub trait CounterSource {
    fn read(&self, slot: u32) -> Option<FaultCounters>;
}

/// The run-queue latency programs' maps, used by impact sessions from their
/// own threads (`kernel/runq.rs`).
pub trait RunQueueSource: Send + Sync {
    /// A free session index with a zeroed histogram; None when all
    /// `MAX_IMPACT` are in use.
    fn claim(&self) -> Option<u32>;
    /// The processes session `index` measures from now on (replaces the
    /// last set). On error (the map is full) the others are still written.
    fn set_targets(
        &self,
        index: u32,
        tgids: &std::collections::BTreeSet<u32>,
    ) -> Result<(), String>;
    /// The session's histogram so far, summed over the CPUs.
    fn histogram(&self, index: u32) -> Option<[u64; faultline_common::runq::RUNQ_BUCKETS]>;
    /// Gives the index back: its processes are no longer measured.
    fn free(&self, index: u32);
}

/// What this kernel can do, as far as its programs have been loaded.
pub trait Probed {
    /// Why `m` cannot be used here, if so.
    fn reason(&self, m: Mechanism) -> Option<&Reason>;
    /// Why an fq root qdisc cannot be installed here, if so.
    fn fq_reason(&self) -> Option<&str>;
    /// Why the sock_ops program (TCP pacing under `bandwidth`) did not load.
    fn sock_ops_reason(&self) -> Option<&Reason>;
    /// Interface scope runs on the cgroup_skb programs (local sockets'
    /// packets only) instead of TCX: by configuration, or for want of TCX.
    fn interface_via_cgroup_probed(&self) -> bool;
}

/// The operations the engine drives.
pub trait KernelOps: Probed + Send {
    /// Loads the programs `m` needs, unless done already (once; a refusal
    /// is kept as the mechanism's reason).
    fn ensure(&mut self, m: Mechanism);

    /// Writes a fault's slot: fresh counters and per-slot program state,
    /// its included/excluded pids, then the slot itself.
    fn write_fault(
        &mut self,
        slot: u32,
        fault: &FaultSlot,
        pid_roles: &[(u32, u32)],
    ) -> Result<(), KernelError>;

    /// Empties a slot and the per-process state kept for it.
    fn clear_fault(&mut self, slot: u32) -> Result<(), KernelError>;

    fn read_counters(&self, slot: u32) -> Result<FaultCounters, KernelError>;

    /// Takes `r` for the fault in `slot`; on error nothing was taken.
    fn acquire(&mut self, slot: u32, r: Resource) -> Result<(), KernelError>;

    /// Gives `r` back; the last user of a shared resource removes it.
    fn release(&mut self, slot: u32, r: Resource);

    /// Programs scan slots `0..limit` only.
    fn set_slot_limit(&mut self, limit: u32) -> Result<(), KernelError>;

    /// Replaces the in-kernel set of protected processes.
    fn set_protected(&mut self, pids: &[u32]) -> Result<(), KernelError>;

    /// Rewrites the ports network faults spare: the configured SSH ports
    /// and those sshd listens on now (so a restarted sshd is covered).
    fn refresh_ssh_ports(&mut self) -> Result<(), KernelError>;

    /// A second handle on the counters, for readers on other threads.
    fn counter_source(&self) -> std::sync::Arc<dyn CounterSource + Send + Sync>;

    /// Takes a reference on the run-queue latency programs (attached while
    /// any reference is held) and hands out their maps; the error says why
    /// they cannot run here.
    fn runq_acquire(&mut self) -> Result<std::sync::Arc<dyn RunQueueSource>, String> {
        Err("this kernel does not measure run-queue latency".into())
    }

    /// Drops a reference taken by `runq_acquire`.
    fn runq_release(&mut self) {}

    /// Why `m` cannot be used here, loading its programs first if needed.
    fn unavailable(&mut self, m: Mechanism) -> Option<Reason> {
        self.ensure(m);
        self.reason(m).cloned()
    }

    /// `interface_via_cgroup_probed`, after loading the TCX programs.
    fn interface_via_cgroup(&mut self) -> bool {
        self.ensure(Mechanism::TCX);
        self.interface_via_cgroup_probed()
    }

    /// Why TCP cannot be paced by sock_ops, after loading that group.
    fn sock_ops_unavailable(&mut self) -> Option<Reason> {
        self.ensure(Mechanism::CgroupSkb);
        self.sock_ops_reason().cloned()
    }

    /// Why `r` cannot be taken on this kernel, as a refusal's reason.
    fn resource_unavailable(&mut self, r: Resource) -> Option<String> {
        match r {
            Resource::Attach(m) => self
                .unavailable(m)
                .map(|reason| format!("{} is unavailable on this kernel: {reason}", m.name())),
            Resource::Fq(_) => self.fq_reason().map(str::to_owned),
            Resource::Listed(_) | Resource::WatchSyscall(_) => None,
        }
    }
}
