//! Builders of the requests the tests send: targets and experiments here;
//! the faults themselves come from `faultline_proto::build`, which
//! `faultctl`'s tests share.

use std::time::Duration;

use faultline_proto::v1::{self as pb, fault_service_client::FaultServiceClient};
use tonic::transport::Channel;

use crate::TestCgroup;

pub fn cgroup_target(cg: &TestCgroup) -> pb::Target {
    pb::Target {
        cgroup: cg.path_str(),
        ..Default::default()
    }
}

pub fn pid_target(pid: u32) -> pb::Target {
    pb::Target {
        pids: vec![pid],
        ..Default::default()
    }
}

pub fn experiment(
    fault: impl Into<pb::FaultSpec>,
    target: pb::Target,
    duration: Duration,
) -> pb::StartExperimentRequest {
    pb::StartExperimentRequest {
        spec: Some(pb::ExperimentSpec {
            impact: 0,
            name: "test".into(),
            faults: vec![fault.into()],
            target: Some(target),
            duration_ms: duration.as_millis() as u64,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The running experiments (the first page: at most 100, enough for a test).
pub async fn running_experiments(client: &mut FaultServiceClient<Channel>) -> Vec<pb::Experiment> {
    client
        .list_experiments(pb::ListExperimentsRequest {
            running_only: true,
            ..Default::default()
        })
        .await
        .expect("ListExperiments")
        .into_inner()
        .experiments
}

pub async fn start(
    client: &mut FaultServiceClient<Channel>,
    req: pb::StartExperimentRequest,
) -> pb::Experiment {
    client
        .start_experiment(req)
        .await
        .unwrap_or_else(|s| panic!("StartExperiment refused: {:?}: {}", s.code(), s.message()))
        .into_inner()
        .experiment
        .expect("experiment in response")
}

pub fn interface_target(name: &str) -> pb::Target {
    pb::Target {
        interface: name.into(),
        ..Default::default()
    }
}
