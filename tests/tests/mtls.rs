//! Remote operation over mutual TLS, against real agents on real TCP
//! addresses (a test network namespace's veth address, or loopback): who
//! may connect, what each role may do (and that the experiment really
//! runs), the audit log, SIGHUP reloads, and idle connections. Host only:
//! nothing here depends on the kernel's BPF features.
#![expect(
    unused_crate_dependencies,
    reason = "the test harness's dependencies serve other test files"
)]

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    process::Command,
    time::{Duration, Instant},
};

use faultline_proto::v1::{self as pb, fault_service_client::FaultServiceClient};
use faultline_tests::{
    Agent, CertDir, TestCgroup, TestNetns, bin, cgroup_target, connect_error, experiment,
    free_port, in_vm, require_root,
};
use nix::sys::signal::Signal;
use tonic::{Code, transport::Channel};

fn skip_in_vm() -> bool {
    if in_vm() {
        eprintln!("SKIP in the VM: the same on every kernel, tested on the host");
    }
    in_vm()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn start_req(cg: &TestCgroup) -> pb::StartExperimentRequest {
    experiment(
        connect_error("ECONNREFUSED", 1.0, 9, ""),
        cgroup_target(cg),
        Duration::from_secs(120),
    )
}

async fn client(c: &CertDir, addr: SocketAddr, name: &str) -> FaultServiceClient<Channel> {
    FaultServiceClient::new(c.channel(addr, Some(name)).await.expect("mTLS connect"))
}

/// A whole call on a new connection: Err for a refused handshake too.
async fn list_as(c: &CertDir, addr: SocketAddr, name: Option<&str>) -> Result<usize, String> {
    let ch = c.channel(addr, name).await.map_err(|e| format!("{e:?}"))?;
    FaultServiceClient::new(ch)
        .list_experiments(pb::ListExperimentsRequest::default())
        .await
        .map(|r| r.into_inner().experiments.len())
        .map_err(|s| format!("{s:?}"))
}

async fn state_of(c: &mut FaultServiceClient<Channel>, id: &str) -> i32 {
    c.get_experiment(pb::GetExperimentRequest { id: id.into() })
        .await
        .expect("GetExperiment")
        .into_inner()
        .state
}

fn running() -> i32 {
    pb::ExperimentState::Running.into()
}

fn audit(agent: &Agent) -> Vec<serde_json::Value> {
    std::fs::read_to_string(agent.dir.join("state/audit.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("an audit line is JSON"))
        .collect()
}

/// An expired client certificate from `c`'s CA, named `old` (operator in
/// the roles file, so only its dates can refuse it).
fn expired_client(c: &CertDir) {
    c.issue("old", "operator");
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(c.path("ca-key.pem")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        &std::fs::read_to_string(c.path("ca.pem")).unwrap(),
        ca_key,
    )
    .unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name.push(rcgen::DnType::CommonName, "old");
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &issuer).unwrap();
    std::fs::write(c.path("old.pem"), cert.pem()).unwrap();
    std::fs::write(c.path("old-key.pem"), key.serialize_pem()).unwrap();
}

#[test]
fn roles_decide_who_may_start_stop_and_stop_all_and_each_call_is_audited() {
    if skip_in_vm() {
        return;
    }
    require_root().unwrap();
    let ns = TestNetns::new();
    let addr = free_port(IpAddr::V4(ns.host_ip));
    let c = CertDir::init(&[&ns.host_ip.to_string()]);
    c.issue("vic", "viewer")
        .issue("ops", "operator")
        .issue("root-ctl", "admin");
    expired_client(&c);
    let stranger = CertDir::init(&[]);
    stranger.issue("ops", "operator");
    let agent = Agent::start_with(
        &c.agent_args(addr)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let cg = TestCgroup::new("mtls-roles");
    rt().block_on(async {
        // Who may connect at all.
        assert!(
            list_as(&c, addr, None).await.is_err(),
            "no client certificate was served"
        );
        let unknown = stranger.channel(addr, Some("ops")).await;
        let unknown = match unknown {
            Ok(ch) => FaultServiceClient::new(ch)
                .list_experiments(pb::ListExperimentsRequest::default())
                .await
                .map(drop)
                .map_err(|s| s.to_string()),
            Err(e) => Err(e.to_string()),
        };
        assert!(
            unknown.is_err(),
            "a certificate from an unknown CA was served"
        );
        assert!(
            list_as(&c, addr, Some("old")).await.is_err(),
            "an expired certificate was served"
        );
        assert_eq!(
            list_as(&c, addr, Some("vic")).await,
            Ok(0),
            "the viewer cannot list"
        );
        assert!(
            agent.log().contains("TLS handshake refused"),
            "{}",
            agent.log()
        );

        let mut vic = client(&c, addr, "vic").await;
        let mut ops = client(&c, addr, "ops").await;
        let mut admin = client(&c, addr, "root-ctl").await;
        // A viewer cannot start: nothing attached.
        let e = vic.start_experiment(start_req(&cg)).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(
            e.message().contains("vic") && e.message().contains("operator"),
            "{e:?}"
        );
        assert!(
            agent.links().is_empty(),
            "a refused start attached programs"
        );
        // An operator can: it runs, with its programs attached in the kernel.
        let id = ops
            .start_experiment(start_req(&cg))
            .await
            .expect("the operator starts")
            .into_inner()
            .experiment
            .unwrap()
            .id;
        assert_eq!(state_of(&mut vic, &id).await, running());
        let links = agent.links();
        assert!(!links.is_empty(), "the started experiment attached nothing");
        // A viewer cannot stop it, an operator cannot stop all: still running.
        let e = vic
            .stop_experiment(pb::StopExperimentRequest { id: id.clone() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        let e = ops
            .stop_all(pb::StopAllRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(
            e.message().contains("ops") && e.message().contains("admin"),
            "{e:?}"
        );
        assert_eq!(state_of(&mut vic, &id).await, running());
        assert_eq!(
            agent.links(),
            links,
            "a refused stop changed the attachments"
        );
        // A bad request by an operator: refused and audited.
        let e = ops
            .stop_experiment(pb::StopExperimentRequest { id: "nope".into() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        // The admin stops all: gone from the kernel.
        let stopped = admin
            .stop_all(pb::StopAllRequest::default())
            .await
            .expect("the admin stops all")
            .into_inner()
            .stopped_ids;
        assert_eq!(stopped, std::slice::from_ref(&id));
        assert!(agent.links().is_empty(), "StopAll left attachments");
        // An operator starts and stops its own, by faultctl over the veth
        // from inside the namespace.
        let ctl = |args: &[&str]| {
            let out = ns
                .command(bin("faultctl"))
                .arg("--endpoint")
                .arg(format!("https://{addr}"))
                .arg("--tls-ca")
                .arg(c.path("ca.pem"))
                .arg("--tls-cert")
                .arg(c.path("ops.pem"))
                .arg("--tls-key")
                .arg(c.path("ops-key.pem"))
                .args(["-o", "json"])
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "faultctl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        let started: serde_json::Value = serde_json::from_str(&ctl(&[
            "inject",
            "syscall-error",
            "--cgroup",
            &cg.path.display().to_string(),
            "--syscall",
            "connect",
            "--errno",
            "ECONNREFUSED",
            "--duration",
            "60s",
        ]))
        .unwrap();
        let id2 = started["id"].as_str().unwrap_or_default().to_owned();
        assert!(!id2.is_empty(), "{started}");
        assert!(!agent.links().is_empty());
        ctl(&["stop", &id2]);
        assert!(agent.links().is_empty());
    });
    drop(cg);
    // Exactly one entry per mutating call and per refusal, with the identity.
    let got: Vec<(String, String, String)> = audit(&agent)
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (s("identity"), s("method"), s("outcome"))
        })
        .collect();
    let want: Vec<(String, String, String)> = [
        ("vic", "StartExperiment", "PermissionDenied"),
        ("ops", "StartExperiment", "ok"),
        ("vic", "StopExperiment", "PermissionDenied"),
        ("ops", "StopAll", "PermissionDenied"),
        ("ops", "StopExperiment", "NotFound"),
        ("root-ctl", "StopAll", "ok"),
        ("ops", "StartExperiment", "ok"),
        ("ops", "StopExperiment", "ok"),
    ]
    .iter()
    .map(|(a, b, c)| ((*a).into(), (*b).into(), (*c).into()))
    .collect();
    assert_eq!(got, want, "audit log:\n{:#?}", audit(&agent));
    let first_ok = &audit(&agent)[1];
    assert!(
        first_ok["peer"]
            .as_str()
            .unwrap()
            .starts_with(&ns.host_ip.to_string())
    );
    assert!(
        first_ok["spec_summary"]
            .as_str()
            .unwrap()
            .contains("connect"),
        "{first_ok}"
    );
    assert!(!first_ok["experiment_id"].as_str().unwrap().is_empty());
}

#[test]
fn a_non_loopback_listener_without_tls_exits_64_with_the_reason() {
    if skip_in_vm() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("fl-mtls-64-{}", std::process::id()));
    for (args, expected) in [
        (vec!["--listen", "10.213.0.1:50051"], "no TLS is configured"),
        (
            vec!["--listen", "10.213.0.1:50051", "--insecure-listen"],
            "no TLS is configured",
        ),
        (
            vec![
                "--listen",
                "127.0.0.1:50051",
                "--tls-cert",
                "/nonexistent.pem",
            ],
            "`tls_key`",
        ),
    ] {
        let out = Command::new(bin("faultline-agent"))
            .args(["--state-dir"])
            .arg(dir.join("state"))
            .arg("--socket")
            .arg(dir.join("a.sock"))
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(
            err.contains(expected) && err.contains("`"),
            "{args:?}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_sighup_with_a_new_ca_refuses_old_certificates_and_experiments_go_on() {
    if skip_in_vm() {
        return;
    }
    require_root().unwrap();
    let old = CertDir::init(&[]);
    old.issue("ops", "operator");
    let new = CertDir::init(&[]);
    new.issue("ops2", "operator");
    // The agent reads its files from `live`, where they are replaced.
    let live = CertDir::init(&[]);
    let install = |from: &CertDir| {
        for f in ["ca.pem", "agent.pem", "agent-key.pem", "roles.toml"] {
            std::fs::copy(from.path(f), live.path(f)).unwrap();
        }
    };
    install(&old);
    let addr = free_port(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let agent = Agent::start_with(
        &live
            .agent_args(addr)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let cg = TestCgroup::new("mtls-reload");
    rt().block_on(async {
        let mut ops = client(&old, addr, "ops").await;
        let id = ops
            .start_experiment(start_req(&cg))
            .await
            .expect("start")
            .into_inner()
            .experiment
            .unwrap()
            .id;
        let links = agent.links();
        assert!(!links.is_empty());
        assert!(
            list_as(&new, addr, Some("ops2")).await.is_err(),
            "the new CA is not in force yet"
        );
        install(&new);
        agent.signal(Signal::SIGHUP);
        assert!(
            faultline_tests::wait_for(Duration::from_secs(5), || agent
                .log()
                .contains("roles reloaded")),
            "{}",
            agent.log()
        );
        assert!(
            list_as(&old, addr, Some("ops")).await.is_err(),
            "the old CA's client was served"
        );
        let mut ops2 = client(&new, addr, "ops2").await;
        assert_eq!(
            state_of(&mut ops2, &id).await,
            running(),
            "the experiment did not survive"
        );
        assert_eq!(agent.links(), links, "the reload changed the attachments");
        // A broken file: the reload is refused, the configuration in force stays.
        std::fs::write(live.path("ca.pem"), "not a certificate").unwrap();
        agent.signal(Signal::SIGHUP);
        assert!(
            faultline_tests::wait_for(Duration::from_secs(5), || agent
                .log()
                .contains("not reloaded")),
            "{}",
            agent.log()
        );
        assert_eq!(list_as(&new, addr, Some("ops2")).await, Ok(1));
        ops2.stop_experiment(pb::StopExperimentRequest { id })
            .await
            .expect("stop");
    });
}

/// Opens `n` TCP connections that never start a handshake, and waits
/// until the agent has accepted them all: a connection the client sees as
/// open may still wait in the listener's queue (or, past the queue's
/// length, half-open), not yet counted against the limit.
fn idle(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let held = (0..n)
        .map(|_| TcpStream::connect(addr).expect("idle connection"))
        .collect();
    let ss = |args: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("ss -Hnt {args} 'sport = :{}'", addr.port()))
            .output()
            .expect("run ss");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let accepted = faultline_tests::wait_for(Duration::from_secs(10), || {
        let queued = ss("-l");
        let queue: u32 = queued
            .split_whitespace()
            .nth(1)
            .and_then(|q| q.parse().ok())
            .unwrap_or(1);
        queue == 0 && ss("state syn-recv").trim().is_empty()
    });
    assert!(
        accepted,
        "the agent did not accept {n} connections within 10 s"
    );
    held
}

#[test]
fn idle_connections_do_not_starve_a_real_client_and_the_limit_and_timeout_hold() {
    if skip_in_vm() {
        return;
    }
    require_root().unwrap();
    // 1,000 idle connections and more: raise this process's and the agent's file limit.
    let lim = libc::rlimit {
        rlim_cur: 8192,
        rlim_max: 8192,
    };
    // SAFETY: a plain syscall on a valid struct.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) };
    assert_eq!(rc, 0, "setrlimit");
    let c = CertDir::init(&[]);
    c.issue("vic", "viewer");
    let addr = free_port(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut args = c.agent_args(addr);
    args.extend(
        [
            "--max-connections",
            "1010",
            "--tls-handshake-timeout",
            "8s",
            "--log",
            "info,faultline_agent::remote=debug",
        ]
        .map(String::from),
    );
    let agent = Agent::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
    rt().block_on(async {
        let t0 = Instant::now();
        let held = idle(addr, 1000);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t = Instant::now();
        assert_eq!(list_as(&c, addr, Some("vic")).await, Ok(0));
        let served = t.elapsed();
        assert!(
            served < Duration::from_millis(100),
            "served in {served:?} beside 1,000 idle connections"
        );
        // At the limit: a new connection is closed at once. (First the
        // served client's connection closes: its channel's task runs here.)
        tokio::time::sleep(Duration::from_millis(300)).await;
        let more = idle(addr, 10);
        let t = Instant::now();
        let r = list_as(&c, addr, Some("vic")).await;
        assert!(
            r.is_err(),
            "served beyond the connection limit: {r:?}, after {:?}; log:\n{}",
            t0.elapsed(),
            agent
                .log()
                .lines()
                .filter(|l| l.contains("limit") || l.contains("accept"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "refused only after {:?}",
            t.elapsed()
        );
        // The handshake timeout closes the idle ones: served again.
        let t = Instant::now();
        while list_as(&c, addr, Some("vic")).await.is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "the idle connections were never closed"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        drop((held, more));
    });
    drop(agent);
}

#[test]
fn on_the_unix_socket_root_is_admin_and_a_configured_group_is_a_viewer() {
    if skip_in_vm() {
        return;
    }
    require_root().unwrap();
    let dir = std::env::temp_dir().join(format!("fl-mtls-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let roles = dir.join("roles.toml");
    std::fs::write(&roles, "[unix_groups]\nnogroup = \"viewer\"\n").unwrap();
    let agent = Agent::start_with(&["--roles", roles.to_str().unwrap()]);
    let meta = std::fs::metadata(&agent.socket).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o660,
        "the socket is not shared with the group"
    );
    let nogroup = nix::unistd::Group::from_name("nogroup")
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), nogroup);
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(bin("faultctl"))
            .arg("--socket")
            .arg(&agent.socket)
            .args(args)
            .output()
            .unwrap()
    };
    let ls = as_nobody(&["ls"]);
    assert!(
        ls.status.success(),
        "the group's viewer cannot list: {}",
        String::from_utf8_lossy(&ls.stderr)
    );
    let cg = TestCgroup::new("mtls-unix");
    let inject = as_nobody(&[
        "inject",
        "syscall-error",
        "--cgroup",
        cg.path.to_str().unwrap(),
        "--syscall",
        "connect",
        "--errno",
        "ECONNREFUSED",
        "--duration",
        "30s",
    ]);
    let err = String::from_utf8_lossy(&inject.stderr);
    assert!(!inject.status.success(), "the viewer started an experiment");
    assert!(
        err.contains("permission denied") && err.contains("uid:65534") && err.contains("operator"),
        "{err}"
    );
    assert!(agent.links().is_empty());
    // Root is admin without any entry.
    rt().block_on(async {
        let mut root = agent.client().await;
        root.stop_all(pb::StopAllRequest::default())
            .await
            .expect("root stops all");
    });
    let entries = audit(&agent);
    assert_eq!(entries.len(), 2, "{entries:#?}");
    assert_eq!(entries[0]["identity"], "uid:65534");
    assert_eq!(entries[0]["peer"], "unix");
    assert_eq!(entries[1]["identity"], "uid:0");
    assert_eq!(entries[1]["outcome"], "ok");
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}
