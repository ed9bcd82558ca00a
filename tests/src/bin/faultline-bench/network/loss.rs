//! Network part 1: loss accuracy of ours vs iptables.

use std::{
    io::BufRead as _,
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, ensure};
use faultline_tests::{ProbeResult, TestNetns, bin};
use tokio::runtime::Runtime;

use super::{IptablesDrop, counters, during_experiment, ours_on};
use crate::{Client, stats::*, sys::*};

/// Configured loss probabilities of the accuracy comparison.
const LOSS_PROBABILITIES: [f64; 3] = [0.01, 0.10, 0.50];
/// Numbered datagrams per flow: the binomial SD of the achieved loss is
/// 0.04 / 0.13 / 0.22 points at 1 / 10 / 50 %.
const LOSS_DATAGRAMS: u32 = 50_000;
/// The receiver reports once this long passes without a datagram.
const LOSS_QUIET: Duration = Duration::from_millis(500);
/// Ports inside the bench's own namespace (nothing else listens there).
const LOSS_PORT: u16 = 5001;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Ours,
    Iptables,
}

impl Mechanism {
    pub fn label(self) -> &'static str {
        match self {
            Self::Ours => "ours",
            Self::Iptables => "iptables",
        }
    }
}

/// What one flow of numbered datagrams through the veth pair delivered.
pub struct UdpFlow {
    sent: u64,
    /// sendto() errors the sender saw (EPERM for an OUTPUT-chain drop).
    send_errors: u64,
    /// Distinct intact datagrams that arrived.
    received: u64,
    repeats: u64,
    corrupted: u64,
}

impl UdpFlow {
    pub fn loss(&self) -> f64 {
        (self.sent - self.received) as f64 / self.sent as f64
    }
}

/// `fl-probe udp-send` in the root namespace → `fl-probe udp-count` in the
/// test namespace.
pub fn udp_flow(ns: &TestNetns, count: u32) -> anyhow::Result<UdpFlow> {
    let dst = SocketAddr::from((ns.peer_ips[0], LOSS_PORT)).to_string();
    let probe = bin("fl-probe");
    let mut rx = KillOnDrop(
        ns.command(&probe)
            .args(["udp-count", &dst, &LOSS_QUIET.as_millis().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .context("spawn fl-probe udp-count in the test namespace")?,
    );
    let mut rx_out = wait_listening(&mut rx.0).context("fl-probe udp-count")?;
    let out = Command::new(&probe)
        .args(["udp-send", &dst, &count.to_string()])
        .stdin(Stdio::null())
        .output()
        .context("run fl-probe udp-send")?;
    ensure!(
        out.status.success(),
        "fl-probe udp-send failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: ProbeResult = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "fl-probe udp-send printed {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    let status = wait_timeout(&mut rx.0, Duration::from_secs(10))
        .context("fl-probe udp-count (did no datagram arrive?)")?;
    ensure!(status.success(), "fl-probe udp-count failed ({status})");
    let mut line = String::new();
    rx_out.read_line(&mut line)?;
    let got: ProbeResult = serde_json::from_str(&line)
        .with_context(|| format!("fl-probe udp-count printed {line:?}"))?;
    Ok(UdpFlow {
        sent: u64::from(count),
        send_errors: sent.errno("send"),
        received: got.ok,
        repeats: got.errno("repeats"),
        corrupted: got.errno("corrupted"),
    })
}

pub struct LossRow {
    p: f64,
    mechanism: Mechanism,
    flow: UdpFlow,
    /// Drops the agent counted (ours only).
    injected: Option<u64>,
}

impl LossRow {
    pub fn error(&self) -> f64 {
        self.flow.loss() - self.p
    }

    /// Binomial standard deviation of the achieved loss fraction.
    pub fn sd(&self) -> f64 {
        (self.p * (1.0 - self.p) / self.flow.sent as f64).sqrt()
    }
}

/// How much larger our mean |achieved - configured| may be than iptables':
/// about twice the mean error binomial noise alone gives at these sizes
/// (≈ 0.11 pp), and above the difference's 95 % CI half-width (≈ 0.15 pp).
const LOSS_MARGIN: f64 = 0.0025;

pub fn loss_accuracy(
    rt: &Runtime,
    client: &mut Client,
    ns: &TestNetns,
) -> anyhow::Result<Vec<String>> {
    println!();
    println!(
        "  -- 1. loss accuracy: {LOSS_DATAGRAMS} numbered UDP datagrams per flow (fl-probe udp-send, paced) to {}:{LOSS_PORT},",
        ns.peer_ips[0]
    );
    println!(
        "     counted at the receiver (fl-probe udp-count, 64 MiB receive buffer); loss = 1 - distinct received / sent"
    );
    let control = udp_flow(ns, LOSS_DATAGRAMS)?;
    println!(
        "  control flow, no fault: {} of {} received, {} send errors, {} repeats, {} corrupted{}",
        control.received,
        control.sent,
        control.send_errors,
        control.repeats,
        control.corrupted,
        if control.received == control.sent {
            ""
        } else {
            "  <- WARNING: loss without a fault; the figures below include it"
        }
    );
    let mut rows = Vec::new();
    for (i, &p) in LOSS_PROBABILITIES.iter().enumerate() {
        let order = if i % 2 == 0 {
            [Mechanism::Ours, Mechanism::Iptables]
        } else {
            [Mechanism::Iptables, Mechanism::Ours]
        };
        for mechanism in order {
            let (flow, injected) = match mechanism {
                Mechanism::Ours => during_experiment(
                    rt,
                    client,
                    ours_on(ns, "udp", LOSS_PORT, p),
                    |client, id| {
                        let flow = udp_flow(ns, LOSS_DATAGRAMS)?;
                        let (_, injected) = counters(rt, client, id)?;
                        Ok((flow, Some(injected)))
                    },
                )?,
                Mechanism::Iptables => {
                    let _rule = IptablesDrop::insert(&ns.host_if, "udp", LOSS_PORT, p)?;
                    (udp_flow(ns, LOSS_DATAGRAMS)?, None)
                }
            };
            rows.push(LossRow {
                p,
                mechanism,
                flow,
                injected,
            });
        }
    }

    println!(
        "  {:>10} {:<9} {:>9} {:>7} {:>9} {:>8} {:>9} {:>11} {:>13}",
        "configured",
        "mechanism",
        "received",
        "lost",
        "achieved",
        "|error|",
        "error/SD",
        "send errors",
        "agent counted"
    );
    for r in &rows {
        println!(
            "  {:>9.1}% {:<9} {:>9} {:>7} {:>8.3}% {:>6.3}pp {:>+9.2} {:>11} {:>13}{}",
            r.p * 100.0,
            r.mechanism.label(),
            r.flow.received,
            r.flow.sent - r.flow.received,
            r.flow.loss() * 100.0,
            r.error().abs() * 100.0,
            r.error() / r.sd(),
            r.flow.send_errors,
            r.injected.map_or("-".to_owned(), |n| n.to_string()),
            if r.flow.repeats + r.flow.corrupted > 0 {
                format!(
                    "  ({} repeats, {} corrupted)",
                    r.flow.repeats, r.flow.corrupted
                )
            } else {
                String::new()
            }
        );
    }
    let mean_abs = |m: Mechanism| {
        let v: Vec<f64> = rows
            .iter()
            .filter(|r| r.mechanism == m)
            .map(|r| r.error().abs())
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let (ours, theirs) = (mean_abs(Mechanism::Ours), mean_abs(Mechanism::Iptables));
    // E|X - p| of a binomial fraction ≈ SD·sqrt(2/π): what chance alone gives.
    let chance = LOSS_PROBABILITIES
        .iter()
        .map(|p| {
            (p * (1.0 - p) / f64::from(LOSS_DATAGRAMS)).sqrt() * (2.0 / std::f64::consts::PI).sqrt()
        })
        .sum::<f64>()
        / LOSS_PROBABILITIES.len() as f64;
    // |X| of a normal X with SD σ varies with SD σ·sqrt(1 - 2/π); the
    // difference of the two mechanisms' means of k such values, with
    // sqrt(2·Σσ²·(1 - 2/π)) / k.
    let diff_sd = (2.0
        * (1.0 - 2.0 / std::f64::consts::PI)
        * LOSS_PROBABILITIES
            .iter()
            .map(|p| p * (1.0 - p) / f64::from(LOSS_DATAGRAMS))
            .sum::<f64>())
    .sqrt()
        / LOSS_PROBABILITIES.len() as f64;
    let resolved = (ours - theirs).abs() > 2.0 * diff_sd;
    let beyond = rows
        .iter()
        .filter(|r| (r.error() / r.sd()).abs() > 3.29)
        .count();
    println!(
        "  mean |achieved - configured| over P = 1, 10, 50 %: ours {:.3} pp, iptables {:.3} pp; binomial noise alone \
         gives ≈ {:.3} pp; flows beyond ±3.29 SD (99.9 %): {beyond}/{}",
        ours * 100.0,
        theirs * 100.0,
        chance * 100.0,
        rows.len()
    );
    let sent_vs_errors = rows
        .iter()
        .filter(|r| r.mechanism == Mechanism::Iptables)
        .all(|r| r.flow.send_errors == r.flow.sent - r.flow.received);
    let counted_vs_lost = rows
        .iter()
        .filter_map(|r| r.injected.map(|n| n == r.flow.sent - r.flow.received))
        .all(|same| same);
    println!(
        "  iptables: every lost datagram was reported to the sender (EPERM): {}; ours: silent for the sender, and the \
         agent's drop counter equals the datagrams lost: {}",
        if sent_vs_errors { "yes" } else { "NO" },
        if counted_vs_lost { "yes" } else { "NO" }
    );
    // Both mechanisms draw each packet's fate independently, so both errors
    // are binomial noise of the same size: which one is smaller in one run
    // is a coin flip, and "no worse" cannot be shown with a zero margin.
    // Judged by the one rule: the difference of the mean |error|s, with its
    // 95 % CI from the normal approximation (± 1.96 SD of the difference),
    // must lie below LOSS_MARGIN. Separately, a flow of ours outside its own
    // 99.9 % binomial interval is evidence of a biased loss: FAIL.
    let ours_beyond = rows
        .iter()
        .filter(|r| r.mechanism == Mechanism::Ours && (r.error() / r.sd()).abs() > 3.29)
        .count();
    let diff = Figure {
        what: "difference ours - iptables",
        value: (ours - theirs) * 100.0,
        ci: Ci {
            lo: (ours - theirs - 1.96 * diff_sd) * 100.0,
            hi: (ours - theirs + 1.96 * diff_sd) * 100.0,
        },
    };
    let (_, mut text) = verdict(&diff, Target::Below(LOSS_MARGIN * 100.0), &|x| {
        format!("{x:+.3} pp")
    });
    if ours_beyond > 0 {
        text = format!(
            "FAIL ({ours_beyond} flow(s) of ours outside their 99.9 % binomial interval; the mean |error| alone: {text})"
        );
    }
    let target = format!(
        "network: loss accuracy: our mean |error| at most {:.2} pp above iptables', every flow of ours inside its \
         99.9 % interval (P = 1, 10, 50 %, {LOSS_DATAGRAMS} datagrams each): {text} (ours {:.3} pp, iptables \
         {:.3} pp; chance alone ≈ {:.3} pp; 1 SD of the difference ≈ {:.3} pp: {}; our flows outside their \
         interval: {ours_beyond}/{})",
        LOSS_MARGIN * 100.0,
        ours * 100.0,
        theirs * 100.0,
        chance * 100.0,
        diff_sd * 100.0,
        match (resolved, ours < theirs) {
            (true, true) => "ours better beyond 2 SD",
            (true, false) => "ours WORSE beyond 2 SD",
            (false, _) => "within 2 SD: the mechanisms are indistinguishable at this sample size",
        },
        LOSS_PROBABILITIES.len()
    );
    println!("  {target}");
    Ok(vec![target])
}
