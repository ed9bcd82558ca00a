//! The kernel's BPF run-time statistics (`kernel.bpf_stats_enabled`) of the
//! agent's programs (names starting with `fl_`): each program's own time per
//! run, measured by the kernel around every run. While the statistics are on,
//! every run of every BPF program also pays for two clock reads, so they are
//! switched on only around the measurements that report them.

use std::{collections::BTreeMap, collections::HashMap};

use anyhow::Context as _;

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// `kernel.bpf_stats_enabled = 1` while alive; the value found before is
/// written back on drop (also when the measurement failed).
pub struct StatsEnabled {
    previous: String,
}

impl StatsEnabled {
    pub fn new() -> anyhow::Result<Self> {
        let previous = std::fs::read_to_string(SYSCTL)
            .with_context(|| format!("read {SYSCTL}"))?
            .trim()
            .to_owned();
        std::fs::write(SYSCTL, "1").with_context(|| format!("write 1 to {SYSCTL}"))?;
        Ok(Self { previous })
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(SYSCTL, &self.previous) {
            eprintln!(
                "warning: could not restore {SYSCTL} to {}: {e}",
                self.previous
            );
        }
    }
}

/// Cumulative (name, run time ns, run count) of `fl_` programs, by id.
#[derive(Clone, Default)]
pub struct Snapshot(HashMap<u32, (String, u64, u64)>);

impl Snapshot {
    /// The programs among `ids` (e.g. `Agent::programs()`: other agents on
    /// a shared machine load programs of the same names).
    pub fn take(ids: &[u32]) -> Self {
        Self(
            aya::programs::loaded_programs()
                .filter_map(Result::ok)
                .filter(|p| ids.contains(&p.id()))
                .filter_map(|p| {
                    let name = p.name_as_str()?;
                    name.starts_with("fl_").then(|| {
                        (
                            p.id(),
                            (
                                name.to_owned(),
                                u64::try_from(p.run_time().as_nanos()).unwrap_or(u64::MAX),
                                p.run_count(),
                            ),
                        )
                    })
                })
                .collect(),
        )
    }

    /// What each program (by name) ran since `before`; programs loaded since
    /// then count from zero.
    pub fn since(&self, before: &Self) -> Costs {
        let mut costs = Costs::default();
        for (id, (name, ns, runs)) in &self.0 {
            let (ns0, runs0) = before.0.get(id).map_or((0, 0), |(_, t, n)| (*t, *n));
            costs.add(name, ns.saturating_sub(ns0), runs.saturating_sub(runs0));
        }
        costs
    }
}

/// Run time (ns) and runs per program name.
#[derive(Clone, Default)]
pub struct Costs(BTreeMap<String, (u64, u64)>);

impl Costs {
    pub fn add(&mut self, name: &str, ns: u64, runs: u64) {
        let e = self.0.entry(name.to_owned()).or_default();
        e.0 += ns;
        e.1 += runs;
    }

    pub fn merge(&mut self, other: &Self) {
        for (name, (ns, runs)) in &other.0 {
            self.add(name, *ns, *runs);
        }
    }

    /// (ns, runs) of one program name.
    pub fn of(&self, name: &str) -> (u64, u64) {
        self.0.get(name).copied().unwrap_or_default()
    }

    pub fn total_ns(&self) -> u64 {
        self.0.values().map(|(ns, _)| ns).sum()
    }

    pub fn total_runs(&self) -> u64 {
        self.0.values().map(|(_, runs)| runs).sum()
    }

    /// "fl_connect4: 38 ns/run over 120000 runs", one line per program that
    /// ran, with `indent`; the ones that did not run on one more line.
    pub fn print(&self, indent: &str) {
        let mut idle = Vec::new();
        for (name, (ns, runs)) in &self.0 {
            if *runs == 0 {
                idle.push(name.as_str());
            } else {
                println!(
                    "{indent}{name}: {:.0} ns/run over {runs} runs",
                    *ns as f64 / *runs as f64
                );
            }
        }
        if !idle.is_empty() {
            println!("{indent}loaded, did not run: {}", idle.join(", "));
        }
    }
}
