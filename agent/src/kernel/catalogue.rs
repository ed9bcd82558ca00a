//! The program catalogue: the eBPF object, the programs the agent loads
//! by name, the mechanisms they make up and the groups they load in.

use aya::{
    Ebpf,
    programs::{CgroupSkbAttachType, Program, ProgramError, TcAttachType},
};

use super::{
    KernelError, lsm_hooks,
    verifier::{Reason, brief, chain},
};

/// The kernel object, built by agent/build.rs from the `faultline-ebpf` crate.
pub(super) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/faultline"));

pub(super) const SOCK_PROGRAMS: [&str; 6] = [
    "fl_connect4",
    "fl_connect6",
    "fl_bind4",
    "fl_bind6",
    "fl_sendmsg4",
    "fl_sendmsg6",
];
pub(super) const SYS_ENTER_PROGRAM: &str = "fl_sys_enter";
pub(super) const SKB_PROGRAMS: [(&str, CgroupSkbAttachType); 2] = [
    ("fl_skb_ingress", CgroupSkbAttachType::Ingress),
    ("fl_skb_egress", CgroupSkbAttachType::Egress),
];
/// Caps the pacing rate of TCP connections a `bandwidth` fault matches;
/// part of the cgroup_skb mechanism.
pub(super) const SOCK_OPS_PROGRAM: &str = "fl_sock_ops";
/// Reached by tail call (`FL_DNS_SKB`, `FL_DNS_TC`), never attached.
pub(super) const SKB_DNS_PROGRAM: &str = "fl_skb_dns";
pub(super) const TC_DNS_PROGRAM: &str = "fl_tc_dns";
pub(super) const TC_PROGRAMS: [(&str, TcAttachType); 2] = [
    ("fl_tc_ingress", TcAttachType::Ingress),
    ("fl_tc_egress", TcAttachType::Egress),
];
/// Holds the kernel's TCX hooks on (see `Kernel::keep_tcx_hooks`).
pub(super) const TC_KEEP_PROGRAM: &str = "fl_tcx_keep";

/// A kernel attachment that faults share; attached while any fault needs
/// it. `name()` is the one vocabulary for mechanisms: capability rows,
/// `FailedPrecondition` reasons and the test suite's expectations use it.
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
    /// One BPF LSM program (index into `lsm_hooks::HOOKS`, normalised by
    /// `lsm_hooks::attach_index` so rows sharing a program share it).
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
            Self::CgroupSockAddr => CGROUP_SOCK_ADDR,
            Self::SysEnter => RAW_TRACEPOINT,
            Self::CgroupSkb => CGROUP_SKB,
            Self::Tcx(..) => TCX,
            Self::Lsm(i) => lsm_hooks::HOOKS[i].mechanism,
        }
    }

    /// The key under which a mechanism's load failure is kept (all
    /// interfaces share the TCX programs).
    pub(super) fn generic(self) -> Self {
        match self {
            Self::Tcx(..) => Self::TCX,
            other => other,
        }
    }
}

/// Mechanism names (see `Mechanism::name`), and the names of capability
/// rows that combine a mechanism with more than its programs.
pub const CGROUP_SOCK_ADDR: &str = "cgroup_sock_addr";
pub const RAW_TRACEPOINT: &str = "raw_tracepoint";
pub const CGROUP_SKB: &str = "cgroup_skb";
pub const TCX: &str = "tcx";
/// TCP pacing by the sock_ops program (part of the cgroup_skb group).
pub const SOCK_OPS: &str = "sock_ops";
/// TCX with an fq root qdisc on the interface (latency, shaped bandwidth).
pub const TCX_FQ: &str = "tcx+fq";

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

    pub(super) fn of(m: Mechanism) -> Self {
        match m {
            Mechanism::CgroupSockAddr => Self::CgroupSock,
            Mechanism::CgroupSkb => Self::CgroupSkb,
            Mechanism::SysEnter => Self::SysEnter,
            Mechanism::Tcx(..) => Self::Tcx,
            Mechanism::Lsm(_) => Self::Lsm,
        }
    }
}

impl Group {
    /// The group behind a capability row's mechanism name, if any.
    pub fn of_name(mechanism: &str) -> Option<Self> {
        Some(match mechanism {
            CGROUP_SOCK_ADDR => Self::CgroupSock,
            RAW_TRACEPOINT => Self::SysEnter,
            CGROUP_SKB | SOCK_OPS => Self::CgroupSkb,
            TCX | TCX_FQ => Self::Tcx,
            m if m.starts_with("bpf_lsm:") => Self::Lsm,
            _ => return None,
        })
    }
}

/// A loaded program of the object, as its concrete type.
pub(super) fn program<'a, P>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut P, ProgramError>
where
    &'a mut P: TryFrom<&'a mut Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(ProgramError::NotLoaded)?
        .try_into()
}

/// Loads the named programs; the first refusal is the mechanism's reason.
pub(super) fn load_all<P>(
    ebpf: &mut Ebpf,
    names: impl IntoIterator<Item = &'static str>,
    load: impl Fn(&mut P) -> Result<(), ProgramError>,
) -> Result<(), Reason>
where
    for<'a> &'a mut P: TryFrom<&'a mut Program, Error = ProgramError>,
{
    for name in names {
        program::<P>(ebpf, name).and_then(&load).map_err(|e| {
            let full = chain(&e);
            tracing::debug!(program = name, error = %full, "program refused");
            Reason::Refused {
                program: name,
                detail: brief(&full),
            }
        })?;
    }
    Ok(())
}

pub(super) fn if_name(ifindex: u32) -> Option<String> {
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

pub(super) fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, KernelError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(KernelError::MissingMap(name))?;
    T::try_from(map).map_err(|source| KernelError::Map { name, source })
}

#[cfg(test)]
mod tests {
    use super::*;

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
            .chain(lsm_hooks::programs().into_iter().map(|(n, _)| n))
            .chain(super::super::runq::RUNQ_PROGRAMS.map(|(n, _)| n))
            .chain([super::super::protect::EXIT_PROGRAM]);
        for name in names {
            let mut sym = name.as_bytes().to_vec();
            sym.push(0);
            assert!(
                OBJECT.windows(sym.len()).any(|w| w == sym.as_slice()),
                "{name} is not a symbol of the eBPF object"
            );
        }
    }
}
