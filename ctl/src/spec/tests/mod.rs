//! The experiment file as a whole, in YAML and JSON: what converts to the
//! wire, and how a bad document is reported. The network faults' fields are
//! in [`network`].

mod network;

use std::path::Path;

use faultline_proto::v1 as pb;

use super::file::{FileFormat, parse};
const YAML: &str = r#"
name: checkout-connect-refused
duration: 30s
dry_run: false
labels: {team: payments}
target:
  cgroup: /sys/fs/cgroup/unified/app
  pids: [1234]
  comm: curl
  exclude_pids: []
  exclude_comm: ""
faults:
  - syscall_error: {syscall: connect, errno: ECONNREFUSED, probability: 0.5, port: 8080, cidr: 127.0.0.0/8}
  - syscall_signal: {syscall: openat, signal: SEGV, nth_call: 3}
"#;

fn expected_spec() -> pb::ExperimentSpec {
    pb::ExperimentSpec {
        impact: 0,
        name: "checkout-connect-refused".into(),
        faults: vec![
            pb::FaultSpec {
                kind: Some(pb::fault_spec::Kind::SyscallError(pb::SyscallError {
                    syscall: "connect".into(),
                    errno: "ECONNREFUSED".into(),
                    probability: 0.5,
                    port: 8080,
                    cidr: "127.0.0.0/8".into(),
                    path: String::new(),
                })),
            },
            pb::FaultSpec {
                kind: Some(pb::fault_spec::Kind::SyscallSignal(pb::SyscallSignal {
                    syscall: "openat".into(),
                    signal: "SEGV".into(),
                    probability: 1.0,
                    nth_call: 3,
                })),
            },
        ],
        target: Some(pb::Target {
            pids: vec![1234],
            cgroup: "/sys/fs/cgroup/unified/app".into(),
            comm: "curl".into(),
            exclude_pids: vec![],
            exclude_comm: String::new(),
            interface: String::new(),
            allow_host_wide: false,
        }),
        duration_ms: 30_000,
        dry_run: false,
        labels: [("team".to_owned(), "payments".to_owned())].into(),
    }
}

fn parse_ok(text: &str, format: FileFormat) -> pb::ExperimentSpec {
    match parse(text, format) {
        Ok(experiment) => experiment.into(),
        Err(err) => panic!("expected the {format} document to parse, got error: {err}"),
    }
}

fn parse_err(text: &str, format: FileFormat) -> String {
    match parse(text, format) {
        Ok(experiment) => panic!("expected a {format} parse error, got {experiment:?}"),
        Err(err) => err,
    }
}

#[test]
fn yaml_spec_converts_to_proto() {
    assert_eq!(parse_ok(YAML, FileFormat::Yaml), expected_spec());
}

#[test]
fn json_spec_converts_to_proto() {
    let json = r#"{
      "name": "checkout-connect-refused",
      "duration": "30s",
      "labels": {"team": "payments"},
      "target": {"cgroup": "/sys/fs/cgroup/unified/app", "pids": [1234], "comm": "curl"},
      "faults": [
        {"syscall_error": {"syscall": "connect", "errno": "ECONNREFUSED", "probability": 0.5,
                           "port": 8080, "cidr": "127.0.0.0/8"}},
        {"syscall_signal": {"syscall": "openat", "signal": "SEGV", "nth_call": 3}}
      ]
    }"#;
    assert_eq!(parse_ok(json, FileFormat::Json), expected_spec());
}

#[test]
fn defaults_fill_in_optional_fields() {
    let yaml = "duration: 2m\ntarget: {comm: curl}\nfaults:\n  - syscall_error: {syscall: connect, errno: ECONNREFUSED}\n";
    let spec = parse_ok(yaml, FileFormat::Yaml);
    assert_eq!(spec.duration_ms, 120_000, "2m should be 120000 ms");
    assert!(!spec.dry_run, "dry_run should default to false");
    let Some(pb::fault_spec::Kind::SyscallError(fault)) = &spec.faults[0].kind else {
        panic!("expected a syscall_error fault, got {:?}", spec.faults[0]);
    };
    assert!(
        (fault.probability - 1.0).abs() < f64::EPSILON,
        "probability should default to 1.0, got {}",
        fault.probability
    );
    assert_eq!(
        (fault.port, fault.cidr.as_str()),
        (0, ""),
        "port and cidr should default to any"
    );
}

#[test]
fn numeric_signal_is_accepted() {
    let yaml = "duration: 1s\ntarget: {pids: [1]}\nfaults:\n  - syscall_signal: {syscall: openat, signal: 9}\n";
    let spec = parse_ok(yaml, FileFormat::Yaml);
    let Some(pb::fault_spec::Kind::SyscallSignal(fault)) = &spec.faults[0].kind else {
        panic!("expected a syscall_signal fault, got {:?}", spec.faults[0]);
    };
    assert_eq!(fault.signal, "9");
}

#[test]
fn unknown_fields_are_rejected_by_name() {
    let cases = [
        (
            YAML.replace("dry_run: false", "dry_rnu: false"),
            FileFormat::Yaml,
            "dry_rnu",
            "",
        ),
        (
            YAML.replace("comm: curl", "command: curl"),
            FileFormat::Yaml,
            "command",
            "target",
        ),
        (
            YAML.replace("port: 8080", "prot: 8080"),
            FileFormat::Yaml,
            "prot",
            "faults[0].syscall_error",
        ),
        (
            r#"{"duration": "1s", "target": {"pids": [1]},
                "faults": [{"syscall_signal": {"syscall": "openat", "signal": "KILL", "nth": 3}}]}"#
                .to_owned(),
            FileFormat::Json,
            "nth",
            "faults[0].syscall_signal",
        ),
    ];
    for (text, format, field, path) in cases {
        let err = parse_err(&text, format);
        assert!(
            err.contains(&format!("unknown field `{field}`")),
            "expected the {format} error to name the unknown field `{field}`, got: {err}"
        );
        assert!(
            err.contains(path),
            "expected the {format} error to give the path {path:?}, got: {err}"
        );
    }
}

#[test]
fn unknown_fault_kind_is_rejected_by_name() {
    let yaml = "duration: 1s\ntarget: {pids: [1]}\nfaults:\n  - disk_full: {}\n";
    let err = parse_err(yaml, FileFormat::Yaml);
    assert!(
        err.contains("disk_full"),
        "expected the error to name `disk_full`, got: {err}"
    );
}

#[test]
fn a_fault_has_exactly_one_kind() {
    let none = "duration: 1s\ntarget: {pids: [1]}\nfaults:\n  - {}\n";
    let err = parse_err(none, FileFormat::Yaml);
    assert!(
        err.contains("needs its kind"),
        "expected a missing-kind error, got: {err}"
    );
    let both = r#"{"duration": "1s", "target": {"pids": [1]}, "faults": [
        {"syscall_error": {"syscall": "connect", "errno": "EPERM"},
         "syscall_signal": {"syscall": "openat", "signal": "KILL"}}]}"#;
    let err = parse_err(both, FileFormat::Json);
    assert!(
        err.contains("exactly one kind"),
        "expected a two-kinds error, got: {err}"
    );
}

#[test]
fn missing_duration_is_reported() {
    let yaml = "target: {pids: [1]}\nfaults: []\n";
    let err = parse_err(yaml, FileFormat::Yaml);
    assert!(
        err.contains("duration"),
        "expected the error to name `duration`, got: {err}"
    );
}

#[test]
fn bad_duration_names_the_field() {
    let yaml = "duration: 30\ntarget: {pids: [1]}\nfaults: []\n";
    let err = parse_err(yaml, FileFormat::Yaml);
    assert!(
        err.contains("duration"),
        "expected the error to name `duration`, got: {err}"
    );
    let json = r#"{"duration": "soon", "target": {"pids": [1]}, "faults": []}"#;
    let err = parse_err(json, FileFormat::Json);
    assert!(
        err.starts_with("duration: invalid duration \"soon\""),
        "expected the error to start with the field and the bad value, got: {err}"
    );
}

#[test]
fn empty_file_is_reported() {
    assert_eq!(parse_err("  \n", FileFormat::Yaml), "the file is empty");
}

#[test]
fn format_is_detected_by_extension_then_content() {
    let cases = [
        ("x.json", "name: a", FileFormat::Json),
        ("x.YML", "{}", FileFormat::Yaml),
        ("x.yaml", "{}", FileFormat::Yaml),
        ("-", "  {\"a\": 1}", FileFormat::Json),
        ("spec", "name: a", FileFormat::Yaml),
    ];
    for (path, text, expected) in cases {
        assert_eq!(
            FileFormat::detect(Path::new(path), text),
            expected,
            "format of {path} with {text:?}"
        );
    }
}

#[test]
fn probabilities_in_a_file_are_checked_like_the_flags() {
    for (format, text, path) in [
        (
            FileFormat::Yaml,
            "duration: 1s\ntarget: {pids: [1]}\nfaults:\n  - syscall_error: {syscall: connect, errno: EPERM, probability: 1.5}\n",
            "faults[0].syscall_error.probability",
        ),
        (
            FileFormat::Json,
            r#"{"duration": "1s", "target": {"interface": "lo"},
                "faults": [{"packet_loss": {"probability": 0.5, "burst_length": -1}}]}"#,
            "faults[0].packet_loss.burst_length",
        ),
    ] {
        let err = parse_err(text, format);
        assert!(
            err.contains(path) && err.contains("expected a number"),
            "expected the {format} error to name {path}: {err}"
        );
    }
}
