//! Idle agent: RSS and CPU over 60 s with no experiment, after the start-up
//! prober has loaded every program group.

use std::time::Duration;

use anyhow::Context as _;
use faultline_tests::Agent;

use crate::stats::{Ci, Figure, Target, all_of, verdict};

const WINDOW: Duration = Duration::from_secs(60);
const RSS_TARGET_MIB: f64 = 25.0;
const CPU_TARGET_PERCENT: f64 = 0.1;

fn status_kib(pid: u32, field: &str) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).context("read status")?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// CPU time of every thread of `pid` in ns (schedstat), and in clock ticks (stat).
fn cpu_of(pid: u32) -> anyhow::Result<(u64, u64)> {
    let mut ns = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .context("tasks")?
        .flatten()
    {
        let s = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        ns += s
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("stat")?;
    let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
    let f: Vec<u64> = after
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the comm.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Ok((ns, ticks))
}

pub fn idle_agent() -> anyhow::Result<Vec<String>> {
    println!(
        "  -- idle agent: started fresh (default probing), measured over {} s once every program group is probed",
        WINDOW.as_secs()
    );
    let agent = Agent::start();
    let pid = agent.pid();
    let rss0 = status_kib(pid, "VmRSS:")?;
    let (ns0, ticks0) = cpu_of(pid)?;
    std::thread::sleep(WINDOW);
    let rss1 = status_kib(pid, "VmRSS:")?;
    let hwm = status_kib(pid, "VmHWM:")?;
    let anon = status_kib(pid, "RssAnon:")?;
    let file = status_kib(pid, "RssFile:")?;
    let (ns1, ticks1) = cpu_of(pid)?;
    drop(agent);
    let rss_mib = rss0.max(rss1) / 1024.0;
    let cpu_pct = (ns1 - ns0) as f64 / WINDOW.as_nanos() as f64 * 100.0;
    println!(
        "    RSS {:.1} MiB after probing, {:.1} MiB {} s later (anon {:.1}, file {:.1}; peak {:.1} MiB); \
         CPU {} ticks, {:.3} ms ({cpu_pct:.4} %) in {} s",
        rss0 / 1024.0,
        rss1 / 1024.0,
        WINDOW.as_secs(),
        anon / 1024.0,
        file / 1024.0,
        hwm / 1024.0,
        ticks1 - ticks0,
        (ns1 - ns0) as f64 / 1e6,
        WINDOW.as_secs()
    );
    // One exact reading each: the interval is the reading itself.
    let exact = |what, v: f64| Figure {
        what,
        value: v,
        ci: Ci { lo: v, hi: v },
    };
    let rss = verdict(
        &exact("RSS", rss_mib),
        Target::Below(RSS_TARGET_MIB),
        &|x| format!("{x:.1} MiB"),
    );
    let cpu = verdict(
        &exact("CPU", cpu_pct),
        Target::Below(CPU_TARGET_PERCENT),
        &|x| format!("{x:.4} %"),
    );
    let line = format!(
        "pressure: idle agent: target: RSS < {RSS_TARGET_MIB} MiB and CPU < {CPU_TARGET_PERCENT} % over {} s: {}",
        WINDOW.as_secs(),
        all_of(&[("RSS", rss), ("CPU", cpu)]).1
    );
    println!("  {line}");
    Ok(vec![line])
}
