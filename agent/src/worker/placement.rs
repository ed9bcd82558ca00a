//! Where a process charged to a target cgroup must live. cgroup v2 forbids
//! processes in a cgroup that hands controllers to its children (the
//! no-internal-processes rule), so such a target gets a leaf of ours below
//! it; its usage still counts towards the target's. On a hybrid host each v1
//! controller has its own hierarchy: the stressor joins, in each, the cgroup
//! the target's processes are in.

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::cgroup::{Cgroup, cgroup2_mount};

/// The cgroup directories a child joins, and those made for it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// Every directory whose `cgroup.procs` the child writes itself to.
    pub join: Vec<PathBuf>,
    /// Made here (removed by [`Placement::remove`]).
    pub created: Vec<PathBuf>,
    /// The v1 directory joined for each controller asked for.
    pub v1: Vec<(String, PathBuf)>,
    /// The v2 directory joined.
    pub v2: Option<PathBuf>,
}

/// The v1 mount point of `controller` (`cpu`, `memory`, `freezer`…), from
/// /proc/self/mountinfo: a `cgroup` filesystem whose options name it.
pub fn v1_mount(controller: &str) -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    v1_mount_in(&info, controller)
}

fn v1_mount_in(info: &str, controller: &str) -> Option<PathBuf> {
    info.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        let mut post = post.split_whitespace();
        if post.next()? != "cgroup" {
            return None;
        }
        let opts = post.nth(1)?;
        if !opts.split(',').any(|o| o == controller) {
            return None;
        }
        pre.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// Processes in `dir` or, if it has none, in its descendants (first found).
fn member(dir: &Path, depth: u32) -> Option<u32> {
    let procs = fs::read_to_string(dir.join("cgroup.procs")).ok()?;
    if let Some(pid) = procs.lines().find_map(|l| l.trim().parse().ok()) {
        return Some(pid);
    }
    if depth == 0 {
        return None;
    }
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .find_map(|e| member(&e.path(), depth - 1))
}

/// The v1 cgroup (relative path) of `pid` in the hierarchy of `controller`.
fn v1_path_of(pid: u32, controller: &str) -> Option<PathBuf> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        ctrls
            .split(',')
            .any(|c| c == controller)
            .then(|| PathBuf::from(path.trim_start_matches('/')))
    })
}

/// Where a child charged to `target` goes, for the v1 `controllers` given
/// (ignored where not mounted). `token` names a leaf made for it.
pub fn place(target: &Cgroup, controllers: &[&str], token: &str) -> Result<Placement, String> {
    let mut out = Placement::default();
    let subtree = fs::read_to_string(target.path.join("cgroup.subtree_control")).map_err(|e| {
        format!(
            "cannot read {}/cgroup.subtree_control: {e}",
            target.path.display()
        )
    })?;
    let v2 = if subtree.trim().is_empty() {
        target.path.clone()
    } else {
        let leaf = target.path.join(format!("faultline-{token}"));
        fs::create_dir(&leaf).map_err(|e| format!("cannot create {}: {e}", leaf.display()))?;
        out.created.push(leaf.clone());
        leaf
    };
    out.join.push(v2.clone());
    out.v2 = Some(v2);
    let member = member(&target.path, 4);
    let rel = cgroup2_mount()
        .ok()
        .and_then(|m| target.path.strip_prefix(m).ok().map(Path::to_path_buf));
    for c in controllers {
        let Some(mount) = v1_mount(c) else { continue };
        let dir = member
            .and_then(|pid| v1_path_of(pid, c))
            .map(|p| mount.join(p))
            .or_else(|| rel.as_ref().map(|r| mount.join(r)).filter(|d| d.is_dir()));
        if let Some(dir) = dir {
            if !out.join.contains(&dir) {
                out.join.push(dir.clone());
            }
            out.v1.push(((*c).to_owned(), dir));
        }
    }
    Ok(out)
}

/// Kills every process in a cgroup directory and removes it, waiting up to
/// a second for the processes to go.
pub fn remove_cgroup(dir: &Path) -> Result<(), String> {
    if !dir.exists() {
        return Ok(());
    }
    if fs::write(dir.join("cgroup.kill"), "1").is_err() {
        for pid in fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let until = Instant::now() + Duration::from_secs(1);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() >= until => {
                return Err(format!("cannot remove {}: {e}", dir.display()));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

impl Placement {
    /// Removes the directories made for the child, killing what is left.
    pub fn remove(&self) {
        for dir in self.created.iter().rev() {
            if let Err(e) = remove_cgroup(dir) {
                tracing::warn!(error = %e, "removing a stressor's cgroup failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_v1_mounts_by_controller() {
        let info = "\
30 25 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
31 25 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
32 25 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
33 25 0:29 / /sys/fs/cgroup/net_cls,net_prio rw - cgroup cgroup rw,net_cls,net_prio";
        assert_eq!(v1_mount_in(info, "cpu"), Some("/sys/fs/cgroup/cpu".into()));
        assert_eq!(
            v1_mount_in(info, "memory"),
            Some("/sys/fs/cgroup/memory".into())
        );
        assert_eq!(
            v1_mount_in(info, "net_prio"),
            Some("/sys/fs/cgroup/net_cls,net_prio".into())
        );
        assert_eq!(v1_mount_in(info, "freezer"), None);
        assert_eq!(v1_mount_in(info, "cpuacct"), None);
    }
}
