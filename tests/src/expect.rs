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

/// Is `mechanism` (a key of `FAULTLINE_EXPECT`, e.g. "lsm", "tcx") expected
/// on this kernel? The test runner sets the list per kernel.
pub fn expected(mechanism: &str) -> bool {
    std::env::var("FAULTLINE_EXPECT")
        .unwrap_or_default()
        .split(',')
        .any(|m| m.trim() == mechanism)
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
/// false (the caller skips), unless the kernel is expected to offer
/// `expect_key` (see `expected`), which fails the test.
pub async fn supported_or_skip(agent: &Agent, mechanism: &str, expect_key: &str) -> bool {
    let (ok, reason) = capability(agent, mechanism).await;
    if ok {
        return true;
    }
    assert!(
        !expected(expect_key),
        "{mechanism} must be supported on this kernel (FAULTLINE_EXPECT has {expect_key}), but the agent says: {reason}"
    );
    eprintln!("SKIP: {mechanism} unavailable on this kernel: {reason}");
    false
}
