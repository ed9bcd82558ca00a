//! The overhead benchmarks' alternating rounds: no agent, idle agent, agent
//! with a fault on something else.

use std::time::Duration;

use anyhow::{Context as _, anyhow, ensure};
use faultline_proto::v1 as pb;
use faultline_tests::{Agent, context, our_links, wait_for};
use tokio::runtime::Runtime;

use crate::{
    bpfstats::{Costs, Snapshot, StatsEnabled},
    stats::*,
    sys::*,
};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Config {
    NoAgent,
    AgentIdle,
    AgentFault,
}

impl Config {
    pub const ALL: [Self; 3] = [Self::NoAgent, Self::AgentIdle, Self::AgentFault];

    pub fn index(self) -> usize {
        self as usize
    }
}

/// One measurement, in ns per operation.
#[derive(Clone, Copy)]
pub struct Sample {
    /// CPU time of the measured thread or process: what the operation costs,
    /// whatever else shares the CPU (other builds and tests on this machine).
    pub cpu: f64,
    /// Wall-clock time; above the CPU time when something else ran on the CPU.
    pub wall: f64,
    /// SYNs dropped by a full accept queue: each stalls one connect() for the
    /// 1 s retransmit, which shows in the wall clock but not in the CPU time.
    pub overflows: u64,
    /// Operations the measurement made in all (warm-up included): what the
    /// in-kernel cost of our programs is divided by.
    pub calls: u64,
}

impl Sample {
    /// The measured thread waited or was preempted for a noticeable share.
    pub fn contended(self) -> bool {
        self.wall > self.cpu * CONTENDED_WALL_OVER_CPU
    }
}

/// Per-configuration figures of every round, indexed by `Config::index`.
pub struct Rounds {
    /// CPU ns per operation.
    pub samples: [Vec<f64>; 3],
    pub wall: [Vec<f64>; 3],
    pub contended: usize,
    pub overflows: u64,
    /// Measurements of "nothing attached" configurations that found fl_ links anyway.
    pub dirty: usize,
    /// One extra measurement of (c) per round with kernel.bpf_stats on.
    pub kernel: Vec<KernelRound>,
}

/// The extra (c) measurement of a round, with the kernel's BPF statistics on
/// (which cost every program run two clock reads): not in the ratios.
pub struct KernelRound {
    /// What our programs ran during the measurement.
    pub costs: Costs,
    pub sample: Sample,
}

/// Runs `rounds` rounds measuring every configuration once; even rounds go
/// no agent → idle agent → agent with the fault, odd rounds the reverse, so
/// drift and order effects hit every configuration alike. The agent is
/// started fresh each round: "no agent" means no agent process at all.
/// Right after (c), one more measurement of (c) with kernel.bpf_stats on
/// records our programs' own cost (`Rounds::kernel`).
pub fn alternate_rounds(
    rt: &Runtime,
    rounds: usize,
    arm: impl Fn() -> pb::StartExperimentRequest,
    mut measure: impl FnMut(Config) -> anyhow::Result<Sample>,
) -> anyhow::Result<Rounds> {
    let mut out = Rounds {
        samples: Default::default(),
        wall: Default::default(),
        contended: 0,
        overflows: 0,
        dirty: 0,
        kernel: Vec::new(),
    };
    let mut record =
        |config: Config, agent: Option<&Agent>, out: &mut Rounds| -> anyhow::Result<()> {
            let links = our_links().len();
            match config {
                Config::AgentFault => ensure!(
                    links > 0,
                    "the experiment is running but no fl_ program is attached"
                ),
                _ if links > 0 => out.dirty += 1,
                _ => {}
            }
            let v = measure(config)?;
            out.samples[config.index()].push(v.cpu);
            out.wall[config.index()].push(v.wall);
            out.contended += usize::from(v.contended());
            out.overflows += v.overflows;
            if let (Config::AgentFault, Some(agent)) = (config, agent) {
                let programs = agent.programs();
                let stats = StatsEnabled::new()?;
                let before = Snapshot::take(&programs);
                let sample = measure(config)?;
                let costs = Snapshot::take(&programs).since(&before);
                drop(stats);
                out.kernel.push(KernelRound { costs, sample });
            }
            Ok(())
        };
    for round in 0..rounds {
        let forward = round % 2 == 0;
        if forward {
            record(Config::NoAgent, None, &mut out)?;
        }
        let agent = Agent::start();
        let mut client = rt.block_on(agent.client());
        if forward {
            record(Config::AgentIdle, Some(&agent), &mut out)?;
            rt.block_on(client.start_experiment(arm()))
                .map_err(|s| anyhow!("StartExperiment: {s}"))?;
            record(Config::AgentFault, Some(&agent), &mut out)?;
        } else {
            let exp = rt
                .block_on(client.start_experiment(arm()))
                .map_err(|s| anyhow!("StartExperiment: {s}"))?
                .into_inner()
                .experiment
                .context("StartExperiment returned no experiment")?;
            record(Config::AgentFault, Some(&agent), &mut out)?;
            context(
                rt.block_on(client.stop_experiment(pb::StopExperimentRequest { id: exp.id })),
                "StopExperiment",
            )?;
            wait_for(Duration::from_secs(2), || our_links().is_empty());
            record(Config::AgentIdle, Some(&agent), &mut out)?;
        }
        drop(client);
        drop(agent);
        wait_for(Duration::from_secs(2), || our_links().is_empty());
        if !forward {
            record(Config::NoAgent, None, &mut out)?;
        }
    }
    Ok(out)
}

pub fn print_rounds(labels: [&str; 3], rounds: &Rounds, unit: &str) {
    let base = median(&rounds.samples[0]);
    println!(
        "  {:<46} {:>9} {:>9} {:>9} {:>18}",
        format!("configuration ({unit}, {} rounds)", rounds.samples[0].len()),
        "median",
        "min",
        "max",
        "median vs (a)"
    );
    for c in Config::ALL {
        let v = &rounds.samples[c.index()];
        let s = sorted(v);
        let m = median(v);
        let vs = if c == Config::NoAgent {
            "baseline".to_owned()
        } else {
            format!("{:+.1} ({:+.2} %)", m - base, (m / base - 1.0) * 100.0)
        };
        println!(
            "  {:<46} {m:>9.1} {:>9.1} {:>9.1} {vs:>18}",
            labels[c.index()],
            s[0],
            s[s.len() - 1]
        );
    }
    println!("  per round, in run order:");
    for c in Config::ALL {
        let v = &rounds.samples[c.index()];
        let label = labels[c.index()].split_whitespace().next().unwrap_or("");
        let values: Vec<String> = v.iter().map(|x| format!("{x:.1}")).collect();
        println!("    {label} {}", values.join(" "));
    }
    let wall = rounds.wall.each_ref().map(|v| median(v));
    println!(
        "  wall-clock medians: (a) {:.1}  (b) {:.1}  (c) {:.1}; measurements with wall > {CONTENDED_WALL_OVER_CPU} x \
         CPU time (something else ran on the CPU): {}/{}",
        wall[0],
        wall[1],
        wall[2],
        rounds.contended,
        rounds.wall.iter().map(Vec::len).sum::<usize>()
    );
    if rounds.overflows > 0 {
        println!(
            "  accept-queue overflows: {} (each stalled one connect() 1 s: wall clock skewed, CPU time not)",
            rounds.overflows
        );
    }
    if rounds.dirty > 0 {
        println!(
            "  warning: {} \"nothing attached\" measurements found fl_ programs attached (another agent?)",
            rounds.dirty
        );
    }
}

/// Per-round differences (or ratios) of a configuration against the baseline
/// measured in the same round, which cancels drift over the run.
pub fn paired(rounds: &Rounds, config: Config, op: impl Fn(f64, f64) -> f64) -> Vec<f64> {
    rounds.samples[config.index()]
        .iter()
        .zip(&rounds.samples[0])
        .map(|(x, a)| op(*x, *a))
        .collect()
}

/// Prints the ratio of medians of `config` to (a) and the same-round ratios'
/// median with its 95 % CI; returns the latter as the judged figure, in % of
/// overhead.
pub fn print_ratio(rounds: &Rounds, config: Config) -> Figure<'static> {
    let label = ["(a)/(a)", "(b)/(a)", "(c)/(a)"][config.index()];
    let ratios = paired(rounds, config, |x, a| x / a);
    let ci = median_ci(&ratios);
    let of_medians = median(&rounds.samples[config.index()]) / median(&rounds.samples[0]);
    println!(
        "  {label}: ratio of medians {of_medians:.4} ({:+.2} %); same-round ratios: median {:.4}, 95 % CI of \
         the median {} = {}",
        pct_of(of_medians),
        median(&ratios),
        ci.show(&|x| format!("{x:.4}")),
        ci.map(pct_of).show(&show_pct)
    );
    Figure {
        what: "median of same-round ratios",
        value: pct_of(median(&ratios)),
        ci: ci.map(pct_of),
    }
}

/// Our programs' own cost in the extra (c) measurements: per program ns per
/// run, and in all per benchmarked `op` (the sum of their run-time deltas /
/// the calls the measurement made, warm-up included).
pub fn print_kernel_cost(rounds: &Rounds, op: &str) {
    println!(
        "  in-kernel cost of our programs (kernel.bpf_stats_enabled = 1 during one extra (c) measurement per round, \
         right after (c); not in the figures above):"
    );
    let mut all = Costs::default();
    for k in &rounds.kernel {
        all.merge(&k.costs);
    }
    all.print("    ");
    let per_call: Vec<f64> = rounds
        .kernel
        .iter()
        .map(|k| k.costs.total_ns() as f64 / k.sample.calls as f64)
        .collect();
    let calls: u64 = rounds.kernel.iter().map(|k| k.sample.calls).sum();
    if per_call.is_empty() {
        return;
    }
    println!(
        "    total: {:.1} ns in our programs per {op} (median of {} rounds, 95 % CI {}; {:.2} program runs per {op}: \
         runs of other processes count too)",
        median(&per_call),
        per_call.len(),
        median_ci(&per_call).show(&|x| format!("{x:.1}")),
        all.total_runs() as f64 / calls as f64
    );
    let with_stats: Vec<f64> = rounds
        .kernel
        .iter()
        .zip(&rounds.samples[Config::AgentFault.index()])
        .map(|(k, c)| k.sample.cpu / c)
        .collect();
    println!(
        "    note: with the statistics on, every run also pays for two clock reads, partly inside its measured run \
         time: the ns/run figures are upper bounds and can exceed the overhead seen without them; (c) with the \
         statistics on vs (c) of the same round: median {:+.2} %. The verdict stays on the CPU-time figures.",
        pct_of(median(&with_stats))
    );
}
