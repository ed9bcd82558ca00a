//! CPU accuracy: cpu_pressure vs `stress-ng --cpu 1 --cpu-load L` (its
//! defaults, and `--cpu-load-slice 10`) on one CPU, L = 25, 50, 75 %.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use faultline_proto::v1::{self as pb, fault_spec::Kind};
use faultline_tests::{Agent, TestCgroup};
use nix::unistd::Pid;
use tokio::runtime::Runtime;

use super::{kill_group, spawn_in, start_ours, stop_ours, usage_ns, wait_empty, wait_populated};
use crate::{
    stats::{Ci, Figure, Target, Verdict, all_of, bootstrap_ci, verdict},
    sys::pin,
};

const LOADS: [f64; 3] = [25.0, 50.0, 75.0];
const RUNS: usize = 5;
const SAMPLE: Duration = Duration::from_millis(250);
/// Samples per run (8 s).
const SAMPLES: usize = 32;
/// The MAE is taken over the samples after this many (2 s): settling is
/// judged on its own.
const SETTLE_SAMPLES: usize = 8;
const SETTLE_BAND: f64 = 3.0;
const SETTLE_TARGET_S: f64 = 1.0;
/// Our MAE over stress-ng's best setting's.
const MAE_RATIO_TARGET: f64 = 1.0 / 3.0;
/// The loaded CPU; the bench itself stays on CPU 0.
const CPU: u32 = 1;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tool {
    Ours,
    NgDefault,
    NgSlice10,
}

impl Tool {
    const ALL: [Self; 3] = [Self::Ours, Self::NgDefault, Self::NgSlice10];

    fn label(self) -> &'static str {
        match self {
            Self::Ours => "cpu_pressure (ours)",
            Self::NgDefault => "stress-ng --cpu-load (defaults)",
            Self::NgSlice10 => "stress-ng --cpu-load-slice 10",
        }
    }
}

/// One run: the load of each 250 ms sample, in percent of the CPU.
struct Run {
    samples: Vec<f64>,
}

impl Run {
    fn errors(&self, load: f64) -> Vec<f64> {
        self.samples[SETTLE_SAMPLES..]
            .iter()
            .map(|s| (s - load).abs())
            .collect()
    }

    /// Start of the first sample from which on every sample is within the band.
    fn settle_s(&self, load: f64) -> f64 {
        let last_bad = self
            .samples
            .iter()
            .rposition(|s| (s - load).abs() > SETTLE_BAND);
        last_bad.map_or(0.0, |i| {
            if i + 1 == self.samples.len() {
                f64::INFINITY
            } else {
                (i + 1) as f64 * SAMPLE.as_secs_f64()
            }
        })
    }
}

pub fn cpu_accuracy(rt: &Runtime) -> anyhow::Result<Vec<String>> {
    println!(
        "  -- CPU accuracy: L % of CPU {CPU}, {RUNS} alternating runs per L (ours, ng defaults, ng slice 10; then reversed), \
         {} s each; load of each 250 ms sample from the cgroup's usage_usec; MAE over the samples after {} s; \
         settled = start of the sample from which on all are within ±{SETTLE_BAND} points",
        SAMPLES as f64 * SAMPLE.as_secs_f64(),
        SETTLE_SAMPLES as f64 * SAMPLE.as_secs_f64()
    );
    pin(Pid::from_raw(0), 0).context("pin the bench to CPU 0")?;
    let agent = Agent::start();
    let mut client = rt.block_on(agent.client());
    let mut verdicts = Vec::new();
    for load in LOADS {
        let mut runs: [Vec<Run>; 3] = Default::default();
        for r in 0..RUNS {
            let mut order = Tool::ALL;
            if r % 2 == 1 {
                order.reverse();
            }
            for tool in order {
                let cg = TestCgroup::new("bench-cpu");
                let samples = match tool {
                    Tool::Ours => {
                        let kind = Kind::CpuPressure(pb::CpuPressure {
                            load_percent: load,
                            cpus: 0,
                            cpu_list: vec![CPU],
                            host: false,
                            top_up: false,
                        });
                        let id = start_ours(rt, &mut client, kind, &cg)?;
                        let s = sample(&cg);
                        stop_ours(rt, &mut client, &id)?;
                        s?
                    }
                    Tool::NgDefault | Tool::NgSlice10 => {
                        let mut args: Vec<String> = [
                            "--cpu",
                            "1",
                            "--cpu-load",
                            &format!("{load}"),
                            "--taskset",
                            &CPU.to_string(),
                            "--timeout",
                            "60s",
                        ]
                        .iter()
                        .map(ToString::to_string)
                        .collect();
                        if tool == Tool::NgSlice10 {
                            args.extend(["--cpu-load-slice".into(), "10".into()]);
                        }
                        let child = spawn_in(&cg, "stress-ng", &args)?;
                        let s = sample(&cg);
                        kill_group(child);
                        s?
                    }
                };
                wait_empty(&cg)?;
                runs[tool as usize].push(Run { samples });
            }
        }
        verdicts.extend(judge(load, &runs));
    }
    drop(agent);
    Ok(verdicts)
}

/// The load of the cgroup in each 250 ms sample from its first process on.
fn sample(cg: &TestCgroup) -> anyhow::Result<Vec<f64>> {
    let t0 = wait_populated(cg, Duration::from_secs(10))?;
    let mut last = (t0, usage_ns(cg)?);
    let mut out = Vec::with_capacity(SAMPLES);
    for k in 1..=SAMPLES {
        let due = t0 + SAMPLE * k as u32;
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let now = (Instant::now(), usage_ns(cg)?);
        let wall = now.0.duration_since(last.0).as_nanos() as f64;
        out.push((now.1 - last.1) as f64 / wall * 100.0);
        last = now;
    }
    Ok(out)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn judge(load: f64, runs: &[Vec<Run>; 3]) -> Vec<String> {
    let pooled: Vec<Vec<f64>> = runs
        .iter()
        .map(|rs| rs.iter().flat_map(|r| r.errors(load)).collect())
        .collect();
    println!("  L = {load} %:");
    println!(
        "    {:<34} {:>10} {:>26} {:>12} {:>10}",
        "", "MAE", "MAE of each run", "settle med", "settle max"
    );
    for tool in Tool::ALL {
        let rs = &runs[tool as usize];
        let settle: Vec<f64> = rs.iter().map(|r| r.settle_s(load)).collect();
        let per_run: Vec<String> = rs
            .iter()
            .map(|r| format!("{:.2}", mean(&r.errors(load))))
            .collect();
        let show_s = |s: f64| {
            if s.is_finite() {
                format!("{s:.2} s")
            } else {
                "never".to_owned()
            }
        };
        let mut sorted = settle.clone();
        sorted.sort_by(f64::total_cmp);
        println!(
            "    {:<34} {:>10.2} {:>26} {:>12} {:>10}",
            tool.label(),
            mean(&pooled[tool as usize]),
            per_run.join(" "),
            show_s(sorted[sorted.len() / 2]),
            show_s(*sorted.last().unwrap_or(&f64::INFINITY)),
        );
    }
    let best = if mean(&pooled[1]) <= mean(&pooled[2]) {
        1
    } else {
        2
    };
    let (ours, ng) = (&pooled[0], &pooled[best]);
    let ratio = mean(ours) / mean(ng);
    let ci: Ci = bootstrap_ci(&[ours, ng], |g| mean(&g[0]) / mean(&g[1]));
    let show = |x: f64| format!("×{x:.3}");
    let fig = Figure {
        what: "MAE ratio",
        value: ratio,
        ci,
    };
    let mae = verdict(&fig, Target::Below(MAE_RATIO_TARGET), &show);
    let settle_max = runs[0].iter().map(|r| r.settle_s(load)).fold(0.0, f64::max);
    let settle = if settle_max <= SETTLE_TARGET_S {
        (
            Verdict::Pass,
            format!("PASS (slowest of {RUNS} runs: {settle_max:.2} s)"),
        )
    } else {
        (
            Verdict::Fail,
            format!("FAIL (slowest of {RUNS} runs: {settle_max:.2} s)"),
        )
    };
    let line = format!(
        "pressure: CPU accuracy at {load} %: target: our MAE ≤ 1/3 of {}'s ({:.2} vs {:.2} points; \
         95 % CI by bootstrap of the 250 ms samples, taken as independent) and settled within ±{SETTLE_BAND} \
         points within {SETTLE_TARGET_S} s in every run: {}",
        Tool::ALL[best].label(),
        mean(ours),
        mean(ng),
        all_of(&[("MAE", mae), ("settling", settle)]).1
    );
    println!("  {line}");
    vec![line]
}
