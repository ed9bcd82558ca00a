//! An LSM fault's path names one file, not an inode number: on an ext4 file
//! system (which reuses freed inode numbers) a file that takes a deleted,
//! faulted file's number is not faulted. Needs BPF LSM (the VM matrix);
//! elsewhere it skips with the agent's reason.
#![expect(
    unused_crate_dependencies,
    reason = "each integration test is its own crate; the package's dependencies serve them all"
)]

use std::{
    fs::{File, OpenOptions},
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::PathBuf,
    process::Command,
    time::Duration,
};

use faultline_proto::v1 as pb;
use faultline_tests::*;

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;

/// A 64 MiB ext4 image in its own directory, on a loop device, mounted;
/// unmounted, detached and removed on drop.
struct LoopExt4 {
    dir: PathBuf,
    mnt: PathBuf,
    dev: Option<File>,
    mounted: bool,
}

impl LoopExt4 {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("fl-ext4-{}", std::process::id()));
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let mut me = Self {
            dir,
            mnt,
            dev: None,
            mounted: false,
        };
        let image = me.dir.join("image");
        File::create(&image).unwrap().set_len(64 << 20).unwrap();
        let out = Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4"])
            .arg(&image)
            .output()
            .expect("run mke2fs");
        assert!(out.status.success(), "mke2fs: {out:?}");

        let ctl = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/loop-control")
            .unwrap();
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
        assert!(
            n >= 0,
            "LOOP_CTL_GET_FREE: {}",
            std::io::Error::last_os_error()
        );
        let dev_path = format!("/dev/loop{n}");
        let dev = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dev_path)
            .unwrap();
        let backing = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&image)
            .unwrap();
        // SAFETY: LOOP_SET_FD takes the backing file's fd as its argument;
        // both fds are open.
        let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD, backing.as_raw_fd()) };
        assert_eq!(rc, 0, "LOOP_SET_FD: {}", std::io::Error::last_os_error());
        me.dev = Some(dev);
        nix::mount::mount(
            Some(dev_path.as_str()),
            &me.mnt,
            Some("ext4"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        me.mounted = true;
        me
    }

    fn path(&self, name: &str) -> String {
        self.mnt.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for LoopExt4 {
    fn drop(&mut self) {
        if self.mounted {
            let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
        }
        if let Some(dev) = &self.dev {
            // SAFETY: LOOP_CLR_FD takes no argument; the fd is open.
            let _ = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD, 0) };
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn a_reused_inode_number_is_not_the_faulted_file() {
    require_root().unwrap();
    let agent = Agent::start();
    if !supported_or_skip(&agent, "bpf_lsm:file_open").await {
        return;
    }
    let fs = LoopExt4::new();
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
