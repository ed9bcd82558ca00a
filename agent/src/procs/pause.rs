//! Pauses a target: a cgroup-only target with the cgroup freezer, anything
//! else (pids, names, or a cgroup that holds a protected process) with
//! SIGSTOP per process, new matches included (re-scanned every 200 ms), and
//! SIGCONT at the end. Every pause is recorded in the undo journal *before*
//! it is done, so the reaper (or the next start) undoes it if the agent dies.

use std::{
    collections::HashSet,
    sync::{Arc, Condvar, Mutex, PoisonError},
    thread::JoinHandle,
    time::{Duration, SystemTime},
};

use nix::sys::signal::Signal;

use super::{Matcher, Proc, Scan, freeze::Freezer, signal_same};
use crate::worker::{
    Action,
    journal::{Entry, Journal, Undo},
};

/// How often new matches are looked for (and a frozen cgroup checked for a
/// protected newcomer).
const RESCAN: Duration = Duration::from_millis(200);

#[derive(Default)]
struct State {
    frozen: Option<(Freezer, Entry)>,
    stopped: Vec<(Proc, Entry)>,
    seen: HashSet<(u32, u64)>,
    paused: u64,
    actions: Vec<Action>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("frozen", &self.frozen.as_ref().map(|(z, _)| z))
            .field("stopped", &self.stopped.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Shared {
    stopping: Mutex<bool>,
    wake: Condvar,
    state: Mutex<State>,
}

#[derive(Debug)]
pub struct Pauser {
    matcher: Matcher,
    journal: Arc<Journal>,
    dry_run: bool,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn action(p: &Proc, what: impl Into<String>) -> Action {
    Action {
        at: SystemTime::now(),
        pid: p.pid,
        comm: p.comm.clone(),
        what: what.into(),
    }
}

impl Pauser {
    pub fn new(matcher: Matcher, journal: Arc<Journal>, dry_run: bool) -> Self {
        Self {
            matcher,
            journal,
            dry_run,
            shared: Arc::default(),
            thread: Mutex::new(None),
        }
    }

    /// The freezer for a target that is a cgroup and nothing else (with
    /// another selector, the freezer would also stop the non-matching).
    fn freezer(&self, scan: &Scan) -> Option<Freezer> {
        let t = self.matcher.target();
        let cg = t.cgroup.as_ref()?;
        let only_cgroup = t.pids.is_empty()
            && t.comm.is_none()
            && t.exclude_pids.is_empty()
            && t.exclude_comm.is_none();
        only_cgroup
            .then(|| super::freeze::choose(&cg.path, scan, self.matcher.policy()))
            .flatten()
    }

    /// Pauses what matches now, then watches for new matches.
    pub fn start(&self) -> Result<(), String> {
        *lock(&self.shared.stopping) = false;
        let scan = self.matcher.scan();
        if let Some(z) = self.freezer(&scan) {
            self.freeze(&z, &scan)?;
        } else {
            stop_new(
                &self.matcher,
                &self.journal,
                self.dry_run,
                &self.shared,
                scan,
            )?;
        }
        let (matcher, journal, dry_run, shared) = (
            self.matcher.clone(),
            self.journal.clone(),
            self.dry_run,
            self.shared.clone(),
        );
        let h = std::thread::Builder::new()
            .name("process-pause".into())
            .spawn(move || watch(&matcher, &journal, dry_run, &shared))
            .map_err(|e| format!("cannot start the pause thread: {e}"))?;
        *lock(&self.thread) = Some(h);
        Ok(())
    }

    fn freeze(&self, z: &Freezer, scan: &Scan) -> Result<(), String> {
        let mut st = lock(&self.shared.state);
        st.seen
            .extend(scan.matched.iter().map(|p| (p.pid, p.start)));
        let how = if z.is_v1() { "v1" } else { "v2" };
        if self.dry_run {
            for p in &scan.matched {
                st.actions.push(action(
                    p,
                    format!("would freeze (cgroup {how} freezer, dry run)"),
                ));
            }
            return Ok(());
        }
        let entry = self
            .journal
            .record(Undo::Thaw {
                dir: z.dir().to_path_buf(),
                v1: z.is_v1(),
            })
            .map_err(|e| format!("cannot record the freeze in the undo journal: {e}"))?;
        if let Err(e) = z.set(true) {
            let _ = z.set(false);
            entry.done();
            return Err(e);
        }
        st.paused += scan.matched.len() as u64;
        for p in &scan.matched {
            st.actions
                .push(action(p, format!("frozen (cgroup {how} freezer)")));
        }
        st.frozen = Some((z.clone(), entry));
        Ok(())
    }

    /// Resumes everything paused (thaw, SIGCONT), and ends the records.
    pub fn stop(&self) {
        *lock(&self.shared.stopping) = true;
        self.shared.wake.notify_all();
        if let Some(h) = lock(&self.thread).take() {
            let _ = h.join();
        }
        let mut st = lock(&self.shared.state);
        // A thaw that fails leaves its record: the reaper or the next start
        // thaws it.
        if let Some((z, entry)) = st.frozen.take()
            && z.set(false).is_ok()
        {
            entry.done();
        }
        for (p, entry) in std::mem::take(&mut st.stopped) {
            let undo = Undo::Resume {
                pid: p.pid,
                start: p.start,
            };
            if undo.apply().is_ok() {
                entry.done();
                st.actions.push(action(&p, "SIGCONT"));
            }
        }
    }

    /// (processes seen, processes paused, every action).
    pub fn progress(&self) -> (u64, u64, Vec<Action>) {
        let st = lock(&self.shared.state);
        (st.seen.len() as u64, st.paused, st.actions.clone())
    }
}

/// SIGSTOPs every match of `scan` not stopped yet, each recorded first.
fn stop_new(
    matcher: &Matcher,
    journal: &Journal,
    dry_run: bool,
    shared: &Shared,
    scan: Scan,
) -> Result<(), String> {
    let mut st = lock(&shared.state);
    for p in scan.matched {
        if !st.seen.insert((p.pid, p.start)) {
            continue;
        }
        let Some(now) = matcher.recheck(&p) else {
            continue;
        };
        if dry_run {
            st.actions.push(action(&now, "would SIGSTOP (dry run)"));
            continue;
        }
        let entry = journal
            .record(Undo::Resume {
                pid: now.pid,
                start: now.start,
            })
            .map_err(|e| format!("cannot record a pause in the undo journal: {e}"))?;
        if signal_same(&now, Signal::SIGSTOP) {
            st.paused += 1;
            st.actions.push(action(&now, "SIGSTOP"));
            st.stopped.push((now, entry));
        } else {
            entry.done(); // gone meanwhile
        }
    }
    Ok(())
}

/// Every `RESCAN`: stop new matches; if a protected process turns up in a
/// frozen cgroup, thaw it and pause the rest with signals instead.
fn watch(matcher: &Matcher, journal: &Journal, dry_run: bool, shared: &Shared) {
    loop {
        {
            let stopping = lock(&shared.stopping);
            if *stopping {
                return;
            }
            let (stopping, _) = shared
                .wake
                .wait_timeout(stopping, RESCAN)
                .unwrap_or_else(PoisonError::into_inner);
            if *stopping {
                return;
            }
        }
        let scan = matcher.scan();
        let frozen = lock(&shared.state).frozen.is_some();
        if frozen {
            if scan.spared.is_empty() {
                // Newcomers are frozen by the kernel: counted and named.
                let mut st = lock(&shared.state);
                for p in scan.matched {
                    if st.seen.insert((p.pid, p.start)) {
                        st.paused += 1;
                        st.actions
                            .push(action(&p, "frozen (joined the frozen cgroup)"));
                    }
                }
                continue;
            }
            let mut st = lock(&shared.state);
            if let Some((z, entry)) = st.frozen.take() {
                tracing::warn!(cgroup = %z.dir().display(), "a protected process joined a frozen cgroup: thawed, pausing the others with SIGSTOP");
                if z.set(false).is_ok() {
                    entry.done();
                }
                // Everyone is paused afresh, with signals this time.
                st.seen.clear();
            }
        }
        if let Err(e) = stop_new(matcher, journal, dry_run, shared, scan) {
            tracing::warn!("pausing a new match failed: {e}");
        }
    }
}
