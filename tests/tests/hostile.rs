//! Hostile input over the unix socket: 10,000 concurrent calls of every
//! sort (valid, invalid, oversized, pages, watchers that stop reading) get
//! the right codes, the agent's memory stays bounded, and nothing is left;
//! then a few hundred random specs leave nothing behind either.
#![expect(
    unused_crate_dependencies,
    reason = "each integration test is its own crate; the package's dependencies serve them all"
)]

use std::{
    collections::{BTreeMap, HashSet},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use faultline_proto::v1::{self as pb, fault_service_client::FaultServiceClient};
use faultline_tests::*;
use proptest::{
    prelude::*,
    strategy::ValueTree as _,
    test_runner::{Config, TestRunner},
};
use tonic::{Code, transport::Channel};

const CALLS: usize = 10_000;
const CONNECTIONS: usize = 32;
/// For the 1,250 watchers that never read: at most 79 streams on each.
const WATCH_CONNECTIONS: usize = 16;
/// What the mix may add to the agent's resident memory: 10,000 calls in
/// flight at once (about 13 KiB each, measured: HTTP/2 stream state and
/// tonic's buffers) and 1,250 open streams. Before the limits it grew by
/// 530 MiB, holding every 1 MB label it accepted (issue 13).
const RSS_GROWTH_BOUND_KIB: u64 = 192 * 1024;
/// What a second, identical mix may add: nothing accumulates (experiments,
/// events and answers are bounded by `limits.rs`), so only allocator noise.
const RSS_REPEAT_BOUND_KIB: u64 = 64 * 1024;
const MAX_RUNNING: usize = 8;

/// How the mix reaches the agent. The TCP/mTLS listener adds a variant (and
/// its unauthenticated calls) here.
enum Via {
    Unix(PathBuf),
}

impl Via {
    async fn channel(&self, small_window: bool) -> Channel {
        match self {
            Self::Unix(path) if small_window => small_window_channel(path).await.unwrap(),
            Self::Unix(path) => unix_channel(path).await.unwrap(),
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn spec(cg: &TestCgroup, fault: pb::fault_spec::Kind) -> pb::ExperimentSpec {
    pb::ExperimentSpec {
        name: "hostile".into(),
        faults: vec![fault.into()],
        target: Some(cgroup_target(cg)),
        duration_ms: 3_000,
        dry_run: true,
        ..Default::default()
    }
}

fn start_req(spec: pb::ExperimentSpec) -> pb::StartExperimentRequest {
    pb::StartExperimentRequest {
        spec: Some(spec),
        ..Default::default()
    }
}

/// Every experiment, page by page, checking each page's bounds.
async fn list_all(c: &mut FaultServiceClient<Channel>, running_only: bool) -> Vec<pb::Experiment> {
    list_pages(c, running_only, 0).await
}

async fn list_pages(
    c: &mut FaultServiceClient<Channel>,
    running_only: bool,
    page_size: u32,
) -> Vec<pb::Experiment> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = c
            .list_experiments(pb::ListExperimentsRequest {
                running_only,
                page_size,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        let size = if page_size == 0 {
            100
        } else {
            page_size as usize
        };
        assert!(page.experiments.len() <= size, "a page has at most {size}");
        out.extend(page.experiments);
        if page.next_page_token.is_empty() {
            return out;
        }
        page_token = page.next_page_token;
    }
}

/// The agent holds nothing beyond its idle set.
async fn assert_idle(agent: &Agent, c: &mut FaultServiceClient<Channel>, idle: &HashSet<u32>) {
    c.stop_all(pb::StopAllRequest {}).await.unwrap();
    assert!(
        list_all(c, true).await.is_empty(),
        "no experiment is left running"
    );
    assert!(
        wait_for(Duration::from_secs(5), || agent.links().is_empty()),
        "links left: {:?}",
        agent.links()
    );
    let extra: Vec<u32> = agent
        .programs()
        .into_iter()
        .filter(|p| !idle.contains(p))
        .collect();
    assert!(extra.is_empty(), "programs beyond the idle set: {extra:?}");
}

/// Loads every program group (GetCapabilities) so the idle set is stable.
async fn idle_set(agent: &Agent, c: &mut FaultServiceClient<Channel>) -> HashSet<u32> {
    c.get_capabilities(pb::GetCapabilitiesRequest::default())
        .await
        .unwrap();
    agent.programs().into_iter().collect()
}

fn agent_with_limits() -> (Agent, tempdir::Dir) {
    let dir = tempdir::Dir::new();
    let cfg = dir.0.join("limits.toml");
    std::fs::write(
        &cfg,
        format!("max_running_experiments = {MAX_RUNNING}\nkeep_ended_experiments = 300\n"),
    )
    .unwrap();
    let agent = Agent::start_with(&["--config", cfg.to_str().unwrap()]);
    (agent, dir)
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            let d = std::env::temp_dir().join(format!("fl-hostile-{}", std::process::id()));
            std::fs::create_dir_all(&d).unwrap();
            Self(d)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// What one call of the mix is, and the codes it may get.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Call {
    Valid,
    NanProbability,
    BigLabel,
    Oversized,
    List,
    BadPage,
    Watch,
    Unknown,
}

const MIX: [Call; 8] = [
    Call::Valid,
    Call::NanProbability,
    Call::BigLabel,
    Call::Oversized,
    Call::List,
    Call::BadPage,
    Call::Watch,
    Call::Unknown,
];

fn check(call: Call, r: &Result<(), tonic::Status>) -> Result<(), String> {
    let named = |s: &tonic::Status, code: Code, field: &str| {
        if s.code() == code && s.message().starts_with(field) {
            Ok(())
        } else {
            Err(format!(
                "{call:?}: expected {code:?} naming {field}, got {:?}: {}",
                s.code(),
                s.message()
            ))
        }
    };
    match (call, r) {
        (Call::Valid | Call::List | Call::Watch, Ok(())) => Ok(()),
        // More than MAX_RUNNING at once.
        (Call::Valid, Err(s))
            if s.code() == Code::ResourceExhausted
                && s.message().contains("max_running_experiments") =>
        {
            Ok(())
        }
        (Call::NanProbability, Err(s)) => named(
            s,
            Code::InvalidArgument,
            "spec.faults[0].syscall_error.probability",
        ),
        (Call::BigLabel, Err(s)) => named(s, Code::InvalidArgument, "spec.labels[\"big\"]"),
        // tonic's answer to a request beyond max_decoding_message_size.
        (Call::Oversized, Err(s))
            if s.code() == Code::OutOfRange && s.message().contains("too large") =>
        {
            Ok(())
        }
        (Call::BadPage, Err(s)) => named(s, Code::InvalidArgument, "page_token"),
        (Call::Unknown, Err(s)) if s.code() == Code::NotFound => Ok(()),
        (call, r) => Err(format!(
            "{call:?}: unexpected {:?}",
            r.as_ref()
                .map_err(|s| (s.code(), s.message().chars().take(200).collect::<String>()))
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_hostile_calls_get_the_right_codes_and_memory_stays_bounded() {
    require_root().unwrap();
    if in_vm() {
        eprintln!("SKIP in the VM: host-only suite");
        return;
    }
    let (agent, _dir) = agent_with_limits();
    let via = Via::Unix(agent.socket.clone());
    let mut c = agent.client().await;
    let cg = TestCgroup::new("hostile");
    let idle = idle_set(&agent, &mut c).await;
    let ok = || syscall_error("connect", "ECONNREFUSED", 0.5, 8080, "");
    // One experiment first, so what a start loads counts as idle.
    start(&mut c, start_req(spec(&cg, ok()))).await;
    c.stop_all(pb::StopAllRequest {}).await.unwrap();
    let rss_before = rss_kib(agent.pid());
    let mut rss_after = Vec::new();
    // The warm-up's, then the mixes' valid starts.
    let mut started = 1;
    // Twice: the first shows what 10,000 calls in flight cost, the second
    // that nothing accumulates from one mix to the next.
    for round in 1..=2 {
        let mut channels = Vec::new();
        for i in 0..CONNECTIONS {
            channels.push(via.channel(i % 4 == 3).await);
        }
        // The streams that are never read get connections of their own:
        // their unread events fill a connection's HTTP/2 window, which would
        // stall every other answer on it, and the agent serves at most 128
        // concurrent streams per connection (more wait for one to end).
        let mut watch_channels = Vec::new();
        for _ in 0..WATCH_CONNECTIONS {
            watch_channels.push(via.channel(false).await);
        }
        let watchers = Arc::new(Mutex::new(Vec::new()));
        let t0 = Instant::now();
        let mut tasks = Vec::with_capacity(CALLS);
        for i in 0..CALLS {
            let call = MIX[i % MIX.len()];
            let channel = if call == Call::Watch {
                &watch_channels[(i / MIX.len()) % WATCH_CONNECTIONS]
            } else {
                &channels[i % CONNECTIONS]
            };
            let mut c = FaultServiceClient::new(channel.clone());
            let valid = spec(&cg, ok());
            let watchers = watchers.clone();
            tasks.push(tokio::spawn(async move {
                let r = match call {
                    Call::Valid => c.start_experiment(start_req(valid)).await.map(drop),
                    Call::NanProbability => {
                        let bad = pb::ExperimentSpec {
                            faults: vec![syscall_error("connect", "EIO", f64::NAN, 0, "").into()],
                            ..valid
                        };
                        c.start_experiment(start_req(bad)).await.map(drop)
                    }
                    Call::BigLabel | Call::Oversized => {
                        // 16 kB is refused by validation (a label value has at
                        // most 256 bytes); 1 MB (the label) is beyond
                        // the 256 KiB request limit and refused unread.
                        let n = if call == Call::BigLabel {
                            16_000
                        } else {
                            1_000_000
                        };
                        let big = pb::ExperimentSpec {
                            labels: [("big".to_owned(), "x".repeat(n))].into(),
                            ..valid
                        };
                        c.start_experiment(start_req(big)).await.map(drop)
                    }
                    Call::List => c
                        .list_experiments(pb::ListExperimentsRequest {
                            page_size: 1000,
                            ..Default::default()
                        })
                        .await
                        .map(drop),
                    Call::BadPage => c
                        .list_experiments(pb::ListExperimentsRequest {
                            page_token: "not-a-token".into(),
                            ..Default::default()
                        })
                        .await
                        .map(drop),
                    Call::Watch => c
                        .watch_events(pb::WatchEventsRequest {
                            experiment_id: String::new(),
                            counters_interval_ms: 100,
                        })
                        .await
                        .map(|s| {
                            // Never read: held open until the mix is over.
                            watchers.lock().unwrap().push(s.into_inner());
                        }),
                    Call::Unknown => c
                        .get_experiment(pb::GetExperimentRequest {
                            id: "exp-000000000000".into(),
                        })
                        .await
                        .map(drop),
                };
                (
                    call,
                    r.map_err(|s| tonic::Status::new(s.code(), s.message().to_owned())),
                )
            }));
        }
        let mut tally: BTreeMap<(Call, String), usize> = BTreeMap::new();
        let mut wrong = Vec::new();
        for t in tasks {
            let (call, r) = t.await.expect("no call task panicked");
            let code = r
                .as_ref()
                .map_or_else(|s| format!("{:?}", s.code()), |()| "Ok".into());
            *tally.entry((call, code)).or_default() += 1;
            if let Err(e) = check(call, &r) {
                wrong.push(e);
            }
        }
        let took = t0.elapsed();
        // Let the watchers' streams fill while they do not read.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_during = rss_kib(agent.pid());
        let held = watchers.lock().unwrap().len();
        eprintln!(
            "round {round}: {CALLS} calls over {CONNECTIONS} connections in {took:.2?}: {:.0} calls/s; {held} watchers not reading",
            CALLS as f64 / took.as_secs_f64()
        );
        for ((call, code), n) in &tally {
            eprintln!("  {call:?} {code}: {n}");
        }
        eprintln!(
            "agent RSS: {} KiB before, {} KiB after the mix (watchers still open), +{} KiB",
            rss_before,
            rss_during,
            rss_during.saturating_sub(rss_before)
        );
        assert!(
            wrong.is_empty(),
            "{} wrong answers, e.g. {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
        assert_eq!(held, CALLS / MIX.len(), "every watch was answered");
        assert!(
            tally.contains_key(&(Call::Valid, "Ok".into())),
            "some valid starts ran: {tally:?}"
        );
        // The agent is still there and answers.
        assert!(agent.log().contains("serving"), "{}", agent.log());
        drop(watchers);
        drop(channels);
        assert_idle(&agent, &mut c, &idle).await;
        rss_after.push(rss_during);
        started += tally.get(&(Call::Valid, "Ok".into())).copied().unwrap_or(0);
    }
    let (first, second) = (rss_after[0], rss_after[1]);
    eprintln!(
        "agent RSS: {rss_before} KiB idle, {first} KiB after the first mix, {second} KiB after the second"
    );
    assert!(
        first.saturating_sub(rss_before) < RSS_GROWTH_BOUND_KIB,
        "agent RSS grew by {} KiB in the first mix (bound {RSS_GROWTH_BOUND_KIB} KiB)",
        first.saturating_sub(rss_before)
    );
    assert!(
        second.saturating_sub(first) < RSS_REPEAT_BOUND_KIB,
        "agent RSS grew by {} KiB more in the second mix (bound {RSS_REPEAT_BOUND_KIB} KiB)",
        second.saturating_sub(first)
    );
    // Every ended experiment is still listed, page by page, within the
    // configured number kept.
    // Every experiment is listed once, on pages of the default size and on
    // small pages that the token strings together; a page size beyond the
    // limit and a forged token are refused naming the field.
    let all = list_all(&mut c, false).await;
    assert_eq!(
        all.len(),
        started.min(300),
        "every started experiment, the ended ones within keep_ended_experiments"
    );
    let small = list_pages(&mut c, false, 7).await;
    let ids = |v: &[pb::Experiment]| v.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    assert_eq!(
        ids(&small),
        ids(&all),
        "small pages give the same experiments in the same order"
    );
    let unique: HashSet<String> = ids(&all).into_iter().collect();
    assert_eq!(unique.len(), all.len(), "no experiment on two pages");
    let s = c
        .list_experiments(pb::ListExperimentsRequest {
            page_size: 1001,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        s.code() == Code::InvalidArgument && s.message().starts_with("page_size"),
        "{s:?}"
    );
}

/// A few hundred random specs (every kind, odd values; targets only this
/// test's empty cgroup, junk names and this process; always dry runs, so
/// nothing on the host is touched) against a real agent: each is started or
/// refused with a field named, and nothing is left afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_specs_against_a_real_agent_leave_nothing() {
    require_root().unwrap();
    if in_vm() {
        eprintln!("SKIP in the VM: host-only suite");
        return;
    }
    let agent = Agent::start();
    let mut c = agent.client().await;
    let cg = TestCgroup::new("hostile-random");
    let idle = idle_set(&agent, &mut c).await;
    let text = || {
        prop_oneof![
            Just(String::new()),
            prop::sample::select(vec![
                "connect",
                "openat",
                "bind",
                "sendmsg",
                "getpid",
                "ECONNREFUSED",
                "EIO",
                "SIGUSR1",
                "tcp",
                "udp",
                "127.0.0.0/8",
                "10.0.0.0/40",
                "80-90",
                "example.com",
                "no-such-if0",
                "/no/such/faultline/path",
            ])
            .prop_map(String::from),
            "[ -~]{0,24}",
            (1000usize..100_000).prop_map(|n| "z".repeat(n)),
        ]
    };
    let prob = || prop_oneof![0.0..=1.0, Just(f64::NAN), Just(f64::INFINITY), any::<f64>()];
    let direction = || 0i32..5;
    let kind = prop_oneof![
        (text(), text(), prob(), 0u32..70_000, text()).prop_map(
            |(syscall, errno, probability, port, cidr)| {
                pb::fault_spec::Kind::SyscallError(pb::SyscallError {
                    syscall,
                    errno,
                    probability,
                    port,
                    cidr,
                    path: String::new(),
                })
            }
        ),
        (text(), text(), prob(), 0u64..5).prop_map(|(syscall, signal, probability, nth_call)| {
            pb::fault_spec::Kind::SyscallSignal(pb::SyscallSignal {
                syscall,
                signal,
                probability,
                nth_call,
            })
        }),
        (prob(), direction()).prop_map(
            |(probability, direction)| pb::fault_spec::Kind::PacketLoss(pb::PacketLoss {
                probability,
                burst_length: 0.0,
                direction,
                r#match: None,
            })
        ),
        (direction(), text()).prop_map(|(direction, protocol)| pb::fault_spec::Kind::Blackhole(
            pb::Blackhole {
                direction,
                r#match: Some(pb::PacketMatch {
                    protocol,
                    ..Default::default()
                }),
            }
        )),
        (prob(), direction()).prop_map(|(probability, direction)| pb::fault_spec::Kind::Duplicate(
            pb::Duplicate {
                probability,
                direction,
                r#match: None
            }
        )),
        (any::<u64>(), any::<u32>(), direction()).prop_map(
            |(rate_bits_per_sec, burst_bytes, direction)| pb::fault_spec::Kind::Bandwidth(
                pb::Bandwidth {
                    rate_bits_per_sec,
                    burst_bytes,
                    direction,
                    r#match: None,
                }
            )
        ),
        (text(), 0i32..5, prob()).prop_map(|(domain, failure, probability)| {
            pb::fault_spec::Kind::DnsError(pb::DnsError {
                domain,
                failure,
                probability,
                resolver_cidr: String::new(),
            })
        }),
        (prob(), 0u32..3).prop_map(|(l, cpus)| pb::fault_spec::Kind::CpuPressure(
            pb::CpuPressure {
                load_percent: l * 100.0,
                cpus,
                ..Default::default()
            }
        )),
        any::<u64>().prop_map(|size_bytes| pb::fault_spec::Kind::MemoryPressure(
            pb::MemoryPressure {
                size_bytes,
                ..Default::default()
            }
        )),
        (text(), any::<u64>()).prop_map(|(path, size_bytes)| pb::fault_spec::Kind::DiskFill(
            pb::DiskFill {
                path,
                size_bytes,
                ..Default::default()
            }
        )),
        (text(), 0u64..5000).prop_map(|(signal, interval_ms)| pb::fault_spec::Kind::ProcessKill(
            pb::ProcessKill {
                signal,
                interval_ms,
                ..Default::default()
            }
        )),
        Just(pb::fault_spec::Kind::ProcessPause(pb::ProcessPause {})),
    ];
    let cg_path = cg.path_str();
    // Valid ones too, so that attachments happen and must be undone.
    let valid = (0.0..=1.0f64, 0u16..=u16::MAX).prop_map(|(p, port)| {
        vec![
            syscall_error("connect", "ECONNREFUSED", p, port, "127.0.0.0/8"),
            packet_loss(p, 0.0, pb::Direction::Both, None),
        ]
    });
    let kinds = prop_oneof![1 => prop::collection::vec(kind, 0..3), 1 => valid];
    let target = prop_oneof![
        4 => Just(Some(pb::Target {
            cgroup: cg_path.clone(),
            ..Default::default()
        })),
        1 => text().prop_map(|interface| Some(pb::Target {
            interface,
            ..Default::default()
        })),
        1 => text().prop_map(|cgroup| Some(pb::Target {
            cgroup,
            ..Default::default()
        })),
        1 => Just(None),
    ];
    let strategy = (
        prop_oneof![3 => "[a-z]{0,12}", 1 => text()],
        kinds,
        target,
        prop_oneof![1 => Just(0u64), 6 => 1u64..2_000, 1 => any::<u64>()],
        prop_oneof![3 => Just(std::collections::HashMap::new()), 1 => prop::collection::hash_map(text(), text(), 0..3)],
    );
    let mut runner = TestRunner::new(Config::default());
    let (mut started, mut refused) = (0, BTreeMap::<String, usize>::new());
    for _ in 0..300 {
        let (name, kinds, target, duration_ms, labels) =
            strategy.new_tree(&mut runner).unwrap().current();
        let req = start_req(pb::ExperimentSpec {
            name,
            faults: kinds.into_iter().map(Into::into).collect(),
            target,
            duration_ms,
            dry_run: true,
            labels,
            impact: pb::ImpactMode::Off.into(),
        });
        match c.start_experiment(req).await {
            Ok(_) => started += 1,
            Err(s) => {
                // Several huge strings together exceed the request limit.
                let too_large = s.code() == Code::OutOfRange && s.message().contains("too large");
                // Valid, but the agent's slots or running limit are full.
                let full = s.code() == Code::ResourceExhausted;
                assert!(
                    too_large
                        || full
                        || matches!(
                            s.code(),
                            Code::InvalidArgument
                                | Code::FailedPrecondition
                                | Code::PermissionDenied
                        ) && s.message().starts_with("spec"),
                    "{:?}: {}",
                    s.code(),
                    s.message()
                );
                *refused.entry(format!("{:?}", s.code())).or_default() += 1;
            }
        }
    }
    eprintln!("300 random specs: {started} started, refused {refused:?}");
    assert_idle(&agent, &mut c, &idle).await;
}
