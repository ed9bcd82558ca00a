//! The Prometheus endpoint, read the way an operator reads it: a real
//! Prometheus server (Debian's `prometheus`, started here on loopback with a
//! temporary config and storage) scrapes a real agent, and its query API
//! must give the agent's own counters.
#![expect(
    unused_crate_dependencies,
    reason = "each integration test is its own crate; the package's dependencies serve them all"
)]

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use faultline_proto::v1 as pb;
use faultline_tests::*;

/// Connects the target makes; every one must be injected.
const CONNECTS: u64 = 37;
/// Calls the test makes that must be refused as `InvalidArgument`.
const BAD_CALLS: u64 = 3;

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server on loopback scraping one target every second; killed
/// and its directory (config, storage, log) removed on drop.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Self {
        let exe = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect(
                "no prometheus binary: `cargo xtask setup` installs Debian's prometheus package",
            );
        let dir = std::env::temp_dir().join(format!("faultline-prometheus-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("data")).expect("prometheus dir");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: faultline\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("prometheus config");
        let addr = free_loopback_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("prometheus log");
        let child = Command::new(exe)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let p = Self { child, dir, addr };
        let ready = wait_for(Duration::from_secs(20), || {
            matches!(http_get(p.addr, "/-/ready"), Ok((200, _)))
        });
        assert!(ready, "prometheus not ready on {addr}; log:\n{}", p.log());
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query's samples: (labels, value).
    fn query(&self, promql: &str) -> Vec<(serde_json::Value, f64)> {
        let (status, body) = http_get(
            self.addr,
            &format!("/api/v1/query?query={}", url_encode(promql)),
        )
        .expect("query prometheus");
        assert_eq!(status, 200, "{promql}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("prometheus JSON");
        v["data"]["result"]
            .as_array()
            .expect("a vector result")
            .iter()
            .map(|s| {
                let value = s["value"][1].as_str().and_then(|x| x.parse().ok());
                (s["metric"].clone(), value.expect("a sample value"))
            })
            .collect()
    }

    /// The one value of `promql`, which must have exactly one sample.
    fn value(&self, promql: &str) -> f64 {
        let samples = self.query(promql);
        assert_eq!(samples.len(), 1, "{promql}: {samples:?}");
        samples[0].1
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn prometheus_reads_the_agents_own_counters() {
    require_root().unwrap();
    let agent = Agent::start_with(&["--metrics-listen", "127.0.0.1:0"]);
    let metrics = agent.metrics_addr();
    let mut client = agent.client().await;
    let cg = TestCgroup::new("metrics");
    let acc = Acceptor::new("127.0.0.1");
    let mut target = ProbeServer::spawn(Some(&cg));

    let mut req = experiment(
        connect_error("ECONNREFUSED", 1.0, acc.addr.port(), ""),
        cgroup_target(&cg),
        Duration::from_secs(60),
    );
    req.spec.as_mut().unwrap().name = "metrics-probe".into();
    let exp = start(&mut client, req).await;
    let seen = target.run("connect", acc.addr, CONNECTS);
    assert_eq!(
        seen.errno("ECONNREFUSED"),
        CONNECTS,
        "every connect fails: {seen:?}"
    );
    let (status, text) = http_get(metrics, "/metrics").expect("GET /metrics from the agent");
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("faultline_experiments_active{kind=\"syscall_error\"} 1\n"),
        "one syscall_error experiment runs:\n{text}"
    );
    // Stopped: the counters are final, and an ended experiment stays in
    // the per-experiment series (the last ones that ended are kept).
    client
        .stop_experiment(pb::StopExperimentRequest { id: exp.id.clone() })
        .await
        .expect("stop");
    let own = client
        .get_experiment(pb::GetExperimentRequest { id: exp.id.clone() })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(own.injected, CONNECTS, "{own:?}");
    for _ in 0..BAD_CALLS {
        let refused = client
            .get_experiment(pb::GetExperimentRequest { id: " ".into() })
            .await
            .expect_err("an empty id is refused");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    }
    let settled_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64;

    // The endpoint serves /metrics only.
    let (status, _) = http_get(metrics, "/").expect("GET / from the agent");
    assert_eq!(status, 404);

    let prom = Prometheus::start(metrics);
    // A scrape that began after the last call, so every value is final.
    let t0 = Instant::now();
    let scraped_after = wait_for(Duration::from_secs(30), || {
        prom.query("timestamp(faultline_build_info)")
            .first()
            .is_some_and(|(_, at)| at * 1000.0 > settled_ms)
    });
    assert!(
        scraped_after,
        "prometheus did not scrape the agent within {:?}; up = {:?}; its log:\n{}",
        t0.elapsed(),
        prom.query("up"),
        prom.log()
    );

    let injected = prom.value(&format!(
        "faultline_fault_injected_total{{experiment=\"{}\"}}",
        exp.id
    ));
    assert_eq!(
        injected, own.injected as f64,
        "Prometheus's value is the agent's own injected counter"
    );
    let samples = prom.query(&format!(
        "faultline_fault_matched_total{{experiment=\"{}\",name=\"metrics-probe\",kind=\"syscall_error\",index=\"0\"}}",
        exp.id
    ));
    assert_eq!(samples.len(), 1, "{samples:?}");
    assert_eq!(samples[0].1, own.matched as f64, "{samples:?}");

    let calls = |method: &str, code: &str| {
        prom.query(&format!(
            "faultline_api_calls_total{{method=\"{method}\",code=\"{code}\"}}"
        ))
        .first()
        .map_or(0.0, |(_, v)| *v)
    };
    assert_eq!(calls("GetExperiment", "InvalidArgument"), BAD_CALLS as f64);
    assert_eq!(calls("GetExperiment", "OK"), 1.0);
    assert_eq!(calls("StartExperiment", "OK"), 1.0);
    assert_eq!(calls("StopExperiment", "OK"), 1.0);
    assert_eq!(
        prom.value("faultline_api_call_duration_seconds_count{method=\"GetExperiment\"}"),
        (BAD_CALLS + 1) as f64
    );

    let build = prom.query("faultline_build_info");
    assert_eq!(build.len(), 1, "{build:?}");
    assert_eq!(
        build[0].0["version"],
        env!("CARGO_PKG_VERSION"),
        "{build:?}"
    );
    assert_eq!(build[0].1, 1.0);
    assert_eq!(prom.value("faultline_lease_expiries_total"), 0.0);
    assert_eq!(
        prom.value("faultline_experiments_active{kind=\"syscall_error\"}"),
        0.0,
        "the experiment was stopped"
    );
    assert_eq!(
        prom.value("faultline_mechanism_available{mechanism=\"cgroup_sock_addr\"}"),
        1.0
    );
}

#[test]
fn a_non_loopback_metrics_address_is_refused_at_start_up() {
    let out = Command::new(bin("faultline-agent"))
        .args(["--metrics-listen", "0.0.0.0:9464", "--print-config"])
        .output()
        .expect("run the agent");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("`metrics_listen`") && err.contains("loopback") && err.contains("TLS"),
        "{err}"
    );
}
