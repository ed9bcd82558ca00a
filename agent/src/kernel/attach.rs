//! Attachments: every program of a mechanism attached as owned, unpinned
//! bpf_links, reference-counted across the faults that use them, and the
//! fq qdiscs `latency` and shaped `bandwidth` hold the same way.

use aya::programs::{
    CgroupAttachMode, CgroupSkb, CgroupSockAddr, Lsm, RawTracePoint, SchedClassifier, SockOps,
};

use super::{
    Kernel, KernelError, Mechanism, Probed as _, TcSide,
    catalogue::{
        SKB_PROGRAMS, SOCK_OPS_PROGRAM, SOCK_PROGRAMS, SYS_ENTER_PROGRAM, TC_PROGRAMS, if_name,
        program,
    },
    lsm_hooks,
};
use crate::qdisc;

/// The links of one attached mechanism. Each is an owned, unpinned
/// bpf_link: dropping the attachment detaches everything in it, and so does
/// the kernel when the agent dies.
#[derive(Default)]
pub(super) struct Attachment {
    users: usize,
    links: Vec<Box<dyn std::any::Any + Send>>,
}

impl Kernel {
    /// Takes a reference on an fq root qdisc on `ifindex`.
    pub(super) fn acquire_fq(&mut self, ifindex: u32) -> Result<(), KernelError> {
        let unavailable = |reason: String| KernelError::Unavailable {
            mechanism: "fq qdisc",
            reason,
        };
        if let Some(r) = self.fq_reason() {
            return Err(unavailable(r.to_owned()));
        }
        let ifname = if_name(ifindex)
            .ok_or_else(|| unavailable(format!("no interface with index {ifindex}")))?;
        self.fq
            .as_mut()
            .expect("checked by fq_reason")
            .acquire(ifindex, &ifname)
            .map_err(|e| match e {
                qdisc::QdiscError::Configured(reason) => KernelError::Conflict {
                    what: "fq qdisc",
                    reason,
                },
                qdisc::QdiscError::Failed(reason) => unavailable(reason),
            })
    }

    pub(super) fn release_fq(&mut self, ifindex: u32) {
        if let Some(fq) = self.fq.as_mut() {
            fq.release(ifindex);
        }
    }

    /// Takes a reference on a mechanism, attaching it on first use.
    pub(super) fn acquire_mechanism(&mut self, m: Mechanism) -> Result<(), KernelError> {
        self.ensure_loaded(m);
        if let Some(reason) = self.unavailable.get(&m.generic()) {
            return Err(KernelError::Unavailable {
                mechanism: m.name(),
                reason: reason.to_string(),
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
    pub(super) fn release_mechanism(&mut self, m: Mechanism) {
        let Some(a) = self.attachments.get_mut(&m) else {
            return;
        };
        a.users = a.users.saturating_sub(1);
        if a.users == 0 {
            // Dropping the links detaches them.
            drop(self.attachments.remove(&m));
        }
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
                let name = lsm_hooks::HOOKS[index].program;
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
