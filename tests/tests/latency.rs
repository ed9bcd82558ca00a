//! `latency` end to end: an fq qdisc the agent installs, earliest-departure
//! times set by the TCX egress program, and the round-trip times a UDP
//! ping-pong through a veth pair really saw. Needs TCX and fq (the Debian
//! 6.12 kernel of the VM matrix); elsewhere it skips with the agent's reason.
#![expect(
    unused_crate_dependencies,
    reason = "each integration test is its own crate; the package's dependencies serve them all"
)]

use std::{net::SocketAddr, process::Command, time::Duration};

use faultline_proto::v1 as pb;
use faultline_tests::*;

const PINGS: u32 = 200;

fn latency(delay_ms: f64, jitter_ms: f64) -> pb::FaultSpec {
    pb::FaultSpec {
        kind: Some(pb::fault_spec::Kind::Latency(pb::Latency {
            delay_ms,
            jitter_ms,
            r#match: Some(pb::PacketMatch {
                protocol: "udp".into(),
                ..Default::default()
            }),
        })),
    }
}

/// RTTs in ms, sorted, of PINGS ping-pongs from the host to `to`.
fn rtts(to: SocketAddr) -> Vec<f64> {
    let out = Command::new(bin("fl-probe"))
        .args(["udp-rtt", &to.to_string(), &PINGS.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let r: ProbeResult = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        r.ok,
        u64::from(PINGS),
        "every ping answered: {:?}",
        r.errors
    );
    let mut v: Vec<f64> = r.rtt_us.iter().map(|us| us / 1e3).collect();
    v.sort_by(f64::total_cmp);
    v
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn root_qdisc(ifname: &str) -> String {
    let out = Command::new("tc")
        .args(["qdisc", "show", "dev", ifname, "root"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn latency_delays_egress_by_the_configured_time_and_jitter() {
    require_root().unwrap();
    let mut agent = Agent::start();
    if !supported_or_skip(&agent, "tcx+fq").await {
        return;
    }
    let mut c = agent.client().await;
    let ns = TestNetns::new();
    let _echo = ns.probe_server(&["udp-echo", "0.0.0.0:7300"]);
    let to: SocketAddr = (ns.peer_ips[0], 7300).into();
    let before_qdisc = root_qdisc(&ns.host_if);

    let base_med = pct(&rtts(to), 0.5);
    // Under emulation (the VM matrix) fq's timers run about 7 % long
    // (20 ms came out as 21.1–21.6 ms, 1 ms as 1.26 ms): there a shorter
    // delay is tested, with the same ±1 ms bound. Its jitter stays well
    // above the emulated machine's own RTT noise (SD up to ~1.5 ms, whose
    // variance is taken out below): with 2.5 ms (SD 1.44 ms) the two were
    // alike and the estimate failed once in CI (0.71 ms).
    let (delay, jitter) = if in_vm() { (8.0, 6.0) } else { (20.0, 10.0) };

    // Fixed delay: the median RTT rises by the delay, within 1 ms.
    let exp = start(
        &mut c,
        experiment(
            latency(delay, 0.0),
            interface_target(&ns.host_if),
            Duration::from_secs(60),
        ),
    )
    .await;
    assert!(
        root_qdisc(&ns.host_if).contains("qdisc fq fa17:"),
        "the agent installed fq as root: {}",
        root_qdisc(&ns.host_if)
    );
    let fixed = rtts(to);
    let added = pct(&fixed, 0.5) - base_med;
    // Never early by more than 1 ms. Late is the emulator's share too: a
    // guest timer fires late when the host is busy (seen once: 7.7 ms for 5
    // on a loaded host), so the VM allows 3 ms late, the host 1 ms.
    let late = if in_vm() { 3.0 } else { 1.0 };
    assert!(
        added >= delay - 1.0 && added <= delay + late,
        "median RTT {:.3} ms vs {base_med:.3} ms without the fault: added {added:.3} ms, want {delay} -1/+{late}",
        pct(&fixed, 0.5)
    );
    assert!(
        pct(&fixed, 0.02) - base_med > delay - 1.0,
        "no ping skipped the delay: {fixed:?}"
    );
    let status = c
        .get_experiment(pb::GetExperimentRequest { id: exp.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(
        status.injected >= u64::from(PINGS),
        "every ping delayed: {status:?}"
    );
    c.stop_experiment(pb::StopExperimentRequest { id: exp.id })
        .await
        .unwrap();
    assert_eq!(
        root_qdisc(&ns.host_if),
        before_qdisc,
        "stop restores the interface's qdisc"
    );
    let after = rtts(to);
    assert!(
        pct(&after, 0.5) < base_med + 1.0,
        "stop lifts the delay: {after:?}"
    );

    // Jitter: uniform in [delay - j, delay + j], so the middle 80 % spans
    // about 1.6 j and the standard deviation is j / sqrt(3).
    let exp = start(
        &mut c,
        experiment(
            latency(delay, jitter),
            interface_target(&ns.host_if),
            Duration::from_secs(60),
        ),
    )
    .await;
    // rtts() sorts, so jit is sorted. The median, not the mean: RTTs on a
    // busy (or emulated) machine have a long tail of their own.
    let jit: Vec<f64> = rtts(to).iter().map(|r| r - base_med).collect();
    let sd_of = |v: &[f64]| {
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
    };
    // The machine's own RTT noise adds its variance to the jitter's: take
    // the fixed-delay run's variance out (large under emulation).
    let sd = (sd_of(&jit).powi(2) - sd_of(&fixed).powi(2))
        .max(0.0)
        .sqrt();
    let want_sd = jitter / 3f64.sqrt();
    // Uniform jitter around the delay leaves the median where the fixed
    // delay put it (compared with that run, which carries the same timer
    // overhead of fq's watchdog, large under emulation).
    let med = pct(&jit, 0.5);
    let fixed_med = pct(&fixed, 0.5) - base_med;
    // As for the fixed delay: never more than 1.5 ms early; in the VM up to
    // 3 ms late (seen once in CI on an idle host: 7.41 ms vs 5.39 ms; the
    // cause, likely fq's watchdog timers under emulation, is not confirmed).
    let late_jit = if in_vm() { 3.0 } else { 1.5 };
    assert!(
        med - fixed_med > -1.5 && med - fixed_med < late_jit,
        "median added delay {med:.2} ms with jitter, {fixed_med:.2} ms without: want equal (-1.5/+{late_jit})"
    );
    assert!(
        (sd - want_sd).abs() < 0.2 * want_sd,
        "jitter SD {sd:.2} ms (the machine's own {:.2} ms taken out), want {want_sd:.2} ± 20 %",
        sd_of(&fixed)
    );
    // The spread's bounds, where the machine's own RTT noise is small (an
    // emulated CPU's reaches past them; the variance check above holds).
    assert!(
        in_vm()
            || (pct(&jit, 0.02) > delay - jitter - 1.0 && pct(&jit, 0.98) < delay + jitter + 1.5),
        "added delays (2nd to 98th percentile; the tails are the machine's) within [{}, {}] ms: {:.2} .. {:.2}",
        delay - jitter,
        delay + jitter,
        pct(&jit, 0.02),
        pct(&jit, 0.98)
    );
    let _ = exp;

    // SIGKILL: the delay is gone at once; the fq qdisc (not a link) stays
    // until the next agent on the same state directory removes it.
    let dir = agent.dir.clone();
    agent.kill();
    let after_kill = rtts(to);
    assert!(
        pct(&after_kill, 0.5) < base_med + 1.0,
        "the delay vanished with the agent: median {:.3} ms",
        pct(&after_kill, 0.5)
    );
    assert!(our_links().is_empty(), "no link left: {:?}", our_links());
    let next = Agent::start_in(dir, &[]);
    assert!(
        wait_for(Duration::from_secs(5), || root_qdisc(&ns.host_if)
            == before_qdisc),
        "the next agent removed the stale fq: {}",
        root_qdisc(&ns.host_if)
    );
    drop(next);
}

#[tokio::test]
async fn latency_needs_an_interface_and_fq() {
    require_root().unwrap();
    let agent = Agent::start();
    let mut c = agent.client().await;
    let cg = TestCgroup::new("latency");
    let err = c
        .start_experiment(experiment(
            latency(10.0, 0.0),
            cgroup_target(&cg),
            Duration::from_secs(10),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().starts_with("spec.faults[0].latency"),
        "{}",
        err.message()
    );
    let err = c
        .start_experiment(experiment(
            latency(10.0, 20.0),
            interface_target("lo"),
            Duration::from_secs(10),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .starts_with("spec.faults[0].latency.jitter_ms"),
        "{}",
        err.message()
    );

    let (supported, reason) = capability(&agent, "tcx+fq").await;
    if supported {
        return;
    }
    assert!(
        !expected("tcx+fq"),
        "fq is expected on this kernel, but: {reason}"
    );
    let ns = TestNetns::new();
    let err = c
        .start_experiment(experiment(
            latency(10.0, 0.0),
            interface_target(&ns.host_if),
            Duration::from_secs(10),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains(&reason),
        "carries the probed reason: {}",
        err.message()
    );
    assert!(agent.links().is_empty(), "nothing attached");
}

/// An interface whose root qdisc someone configured (bfifo here: built into
/// every kernel, and not one of the defaults the agent may replace) is left
/// alone: `latency` on it is FailedPrecondition naming the fault, nothing is
/// armed, and the qdisc is still the configured one.
#[tokio::test]
async fn a_configured_root_qdisc_is_failed_precondition_naming_the_fault() {
    require_root().unwrap();
    let agent = Agent::start();
    if !supported_or_skip(&agent, "tcx+fq").await {
        return;
    }
    let mut c = agent.client().await;
    let ns = TestNetns::new();
    let added = Command::new("tc")
        .args([
            "qdisc",
            "replace",
            "dev",
            &ns.host_if,
            "root",
            "handle",
            "1:",
            "bfifo",
            "limit",
            "100000",
        ])
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "tc qdisc replace … bfifo: {added:?}"
    );
    let err = c
        .start_experiment(experiment(
            latency(5.0, 0.0),
            interface_target(&ns.host_if),
            Duration::from_secs(30),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().starts_with("spec.faults[0].latency")
            && err.message().contains("configured root qdisc (bfifo)"),
        "{}",
        err.message()
    );
    assert!(
        root_qdisc(&ns.host_if).contains("qdisc bfifo 1:"),
        "the configured qdisc stays: {}",
        root_qdisc(&ns.host_if)
    );
    let running = running_experiments(&mut c).await;
    assert!(running.is_empty(), "{running:?}");
    let del = Command::new("tc")
        .args(["qdisc", "del", "dev", &ns.host_if, "root"])
        .status()
        .unwrap();
    assert!(del.success());
}
