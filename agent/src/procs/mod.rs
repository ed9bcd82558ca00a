//! Process faults done by the agent itself: finding a target's processes in
//! /proc (`Matcher`), signalling them (`kill`), stopping or freezing them
//! (`freeze`, `pause`), and the reaper that undoes a pause when the agent
//! dies (`reaper`).

pub mod freeze;
pub mod kill;
pub mod pause;
pub mod reaper;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use crate::{
    domain::{Target, resolve},
    engine::Policy,
};

/// One process (a thread group leader) as /proc shows it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    /// Clock ticks after boot (/proc/PID/stat field 22): with the pid, the
    /// process's identity (a reused pid has another start time).
    pub start: u64,
    /// The kernel's comm (at most 15 bytes).
    pub comm: String,
    pub kernel_thread: bool,
    /// Its cgroup2 directory (absolute), if it could be read.
    pub cgroup: Option<PathBuf>,
}

impl Proc {
    /// Reads `pid` from /proc; None if there is no such process now (a
    /// zombie is none: it has exited, and signals or stops reach nothing).
    /// The cgroup is read only when `with_cgroup` (one more read).
    pub fn read(pid: u32, mount: &Path, with_cgroup: bool) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (comm, flags, start) = resolve::parse_stat(&stat)?;
        let state = stat
            .get(stat.rfind(')')? + 1..)?
            .split_whitespace()
            .next()?;
        if matches!(state, "Z" | "X" | "x") {
            return None;
        }
        let cgroup = if with_cgroup {
            cgroup_of(pid, mount)
        } else {
            None
        };
        Some(Self {
            pid,
            start,
            comm,
            kernel_thread: flags & resolve::PF_KTHREAD != 0,
            cgroup,
        })
    }

    /// Still the same process (same pid, same start time)?
    pub fn alive(&self) -> bool {
        resolve::process_start(self.pid) == Some(self.start)
    }
}

/// The cgroup2 directory of `pid` (its `0::` line, under `mount`).
pub fn cgroup_of(pid: u32, mount: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|rel| mount.join(rel.trim().trim_start_matches('/')))
}

/// Every process (never a thread: /proc lists thread group leaders only).
pub fn all_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Finds the processes a target selects, never the protected ones.
#[derive(Clone, Debug)]
pub struct Matcher {
    target: Target,
    policy: Policy,
    /// The cgroup2 mount, to read /proc/PID/cgroup against.
    mount: PathBuf,
}

/// What one scan found.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    pub matched: Vec<Proc>,
    /// Matching processes left alone, with the reason.
    pub spared: Vec<(Proc, &'static str)>,
}

impl Matcher {
    pub fn new(target: &Target, policy: &Policy) -> Result<Self, String> {
        let mount = crate::cgroup::cgroup2_mount().map_err(|e| e.to_string())?;
        Ok(Self {
            target: target.clone(),
            policy: policy.clone(),
            mount,
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The target's processes now.
    pub fn scan(&self) -> Scan {
        let t = &self.target;
        let pids = if t.pids.is_empty() {
            all_pids()
        } else {
            t.pids.clone()
        };
        let starts: HashMap<u32, u64> = t
            .pids
            .iter()
            .zip(&t.pid_starts)
            .map(|(p, s)| (*p, *s))
            .collect();
        let mut out = Scan::default();
        for pid in pids {
            if t.exclude_pids.contains(&pid) {
                continue;
            }
            let Some(p) = Proc::read(pid, &self.mount, true) else {
                continue;
            };
            // A validated pid that now belongs to another process is not the target.
            if starts.get(&pid).is_some_and(|s| *s != 0 && *s != p.start) {
                continue;
            }
            if t.comm.as_ref().is_some_and(|c| *c != p.comm)
                || t.exclude_comm.as_ref().is_some_and(|c| *c == p.comm)
            {
                continue;
            }
            if let Some(cg) = &t.cgroup {
                match &p.cgroup {
                    Some(own) if own.starts_with(&cg.path) => {}
                    _ => continue,
                }
            }
            // A pid given by number may be a thread id (refused at the API,
            // but a pid can be reused by a thread later): processes only.
            if !t.pids.is_empty() && !is_thread_group_leader(pid) {
                continue;
            }
            match self.policy.spares(&p) {
                Some(why) => out.spared.push((p, why)),
                None => out.matched.push(p),
            }
        }
        out
    }

    /// Reads one process again right before acting on it: Some if it is
    /// still the same process, still selected and still not protected.
    pub fn recheck(&self, p: &Proc) -> Option<Proc> {
        let now = Proc::read(p.pid, &self.mount, true)?;
        if now.start != p.start || self.policy.spares(&now).is_some() {
            return None;
        }
        let t = &self.target;
        if t.comm.as_ref().is_some_and(|c| *c != now.comm)
            || t.exclude_comm.as_ref().is_some_and(|c| *c == now.comm)
        {
            return None;
        }
        if let Some(cg) = &t.cgroup
            && !now
                .cgroup
                .as_ref()
                .is_some_and(|own| own.starts_with(&cg.path))
        {
            return None;
        }
        Some(now)
    }
}

fn is_thread_group_leader(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Tgid:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
            == Some(pid)
    })
}

/// A process's pid file descriptor, so the signal reaches the process that
/// was checked and never one that reused its pid meanwhile.
pub struct PidFd(std::os::fd::OwnedFd);

impl PidFd {
    /// Opens `p.pid` and checks, with the fd held, that it is still `p`.
    pub fn open(p: &Proc) -> Option<Self> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, p.pid as libc::pid_t, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: a successful pidfd_open returned a fresh fd that we own.
        let fd =
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
        // A pidfd names one process for good: the start time read after
        // opening proves that process is the one that was checked.
        p.alive().then_some(Self(fd))
    }

    /// Sends `sig` to the process; false if it is gone.
    pub fn signal(&self, sig: nix::sys::signal::Signal) -> bool {
        use std::os::fd::AsRawFd as _;
        // SAFETY: a valid pidfd, a valid signal number, no siginfo, no flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                sig as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        r == 0
    }
}

/// Signals a process if it is still the one seen (same start time).
pub fn signal_same(p: &Proc, sig: nix::sys::signal::Signal) -> bool {
    PidFd::open(p).is_some_and(|fd| fd.signal(sig))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            max_duration: std::time::Duration::from_secs(60),
            protected_pids: vec![4242],
            protected_comms: vec![crate::domain::ProtectedName::parse("sshd*").unwrap()],
            agent_cgroup: None,
        }
    }

    #[test]
    fn protected_processes_are_spared_and_say_why() {
        let p = |pid, comm: &str| Proc {
            pid,
            start: 1,
            comm: comm.into(),
            kernel_thread: false,
            cgroup: None,
        };
        let pol = policy();
        assert_eq!(pol.spares(&p(1, "init")), Some("PID 1"));
        assert_eq!(pol.spares(&p(4242, "x")), Some("a protected pid"));
        assert_eq!(pol.spares(&p(77, "sshd-session")), Some("a protected name"));
        assert_eq!(
            pol.spares(&p(std::process::id(), "x")),
            Some("the agent itself")
        );
        assert_eq!(pol.spares(&p(77, "worker")), None);
    }

    #[test]
    fn this_process_is_found_by_pid_and_never_matched() {
        let me = std::process::id();
        let target = Target {
            pids: vec![me],
            ..Target::default()
        };
        let Ok(m) = Matcher::new(&target, &policy()) else {
            return; // no cgroup2 here
        };
        let s = m.scan();
        assert!(s.matched.is_empty());
        assert_eq!(s.spared.len(), 1);
        assert_eq!(s.spared[0].1, "the agent itself");
    }
}
