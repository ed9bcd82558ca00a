//! Builders of the requests the tests send: faults, targets, experiments.

use std::time::Duration;

use faultline_proto::v1::{self as pb, fault_service_client::FaultServiceClient};
use tonic::transport::Channel;

use crate::TestCgroup;

pub fn connect_error(errno: &str, probability: f64, port: u16, cidr: &str) -> pb::FaultSpec {
    syscall_error("connect", errno, probability, port, cidr)
}

pub fn syscall_error(
    call: &str,
    errno: &str,
    probability: f64,
    port: u16,
    cidr: &str,
) -> pb::FaultSpec {
    pb::FaultSpec {
        kind: Some(pb::fault_spec::Kind::SyscallError(pb::SyscallError {
            syscall: call.into(),
            errno: errno.into(),
            probability,
            port: u32::from(port),
            cidr: cidr.into(),
            path: String::new(),
        })),
    }
}

/// An LSM `syscall_error` fault (file, process and socket calls beyond
/// connect/bind/sendmsg); `path` empty = every file, `port` 0 = any.
pub fn lsm_error(
    call: &str,
    errno: &str,
    probability: f64,
    path: &str,
    port: u16,
) -> pb::FaultSpec {
    pb::FaultSpec {
        kind: Some(pb::fault_spec::Kind::SyscallError(pb::SyscallError {
            syscall: call.into(),
            errno: errno.into(),
            probability,
            port: u32::from(port),
            cidr: String::new(),
            path: path.into(),
        })),
    }
}

pub fn syscall_signal(
    syscall: &str,
    signal: &str,
    probability: f64,
    nth_call: u64,
) -> pb::FaultSpec {
    pb::FaultSpec {
        kind: Some(pb::fault_spec::Kind::SyscallSignal(pb::SyscallSignal {
            syscall: syscall.into(),
            signal: signal.into(),
            probability,
            nth_call,
        })),
    }
}

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
    fault: pb::FaultSpec,
    target: pb::Target,
    duration: Duration,
) -> pb::StartExperimentRequest {
    pb::StartExperimentRequest {
        spec: Some(pb::ExperimentSpec {
            name: "test".into(),
            faults: vec![fault],
            target: Some(target),
            duration_ms: duration.as_millis() as u64,
            ..Default::default()
        }),
    }
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

pub fn packet_loss(
    probability: f64,
    burst_length: f64,
    direction: pb::Direction,
    m: pb::PacketMatch,
) -> pb::FaultSpec {
    pb::FaultSpec {
        kind: Some(pb::fault_spec::Kind::PacketLoss(pb::PacketLoss {
            probability,
            burst_length,
            direction: direction.into(),
            r#match: Some(m),
        })),
    }
}

pub fn blackhole(direction: pb::Direction, m: pb::PacketMatch) -> pb::FaultSpec {
    pb::FaultSpec {
        kind: Some(pb::fault_spec::Kind::Blackhole(pb::Blackhole {
            direction: direction.into(),
            r#match: Some(m),
        })),
    }
}

pub fn interface_target(name: &str) -> pb::Target {
    pb::Target {
        interface: name.into(),
        ..Default::default()
    }
}

/// Every UDP datagram to destination port `port`.
pub fn udp_to_port(port: u16) -> pb::PacketMatch {
    pb::PacketMatch {
        protocol: "udp".into(),
        dst_ports: port.to_string(),
        ..Default::default()
    }
}
