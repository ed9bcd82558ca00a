//! The undo journal: everything a worker changes on the host that would
//! outlive the agent (a stopped process, a frozen cgroup, a fill file, a
//! cgroup of ours) is written here *before* it is changed, and removed once
//! the worker has undone it. Whoever finds a record left — the reaper when
//! the agent dies, or the next start-up — undoes it.

use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use serde::{Deserialize, Serialize};

use crate::{domain::process_start, state};

/// One change to undo.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Undo {
    /// SIGCONT a process stopped with SIGSTOP, if it is still the one that
    /// started at `start` (clock ticks after boot, /proc/PID/stat field 22).
    Resume {
        pid: u32,
        start: u64,
    },
    /// Thaw a cgroup: v2 `cgroup.freeze`, or v1 `freezer.state`.
    Thaw {
        dir: PathBuf,
        v1: bool,
    },
    RemoveFile {
        path: PathBuf,
    },
    /// Kill what is in a cgroup of ours and remove it.
    RemoveCgroup {
        dir: PathBuf,
    },
}

impl Undo {
    /// Undoes it; what is already gone counts as undone.
    pub fn apply(&self) -> Result<(), String> {
        match self {
            Self::Resume { pid, start } => {
                if process_start(*pid) == Some(*start) {
                    nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(*pid as i32),
                        nix::sys::signal::Signal::SIGCONT,
                    )
                    .map_err(|e| format!("cannot resume process {pid}: {e}"))?;
                }
                Ok(())
            }
            Self::Thaw { dir, v1 } => {
                let (file, value) = if *v1 {
                    ("freezer.state", "THAWED")
                } else {
                    ("cgroup.freeze", "0")
                };
                match fs::write(dir.join(file), value) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(format!("cannot thaw {}: {e}", dir.display())),
                }
            }
            Self::RemoveFile { path } => match fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(format!("cannot remove {}: {e}", path.display())),
            },
            Self::RemoveCgroup { dir } => super::placement::remove_cgroup(dir),
        }
    }
}

/// The journal of one agent: a directory of records, one file each.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    next: AtomicU64,
}

/// A record in the journal; [`Entry::done`] removes it.
#[derive(Debug)]
pub struct Entry {
    path: PathBuf,
    pub undo: Undo,
}

impl Entry {
    /// The change was undone by its worker: forget it.
    pub fn done(self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// The journal's directory in a state directory.
pub fn dir_in(state_dir: &Path) -> PathBuf {
    state_dir.join("undo")
}

impl Journal {
    /// Opens (makes) the journal in `state_dir`.
    pub fn open(state_dir: &Path) -> io::Result<Arc<Self>> {
        let dir = dir_in(state_dir);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        Ok(Arc::new(Self {
            dir,
            next: AtomicU64::new(0),
        }))
    }

    /// A journal that records nothing (every `record` fails): for an
    /// engine without a state directory, as in unit tests.
    pub fn detached() -> Arc<Self> {
        Arc::new(Self {
            dir: PathBuf::new(),
            next: AtomicU64::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a record, before the change it undoes is made.
    pub fn record(&self, undo: Undo) -> io::Result<Entry> {
        if self.dir.as_os_str().is_empty() {
            return Err(io::Error::other("this agent keeps no undo journal"));
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{}-{n}.json", std::process::id()));
        let text = serde_json::to_vec(&undo).map_err(io::Error::other)?;
        state::write_private(&path, &text)?;
        Ok(Entry { path, undo })
    }

    /// Undoes every record in `dir` and removes it; returns how many.
    /// Records that cannot be read are removed too (and logged).
    pub fn replay(dir: &Path) -> usize {
        let Ok(entries) = fs::read_dir(dir) else {
            return 0;
        };
        let mut n = 0;
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            match state::read_private(&path).and_then(|t| serde_json::from_str::<Undo>(&t).ok()) {
                Some(undo) => {
                    if let Err(err) = undo.apply() {
                        tracing::warn!(error = %err, "undoing a journal record failed");
                    }
                    n += 1;
                }
                None => tracing::warn!(path = %path.display(), "unreadable undo record"),
            }
            let _ = fs::remove_file(&path);
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_replay_and_done() {
        let tmp = std::env::temp_dir().join(format!("fl-journal-{}", std::process::id()));
        fs::create_dir_all(&tmp).unwrap();
        let j = Journal::open(&tmp).unwrap();
        let victim = tmp.join("fill");
        fs::write(&victim, b"x").unwrap();
        let _kept = j
            .record(Undo::RemoveFile {
                path: victim.clone(),
            })
            .unwrap();
        let gone = j
            .record(Undo::RemoveFile {
                path: tmp.join("other"),
            })
            .unwrap();
        gone.done();
        assert_eq!(Journal::replay(j.dir()), 1);
        assert!(!victim.exists());
        assert_eq!(fs::read_dir(j.dir()).unwrap().count(), 0);
        fs::remove_dir_all(&tmp).unwrap();
    }
}
