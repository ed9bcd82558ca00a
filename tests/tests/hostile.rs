//! Hostile input: 10,000 concurrent calls of every sort (valid, invalid,
//! oversized, pages, watchers that stop reading; over the unix socket and
//! mutual TLS, as root, an operator and a certificate without a role) and
//! calls without a client certificate get the right codes, the agent's
//! memory stays bounded, and nothing is left; then a few hundred random
//! specs leave nothing behind either.
#![expect(
    unused_crate_dependencies,
    reason = "each integration test is its own crate; the package's dependencies serve them all"
)]

use std::{
    collections::{BTreeMap, HashSet},
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
use tonic::Code;

#[path = "hostile/support.rs"]
mod support;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_hostile_calls_get_the_right_codes_and_memory_stays_bounded() {
    require_root().unwrap();
    if in_vm() {
        eprintln!("SKIP in the VM: host-only suite");
        return;
    }
    let (agent, via, _dir) = agent_with_limits();
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
            let who = Via::who(i);
            channels.push((who, via.channel(who, i % 4 == 3).await));
        }
        // The streams that are never read get connections of their own:
        // their unread events fill a connection's HTTP/2 window, which would
        // stall every other answer on it, and the agent serves at most 128
        // concurrent streams per connection (more wait for one to end).
        let mut watch_channels = Vec::new();
        for _ in 0..WATCH_CONNECTIONS {
            watch_channels.push(via.channel(Who::Root, false).await);
        }
        let watchers = Arc::new(Mutex::new(Vec::new()));
        let t0 = Instant::now();
        let mut tasks = Vec::with_capacity(CALLS);
        for i in 0..CALLS {
            let call = MIX[i % MIX.len()];
            // A whole mix per connection in turn, so every connection (root,
            // operator, no role) gets every call.
            let (who, channel) = if call == Call::Watch {
                (
                    Who::Root,
                    &watch_channels[(i / MIX.len()) % WATCH_CONNECTIONS],
                )
            } else {
                let (who, channel) = &channels[(i / MIX.len()) % CONNECTIONS];
                (*who, channel)
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
                    who,
                    call,
                    r.map_err(|s| tonic::Status::new(s.code(), s.message().to_owned())),
                )
            }));
        }
        // Beside the mix: calls over TCP without a client certificate.
        let strangers: Vec<_> = (0..NO_CERT_CALLS)
            .map(|_| {
                let stranger = via.no_certificate();
                tokio::spawn(stranger.call())
            })
            .collect();
        let mut tally: BTreeMap<(Who, Call, String), usize> = BTreeMap::new();
        let mut wrong = Vec::new();
        for t in strangers {
            if let Err(e) = t.await.expect("no stranger task panicked") {
                wrong.push(e);
            }
        }
        for t in tasks {
            let (who, call, r) = t.await.expect("no call task panicked");
            let code = r
                .as_ref()
                .map_or_else(|s| format!("{:?}", s.code()), |()| "Ok".into());
            *tally.entry((who, call, code)).or_default() += 1;
            if let Err(e) = check(who, call, &r) {
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
        eprintln!("  {NO_CERT_CALLS} calls without a client certificate: refused at the handshake");
        for ((who, call, code), n) in &tally {
            eprintln!("  {who:?} {call:?} {code}: {n}");
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
            tally.contains_key(&(Who::Root, Call::Valid, "Ok".into()))
                && tally.contains_key(&(Who::Operator, Call::Valid, "Ok".into())),
            "some valid starts ran: {tally:?}"
        );
        // The agent is still there and answers.
        assert!(agent.log().contains("serving"), "{}", agent.log());
        drop(watchers);
        drop(channels);
        assert_idle(&agent, &mut c, &idle).await;
        rss_after.push(rss_during);
        started += [Who::Root, Who::Operator]
            .iter()
            .filter_map(|w| tally.get(&(*w, Call::Valid, "Ok".into())))
            .sum::<usize>();
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
