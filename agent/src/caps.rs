//! What this kernel can do, found by loading the programs at start-up.

use crate::{
    faults::{Mechanism, lsm_error},
    kernel::{Group, Kernel},
};

#[derive(Clone, Debug)]
pub struct Capability {
    pub fault_kind: &'static str,
    pub mechanism: &'static str,
    pub covers: Vec<String>,
    pub supported: bool,
    pub reason: String,
}

/// The program group behind a row's mechanism name.
fn group_of(mechanism: &str) -> Option<Group> {
    Some(match mechanism {
        "cgroup_sock_addr" => Group::CgroupSock,
        "raw_tracepoint" => Group::SysEnter,
        "cgroup_skb" | "sock_ops" => Group::CgroupSkb,
        "tcx" | "tcx+fq" => Group::Tcx,
        m if m.starts_with("bpf_lsm:") => Group::Lsm,
        _ => return None,
    })
}

/// Every row, or only those of the `only` mechanisms; loads the programs
/// the answer needs that the agent has not probed yet.
pub fn probe(kernel: &mut Kernel, only: &[String]) -> Vec<Capability> {
    if only.is_empty() {
        for g in Group::ALL {
            kernel.probe(g);
        }
    } else {
        for g in only.iter().filter_map(|m| group_of(m)) {
            kernel.probe(g);
        }
    }
    let mut caps = rows(kernel);
    if !only.is_empty() {
        caps.retain(|c| only.iter().any(|m| m == c.mechanism));
    }
    caps
}

/// Every row, from what has been probed.
fn rows(kernel: &Kernel) -> Vec<Capability> {
    let row = |kind: &'static str, m: Mechanism, covers: &[&str]| {
        let reason = kernel.reason(m).map(str::to_owned);
        Capability {
            fault_kind: kind,
            mechanism: m.name(),
            covers: covers.iter().map(|s| (*s).to_owned()).collect(),
            supported: reason.is_none(),
            reason: reason.unwrap_or_default(),
        }
    };
    let mut caps = vec![
        row(
            "syscall_error",
            Mechanism::CgroupSockAddr,
            &["connect", "bind", "sendmsg"],
        ),
        row("syscall_signal", Mechanism::SysEnter, &["any syscall"]),
        row(
            "packet_loss",
            Mechanism::CgroupSkb,
            &["cgroup scope", "ingress", "egress"],
        ),
        row(
            "blackhole",
            Mechanism::CgroupSkb,
            &["cgroup scope", "ingress", "egress"],
        ),
        row(
            "packet_loss",
            Mechanism::TCX,
            &["interface scope", "ingress", "egress"],
        ),
        row(
            "blackhole",
            Mechanism::TCX,
            &["interface scope", "ingress", "egress"],
        ),
        row(
            "duplicate",
            Mechanism::TCX,
            &["interface scope", "ingress", "egress"],
        ),
        row(
            "corrupt",
            Mechanism::TCX,
            &["interface scope", "ingress", "egress"],
        ),
        row(
            "bandwidth",
            Mechanism::CgroupSkb,
            &["cgroup scope", "ingress", "egress"],
        ),
        row(
            "bandwidth",
            Mechanism::TCX,
            &["interface scope", "ingress", "egress"],
        ),
    ];
    let mut pacing = row(
        "bandwidth",
        Mechanism::CgroupSkb,
        &["cgroup scope", "tcp pacing"],
    );
    pacing.mechanism = "sock_ops";
    if let (true, Some(reason)) = (pacing.supported, kernel.sock_ops_reason()) {
        pacing.supported = false;
        pacing.reason = reason.to_owned();
    }
    let connect_pacing = !pacing.supported && kernel.reason(Mechanism::CgroupSockAddr).is_none();
    caps.push(pacing);
    if connect_pacing {
        // The cgroup connect hooks stand in for connections the target opens.
        caps.push(row(
            "bandwidth",
            Mechanism::CgroupSockAddr,
            &["cgroup scope", "tcp pacing", "connect only"],
        ));
    }
    let mut latency = row(
        "latency",
        Mechanism::TCX,
        &["interface scope", "egress", "delay", "jitter"],
    );
    latency.mechanism = "tcx+fq";
    if let (true, Some(reason)) = (latency.supported, kernel.fq_unavailable()) {
        latency.supported = false;
        latency.reason = reason.to_owned();
    }
    caps.push(latency);
    caps.push(row(
        "dns_error",
        Mechanism::CgroupSkb,
        &["cgroup scope", "drop", "udp", "tcp"],
    ));
    caps.push(row(
        "dns_error",
        Mechanism::TCX,
        &["interface scope", "drop", "servfail", "nxdomain (udp)"],
    ));
    // Interface scope without TCX (or configured so): the cgroup_skb
    // programs stand in, for what local sockets send and receive.
    if kernel.interface_via_cgroup_probed() {
        let local = [
            "interface scope",
            "local sockets' packets only",
            "ingress",
            "egress",
        ];
        for kind in ["packet_loss", "blackhole", "bandwidth"] {
            caps.push(row(kind, Mechanism::CgroupSkb, &local));
        }
        caps.push(row(
            "dns_error",
            Mechanism::CgroupSkb,
            &[
                "interface scope",
                "local sockets' queries only",
                "drop",
                "udp",
                "tcp",
            ],
        ));
    }
    // One row per LSM hook, so `caps` shows for each syscall whether this
    // kernel can fail it and, if not, why.
    for (i, h) in lsm_error::HOOKS.iter().enumerate() {
        let mut r = row(
            "syscall_error",
            Mechanism::Lsm(lsm_error::attach_index(i)),
            h.syscalls,
        );
        r.mechanism = h.mechanism;
        caps.push(r);
    }
    caps
}
