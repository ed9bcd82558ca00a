//! An LSM fault's path names one file, not an inode number: on an ext4 file
//! system (which reuses freed inode numbers) a file that takes a deleted,
//! faulted file's number is not faulted. Needs BPF LSM (the VM matrix);
//! elsewhere it skips with the agent's reason.
#![expect(
    unused_crate_dependencies,
    reason = "each integration test is its own crate; the package's dependencies serve them all"
)]

use std::{os::unix::fs::MetadataExt as _, time::Duration};

use faultline_proto::v1 as pb;
use faultline_tests::*;

#[tokio::test]
async fn a_reused_inode_number_is_not_the_faulted_file() {
    require_root().unwrap();
    let agent = Agent::start();
    if !supported_or_skip(&agent, "bpf_lsm:file_open").await {
        return;
    }
    // A 64 MiB ext4 of the test's own.
    let fs = LoopFs::ext4(64 << 20);
    let cg = TestCgroup::new("lsm-identity");
    let victim = fs.path("victim");
    let unrelated = fs.path("unrelated");
    std::fs::write(&victim, b"faulted").unwrap();
    std::fs::write(&unrelated, b"never faulted").unwrap();
    let victim_ino = std::fs::metadata(&victim).unwrap().ino();
    let exp = start(
        &mut agent.client().await,
        experiment(
            lsm_error("openat", "EACCES", 1.0, &victim, 0),
            cgroup_target(&cg),
            Duration::from_secs(120),
        ),
    )
    .await;

    // Positive control: the named file is faulted, its neighbour is not.
    let faulted = probe_fs(Some(&cg), "open", &victim, 50);
    assert_eq!(faulted.errno("EACCES"), 50, "the path's file: {faulted:?}");
    let other = probe_fs(Some(&cg), "open", &unrelated, 50);
    assert_eq!(other.ok, 50, "an unrelated file: {other:?}");

    // ext4 hands a freed inode number to the next file created.
    std::fs::remove_file(&victim).unwrap();
    let mut reused = None;
    for i in 0..1000 {
        let p = fs.path(&format!("new-{i}"));
        std::fs::write(&p, b"someone else's").unwrap();
        if std::fs::metadata(&p).unwrap().ino() == victim_ino {
            reused = Some(p);
            break;
        }
    }
    let reused = reused.unwrap_or_else(|| panic!("no new file took inode {victim_ino}"));
    eprintln!("{reused} took inode {victim_ino}");

    let after = probe_fs(Some(&cg), "open", &reused, 50);
    assert_eq!(
        after.ok, 50,
        "the file reusing the faulted file's inode number is another file: {after:?}"
    );
    let other = probe_fs(Some(&cg), "open", &unrelated, 50);
    assert_eq!(other.ok, 50, "an unrelated file, throughout: {other:?}");
    let running = agent
        .client()
        .await
        .get_experiment(pb::GetExperimentRequest { id: exp.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(running.state(), pb::ExperimentState::Running, "{running:?}");
    assert_eq!(
        running.injected, 50,
        "only the control was injected: {running:?}"
    );
}
