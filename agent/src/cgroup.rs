//! cgroup v2 discovery: where it is mounted and what id a directory has.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Component, Path, PathBuf},
};

/// `CGROUP2_SUPER_MAGIC` from linux/magic.h.
const CGROUP2_MAGIC: i64 = 0x6367_7270;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup2 filesystem is mounted (looked in /proc/self/mountinfo)")]
    NotMounted,
    #[error("{0} does not exist")]
    Missing(PathBuf),
    #[error("{0} is not a directory on the cgroup2 filesystem mounted at {1}")]
    NotCgroup2(PathBuf, PathBuf),
    #[error("cannot read {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// The cgroup2 mount point, from `/proc/self/mountinfo` (hybrid hosts mount
/// it at /sys/fs/cgroup/unified, pure-v2 hosts at /sys/fs/cgroup).
pub fn cgroup2_mount() -> Result<PathBuf, CgroupError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| CgroupError::Io("/proc/self/mountinfo".into(), e))?;
    parse_mountinfo(&info).ok_or(CgroupError::NotMounted)
}

fn parse_mountinfo(info: &str) -> Option<PathBuf> {
    info.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        let fstype = post.split_whitespace().next()?;
        if fstype == "cgroup2" {
            Some(PathBuf::from(pre.split_whitespace().nth(4)?))
        } else {
            None
        }
    })
}

/// A resolved cgroup v2 directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup {
    pub path: PathBuf,
    /// What `bpf_get_current_cgroup_id()` reports: the directory's inode.
    pub id: u64,
    /// Depth below the cgroup2 root (the root is level 0).
    pub level: u32,
}

impl Cgroup {
    /// Resolves an absolute path, or one relative to the cgroup2 mount.
    pub fn resolve(given: &str) -> Result<Self, CgroupError> {
        let mount = cgroup2_mount()?;
        let raw = Path::new(given);
        let joined = if raw.is_absolute() {
            raw.to_path_buf()
        } else {
            mount.join(raw)
        };
        let path = joined
            .canonicalize()
            .map_err(|_| CgroupError::Missing(joined.clone()))?;
        let rel = path
            .strip_prefix(&mount)
            .map_err(|_| CgroupError::NotCgroup2(path.clone(), mount.clone()))?;
        let st =
            nix::sys::statfs::statfs(&path).map_err(|e| CgroupError::Io(path.clone(), e.into()))?;
        let meta = std::fs::metadata(&path).map_err(|e| CgroupError::Io(path.clone(), e))?;
        if st.filesystem_type().0 as i64 != CGROUP2_MAGIC || !meta.is_dir() {
            return Err(CgroupError::NotCgroup2(path, mount));
        }
        let level = rel
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .count();
        Ok(Self {
            id: meta.ino(),
            level: level as u32,
            path,
        })
    }
}

/// The leaf cgroup the agent moves itself into at start-up, below the
/// cgroup it was started in: its own processes are then told apart from
/// everything else, in the kernel (never faulted) and at the API (never a
/// target), without claiming the cgroup of whoever started it.
pub const AGENT_LEAF: &str = "faultline-agent";

/// This process's cgroup2 path relative to the mount, from /proc/self/cgroup.
fn own_relative() -> Result<PathBuf, CgroupError> {
    let text = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| CgroupError::Io("/proc/self/cgroup".into(), e))?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| PathBuf::from(p.trim_start_matches('/')))
        .ok_or(CgroupError::NotMounted)
}

/// Moves this process into `<its cgroup>/faultline-agent` (made if absent)
/// and returns that cgroup. Where that cannot be done (a cgroup that takes
/// no child, no permission), the agent stays where it is and says why; its
/// cgroup is then protected only if it is not the root.
pub fn enter_agent_leaf() -> Result<Cgroup, (Option<Cgroup>, String)> {
    let current = own_relative()
        .and_then(|rel| Cgroup::resolve(&rel.display().to_string()))
        .map_err(|e| (None, e.to_string()))?;
    if current.path.ends_with(AGENT_LEAF) {
        return Ok(current);
    }
    let leaf = current.path.join(AGENT_LEAF);
    let moved = match std::fs::create_dir(&leaf) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
    .and_then(|()| std::fs::write(leaf.join("cgroup.procs"), std::process::id().to_string()));
    match moved {
        Ok(()) => Cgroup::resolve(&leaf.display().to_string()).map_err(|e| (None, e.to_string())),
        Err(e) => Err((
            Some(current),
            format!("cannot move into {}: {e}", leaf.display()),
        )),
    }
}

/// Leaves the agent's leaf for its parent and removes the leaf, if no other
/// process is in it (another agent may share it).
pub fn leave_agent_leaf(leaf: &Cgroup) {
    let Some(parent) = leaf.path.parent() else {
        return;
    };
    if leaf.path.ends_with(AGENT_LEAF)
        && std::fs::write(parent.join("cgroup.procs"), std::process::id().to_string()).is_ok()
    {
        let _ = std::fs::remove_dir(&leaf.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_in_hybrid_and_pure_layouts() {
        let hybrid = "35 25 0:30 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_mountinfo(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure =
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(parse_mountinfo(pure), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(parse_mountinfo("1 2 0:1 / / rw - ext4 /dev/vda rw\n"), None);
    }
}
