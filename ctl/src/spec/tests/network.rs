//! The network faults in experiment files: every kind, field and default,
//! and the errors that name a bad field.

use faultline_proto::v1 as pb;

use super::{parse_err, parse_ok};
use crate::{
    spec::file::FileFormat,
    test_support::{
        any_packet, bandwidth, blackhole, corrupt, duplicate, full_match, packet_loss, to_ports,
    },
};

const NETWORK_YAML: &str = r#"
name: partition-db
duration: 1m
target:
  interface: eth0
faults:
  - packet_loss:
      probability: 0.3
      burst_length: 4
      direction: both
      match:
        protocol: tcp
        src_cidr: 10.0.0.0/8
        dst_cidr: 10.1.0.0/16
        src_ports: 8000-8100
        dst_ports: 5432
        include_ssh: true
  - blackhole: {direction: ingress, match: {protocol: udp, dst_ports: "53"}}
  - blackhole: {}
"#;

fn network_faults(spec: &pb::ExperimentSpec) -> Vec<pb::fault_spec::Kind> {
    spec.faults.iter().filter_map(|f| f.kind.clone()).collect()
}

/// A document whose only fault is `fault`, on interface `lo`.
fn one_fault(fault: &str, format: FileFormat) -> String {
    match format {
        FileFormat::Yaml => {
            format!("duration: 1s\ntarget: {{interface: lo}}\nfaults:\n  - {fault}\n")
        }
        FileFormat::Json => format!(
            r#"{{"duration": "1s", "target": {{"interface": "lo"}}, "faults": [{{{fault}}}]}}"#
        ),
    }
}

#[test]
fn yaml_network_faults_convert_to_proto() {
    use pb::Direction::{Both, Egress, Ingress};
    let spec = parse_ok(NETWORK_YAML, FileFormat::Yaml);
    assert_eq!(
        spec.target,
        Some(pb::Target {
            interface: "eth0".into(),
            ..Default::default()
        }),
        "target.interface goes on the wire"
    );
    let expected = vec![
        packet_loss(0.3, 4.0, Both, full_match()),
        blackhole(Ingress, to_ports("udp", "53")),
        // Everything defaults: egress, any packet, SSH spared.
        blackhole(Egress, any_packet()),
    ];
    assert_eq!(network_faults(&spec), expected);
}

#[test]
fn json_network_faults_convert_to_proto() {
    let json = r#"{
      "duration": "30s",
      "target": {"cgroup": "/sys/fs/cgroup/app"},
      "faults": [
        {"packet_loss": {"probability": 0.1, "match": {"protocol": "icmp"}}},
        {"blackhole": {"direction": "egress", "match": {"dst_cidr": "fd00::/8", "dst_ports": 443}}}
      ]
    }"#;
    let spec = parse_ok(json, FileFormat::Json);
    let fd00_https = pb::PacketMatch {
        dst_cidr: "fd00::/8".into(),
        dst_ports: "443".into(),
        ..Default::default()
    };
    let expected = vec![
        packet_loss(0.1, 0.0, pb::Direction::Egress, to_ports("icmp", "")),
        blackhole(pb::Direction::Egress, Some(fd00_https)),
    ];
    assert_eq!(network_faults(&spec), expected);
    assert_eq!(
        spec.target.map(|t| (t.cgroup, t.interface)),
        Some(("/sys/fs/cgroup/app".to_owned(), String::new()))
    );
}

#[test]
fn direction_strings_map_to_the_wire_enum() {
    for (direction, expected) in [
        ("direction: ingress", pb::Direction::Ingress),
        ("direction: egress", pb::Direction::Egress),
        ("direction: both", pb::Direction::Both),
        ("", pb::Direction::Egress),
    ] {
        let yaml = one_fault(&format!("blackhole: {{{direction}}}"), FileFormat::Yaml);
        let spec = parse_ok(&yaml, FileFormat::Yaml);
        match network_faults(&spec).as_slice() {
            [pb::fault_spec::Kind::Blackhole(fault)] => assert_eq!(
                fault.direction(),
                expected,
                "{direction:?} should be {expected:?}"
            ),
            other => panic!("expected one blackhole fault, got {other:?}"),
        }
    }
}

#[test]
fn bad_direction_is_rejected_naming_the_field() {
    let cases = [
        (
            NETWORK_YAML.replace("direction: both", "direction: sideways"),
            FileFormat::Yaml,
            "sideways",
            "faults[0].packet_loss.direction",
        ),
        (
            NETWORK_YAML.replace("direction: ingress", "direction: Ingress"),
            FileFormat::Yaml,
            "Ingress",
            "faults[1].blackhole.direction",
        ),
        (
            r#"{"duration": "1s", "target": {"interface": "lo"},
                "faults": [{"blackhole": {"direction": "up"}}]}"#
                .to_owned(),
            FileFormat::Json,
            "up",
            "faults[0].blackhole.direction",
        ),
    ];
    for (text, format, value, path) in cases {
        let err = parse_err(&text, format);
        assert!(
            err.contains(path) && err.contains(&format!("`{value}`")),
            "expected the {format} error to name {path} and {value:?}, got: {err}"
        );
        assert!(
            err.contains("`ingress`, `egress`, `both`"),
            "expected the {format} error to list the directions, got: {err}"
        );
    }
}

#[test]
fn bad_packet_match_fields_are_rejected_naming_the_field() {
    let cases = [
        (
            NETWORK_YAML.replace("protocol: tcp", "protocol: sctp"),
            "faults[0].packet_loss.match.protocol",
            "sctp",
        ),
        (
            NETWORK_YAML.replace("dst_ports: 5432", "dst_ports: 70000"),
            "faults[0].packet_loss.match.dst_ports",
            "70000",
        ),
        (
            NETWORK_YAML.replace("src_ports: 8000-8100", "src_ports: 8100-8000"),
            "faults[0].packet_loss.match.src_ports",
            "empty",
        ),
        (
            NETWORK_YAML.replace("include_ssh: true", "ssh: true"),
            "faults[0].packet_loss.match",
            "unknown field `ssh`",
        ),
        (
            NETWORK_YAML.replace("burst_length: 4", "burst: 4"),
            "faults[0].packet_loss",
            "unknown field `burst`",
        ),
        (
            NETWORK_YAML.replace("interface: eth0", "iface: eth0"),
            "target",
            "unknown field `iface`",
        ),
    ];
    for (text, path, detail) in cases {
        let err = parse_err(&text, FileFormat::Yaml);
        assert!(
            err.contains(path) && err.contains(detail),
            "expected the error to name {path} and {detail:?}, got: {err}"
        );
    }
}

/// `full_match()` in YAML.
const FULL_MATCH: &str = "{protocol: tcp, src_cidr: 10.0.0.0/8, dst_cidr: 10.1.0.0/16, \
                          src_ports: 8000-8100, dst_ports: 5432, include_ssh: true}";

/// Each network kind with the fields it needs, written so that YAML and
/// JSON both read them.
const NETWORK_KINDS: [(&str, &str); 5] = [
    ("packet_loss", r#""probability": 0.5, "#),
    ("blackhole", ""),
    ("duplicate", r#""probability": 0.5, "#),
    ("corrupt", r#""probability": 0.5, "#),
    ("bandwidth", r#""rate_bits_per_sec": 1000000, "#),
];

#[test]
fn network_kinds_convert_to_proto() {
    use FileFormat::{Json, Yaml};
    use pb::Direction::{Both, Egress, Ingress};
    // A port may be a number.
    let udp_53 = r#""match": {"protocol": "udp", "dst_ports": 53}"#;
    let cases = [
        // Every field.
        (
            Yaml,
            format!(
                "packet_loss: {{probability: 0.3, burst_length: 4, direction: both, \
                 match: {FULL_MATCH}}}"
            ),
            packet_loss(0.3, 4.0, Both, full_match()),
        ),
        (
            Yaml,
            format!("blackhole: {{direction: both, match: {FULL_MATCH}}}"),
            blackhole(Both, full_match()),
        ),
        (
            Yaml,
            format!("duplicate: {{probability: 0.05, direction: both, match: {FULL_MATCH}}}"),
            duplicate(0.05, Both, full_match()),
        ),
        (
            Yaml,
            format!(
                "corrupt: {{probability: 0.01, recompute_checksums: true, direction: both, \
                 match: {FULL_MATCH}}}"
            ),
            corrupt(0.01, true, Both, full_match()),
        ),
        (
            Yaml,
            format!(
                "bandwidth: {{rate_bits_per_sec: 10000000, burst_bytes: 131072, \
                 direction: both, match: {FULL_MATCH}}}"
            ),
            bandwidth(10_000_000, 131_072, Both, full_match()),
        ),
        // Everything but the probability defaults: no bursts, checksums
        // left wrong, egress, any packet.
        (
            Yaml,
            "packet_loss: {probability: 1}".into(),
            packet_loss(1.0, 0.0, Egress, any_packet()),
        ),
        (
            Yaml,
            "blackhole: {}".into(),
            blackhole(Egress, any_packet()),
        ),
        (
            Yaml,
            "duplicate: {probability: 1}".into(),
            duplicate(1.0, Egress, any_packet()),
        ),
        (
            Yaml,
            "corrupt: {probability: 1}".into(),
            corrupt(1.0, false, Egress, any_packet()),
        ),
        // The agent picks the burst.
        (
            Yaml,
            "bandwidth: {rate_bits_per_sec: 8000}".into(),
            bandwidth(8_000, 0, Egress, any_packet()),
        ),
        // The friendlier spelling of the rate, as text or a number.
        (
            Yaml,
            "bandwidth: {rate: 2.5gbit, burst_bytes: 1048576}".into(),
            bandwidth(2_500_000_000, 1_048_576, Egress, any_packet()),
        ),
        (
            Yaml,
            "bandwidth: {rate: 64000}".into(),
            bandwidth(64_000, 0, Egress, any_packet()),
        ),
        (
            Json,
            format!(r#""packet_loss": {{"probability": 0.5, "direction": "ingress", {udp_53}}}"#),
            packet_loss(0.5, 0.0, Ingress, to_ports("udp", "53")),
        ),
        (
            Json,
            format!(r#""blackhole": {{"direction": "ingress", {udp_53}}}"#),
            blackhole(Ingress, to_ports("udp", "53")),
        ),
        (
            Json,
            format!(r#""duplicate": {{"probability": 0.5, "direction": "ingress", {udp_53}}}"#),
            duplicate(0.5, Ingress, to_ports("udp", "53")),
        ),
        (
            Json,
            format!(
                r#""corrupt": {{"probability": 0.5, "recompute_checksums": false,
                               "direction": "ingress", {udp_53}}}"#
            ),
            corrupt(0.5, false, Ingress, to_ports("udp", "53")),
        ),
        (
            Json,
            format!(
                r#""bandwidth": {{"rate_bits_per_sec": 10000000, "burst_bytes": 131072,
                                 "direction": "ingress", {udp_53}}}"#
            ),
            bandwidth(10_000_000, 131_072, Ingress, to_ports("udp", "53")),
        ),
        (
            Json,
            format!(r#""bandwidth": {{"rate": "10mbit", "direction": "ingress", {udp_53}}}"#),
            bandwidth(10_000_000, 0, Ingress, to_ports("udp", "53")),
        ),
    ];
    for (format, fault, expected) in cases {
        let spec = parse_ok(&one_fault(&fault, format), format);
        assert_eq!(network_faults(&spec), [expected], "{format} {fault}");
        assert_eq!(
            spec.target.map(|t| t.interface).as_deref(),
            Some("lo"),
            "target.interface goes on the wire"
        );
    }
}

#[test]
fn bad_network_fields_are_rejected_naming_the_field() {
    let rejected = |format, fault: &str, path: &str, detail: &str| {
        let err = parse_err(&one_fault(fault, format), format);
        assert!(
            err.contains(path) && err.contains(detail),
            "expected the {format} error for {fault:?} to name {path} and {detail:?}: {err}"
        );
    };
    for (kind, needed) in NETWORK_KINDS {
        let at = format!("faults[0].{kind}");
        rejected(
            FileFormat::Yaml,
            &format!("{kind}: {{{needed}direction: sideways}}"),
            &format!("{at}.direction"),
            "`sideways`",
        );
        rejected(
            FileFormat::Yaml,
            &format!("{kind}: {{{needed}match: {{dst_ports: 70000}}}}"),
            &format!("{at}.match.dst_ports"),
            "70000",
        );
        rejected(
            FileFormat::Json,
            &format!(r#""{kind}": {{{needed}"match": {{"protocol": "sctp"}}}}"#),
            &format!("{at}.match.protocol"),
            "sctp",
        );
        if kind != "packet_loss" {
            rejected(
                FileFormat::Yaml,
                &format!("{kind}: {{{needed}burst_length: 2}}"),
                &at,
                "unknown field `burst_length`",
            );
        }
        if let Some(field) = needed.split('"').nth(1) {
            rejected(
                FileFormat::Yaml,
                &format!("{kind}: {{direction: both}}"),
                &at,
                &format!("missing field `{field}`"),
            );
        }
    }
    rejected(
        FileFormat::Yaml,
        "corrupt: {probability: 0.5, recompute_checksums: maybe}",
        "faults[0].corrupt.recompute_checksums",
        "maybe",
    );
}

#[test]
fn bad_bandwidth_fields_are_rejected_naming_the_field() {
    use FileFormat::{Json, Yaml};
    for (format, fault, path, detail) in [
        (
            Yaml,
            "bandwidth: {rate: 10mb}",
            "faults[0].bandwidth.rate",
            "unknown unit \"mb\"",
        ),
        (
            Json,
            r#""bandwidth": {"rate": "0"}"#,
            "faults[0].bandwidth.rate",
            "more than 0",
        ),
        (
            Yaml,
            "bandwidth: {rate: 10mbit, rate_bits_per_sec: 10000000}",
            "faults[0].bandwidth",
            "duplicate field `rate_bits_per_sec`",
        ),
        (
            Json,
            r#""bandwidth": {"direction": "both"}"#,
            "faults[0].bandwidth",
            "missing field `rate_bits_per_sec`",
        ),
        (
            Yaml,
            "bandwidth: {rate_bits_per_sec: 1.5}",
            "faults[0].bandwidth.rate_bits_per_sec",
            "expected a rate such as \"10mbit\"",
        ),
        (
            Yaml,
            "bandwidth: {rate: 10mbit, burst_bytes: 128k}",
            "faults[0].bandwidth.burst_bytes",
            "invalid type",
        ),
        (
            Yaml,
            "bandwidth: {rate: 10mbit, burst_bytes: 4294967296}",
            "faults[0].bandwidth.burst_bytes",
            "4294967296",
        ),
        (
            Yaml,
            "bandwidth: {rate: 10mbit, burst: 128k}",
            "faults[0].bandwidth",
            "unknown field `burst`",
        ),
    ] {
        let err = parse_err(&one_fault(fault, format), format);
        assert!(
            err.contains(path) && err.contains(detail),
            "expected the {format} error for {fault:?} to name {path} and {detail:?}: {err}"
        );
    }
}
