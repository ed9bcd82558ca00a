//! The agent's side of a stressor: the child process, placed in the
//! target's cgroups, recorded in the undo journal, measured from /proc, and
//! killed on stop. The kinds (`faults/cpu_pressure.rs`,
//! `faults/memory_pressure.rs`) build their workers on it.

use std::{
    os::unix::process::ExitStatusExt as _,
    path::PathBuf,
    process::{Child, ExitStatus},
    sync::{Arc, Mutex},
};

use crate::{
    cgroup::Cgroup,
    worker::{
        Journal, Undo,
        journal::Entry,
        placement::{self, Placement},
        spawn::spawn_child,
    },
};

/// The OOM killer's first choice.
pub const STRESSOR_OOM_SCORE_ADJ: i32 = 1000;

/// How to start a stressor.
#[derive(Clone, Debug)]
pub struct Launch {
    /// `--internal` role: "cpu" or "memory".
    pub role: &'static str,
    /// Its argument (JSON of the role's spec).
    pub arg: String,
    /// Charged to this cgroup; `None` = the agent's own (host-wide).
    pub target: Option<Cgroup>,
    /// The v1 controllers to join too, on a hybrid host.
    pub controllers: &'static [&'static str],
    pub token: String,
    pub journal: Arc<Journal>,
}

/// A running stressor.
#[derive(Debug)]
pub struct Stressor {
    inner: Mutex<Inner>,
    pub pid: u32,
    pub placement: Placement,
}

#[derive(Debug)]
struct Inner {
    child: Option<Child>,
    exit: Option<ExitStatus>,
    entries: Vec<Entry>,
}

impl Stressor {
    /// Places and starts it; on error nothing is left (the cgroup made for
    /// it removed, its journal record gone).
    pub fn start(l: &Launch) -> Result<Self, String> {
        let mut entries = Vec::new();
        let placement = match &l.target {
            None => Placement::default(),
            Some(cg) => {
                // Recorded before it exists: the leaf `place` may make.
                let leaf = cg.path.join(format!("faultline-{}", l.token));
                let entry = l
                    .journal
                    .record(Undo::RemoveCgroup { dir: leaf })
                    .map_err(|e| format!("cannot write the undo journal: {e}"))?;
                entries.push(entry);
                match placement::place(cg, l.controllers, &l.token) {
                    Ok(p) => p,
                    Err(e) => {
                        entries.into_iter().for_each(Entry::done);
                        return Err(e);
                    }
                }
            }
        };
        match spawn_child(
            l.role,
            &l.arg,
            &placement.join,
            Some(STRESSOR_OOM_SCORE_ADJ),
        ) {
            Ok(child) => Ok(Self {
                pid: child.id(),
                placement,
                inner: Mutex::new(Inner {
                    child: Some(child),
                    exit: None,
                    entries,
                }),
            }),
            Err(e) => {
                placement.remove();
                entries.into_iter().for_each(Entry::done);
                Err(format!(
                    "cannot start the {} stressor in {}: {e}",
                    l.role,
                    shown(&placement.join)
                ))
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How it ended, if it did by itself (not reaped by [`Stressor::stop`]).
    pub fn exited(&self) -> Option<ExitStatus> {
        let mut inner = self.lock();
        if inner.exit.is_none()
            && let Some(child) = inner.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            inner.exit = Some(status);
        }
        inner.exit
    }

    /// Kills and reaps it, removes what was made for it. Idempotent.
    pub fn stop(&self) {
        let mut inner = self.lock();
        if let Some(mut child) = inner.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.placement.remove();
        inner.entries.drain(..).for_each(Entry::done);
    }

    /// CPU time of all its threads so far, in ns (schedstat).
    pub fn cpu_ns(&self) -> Option<u64> {
        self.lock().child.as_ref()?;
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid)).ok()?;
        Some(
            tasks
                .flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
                .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .sum(),
        )
    }

    /// Its resident set, in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        self.lock().child.as_ref()?;
        let statm = std::fs::read_to_string(format!("/proc/{}/statm", self.pid)).ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        // SAFETY: sysconf has no preconditions.
        let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        Some(pages * page)
    }
}

/// "killed by SIGKILL", "exit status 1".
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!(
            "killed by {}",
            nix::sys::signal::Signal::try_from(s)
                .map_or_else(|_| format!("signal {s}"), |s| s.as_str().to_owned())
        ),
        _ => status.to_string(),
    }
}

fn shown(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "the agent's cgroup".to_owned();
    }
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Online CPUs (/sys/devices/system/cpu/online, e.g. "0-3,6").
pub fn online_cpus() -> Vec<u32> {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .map(|s| parse_cpu_list(&s))
        .unwrap_or_default()
}

pub fn parse_cpu_list(text: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.trim().parse::<u32>(), b.trim().parse::<u32>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.trim().parse::<u32>().ok()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,6\n"), vec![0, 1, 2, 3, 6]);
        assert_eq!(parse_cpu_list("0\n"), vec![0]);
        assert!(parse_cpu_list("").is_empty());
    }
}
