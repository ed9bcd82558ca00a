//! `syscall_error`: a chosen syscall of a target fails with an errno.
//! connect/bind/sendmsg run on the cgroup sock_addr programs
//! (`bpf_set_retval`, any kernel with cgroup BPF); every other call on the
//! BPF LSM hook that reaches it (`kernel::lsm_hooks::HOOKS`).

use std::net::IpAddr;

use faultline_common::{FaultSlot, FileMatch, flags, kind, sock_op};
use faultline_proto::v1 as pb;

use super::{Fault, FaultKind, Plan, probability, process_scope};
use crate::{
    caps::Capability,
    domain::{Cidr, PathMatch, Probability, Resolver, SpecError, Target},
    kernel::{
        KernelOps, Mechanism, Probed, Resource, ScanList,
        lsm_hooks::{self, Filter, HOOKS},
    },
    names::ErrnoName,
};

/// Socket calls the cgroup sock_addr hooks fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SockCall {
    Connect,
    Bind,
    Sendmsg,
}

impl SockCall {
    pub const NAMES: [&str; 3] = ["connect", "bind", "sendmsg"];

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "connect" => Some(Self::Connect),
            "bind" => Some(Self::Bind),
            "sendmsg" | "sendto" => Some(Self::Sendmsg),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Bind => "bind",
            Self::Sendmsg => "sendmsg",
        }
    }
}

/// The call a `syscall_error` fault fails, and the mechanism behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCall {
    /// connect/bind/sendmsg: cgroup sock_addr hooks.
    Sock(SockCall),
    /// Everything else: a BPF LSM hook (`HOOKS[hook]`), asked for by this
    /// syscall name.
    Lsm { syscall: &'static str, hook: usize },
}

impl ErrorCall {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sock(c) => c.name(),
            Self::Lsm { syscall, .. } => syscall,
        }
    }

    fn parse(field: &str, name: &str) -> Result<Self, SpecError> {
        if let Some(c) = SockCall::parse(name) {
            return Ok(Self::Sock(c));
        }
        if let Some(hook) = lsm_hooks::hook_for(name) {
            let syscall = HOOKS[hook]
                .syscalls
                .iter()
                .find(|s| **s == name)
                .copied()
                .unwrap_or(HOOKS[hook].syscalls[0]);
            return Ok(Self::Lsm { syscall, hook });
        }
        let field = format!("{field}.syscall");
        if name.is_empty() {
            return Err(SpecError::invalid(field, "required"));
        }
        Err(SpecError::invalid(
            field,
            format!(
                "{name:?} cannot be failed by syscall_error (supported: {}, {})",
                SockCall::NAMES.join(", "),
                HOOKS
                    .iter()
                    .flat_map(|h| h.syscalls.iter().copied())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ))
    }

    /// What besides the target the call may be filtered on (None: the
    /// socket calls, which take a port and a CIDR).
    fn filter(self) -> Option<Filter> {
        match self {
            Self::Sock(_) => None,
            Self::Lsm { hook, .. } => Some(HOOKS[hook].filter),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SyscallError {
    pub call: ErrorCall,
    pub errno: ErrnoName,
    pub probability: Probability,
    /// 0 = any port.
    pub port: u16,
    /// None = any address of either family.
    pub cidr: Option<Cidr>,
    /// LSM file calls only: the subtree the fault applies to.
    pub path: Option<PathMatch>,
}

impl FaultKind for SyscallError {
    const NAME: &'static str = faultline_proto::names::SYSCALL_ERROR;
    type Wire = pb::SyscallError;

    fn from_wire(field: &str, e: &pb::SyscallError, r: &dyn Resolver) -> Result<Self, SpecError> {
        let name = e.syscall.trim();
        let call = ErrorCall::parse(field, name)?;
        let inv = |sub: &str, reason: String| SpecError::invalid(format!("{field}.{sub}"), reason);
        let errno = ErrnoName::parse(&e.errno).map_err(|r| inv("errno", r))?;
        let port = u16::try_from(e.port)
            .map_err(|_| inv("port", format!("{} is not a port (0..=65535)", e.port)))?;
        let cidr = match e.cidr.trim() {
            "" => None,
            c => Some(Cidr::parse(c).map_err(|r| inv("cidr", r))?),
        };
        let filter = call.filter();
        if cidr.is_some() && filter.is_some() {
            return Err(inv(
                "cidr",
                format!("applies to connect, bind and sendmsg only, not {name}"),
            ));
        }
        if port != 0 && !matches!(filter, None | Some(Filter::LocalPort)) {
            return Err(inv(
                "port",
                format!(
                    "applies to connect, bind, sendmsg (destination/bound port) and accept, listen, recvmsg (local port) only, not {name}"
                ),
            ));
        }
        let path = match e.path.trim() {
            "" => None,
            path if filter == Some(Filter::Path) => Some(r.path(path).map_err(|r| inv("path", r))?),
            _ => {
                return Err(inv(
                    "path",
                    format!(
                        "applies to file calls only (open, read, write, mmap, mprotect, ioctl, execve, unlink, rmdir, mkdir, rename, link, symlink), not {name}"
                    ),
                ));
            }
        };
        Ok(Self {
            call,
            errno,
            probability: probability(field, e.probability)?,
            port,
            cidr,
            path,
        })
    }

    fn capabilities(kernel: &dyn Probed) -> Vec<Capability> {
        let mut rows = vec![Capability::row(
            kernel,
            Self::NAME,
            Mechanism::CgroupSockAddr,
            &SockCall::NAMES,
        )];
        // One row per LSM hook, so `caps` shows for each syscall whether
        // this kernel can fail it and, if not, why.
        rows.extend(HOOKS.iter().enumerate().map(|(i, h)| {
            let m = Mechanism::Lsm(lsm_hooks::attach_index(i));
            Capability::new(Self::NAME, h.mechanism, h.syscalls, kernel.reason(m))
        }));
        rows
    }

    #[cfg(test)]
    fn example() -> (pb::SyscallError, pb::Target) {
        let wire = pb::SyscallError {
            syscall: "openat".into(),
            errno: "EIO".into(),
            probability: 0.25,
            path: "/var/lib".into(),
            ..Default::default()
        };
        let target = pb::Target {
            pids: vec![10],
            ..Default::default()
        };
        (wire, target)
    }
}

impl Fault for SyscallError {
    fn summary(&self) -> String {
        let mut out = format!(
            "{} -> {} p={}",
            self.call.name(),
            self.errno.name(),
            self.probability.value()
        );
        if self.port != 0 {
            out.push_str(&format!(" port={}", self.port));
        }
        if let Some(c) = self.cidr {
            out.push_str(&format!(" cidr={c}"));
        }
        if let Some(p) = &self.path {
            out.push_str(&format!(" path={}", p.path));
        }
        out
    }

    fn check_target(&self, _field: &str, target: &Target) -> Result<(), SpecError> {
        process_scope(Self::NAME, target)
    }

    fn plan(&self, _: &str, _: &Target, _: &mut dyn KernelOps) -> Result<Plan, SpecError> {
        let mut slot = FaultSlot {
            errno: self.errno.number(),
            threshold: self.probability.threshold(),
            port: u32::from(self.port),
            ..FaultSlot::default()
        };
        let resources = match self.call {
            ErrorCall::Sock(call) => {
                self.fill_sock(call, &mut slot);
                vec![Resource::Attach(Mechanism::CgroupSockAddr)]
            }
            ErrorCall::Lsm { hook, .. } => {
                slot.kind = kind::LSM_ERROR;
                slot.op = HOOKS[hook].op;
                if let Some(p) = &self.path {
                    slot.file = FileMatch {
                        ino: p.ino,
                        dev: p.kernel_dev,
                        has_path: 1,
                        generation: p.generation.unwrap_or(0),
                        has_generation: u32::from(p.generation.is_some()),
                    };
                }
                vec![
                    Resource::Listed(ScanList::Lsm),
                    Resource::Attach(Mechanism::Lsm(lsm_hooks::attach_index(hook))),
                ]
            }
        };
        Ok(Plan { slot, resources })
    }

    fn to_wire(&self) -> pb::fault_spec::Kind {
        pb::fault_spec::Kind::SyscallError(pb::SyscallError {
            syscall: self.call.name().into(),
            errno: self.errno.name(),
            probability: self.probability.value(),
            port: u32::from(self.port),
            cidr: self.cidr.map(|c| c.to_string()).unwrap_or_default(),
            path: self
                .path
                .as_ref()
                .map(|p| p.path.clone())
                .unwrap_or_default(),
        })
    }
}

impl SyscallError {
    fn fill_sock(&self, call: SockCall, slot: &mut FaultSlot) {
        slot.kind = kind::SOCK_ERROR;
        slot.op = match call {
            SockCall::Connect => sock_op::CONNECT,
            SockCall::Bind => sock_op::BIND,
            SockCall::Sendmsg => sock_op::SENDMSG,
        };
        match self.cidr {
            None => slot.flags |= flags::FAMILY_V4 | flags::FAMILY_V6,
            Some(c) => match c.addr {
                IpAddr::V4(a) => {
                    slot.flags |= flags::FAMILY_V4;
                    // The kernel context holds the address in network byte order.
                    slot.v4_addr = u32::from_ne_bytes(a.octets());
                    slot.v4_prefix = u32::from(c.prefix);
                }
                IpAddr::V6(a) => {
                    slot.flags |= flags::FAMILY_V6;
                    let o = a.octets();
                    for (i, w) in slot.v6_addr.iter_mut().enumerate() {
                        *w = u32::from_ne_bytes([
                            o[4 * i],
                            o[4 * i + 1],
                            o[4 * i + 2],
                            o[4 * i + 3],
                        ]);
                    }
                    slot.v6_prefix = u32::from(c.prefix);
                }
            },
        }
    }
}
