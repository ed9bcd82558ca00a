//! The CPU stressor: one thread per CPU, pinned to it, each running a
//! closed-loop duty cycle on its own CPU time.
//!
//! Why it is accurate by construction: every slice (2–5 ms of wall time,
//! drawn at random so that it never phase-locks with the scheduler tick
//! that `/proc/stat` samples) the thread spins until its own CPU time
//! (CLOCK_THREAD_CPUTIME_ID, which only advances while it really runs) has
//! grown by its share of the slice plus a debt, then sleeps to the slice's
//! end. The debt is what the past slices fell short (preemption by a
//! competitor, wake-up latency) or overshot, bounded to ±[`DEBT_MAX_NS`], so
//! the load is right from the first slice, holds when another task competes
//! for the CPU, and a long preemption is not paid back as a burst.
//!
//! Top-up mode: a monitor thread reads each CPU's busy time from
//! /proc/stat over the last second, takes away the stressor's own CPU time,
//! and sets each worker's share to `load - other load` (never below 0).

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU32, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};

use super::{EXIT_BAD_ARG, EXIT_ORPHANED, Orphan, clock_ns, mono_ns, sleep, sleep_until};

/// What the agent asks of a CPU stressor (`--internal cpu <json>`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CpuStress {
    /// Share of each CPU, in (0, 100].
    pub load_percent: f64,
    /// The CPUs to load, one pinned worker thread each.
    pub cpus: Vec<u32>,
    /// Top each CPU's total load up to `load_percent` instead of adding it.
    pub top_up: bool,
}

/// Slices are drawn uniformly from [MIN, MAX) ns of wall time.
const SLICE_MIN_NS: i64 = 2_000_000;
const SLICE_MAX_NS: i64 = 5_000_000;
/// The most CPU time a worker owes (or is owed) from earlier slices.
const DEBT_MAX_NS: i64 = 30_000_000;
/// The workers' nice value (weight 29154 against 1024 for nice 0).
const NICE: libc::c_int = -15;
/// Shares are kept in millionths of a CPU.
const SHARE_ONE: u32 = 1_000_000;
/// The top-up monitor's period and window (in periods).
const MONITOR_PERIOD: Duration = Duration::from_millis(100);
const WINDOW: usize = 10;

/// `--internal cpu <json>`: runs until killed; returns only on a bad
/// argument or when the agent is gone.
pub fn child_main(arg: &str) -> i32 {
    let Some(spec) = super::parse_arg::<CpuStress>("cpu", arg) else {
        return EXIT_BAD_ARG;
    };
    if !(spec.load_percent > 0.0 && spec.load_percent <= 100.0) || spec.cpus.is_empty() {
        eprintln!(
            "faultline-agent --internal cpu: load_percent must be in (0, 100] and cpus non-empty"
        );
        return EXIT_BAD_ARG;
    }
    let orphan = Orphan::new();
    // Sleeps end when asked, not up to 50 µs later: the slices are short.
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer; no memory is passed.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1_u64, 0_u64, 0_u64, 0_u64) };
    own_autogroup();
    let share = share_of(spec.load_percent);
    let workers: Vec<Arc<Worker>> = spec
        .cpus
        .iter()
        .map(|&cpu| {
            Arc::new(Worker {
                cpu,
                share: AtomicU32::new(share),
                cpu_time_ns: AtomicI64::new(0),
            })
        })
        .collect();
    for (i, w) in workers.iter().enumerate() {
        let w = Arc::clone(w);
        let seed = 0x9e37_79b9_7f4a_7c15_u64 ^ ((u64::from(w.cpu) + 1) << 32) ^ (i as u64);
        if let Err(e) = std::thread::Builder::new()
            .name(format!("fl-cpu{}", w.cpu))
            .spawn(move || w.run(seed))
        {
            eprintln!("faultline-agent --internal cpu: cannot start a worker: {e}");
            return 1;
        }
    }
    let mut monitor = spec.top_up.then(|| TopUp::new(&spec));
    loop {
        if orphan.orphaned() {
            return EXIT_ORPHANED;
        }
        if let Some(m) = monitor.as_mut() {
            m.update(&workers);
        }
        sleep(MONITOR_PERIOD);
    }
}

/// With autogroup scheduling (tasks in the root CPU cgroup), nice counts
/// only inside a session's group and each group weighs the same: a session
/// of its own, weighted like the threads' nice, keeps the share against a
/// busy session (a build) too. Best effort: without it the load is still
/// right on an idle CPU.
fn own_autogroup() {
    // SAFETY: setsid has no preconditions; the stressor leads no group.
    unsafe { libc::setsid() };
    let _ = std::fs::write("/proc/self/autogroup", NICE.to_string());
}

fn share_of(percent: f64) -> u32 {
    (percent.clamp(0.0, 100.0) / 100.0 * f64::from(SHARE_ONE)).round() as u32
}

#[derive(Debug)]
struct Worker {
    cpu: u32,
    /// The share of the CPU to use now, in millionths.
    share: AtomicU32,
    /// The thread's CPU time so far, for the top-up monitor.
    cpu_time_ns: AtomicI64,
}

impl Worker {
    fn run(&self, mut seed: u64) {
        if let Err(e) = pin(self.cpu) {
            // Unpinned load would land on whichever CPU: refuse to run.
            eprintln!(
                "faultline-agent --internal cpu: cannot pin to CPU {}: {e}",
                self.cpu
            );
            std::process::exit(1);
        }
        // A high weight, so that the share is the one asked for even
        // when other tasks compete for the CPU: the duty cycle, not the
        // scheduler, bounds what the thread takes.
        // SAFETY: setpriority on the calling thread (who 0 = this tid for
        // PRIO_PROCESS under NPTL's per-thread nice); no memory passed.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, NICE) };
        let thread_cpu = || clock_ns(libc::CLOCK_THREAD_CPUTIME_ID);
        let mut debt: i64 = 0;
        let mut start = mono_ns();
        let mut used_at_start = thread_cpu();
        loop {
            let len = SLICE_MIN_NS
                + (next_random(&mut seed) % (SLICE_MAX_NS - SLICE_MIN_NS) as u64) as i64;
            let share = i64::from(self.share.load(Ordering::Relaxed));
            let want = (share * len / i64::from(SHARE_ONE) + debt).clamp(0, len);
            let end = start + len;
            if want > 0 {
                while thread_cpu() - used_at_start < want && mono_ns() < end {
                    std::hint::spin_loop();
                }
            }
            if want < len {
                sleep_until(end);
            }
            // The debt is judged on the wall time that really passed, so
            // a late wake-up is owed too and the long-run average is exact.
            let now = mono_ns();
            let used = thread_cpu();
            let due = share * (now - start) / i64::from(SHARE_ONE);
            debt = (debt + due - (used - used_at_start)).clamp(-DEBT_MAX_NS, DEBT_MAX_NS);
            self.cpu_time_ns.store(used, Ordering::Relaxed);
            start = now;
            used_at_start = used;
        }
    }
}

/// xorshift64: the slice lengths need no more than unpredictability of phase.
fn next_random(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn pin(cpu: u32) -> nix::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu as usize)?;
    // Pid 0 is the calling thread.
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
}

/// Top-up: each CPU's busy time from /proc/stat and the workers' own CPU
/// time, over a sliding window of [`WINDOW`] monitor periods.
struct TopUp {
    load: f64,
    cpus: Vec<u32>,
    /// (monotonic ns, busy ns of each CPU, own CPU ns of each worker).
    samples: std::collections::VecDeque<(i64, Vec<i64>, Vec<i64>)>,
}

impl TopUp {
    fn new(spec: &CpuStress) -> Self {
        Self {
            load: spec.load_percent,
            cpus: spec.cpus.clone(),
            samples: std::collections::VecDeque::new(),
        }
    }

    fn update(&mut self, workers: &[Arc<Worker>]) {
        let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
            return;
        };
        let busy: Vec<i64> = self
            .cpus
            .iter()
            .map(|&c| cpu_busy_ns(&stat, c).unwrap_or(0))
            .collect();
        let own: Vec<i64> = workers
            .iter()
            .map(|w| w.cpu_time_ns.load(Ordering::Relaxed))
            .collect();
        self.samples.push_back((mono_ns(), busy, own));
        if self.samples.len() > WINDOW + 1 {
            self.samples.pop_front();
        }
        // Three periods at least: the ticks /proc/stat counts in are 10 ms.
        if self.samples.len() < 4 {
            return;
        }
        let (first, last) = (&self.samples[0], &self.samples[self.samples.len() - 1]);
        let wall = (last.0 - first.0) as f64;
        for (i, w) in workers.iter().enumerate() {
            let other = ((last.1[i] - first.1[i]) - (last.2[i] - first.2[i])) as f64 / wall * 100.0;
            w.share
                .store(share_of(self.load - other.max(0.0)), Ordering::Relaxed);
        }
    }
}

/// Busy time of `cpuN` in /proc/stat (user, nice, system, irq, softirq,
/// steal; not idle or iowait), in ns.
pub fn cpu_busy_ns(stat: &str, cpu: u32) -> Option<i64> {
    let name = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
    let v: Vec<i64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let ticks = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| v.get(i).copied().unwrap_or(0))
        .sum::<i64>();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    Some(ticks * 1_000_000_000 / hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_time_counts_work_not_idle() {
        let stat =
            "cpu  10 0 10 100 5 0 0 0 0 0\ncpu0 1 2 3 400 5 6 7 8 0 0\ncpu1 9 9 9 9 9 9 9 9 0 0\n";
        // SAFETY: sysconf has no preconditions.
        let hz = 1_000_000_000 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        assert_eq!(cpu_busy_ns(stat, 0), Some((1 + 2 + 3 + 6 + 7 + 8) * hz));
        assert_eq!(cpu_busy_ns(stat, 2), None);
    }

    #[test]
    fn shares_are_millionths() {
        assert_eq!(share_of(50.0), 500_000);
        assert_eq!(share_of(100.0), SHARE_ONE);
        assert_eq!(share_of(-3.0), 0);
    }

    /// A worker at 40 % of this CPU for 1 s uses 40 % of it, within 2
    /// points, by its own CPU time (on an idle or busy host alike).
    #[test]
    fn a_worker_uses_its_share() {
        let w = Arc::new(Worker {
            cpu: 0,
            share: AtomicU32::new(share_of(40.0)),
            cpu_time_ns: AtomicI64::new(0),
        });
        let w2 = Arc::clone(&w);
        std::thread::spawn(move || w2.run(7));
        sleep(Duration::from_millis(200));
        let (t0, c0) = (mono_ns(), w.cpu_time_ns.load(Ordering::Relaxed));
        sleep(Duration::from_secs(1));
        let (t1, c1) = (mono_ns(), w.cpu_time_ns.load(Ordering::Relaxed));
        let pct = (c1 - c0) as f64 / (t1 - t0) as f64 * 100.0;
        assert!((pct - 40.0).abs() < 2.0, "{pct:.2} %");
    }
}
