//! The loaded eBPF object: its maps, and attachments that live only while a
//! fault needs them. Every attachment is an unpinned bpf_link, so the kernel
//! removes it when the agent's process dies, SIGKILL included.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues, ProgramArray},
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, Lsm, Program,
        ProgramError, RawTracePoint, SchedClassifier, SockOps, TcAttachType,
    },
    util::nr_cpus,
};
use faultline_common::{
    AgentConfig, FaultCounters, FaultSlot, KernelOffsets, MAX_DNS_SLOTS, MAX_FAULTS, MAX_LSM_SLOTS,
    MAX_NET_SLOTS, MAX_SYSCALL_NR, SlotPid, kind,
};

use crate::{
    btf, cgroup,
    faults::{Mechanism, TcSide, lsm_error},
    qdisc,
};

/// The kernel object, built by agent/build.rs from the `faultline-ebpf` crate.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/faultline"));

const SOCK_PROGRAMS: [&str; 6] = [
    "fl_connect4",
    "fl_connect6",
    "fl_bind4",
    "fl_bind6",
    "fl_sendmsg4",
    "fl_sendmsg6",
];
const SYS_ENTER_PROGRAM: &str = "fl_sys_enter";
const SKB_PROGRAMS: [(&str, CgroupSkbAttachType); 2] = [
    ("fl_skb_ingress", CgroupSkbAttachType::Ingress),
    ("fl_skb_egress", CgroupSkbAttachType::Egress),
];
/// Caps the pacing rate of TCP connections a `bandwidth` fault matches;
/// part of the cgroup_skb mechanism.
const SOCK_OPS_PROGRAM: &str = "fl_sock_ops";
/// Reached by tail call (`FL_DNS_SKB`, `FL_DNS_TC`), never attached.
const SKB_DNS_PROGRAM: &str = "fl_skb_dns";
const TC_DNS_PROGRAM: &str = "fl_tc_dns";
const TC_PROGRAMS: [(&str, TcAttachType); 2] = [
    ("fl_tc_ingress", TcAttachType::Ingress),
    ("fl_tc_egress", TcAttachType::Egress),
];
/// Holds the kernel's TCX hooks on (see `Kernel::keep_tcx_hooks`).
const TC_KEEP_PROGRAM: &str = "fl_tcx_keep";

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
}

/// A verifier refusal in a few lines: the syscall's error and the log's
/// last lines, which say why. Full logs reach megabytes, far beyond what a
/// gRPC status message or a log line should carry.
fn brief(full: &str) -> String {
    const KEEP: usize = 400;
    if full.len() <= KEEP {
        return full.to_owned();
    }
    let (head, log) = full.split_once("Verifier output:").unwrap_or((full, ""));
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    // The verifier's complaint is the last line before its statistics
    // (and before the error chain's own tail, which starts with ':').
    let stats = |l: &str| {
        l.starts_with("verification time")
            || l.starts_with("stack depth")
            || l.starts_with("processed ")
            || l.starts_with(':')
    };
    let complaint = lines.iter().rev().find(|l| !stats(l));
    let processed = lines.iter().rev().find(|l| l.starts_with("processed "));
    let tail = [complaint, processed]
        .into_iter()
        .flatten()
        .copied()
        .collect::<Vec<_>>()
        .join(" | ");
    let mut out: String = head.chars().take(KEEP / 2).collect();
    out.push_str(" … verifier: ");
    out.extend(tail.chars().take(KEEP / 2));
    out
}

/// An error with its causes, so "bpf_link_create failed" carries the errno.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// The links of one attached mechanism. Each is an owned, unpinned
/// bpf_link: dropping the attachment detaches everything in it, and so does
/// the kernel when the agent dies.
#[derive(Default)]
struct Attachment {
    users: usize,
    links: Vec<Box<dyn std::any::Any + Send>>,
}

/// TCX links on the loopback device of a network namespace only the agent
/// holds (by this file). No packet passes there; the links keep the
/// kernel's TCX static keys on. Without them the first TCX link of a fault
/// takes effect only after the kernel has waited for an RCU grace period
/// and patched its code (~15 ms on a 2-CPU VM); with them at once. When the
/// agent dies the namespace, its device and the links go with it.
struct TcxKeeper {
    _links: Vec<Box<dyn std::any::Any + Send>>,
    _netns: File,
}

/// Loads `fl_tcx_keep` and attaches it to both TCX hooks of `lo` in a new,
/// private network namespace (entered by a short-lived thread only).
fn keep_tcx_hooks(ebpf: &mut Ebpf) -> Result<TcxKeeper, String> {
    let name = TC_KEEP_PROGRAM;
    let p = program::<SchedClassifier>(ebpf, name).map_err(|e| chain(&e))?;
    if p.fd().is_err() {
        p.load()
            .map_err(|e| format!("loading {name}: {}", brief(&chain(&e))))?;
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("unshare(CLONE_NEWNET): {e}"))?;
            let netns = File::open("/proc/thread-self/ns/net")
                .map_err(|e| format!("opening /proc/thread-self/ns/net: {e}"))?;
            let mut links: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
            for kind in [TcAttachType::Ingress, TcAttachType::Egress] {
                let link = p
                    .attach("lo", kind)
                    .and_then(|id| p.take_link(id))
                    .map_err(|e| format!("attaching {name} to lo ({kind:?}): {}", chain(&e)))?;
                links.push(Box::new(link));
            }
            Ok(TcxKeeper {
                _links: links,
                _netns: netns,
            })
        })
        .join()
        .unwrap_or_else(|_| Err("the attaching thread panicked".into()))
    })
}

/// A loaded program of the object, as its concrete type.
fn program<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, ProgramError>
where
    &'a mut P: TryFrom<&'a mut Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(ProgramError::NotLoaded)?
        .try_into()
}

/// Why BPF LSM programs cannot be used, from the active LSM list and the
/// kernel's answer to loading one.
fn lsm_reason(program: &str, load_error: &str) -> String {
    match std::fs::read_to_string("/sys/kernel/security/lsm") {
        Ok(list) if !list.split(',').any(|l| l.trim() == "bpf") => format!(
            "BPF LSM not active (active LSMs: {}): add bpf to the lsm= boot parameter",
            list.trim()
        ),
        _ if load_error.contains("(os error 1)") => format!(
            "BPF LSM is active, but this kernel refuses trampoline programs: \
             loading {program} failed with EPERM and an empty verifier log"
        ),
        Ok(_) => format!("the kernel refused {program}: {load_error}"),
        Err(_) => format!(
            "the kernel refused {program} (securityfs not readable, LSM list unknown): {load_error}"
        ),
    }
}

/// Prepares for loading LSM programs: the kernel's BTF (to find each
/// hook) and the struct offsets the programs read, written to `FL_KOFFS`.
/// What loading LSM programs needs: the kernel's BTF, and the offsets map,
/// kept open because programs loaded later refer to its fd.
type LsmLoader = (aya::Btf, Array<MapData, KernelOffsets>);

fn prepare_lsm(ebpf: &mut Ebpf) -> Result<LsmLoader, String> {
    let offsets = btf::Btf::from_sys_fs()
        .and_then(|b| b.kernel_offsets())
        .map_err(|e| format!("kernel struct offsets unavailable: {e}"))?;
    let kbtf = aya::Btf::from_sys_fs().map_err(|e| format!("kernel BTF unavailable: {e}"))?;
    let mut koffs: Array<MapData, KernelOffsets> =
        take(ebpf, "FL_KOFFS").map_err(|e| e.to_string())?;
    koffs
        .set(0, offsets, 0)
        .map_err(|e| format!("FL_KOFFS: {e}"))?;
    Ok((kbtf, koffs))
}

/// Puts a loaded program at index 0 of a program array, for tail calls.
fn install_tail_call(
    ebpf: &mut Ebpf,
    map: &'static str,
    name: &'static str,
    fd: Result<aya::programs::ProgramFd, ProgramError>,
    keep: &mut Vec<ProgramArray<MapData>>,
) -> Result<(), String> {
    let fd = fd.map_err(|e| format!("{name}: {}", chain(&e)))?;
    let mut array: ProgramArray<MapData> = take(ebpf, map).map_err(|e| e.to_string())?;
    array
        .set(0, &fd, 0)
        .map_err(|e| format!("{map}: installing {name}: {e}"))?;
    // The kernel empties a program array when its last user-space reference
    // goes, so the agent holds it for as long as it runs.
    keep.push(array);
    Ok(())
}

/// Slots of one family of faults, listed for the programs that scan only
/// those (`FL_NET_SLOTS`, `FL_LSM_SLOTS`).
struct SlotList {
    what: &'static str,
    max: u32,
    slots: Vec<u32>,
    map: Array<MapData, u32>,
}

impl SlotList {
    fn publish(&mut self) -> Result<(), KernelError> {
        for (i, slot) in self.slots.iter().enumerate() {
            self.map
                .set(i as u32, *slot, 0)
                .map_err(|source| KernelError::Map {
                    name: "slot list",
                    source,
                })?;
        }
        Ok(())
    }

    /// Lists or unlists `index` as `member` says; true when the list changed.
    fn update(&mut self, index: u32, member: bool) -> Result<bool, KernelError> {
        let listed = self.slots.contains(&index);
        if member && !listed {
            if self.slots.len() >= self.max as usize {
                return Err(KernelError::ListFull(self.max, self.what));
            }
            self.slots.push(index);
        } else if !member && listed {
            self.slots.retain(|s| *s != index);
        } else {
            return Ok(false);
        }
        self.publish()?;
        Ok(true)
    }

    fn has_room(&self, index: u32, member: bool) -> Result<(), KernelError> {
        if member && !self.slots.contains(&index) && self.slots.len() >= self.max as usize {
            return Err(KernelError::ListFull(self.max, self.what));
        }
        Ok(())
    }
}

/// Loads the named programs; the first refusal is the mechanism's reason.
fn load_all<P>(
    ebpf: &mut Ebpf,
    names: impl IntoIterator<Item = &'static str>,
    load: impl Fn(&mut P) -> Result<(), ProgramError>,
) -> Result<(), String>
where
    for<'a> &'a mut P: TryFrom<&'a mut Program, Error = ProgramError>,
{
    for name in names {
        program::<P>(ebpf, name).and_then(&load).map_err(|e| {
            let full = chain(&e);
            tracing::debug!(program = name, error = %full, "program refused");
            format!("the kernel refused {name}: {}", brief(&full))
        })?;
    }
    Ok(())
}

/// The key under which a mechanism's load failure is kept (all interfaces
/// share the TCX programs).
fn generic(m: Mechanism) -> Mechanism {
    match m {
        Mechanism::Tcx(..) => Mechanism::TCX,
        other => other,
    }
}

fn if_name(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    Some(
        unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// Programs loaded together: one verifier run each, on first need (or by
/// the agent's background prober), never twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    CgroupSock,
    CgroupSkb,
    SysEnter,
    Tcx,
    Lsm,
}

impl Group {
    pub const ALL: [Self; 5] = [
        Self::CgroupSock,
        Self::CgroupSkb,
        Self::SysEnter,
        Self::Tcx,
        Self::Lsm,
    ];

    fn of(m: Mechanism) -> Self {
        match m {
            Mechanism::CgroupSockAddr => Self::CgroupSock,
            Mechanism::CgroupSkb => Self::CgroupSkb,
            Mechanism::SysEnter => Self::SysEnter,
            Mechanism::Tcx(..) => Self::Tcx,
            Mechanism::Lsm(_) => Self::Lsm,
        }
    }
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
    protected_comms: HashMap<MapData, [u8; 16], u8>,
    attachments: BTreeMap<Mechanism, Attachment>,
    /// Why a mechanism cannot be used here, found while loading.
    unavailable: BTreeMap<Mechanism, String>,
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
    /// Why `latency` cannot run here (no fq qdisc, no tc), or None.
    fq_unavailable: Option<String>,
    fq: Option<qdisc::FqManager>,
    /// Program arrays of the tail calls, held so the kernel keeps their entries.
    tail_calls: Vec<ProgramArray<MapData>>,
    /// BTF for loading LSM programs and the offsets map they read, prepared
    /// on the first LSM need (the map is held: later loads use its fd).
    lsm_btf: Option<Result<LsmLoader, String>>,
    /// LSM programs loaded (or refused) so far.
    lsm_loaded: BTreeSet<&'static str>,
    /// Why the sock_ops program (TCP pacing under `bandwidth`) did not load.
    sock_ops_unavailable: Option<String>,
    /// Groups whose programs were loaded (or refused): see `probe`.
    probed: BTreeSet<Group>,
    /// Keep the TCX hooks on while the agent runs (config `keep_tcx_hooks`).
    keep_tcx: bool,
    tcx_keeper: Option<TcxKeeper>,
    /// Interface scope on the cgroup_skb programs even where TCX exists.
    iface_via_cgroup: bool,
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, KernelError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(KernelError::MissingMap(name))?;
    T::try_from(map).map_err(|source| KernelError::Map { name, source })
}

impl Kernel {
    /// Loads the object and every program (nothing is attached yet). A
    /// program the kernel refuses makes its mechanism unavailable, with the
    /// reason kept for `GetCapabilities`.
    pub fn load() -> Result<Self, KernelError> {
        let mut ebpf = EbpfLoader::new().load(OBJECT)?;
        let mut unavailable = BTreeMap::new();
        let cgroup_root = match cgroup::cgroup2_mount() {
            Ok(path) => match File::open(&path) {
                Ok(f) => Some(f),
                Err(e) => {
                    let reason = format!("cannot open the cgroup2 root {}: {e}", path.display());
                    unavailable.insert(Mechanism::CgroupSockAddr, reason.clone());
                    unavailable.insert(Mechanism::CgroupSkb, reason);
                    None
                }
            },
            Err(e) => {
                unavailable.insert(Mechanism::CgroupSockAddr, e.to_string());
                unavailable.insert(Mechanism::CgroupSkb, e.to_string());
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
        let mut kernel = Self {
            ebpf,
            slots,
            counters,
            config,
            watched,
            nth,
            pids,
            protected,
            protected_comms,
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

    /// Lets `latency` faults install fq root qdiscs, recorded in `state_dir`
    /// (and removes any a previous agent left behind).
    pub fn enable_qdiscs(&mut self, state_dir: &std::path::Path) {
        self.fq = Some(qdisc::FqManager::new(state_dir));
    }

    pub fn fq_unavailable(&self) -> Option<&str> {
        match (&self.fq_unavailable, &self.fq) {
            (Some(r), _) => Some(r),
            (None, None) => Some("qdisc management is not enabled in this agent"),
            (None, Some(_)) => None,
        }
    }

    /// Takes a reference on an fq root qdisc on `ifindex`.
    pub fn acquire_fq(&mut self, ifindex: u32) -> Result<(), KernelError> {
        let unavailable = |reason: String| KernelError::Unavailable {
            mechanism: "fq qdisc",
            reason,
        };
        if let Some(r) = self.fq_unavailable() {
            return Err(unavailable(r.to_owned()));
        }
        let ifname = if_name(ifindex)
            .ok_or_else(|| unavailable(format!("no interface with index {ifindex}")))?;
        self.fq
            .as_mut()
            .expect("checked by fq_unavailable")
            .acquire(ifindex, &ifname)
            .map_err(unavailable)
    }

    pub fn release_fq(&mut self, ifindex: u32) {
        if let Some(fq) = self.fq.as_mut() {
            fq.release(ifindex);
        }
    }

    /// Loads the programs of `group` unless done already. A program the
    /// kernel refuses makes its mechanism unavailable, with the reason kept
    /// for `GetCapabilities` and `FailedPrecondition`.
    pub fn probe(&mut self, group: Group) {
        if !self.probed.insert(group) {
            return;
        }
        let t0 = std::time::Instant::now();
        let ebpf = &mut self.ebpf;
        let unavailable = &mut self.unavailable;
        let tail_calls = &mut self.tail_calls;
        match group {
            Group::CgroupSock => {
                if unavailable.contains_key(&Mechanism::CgroupSockAddr) {
                    return;
                }
                if let Err(reason) = load_all::<CgroupSockAddr>(ebpf, SOCK_PROGRAMS, |p| p.load()) {
                    unavailable.insert(Mechanism::CgroupSockAddr, reason);
                }
            }
            Group::CgroupSkb => {
                if unavailable.contains_key(&Mechanism::CgroupSkb) {
                    return;
                }
                // TCP pacing for `bandwidth` is an improvement, not a
                // requirement: without it matching TCP is policed only.
                if let Err(reason) = load_all::<SockOps>(ebpf, [SOCK_OPS_PROGRAM], |p| p.load()) {
                    tracing::warn!(%reason, "bandwidth will police TCP without pacing it");
                    self.sock_ops_unavailable = Some(reason);
                }
                let res = load_all::<CgroupSkb>(ebpf, SKB_PROGRAMS.map(|(n, _)| n), |p| p.load())
                    .and_then(|()| load_all::<CgroupSkb>(ebpf, [SKB_DNS_PROGRAM], |p| p.load()))
                    .and_then(|()| {
                        let fd = program::<CgroupSkb>(ebpf, SKB_DNS_PROGRAM)
                            .and_then(|p| p.fd()?.try_clone().map_err(ProgramError::from));
                        install_tail_call(ebpf, "FL_DNS_SKB", SKB_DNS_PROGRAM, fd, tail_calls)
                    });
                if let Err(reason) = res {
                    unavailable.insert(Mechanism::CgroupSkb, reason);
                }
            }
            Group::SysEnter => {
                if let Err(reason) =
                    load_all::<RawTracePoint>(ebpf, [SYS_ENTER_PROGRAM], |p| p.load())
                {
                    unavailable.insert(Mechanism::SysEnter, reason);
                }
            }
            Group::Tcx => {
                // Before 6.6 aya attaches classifiers as legacy netlink tc
                // filters, which would outlive the agent: interface scope is
                // refused there.
                let tcx = aya::util::KernelVersion::current()
                    .is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 6, 0));
                let res = if !tcx {
                    Err("interface scope needs TCX links (Linux 6.6 or later); a legacy tc filter would outlive the agent"
                        .to_owned())
                } else {
                    load_all::<SchedClassifier>(
                        ebpf,
                        TC_PROGRAMS
                            .map(|(n, _)| n)
                            .into_iter()
                            .chain([TC_DNS_PROGRAM]),
                        |p| p.load(),
                    )
                    .and_then(|()| {
                        let fd = program::<SchedClassifier>(ebpf, TC_DNS_PROGRAM)
                            .and_then(|p| p.fd()?.try_clone().map_err(ProgramError::from));
                        install_tail_call(ebpf, "FL_DNS_TC", TC_DNS_PROGRAM, fd, tail_calls)
                    })
                };
                if let Err(reason) = res {
                    unavailable.insert(Mechanism::TCX, reason);
                }
            }
            Group::Lsm => {
                for i in 0..lsm_error::HOOKS.len() {
                    self.probe_lsm_hook(lsm_error::attach_index(i));
                }
            }
        }
        if group == Group::Tcx && self.keep_tcx && !self.unavailable.contains_key(&Mechanism::TCX) {
            match keep_tcx_hooks(&mut self.ebpf) {
                Ok(keeper) => {
                    tracing::info!("TCX hooks kept on: interface faults take effect at once");
                    self.tcx_keeper = Some(keeper);
                }
                Err(reason) => tracing::warn!(
                    %reason,
                    "cannot keep the TCX hooks on; an interface fault takes effect only after an RCU grace period"
                ),
            }
        }
        tracing::debug!(
            ?group,
            elapsed_ms = t0.elapsed().as_millis() as u64,
            "programs loaded"
        );
    }

    /// Whether to keep the kernel's TCX hooks on while the agent runs, from
    /// the moment the TCX programs are loaded. Call before `probe`.
    pub fn set_keep_tcx_hooks(&mut self, on: bool) {
        self.keep_tcx = on;
    }

    /// Loads the one LSM program behind `index` (an `attach_index`), so a
    /// fault loads only the hooks it uses; the kernel verifies each.
    fn probe_lsm_hook(&mut self, index: usize) {
        let name = lsm_error::HOOKS[index].program;
        if !self.lsm_loaded.insert(name) {
            return;
        }
        if self.lsm_btf.is_none() {
            let prepared = prepare_lsm(&mut self.ebpf);
            if let Err(reason) = &prepared {
                for i in 0..lsm_error::HOOKS.len() {
                    self.unavailable
                        .insert(Mechanism::Lsm(lsm_error::attach_index(i)), reason.clone());
                }
            }
            self.lsm_btf = Some(prepared);
        }
        let Some(Ok((kbtf, _))) = &self.lsm_btf else {
            return;
        };
        let hook = lsm_error::HOOKS[index].hook;
        if let Err(e) = program::<Lsm>(&mut self.ebpf, name).and_then(|p| p.load(hook, kbtf)) {
            let full = chain(&e);
            tracing::debug!(program = name, error = %full, "program refused");
            self.unavailable
                .insert(Mechanism::Lsm(index), lsm_reason(name, &brief(&full)));
        }
    }

    /// Loads what `m` needs, unless done already.
    fn ensure(&mut self, m: Mechanism) {
        match m {
            Mechanism::Lsm(i) => self.probe_lsm_hook(i),
            other => self.probe(Group::of(other)),
        }
    }

    /// The first group not loaded yet, if any.
    pub fn unprobed(&self) -> Option<Group> {
        Group::ALL.into_iter().find(|g| !self.probed.contains(g))
    }

    /// Why `m` cannot be used here (loading its programs first if needed).
    pub fn unavailable(&mut self, m: Mechanism) -> Option<&str> {
        self.ensure(m);
        self.reason(m)
    }

    /// Why matching TCP is not paced under a cgroup `bandwidth` fault.
    pub fn sock_ops_reason(&self) -> Option<&str> {
        self.sock_ops_unavailable.as_deref()
    }

    /// Why `m` cannot be used, as far as probed so far.
    pub fn reason(&self, m: Mechanism) -> Option<&str> {
        self.unavailable.get(&generic(m)).map(String::as_str)
    }

    /// Interface scope runs on the cgroup_skb programs (local sockets'
    /// packets only) instead of TCX: by configuration, or because this
    /// kernel has no TCX. Loads the TCX programs first if needed.
    pub fn interface_via_cgroup(&mut self) -> bool {
        self.ensure(Mechanism::TCX);
        self.interface_via_cgroup_probed()
    }

    /// `interface_via_cgroup` from what has been probed so far.
    pub fn interface_via_cgroup_probed(&self) -> bool {
        self.iface_via_cgroup || self.reason(Mechanism::TCX).is_some()
    }

    /// Make interface scope use the cgroup_skb programs even where TCX
    /// exists (config `interface_hooks = "cgroup_skb"`).
    pub fn set_interface_via_cgroup(&mut self, on: bool) {
        self.iface_via_cgroup = on;
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
        };
        self.config
            .set(0, cfg, 0)
            .map_err(Self::map_err("FL_CONFIG"))
    }

    /// Writes a slot; a network or LSM fault's slot is also listed for the
    /// programs that scan only those (after the slot is complete, so they
    /// never see half of it).
    pub fn write_slot(&mut self, index: u32, slot: &FaultSlot) -> Result<(), KernelError> {
        let net = kind::is_network(slot.kind);
        let lsm = slot.kind == kind::LSM_ERROR;
        let dns = slot.kind == kind::PACKET_DNS;
        self.net_slots.has_room(index, net)?;
        self.lsm_slots.has_room(index, lsm)?;
        self.dns_slots.has_room(index, dns)?;
        self.slots
            .set(index, slot, 0)
            .map_err(Self::map_err("FL_SLOTS"))?;
        let changed = self.net_slots.update(index, net)?
            | self.lsm_slots.update(index, lsm)?
            | self.dns_slots.update(index, dns)?;
        if changed {
            self.set_slot_limit(self.slot_limit)?;
        }
        Ok(())
    }

    /// Writes the slot's included/excluded pids; call before `write_slot`.
    pub fn write_pids(&mut self, index: u32, roles: &[(u32, u32)]) -> Result<(), KernelError> {
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

    pub fn clear_slot(&mut self, index: u32) -> Result<(), KernelError> {
        self.write_slot(index, &FaultSlot::default())?;
        // Drop the per-process call counts of nth-call faults in this slot.
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
        Ok(())
    }

    /// Zeroes a slot's counters and the per-slot state of the packet
    /// programs (token bucket or next departure time, Gilbert state), so a
    /// reused slot starts fresh.
    pub fn reset_counters(&mut self, index: u32) -> Result<(), KernelError> {
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
        let per_cpu = self
            .counters
            .get(&index, 0)
            .map_err(Self::map_err("FL_COUNTERS"))?;
        Ok(per_cpu
            .iter()
            .fold(FaultCounters::default(), |acc, c| FaultCounters {
                matched: acc.matched + c.matched,
                injected: acc.injected + c.injected,
            }))
    }

    /// Adjusts the number of active signal faults watching syscall `nr`.
    pub fn watch_syscall(&mut self, nr: u32, add: bool) -> Result<(), KernelError> {
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

    /// Replaces the in-kernel set of protected processes.
    pub fn set_protected(&mut self, pids: &[u32]) -> Result<(), KernelError> {
        let old: Vec<u32> = self.protected.keys().filter_map(Result::ok).collect();
        for p in old.iter().filter(|p| !pids.contains(p)) {
            let _ = self.protected.remove(p);
        }
        for p in pids.iter().take(4096) {
            self.protected
                .insert(p, 1, 0)
                .map_err(Self::map_err("FL_PROTECTED"))?;
        }
        Ok(())
    }

    /// Sets the process names that are never faulted (at most 64).
    pub fn set_protected_comms(&mut self, comms: &[String]) -> Result<(), KernelError> {
        for c in comms.iter().take(64) {
            let mut key = [0u8; 16];
            let n = c.len().min(15);
            key[..n].copy_from_slice(&c.as_bytes()[..n]);
            self.protected_comms
                .insert(key, 1, 0)
                .map_err(Self::map_err("FL_PROT_COMMS"))?;
        }
        Ok(())
    }

    /// Takes a reference on a mechanism, attaching it on first use.
    pub fn acquire(&mut self, m: Mechanism) -> Result<(), KernelError> {
        self.ensure(m);
        if let Some(reason) = self.unavailable.get(&generic(m)) {
            return Err(KernelError::Unavailable {
                mechanism: m.name(),
                reason: reason.clone(),
            });
        }
        let users = self.attachments.get(&m).map_or(0, |a| a.users);
        if users == 0 {
            let att = self.attach(m)?;
            self.attachments.insert(m, att);
        }
        if let Some(a) = self.attachments.get_mut(&m) {
            a.users += 1;
        }
        Ok(())
    }

    /// Drops a reference; the last one detaches.
    pub fn release(&mut self, m: Mechanism) -> Result<(), KernelError> {
        let Some(a) = self.attachments.get_mut(&m) else {
            return Ok(());
        };
        a.users = a.users.saturating_sub(1);
        if a.users > 0 {
            return Ok(());
        }
        // Dropping the links detaches them.
        drop(self.attachments.remove(&m));
        Ok(())
    }

    pub fn attached(&self, m: Mechanism) -> bool {
        self.attachments.get(&m).is_some_and(|a| a.users > 0)
    }

    /// Attaches every program of a mechanism, or none: on error the links
    /// made so far are dropped, which detaches them.
    fn attach(&mut self, m: Mechanism) -> Result<Attachment, KernelError> {
        let mut att = Attachment::default();
        let failed = |program: &'static str| move |source| KernelError::Attach { program, source };
        let ebpf = &mut self.ebpf;
        match m {
            Mechanism::CgroupSockAddr | Mechanism::CgroupSkb => {
                let root = self
                    .cgroup_root
                    .as_ref()
                    .ok_or_else(|| KernelError::Unavailable {
                        mechanism: m.name(),
                        reason: "no cgroup2 root".into(),
                    })?;
                // A cgroup bpf_link always coexists with other programs; the
                // kernel refuses any flag on BPF_LINK_CREATE (EINVAL), so the
                // mode is Single (no flags), not AllowMultiple.
                if m == Mechanism::CgroupSockAddr {
                    for name in SOCK_PROGRAMS {
                        let p = program::<CgroupSockAddr>(ebpf, name).map_err(failed(name))?;
                        let id = p
                            .attach(root, CgroupAttachMode::Single)
                            .map_err(failed(name))?;
                        att.links
                            .push(Box::new(p.take_link(id).map_err(failed(name))?));
                    }
                } else {
                    if self.sock_ops_unavailable.is_none() {
                        let name = SOCK_OPS_PROGRAM;
                        let p = program::<SockOps>(ebpf, name).map_err(failed(name))?;
                        let id = p
                            .attach(root, CgroupAttachMode::Single)
                            .map_err(failed(name))?;
                        att.links
                            .push(Box::new(p.take_link(id).map_err(failed(name))?));
                    }
                    for (name, kind) in SKB_PROGRAMS {
                        let p = program::<CgroupSkb>(ebpf, name).map_err(failed(name))?;
                        let id = p
                            .attach(root, kind, CgroupAttachMode::Single)
                            .map_err(failed(name))?;
                        att.links
                            .push(Box::new(p.take_link(id).map_err(failed(name))?));
                    }
                }
            }
            Mechanism::SysEnter => {
                let name = SYS_ENTER_PROGRAM;
                let p = program::<RawTracePoint>(ebpf, name).map_err(failed(name))?;
                let id = p.attach("sys_enter").map_err(failed(name))?;
                att.links
                    .push(Box::new(p.take_link(id).map_err(failed(name))?));
            }
            Mechanism::Lsm(index) => {
                let name = lsm_error::HOOKS[index].program;
                let p = program::<Lsm>(ebpf, name).map_err(failed(name))?;
                let id = p.attach().map_err(failed(name))?;
                att.links
                    .push(Box::new(p.take_link(id).map_err(failed(name))?));
            }
            Mechanism::Tcx(ifindex, side) => {
                let ifname = if_name(ifindex).ok_or_else(|| KernelError::Unavailable {
                    mechanism: m.name(),
                    reason: format!("no interface with index {ifindex}"),
                })?;
                let (name, kind) = match side {
                    TcSide::Ingress => TC_PROGRAMS[0],
                    TcSide::Egress => TC_PROGRAMS[1],
                };
                let p = program::<SchedClassifier>(ebpf, name).map_err(failed(name))?;
                let id = p.attach(&ifname, kind).map_err(failed(name))?;
                att.links
                    .push(Box::new(p.take_link(id).map_err(failed(name))?));
            }
        }
        Ok(att)
    }
}

#[cfg(test)]
mod tests {
    use super::{
        OBJECT, SKB_DNS_PROGRAM, SKB_PROGRAMS, SOCK_OPS_PROGRAM, SOCK_PROGRAMS, SYS_ENTER_PROGRAM,
        TC_DNS_PROGRAM, TC_KEEP_PROGRAM, TC_PROGRAMS, brief,
    };
    use crate::faults::lsm_error;

    /// Every program the agent loads by name is in the object (a renamed
    /// function would otherwise surface only as "not loaded" on a kernel
    /// where that mechanism exists).
    #[test]
    fn every_program_name_is_in_the_object() {
        let names = SOCK_PROGRAMS
            .into_iter()
            .chain(SKB_PROGRAMS.map(|(n, _)| n))
            .chain(TC_PROGRAMS.map(|(n, _)| n))
            .chain([
                SOCK_OPS_PROGRAM,
                SYS_ENTER_PROGRAM,
                TC_KEEP_PROGRAM,
                SKB_DNS_PROGRAM,
                TC_DNS_PROGRAM,
            ])
            .chain(lsm_error::programs().into_iter().map(|(n, _)| n));
        for name in names {
            let mut sym = name.as_bytes().to_vec();
            sym.push(0);
            assert!(
                OBJECT.windows(sym.len()).any(|w| w == sym.as_slice()),
                "{name} is not a symbol of the eBPF object"
            );
        }
    }

    #[test]
    fn brief_keeps_the_error_and_the_verifiers_last_words() {
        let log = format!(
            "the BPF_PROG_LOAD syscall returned Argument list too long (os error 7). Verifier output: {}\nBPF program is too large. Processed 1000001 insn\nprocessed 1000001 insns",
            "0: R1=ctx() R10=fp0\n".repeat(5000)
        );
        let b = brief(&log);
        assert!(b.len() < 600, "{} bytes", b.len());
        assert!(
            b.starts_with("the BPF_PROG_LOAD syscall returned Argument list too long"),
            "{b}"
        );
        assert!(b.contains("BPF program is too large"), "{b}");
        // A complaint followed by statistics (Debian 6.1 on fl_sock_ops).
        let log = format!(
            "the BPF_PROG_LOAD syscall returned Invalid argument (os error 22). Verifier output: {}\n\
             141: (85) call bpf_get_current_ancestor_cgroup_id#123\n\
             unknown func bpf_get_current_ancestor_cgroup_id#123\n\
             verification time 14563 usec\nstack depth 320+0\n\
             processed 850 insns (limit 1000000) max_states_per_insn 4\n: Invalid argument (os error 22)",
            "0: R1=ctx() R10=fp0\n".repeat(50)
        );
        let b = brief(&log);
        assert!(
            b.contains("unknown func bpf_get_current_ancestor_cgroup_id#123 | processed 850 insns"),
            "{b}"
        );
        assert_eq!(brief("short"), "short");
    }
}
