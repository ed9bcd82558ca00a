//! The kernel layer: the loaded eBPF object, its maps and the attachments
//! that live only while a fault needs them. Every attachment is an unpinned
//! bpf_link, so the kernel removes it when the agent's process dies,
//! SIGKILL included.
//!
//! `catalogue` names the programs and mechanisms, `probe` loads them,
//! `verifier` turns refusals into reasons, `attach` holds the links,
//! `keeper` keeps the TCX hooks on, `slots` keeps the scan lists, and `ops`
//! is the seam the engine drives.

mod attach;
mod catalogue;
mod keeper;
pub mod lsm_hooks;
mod ops;
mod probe;
mod protect;
mod runq;
mod slots;
mod verifier;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues, ProgramArray},
    util::nr_cpus,
};
pub use catalogue::{CGROUP_SKB, CGROUP_SOCK_ADDR, RAW_TRACEPOINT, SOCK_OPS, TCX, TCX_FQ};
pub use catalogue::{Group, Mechanism, TcSide};
use faultline_common::{
    AgentConfig, FaultCounters, FaultSlot, MAX_DNS_SLOTS, MAX_FAULTS, MAX_LSM_SLOTS, MAX_NET_SLOTS,
    MAX_SYSCALL_NR, SlotPid,
};
pub use ops::{CounterSource, KernelOps, Probed, Resource, RunQueueSource, ScanList};
pub use runq::{RUNQ_MECHANISM, RunqMaps};
pub use verifier::Reason;

use self::{
    attach::Attachment, catalogue::OBJECT, catalogue::take, keeper::TcxKeeper, probe::LsmLoader,
    slots::SlotList, verifier::chain,
};
use crate::{cgroup, qdisc};

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("loading the eBPF object failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("{mechanism} is unavailable on this kernel: {reason}")]
    Unavailable {
        mechanism: &'static str,
        reason: String,
    },
    #[error("all {0} {1} fault slots are in use; stop such an experiment first")]
    ListFull(u32, &'static str),
    #[error("attaching {program} failed: {}", chain(source))]
    Attach {
        program: &'static str,
        source: aya::programs::ProgramError,
    },
    /// Someone else's configuration is in the way (an interface's root
    /// qdisc, say): the request cannot proceed until it changes.
    #[error("{what}: {reason}")]
    Conflict { what: &'static str, reason: String },
}

pub struct Kernel {
    ebpf: Ebpf,
    slots: Array<MapData, FaultSlot>,
    counters: PerCpuArray<MapData, FaultCounters>,
    config: Array<MapData, AgentConfig>,
    watched: Array<MapData, u32>,
    nth: HashMap<MapData, SlotPid, u64>,
    pids: HashMap<MapData, SlotPid, u32>,
    protected: HashMap<MapData, u32, u8>,
    protected_comms: aya::maps::lpm_trie::LpmTrie<MapData, [u8; 16], u8>,
    exit_watch: protect::ExitWatch,
    /// The run-queue latency programs of impact measurement.
    runq: runq::RunQueue,
    identity: protect::Identity,
    /// Bitmap of the ports network faults spare (`FL_SSH_PORTS`), as
    /// last written, and the configured part of it.
    ssh_ports: Array<MapData, u64>,
    ssh_bitmap: Vec<u64>,
    ssh_configured: BTreeSet<u16>,
    attachments: BTreeMap<Mechanism, Attachment>,
    /// Why a mechanism cannot be used here, found while loading.
    unavailable: BTreeMap<Mechanism, Reason>,
    cgroup_root: Option<File>,
    ncpus: usize,
    agent_tgid: u32,
    slot_limit: u32,
    control_port: u32,
    net_slots: SlotList,
    lsm_slots: SlotList,
    dns_slots: SlotList,
    /// Per-slot token bucket / next departure time of the packet programs.
    buckets: Array<MapData, [u64; 2]>,
    ge_state: PerCpuArray<MapData, u32>,
    /// Why `latency` cannot run here (the kernel has no fq qdisc), or None.
    fq_unavailable: Option<String>,
    fq: Option<qdisc::FqManager>,
    /// Program arrays of the tail calls, held so the kernel keeps their entries.
    tail_calls: Vec<ProgramArray<MapData>>,
    /// BTF for loading LSM programs and the offsets map they read, prepared
    /// on the first LSM need (the map is held: later loads use its fd).
    lsm_btf: Option<Result<LsmLoader, Reason>>,
    /// LSM programs loaded (or refused) so far.
    lsm_loaded: BTreeSet<&'static str>,
    /// Why the sock_ops program (TCP pacing under `bandwidth`) did not load.
    sock_ops_unavailable: Option<Reason>,
    /// Groups whose programs were loaded (or refused): see `probe`.
    probed: BTreeSet<Group>,
    /// Keep the TCX hooks on while the agent runs (config `keep_tcx_hooks`).
    keep_tcx: bool,
    tcx_keeper: Option<TcxKeeper>,
    /// Interface scope on the cgroup_skb programs even where TCX exists.
    iface_via_cgroup: bool,
    counter_reader: std::sync::Arc<CounterReader>,
}

impl Kernel {
    /// Loads the object and every program (nothing is attached yet), with
    /// `FL_NTH` sized for `nth_call_capacity` per-process call counts. A
    /// program the kernel refuses makes its mechanism unavailable, with the
    /// reason kept for `GetCapabilities`.
    pub fn load(nth_call_capacity: u32) -> Result<Self, KernelError> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("FL_NTH", nth_call_capacity)
            .load(OBJECT)?;
        let mut unavailable = BTreeMap::new();
        let cgroup_root = match cgroup::cgroup2_mount() {
            Ok(path) => match File::open(&path) {
                Ok(f) => Some(f),
                Err(e) => {
                    let reason = Reason::NoCgroup2(format!(
                        "cannot open the cgroup2 root {}: {e}",
                        path.display()
                    ));
                    unavailable.insert(Mechanism::CgroupSockAddr, reason.clone());
                    unavailable.insert(Mechanism::CgroupSkb, reason);
                    None
                }
            },
            Err(e) => {
                unavailable.insert(Mechanism::CgroupSockAddr, Reason::NoCgroup2(e.to_string()));
                unavailable.insert(Mechanism::CgroupSkb, Reason::NoCgroup2(e.to_string()));
                None
            }
        };

        let slots = take(&mut ebpf, "FL_SLOTS")?;
        let counters = take(&mut ebpf, "FL_COUNTERS")?;
        let config = take(&mut ebpf, "FL_CONFIG")?;
        let watched = take(&mut ebpf, "FL_WATCHED")?;
        let nth = take(&mut ebpf, "FL_NTH")?;
        let pids = take(&mut ebpf, "FL_PIDS")?;
        let protected = take(&mut ebpf, "FL_PROTECTED")?;
        let protected_comms = take(&mut ebpf, "FL_PROT_COMMS")?;
        let ssh_ports = take(&mut ebpf, "FL_SSH_PORTS")?;
        let net_slots = SlotList {
            what: "network",
            max: MAX_NET_SLOTS,
            slots: Vec::new(),
            map: take(&mut ebpf, "FL_NET_SLOTS")?,
        };
        let dns_slots = SlotList {
            what: "DNS",
            max: MAX_DNS_SLOTS,
            slots: Vec::new(),
            map: take(&mut ebpf, "FL_DNS_SLOTS")?,
        };
        let lsm_slots = SlotList {
            what: "LSM",
            max: MAX_LSM_SLOTS,
            slots: Vec::new(),
            map: take(&mut ebpf, "FL_LSM_SLOTS")?,
        };
        let ncpus = nr_cpus().map_err(|(_, e)| KernelError::Map {
            name: "FL_COUNTERS",
            source: aya::maps::MapError::IoError(e),
        })?;
        let buckets = take(&mut ebpf, "FL_BUCKETS")?;
        let ge_state = take(&mut ebpf, "FL_GE_STATE")?;
        let counter_reader = std::sync::Arc::new(CounterReader::open(&counters)?);
        let exit_watch = protect::ExitWatch::load(&mut ebpf);
        let mut kernel = Self {
            exit_watch,
            runq: runq::RunQueue::default(),
            identity: protect::Identity::default(),
            counter_reader,
            ebpf,
            slots,
            counters,
            config,
            watched,
            nth,
            pids,
            protected,
            protected_comms,
            ssh_ports,
            ssh_bitmap: vec![0; SSH_PORT_WORDS],
            ssh_configured: BTreeSet::new(),
            attachments: BTreeMap::new(),
            unavailable,
            probed: BTreeSet::new(),
            sock_ops_unavailable: None,
            lsm_btf: None,
            lsm_loaded: BTreeSet::new(),
            cgroup_root,
            ncpus,
            agent_tgid: std::process::id(),
            slot_limit: 0,
            control_port: 0,
            net_slots,
            lsm_slots,
            dns_slots,
            buckets,
            ge_state,
            fq_unavailable: qdisc::unavailable_reason(),
            fq: None,
            tail_calls: Vec::new(),
            keep_tcx: false,
            tcx_keeper: None,
            iface_via_cgroup: false,
        };
        kernel.set_slot_limit(0)?;
        Ok(kernel)
    }

    /// The agent's own TCP port, which network faults never drop.
    pub fn set_control_port(&mut self, port: u16) -> Result<(), KernelError> {
        self.control_port = u32::from(port);
        self.set_slot_limit(self.slot_limit)
    }

    fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> KernelError {
        move |source| KernelError::Map { name, source }
    }

    /// Programs scan slots `0..limit` only.
    pub fn set_slot_limit(&mut self, limit: u32) -> Result<(), KernelError> {
        self.slot_limit = limit.min(MAX_FAULTS);
        let cfg = AgentConfig {
            agent_tgid: self.agent_tgid,
            slot_limit: self.slot_limit,
            control_port: self.control_port,
            net_slot_count: self.net_slots.slots.len() as u32,
            lsm_slot_count: self.lsm_slots.slots.len() as u32,
            dns_slot_count: self.dns_slots.slots.len() as u32,
            pace_at_connect: u32::from(self.sock_ops_unavailable.is_some()),
            task_flags_offset: self.identity.task_flags_offset,
            agent_cgroup_id: self.identity.agent_cgroup_id,
            agent_cgroup_level: self.identity.agent_cgroup_level,
            _pad: 0,
        };
        self.config
            .set(0, cfg, 0)
            .map_err(Self::map_err("FL_CONFIG"))
    }

    /// Enables `latency` (and shaped `bandwidth`) to install fq root
    /// qdiscs, recorded in `state_dir` (and removes any a previous agent
    /// left behind).
    pub fn enable_qdiscs(&mut self, state_dir: &std::path::Path) {
        self.fq = Some(qdisc::FqManager::new(state_dir));
    }

    fn scan_list(&mut self, list: ScanList) -> &mut SlotList {
        match list {
            ScanList::Net => &mut self.net_slots,
            ScanList::Dns => &mut self.dns_slots,
            ScanList::Lsm => &mut self.lsm_slots,
        }
    }

    /// Lists or unlists a slot for the programs that scan `list`.
    fn list_slot(&mut self, index: u32, list: ScanList, member: bool) -> Result<(), KernelError> {
        if self.scan_list(list).update(index, member)? {
            self.set_slot_limit(self.slot_limit)?;
        }
        Ok(())
    }

    fn write_pids(&mut self, index: u32, roles: &[(u32, u32)]) -> Result<(), KernelError> {
        for (tgid, role) in roles {
            let key = SlotPid {
                slot: index,
                tgid: *tgid,
            };
            self.pids
                .insert(key, role, 0)
                .map_err(Self::map_err("FL_PIDS"))?;
        }
        Ok(())
    }

    /// Zeroes a slot's counters and the per-slot state of the packet
    /// programs (token bucket or next departure time, Gilbert state), so a
    /// reused slot starts fresh.
    fn reset_counters(&mut self, index: u32) -> Result<(), KernelError> {
        self.buckets
            .set(index, [0u64; 2], 0)
            .map_err(Self::map_err("FL_BUCKETS"))?;
        let good =
            PerCpuValues::try_from(vec![0u32; self.ncpus]).map_err(|e| KernelError::Map {
                name: "FL_GE_STATE",
                source: aya::maps::MapError::IoError(e),
            })?;
        self.ge_state
            .set(index, good, 0)
            .map_err(Self::map_err("FL_GE_STATE"))?;
        self.reset_slot_counters(index)
    }

    fn reset_slot_counters(&mut self, index: u32) -> Result<(), KernelError> {
        let zeros =
            PerCpuValues::try_from(vec![FaultCounters::default(); self.ncpus]).map_err(|e| {
                KernelError::Map {
                    name: "FL_COUNTERS",
                    source: aya::maps::MapError::IoError(e),
                }
            })?;
        self.counters
            .set(index, zeros, 0)
            .map_err(Self::map_err("FL_COUNTERS"))
    }

    pub fn read_counters(&self, index: u32) -> Result<FaultCounters, KernelError> {
        self.counters
            .get(&index, 0)
            .map(|per_cpu| sum_per_cpu(&per_cpu))
            .map_err(Self::map_err("FL_COUNTERS"))
    }

    /// Adjusts the number of active signal faults watching syscall `nr`.
    fn watch_syscall(&mut self, nr: u32, add: bool) -> Result<(), KernelError> {
        if nr >= MAX_SYSCALL_NR {
            return Ok(());
        }
        let cur = self
            .watched
            .get(&nr, 0)
            .map_err(Self::map_err("FL_WATCHED"))?;
        let next = if add { cur + 1 } else { cur.saturating_sub(1) };
        self.watched
            .set(nr, next, 0)
            .map_err(Self::map_err("FL_WATCHED"))
    }

    /// The ports network faults spare besides those sshd listens on
    /// (config `ssh_ports`); written with them at the next refresh.
    pub fn set_ssh_ports(&mut self, ports: &[u16]) -> Result<(), KernelError> {
        self.ssh_configured = ports.iter().copied().collect();
        KernelOps::refresh_ssh_ports(self)
    }

    /// Writes the words of `FL_SSH_PORTS` that differ from `ports`.
    fn write_ssh_ports(&mut self, ports: &BTreeSet<u16>) -> Result<(), KernelError> {
        let mut bitmap = vec![0u64; SSH_PORT_WORDS];
        for p in ports {
            bitmap[usize::from(*p) / 64] |= 1 << (p % 64);
        }
        for (i, (new, old)) in bitmap.iter().zip(&mut self.ssh_bitmap).enumerate() {
            if new != old {
                self.ssh_ports
                    .set(i as u32, new, 0)
                    .map_err(Self::map_err("FL_SSH_PORTS"))?;
                *old = *new;
            }
        }
        Ok(())
    }
}

impl Probed for Kernel {
    fn reason(&self, m: Mechanism) -> Option<&Reason> {
        self.unavailable.get(&m.generic())
    }

    fn fq_reason(&self) -> Option<&str> {
        match (&self.fq_unavailable, &self.fq) {
            (Some(r), _) => Some(r),
            (None, None) => Some("qdisc management is not enabled in this agent"),
            (None, Some(_)) => None,
        }
    }

    fn sock_ops_reason(&self) -> Option<&Reason> {
        self.sock_ops_unavailable.as_ref()
    }

    fn interface_via_cgroup_probed(&self) -> bool {
        self.iface_via_cgroup || self.reason(Mechanism::TCX).is_some()
    }
}

impl KernelOps for Kernel {
    fn ensure(&mut self, m: Mechanism) {
        self.ensure_loaded(m);
    }

    fn write_fault(
        &mut self,
        index: u32,
        fault: &FaultSlot,
        pid_roles: &[(u32, u32)],
    ) -> Result<(), KernelError> {
        self.reset_counters(index)?;
        if !pid_roles.is_empty() || fault.nth_call != 0 {
            self.hold_exit_watch(index)?;
        }
        self.write_pids(index, pid_roles)?;
        self.slots
            .set(index, fault, 0)
            .map_err(Self::map_err("FL_SLOTS"))
    }

    fn clear_fault(&mut self, index: u32) -> Result<(), KernelError> {
        for list in [ScanList::Net, ScanList::Dns, ScanList::Lsm] {
            self.list_slot(index, list, false)?;
        }
        self.slots
            .set(index, FaultSlot::default(), 0)
            .map_err(Self::map_err("FL_SLOTS"))?;
        // Drop the per-process call counts of nth-call faults in this slot,
        // and its pids.
        let stale: Vec<SlotPid> = self
            .nth
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.slot == index)
            .collect();
        for k in stale {
            let _ = self.nth.remove(&k);
        }
        let stale: Vec<SlotPid> = self
            .pids
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.slot == index)
            .collect();
        for k in stale {
            let _ = self.pids.remove(&k);
        }
        self.release_exit_watch(index);
        Ok(())
    }

    fn read_counters(&self, index: u32) -> Result<FaultCounters, KernelError> {
        Kernel::read_counters(self, index)
    }

    fn acquire(&mut self, slot: u32, r: Resource) -> Result<(), KernelError> {
        match r {
            Resource::Fq(ifindex) => self.acquire_fq(ifindex),
            Resource::Listed(list) => self.list_slot(slot, list, true),
            Resource::WatchSyscall(nr) => self.watch_syscall(nr, true),
            Resource::Attach(m) => self.acquire_mechanism(m),
        }
    }

    fn release(&mut self, slot: u32, r: Resource) {
        let res = match r {
            Resource::Fq(ifindex) => {
                self.release_fq(ifindex);
                Ok(())
            }
            Resource::Listed(list) => self.list_slot(slot, list, false),
            Resource::WatchSyscall(nr) => self.watch_syscall(nr, false),
            Resource::Attach(m) => {
                self.release_mechanism(m);
                Ok(())
            }
        };
        if let Err(e) = res {
            tracing::warn!(slot, resource = ?r, error = %e, "releasing failed");
        }
    }

    fn set_slot_limit(&mut self, limit: u32) -> Result<(), KernelError> {
        Kernel::set_slot_limit(self, limit)
    }

    fn set_protected(&mut self, pids: &[u32]) -> Result<(), KernelError> {
        Kernel::set_protected(self, pids)
    }

    fn refresh_ssh_ports(&mut self) -> Result<(), KernelError> {
        let mut ports = self.ssh_configured.clone();
        match crate::ssh::sshd_ports(std::path::Path::new("/proc")) {
            Ok(found) => ports.extend(found),
            // Keep what was found before: a port spared too many is harmless.
            Err(e) => {
                tracing::warn!(error = %e, "cannot list sshd's listening ports; keeping the last ones");
                ports.extend(self.ssh_bitmap_ports());
            }
        }
        tracing::debug!(?ports, "ports network faults spare (ssh)");
        self.write_ssh_ports(&ports)
    }

    fn counter_source(&self) -> std::sync::Arc<dyn CounterSource + Send + Sync> {
        self.counter_reader.clone()
    }

    fn runq_acquire(&mut self) -> Result<std::sync::Arc<dyn RunQueueSource>, String> {
        Kernel::runq_acquire(self).map(|m| m as std::sync::Arc<dyn RunQueueSource>)
    }

    fn runq_release(&mut self) {
        Kernel::runq_release(self);
    }
}

/// Words of the `FL_SSH_PORTS` bitmap: one bit per port.
const SSH_PORT_WORDS: usize = 65_536 / 64;

impl Kernel {
    fn ssh_bitmap_ports(&self) -> Vec<u16> {
        (0..=u16::MAX)
            .filter(|p| self.ssh_bitmap[usize::from(*p) / 64] & (1 << (p % 64)) != 0)
            .collect()
    }
}

/// A slot's counters summed over the CPUs.
fn sum_per_cpu(per_cpu: &PerCpuValues<FaultCounters>) -> FaultCounters {
    per_cpu
        .iter()
        .fold(FaultCounters::default(), |acc, c| FaultCounters {
            matched: acc.matched + c.matched,
            injected: acc.injected + c.injected,
            not_injected_map_full: acc.not_injected_map_full + c.not_injected_map_full,
        })
}

/// Its own handle on `FL_COUNTERS` (a duplicated fd), so views read
/// counters without the engine's lock.
struct CounterReader(PerCpuArray<MapData, FaultCounters>);

impl CounterReader {
    fn open(counters: &PerCpuArray<MapData, FaultCounters>) -> Result<Self, KernelError> {
        use aya::maps::{IterableMap as _, Map, MapError};
        use std::os::fd::AsFd as _;
        let err = |source| KernelError::Map {
            name: "FL_COUNTERS",
            source,
        };
        let fd = counters
            .map()
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| err(MapError::IoError(e)))?;
        let data = MapData::from_fd(fd).map_err(err)?;
        PerCpuArray::try_from(Map::PerCpuArray(data))
            .map(Self)
            .map_err(err)
    }
}

impl CounterSource for CounterReader {
    fn read(&self, slot: u32) -> Option<FaultCounters> {
        self.0
            .get(&slot, 0)
            .ok()
            .map(|per_cpu| sum_per_cpu(&per_cpu))
    }
}
