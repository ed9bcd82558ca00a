//! The TCX keeper: two no-op links that keep the kernel's TCX static keys
//! on, so an interface fault's link is live as soon as it is published.

use std::fs::File;

use aya::{
    Ebpf,
    programs::{SchedClassifier, TcAttachType},
};

use super::{
    catalogue::{TC_KEEP_PROGRAM, program},
    verifier::{brief, chain},
};

/// TCX links on the loopback device of a network namespace only the agent
/// holds (by this file). No packet passes there; the links keep the
/// kernel's TCX static keys on. Without them the first TCX link of a fault
/// takes effect only after the kernel has waited for an RCU grace period
/// and patched its code (~15 ms on a 2-CPU VM); with them at once. When the
/// agent dies the namespace, its device and the links go with it.
pub(super) struct TcxKeeper {
    _links: Vec<Box<dyn std::any::Any + Send>>,
    _netns: File,
}

/// Loads `fl_tcx_keep` and attaches it to both TCX hooks of `lo` in a new,
/// private network namespace (entered by a short-lived thread only).
pub(super) fn keep_tcx_hooks(ebpf: &mut Ebpf) -> Result<TcxKeeper, String> {
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
