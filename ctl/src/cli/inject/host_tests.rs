//! `faultctl inject` for the host-level kinds (pressure, disk fill, process
//! kill and pause): the flag shapes the issue fixes, and the wire they send.

use faultline_proto::v1 as pb;

use super::tests::inject_spec;
use crate::cli::tests::{assert_usage_errors, words};

/// The one fault and the target that `line` sends.
fn sent(line: &str) -> (pb::fault_spec::Kind, pb::Target, u64) {
    let spec = match inject_spec(&words(line)) {
        Ok(spec) => spec,
        Err(err) => panic!("expected {line:?} to parse, got: {err}"),
    };
    let kind = spec.faults[0].kind.clone().expect("a fault kind");
    (kind, spec.target.unwrap_or_default(), spec.duration_ms)
}

fn cgroup(path: &str) -> pb::Target {
    pb::Target {
        cgroup: path.into(),
        ..Default::default()
    }
}

#[test]
fn cpu_pressure_flags() {
    use pb::fault_spec::Kind::CpuPressure;
    let (kind, target, ms) =
        sent("inject cpu-pressure --load 50 --cpus 2 --host --top-up --duration 30s");
    assert_eq!(
        kind,
        CpuPressure(pb::CpuPressure {
            load_percent: 50.0,
            cpus: 2,
            cpu_list: vec![],
            host: true,
            top_up: true,
        })
    );
    assert_eq!((target, ms), (pb::Target::default(), 30_000));
    let (kind, target, _) =
        sent("inject cpu-pressure --load 25 --cpu-list 0,1 --cgroup app --duration 5s");
    assert_eq!(
        kind,
        CpuPressure(pb::CpuPressure {
            load_percent: 25.0,
            cpus: 0,
            cpu_list: vec![0, 1],
            host: false,
            top_up: false,
        })
    );
    assert_eq!(target, cgroup("app"));
    // One CPU unless told otherwise.
    let (kind, _, _) = sent("inject cpu-pressure --load 75 --host --duration 5s");
    assert!(matches!(kind, CpuPressure(p) if p.cpus == 1));
    assert_usage_errors(
        "inject cpu-pressure --load 50 --duration 5s",
        &[
            ("", "--cgroup"),
            ("--host --cgroup app", "cannot be used with"),
            ("--host --cpus 1 --cpu-list 0", "cannot be used with"),
        ],
    );
}

#[test]
fn memory_pressure_flags() {
    use pb::fault_spec::Kind::MemoryPressure;
    let (kind, target, _) =
        sent("inject memory-pressure --size 1GiB --ramp 256MiB/s --cgroup app --duration 30s");
    assert_eq!(
        kind,
        MemoryPressure(pb::MemoryPressure {
            size_bytes: 1 << 30,
            percent: 0.0,
            ramp_bytes_per_sec: 256 << 20,
        })
    );
    assert_eq!(target, cgroup("app"));
    let (kind, target, _) = sent("inject memory-pressure --percent 20 --duration 30s");
    assert_eq!(
        kind,
        MemoryPressure(pb::MemoryPressure {
            size_bytes: 0,
            percent: 20.0,
            ramp_bytes_per_sec: 0,
        })
    );
    assert_eq!(target, pb::Target::default());
    assert_usage_errors(
        "inject memory-pressure --duration 5s",
        &[
            ("", "--size"),
            ("--size 1GiB --percent 5", "cannot be used with"),
            ("--size 1XiB", "unknown unit"),
            ("--size 1GiB --ramp fast", "--ramp"),
        ],
    );
}

#[test]
fn disk_fill_and_io_pressure_flags() {
    use pb::fault_spec::Kind::{DiskFill, IoPressure};
    for (flag, free, percent, size) in [
        ("--free 1GiB", 1 << 30, 0.0, 0),
        ("--free-percent 5", 0, 5.0, 0),
        ("--size 2GiB", 0, 0.0, 2 << 30),
    ] {
        let (kind, target, _) = sent(&format!(
            "inject disk-fill --path /mnt/data {flag} --duration 1m"
        ));
        assert_eq!(
            kind,
            DiskFill(pb::DiskFill {
                path: "/mnt/data".into(),
                free_bytes: free,
                free_percent: percent,
                size_bytes: size,
            }),
            "{flag}"
        );
        assert_eq!(target, pb::Target::default());
    }
    assert_usage_errors(
        "inject disk-fill --path /mnt/data --duration 5s",
        &[
            ("", "--free"),
            ("--free 1GiB --size 1GiB", "cannot be used with"),
        ],
    );
    let (kind, target, _) = sent(
        "inject io-pressure --path /mnt/data --mode mixed --rate 50MiB/s --direct \
         --cgroup app --duration 30s",
    );
    assert_eq!(
        kind,
        IoPressure(pb::IoPressure {
            path: "/mnt/data".into(),
            mode: pb::IoMode::Mixed.into(),
            rate_bytes_per_sec: 50 << 20,
            direct: true,
        })
    );
    assert_eq!(target, cgroup("app"));
    assert_usage_errors(
        "inject io-pressure --path /mnt/data --duration 5s",
        &[("", "--rate"), ("--rate 1MiB/s --mode both", "--mode")],
    );
}

#[test]
fn process_kill_and_pause_flags() {
    use pb::fault_spec::Kind::{ProcessKill, ProcessPause};
    let (kind, target, _) = sent(
        "inject process-kill --comm worker --signal KILL --interval 30s --pick one-random \
         --probability 0.5 --min-gap 10s --duration 5m",
    );
    assert_eq!(
        kind,
        ProcessKill(pb::ProcessKill {
            signal: "KILL".into(),
            interval_ms: 30_000,
            pick: pb::KillPick::OneRandom.into(),
            probability: 0.5,
            min_gap_ms: 10_000,
        })
    );
    assert_eq!(target.comm, "worker");
    // Once, everyone, always, SIGKILL, unless told otherwise.
    let (kind, target, _) = sent("inject process-kill --pid 42 --duration 1m");
    assert_eq!(
        kind,
        ProcessKill(pb::ProcessKill {
            signal: "KILL".into(),
            interval_ms: 0,
            pick: pb::KillPick::All.into(),
            probability: 1.0,
            min_gap_ms: 0,
        })
    );
    assert_eq!(target.pids, [42]);
    let (kind, target, ms) = sent("inject process-pause --cgroup app --duration 10s");
    assert_eq!(kind, ProcessPause(pb::ProcessPause {}));
    assert_eq!((target, ms), (cgroup("app"), 10_000));
    assert_usage_errors(
        "inject process-kill --duration 5s",
        &[
            ("", "--pid"),
            ("--pid 1 --pick some", "--pick"),
            ("--pid 1 --probability 2", "--probability"),
        ],
    );
    assert_usage_errors("inject process-pause --duration 5s", &[("", "--pid")]);
}
