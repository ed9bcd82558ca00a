//! `api` (mTLS part): GetExperiment from 64 concurrent clients over mutual
//! TLS on loopback beside the same over the plaintext unix socket, and
//! full mTLS handshakes per second.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use faultline_proto::v1::{self as pb, fault_service_client::FaultServiceClient};
use faultline_tests::{
    Agent, CertDir, TestCgroup, cgroup_target, connect_error, context, experiment, free_port,
};
use tokio::io::AsyncReadExt as _;

use crate::{Client, stats::*};

const CLIENTS: usize = 64;
const PHASE: Duration = Duration::from_secs(3);
/// Throughput is judged on windows of this length.
const WINDOW: Duration = Duration::from_millis(500);
const CALLS_TARGET: f64 = 20_000.0;
const P99_TARGET_MS: f64 = 5.0;
const HANDSHAKERS: usize = 8;

struct Run {
    latencies: Vec<f64>,
    /// calls/s in each WINDOW.
    rates: Vec<f64>,
}

pub fn mtls() -> anyhow::Result<Vec<String>> {
    let mt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let certs = CertDir::init(&[]);
    certs.issue("bench", "viewer");
    let addr = free_port(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let args = certs.agent_args(addr);
    let agent = Agent::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let cg = TestCgroup::new("bench-api-tls");
    let (tls, unix, handshakes) = mt.block_on(async {
        let mut root = agent.client().await;
        let res = root
            .start_experiment(experiment(
                connect_error("ECONNREFUSED", 1.0, 9, ""),
                cgroup_target(&cg),
                Duration::from_secs(600),
            ))
            .await;
        let anchor = context(res, "StartExperiment (anchor)")?
            .into_inner()
            .experiment
            .context("no experiment")?
            .id;
        let mut tls_clients = Vec::new();
        let mut unix_clients = Vec::new();
        for _ in 0..CLIENTS {
            tls_clients.push(FaultServiceClient::new(
                certs.channel(addr, Some("bench")).await?,
            ));
            unix_clients.push(agent.client().await);
        }
        let tls = run(tls_clients, &anchor).await?;
        let unix = run(unix_clients, &anchor).await?;
        let (cert, key) = certs.identity("bench");
        let connector = faultline_tests::tls::handshaker(&certs.path("ca.pem"), &cert, &key);
        let handshakes = handshake_rates(&connector, addr).await?;
        anyhow::Ok((tls, unix, handshakes))
    })?;
    drop(agent);
    println!(
        "  GetExperiment, {CLIENTS} clients each on its own connection, closed loop, {} s each:",
        PHASE.as_secs()
    );
    println!(
        "  {:<34} {:>9} {:>10} {:>9} {:>9} {:>9}",
        "transport", "calls", "calls/s", "p50 ms", "p99 ms", "max ms"
    );
    for (label, r) in [
        ("mTLS (TCP loopback)", &tls),
        ("plaintext unix socket", &unix),
    ] {
        let s = sorted(&r.latencies);
        println!(
            "  {label:<34} {:>9} {:>10.0} {:>9.3} {:>9.3} {:>9.3}",
            s.len(),
            s.len() as f64 / PHASE.as_secs_f64(),
            percentile(&s, 50.0),
            percentile(&s, 99.0),
            s.last().copied().unwrap_or(0.0)
        );
    }
    let hs = median(&handshakes);
    println!(
        "  full mTLS handshakes (TCP connect, TLS 1.3 with client certificate, the server's first frame), \
         {HANDSHAKERS} in parallel: {hs:.0}/s (median of {} windows of {} ms)",
        handshakes.len(),
        WINDOW.as_millis()
    );
    let rate = Figure {
        what: "median calls/s",
        value: median(&tls.rates),
        ci: quantile_ci(&tls.rates, 0.5),
    };
    let p99 = Figure {
        what: "p99",
        value: percentile_of(&tls.latencies, 99.0),
        ci: quantile_ci(&tls.latencies, 0.99),
    };
    let (_, v) = all_of(&[
        (
            "throughput",
            verdict(&rate, Target::Above(CALLS_TARGET), &|x| format!("{x:.0}/s")),
        ),
        ("p99", verdict(&p99, Target::Below(P99_TARGET_MS), &show_ms)),
    ]);
    let line = format!(
        "api: target: GetExperiment over mTLS from {CLIENTS} clients >= {CALLS_TARGET:.0} calls/s and p99 < \
         {P99_TARGET_MS} ms: {v} (unix socket: {:.0} calls/s, p99 {:.3} ms; {hs:.0} mTLS handshakes/s)",
        unix.latencies.len() as f64 / PHASE.as_secs_f64(),
        percentile_of(&unix.latencies, 99.0)
    );
    println!("  {line}");
    Ok(vec![line])
}

async fn run(clients: Vec<Client>, anchor: &str) -> anyhow::Result<Run> {
    let t0 = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let anchor = anchor.to_owned();
            tokio::spawn(async move {
                let mut out = Vec::new();
                while t0.elapsed() < PHASE {
                    let t = Instant::now();
                    let res = c
                        .get_experiment(pb::GetExperimentRequest { id: anchor.clone() })
                        .await;
                    context(res, "GetExperiment")?;
                    out.push((t0.elapsed(), t.elapsed().as_secs_f64() * 1e3));
                }
                anyhow::Ok(out)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(Run {
        rates: windows(all.iter().map(|(at, _)| *at)),
        latencies: all.into_iter().map(|(_, ms)| ms).collect(),
    })
}

/// Events per second in each whole WINDOW of PHASE.
fn windows(at: impl Iterator<Item = Duration>) -> Vec<f64> {
    let n = (PHASE.as_millis() / WINDOW.as_millis()) as usize;
    let mut counts = vec![0u32; n];
    for t in at {
        let i = (t.as_millis() / WINDOW.as_millis()) as usize;
        if let Some(c) = counts.get_mut(i) {
            *c += 1;
        }
    }
    counts
        .into_iter()
        .map(|c| f64::from(c) / WINDOW.as_secs_f64())
        .collect()
}

async fn handshake_rates(
    connector: &tokio_rustls::TlsConnector,
    addr: std::net::SocketAddr,
) -> anyhow::Result<Vec<f64>> {
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..HANDSHAKERS)
        .map(|_| {
            let c = connector.clone();
            tokio::spawn(async move {
                let mut done = Vec::new();
                while t0.elapsed() < PHASE {
                    let mut tls = faultline_tests::tls::handshake(&c, addr).await?;
                    // The server's first HTTP/2 frame: it accepted the client certificate.
                    let mut b = [0u8; 1];
                    tls.read_exact(&mut b).await?;
                    done.push(t0.elapsed());
                }
                anyhow::Ok(done)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(windows(all.into_iter()))
}
