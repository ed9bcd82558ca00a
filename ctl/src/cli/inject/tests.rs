//! `faultctl inject ...` command lines and the wire spec they send.

use faultline_proto::v1 as pb;

use super::parse_label;
use crate::{
    cli::{
        Command,
        tests::{assert_usage_errors, parse, words},
    },
    output::OutputFormat,
    test_support::{
        FULL_MATCH_FLAGS, any_packet, bandwidth, blackhole, corrupt, duplicate, full_match,
        packet_loss,
    },
};

/// The spec that `inject ...` sends, or why there is none.
fn inject_spec(args: &[&str]) -> Result<pb::ExperimentSpec, String> {
    let cli = parse(args).map_err(|err| err.to_string())?;
    let Command::Inject(inject) = cli.command else {
        return Err(format!("expected an inject command, got {:?}", cli.command));
    };
    let experiment = inject.into_experiment().map_err(|err| err.to_string())?;
    Ok(experiment.into())
}

/// A valid `syscall-error` injection, for the tests of the flags all faults share.
const SYSCALL_ERROR: &str =
    "inject syscall-error --syscall connect --errno EPERM --pid 1 --duration 1s";

#[test]
fn labels_parse() {
    assert_eq!(
        parse_label("team=payments"),
        Ok(("team".into(), "payments".into()))
    );
    assert_eq!(parse_label("query=a=b"), Ok(("query".into(), "a=b".into())));
    assert_eq!(parse_label("empty="), Ok(("empty".into(), String::new())));
}

#[test]
fn bad_labels_are_rejected_with_the_reason() {
    for (text, reason) in [
        ("team", "no '='"),
        ("=payments", "empty key"),
        ("", "no '='"),
    ] {
        match parse_label(text) {
            Ok(label) => panic!("expected {text:?} to be rejected, got {label:?}"),
            Err(err) => assert!(
                err.contains(reason),
                "expected {reason:?} in the error for {text:?}, got: {err}"
            ),
        }
    }
    assert_usage_errors(SYSCALL_ERROR, &[("--label oops", "--label")]);
}

#[test]
fn repeated_label_key_is_rejected() {
    let line = format!("{SYSCALL_ERROR} --label a=1 --label a=2");
    match inject_spec(&words(&line)) {
        Ok(spec) => panic!("expected a duplicate label error, got {spec:?}"),
        Err(err) => assert_eq!(err, "--label a is given more than once"),
    }
}

#[test]
fn inject_latency_dns_error_and_lsm_syscall_error_build_their_specs() {
    let spec = inject_spec(&words(
        "inject latency --delay 1.5ms --jitter 500us --protocol udp --interface lo --duration 1m",
    ))
    .expect("latency parses");
    match &spec.faults[0].kind {
        Some(pb::fault_spec::Kind::Latency(l)) => {
            assert!((l.delay_ms - 1.5).abs() < 1e-9, "{l:?}");
            assert!((l.jitter_ms - 0.5).abs() < 1e-9, "{l:?}");
            assert_eq!(l.r#match.as_ref().map(|m| m.protocol.as_str()), Some("udp"));
        }
        other => panic!("expected a latency fault, got {other:?}"),
    }
    assert_eq!(
        spec.target.as_ref().map(|t| t.interface.as_str()),
        Some("lo")
    );
    let err = inject_spec(&words(
        "inject latency --delay 10ms --direction ingress --interface lo --duration 1m",
    ))
    .expect_err("latency is egress only");
    assert!(err.contains("--direction"), "{err}");

    let spec = inject_spec(&words(
        "inject dns-error --domain example.com --failure nxdomain --probability 0.5 \
         --resolver-cidr 10.0.0.53/32 --interface eth0 --duration 30s",
    ))
    .expect("dns-error parses");
    assert_eq!(
        spec.faults[0].kind,
        Some(pb::fault_spec::Kind::DnsError(pb::DnsError {
            domain: "example.com".into(),
            failure: pb::DnsFailure::Nxdomain.into(),
            probability: 0.5,
            resolver_cidr: "10.0.0.53/32".into(),
        }))
    );

    let spec = inject_spec(&words(
        "inject syscall-error --syscall openat --errno EIO --path /var/lib/app --comm app --duration 1m",
    ))
    .expect("an LSM syscall error parses");
    match &spec.faults[0].kind {
        Some(pb::fault_spec::Kind::SyscallError(e)) => {
            assert_eq!(
                (e.syscall.as_str(), e.path.as_str()),
                ("openat", "/var/lib/app")
            );
        }
        other => panic!("expected a syscall_error fault, got {other:?}"),
    }
}

#[test]
fn inject_syscall_error_builds_the_spec() {
    let cli = match parse(&words(
        "inject syscall-error --syscall connect --errno ECONNREFUSED --probability 0.5 \
         --port 8080 --cidr 10.0.0.0/8 --cgroup /sys/fs/cgroup/unified/app \
         --pid 7 --pid 8 --exclude-pid 9 --duration 30s --dry-run \
         --label team=payments --name checkout --output json",
    )) {
        Ok(cli) => cli,
        Err(err) => panic!("expected the flags to parse, got: {err}"),
    };
    assert_eq!(cli.output, OutputFormat::Json);
    let Command::Inject(inject) = cli.command else {
        panic!("expected an inject command, got {:?}", cli.command);
    };
    let spec: pb::ExperimentSpec = match inject.into_experiment() {
        Ok(experiment) => experiment.into(),
        Err(err) => panic!("expected a valid experiment, got: {err}"),
    };
    let expected = pb::ExperimentSpec {
        impact: 0,
        name: "checkout".into(),
        faults: vec![pb::FaultSpec {
            kind: Some(pb::fault_spec::Kind::SyscallError(pb::SyscallError {
                syscall: "connect".into(),
                errno: "ECONNREFUSED".into(),
                probability: 0.5,
                port: 8080,
                cidr: "10.0.0.0/8".into(),
                path: String::new(),
            })),
        }],
        target: Some(pb::Target {
            pids: vec![7, 8],
            cgroup: "/sys/fs/cgroup/unified/app".into(),
            comm: String::new(),
            exclude_pids: vec![9],
            exclude_comm: String::new(),
            interface: String::new(),
            allow_host_wide: false,
        }),
        duration_ms: 30_000,
        dry_run: true,
        labels: [("team".to_owned(), "payments".to_owned())].into(),
    };
    assert_eq!(spec, expected);
}

#[test]
fn inject_syscall_signal_takes_nth_call_or_probability() {
    let signal_of = |extra: &str| -> Result<pb::SyscallSignal, String> {
        let line = format!(
            "inject syscall-signal --syscall openat --signal KILL --comm curl \
             --duration 2m {extra}"
        );
        let spec = inject_spec(&words(&line))?;
        match spec.faults.into_iter().next().and_then(|f| f.kind) {
            Some(pb::fault_spec::Kind::SyscallSignal(signal)) => Ok(signal),
            other => Err(format!("expected one syscall_signal fault, got {other:?}")),
        }
    };
    let nth = signal_of("--nth-call 3").unwrap_or_else(|err| panic!("--nth-call 3: {err}"));
    assert_eq!((nth.nth_call, nth.signal.as_str()), (3, "KILL"));
    let chance =
        signal_of("--probability 0.25").unwrap_or_else(|err| panic!("--probability: {err}"));
    assert_eq!(chance.nth_call, 0, "no nth_call unless asked");
    assert!(
        (chance.probability - 0.25).abs() < f64::EPSILON,
        "probability 0.25, got {}",
        chance.probability
    );
    if let Ok(both) = signal_of("--probability 0.5 --nth-call 2") {
        panic!("expected --probability with --nth-call to be a usage error, got {both:?}");
    }
}

/// Each network subcommand with the flags it needs besides a scope and a duration.
const NETWORK_KINDS: [&str; 5] = [
    "packet-loss --probability 0.5",
    "blackhole",
    "duplicate --probability 0.5",
    "corrupt --probability 0.5",
    "bandwidth --rate 10mbit",
];

#[test]
fn inject_network_faults_build_the_spec() {
    use pb::Direction::{Both, Ingress};
    let cases = [
        (
            "packet-loss --probability 0.3 --burst-length 4 --direction both",
            packet_loss(0.3, 4.0, Both, full_match()),
        ),
        (
            "blackhole --direction ingress",
            blackhole(Ingress, full_match()),
        ),
        (
            "duplicate --probability 0.2 --direction ingress",
            duplicate(0.2, Ingress, full_match()),
        ),
        (
            "corrupt --probability 0.01 --recompute-checksums --direction both",
            corrupt(0.01, true, Both, full_match()),
        ),
        (
            "bandwidth --rate 2.5gbit --burst 128k --direction both",
            bandwidth(2_500_000_000, 131_072, Both, full_match()),
        ),
    ];
    for (flags, kind) in cases {
        let line = format!(
            "inject {flags} {FULL_MATCH_FLAGS} --interface eth0 --duration 1m --dry-run \
             --label team=db --name net-db"
        );
        let spec = inject_spec(&words(&line))
            .unwrap_or_else(|err| panic!("expected {line:?} to build a spec, got: {err}"));
        let expected = pb::ExperimentSpec {
            impact: 0,
            name: "net-db".into(),
            faults: vec![pb::FaultSpec { kind: Some(kind) }],
            target: Some(pb::Target {
                interface: "eth0".into(),
                allow_host_wide: false,
                ..Default::default()
            }),
            duration_ms: 60_000,
            dry_run: true,
            labels: [("team".to_owned(), "db".to_owned())].into(),
        };
        assert_eq!(spec, expected, "{line}");
    }
}

#[test]
fn network_faults_default_to_egress_and_any_packet() {
    use pb::Direction::Egress;
    let cgroup = pb::Target {
        cgroup: "/sys/fs/cgroup/app".into(),
        ..Default::default()
    };
    let lo = pb::Target {
        interface: "lo".into(),
        allow_host_wide: false,
        ..Default::default()
    };
    let cases = [
        (
            "packet-loss --probability 1 --cgroup /sys/fs/cgroup/app",
            packet_loss(1.0, 0.0, Egress, any_packet()),
            &cgroup,
        ),
        (
            "blackhole --cgroup /sys/fs/cgroup/app",
            blackhole(Egress, any_packet()),
            &cgroup,
        ),
        (
            "duplicate --probability 1 --interface lo",
            duplicate(1.0, Egress, any_packet()),
            &lo,
        ),
        // The checksums stay wrong unless asked.
        (
            "corrupt --probability 1 --interface lo",
            corrupt(1.0, false, Egress, any_packet()),
            &lo,
        ),
        // The agent picks the burst.
        (
            "bandwidth --rate 10mbit --cgroup /sys/fs/cgroup/app",
            bandwidth(10_000_000, 0, Egress, any_packet()),
            &cgroup,
        ),
    ];
    for (flags, kind, target) in cases {
        let line = format!("inject {flags} --duration 5s");
        let spec = inject_spec(&words(&line))
            .unwrap_or_else(|err| panic!("expected {line:?} to build a spec, got: {err}"));
        assert_eq!(spec.faults, [pb::FaultSpec { kind: Some(kind) }], "{line}");
        assert_eq!(spec.target.as_ref(), Some(target), "{line}");
        assert_eq!((spec.name.as_str(), spec.dry_run), ("", false), "{line}");
    }
}

#[test]
fn packet_loss_blackhole_and_bandwidth_take_exactly_one_of_cgroup_or_interface() {
    for kind in [
        "packet-loss --probability 0.5",
        "blackhole",
        "bandwidth --rate 1mbit",
    ] {
        assert_usage_errors(
            &format!("inject {kind} --duration 1s"),
            &[
                ("", "--cgroup"),
                ("--cgroup /a --interface eth0", "cannot be used"),
                ("--pid 1", "--pid"),
                ("--comm curl", "--comm"),
            ],
        );
    }
}

#[test]
fn duplicate_and_corrupt_take_only_an_interface() {
    for kind in ["duplicate --probability 0.5", "corrupt --probability 0.5"] {
        assert_usage_errors(
            &format!("inject {kind}"),
            &[
                ("--duration 1s", "--interface"),
                ("--interface lo", "--duration"),
                ("--cgroup /sys/fs/cgroup/app --duration 1s", "--cgroup"),
                (
                    "--cgroup /sys/fs/cgroup/app --interface lo --duration 1s",
                    "--cgroup",
                ),
                ("--pid 1 --interface lo --duration 1s", "--pid"),
                ("--comm curl --interface lo --duration 1s", "--comm"),
                (
                    "--interface lo --duration 1s --burst-length 2",
                    "--burst-length",
                ),
            ],
        );
    }
}

#[test]
fn bad_network_flags_are_usage_errors() {
    for kind in NETWORK_KINDS {
        assert_usage_errors(
            &format!("inject {kind} --interface lo --duration 1s"),
            &[
                ("--direction up", "--direction"),
                ("--protocol sctp", "--protocol"),
                ("--dst-ports 90-80", "--dst-ports"),
                ("--src-ports ssh", "--src-ports"),
            ],
        );
    }
    for kind in ["packet-loss", "duplicate", "corrupt"] {
        assert_usage_errors(
            &format!("inject {kind} --interface lo --duration 1s"),
            &[
                ("", "--probability"),
                ("--probability 1.5", "--probability"),
                ("--probability=-0.1", "--probability"),
            ],
        );
    }
    for (kind, extra, flag) in [
        (
            "packet-loss --probability 0.5",
            "--burst-length=-2",
            "--burst-length",
        ),
        (
            "corrupt --probability 0.5",
            "--recompute-checksums=yes",
            "--recompute-checksums",
        ),
        // blackhole drops every matching packet.
        ("blackhole", "--probability 0.5", "--probability"),
        (
            "bandwidth --rate 1mbit",
            "--probability 0.5",
            "--probability",
        ),
        (
            "bandwidth --rate 1mbit",
            "--burst-length 2",
            "--burst-length",
        ),
    ] {
        assert_usage_errors(
            &format!("inject {kind} --interface lo --duration 1s"),
            &[(extra, flag)],
        );
    }
}

#[test]
fn bandwidth_rate_and_burst_parse_with_units() {
    let of = |flags: &str| -> Result<(u64, u32), String> {
        let line = format!("inject bandwidth {flags} --interface lo --duration 1s");
        match inject_spec(&words(&line))?
            .faults
            .first()
            .and_then(|f| f.kind.clone())
        {
            Some(pb::fault_spec::Kind::Bandwidth(b)) => Ok((b.rate_bits_per_sec, b.burst_bytes)),
            other => Err(format!("expected one bandwidth fault, got {other:?}")),
        }
    };
    for (flags, expected) in [
        ("--rate 64000", (64_000, 0)),
        ("--rate 500kbit --burst 1m", (500_000, 1_048_576)),
        ("--rate 10Mbit --burst 128k", (10_000_000, 131_072)),
        ("--rate 10mbps --burst 1m", (10_000_000, 1_048_576)),
        ("--rate 1gbps --burst 0", (1_000_000_000, 0)),
    ] {
        assert_eq!(of(flags), Ok(expected), "{flags}");
    }
}

#[test]
fn bad_bandwidth_flags_are_usage_errors_naming_the_flag() {
    assert_usage_errors(
        "inject bandwidth --interface lo --duration 1s",
        &[
            ("", "--rate"),
            (
                "--rate 10mb",
                "'--rate <RATE>': invalid rate \"10mb\": unknown unit \"mb\"",
            ),
            ("--rate 0", "'--rate <RATE>'"),
            ("--rate fast", "'--rate <RATE>'"),
            ("--rate=-1mbit", "'--rate <RATE>'"),
            ("--rate 1mbit --burst 128kb", "'--burst <BYTES>'"),
            ("--rate 1mbit --burst 4g", "'--burst <BYTES>'"),
            ("--rate 1mbit --burst 4194304k", "'--burst <BYTES>'"),
        ],
    );
}

#[test]
fn inject_requires_a_target_and_a_duration() {
    assert_usage_errors(
        "inject syscall-error --syscall connect --errno EPERM",
        &[("--duration 1s", "--pid"), ("--pid 1", "--duration")],
    );
}

#[test]
fn out_of_range_probability_is_a_usage_error() {
    assert_usage_errors(SYSCALL_ERROR, &[("--probability 1.5", "--probability")]);
}

#[test]
fn syscall_error_help_names_the_lsm_calls_too() {
    use clap::CommandFactory as _;
    let mut cli = crate::cli::Cli::command();
    let help = cli
        .find_subcommand_mut("inject")
        .and_then(|inject| inject.find_subcommand_mut("syscall-error"))
        .map(|cmd| cmd.render_long_help().to_string())
        .unwrap_or_default();
    for call in [
        "connect", "sendmsg", "openat", "execve", "fork", "unlink", "accept",
    ] {
        assert!(
            help.contains(call),
            "syscall-error --help names {call}:\n{help}"
        );
    }
}
