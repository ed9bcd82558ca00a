//! `activation`: StartExperiment returned → first injected connect() error.

use std::{net::SocketAddr, path::Path, process::Stdio, time::Duration};

use anyhow::{Context as _, anyhow, bail, ensure};
use faultline_proto::v1 as pb;
use faultline_tests::{Agent, TestCgroup, bin, cgroup_target, connect_error, context, experiment};
use tokio::runtime::Runtime;

use crate::{Client, header, mono_ns, stats::*, sys::*};

/// At least 368: only then does the order-statistic 95 % CI of the p99 have
/// an upper end (the largest value); with 200 it was unbounded.
const ACTIVATION_RUNS: usize = 400;
/// Runs before the measured ones (first attach, page cache, allocator); shown, not counted.
const ACTIVATION_WARMUP: usize = 3;
/// How long the probe connects in a loop before StartExperiment, so it is hot.
const HOT_LOOP: Duration = Duration::from_millis(20);
const ACTIVATION_TARGET_MS: f64 = 10.0;

/// What `fl-probe first-error` prints.
#[derive(serde::Deserialize)]
pub struct FirstError {
    mono_ns: u64,
    errno: String,
}

/// One activation run, in CLOCK_MONOTONIC nanoseconds.
pub struct Activation {
    /// StartExperiment call → response returned.
    rpc: i64,
    /// Response returned → first injected error; negative when the fault hit first.
    after_return: i64,
    /// StartExperiment called → first injected error.
    after_call: i64,
    /// SYNs the acceptor's full accept queue dropped during the run.
    overflows: u64,
}

pub fn activation(rt: &Runtime) -> anyhow::Result<Vec<String>> {
    header(
        "activation",
        &[
            "method: per run, `fl-probe first-error` connects in a loop to a loopback acceptor (accept queue 4096, in a",
            "fresh network namespace) from inside a test cgroup; after 20 ms (hot): StartExperiment(connect,",
            "ECONNREFUSED, p=1.0, that port, cgroup target, 30 s). CLOCK_MONOTONIC right before the call (t_call) and",
            "right after the response (t_ret) vs. the probe's CLOCK_MONOTONIC at its first failed connect(); then",
            "StopExperiment (the last experiment detaches the programs, so every run attaches them afresh).",
            "One agent for all runs; nothing pinned.",
        ],
    );
    let agent = Agent::start();
    let cg = TestCgroup::new("bench-activation");
    let probe = bin("fl-probe");
    let mut client = rt.block_on(agent.client());
    // The runs happen on a helper thread so that only it (and the acceptor
    // and probes it creates) moves to a fresh network namespace for each run.
    let runs = std::thread::scope(|s| {
        s.spawn(|| {
            let mut runs = Vec::with_capacity(ACTIVATION_WARMUP + ACTIVATION_RUNS);
            for i in 0..ACTIVATION_WARMUP + ACTIVATION_RUNS {
                let net = PrivateNet::new()?;
                net.enter()?;
                let acceptor = DeepAcceptor::new()?;
                let run = rt
                    .block_on(activation_run(&mut client, &cg, &probe, acceptor.addr))
                    .with_context(|| format!("activation run {i}"))?;
                runs.push(Activation {
                    overflows: listen_overflows()?,
                    ..run
                });
            }
            anyhow::Ok(runs)
        })
        .join()
        .map_err(|_| anyhow!("the activation runs panicked"))?
    })?;
    drop(client);
    drop(agent);

    let (warmup, measured) = runs.split_at(ACTIVATION_WARMUP);
    let ms = |ns: i64| ns as f64 / 1e6;
    let early = measured.iter().filter(|r| r.after_return <= 0).count();
    let mut after_return: Vec<i64> = measured.iter().map(|r| r.after_return.max(0)).collect();
    let mut after_call: Vec<i64> = measured.iter().map(|r| r.after_call).collect();
    let mut rpc: Vec<i64> = measured.iter().map(|r| r.rpc).collect();
    for v in [&mut after_return, &mut after_call, &mut rpc] {
        v.sort_unstable();
    }
    print_start_latency(
        "injected",
        measured.len(),
        &warmup.iter().map(|r| r.after_return).collect::<Vec<_>>(),
        [&after_return, &after_call, &rpc],
    );
    let overflowed: Vec<&Activation> = measured.iter().filter(|r| r.overflows > 0).collect();
    println!(
        "  runs in which the acceptor's accept queue overflowed (a SYN dropped, retransmitted after 1 s): {}/{}{}",
        overflowed.len(),
        measured.len(),
        if overflowed.is_empty() {
            String::new()
        } else {
            let mut v: Vec<i64> = overflowed.iter().map(|r| r.after_return.max(0)).collect();
            v.sort_unstable();
            format!(
                "; their returned → first injected: p50 {:.3} ms, max {:.3} ms",
                ms(percentile(&v, 50.0)),
                ms(*v.last().expect("overflowed runs"))
            )
        }
    );
    println!(
        "  injected before the response returned: {early}/{} runs (counted as 0 ms in the first row)",
        measured.len()
    );
    // The p99's CI is the order-statistic one (distribution-free).
    let (_, v) = verdict(
        &p99_ms(&after_return),
        Target::Below(ACTIVATION_TARGET_MS),
        &show_ms,
    );
    let target = format!(
        "activation: target: p99 (returned → first injected) < {ACTIVATION_TARGET_MS} ms: {v} ({} runs)",
        measured.len()
    );
    let baseline = format!(
        "activation: baseline \"synchronous arming\" (fault live before StartExperiment returns): {early}/{} runs met it",
        measured.len()
    );
    println!("  {target}");
    println!("  {baseline}");
    Ok(vec![target, baseline])
}

pub async fn activation_run(
    client: &mut Client,
    cg: &TestCgroup,
    probe: &Path,
    addr: SocketAddr,
) -> anyhow::Result<Activation> {
    let mut cmd = cg.command(probe);
    cmd.arg("first-error")
        .arg(addr.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .context("spawn fl-probe first-error")?;
    tokio::time::sleep(HOT_LOOP).await;
    if let Some(status) = child.try_wait()? {
        let out = child.wait_with_output().await?;
        bail!(
            "fl-probe exited ({status}) before StartExperiment: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let req = experiment(
        connect_error("ECONNREFUSED", 1.0, addr.port(), ""),
        cgroup_target(cg),
        Duration::from_secs(30),
    );
    let t_call = mono_ns();
    let res = client.start_experiment(req).await;
    let t_ret = mono_ns();
    let exp = context(res, "StartExperiment")?
        .into_inner()
        .experiment
        .context("StartExperiment returned no experiment")?;
    let out = tokio::time::timeout(Duration::from_secs(5), child.wait_with_output()).await;
    // Stop before judging the run, so nothing stays armed on an error.
    context(
        client
            .stop_experiment(pb::StopExperimentRequest { id: exp.id.clone() })
            .await,
        "StopExperiment",
    )?;
    let out = out
        .map_err(|_| {
            anyhow!("fl-probe saw no failing connect() within 5 s of StartExperiment returning")
        })?
        .context("wait for fl-probe")?;
    ensure!(
        out.status.success(),
        "fl-probe failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: FirstError = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "fl-probe printed {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    ensure!(
        seen.errno == "ECONNREFUSED",
        "expected the first failed connect() to be the injected ECONNREFUSED, saw {}",
        seen.errno
    );
    let at = i64::try_from(seen.mono_ns)?;
    ensure!(
        at >= t_call,
        "fl-probe's connect() failed {} ns before StartExperiment was called",
        t_call - at
    );
    Ok(Activation {
        rpc: t_ret - t_call,
        after_return: at - t_ret,
        after_call: at - t_call,
        overflows: 0,
    })
}
