//! Starting on a caller's behalf: its identity (the experiment's owner),
//! an optional request id that makes the start idempotent, and a lease.

use std::time::{Duration, SystemTime};

use super::{
    EngineError, EngineHandle, ExperimentView, Origin,
    lease::{LeaseInfo, NotRenewed},
    request_ids::{Claim, Fingerprint, RequestId},
};
use crate::domain::ExperimentSpec;

/// How a caller starts an experiment.
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// The caller's identity (`Caller::identity`); request ids are its own.
    pub owner: String,
    pub request_id: Option<RequestId>,
    /// None: no lease.
    pub lease: Option<Duration>,
}

impl EngineHandle {
    /// Starts `spec`, or, for a request id this owner used before with the
    /// same spec and lease, returns the experiment that call started
    /// (waiting for it if it is still starting).
    pub async fn start_as(
        &self,
        spec: ExperimentSpec,
        opts: StartOptions,
    ) -> Result<ExperimentView, EngineError> {
        let me = self.clone();
        let work = async move { me.start_idempotent(spec, opts).await };
        // Run to the end even if the caller goes away (a client timeout
        // drops the handler's future): a start cut short after arming would
        // leave an experiment without its timers and its request id
        // released, so that a retry started a second one.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => rt
                .spawn(work)
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())),
            Err(_) => work.await,
        }
    }

    async fn start_idempotent(
        &self,
        spec: ExperimentSpec,
        opts: StartOptions,
    ) -> Result<ExperimentView, EngineError> {
        let origin = Origin {
            owner: opts.owner.clone(),
            request_id: opts
                .request_id
                .as_ref()
                .map(|r| r.as_str().to_owned())
                .unwrap_or_default(),
            lease: opts.lease.map(|ttl| LeaseInfo {
                ttl,
                // Set as the record is written.
                expires_at: SystemTime::UNIX_EPOCH,
            }),
        };
        let Some(rid) = &opts.request_id else {
            return self.start_once(spec, origin).await;
        };
        let fingerprint = Fingerprint::new(&spec, opts.lease);
        let found = |id: String| self.view(&id).ok_or(EngineError::NotFound(id));
        loop {
            match self.request_ids.claim(&opts.owner, rid, fingerprint)? {
                Claim::Started(id) => return found(id),
                Claim::Wait(w) => {
                    // The first call failed: the id is free again, claim it.
                    if let Some(id) = w.outcome().await {
                        return found(id);
                    }
                }
                Claim::First(ticket) => {
                    let res = self.start_once(spec, origin).await;
                    if let Ok(v) = &res {
                        ticket.started(&v.id);
                    }
                    return res;
                }
            }
        }
    }

    /// Renews `id`'s lease for another TTL: its new expiry, or why not.
    pub fn renew(&self, id: &str) -> Result<LeaseInfo, NotRenewed> {
        if let Some(info) = self.leases.renew(id) {
            self.write_records().set_lease(id, info);
            return Ok(info);
        }
        self.records().renewable(id)?;
        // Running with a lease but no timer: it has just lapsed (or is
        // being armed, a moment after the start).
        Err(NotRenewed::Lapsed)
    }
}
