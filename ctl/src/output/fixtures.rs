//! Experiments as the agent reports them, for the tests of both forms.

use faultline_proto::v1 as pb;

use crate::test_support::{bandwidth, blackhole, corrupt, duplicate, packet_loss, to_ports};

pub fn running_experiment() -> pb::Experiment {
    pb::Experiment {
        impact: None,
        id: "exp-1".into(),
        spec: Some(pb::ExperimentSpec {
            impact: 0,
            name: "checkout".into(),
            faults: vec![],
            target: Some(pb::Target {
                cgroup: "/sys/fs/cgroup/app".into(),
                ..Default::default()
            }),
            duration_ms: 30_000,
            dry_run: true,
            labels: [("team".to_owned(), "payments".to_owned())].into(),
        }),
        state: pb::ExperimentState::Running as i32,
        started_at_ms: 1_700_000_000_000,
        deadline_ms: 1_700_000_030_000,
        ended_at_ms: 0,
        message: String::new(),
        faults: vec![
            pb::FaultStatus {
                metrics: Vec::new(),
                actions: Vec::new(),
                index: 0,
                kind: "syscall_error".into(),
                mechanism: "cgroup_sock_addr".into(),
                matched: 10,
                injected: 4,
                not_injected_map_full: 0,
                summary: "connect -> ECONNREFUSED p=0.5".into(),
            },
            pb::FaultStatus {
                metrics: Vec::new(),
                actions: Vec::new(),
                index: 1,
                kind: "syscall_signal".into(),
                mechanism: "raw_tracepoint".into(),
                matched: 3,
                injected: 1,
                not_injected_map_full: 2,
                summary: "openat -> SIGSEGV at call 3".into(),
            },
        ],
        matched: 13,
        injected: 5,
        ..Default::default()
    }
}

pub fn network_experiment() -> pb::Experiment {
    use pb::Direction::{Both, Egress, Ingress, Unspecified};
    let tcp_to_db = pb::PacketMatch {
        protocol: "tcp".into(),
        dst_cidr: "10.0.0.0/8".into(),
        dst_ports: "5432".into(),
        ..Default::default()
    };
    let udp_from_dns = pb::PacketMatch {
        protocol: "UDP".into(),
        src_ports: "53".into(),
        include_ssh: true,
        ..Default::default()
    };
    let spec = pb::ExperimentSpec {
        impact: 0,
        name: "partition".into(),
        faults: [
            packet_loss(0.25, 3.0, Both, Some(tcp_to_db)),
            blackhole(Unspecified, None),
            duplicate(0.1, Ingress, Some(udp_from_dns)),
            corrupt(0.01, true, Egress, to_ports("tcp", "5432")),
            bandwidth(10_000_000, 131_072, Egress, to_ports("udp", "")),
        ]
        .map(|kind| pb::FaultSpec { kind: Some(kind) })
        .into(),
        target: Some(pb::Target {
            interface: "eth0".into(),
            ..Default::default()
        }),
        duration_ms: 60_000,
        ..Default::default()
    };
    pb::Experiment {
        impact: None,
        id: "exp-net".into(),
        spec: Some(spec),
        state: pb::ExperimentState::Running as i32,
        faults: vec![
            pb::FaultStatus {
                metrics: Vec::new(),
                actions: Vec::new(),
                index: 0,
                kind: "packet_loss".into(),
                mechanism: "tcx".into(),
                matched: 100,
                injected: 25,
                not_injected_map_full: 0,
                summary: "both loss p=0.25 burst=3 tcp dst=10.0.0.0/8 dport=5432-5432".into(),
            },
            pb::FaultStatus {
                metrics: Vec::new(),
                actions: Vec::new(),
                index: 1,
                kind: String::new(),
                mechanism: "tcx".into(),
                matched: 7,
                injected: 7,
                not_injected_map_full: 0,
                summary: String::new(),
            },
            pb::FaultStatus {
                metrics: Vec::new(),
                actions: Vec::new(),
                index: 2,
                kind: "duplicate".into(),
                mechanism: "tcx".into(),
                matched: 40,
                injected: 4,
                not_injected_map_full: 0,
                summary: "ingress duplicate p=0.1 udp sport=53-53".into(),
            },
            pb::FaultStatus {
                metrics: Vec::new(),
                actions: Vec::new(),
                index: 3,
                kind: "corrupt".into(),
                mechanism: "tcx".into(),
                matched: 200,
                injected: 2,
                not_injected_map_full: 0,
                summary: "egress corrupt p=0.01 checksums=recomputed tcp dport=5432-5432".into(),
            },
            pb::FaultStatus {
                metrics: Vec::new(),
                actions: Vec::new(),
                index: 4,
                kind: "bandwidth".into(),
                mechanism: "tcx".into(),
                matched: 1_000,
                injected: 30,
                not_injected_map_full: 0,
                summary: "egress rate=10000000 bit/s burst=131072 B udp".into(),
            },
        ],
        ..Default::default()
    }
}
