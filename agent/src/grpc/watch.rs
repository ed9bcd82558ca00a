//! One `WatchEvents` stream: the engine's events for the experiments it
//! watches, counters on a timer, and, when it falls behind the engine's
//! broadcast, an explicit `lagged` event followed by the final states it
//! may have missed, read again from the records.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, SystemTime},
};

use faultline_proto::v1 as pb;
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tonic::Status;

use super::convert::{event_to_proto, ms};
use crate::engine::{EngineHandle, Event, EventKind, ExperimentView};

/// Experiments the stream has announced as running and not yet seen end:
/// pinned in the records, so their end survives a lag; unpinned on drop.
struct Announced {
    engine: EngineHandle,
    ids: HashSet<String>,
}

impl Announced {
    fn insert(&mut self, id: &str) {
        if !self.ids.contains(id) && self.engine.pin(id) {
            self.ids.insert(id.to_owned());
        }
    }

    fn remove(&mut self, id: &str) {
        if self.ids.remove(id) {
            self.engine.unpin(id);
        }
    }
}

impl Drop for Announced {
    fn drop(&mut self) {
        for id in &self.ids {
            self.engine.unpin(id);
        }
    }
}

/// What the stream delivered itself after a lag, so the same event still
/// waiting in the broadcast is not passed on twice.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Delivered {
    Started,
    Ended,
}

fn event(kind: EventKind, experiment: ExperimentView) -> Event {
    Event {
        kind,
        seq: 0,
        at: SystemTime::now(),
        message: experiment.message.clone(),
        experiment,
    }
}

fn lagged(lost: u64) -> pb::Event {
    pb::Event {
        r#type: pb::EventType::Lagged.into(),
        at_ms: ms(SystemTime::now()),
        experiment: None,
        message: format!("this stream fell behind; {lost} events were dropped"),
        lost,
    }
}

/// Runs the stream until its client goes or the engine's broadcast closes.
pub async fn run(
    engine: EngineHandle,
    filter: String,
    period: Duration,
    tx: mpsc::Sender<Result<pb::Event, Status>>,
) {
    let wanted = |id: &str| filter.is_empty() || filter == id;
    let (mut events, mut last_seq) = engine.subscribe();
    // Counters go out only for experiments whose Started event this
    // stream has passed on (or that ran before it opened), so a tick
    // between arming and the Started broadcast cannot come first.
    let ids = engine.pin_running(&wanted).into_iter().collect();
    let mut announced = Announced {
        engine: engine.clone(),
        ids,
    };
    let mut delivered: HashMap<String, Delivered> = HashMap::new();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let out: Vec<pb::Event> = tokio::select! {
            () = tx.closed() => break,
            ev = events.recv() => match ev {
                Ok(ev) => {
                    last_seq = ev.seq;
                    let id = &ev.experiment.id;
                    if !wanted(id) {
                        continue;
                    }
                    match (delivered.get(id).copied(), ev.kind) {
                        (Some(Delivered::Ended), _) | (Some(Delivered::Started), EventKind::Started) => continue,
                        (Some(Delivered::Started), _) => {
                            delivered.remove(id);
                        }
                        (None, _) => {}
                    }
                    match ev.kind {
                        EventKind::Started => announced.insert(id),
                        EventKind::Counters => {}
                        _ => announced.remove(id),
                    }
                    vec![event_to_proto(&ev)]
                }
                Err(RecvError::Lagged(lost)) => {
                    let c = engine.catch_up(last_seq, &|id| announced.ids.contains(id), &wanted);
                    // Pinned by catch_up for this stream.
                    announced.ids.extend(c.started.iter().map(|v| v.id.clone()));
                    delivered.clear();
                    let mut out = vec![lagged(lost)];
                    for (kind, v) in c.ended {
                        announced.remove(&v.id);
                        delivered.insert(v.id.clone(), Delivered::Ended);
                        out.push(event_to_proto(&event(kind, v)));
                    }
                    for v in c.started {
                        delivered.insert(v.id.clone(), Delivered::Started);
                        out.push(event_to_proto(&event(EventKind::Started, v)));
                    }
                    out
                }
                Err(RecvError::Closed) => break,
            },
            _ = tick.tick() => {
                engine.running_ids()
                    .iter()
                    .filter(|id| wanted(id) && announced.ids.contains(*id))
                    .filter_map(|id| engine.view(id))
                    .map(|v| event_to_proto(&event(EventKind::Counters, v)))
                    .collect()
            }
        };
        for ev in out {
            if tx.send(Ok(ev)).await.is_err() {
                return;
            }
        }
    }
}
