//! `api`: GetExperiment / ListExperiments latency from concurrent clients over
//! the agent's unix socket, alone and while another client starts and stops
//! experiments that load programs (first use of a group) and attach them
//! (raw tracepoint, cgroup_skb, TCX on a veth); then (`api_tls`) the same
//! call over mutual TLS from 64 clients, and mTLS handshakes per second.

use std::{
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use faultline_proto::v1 as pb;
use faultline_tests::{
    Agent, TestCgroup, TestNetns, cgroup_target, connect_error, context, experiment, our_links,
    packet_loss, pid_target, syscall_signal, wait_for,
};
use tokio::runtime::Runtime;

use crate::{Client, header, network::ours_on, stats::*, sys::KillOnDrop};

/// Concurrent clients, each on its own connection.
const CLIENTS: usize = 8;
/// How long the clients send requests in each phase (closed loop: the next
/// request as soon as the previous one returned).
const PHASE: Duration = Duration::from_secs(2);
/// Alternating rounds (alone then starting, then the reverse), a fresh agent
/// each round, so that every "starting" phase loads the program groups anew.
const ROUNDS: usize = 4;
const RATIO_TARGET: f64 = 2.0;
const P99_TARGET_MS: f64 = 5.0;

/// Latencies (ms) of one kind of request, pooled over rounds.
#[derive(Default)]
struct Latencies {
    get: Vec<f64>,
    list: Vec<f64>,
}

pub fn api(_rt: &Runtime) -> anyhow::Result<Vec<String>> {
    let rounds_line = format!(
        "{ROUNDS} rounds, a fresh agent each (alone → starting, then starting → alone); each phase {} s; {CLIENTS} \
         clients on their own connections, each alternating GetExperiment(an experiment running all along: a \
         connect fault on an empty cgroup) and ListExperiments(running_only) in a closed loop; nothing pinned",
        PHASE.as_secs_f64()
    );
    header(
        "api",
        &[
            "method: client-side latency (request sent → response received) of the read-only calls, pooled over rounds;",
            &rounds_line,
            "starting: one more client starts and stops, in turn, syscall_signal on a `sleep` (raw tracepoint sys_enter),",
            "packet_loss 0 % on an empty cgroup (cgroup_skb + sock_ops) and packet_loss 0 % on a veth (TCX): each group's",
            "programs are loaded at its first use in the round, and each start attaches, each stop detaches.",
            "Verdict: p99 while starting / p99 alone (95 % percentile-bootstrap CI, 1000 resamples) and p99 while starting",
            "(order-statistic 95 % CI). Both treat requests as independent; requests that waited on the same lock hold",
            "are not, so near a limit the intervals are narrower than the truth.",
        ],
    );
    let mt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("build the clients' tokio runtime")?;
    let ns = TestNetns::new();
    let anchor_cg = TestCgroup::new("bench-api-anchor");
    let skb_cg = TestCgroup::new("bench-api-skb");
    let mut sleeper = Command::new("sleep");
    sleeper.arg("3600").stdin(Stdio::null());
    let sleeper = KillOnDrop(sleeper.spawn().context("spawn sleep")?);
    let plan = [
        experiment(
            syscall_signal("getppid", "KILL", 1.0, 0),
            pid_target(sleeper.0.id()),
            Duration::from_secs(60),
        ),
        experiment(
            packet_loss(
                0.0,
                0.0,
                pb::Direction::Egress,
                crate::network::match_port("udp", 9),
            ),
            cgroup_target(&skb_cg),
            Duration::from_secs(60),
        ),
        ours_on(&ns, "udp", 9, 0.0),
    ];

    let mut alone = Latencies::default();
    let mut busy = Latencies::default();
    let mut starts = Vec::new();
    for round in 0..ROUNDS {
        let agent = Agent::start();
        let anchor = mt.block_on(async {
            let mut c = agent.client().await;
            let res = c
                .start_experiment(experiment(
                    connect_error("ECONNREFUSED", 1.0, 9, ""),
                    cgroup_target(&anchor_cg),
                    Duration::from_secs(600),
                ))
                .await;
            context(res, "StartExperiment (anchor)")?
                .into_inner()
                .experiment
                .map(|e| e.id)
                .context("StartExperiment returned no experiment")
        })?;
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for starting in order {
            let (lat, s) = mt
                .block_on(phase(&agent, &anchor, starting.then_some(&plan[..])))
                .with_context(|| format!("round {round}, {}", phase_name(starting)))?;
            let into = if starting { &mut busy } else { &mut alone };
            into.get.extend(lat.get);
            into.list.extend(lat.list);
            starts.extend(s);
        }
        drop(agent);
        wait_for(Duration::from_secs(2), || our_links().is_empty());
    }
    drop(sleeper);

    println!(
        "  {:<44} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "latency (ms)", "requests", "p50", "p90", "p99", "max"
    );
    for (label, v) in [
        ("GetExperiment alone", &alone.get),
        ("GetExperiment while starting", &busy.get),
        ("ListExperiments alone", &alone.list),
        ("ListExperiments while starting", &busy.list),
        ("StartExperiment+StopExperiment (starter)", &starts),
    ] {
        let s = sorted(v);
        if s.is_empty() {
            println!("  {label:<44} {:>8}", 0);
            continue;
        }
        println!(
            "  {label:<44} {:>8} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            s.len(),
            percentile(&s, 50.0),
            percentile(&s, 90.0),
            percentile(&s, 99.0),
            s[s.len() - 1]
        );
    }
    let mut verdicts = Vec::new();
    for (call, a, b) in [
        ("GetExperiment", &alone.get, &busy.get),
        ("ListExperiments", &alone.list, &busy.list),
    ] {
        anyhow::ensure!(
            !a.is_empty() && !b.is_empty(),
            "no {call} completed in a phase"
        );
        let p99 = |v: &mut [f64]| select_percentile(v, 99.0);
        let ratio = Figure {
            what: "p99 ratio",
            value: percentile_of(b, 99.0) / percentile_of(a, 99.0),
            ci: bootstrap_ci(&[a, b], |g| {
                let (x, y) = g.split_at_mut(1);
                p99(&mut y[0]) / p99(&mut x[0])
            }),
        };
        let absolute = Figure {
            what: "p99",
            value: percentile_of(b, 99.0),
            ci: quantile_ci(b, 0.99),
        };
        let (_, v) = all_of(&[
            (
                "while starting / alone",
                verdict(&ratio, Target::Below(RATIO_TARGET), &|x| format!("{x:.2}x")),
            ),
            (
                "while starting",
                verdict(&absolute, Target::Below(P99_TARGET_MS), &show_ms),
            ),
        ]);
        let line = format!(
            "api: target: {call} p99 while experiments start within {RATIO_TARGET:.0}x of p99 alone and < \
             {P99_TARGET_MS} ms ({CLIENTS} clients): {v} (p99 alone {:.3} ms)",
            percentile_of(a, 99.0)
        );
        println!("  {line}");
        verdicts.push(line);
    }
    verdicts.extend(crate::api_tls::mtls()?);
    Ok(verdicts)
}

fn phase_name(starting: bool) -> &'static str {
    if starting { "while starting" } else { "alone" }
}

/// One phase: CLIENTS clients for PHASE, and with `plan` the starter.
/// Returns the clients' latencies and the starter's start+stop latencies.
async fn phase(
    agent: &Agent,
    anchor: &str,
    plan: Option<&[pb::StartExperimentRequest]>,
) -> anyhow::Result<(Latencies, Vec<f64>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        clients.push(agent.client().await);
    }
    let starter = match plan {
        Some(plan) => {
            let client = agent.client().await;
            let (plan, stop) = (plan.to_vec(), Arc::clone(&stop));
            Some(tokio::spawn(starter(client, plan, stop)))
        }
        None => None,
    };
    let t0 = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(k, c)| tokio::spawn(reader(c, anchor.to_owned(), k, t0)))
        .collect();
    let mut out = Latencies::default();
    for t in tasks {
        let lat = t
            .await
            .map_err(|e| anyhow!("a client task failed: {e}"))??;
        out.get.extend(lat.get);
        out.list.extend(lat.list);
    }
    stop.store(true, Ordering::Relaxed);
    let starts = match starter {
        Some(t) => t.await.map_err(|e| anyhow!("the starter failed: {e}"))??,
        None => Vec::new(),
    };
    Ok((out, starts))
}

/// Alternates GetExperiment and ListExperiments until PHASE has passed since `t0`.
async fn reader(mut c: Client, anchor: String, k: usize, t0: Instant) -> anyhow::Result<Latencies> {
    let mut out = Latencies::default();
    let mut i = k;
    while t0.elapsed() < PHASE {
        let t = Instant::now();
        if i.is_multiple_of(2) {
            let res = c
                .get_experiment(pb::GetExperimentRequest { id: anchor.clone() })
                .await;
            context(res, "GetExperiment")?;
            out.get.push(t.elapsed().as_secs_f64() * 1e3);
        } else {
            let res = c
                .list_experiments(pb::ListExperimentsRequest {
                    running_only: true,
                    ..Default::default()
                })
                .await;
            context(res, "ListExperiments")?;
            out.list.push(t.elapsed().as_secs_f64() * 1e3);
        }
        i += 1;
    }
    Ok(out)
}

/// Starts and stops the plan's experiments in turn until stopped; returns the
/// time (ms) of each start + stop.
async fn starter(
    mut c: Client,
    plan: Vec<pb::StartExperimentRequest>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::new();
    for req in plan.iter().cycle() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let t = Instant::now();
        let id = context(c.start_experiment(req.clone()).await, "StartExperiment")?
            .into_inner()
            .experiment
            .context("StartExperiment returned no experiment")?
            .id;
        context(
            c.stop_experiment(pb::StopExperimentRequest { id }).await,
            "StopExperiment",
        )?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(times)
}
