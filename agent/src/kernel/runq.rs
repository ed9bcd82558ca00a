//! The run-queue latency programs (`sched_wakeup`, `sched_wakeup_new`,
//! `sched_switch`; `ebpf/src/runq.rs`): loaded on first need, attached
//! while any impact session holds them (`sched_switch` runs on every
//! context switch), and their maps, which sessions use from their own
//! threads without the engine's lock.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, MutexGuard},
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues},
    programs::RawTracePoint,
};
use faultline_common::runq::{
    MAX_IMPACT, RUNQ_BUCKETS, RUNQ_FILTER_WORDS, RunqConfig, RunqHist, RunqStart,
};

use super::{
    Kernel,
    catalogue::{program, take},
    ops::RunQueueSource,
    verifier::{brief, chain},
};
use crate::btf;

/// Each program and its tracepoint.
pub(super) const RUNQ_PROGRAMS: [(&str, &str); 3] = [
    ("fl_rq_wakeup", "sched_wakeup"),
    ("fl_rq_wakeup_new", "sched_wakeup_new"),
    ("fl_rq_switch", "sched_switch"),
];

/// The mechanism's name in refusals and `Impact.unavailable`.
pub const RUNQ_MECHANISM: &str = "raw_tracepoint sched_switch";

/// The programs' state in the agent.
#[derive(Default)]
pub(super) struct RunQueue {
    /// None until first needed; then the maps, or why there are none.
    loaded: Option<Result<Arc<RunqMaps>, String>>,
    users: usize,
    links: Vec<Box<dyn std::any::Any + Send>>,
}

impl Kernel {
    /// Takes a reference on the run-queue programs, loading them (once) and
    /// attaching them on first use. The error says why they cannot run here.
    pub fn runq_acquire(&mut self) -> Result<Arc<RunqMaps>, String> {
        if self.runq.loaded.is_none() {
            self.runq.loaded = Some(load(&mut self.ebpf));
        }
        let maps = match &self.runq.loaded {
            Some(Ok(m)) => m.clone(),
            Some(Err(e)) => return Err(e.clone()),
            None => unreachable!("set above"),
        };
        if self.runq.users == 0 {
            let mut links: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
            for (name, tp) in RUNQ_PROGRAMS {
                // On error the links made so far are dropped: detached.
                let mut attach = || -> Result<_, aya::programs::ProgramError> {
                    let p = program::<RawTracePoint>(&mut self.ebpf, name)?;
                    let id = p.attach(tp)?;
                    p.take_link(id)
                };
                let link = attach()
                    .map_err(|e| format!("attaching {name} to {tp} failed: {}", chain(&e)))?;
                links.push(Box::new(link));
            }
            self.runq.links = links;
        }
        self.runq.users += 1;
        Ok(maps)
    }

    /// Drops a reference; the last one detaches the programs.
    pub fn runq_release(&mut self) {
        self.runq.users = self.runq.users.saturating_sub(1);
        if self.runq.users == 0 {
            self.runq.links.clear();
        }
    }

    pub fn runq_attached(&self) -> bool {
        !self.runq.links.is_empty()
    }
}

/// Loads the three programs and writes the task offsets they read.
fn load(ebpf: &mut Ebpf) -> Result<Arc<RunqMaps>, String> {
    let cfg = btf::Btf::from_sys_fs()
        .and_then(|b| b.runq_config())
        .map_err(|e| e.to_string())?;
    for (name, _) in RUNQ_PROGRAMS {
        program::<RawTracePoint>(ebpf, name)
            .and_then(RawTracePoint::load)
            .map_err(|e| {
                let full = chain(&e);
                tracing::debug!(program = name, error = %full, "program refused");
                format!("the kernel refused {name}: {}", brief(&full))
            })?;
    }
    let e = |e: super::KernelError| e.to_string();
    let mut config: Array<MapData, RunqConfig> = take(ebpf, "FL_RQ_CONFIG").map_err(e)?;
    config
        .set(0, cfg, 0)
        .map_err(|err| format!("FL_RQ_CONFIG: {err}"))?;
    let maps = RunqMaps {
        inner: Mutex::new(Inner {
            targets: take(ebpf, "FL_RQ_TARGETS").map_err(e)?,
            filter: take(ebpf, "FL_RQ_FILTER").map_err(e)?,
            words: vec![0; RUNQ_FILTER_WORDS as usize],
            start: take(ebpf, "FL_RQ_START").map_err(e)?,
            used: 0,
            members: std::array::from_fn(|_| BTreeSet::new()),
        }),
        hist: Mutex::new(take(ebpf, "FL_RQ_HIST").map_err(e)?),
        ncpus: aya::util::nr_cpus().map_err(|(_, err)| err.to_string())?,
        _config: config,
    };
    Ok(Arc::new(maps))
}

/// The programs' maps: which processes each session measures, and its
/// histogram.
pub struct RunqMaps {
    inner: Mutex<Inner>,
    /// Apart from `inner`: a view never waits for a target refresh.
    hist: Mutex<PerCpuArray<MapData, RunqHist>>,
    ncpus: usize,
    /// Held so the offsets stay (the programs hold the map anyway).
    _config: Array<MapData, RunqConfig>,
}

struct Inner {
    targets: HashMap<MapData, u32, u32>,
    /// The programs' tgid prefilter, and what it holds now.
    filter: Array<MapData, u64>,
    words: Vec<u64>,
    /// An LRU hash in the kernel (aya's `HashMap` type covers both).
    start: HashMap<MapData, u32, RunqStart>,
    /// Bit i: session index i is in use.
    used: u32,
    /// The tgids each session measures, as last written.
    members: [BTreeSet<u32>; MAX_IMPACT as usize],
}

impl RunqMaps {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn hist(&self) -> MutexGuard<'_, PerCpuArray<MapData, RunqHist>> {
        self.hist
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Inner {
    /// Rewrites the words of the tgid prefilter that changed, from every
    /// session's members. Set bits are written before the targets are read
    /// by anyone who needs them; a stale bit only costs a hash lookup.
    fn refresh_filter(&mut self) {
        let mut words = vec![0u64; RUNQ_FILTER_WORDS as usize];
        for tgid in self.members.iter().flatten() {
            words[((tgid >> 6) % RUNQ_FILTER_WORDS) as usize] |= 1 << (tgid & 63);
        }
        for (i, (new, old)) in words.iter().zip(&self.words).enumerate() {
            if new != old
                && let Err(e) = self.filter.set(i as u32, new, 0)
            {
                tracing::warn!(error = %e, "updating the run-queue prefilter failed");
            }
        }
        self.words = words;
    }
}

impl RunQueueSource for RunqMaps {
    fn claim(&self) -> Option<u32> {
        let mut inner = self.inner();
        let index = (0..MAX_IMPACT).find(|i| inner.used & (1 << i) == 0)?;
        let zeros = PerCpuValues::try_from(vec![RunqHist::default(); self.ncpus]).ok()?;
        self.hist().set(index, zeros, 0).ok()?;
        inner.used |= 1 << index;
        Some(index)
    }

    fn set_targets(&self, index: u32, tgids: &BTreeSet<u32>) -> Result<(), String> {
        let mut inner = self.inner();
        let bit = 1u32 << index;
        let old = std::mem::take(&mut inner.members[index as usize]);
        for gone in old.difference(tgids) {
            let mask = inner.targets.get(gone, 0).unwrap_or(0) & !bit;
            let _ = if mask == 0 {
                inner.targets.remove(gone)
            } else {
                inner.targets.insert(gone, mask, 0)
            };
        }
        let mut written = BTreeSet::new();
        let mut full = None;
        for new in tgids.difference(&old).chain(old.intersection(tgids)) {
            let mask = inner.targets.get(new, 0).unwrap_or(0);
            if mask & bit == 0
                && let Err(e) = inner.targets.insert(new, mask | bit, 0)
            {
                full = Some(format!("FL_RQ_TARGETS: {e}"));
                continue;
            }
            written.insert(*new);
        }
        inner.members[index as usize] = written;
        inner.refresh_filter();
        full.map_or(Ok(()), Err)
    }

    fn histogram(&self, index: u32) -> Option<[u64; RUNQ_BUCKETS]> {
        let per_cpu = self.hist().get(&index, 0).ok()?;
        let mut sum = [0u64; RUNQ_BUCKETS];
        for h in per_cpu.iter() {
            for (s, b) in sum.iter_mut().zip(h.buckets) {
                *s += b;
            }
        }
        Some(sum)
    }

    fn free(&self, index: u32) {
        let _ = self.set_targets(index, &BTreeSet::new());
        let mut inner = self.inner();
        let bit = 1u32 << index;
        // Threads of this session still waiting: a later session given the
        // index must not count them.
        let waiting: Vec<(u32, RunqStart)> = inner
            .start
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, s)| s.mask & bit != 0)
            .collect();
        for (tid, mut s) in waiting {
            s.mask &= !bit;
            let _ = if s.mask == 0 {
                inner.start.remove(&tid)
            } else {
                inner.start.insert(tid, s, 0)
            };
        }
        inner.used &= !bit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On the running kernel (as root): the verifier takes the programs,
    /// they count this process's wakeups, and only while attached.
    #[test]
    fn counts_the_targets_wakeups_while_attached() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let mut k = Kernel::load(64).expect("object loads");
        let maps = k.runq_acquire().expect("the programs load and attach");
        let me = maps.claim().expect("an index");
        let other = maps.claim().expect("a second index");
        assert_ne!(me, other);
        maps.set_targets(me, &BTreeSet::from([std::process::id()]))
            .unwrap();
        // A tgid no process has.
        maps.set_targets(other, &BTreeSet::from([u32::MAX - 1]))
            .unwrap();
        let wake = || {
            for _ in 0..200 {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        };
        wake();
        let count = |i| maps.histogram(i).unwrap().iter().sum::<u64>();
        assert!(count(me) >= 100, "{:?}", maps.histogram(me));
        assert_eq!(count(other), 0);
        k.runq_release();
        assert!(!k.runq_attached());
        let before = count(me);
        wake();
        assert_eq!(count(me), before, "counted while detached");
        maps.free(me);
        maps.free(other);
        assert_eq!(maps.claim(), Some(0));
    }
}
