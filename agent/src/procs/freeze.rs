//! The cgroup freezer: v2 `cgroup.freeze` in the target's directory, or on
//! a kernel without it the v1 `freezer` hierarchy's `freezer.state`.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::{Proc, Scan};
use crate::engine::Policy;

/// Which freezer holds a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Freezer {
    /// A cgroup2 directory with `cgroup.freeze`.
    V2(PathBuf),
    /// A directory of the v1 freezer hierarchy.
    V1(PathBuf),
}

impl Freezer {
    pub fn dir(&self) -> &Path {
        match self {
            Self::V2(d) | Self::V1(d) => d,
        }
    }

    pub fn is_v1(&self) -> bool {
        matches!(self, Self::V1(_))
    }

    /// Freezes or thaws, and waits (up to 1 s) until the kernel says so.
    pub fn set(&self, frozen: bool) -> Result<(), String> {
        set(self.dir(), self.is_v1(), frozen)
    }
}

/// Freezes (or thaws) `dir`, waiting up to 1 s for the kernel to finish.
/// Thawing a directory that is gone is done.
pub fn set(dir: &Path, v1: bool, frozen: bool) -> Result<(), String> {
    let (file, value) = match (v1, frozen) {
        (false, f) => ("cgroup.freeze", if f { "1" } else { "0" }),
        (true, true) => ("freezer.state", "FROZEN"),
        (true, false) => ("freezer.state", "THAWED"),
    };
    let path = dir.join(file);
    if let Err(e) = std::fs::write(&path, value) {
        if !frozen && e.kind() == std::io::ErrorKind::NotFound {
            return Ok(());
        }
        return Err(format!("writing {value} to {}: {e}", path.display()));
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while !is(dir, v1, frozen) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Whether the kernel reports `dir` as fully frozen (or fully thawed).
pub fn is(dir: &Path, v1: bool, frozen: bool) -> bool {
    if v1 {
        let state = std::fs::read_to_string(dir.join("freezer.state")).unwrap_or_default();
        state.trim() == if frozen { "FROZEN" } else { "THAWED" }
    } else {
        let events = std::fs::read_to_string(dir.join("cgroup.events")).unwrap_or_default();
        let want = if frozen { "frozen 1" } else { "frozen 0" };
        events.lines().any(|l| l.trim() == want)
    }
}

/// The v1 mount of the `freezer` controller, from /proc/self/mountinfo.
pub fn v1_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        let mut post = post.split_whitespace();
        if post.next()? != "cgroup" {
            return None;
        }
        let opts = post.nth(1)?;
        if !opts.split(',').any(|o| o == "freezer") {
            return None;
        }
        pre.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// The v1 freezer directory `pid` is in.
fn v1_dir_of(pid: u32, mount: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctrl, path) = (parts.next()?, parts.next()?, parts.next()?);
        ctrl.split(',')
            .any(|c| c == "freezer")
            .then(|| mount.join(path.trim_start_matches('/')))
    })
}

/// Every process in a v1 directory and below it (a v1 freeze covers them all).
fn v1_members(dir: &Path) -> Vec<u32> {
    let mut out: Vec<u32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(v1_members(&e.path()));
            }
        }
    }
    out
}

/// The freezer that holds exactly the target `cgroup` (v2 dir) and nothing
/// protected, given a scan of its processes; None when only signals can
/// pause it without touching a protected process: one of them is in it,
/// or (v1) the freezer cgroup also holds processes outside the target.
pub fn choose(cgroup: &Path, scan: &Scan, policy: &Policy) -> Option<Freezer> {
    if !scan.spared.is_empty() {
        return None;
    }
    if cgroup.join("cgroup.freeze").exists() {
        return Some(Freezer::V2(cgroup.to_path_buf()));
    }
    let mount = v1_mount()?;
    let first = scan.matched.first()?;
    let dir = v1_dir_of(first.pid, &mount)?;
    if dir == mount
        || !scan
            .matched
            .iter()
            .all(|p| v1_dir_of(p.pid, &mount).is_some_and(|d| d.starts_with(&dir)))
    {
        return None;
    }
    let cg2 = crate::cgroup::cgroup2_mount().ok()?;
    // Everyone the v1 freeze would reach must be a target process, and
    // not a protected one.
    let clean = v1_members(&dir).into_iter().all(|pid| {
        Proc::read(pid, &cg2, true).is_none_or(|p| {
            p.cgroup.as_ref().is_some_and(|c| c.starts_with(cgroup)) && policy.spares(&p).is_none()
        })
    });
    clean.then_some(Freezer::V1(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The v1 freezer on a real kernel, where there is one and we are root.
    #[test]
    fn a_v1_freezer_cgroup_freezes_and_thaws() {
        let Some(mount) = v1_mount() else {
            return;
        };
        let dir = mount.join(format!("faultline-unit-{}", std::process::id()));
        if std::fs::create_dir(&dir).is_err() {
            return; // not root
        }
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
        assert_eq!(
            v1_dir_of(child.id(), &mount).as_deref(),
            Some(dir.as_path())
        );
        set(&dir, true, true).unwrap();
        assert!(is(&dir, true, true));
        set(&dir, true, false).unwrap();
        assert!(is(&dir, true, false));
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir(&dir);
    }
}
