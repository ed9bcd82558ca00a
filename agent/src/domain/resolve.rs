//! Host look-ups behind one trait, so validation is unit-tested without
//! root (and without the names existing): cgroup paths, interfaces, file
//! paths and processes.

use super::{Interface, PathMatch};
use crate::cgroup::Cgroup;

/// Resolves the names a request gives to what the kernel uses. Each error
/// is the reason only; the caller names the field.
pub trait Resolver: Sync {
    /// A cgroup2 directory, absolute or relative to the cgroup2 mount.
    fn cgroup(&self, path: &str) -> Result<Cgroup, String>;
    fn interface(&self, name: &str) -> Result<Interface, String>;
    /// An absolute path to an existing file or directory, as the LSM
    /// programs identify it (see `file_identity`).
    fn path(&self, path: &str) -> Result<PathMatch, String>;
    /// The process or thread with this id.
    fn process(&self, pid: u32) -> Result<Process, String>;
}

/// What a target pid is, from /proc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    /// The process it belongs to: differs from the pid for a thread.
    pub tgid: u32,
    /// Clock ticks after boot (/proc/PID/stat field 22).
    pub start: u64,
    pub kernel_thread: bool,
    pub comm: String,
}

/// `PF_KTHREAD`, as /proc/PID/stat's flags field shows it.
pub(crate) const PF_KTHREAD: u64 = 0x0020_0000;

/// Parses /proc/PID/stat: the comm sits in parentheses and may itself hold
/// spaces and parentheses, so the fields are counted after the last `)`.
pub(crate) fn parse_stat(stat: &str) -> Option<(String, u64, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    // After the comm: state (field 3) is index 0, flags (9) is 6, starttime (22) is 19.
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let flags = rest.get(6)?.parse().ok()?;
    let start = rest.get(19)?.parse().ok()?;
    Some((comm, flags, start))
}

/// When process `pid` started, or None if there is no such process now.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|(_, _, start)| start)
}

/// The real host.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostResolver;

impl Resolver for HostResolver {
    fn cgroup(&self, path: &str) -> Result<Cgroup, String> {
        Cgroup::resolve(path).map_err(|e| e.to_string())
    }

    fn interface(&self, name: &str) -> Result<Interface, String> {
        let ifindex = nix::net::if_::if_nametoindex(name)
            .map_err(|_| format!("no interface named {name:?} on this host"))?;
        Ok(Interface {
            name: name.to_owned(),
            ifindex,
        })
    }

    fn path(&self, path: &str) -> Result<PathMatch, String> {
        super::file_identity::resolve(path)
    }

    fn process(&self, pid: u32) -> Result<Process, String> {
        let missing = || format!("no process with pid {pid}");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|_| missing())?;
        let (comm, flags, start) = parse_stat(&stat).ok_or_else(missing)?;
        let status =
            std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|_| missing())?;
        let tgid = status
            .lines()
            .find_map(|l| l.strip_prefix("Tgid:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(missing)?;
        Ok(Process {
            tgid,
            start,
            kernel_thread: flags & PF_KTHREAD != 0,
            comm,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_hostile_comm() {
        let line = "4242 (a) b (c) S 1 4242 4242 0 -1 2097216 0 0 0 0 0 0 0 0 20 0 1 0 987654 0 0";
        let (comm, flags, start) = parse_stat(line).unwrap();
        assert_eq!(comm, "a) b (c");
        assert_eq!(flags & PF_KTHREAD, PF_KTHREAD);
        assert_eq!(start, 987_654);
    }

    #[test]
    fn this_process_and_kthreadd() {
        let me = HostResolver.process(std::process::id()).unwrap();
        assert_eq!(me.tgid, std::process::id());
        assert!(!me.kernel_thread);
        assert_eq!(process_start(std::process::id()), Some(me.start));
        // In a pid namespace of its own (a container), pid 2 is not kthreadd.
        if let Ok(k) = HostResolver.process(2)
            && k.comm == "kthreadd"
        {
            assert!(k.kernel_thread);
        }
    }
}
