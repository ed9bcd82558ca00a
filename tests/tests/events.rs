//! The event stream under load: a subscriber that falls behind is told so
//! and still learns how every experiment it watched ended.
#![expect(
    unused_crate_dependencies,
    reason = "each integration test is its own crate; the package's dependencies serve them all"
)]

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use faultline_proto::v1 as pb;
use faultline_tests::*;
use tokio_stream::StreamExt as _;

/// Experiments in the flood (each one a `started` and a `stopped` event).
const FLOOD: usize = 5000;
/// Clients starting and stopping them at once.
const WORKERS: usize = 4;

fn dry_run(cg: &TestCgroup, name: &str, duration: Duration) -> pb::StartExperimentRequest {
    let mut req = experiment(
        connect_error("ECONNREFUSED", 1.0, 9, ""),
        cgroup_target(cg),
        duration,
    );
    if let Some(spec) = req.spec.as_mut() {
        spec.dry_run = true;
        spec.name = name.into();
    }
    req
}

fn is_end(t: pb::EventType) -> bool {
    matches!(
        t,
        pb::EventType::Expired | pb::EventType::Stopped | pb::EventType::Failed
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lagging_subscriber_gets_lagged_and_every_final_state() {
    require_root().unwrap();
    if in_vm() {
        eprintln!("SKIP in the VM: the event stream is the same on every kernel");
        return;
    }
    let agent = Agent::start();
    let mut c = agent.client().await;
    let cg = TestCgroup::new("lagging");
    let opened = Instant::now();
    // Opened, then not read until the flood has passed.
    let mut subscriber = pb::fault_service_client::FaultServiceClient::new(
        small_window_channel(&agent.socket).await.unwrap(),
    );
    let mut stream = subscriber
        .watch_events(pb::WatchEventsRequest {
            experiment_id: String::new(),
            counters_interval_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    // Announced to the stream before it stalls; it ends in the middle of the
    // flood, so its `stopped` falls out of the broadcast and more than the
    // records' 1000 finished experiments end after it.
    let watched = start(&mut c, dry_run(&cg, "watched", Duration::from_secs(120))).await;

    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let mut c = agent.client().await;
        let cg_req = dry_run(&cg, "flood", Duration::from_secs(120));
        let watched = (w == 0).then(|| watched.id.clone());
        workers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..FLOOD / WORKERS {
                let e = start(&mut c, cg_req.clone()).await;
                c.stop_experiment(pb::StopExperimentRequest { id: e.id.clone() })
                    .await
                    .unwrap();
                ids.push(e.id);
                if i == FLOOD / WORKERS / 4
                    && let Some(id) = &watched
                {
                    c.stop_experiment(pb::StopExperimentRequest { id: id.clone() })
                        .await
                        .unwrap();
                }
            }
            ids
        }));
    }
    let mut flood = HashSet::new();
    for w in workers {
        flood.extend(w.await.unwrap());
    }
    let emitted = 2 * FLOOD as u64 + 2;
    eprintln!("{emitted} events in {:?}", opened.elapsed());
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(opened.elapsed())).await;

    // Read until the stream has been quiet for a while.
    let mut events = Vec::new();
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(3), stream.next()).await {
        let ev = ev.unwrap();
        if ev.r#type() != pb::EventType::Counters {
            events.push(ev);
        }
    }
    let lag_at = events
        .iter()
        .position(|e| e.r#type() == pb::EventType::Lagged)
        .unwrap_or_else(|| panic!("no lagged event among {} events", events.len()));
    let lagged = &events[lag_at];
    assert!(lagged.experiment.is_none(), "{lagged:?}");
    assert_eq!(
        events
            .iter()
            .filter(|e| e.r#type() == pb::EventType::Lagged)
            .count(),
        1,
        "one stall, one lagged event"
    );
    // Before the notice came only events from the broadcast; after it, the
    // broadcast's last 1024 (the agent's `limits::EVENT_BUFFER`) survived. The loss is what lies between.
    let lost = lagged.lost;
    let before = lag_at as u64;
    eprintln!(
        "{before} events before lagged, lost={lost}, {} after",
        events.len() - lag_at - 1
    );
    assert!(
        lost > 0 && lost <= emitted - before && lost + 1024 + before >= emitted,
        "lost={lost} with {before} events delivered of {emitted}"
    );

    // Every experiment announced to the stream ends in it, exactly once,
    // and nothing about it follows its end.
    let mut started = HashSet::new();
    let mut ended: HashMap<String, pb::Experiment> = HashMap::new();
    for ev in &events {
        let Some(e) = &ev.experiment else { continue };
        assert!(
            !ended.contains_key(&e.id),
            "{:?} for {} after its end",
            ev.r#type(),
            e.id
        );
        if ev.r#type() == pb::EventType::Started {
            started.insert(e.id.clone());
        } else if is_end(ev.r#type()) {
            ended.insert(e.id.clone(), e.clone());
        }
    }
    assert!(
        started.contains(&watched.id),
        "the watched experiment's start"
    );
    let final_state = ended
        .get(&watched.id)
        .unwrap_or_else(|| panic!("no final state for the watched experiment {}", watched.id));
    assert_eq!(final_state.state(), pb::ExperimentState::Stopped);
    assert!(
        events[lag_at + 1..].iter().any(
            |e| is_end(e.r#type()) && e.experiment.as_ref().is_some_and(|x| x.id == watched.id)
        ),
        "the watched experiment's end was lost with the broadcast and comes again after lagged"
    );
    let unended: Vec<&String> = started
        .iter()
        .filter(|id| !ended.contains_key(*id))
        .collect();
    assert!(
        unended.is_empty(),
        "{} announced experiments with no end, e.g. {:?}",
        unended.len(),
        unended.first()
    );
    // The stream's last experiments arrived after the notice, ended.
    assert!(
        events[lag_at + 1..]
            .iter()
            .filter_map(|e| e.experiment.as_ref())
            .any(|e| flood.contains(&e.id) && ended.contains_key(&e.id)),
        "final states follow the lagged event"
    );
}
