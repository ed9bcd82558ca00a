//! One experiment's impact session: a baseline window just before its
//! faults are armed, then the window during them; PSI totals and the
//! run-queue histogram read at each window's edges.

use std::{
    collections::BTreeSet,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, mpsc},
    time::{Duration, Instant},
};

use super::{
    ImpactView, RunQueueView, Stall, WindowView,
    hist::{self, Buckets},
    psi::{self, Reading},
};
use crate::kernel::{KernelOps, RunQueueSource};

/// How often a session re-reads its target's processes (a cgroup gains
/// and loses them), and so how long a new process may go unmeasured.
pub const REFRESH: Duration = Duration::from_secs(1);

/// The processes a session measures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selector {
    /// Every process in this cgroup2 directory and below it...
    pub cgroup: Option<PathBuf>,
    /// ...or, when given, these processes.
    pub pids: Vec<u32>,
    pub comm: Option<String>,
    pub exclude_pids: Vec<u32>,
    pub exclude_comm: Option<String>,
}

impl Selector {
    /// The processes that match now.
    pub fn members(&self) -> BTreeSet<u32> {
        let mut out = BTreeSet::new();
        if self.pids.is_empty() {
            if let Some(dir) = &self.cgroup {
                cgroup_procs(dir, &mut out, 0);
            }
        } else {
            out.extend(
                self.pids
                    .iter()
                    .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists()),
            );
        }
        out.retain(|p| !self.exclude_pids.contains(p));
        if self.comm.is_some() || self.exclude_comm.is_some() {
            out.retain(|p| {
                let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
                let comm = comm.trim_end_matches('\n');
                self.comm.as_deref().is_none_or(|c| c == comm)
                    && self.exclude_comm.as_deref() != Some(comm)
            });
        }
        out
    }

    /// Where the target's pressure is read: its cgroup, or the one cgroup
    /// all its pids share, else the host.
    fn pressure_source(&self) -> psi::Source {
        if let Some(dir) = &self.cgroup {
            return psi::Source::for_cgroup(Some(dir));
        }
        let shared = crate::cgroup::cgroup2_mount().ok().and_then(|mount| {
            let mut dirs = self.pids.iter().map(|p| psi::cgroup_of(*p, &mount));
            let first = dirs.next()??;
            (first != mount && dirs.all(|d| d.as_ref() == Some(&first))).then_some(first)
        });
        psi::Source::for_cgroup(shared.as_deref())
    }
}

/// A cgroup's processes and its descendants' (depth-limited: a cgroup
/// tree is shallow, and the walk must end).
fn cgroup_procs(dir: &std::path::Path, out: &mut BTreeSet<u32>, depth: u32) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    if depth >= 32 {
        return;
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            cgroup_procs(&e.path(), out, depth + 1);
        }
    }
}

/// The readings at one edge of a window.
#[derive(Clone, Debug)]
struct Mark {
    at: Instant,
    psi: Vec<(&'static str, Reading)>,
    hist: Option<Buckets>,
}

struct Marks {
    base: Mark,
    during: Option<Mark>,
    end: Option<Mark>,
}

struct Runq {
    maps: Arc<dyn RunQueueSource>,
    index: u32,
}

pub struct Session {
    source: psi::Source,
    runq: Option<Runq>,
    unavailable: String,
    marks: Mutex<Marks>,
    /// Dropped to stop the refresher thread.
    stop: Mutex<Option<mpsc::Sender<()>>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("source", &self.source.name)
            .field("runq_index", &self.runq.as_ref().map(|r| r.index))
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Starts measuring: takes the run-queue programs (attaching them if no
    /// session had) and an index, writes the target's processes, and starts
    /// the baseline window. Without run-queue data the session still reads
    /// PSI, and `unavailable` says why. Fast: call it under the engine's
    /// lock, then wait the baseline out without it.
    pub fn open(sel: Selector, kernel: &mut dyn KernelOps) -> Arc<Self> {
        let source = sel.pressure_source();
        let mut unavailable = Vec::new();
        if source.files.is_empty() {
            unavailable.push("no pressure stall information (PSI) on this kernel".to_owned());
        }
        let runq = match kernel.runq_acquire() {
            Ok(maps) => match maps.claim() {
                Some(index) => Some(Runq { maps, index }),
                None => {
                    kernel.runq_release();
                    unavailable.push(format!(
                        "run-queue latency: all {} measuring sessions are in use",
                        faultline_common::runq::MAX_IMPACT
                    ));
                    None
                }
            },
            Err(e) => {
                unavailable.push(format!("run-queue latency unavailable: {e}"));
                None
            }
        };
        let stop = runq.as_ref().and_then(|r| {
            let (tx, rx) = mpsc::channel::<()>();
            if let Err(e) = r.maps.set_targets(r.index, &sel.members()) {
                tracing::warn!(error = %e, "impact: not every target process is measured");
            }
            let (maps, index) = (r.maps.clone(), r.index);
            std::thread::Builder::new()
                .name(format!("impact-{index}"))
                .spawn(move || refresh(&sel, &*maps, index, &rx))
                .map_err(|e| tracing::warn!(error = %e, "impact: no refresher thread"))
                .ok()
                .map(|_| tx)
        });
        let base = mark(&source, runq.as_ref());
        Arc::new(Self {
            source,
            runq,
            unavailable: unavailable.join("; "),
            marks: Mutex::new(Marks {
                base,
                during: None,
                end: None,
            }),
            stop: Mutex::new(stop),
        })
    }

    fn marks(&self) -> MutexGuard<'_, Marks> {
        self.marks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Ends the baseline: the faults start now.
    pub fn begin_during(&self) {
        let m = mark(&self.source, self.runq.as_ref());
        let mut marks = self.marks();
        if marks.during.is_none() {
            marks.during = Some(m);
        }
    }

    /// Ends the session (idempotent): the last readings are kept for the
    /// record, the index is given back and the programs' reference dropped.
    pub fn finish(&self, kernel: &mut dyn KernelOps) {
        let m = mark(&self.source, self.runq.as_ref());
        {
            let mut marks = self.marks();
            if marks.end.is_some() {
                return;
            }
            if marks.during.is_none() {
                marks.during = Some(m.clone());
            }
            marks.end = Some(m);
        }
        drop(
            self.stop
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
        if let Some(r) = &self.runq {
            r.maps.free(r.index);
            kernel.runq_release();
        }
    }

    /// The figures so far: the baseline, and the window since the faults
    /// started (to now, or to the end).
    pub fn view(&self) -> ImpactView {
        let now = || mark(&self.source, self.runq.as_ref());
        let marks = self.marks();
        let (before, during) = match (&marks.during, &marks.end) {
            (None, _) => (window(&marks.base, &now()), None),
            (Some(d), Some(e)) => (window(&marks.base, d), Some(window(d, e))),
            (Some(d), None) => (window(&marks.base, d), Some(window(d, &now()))),
        };
        ImpactView {
            source: self.source.name.clone(),
            before: Some(before),
            during,
            unavailable: self.unavailable.clone(),
        }
    }
}

fn refresh(sel: &Selector, maps: &dyn RunQueueSource, index: u32, stop: &mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(REFRESH) {
        if let Err(e) = maps.set_targets(index, &sel.members()) {
            tracing::debug!(error = %e, "impact: not every target process is measured");
        }
    }
}

fn mark(source: &psi::Source, runq: Option<&Runq>) -> Mark {
    Mark {
        at: Instant::now(),
        psi: source.read(),
        hist: runq.and_then(|r| r.maps.histogram(r.index)),
    }
}

/// What happened between two marks.
fn window(a: &Mark, b: &Mark) -> WindowView {
    let wall = b.at.saturating_duration_since(a.at);
    let wall_us = wall.as_micros().max(1) as f64;
    let share = |later: u64, earlier: u64| {
        (later.saturating_sub(earlier) as f64 / wall_us * 100.0).clamp(0.0, 100.0)
    };
    let pressure = b
        .psi
        .iter()
        .filter_map(|(res, late)| {
            let (_, early) = a.psi.iter().find(|(r, _)| r == res)?;
            Some(Stall {
                resource: res,
                some_avg10: late.some.avg10,
                full_avg10: late.full.avg10,
                some_percent: share(late.some.total_us, early.some.total_us),
                full_percent: share(late.full.total_us, early.full.total_us),
            })
        })
        .collect();
    let run_queue = match (&a.hist, &b.hist) {
        (Some(early), Some(late)) => {
            let d = hist::delta(late, early);
            Some(RunQueueView {
                count: d.iter().sum(),
                p50_us: hist::quantile(&d, 0.5).unwrap_or(0.0),
                p99_us: hist::quantile(&d, 0.99).unwrap_or(0.0),
                buckets: d.to_vec(),
            })
        }
        _ => None,
    };
    WindowView {
        duration: wall,
        pressure,
        run_queue,
    }
}
