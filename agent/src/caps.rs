//! What this kernel can do, found by loading the programs at start-up.

use crate::{faults::Mechanism, kernel::Kernel};

#[derive(Clone, Debug)]
pub struct Capability {
    pub fault_kind: &'static str,
    pub mechanism: &'static str,
    pub covers: Vec<String>,
    pub supported: bool,
    pub reason: String,
}

pub fn probe(kernel: &Kernel) -> Vec<Capability> {
    let row = |kind: &'static str, m: Mechanism, covers: &[&str]| {
        let reason = kernel.unavailable(m).map(str::to_owned);
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
            Mechanism::Tcx(0),
            &["interface scope", "ingress", "egress"],
        ),
        row(
            "blackhole",
            Mechanism::Tcx(0),
            &["interface scope", "ingress", "egress"],
        ),
        row(
            "duplicate",
            Mechanism::Tcx(0),
            &["interface scope", "ingress", "egress"],
        ),
        row(
            "corrupt",
            Mechanism::Tcx(0),
            &["interface scope", "ingress", "egress"],
        ),
        row(
            "bandwidth",
            Mechanism::CgroupSkb,
            &["cgroup scope", "ingress", "egress"],
        ),
        row(
            "bandwidth",
            Mechanism::Tcx(0),
            &["interface scope", "ingress", "egress"],
        ),
    ];
    caps.push(Capability {
        fault_kind: "syscall_error",
        mechanism: "bpf_lsm",
        covers: ["open", "read", "write", "fork", "execve", "unlink", "mmap"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        supported: false,
        reason: lsm_reason(),
    });
    caps
}

/// Why file/process syscall errors are not offered on this host.
fn lsm_reason() -> String {
    match std::fs::read_to_string("/sys/kernel/security/lsm") {
        Ok(list) if !list.split(',').any(|l| l.trim() == "bpf") => format!(
            "BPF LSM is not active on this kernel (active LSMs: {}): add bpf to the lsm= boot parameter",
            list.trim()
        ),
        Ok(_) => "BPF LSM is active, but this agent build has no LSM backend yet".into(),
        Err(_) => "BPF LSM state unknown (securityfs not mounted); this agent build has no LSM backend yet"
            .into(),
    }
}
