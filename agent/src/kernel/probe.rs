//! Loading programs: each group once, on first need or by the agent's
//! background prober. A program the kernel refuses makes its mechanism
//! unavailable, with the reason kept for capabilities and refusals.

use aya::{
    Ebpf,
    maps::{Array, MapData, ProgramArray},
    programs::{
        CgroupSkb, CgroupSockAddr, Lsm, ProgramError, RawTracePoint, SchedClassifier, SockOps,
    },
};
use faultline_common::KernelOffsets;

use super::{
    Kernel, Mechanism,
    catalogue::{
        Group, SKB_DNS_PROGRAM, SKB_PROGRAMS, SOCK_OPS_PROGRAM, SOCK_PROGRAMS, SYS_ENTER_PROGRAM,
        TC_DNS_PROGRAM, TC_PROGRAMS, load_all, program, take,
    },
    keeper::keep_tcx_hooks,
    lsm_hooks,
    verifier::{Reason, brief, chain},
};
use crate::btf;

/// What loading LSM programs needs: the kernel's BTF (parsed, tens of MiB;
/// dropped once every LSM program is loaded), and the offsets map, kept open
/// because the programs refer to its fd.
pub(super) type LsmLoader = (Option<aya::Btf>, Array<MapData, KernelOffsets>);

fn prepare_lsm(ebpf: &mut Ebpf) -> Result<LsmLoader, Reason> {
    let offsets = btf::Btf::from_sys_fs()
        .and_then(|b| b.kernel_offsets())
        .map_err(|e| Reason::Setup(format!("kernel struct offsets unavailable: {e}")))?;
    let kbtf = aya::Btf::from_sys_fs()
        .map_err(|e| Reason::Setup(format!("kernel BTF unavailable: {e}")))?;
    let mut koffs: Array<MapData, KernelOffsets> =
        take(ebpf, "FL_KOFFS").map_err(|e| Reason::Setup(e.to_string()))?;
    koffs
        .set(0, offsets, 0)
        .map_err(|e| Reason::Setup(format!("FL_KOFFS: {e}")))?;
    Ok((Some(kbtf), koffs))
}

/// Puts a loaded program at index 0 of a program array, for tail calls.
fn install_tail_call(
    ebpf: &mut Ebpf,
    map: &'static str,
    name: &'static str,
    fd: Result<aya::programs::ProgramFd, ProgramError>,
    keep: &mut Vec<ProgramArray<MapData>>,
) -> Result<(), Reason> {
    let fd = fd.map_err(|e| Reason::Setup(format!("{name}: {}", chain(&e))))?;
    let mut array: ProgramArray<MapData> =
        take(ebpf, map).map_err(|e| Reason::Setup(e.to_string()))?;
    array
        .set(0, &fd, 0)
        .map_err(|e| Reason::Setup(format!("{map}: installing {name}: {e}")))?;
    // The kernel empties a program array when its last user-space reference
    // goes, so the agent holds it for as long as it runs.
    keep.push(array);
    Ok(())
}

impl Kernel {
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
                if let Err(reason) = load_all::<CgroupSockAddr>(
                    ebpf,
                    SOCK_PROGRAMS,
                    aya::programs::CgroupSockAddr::load,
                ) {
                    unavailable.insert(Mechanism::CgroupSockAddr, reason);
                }
            }
            Group::CgroupSkb => {
                if unavailable.contains_key(&Mechanism::CgroupSkb) {
                    return;
                }
                // TCP pacing for `bandwidth` is an improvement, not a
                // requirement: without it matching TCP is policed only.
                if let Err(reason) =
                    load_all::<SockOps>(ebpf, [SOCK_OPS_PROGRAM], aya::programs::SockOps::load)
                {
                    tracing::warn!(%reason, "bandwidth will police TCP without pacing it");
                    self.sock_ops_unavailable = Some(reason);
                }
                let res = load_all::<CgroupSkb>(
                    ebpf,
                    SKB_PROGRAMS.map(|(n, _)| n),
                    aya::programs::CgroupSkb::load,
                )
                .and_then(|()| {
                    load_all::<CgroupSkb>(ebpf, [SKB_DNS_PROGRAM], aya::programs::CgroupSkb::load)
                })
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
                if let Err(reason) = load_all::<RawTracePoint>(
                    ebpf,
                    [SYS_ENTER_PROGRAM],
                    aya::programs::RawTracePoint::load,
                ) {
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
                    Err(Reason::NoTcx)
                } else {
                    load_all::<SchedClassifier>(
                        ebpf,
                        TC_PROGRAMS
                            .map(|(n, _)| n)
                            .into_iter()
                            .chain([TC_DNS_PROGRAM]),
                        aya::programs::SchedClassifier::load,
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
                for i in 0..lsm_hooks::HOOKS.len() {
                    self.probe_lsm_hook(lsm_hooks::attach_index(i));
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
        let name = lsm_hooks::HOOKS[index].program;
        if !self.lsm_loaded.insert(name) {
            return;
        }
        if self.lsm_btf.is_none() {
            let prepared = prepare_lsm(&mut self.ebpf);
            if let Err(reason) = &prepared {
                for i in 0..lsm_hooks::HOOKS.len() {
                    self.unavailable
                        .insert(Mechanism::Lsm(lsm_hooks::attach_index(i)), reason.clone());
                }
            }
            self.lsm_btf = Some(prepared);
        }
        let Some(Ok((Some(kbtf), _))) = &self.lsm_btf else {
            return;
        };
        let hook = lsm_hooks::HOOKS[index].hook;
        if let Err(e) = program::<Lsm>(&mut self.ebpf, name).and_then(|p| p.load(hook, kbtf)) {
            let full = chain(&e);
            tracing::debug!(program = name, error = %full, "program refused");
            self.unavailable
                .insert(Mechanism::Lsm(index), Reason::lsm(name, brief(&full)));
        }
        // Every LSM program is loaded (or refused for good): the parsed
        // kernel BTF is no longer needed.
        if lsm_hooks::HOOKS
            .iter()
            .all(|h| self.lsm_loaded.contains(h.program))
            && let Some(Ok((btf, _))) = &mut self.lsm_btf
        {
            *btf = None;
        }
    }

    /// Loads what `m` needs, unless done already.
    pub(super) fn ensure_loaded(&mut self, m: Mechanism) {
        match m {
            Mechanism::Lsm(i) => self.probe_lsm_hook(i),
            other => self.probe(Group::of(other)),
        }
    }

    /// The first group not loaded yet, if any.
    pub fn unprobed(&self) -> Option<Group> {
        Group::ALL.into_iter().find(|g| !self.probed.contains(g))
    }

    /// Make interface scope use the cgroup_skb programs even where TCX
    /// exists (config `interface_hooks = "cgroup_skb"`).
    pub fn set_interface_via_cgroup(&mut self, on: bool) {
        self.iface_via_cgroup = on;
    }
}
