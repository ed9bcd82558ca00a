//! Processes seen from /proc (a parent's children, whether one is gone,
//! its block I/O), and for the process-fault tests: named by a symbolic link (the
//! kernel's comm is the name exec'd), sleepers, counters that show progress
//! from the target's side, and what /proc and cgroup2 say about them.

use std::{
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{ChildGuard, TestCgroup, wait_for};

/// A directory of symbolic links that give processes a name (comm) of the
/// test's choosing; removed on drop.
pub struct Names(pub PathBuf);

impl Default for Names {
    fn default() -> Self {
        Self::new()
    }
}

impl Names {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(crate::unique("faultline-procs"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        Self(dir)
    }

    /// A process name (comm, at most 15 bytes) for `program`. Not for
    /// busybox applets (the VMs' `sleep` and `sh`): busybox runs the applet
    /// its link is named after. `fl-probe` and bash do not care.
    pub fn link(&self, comm: &str, program: &Path) -> PathBuf {
        let link = self.0.join(comm);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(program, &link).expect("symlink");
        link
    }

    /// `fl-probe` named `comm`, for [`named`].
    pub fn probe(&self, comm: &str) -> PathBuf {
        self.link(comm, &crate::bin("fl-probe"))
    }

    /// bash named `comm`, for [`counter`].
    pub fn shell(&self, comm: &str) -> PathBuf {
        let bash = ["/usr/bin/bash", "/bin/bash"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
            .expect("bash (the VMs have it at its host path)");
        self.link(comm, bash)
    }
}

impl Drop for Names {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `sleep 60` in `cg` (comm "sleep").
pub fn sleeper(cg: &TestCgroup) -> ChildGuard {
    ChildGuard(cg.command("sleep").arg("60").spawn().expect("spawn sleep"))
}

/// A process named by `link` ([`Names::probe`]) in `cg`: `fl-probe serve`,
/// which waits on its stdin (held open by the guard) and makes no children.
pub fn named(cg: &TestCgroup, link: &Path) -> ChildGuard {
    ChildGuard(
        cg.command(link)
            .arg("serve")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn a named fl-probe"),
    )
}

/// A shell loop that writes an ever-growing count to `file` every 20 ms;
/// `sh` is "sh" or a named shell ([`Names::shell`]).
pub fn counter(cg: &TestCgroup, sh: &Path, file: &Path) -> ChildGuard {
    let script = format!(
        "i=0; while :; do i=$((i+1)); echo $i > {}; sleep 0.02; done",
        file.display()
    );
    ChildGuard(
        cg.command(sh)
            .args(["-c", &script])
            .spawn()
            .expect("spawn counter"),
    )
}

pub fn count(file: &Path) -> u64 {
    // A read may meet the file between truncation and write: read again.
    for _ in 0..20 {
        if let Some(n) = std::fs::read_to_string(file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return n;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    0
}

/// The counter moves on within `within`.
pub fn progresses(file: &Path, within: Duration) -> bool {
    let before = count(file);
    wait_for(within, || count(file) > before)
}

/// The counter stands still for `span`.
pub fn stands_still(file: &Path, span: Duration) -> bool {
    let before = count(file);
    std::thread::sleep(span);
    count(file) == before
}

pub fn state_of(pid: u32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

pub fn frozen(cg: &TestCgroup) -> bool {
    std::fs::read_to_string(cg.path.join("cgroup.events"))
        .unwrap_or_default()
        .lines()
        .any(|l| l == "frozen 1")
}

/// Whether the child was killed by `sig`, waiting up to `within`.
pub fn died_by(child: &mut ChildGuard, sig: i32, within: Duration) -> bool {
    let mut status = None;
    wait_for(within, || {
        status = child.0.try_wait().ok().flatten();
        status.is_some()
    });
    status.and_then(|s| s.signal()) == Some(sig)
}

pub fn alive(child: &mut ChildGuard) -> bool {
    child.0.try_wait().ok().flatten().is_none()
}

pub fn reaper_of(agent_pid: u32) -> Option<u32> {
    // The reaper names itself once it runs, which on a slow (emulated)
    // machine may be a moment after the agent serves: wait for it.
    let mut found = None;
    crate::wait_for(std::time::Duration::from_secs(10), || {
        found = named_reaper_of(agent_pid);
        found.is_some()
    });
    found
}

fn named_reaper_of(agent_pid: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (comm, rest) = stat.split_once(" (")?.1.rsplit_once(')')?;
        let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (comm == "faultline-reap" && ppid == agent_pid).then_some(pid)
    })
}

/// (state, parent pid) from /proc/PID/stat (the fields after the comm,
/// which may hold anything, even ") ").
fn stat(pid: u32) -> Option<(String, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = text.rsplit_once(')')?.1.split_whitespace();
    Some((rest.next()?.to_owned(), rest.next()?.parse().ok()?))
}

/// The processes whose parent is `pid` (what an agent started itself).
pub fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|p| stat(*p).is_some_and(|(_, ppid)| ppid == pid))
                .collect()
        })
        .unwrap_or_default()
}

/// Dead: no such process, or a zombie its new parent has not reaped yet.
pub fn gone(pid: u32) -> bool {
    stat(pid).is_none_or(|(state, _)| state == "Z")
}

/// (read_bytes, write_bytes) of /proc/PID/io: what the process made the
/// block layer read and write.
pub fn proc_io(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("read_bytes:"), field("write_bytes:"))
}
