//! Property test of wire -> domain conversion and validation: any
//! `ExperimentSpec` message (every field, each fault kind's variant, huge
//! and odd strings, NaN and infinite probabilities, numbers out of range)
//! gives a valid experiment that converts back and forth unchanged, or
//! `InvalidArgument` naming a field (of the spec, within the limits); it
//! never panics. A few hundred cases in the suite; `cargo xtask fuzz` runs
//! many more (PROPTEST_CASES, and PROPTEST_MAX_SECS for a time bound).

use std::{
    sync::OnceLock,
    time::{Duration, Instant},
};

use faultline_proto::v1::{self as pb, fault_spec::Kind};
use proptest::prelude::*;

use super::{spec_from_proto, spec_to_proto, tests::FakeHost};
use crate::{
    domain::SpecErrorKind,
    limits::{MAX_LABEL_KEY_BYTES, MAX_LABEL_VALUE_BYTES, MAX_LABELS, MAX_NAME_BYTES},
};

/// Words the kinds know, so that valid specs come up too, and junk.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(String::new()),
        4 => prop::sample::select(vec![
            "connect", "openat", "bind", "sendmsg", "accept", "fork", "getpid", "read",
            "ECONNREFUSED", "EIO", "ENOSPC", "EPERM", "SIGKILL", "SIGTERM", "SIGSTOP", "9",
            "tcp", "udp", "icmp", "any", "127.0.0.0/8", "::1", "10.0.0.0/40", "80", "80-90",
            "90-80", "65536", "/tmp", "/", "/sys/fs/cgroup", "relative", "example.com",
            "*.example.com", "lo", "eth0", "sshd", "bash", "1s", "-1",
        ])
        .prop_map(String::from),
        3 => "[ -~]{0,40}",
        2 => any::<String>(),
        1 => "[\\x00-\\x1f\\u{7f}-\\u{ffff}]{0,20}",
        1 => (200usize..80_000).prop_map(|n| "a".repeat(n)),
    ]
}

fn prob() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => 0.0..=1.0,
        1 => Just(0.0),
        1 => Just(1.0),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(-0.0),
        1 => Just(f64::MIN_POSITIVE),
        2 => any::<f64>(),
    ]
}

fn big() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => 0u64..10_000,
        1 => Just(0),
        1 => Just(u64::MAX),
        1 => Just(u64::MAX / 2 + 1),
        2 => any::<u64>(),
    ]
}

fn small() -> impl Strategy<Value = u32> {
    prop_oneof![
        3 => 0u32..100_000,
        1 => Just(u32::MAX),
        2 => any::<u32>(),
    ]
}

fn enumeration() -> impl Strategy<Value = i32> {
    prop_oneof![4 => 0i32..5, 1 => any::<i32>()]
}

fn packet_match() -> impl Strategy<Value = Option<pb::PacketMatch>> {
    prop::option::of(
        (text(), text(), text(), text(), text(), any::<bool>()).prop_map(
            |(protocol, src_cidr, dst_cidr, src_ports, dst_ports, include_ssh)| pb::PacketMatch {
                protocol,
                src_cidr,
                dst_cidr,
                src_ports,
                dst_ports,
                include_ssh,
            },
        ),
    )
}

/// Every variant of `FaultSpec.kind`, every field of each. A kind added to
/// the proto without a line here fails `every_kind_is_generated`.
/// Near-valid faults, so that the accepted side is tested too.
fn near_valid() -> impl Strategy<Value = Kind> {
    prop_oneof![
        2 => (
            prop::sample::select(vec!["connect", "bind", "sendmsg", "getpid"]),
            prop::sample::select(vec!["ECONNREFUSED", "EIO", "EPERM", "ENOSPC"]),
            prob(),
            0u32..70_000,
            prop::sample::select(vec!["", "127.0.0.0/8", "::1", "10.0.0.0/40"]),
        )
            .prop_map(|(syscall, errno, probability, port, cidr)| {
                Kind::SyscallError(pb::SyscallError {
                    syscall: syscall.into(),
                    errno: errno.into(),
                    probability,
                    port,
                    cidr: cidr.into(),
                    path: String::new(),
                })
            }),
        1 => (prob(), 0i32..4).prop_map(|(probability, direction)| {
            Kind::PacketLoss(pb::PacketLoss {
                probability,
                burst_length: 0.0,
                direction,
                r#match: None,
            })
        }),
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![1 => near_valid(), 2 => every_kind()]
}

fn every_kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        (text(), text(), prob(), small(), text(), text()).prop_map(
            |(syscall, errno, probability, port, cidr, path)| Kind::SyscallError(
                pb::SyscallError {
                    syscall,
                    errno,
                    probability,
                    port,
                    cidr,
                    path,
                }
            )
        ),
        (text(), text(), prob(), big()).prop_map(|(syscall, signal, probability, nth_call)| {
            Kind::SyscallSignal(pb::SyscallSignal {
                syscall,
                signal,
                probability,
                nth_call,
            })
        }),
        (prob(), prob(), enumeration(), packet_match()).prop_map(
            |(probability, burst_length, direction, r#match)| Kind::PacketLoss(pb::PacketLoss {
                probability,
                burst_length,
                direction,
                r#match,
            })
        ),
        (enumeration(), packet_match())
            .prop_map(|(direction, r#match)| Kind::Blackhole(pb::Blackhole { direction, r#match })),
        (prob(), enumeration(), packet_match()).prop_map(|(probability, direction, r#match)| {
            Kind::Duplicate(pb::Duplicate {
                probability,
                direction,
                r#match,
            })
        }),
        (prob(), any::<bool>(), enumeration(), packet_match()).prop_map(
            |(probability, recompute_checksums, direction, r#match)| Kind::Corrupt(pb::Corrupt {
                probability,
                recompute_checksums,
                direction,
                r#match,
            })
        ),
        (big(), small(), enumeration(), packet_match()).prop_map(
            |(rate_bits_per_sec, burst_bytes, direction, r#match)| Kind::Bandwidth(pb::Bandwidth {
                rate_bits_per_sec,
                burst_bytes,
                direction,
                r#match,
            })
        ),
        (prob(), prob(), packet_match()).prop_map(|(d, j, r#match)| Kind::Latency(pb::Latency {
            delay_ms: d * 1000.0,
            jitter_ms: j * 100.0,
            r#match,
        })),
        (text(), enumeration(), prob(), text()).prop_map(
            |(domain, failure, probability, resolver_cidr)| Kind::DnsError(pb::DnsError {
                domain,
                failure,
                probability,
                resolver_cidr,
            })
        ),
        (
            prob(),
            small(),
            prop::collection::vec(small(), 0..4),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(l, cpus, cpu_list, host, top_up)| Kind::CpuPressure(
                pb::CpuPressure {
                    load_percent: l * 100.0,
                    cpus: cpus % 8,
                    cpu_list,
                    host,
                    top_up,
                }
            )),
        (big(), prob(), big()).prop_map(|(size_bytes, p, ramp_bytes_per_sec)| {
            Kind::MemoryPressure(pb::MemoryPressure {
                size_bytes,
                percent: p * 100.0,
                ramp_bytes_per_sec,
            })
        }),
        (text(), big(), prob(), big()).prop_map(|(path, free_bytes, p, size_bytes)| {
            Kind::DiskFill(pb::DiskFill {
                path,
                free_bytes,
                free_percent: p * 100.0,
                size_bytes,
            })
        }),
        (text(), enumeration(), big(), any::<bool>()).prop_map(
            |(path, mode, rate_bytes_per_sec, direct)| Kind::IoPressure(pb::IoPressure {
                path,
                mode,
                rate_bytes_per_sec,
                direct,
            })
        ),
        (text(), big(), enumeration(), prob(), big()).prop_map(
            |(signal, interval_ms, pick, probability, min_gap_ms)| Kind::ProcessKill(
                pb::ProcessKill {
                    signal,
                    interval_ms,
                    pick,
                    probability,
                    min_gap_ms,
                }
            )
        ),
        Just(Kind::ProcessPause(pb::ProcessPause {})),
    ]
}

fn pids() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(
        prop_oneof![
            Just(0u32),
            Just(1),
            Just(std::process::id()),
            2u32..100_000,
            any::<u32>()
        ],
        0..4,
    )
}

fn target() -> impl Strategy<Value = Option<pb::Target>> {
    prop_oneof![
        2 => prop::sample::select(vec![
            pb::Target { pids: vec![std::process::id()], ..Default::default() },
            pb::Target { cgroup: "/app".into(), ..Default::default() },
            pb::Target { interface: "veth0".into(), ..Default::default() },
            pb::Target { comm: "bash".into(), ..Default::default() },
        ])
        .prop_map(Some),
        3 => any_target(),
    ]
}

fn any_target() -> impl Strategy<Value = Option<pb::Target>> {
    prop::option::weighted(
        0.9,
        (
            pids(),
            text(),
            text(),
            pids(),
            text(),
            text(),
            any::<bool>(),
        )
            .prop_map(
                |(pids, cgroup, comm, exclude_pids, exclude_comm, interface, allow_host_wide)| {
                    pb::Target {
                        pids,
                        cgroup,
                        comm,
                        exclude_pids,
                        exclude_comm,
                        interface,
                        allow_host_wide,
                    }
                },
            ),
    )
}

fn labels() -> impl Strategy<Value = std::collections::HashMap<String, String>> {
    prop_oneof![
        4 => Just(std::collections::HashMap::new()),
        4 => prop::collection::hash_map(text(), text(), 0..4),
        1 => prop::collection::hash_map("[a-z]{1,8}", "[a-z]{0,8}", 30..36),
    ]
}

fn spec() -> impl Strategy<Value = pb::ExperimentSpec> {
    (
        prop_oneof![3 => "[a-z]{0,12}", 1 => text()],
        prop::collection::vec(
            prop::option::weighted(0.95, kind()).prop_map(|kind| pb::FaultSpec { kind }),
            0..4,
        ),
        target(),
        prop_oneof![1 => Just(0u64), 6 => 1u64..10_000_000, 1 => any::<u64>()],
        any::<bool>(),
        labels(),
        prop_oneof![4 => 0i32..3, 1 => any::<i32>()],
    )
        .prop_map(
            |(name, faults, target, duration_ms, dry_run, labels, impact)| pb::ExperimentSpec {
                name,
                faults,
                target,
                duration_ms,
                dry_run,
                labels,
                impact,
            },
        )
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256)
}

/// Cases after this long pass without running (`cargo xtask fuzz --duration`).
fn out_of_time() -> bool {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    let max = std::env::var("PROPTEST_MAX_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::MAX, Duration::from_secs);
    start.elapsed() > max
}

/// How many cases were accepted, shown at the end of a `cargo xtask fuzz`.
static ACCEPTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn any_spec_is_valid_or_invalid_argument_naming_a_field(
        wire in spec(),
        exists in any::<bool>(),
    ) {
        if out_of_time() {
            return Ok(());
        }
        let host = FakeHost { exists };
        match spec_from_proto(Some(&wire), &host) {
            Ok(domain) => {
                ACCEPTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                prop_assert!(domain.name.len() <= MAX_NAME_BYTES);
                prop_assert!(domain.labels.len() <= MAX_LABELS);
                for (k, v) in &domain.labels {
                    prop_assert!(!k.is_empty() && k.len() <= MAX_LABEL_KEY_BYTES);
                    prop_assert!(v.len() <= MAX_LABEL_VALUE_BYTES);
                }
                prop_assert!(!domain.faults.is_empty());
                prop_assert!(!domain.duration.is_zero());
                let back = spec_to_proto(&domain);
                let again = spec_from_proto(Some(&back), &host);
                prop_assert_eq!(again.as_ref().ok(), Some(&domain), "{:?}", again);
            }
            Err(e) => {
                prop_assert_eq!(e.kind, SpecErrorKind::Invalid, "{}", e);
                prop_assert!(
                    e.field.starts_with("spec"),
                    "the field is named: {:?} ({})", e.field, e.reason
                );
                prop_assert!(!e.reason.is_empty());
            }
        }
    }
}

/// The strategy covers every kind the proto has.
#[test]
fn every_kind_is_generated() {
    use proptest::strategy::ValueTree as _;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = every_kind();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..2000 {
        let k = strategy.new_tree(&mut runner).unwrap().current();
        seen.insert(std::mem::discriminant(&k));
    }
    assert_eq!(seen.len(), crate::faults::KINDS.len());
}
