//! Signals a target's processes once or every interval; in Chaos Monkey
//! mode one random match per interval, with a probability and a minimum gap
//! between kills. A dry run names who would have been signalled.

use std::{
    collections::HashSet,
    sync::{Arc, Condvar, Mutex, PoisonError},
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use nix::sys::signal::Signal;
use rand::{Rng as _, seq::IndexedRandom as _};

use super::{Matcher, Proc, signal_same};

/// The shortest interval between rounds: a scan of /proc per round, and
/// Chaos Monkey's unit is minutes, so one second is plenty.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    All,
    OneRandom,
}

/// What to send, when and to whom.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KillPlan {
    pub signal: Signal,
    /// None: one round at the start.
    pub interval: Option<Duration>,
    pub pick: Pick,
    /// Chance that a round signals anyone.
    pub probability: f64,
    /// No round signals anyone sooner than this after the last one that did.
    pub min_gap: Duration,
}

/// One signal sent (or, in a dry run, that would have been).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kill {
    pub at: SystemTime,
    pub pid: u32,
    pub comm: String,
    pub signal: Signal,
    pub dry_run: bool,
}

impl Kill {
    /// As status shows it: "SIGKILL", or "would SIGKILL (dry run)".
    pub fn what(&self) -> String {
        if self.dry_run {
            format!("would {} (dry run)", self.signal.as_str())
        } else {
            self.signal.as_str().to_owned()
        }
    }
}

#[derive(Debug, Default)]
struct Log {
    /// Every candidate seen (pid, start time).
    seen: HashSet<(u32, u64)>,
    sent: u64,
    kills: Vec<Kill>,
    last_kill: Option<Instant>,
}

#[derive(Debug, Default)]
struct Shared {
    stopping: Mutex<bool>,
    wake: Condvar,
    log: Mutex<Log>,
}

#[derive(Debug)]
pub struct Killer {
    plan: KillPlan,
    matcher: Matcher,
    dry_run: bool,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Killer {
    pub fn new(plan: KillPlan, matcher: Matcher, dry_run: bool) -> Self {
        Self {
            plan,
            matcher,
            dry_run,
            shared: Arc::default(),
            thread: Mutex::new(None),
        }
    }

    /// The first round now (so it is done when the experiment has started),
    /// then one per interval on a thread of its own.
    pub fn start(&self) -> Result<(), String> {
        *lock(&self.shared.stopping) = false;
        round(&self.plan, &self.matcher, self.dry_run, &self.shared);
        let Some(interval) = self.plan.interval else {
            return Ok(());
        };
        let (plan, matcher, dry_run, shared) = (
            self.plan,
            self.matcher.clone(),
            self.dry_run,
            self.shared.clone(),
        );
        let t0 = Instant::now();
        let handle = std::thread::Builder::new()
            .name("process-kill".into())
            .spawn(move || {
                for k in 1u32.. {
                    // Rounds at fixed times from the start: no drift.
                    let due = t0 + interval * k;
                    if !sleep_until(&shared, due) {
                        return;
                    }
                    round(&plan, &matcher, dry_run, &shared);
                }
            })
            .map_err(|e| format!("cannot start the kill thread: {e}"))?;
        *lock(&self.thread) = Some(handle);
        Ok(())
    }

    pub fn stop(&self) {
        *lock(&self.shared.stopping) = true;
        self.shared.wake.notify_all();
        if let Some(h) = lock(&self.thread).take() {
            let _ = h.join();
        }
    }

    /// (candidates seen, signals sent, every kill).
    pub fn progress(&self) -> (u64, u64, Vec<Kill>) {
        let log = lock(&self.shared.log);
        (log.seen.len() as u64, log.sent, log.kills.clone())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits until `due`; false if told to stop first.
fn sleep_until(shared: &Shared, due: Instant) -> bool {
    let mut stopping = lock(&shared.stopping);
    loop {
        if *stopping {
            return false;
        }
        let now = Instant::now();
        if now >= due {
            return true;
        }
        stopping = shared
            .wake
            .wait_timeout(stopping, due - now)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

/// One round: find the candidates, decide whether anyone is signalled, and
/// signal (or, dry, name) the chosen ones.
fn round(plan: &KillPlan, matcher: &Matcher, dry_run: bool, shared: &Shared) {
    let candidates = matcher.scan().matched;
    let mut rng = rand::rng();
    let victims: Vec<Proc> = {
        let mut log = lock(&shared.log);
        log.seen.extend(candidates.iter().map(|p| (p.pid, p.start)));
        let gap_ok = log.last_kill.is_none_or(|t| t.elapsed() >= plan.min_gap);
        if candidates.is_empty() || !gap_ok || !rng.random_bool(plan.probability) {
            return;
        }
        match plan.pick {
            Pick::All => candidates,
            Pick::OneRandom => candidates.choose(&mut rng).cloned().into_iter().collect(),
        }
    };
    let mut kills = Vec::new();
    for v in victims {
        // Checked again at the moment of the signal: still that process,
        // still selected, still not protected.
        let Some(now) = matcher.recheck(&v) else {
            continue;
        };
        if dry_run || signal_same(&now, plan.signal) {
            kills.push(Kill {
                at: SystemTime::now(),
                pid: now.pid,
                comm: now.comm,
                signal: plan.signal,
                dry_run,
            });
        }
    }
    if kills.is_empty() {
        return;
    }
    let mut log = lock(&shared.log);
    log.last_kill = Some(Instant::now());
    if !dry_run {
        log.sent += kills.len() as u64;
    }
    log.kills.extend(kills);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_kill_says() {
        let k = Kill {
            at: SystemTime::UNIX_EPOCH,
            pid: 7,
            comm: "x".into(),
            signal: Signal::SIGKILL,
            dry_run: false,
        };
        assert_eq!(k.what(), "SIGKILL");
        let dry = Kill { dry_run: true, ..k };
        assert_eq!(dry.what(), "would SIGKILL (dry run)");
    }
}
