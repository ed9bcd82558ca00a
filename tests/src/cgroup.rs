//! cgroup2: the mount, and a test's own cgroup.

use std::{os::unix::process::CommandExt as _, path::PathBuf, process::Command, time::Duration};

use crate::unique;

/// The cgroup2 mount, from /proc/self/mountinfo.
pub fn cgroup2_root() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    info.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split_whitespace().next()? == "cgroup2")
                .then(|| PathBuf::from(pre.split_whitespace().nth(4).unwrap()))
        })
        .expect("no cgroup2 mount")
}

/// A cgroup v2 directory for one test; its processes are killed and the
/// directory removed on drop.
pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    pub fn new(name: &str) -> Self {
        let path = cgroup2_root().join(unique(&format!("faultline-test-{name}")));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Self { path }
    }

    pub fn path_str(&self) -> String {
        self.path.display().to_string()
    }

    pub fn procs(&self) -> Vec<u32> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// A command whose process joins this cgroup before it execs.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        let procs = self.path.join("cgroup.procs");
        // SAFETY: only async-signal-safe work (open/write/close) between fork and exec.
        unsafe {
            cmd.pre_exec(move || std::fs::write(&procs, b"0"));
        }
        cmd
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            let procs = self.procs();
            if procs.is_empty() {
                break;
            }
            for p in procs {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}
