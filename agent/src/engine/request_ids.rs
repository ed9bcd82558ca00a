//! Idempotent start: a client's request id, scoped by its identity, names
//! at most one experiment. A retry (a timeout on a lossy link, a controller
//! restarted) gets the experiment the first call started; calls that arrive
//! while the first is still starting wait for its outcome. A failed start
//! keeps nothing, so the next call with the id tries afresh.

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasher as _, RandomState},
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use tokio::sync::watch;

use crate::domain::{ExperimentSpec, SpecError};

/// The longest request id accepted, in bytes.
pub const MAX_LEN: usize = 128;
/// Started experiments whose request ids are remembered; the oldest go
/// first beyond this.
const KEEP: usize = 10_000;

/// A validated request id: 1 to 128 printable ASCII characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    /// None for an empty id (the request has none).
    pub fn parse(text: &str) -> Result<Option<Self>, SpecError> {
        if text.is_empty() {
            return Ok(None);
        }
        if text.len() > MAX_LEN {
            return Err(SpecError::invalid(
                "request_id",
                format!("{} bytes; at most {MAX_LEN}", text.len()),
            ));
        }
        if let Some(c) = text.chars().find(|c| !(' '..='~').contains(c)) {
            return Err(SpecError::invalid(
                "request_id",
                format!(
                    "{:?} is not printable ASCII",
                    c.escape_default().to_string()
                ),
            ));
        }
        Ok(Some(Self(text.to_owned())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What identifies "the same request": the spec and the lease asked for,
/// as a keyed hash (the table then holds no copies of specs, whose labels
/// may be large; a collision would need 2^64 tries at the caller's own id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint(u64);

impl Fingerprint {
    pub fn new(spec: &ExperimentSpec, lease: Option<Duration>) -> Self {
        static KEYS: OnceLock<RandomState> = OnceLock::new();
        let keys = KEYS.get_or_init(RandomState::new);
        Self(keys.hash_one(format!("{spec:?}/{lease:?}")))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Pending,
    Started(String),
    Failed,
}

struct Entry {
    fingerprint: Fingerprint,
    outcome: watch::Receiver<Outcome>,
}

type Key = (String, RequestId);

#[derive(Default)]
struct Table {
    map: HashMap<Key, Entry>,
    /// Started entries, oldest first, for pruning.
    started: VecDeque<Key>,
}

/// Request ids by caller identity.
#[derive(Clone, Default)]
pub struct RequestIds(Arc<Mutex<Table>>);

/// What a call with a request id does.
pub enum Claim {
    /// It is the first: it starts the experiment and reports the outcome.
    First(Ticket),
    /// The experiment this id started.
    Started(String),
    /// Another call with the id is starting it: wait for that.
    Wait(Waiter),
}

/// The id was used for a different request.
#[derive(Debug, thiserror::Error)]
#[error(
    "request_id {request_id:?} was already used by this caller for a different experiment spec or lease{}",
    experiment.as_ref().map(|id| format!(" (experiment {id})")).unwrap_or_default()
)]
pub struct Reused {
    pub request_id: String,
    pub experiment: Option<String>,
}

impl RequestIds {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn claim(
        &self,
        owner: &str,
        id: &RequestId,
        fingerprint: Fingerprint,
    ) -> Result<Claim, Reused> {
        let key = (owner.to_owned(), id.clone());
        let mut t = self.table();
        if let Some(e) = t.map.get(&key) {
            let outcome = e.outcome.borrow().clone();
            if e.fingerprint != fingerprint {
                return Err(Reused {
                    request_id: id.0.clone(),
                    experiment: match outcome {
                        Outcome::Started(x) => Some(x),
                        _ => None,
                    },
                });
            }
            return Ok(match outcome {
                Outcome::Started(x) => Claim::Started(x),
                // A failed entry is removed by its ticket; one still here
                // is pending.
                Outcome::Pending | Outcome::Failed => Claim::Wait(Waiter(e.outcome.clone())),
            });
        }
        let (tx, rx) = watch::channel(Outcome::Pending);
        t.map.insert(
            key.clone(),
            Entry {
                fingerprint,
                outcome: rx,
            },
        );
        Ok(Claim::First(Ticket {
            ids: self.clone(),
            key: Some(key),
            tx,
        }))
    }
}

/// The first call's duty to report its outcome; dropped unreported (the
/// start panicked), the id is released as after a failure.
pub struct Ticket {
    ids: RequestIds,
    key: Option<Key>,
    tx: watch::Sender<Outcome>,
}

impl Ticket {
    pub fn started(mut self, experiment: &str) {
        let Some(key) = self.key.take() else { return };
        let mut t = self.ids.table();
        self.tx
            .send_replace(Outcome::Started(experiment.to_owned()));
        t.started.push_back(key);
        while t.started.len() > KEEP {
            if let Some(old) = t.started.pop_front() {
                t.map.remove(&old);
            }
        }
    }

    fn release(&mut self) {
        if let Some(key) = self.key.take() {
            self.ids.table().map.remove(&key);
            self.tx.send_replace(Outcome::Failed);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.release();
    }
}

/// A later call waiting for the first one's outcome.
pub struct Waiter(watch::Receiver<Outcome>);

impl Waiter {
    /// The experiment the first call started, or None if it failed (the
    /// caller then claims the id again, and may be the first this time).
    pub async fn outcome(mut self) -> Option<String> {
        let Ok(o) = self.0.wait_for(|o| *o != Outcome::Pending).await else {
            return None;
        };
        match &*o {
            Outcome::Started(id) => Some(id.clone()),
            Outcome::Pending | Outcome::Failed => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(secs: u64) -> Fingerprint {
        let spec = ExperimentSpec {
            name: "x".into(),
            faults: Vec::new(),
            target: crate::domain::Target::default(),
            duration: Duration::from_secs(secs),
            dry_run: false,
            labels: std::collections::BTreeMap::new(),
            impact: None,
        };
        Fingerprint::new(&spec, None)
    }

    #[test]
    fn request_ids_are_printable_and_bounded() {
        assert_eq!(RequestId::parse("").unwrap(), None);
        assert!(RequestId::parse("run-1 of 3").unwrap().is_some());
        assert!(RequestId::parse(&"a".repeat(128)).unwrap().is_some());
        for bad in ["a".repeat(129), "a\nb".into(), "é".into(), "\u{7f}".into()] {
            assert_eq!(RequestId::parse(&bad).unwrap_err().field, "request_id");
        }
    }

    #[tokio::test]
    async fn the_first_call_starts_later_ones_wait_and_a_failure_keeps_nothing() {
        let ids = RequestIds::default();
        let id = RequestId::parse("r1").unwrap().unwrap();
        let Ok(Claim::First(ticket)) = ids.claim("uid:0", &id, fp(10)) else {
            panic!("the first claim is not first")
        };
        let Ok(Claim::Wait(w)) = ids.claim("uid:0", &id, fp(10)) else {
            panic!("a second claim does not wait")
        };
        // Another identity's id of the same name is its own.
        assert!(matches!(
            ids.claim("spiffe://b", &id, fp(10)),
            Ok(Claim::First(_))
        ));
        assert!(ids.claim("uid:0", &id, fp(11)).is_err(), "a different spec");
        drop(ticket);
        assert_eq!(w.outcome().await, None);
        let Ok(Claim::First(ticket)) = ids.claim("uid:0", &id, fp(10)) else {
            panic!("a failed start kept the id")
        };
        let Ok(Claim::Wait(w)) = ids.claim("uid:0", &id, fp(10)) else {
            panic!("a second claim does not wait")
        };
        ticket.started("exp-1");
        assert_eq!(w.outcome().await.as_deref(), Some("exp-1"));
        assert!(matches!(ids.claim("uid:0", &id, fp(10)), Ok(Claim::Started(x)) if x == "exp-1"));
        let e = ids.claim("uid:0", &id, fp(11)).err().unwrap();
        assert!(e.to_string().contains("exp-1"), "{e}");
    }
}
