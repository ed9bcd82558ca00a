//! What this kernel is expected to offer (`FAULTLINE_EXPECT`,
//! `FAULTLINE_IN_VM`, set by the test runner) and what the agent says it
//! offers (its capability rows).

use faultline_proto::v1 as pb;

use crate::Agent;

/// Running inside the VM kernel matrix (`cargo xtask test --vm` sets it):
/// an emulated CPU, many times slower than the host.
pub fn in_vm() -> bool {
    std::env::var_os("FAULTLINE_IN_VM").is_some()
}

/// Must this kernel offer `capability`? `FAULTLINE_EXPECT` lists, in the
/// agent's own vocabulary (the `mechanism` of its capability rows:
/// `tcx`, `tcx+fq`, `sock_ops`, `cgroup_skb`, `bpf_lsm:file_open`…),
/// what the kernel at hand must support; `bpf_lsm` stands for every
/// `bpf_lsm:` hook, and `kind/mechanism` names one row (e.g.
/// `bandwidth/cgroup_sock_addr`, connect pacing). The test runner sets it
/// per kernel; set to the empty string, nothing is expected. Unset, a test
/// that would skip fails: a skip nobody can judge is not a pass.
pub fn expected(capability: &str) -> bool {
    let list = std::env::var("FAULTLINE_EXPECT").unwrap_or_else(|_| {
        panic!(
            "FAULTLINE_EXPECT is not set, so whether {capability} may be missing on this kernel \
             cannot be judged: run through `cargo xtask test`, or set FAULTLINE_EXPECT to what \
             this kernel must support (empty: nothing)"
        )
    });
    let mechanism = capability.split_once('/').map_or(capability, |(_, m)| m);
    list.split(',').map(str::trim).any(|e| {
        e == capability || e == mechanism || (e == "bpf_lsm" && mechanism.starts_with("bpf_lsm:"))
    })
}

/// The agent's capability row whose mechanism is `mechanism` (e.g.
/// "bpf_lsm:file_open"): Some(true) supported, Some(false) not, with the
/// reason printed; panics when the row is missing.
pub async fn capability(agent: &Agent, mechanism: &str) -> (bool, String) {
    let caps = agent
        .client()
        .await
        .get_capabilities(pb::GetCapabilitiesRequest {
            mechanisms: vec![mechanism.to_owned()],
        })
        .await
        .expect("GetCapabilities")
        .into_inner();
    let row = caps
        .capabilities
        .iter()
        .find(|c| c.mechanism == mechanism)
        .unwrap_or_else(|| panic!("no capability row for {mechanism}: {caps:?}"));
    (row.supported, row.reason.clone())
}

/// True when the agent offers `mechanism`; otherwise prints why and returns
/// false (the caller skips), unless the kernel is expected to offer it
/// (see `expected`), which fails the test.
pub async fn supported_or_skip(agent: &Agent, mechanism: &str) -> bool {
    let (ok, reason) = capability(agent, mechanism).await;
    if ok {
        return true;
    }
    assert!(
        !expected(mechanism),
        "{mechanism} must be supported on this kernel (FAULTLINE_EXPECT), but the agent says: {reason}"
    );
    eprintln!("SKIP: {mechanism} unavailable on this kernel: {reason}");
    false
}
