//! `faultline.v1.FaultService` on top of the engine.

use std::{pin::Pin, time::Duration};

use faultline_proto::v1::{self as pb, fault_service_server::FaultService};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{
    caller::Caller,
    convert::{experiment_to_proto, lease_to_proto},
    status::{id_arg, refused},
};
use crate::{
    domain::{HostResolver, spec_from_proto},
    engine::{EngineError, EngineHandle, StartOptions, lease, request_ids::RequestId},
    remote::audit,
};

pub struct FaultServiceImpl {
    engine: EngineHandle,
}

impl FaultServiceImpl {
    pub fn new(engine: EngineHandle) -> Self {
        Self { engine }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl FaultService for FaultServiceImpl {
    async fn get_capabilities(
        &self,
        req: Request<pb::GetCapabilitiesRequest>,
    ) -> Result<Response<pb::GetCapabilitiesResponse>, Status> {
        let only = req.into_inner().mechanisms;
        let (capabilities, max_duration) = self.engine.capabilities(only).await;
        let capabilities = capabilities
            .into_iter()
            .map(|c| pb::Capability {
                fault_kind: c.fault_kind.into(),
                mechanism: c.mechanism.into(),
                covers: c.covers,
                supported: c.supported,
                reason: c.reason,
            })
            .collect();
        Ok(Response::new(pb::GetCapabilitiesResponse {
            kernel_release: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            capabilities,
            max_duration_ms: max_duration.as_millis() as u64,
        }))
    }

    async fn start_experiment(
        &self,
        req: Request<pb::StartExperimentRequest>,
    ) -> Result<Response<pb::StartExperimentResponse>, Status> {
        const METHOD: &str = "StartExperiment";
        let caller = Caller::of(&req);
        let r = req.get_ref();
        let bad = |e: crate::domain::SpecError| refused(METHOD, &e.into());
        let spec = spec_from_proto(r.spec.as_ref(), &HostResolver).map_err(bad)?;
        let opts = StartOptions {
            lease: lease::from_wire(r.lease_ttl_ms, caller.remote, self.engine.default_lease())
                .map_err(bad)?,
            request_id: RequestId::parse(&r.request_id).map_err(bad)?,
            owner: caller.identity,
        };
        let view = self
            .engine
            .start_as(spec, opts)
            .await
            .map_err(|e| refused(METHOD, &e))?;
        audit::ok(&req, METHOD, &view.id, &audit::summary(&view));
        Ok(Response::new(pb::StartExperimentResponse {
            experiment: Some(experiment_to_proto(&view)),
        }))
    }

    async fn get_experiment(
        &self,
        req: Request<pb::GetExperimentRequest>,
    ) -> Result<Response<pb::Experiment>, Status> {
        const METHOD: &str = "GetExperiment";
        let id = id_arg(METHOD, &req.get_ref().id)?;
        let view = self
            .engine
            .view(id)
            .ok_or_else(|| refused(METHOD, &EngineError::NotFound(id.into())))?;
        Ok(Response::new(experiment_to_proto(&view)))
    }

    async fn list_experiments(
        &self,
        req: Request<pb::ListExperimentsRequest>,
    ) -> Result<Response<pb::ListExperimentsResponse>, Status> {
        super::page::list(&self.engine, req.get_ref())
            .map(Response::new)
            .map_err(|e| refused("ListExperiments", &e.into()))
    }

    async fn stop_experiment(
        &self,
        req: Request<pb::StopExperimentRequest>,
    ) -> Result<Response<pb::Experiment>, Status> {
        const METHOD: &str = "StopExperiment";
        let id = id_arg(METHOD, &req.get_ref().id)?;
        let view = self
            .engine
            .stop(id)
            .await
            .map_err(|e| refused(METHOD, &e))?;
        audit::ok(&req, METHOD, &view.id, &audit::summary(&view));
        Ok(Response::new(experiment_to_proto(&view)))
    }

    async fn stop_all(
        &self,
        req: Request<pb::StopAllRequest>,
    ) -> Result<Response<pb::StopAllResponse>, Status> {
        let stopped_ids = self.engine.stop_all("stopped by StopAll").await;
        audit::ok(&req, "StopAll", &stopped_ids.join(","), "");
        Ok(Response::new(pb::StopAllResponse { stopped_ids }))
    }

    async fn renew_lease(
        &self,
        req: Request<pb::RenewLeaseRequest>,
    ) -> Result<Response<pb::RenewLeaseResponse>, Status> {
        let leases = req
            .get_ref()
            .ids
            .iter()
            .map(|id| lease_to_proto(id, self.engine.renew(id.trim())))
            .collect::<Vec<_>>();
        let renewed: Vec<&str> = leases
            .iter()
            .filter(|l| l.renewed)
            .map(|l| l.id.as_str())
            .collect();
        audit::ok(
            &req,
            "RenewLease",
            &req.get_ref().ids.join(","),
            &format!("renewed: {}", renewed.join(",")),
        );
        Ok(Response::new(pb::RenewLeaseResponse { leases }))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        req: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let req = req.into_inner();
        let filter = req.experiment_id.trim().to_owned();
        let period = Duration::from_millis(match req.counters_interval_ms {
            0 => 1000,
            n => u64::from(n.max(100)),
        });
        if !filter.is_empty() && self.engine.view(&filter).is_none() {
            return Err(refused("WatchEvents", &EngineError::NotFound(filter)));
        }
        let (tx, rx) = mpsc::channel(crate::limits::WATCH_QUEUE);
        tokio::spawn(super::watch::run(self.engine.clone(), filter, period, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
