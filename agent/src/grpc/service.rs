//! `faultline.v1.FaultService` on top of the engine.

use std::{pin::Pin, time::Duration};

use faultline_proto::v1::{self as pb, fault_service_server::FaultService};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{
    convert::experiment_to_proto,
    status::{id_arg, refused},
};
use crate::{
    domain::{HostResolver, spec_from_proto},
    engine::{EngineError, EngineHandle},
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
        let spec = spec_from_proto(req.get_ref().spec.as_ref(), &HostResolver)
            .map_err(|e| refused(METHOD, &e.into()))?;
        let view = self
            .engine
            .start(spec)
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
        let list = self.engine.list(req.get_ref().running_only);
        Ok(Response::new(pb::ListExperimentsResponse {
            experiments: list.iter().map(experiment_to_proto).collect(),
            next_page_token: String::new(),
        }))
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
        _req: Request<pb::RenewLeaseRequest>,
    ) -> Result<Response<pb::RenewLeaseResponse>, Status> {
        Err(Status::unimplemented(
            "RenewLease: leases are not built yet",
        ))
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
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(super::watch::run(self.engine.clone(), filter, period, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
