//! Memory to resident: memory_pressure vs `stress-ng --vm 1 --vm-bytes X
//! --vm-keep --vm-populate` and a bare MADV_POPULATE_WRITE loop (this
//! machine's limit), X = 1 and 4 GiB, cold and warm.
//!
//! This machine is a VM that returns idle memory to its host (free page
//! reporting), so a first touch after a quiet spell ("cold") costs the host
//! a fault too and is several times slower than a touch of memory just
//! freed ("warm"). Each round measures every tool cold (after a quiet
//! spell), then at once warm.

use std::time::{Duration, Instant};

use anyhow::bail;
use faultline_proto::v1::{self as pb, fault_spec::Kind};
use faultline_tests::{Agent, TestCgroup, bin};
use tokio::runtime::Runtime;

use super::{kill_group, rss_bytes, spawn_in, start_ours, stop_ours, wait_empty, wait_populated};
use crate::stats::{Figure, Target, all_of, median, median_ci, verdict};

const SIZES: [u64; 2] = [1 << 30, 4 << 30];
/// Six rounds: the fewest whose range bounds a median at 95 %.
const ROUNDS: usize = 6;
/// The quiet spell before a cold measurement.
const COLD_WAIT: Duration = Duration::from_secs(5);
/// Resident means this share of the request in the cgroup's RSS.
const RESIDENT_SHARE: f64 = 0.98;
const VS_STRESS_NG: f64 = 1.0;
const VS_BARE: f64 = 1.2;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tool {
    Ours,
    StressNg,
    Bare,
}

impl Tool {
    const ALL: [Self; 3] = [Self::Ours, Self::StressNg, Self::Bare];

    fn label(self) -> &'static str {
        match self {
            Self::Ours => "memory_pressure (ours)",
            Self::StressNg => "stress-ng --vm-keep --vm-populate",
            Self::Bare => "bare MADV_POPULATE_WRITE",
        }
    }
}

/// `faultline-bench --populate BYTES`: the bare loop, one call over the
/// whole mapping, then holds it until killed.
pub fn populate_child(bytes: &str) -> ! {
    let len: usize = bytes.parse().expect("--populate BYTES");
    // SAFETY: a fresh private anonymous mapping, no hint.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    assert!(base != libc::MAP_FAILED, "mmap {len}");
    // SAFETY: the whole mapping made above; MADV_POPULATE_WRITE (23) only faults it in.
    let rc = unsafe { libc::madvise(base, len, 23) };
    assert_eq!(
        rc,
        0,
        "MADV_POPULATE_WRITE: {}",
        std::io::Error::last_os_error()
    );
    loop {
        std::thread::park();
    }
}

pub fn memory_resident(rt: &Runtime) -> anyhow::Result<Vec<String>> {
    println!(
        "  -- memory to resident: {ROUNDS} rounds, tools alternating (ours, stress-ng, bare; then reversed); \
         each tool cold (after {} s quiet) then warm; time from its first process in the cgroup to \
         {:.0} % of X in its processes' RSS (polled every 1 ms)",
        COLD_WAIT.as_secs(),
        RESIDENT_SHARE * 100.0
    );
    let agent = Agent::start();
    let mut client = rt.block_on(agent.client());
    // [size][state: 0 cold, 1 warm][tool] → seconds per round.
    let mut t = vec![
        [
            [Vec::new(), Vec::new(), Vec::new()],
            [Vec::new(), Vec::new(), Vec::new()]
        ];
        SIZES.len()
    ];
    for r in 0..ROUNDS {
        for (si, &size) in SIZES.iter().enumerate() {
            let mut order = Tool::ALL;
            if r % 2 == 1 {
                order.reverse();
            }
            for tool in order {
                // Cold (after a quiet spell), then at once warm.
                for (state, per_tool) in t[si].iter_mut().enumerate() {
                    if state == 0 {
                        std::thread::sleep(COLD_WAIT);
                    }
                    per_tool[tool as usize].push(one(rt, &mut client, tool, size)?);
                }
            }
        }
    }
    drop(agent);
    let mut verdicts = Vec::new();
    for (si, &size) in SIZES.iter().enumerate() {
        for (state, name) in ["cold", "warm"].iter().enumerate() {
            let times = &t[si][state];
            println!("  X = {} GiB, {name}: median (all rounds) in s", size >> 30);
            for tool in Tool::ALL {
                let v = &times[tool as usize];
                let each: Vec<String> = v.iter().map(|s| format!("{s:.3}")).collect();
                println!(
                    "    {:<36} {:>8.3} s  ({:.2} GiB/s)  [{}]",
                    tool.label(),
                    median(v),
                    (size as f64 / (1u64 << 30) as f64) / median(v),
                    each.join(" ")
                );
            }
            let ratio = |other: Tool| -> Vec<f64> {
                times[0]
                    .iter()
                    .zip(&times[other as usize])
                    .map(|(o, x)| o / x)
                    .collect()
            };
            let show = |x: f64| format!("×{x:.3}");
            let fig = |v: &[f64]| Figure {
                what: "median of same-round ratios",
                value: median(v),
                ci: median_ci(v),
            };
            let ng = verdict(
                &fig(&ratio(Tool::StressNg)),
                Target::Below(VS_STRESS_NG),
                &show,
            );
            let bare = verdict(&fig(&ratio(Tool::Bare)), Target::Below(VS_BARE), &show);
            let line = format!(
                "pressure: memory to resident, {} GiB {name}: target: ours no slower than stress-ng and within \
                 {VS_BARE}× of the bare loop: {}",
                size >> 30,
                all_of(&[("vs stress-ng", ng), ("vs bare loop", bare)]).1
            );
            println!("  {line}");
            verdicts.push(line);
        }
    }
    Ok(verdicts)
}

/// Seconds from the tool's first process to `size` resident.
fn one(rt: &Runtime, client: &mut crate::Client, tool: Tool, size: u64) -> anyhow::Result<f64> {
    let cg = TestCgroup::new("bench-mem");
    let want = (size as f64 * RESIDENT_SHARE) as u64;
    let wait = |cg: &TestCgroup| -> anyhow::Result<f64> {
        let t0 = wait_populated(cg, Duration::from_secs(10))?;
        loop {
            if rss_bytes(cg) >= want {
                return Ok(t0.elapsed().as_secs_f64());
            }
            if t0.elapsed() > Duration::from_secs(120) {
                bail!("{} not resident within 120 s", tool.label());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    let secs = match tool {
        Tool::Ours => {
            let kind = Kind::MemoryPressure(pb::MemoryPressure {
                size_bytes: size,
                percent: 0.0,
                ramp_bytes_per_sec: 0,
            });
            let started = Instant::now();
            let id = start_ours(rt, client, kind, &cg)?;
            let s = wait(&cg);
            stop_ours(rt, client, &id)?;
            let _ = started;
            s?
        }
        Tool::StressNg => {
            let args: Vec<String> = [
                "--vm",
                "1",
                "--vm-bytes",
                &size.to_string(),
                "--vm-keep",
                "--vm-populate",
                "--timeout",
                "120s",
            ]
            .iter()
            .map(ToString::to_string)
            .collect();
            let child = spawn_in(&cg, "stress-ng", &args)?;
            let s = wait(&cg);
            kill_group(child);
            s?
        }
        Tool::Bare => {
            let me = bin("faultline-bench");
            let child = spawn_in(
                &cg,
                &me.display().to_string(),
                &["--populate".into(), size.to_string()],
            )?;
            let s = wait(&cg);
            kill_group(child);
            s?
        }
    };
    wait_empty(&cg)?;
    Ok(secs)
}
