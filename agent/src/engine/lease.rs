//! Leases, the dead-man switch of a remote client: an experiment with a
//! lease is stopped when its renewals stop. Each lease is a precise timer
//! (a `watch` of its lapse instant that every renewal moves), not a poll,
//! so the experiment ends within moments of the TTL. The in-kernel deadline
//! still holds whatever happens here.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use tokio::{sync::watch, time::Instant};

use crate::domain::SpecError;

/// Shortest lease accepted: a renewal every TTL/3 must still be practical.
pub const MIN_TTL: Duration = Duration::from_millis(500);
/// Longest lease accepted: beyond an hour the dead-man switch means little.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// The lease of an experiment started over TCP unless configured.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15);

/// The lease an experiment is started with, as its metadata shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    pub ttl: Duration,
    /// When it lapses unless renewed.
    pub expires_at: SystemTime,
}

/// A TTL in the accepted range, or why not.
pub fn check_ttl(ttl: Duration) -> Result<Duration, String> {
    if (MIN_TTL..=MAX_TTL).contains(&ttl) {
        Ok(ttl)
    } else {
        Err(format!(
            "must be between {} and {}, got {}",
            humantime::format_duration(MIN_TTL),
            humantime::format_duration(MAX_TTL),
            humantime::format_duration(ttl)
        ))
    }
}

/// The lease a request gets: its own `lease_ttl_ms`, else the listener's
/// default (TCP: `default`; the unix socket: none).
pub fn from_wire(
    lease_ttl_ms: u32,
    remote: bool,
    default: Option<Duration>,
) -> Result<Option<Duration>, SpecError> {
    if lease_ttl_ms == 0 {
        return Ok(if remote { default } else { None });
    }
    let ttl = Duration::from_millis(u64::from(lease_ttl_ms));
    check_ttl(ttl)
        .map(Some)
        .map_err(|reason| SpecError::invalid("lease_ttl_ms", reason))
}

/// Why a lease was not renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotRenewed {
    NotFound,
    /// The experiment ended (its state's name).
    Ended(&'static str),
    NoLease,
    /// It lapsed a moment ago and the experiment is being stopped.
    Lapsed,
}

impl NotRenewed {
    pub fn reason(self) -> String {
        match self {
            Self::NotFound => "no experiment with this id".into(),
            Self::Ended(state) => format!("the experiment has ended ({state})"),
            Self::NoLease => "the experiment has no lease".into(),
            Self::Lapsed => "the lease expired; the experiment is being stopped".into(),
        }
    }
}

struct Timer {
    ttl: Duration,
    lapse: watch::Sender<Instant>,
}

/// The running experiments' lease timers, and how many leases expired.
#[derive(Default)]
pub struct Leases {
    timers: Mutex<HashMap<String, Timer>>,
    expiries: AtomicU64,
}

/// One lease's timer, awaited by its experiment's task.
pub struct Lapse(watch::Receiver<Instant>);

impl Lapse {
    /// Resolves once the lease's current lapse instant passes with no
    /// renewal since; never, once the lease is removed.
    pub async fn lapsed(&mut self) {
        loop {
            let at = *self.0.borrow_and_update();
            tokio::select! {
                () = tokio::time::sleep_until(at) => {
                    // A renewal that raced the timer wins.
                    if !self.0.has_changed().unwrap_or(false) {
                        return;
                    }
                }
                changed = self.0.changed() => {
                    if changed.is_err() {
                        return std::future::pending().await;
                    }
                }
            }
        }
    }
}

impl Leases {
    fn timers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Timer>> {
        self.timers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts `id`'s lease of `ttl`, counted from now.
    pub fn arm(&self, id: &str, ttl: Duration) -> Lapse {
        let (lapse, rx) = watch::channel(Instant::now() + ttl);
        self.timers().insert(id.to_owned(), Timer { ttl, lapse });
        Lapse(rx)
    }

    /// Moves `id`'s lapse to a TTL from now; the new expiry, or None if it
    /// has no timer (unknown, ended, no lease, or lapsed).
    pub fn renew(&self, id: &str) -> Option<LeaseInfo> {
        let timers = self.timers();
        let t = timers.get(id)?;
        t.lapse.send_replace(Instant::now() + t.ttl);
        Some(LeaseInfo {
            ttl: t.ttl,
            expires_at: SystemTime::now() + t.ttl,
        })
    }

    /// Drops `id`'s timer: its `Lapse` never fires after this.
    pub fn remove(&self, id: &str) {
        self.timers().remove(id);
    }

    pub(super) fn count_expiry(&self) {
        self.expiries.fetch_add(1, Ordering::Relaxed);
    }

    /// Experiments stopped because their lease expired, since start-up.
    pub fn expiries(&self) -> u64 {
        self.expiries.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_bounds_name_the_field() {
        assert_eq!(from_wire(0, false, Some(DEFAULT_TTL)), Ok(None));
        assert_eq!(from_wire(0, true, Some(DEFAULT_TTL)), Ok(Some(DEFAULT_TTL)));
        assert_eq!(from_wire(0, true, None), Ok(None));
        assert_eq!(
            from_wire(2000, false, None),
            Ok(Some(Duration::from_secs(2)))
        );
        for bad in [1, 499, 3_600_001] {
            let e = from_wire(bad, true, None).unwrap_err();
            assert_eq!(e.field, "lease_ttl_ms");
            assert!(e.reason.contains("between 500ms and 1h"), "{}", e.reason);
        }
    }

    // Real time (the crate has no tokio test-util): short TTLs, loose bounds.
    #[tokio::test]
    async fn a_lease_lapses_a_ttl_after_the_last_renewal() {
        let leases = Leases::default();
        let ttl = Duration::from_millis(300);
        let t0 = Instant::now();
        let mut lapse = leases.arm("a", ttl);
        // Renewed every TTL/3 for 3 TTLs: no lapse meanwhile.
        let renewer = async {
            for _ in 0..9 {
                tokio::time::sleep(ttl / 3).await;
                assert!(leases.renew("a").is_some());
            }
        };
        tokio::select! {
            () = lapse.lapsed() => panic!("lapsed while renewed, at {:?}", t0.elapsed()),
            () = renewer => {}
        }
        let last = Instant::now();
        lapse.lapsed().await;
        let took = last.elapsed();
        assert!(
            took >= ttl - Duration::from_millis(2) && took < ttl + Duration::from_millis(100),
            "lapsed {took:?} after the last renewal (TTL {ttl:?})"
        );
        assert_eq!(
            leases.expiries(),
            0,
            "counted by the engine's handle, not here"
        );
    }

    #[tokio::test]
    async fn a_removed_lease_never_lapses_and_cannot_be_renewed() {
        let leases = Leases::default();
        let mut lapse = leases.arm("a", Duration::from_millis(50));
        leases.remove("a");
        assert!(leases.renew("a").is_none());
        let r = tokio::time::timeout(Duration::from_millis(300), lapse.lapsed()).await;
        assert!(r.is_err(), "a removed lease lapsed");
        assert!(leases.renew("unknown").is_none());
    }
}
