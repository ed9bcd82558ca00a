//! Disk fill and IO pressure through the real agent, on ext4 filesystems
//! the tests make themselves (a sparse image on a loop device): the free
//! space reached, the fill file gone on stop, on the agent's death and at
//! its next start; the stressor's throughput seen from its own
//! /proc/PID/io and from the loop device, its cgroup, and its death with
//! the agent; bad requests refused naming the field, with nothing started.
#![expect(
    unused_crate_dependencies,
    reason = "each integration test is its own crate; the package's dependencies serve them all"
)]

use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

use faultline_proto::v1::{self as pb, fault_service_client::FaultServiceClient};
use faultline_tests::*;
use tonic::transport::Channel;

const MIB: u64 = 1 << 20;

fn fill(path: &str, free: u64, free_percent: f64, size: u64) -> pb::fault_spec::Kind {
    pb::fault_spec::Kind::DiskFill(pb::DiskFill {
        path: path.into(),
        free_bytes: free,
        free_percent,
        size_bytes: size,
    })
}

fn io(path: &str, mode: pb::IoMode, rate: u64, direct: bool) -> pb::fault_spec::Kind {
    pb::fault_spec::Kind::IoPressure(pb::IoPressure {
        path: path.into(),
        mode: mode.into(),
        rate_bytes_per_sec: rate,
        direct,
    })
}

fn host() -> pb::Target {
    pb::Target::default()
}

fn faultctl(agent: &Agent, args: &[&str]) -> Output {
    Command::new(bin("faultctl"))
        .arg("--socket")
        .arg(&agent.socket)
        .args(args)
        .output()
        .expect("run faultctl")
}

/// `faultctl inject ...`, which prints the new experiment's id.
fn inject(agent: &Agent, args: &[&str]) -> String {
    let out = faultctl(agent, args);
    assert!(out.status.success(), "faultctl {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn get(client: &mut FaultServiceClient<Channel>, id: &str) -> pb::Experiment {
    client
        .get_experiment(pb::GetExperimentRequest { id: id.into() })
        .await
        .expect("GetExperiment")
        .into_inner()
}

async fn stop(client: &mut FaultServiceClient<Channel>, id: &str) {
    client
        .stop_experiment(pb::StopExperimentRequest { id: id.into() })
        .await
        .expect("StopExperiment");
}

fn metric(exp: &pb::Experiment, name: &str) -> f64 {
    exp.faults
        .iter()
        .flat_map(|f| &f.metrics)
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no metric {name} in {exp:?}"))
        .value
}

#[expect(clippy::cast_precision_loss, reason = "byte counts")]
fn assert_within(what: &str, got: u64, want: u64, share: f64) {
    let err = (got as f64 - want as f64).abs();
    assert!(
        err <= want as f64 * share,
        "{what}: {got} bytes, wanted {want} ± {:.1} %",
        share * 100.0
    );
}

/// Records in the agent's undo journal.
fn undo_records(agent: &Agent) -> usize {
    std::fs::read_dir(agent.dir.join("state/undo")).map_or(0, Iterator::count)
}

fn fill_files(fs: &LoopFs) -> Vec<String> {
    fs.entries()
        .into_iter()
        .filter(|n| n.starts_with(".faultline-"))
        .collect()
}

#[tokio::test]
async fn disk_fill_reaches_the_free_space_asked_and_goes_on_stop() {
    require_root().unwrap();
    let agent = Agent::start();
    let mut client = agent.client().await;
    let fs = LoopFs::ext4(256 * MIB);
    let (total, before) = fs.space();
    let dir = fs.mnt_str();
    // Each amount: over gRPC, then the flags of `faultctl inject disk-fill`.
    let cases = [
        ("free_bytes 64 MiB (gRPC)", 64 * MIB, None),
        ("--free 40MiB", 40 * MIB, Some(["--free", "40MiB"])),
        (
            "--free-percent 50",
            total / 2,
            Some(["--free-percent", "50"]),
        ),
        (
            "--size 100MiB",
            before - 100 * MIB,
            Some(["--size", "100MiB"]),
        ),
    ];
    for (what, want, flags) in cases {
        let id = match flags {
            None => {
                let req = experiment(
                    fill(&dir, 64 * MIB, 0.0, 0),
                    host(),
                    Duration::from_secs(60),
                );
                start(&mut client, req).await.id
            }
            Some([flag, value]) => inject(
                &agent,
                &[
                    "inject",
                    "disk-fill",
                    "--path",
                    &dir,
                    flag,
                    value,
                    "--duration",
                    "60s",
                ],
            ),
        };
        let (_, free) = fs.space();
        assert_within(what, free, want, 0.01);
        let files = fill_files(&fs);
        assert_eq!(files.len(), 1, "{what}: one fill file: {files:?}");
        let exp = get(&mut client, &id).await;
        assert_eq!(exp.state(), pb::ExperimentState::Running, "{exp:?}");
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "byte counts"
        )]
        let (filled, reported_free) = (
            metric(&exp, "fill_bytes") as u64,
            metric(&exp, "free_bytes") as u64,
        );
        assert_within(&format!("{what}: fill_bytes"), filled, before - free, 0.01);
        assert_within(&format!("{what}: free_bytes"), reported_free, free, 0.01);
        eprintln!("{what}: free {free} bytes (asked {want}), file {filled} bytes");

        stop(&mut client, &id).await;
        assert!(
            fill_files(&fs).is_empty(),
            "{what}: the fill file outlived stop: {:?}",
            fs.entries()
        );
        assert_within(
            &format!("{what}: free after stop"),
            fs.space().1,
            before,
            0.01,
        );
    }
    assert_eq!(
        undo_records(&agent),
        0,
        "undo records left after every stop"
    );
}

/// A 128 MiB loop filesystem that `agent` fills until 16 MiB are free,
/// and its free bytes before.
async fn filled_to_16_mib_free(agent: &Agent) -> (LoopFs, u64) {
    let fs = LoopFs::ext4(128 * MIB);
    let (_, before) = fs.space();
    start(
        &mut agent.client().await,
        experiment(
            fill(&fs.mnt_str(), 16 * MIB, 0.0, 0),
            host(),
            Duration::from_secs(60),
        ),
    )
    .await;
    (fs, before)
}

/// SIGKILL of the agent: the fill file goes at once, without a restart (the
/// reaper undoes the agent's journal when the agent dies).
#[tokio::test]
async fn a_fill_file_goes_when_the_agent_is_killed() {
    require_root().unwrap();
    let mut agent = Agent::start();
    let (fs, before) = filled_to_16_mib_free(&agent).await;
    assert_eq!(fill_files(&fs).len(), 1);
    agent.kill();
    let t0 = Instant::now();
    let gone = wait_for(Duration::from_secs(2), || fill_files(&fs).is_empty());
    assert!(
        gone,
        "the fill file is still there {:?} after the agent's SIGKILL: {:?}",
        t0.elapsed(),
        fs.entries()
    );
    eprintln!("fill file gone {:?} after the SIGKILL", t0.elapsed());
    // The blocks come back when the filesystem frees the unlinked inode,
    // which the kernel may do a little after the unlink.
    let back = wait_for(Duration::from_secs(5), || {
        (fs.space().1 as f64 - before as f64).abs() <= before as f64 * 0.01
    });
    eprintln!(
        "free space back: {back}, {:?} after the SIGKILL",
        t0.elapsed()
    );
    assert_within("free after the agent died", fs.space().1, before, 0.01);
}

/// With the reaper killed too, only the journal is left: the next start
/// undoes it.
#[tokio::test]
async fn a_fill_file_left_by_a_crash_goes_at_the_next_start() {
    use nix::{sys::signal::Signal, unistd::Pid};
    require_root().unwrap();
    let mut agent = Agent::start();
    let (fs, before) = filled_to_16_mib_free(&agent).await;
    // Stopped first, so none of them undoes anything when the agent dies;
    // then killed with it.
    let children = children_of(agent.pid());
    for &c in &children {
        let _ = nix::sys::signal::kill(Pid::from_raw(c as i32), Signal::SIGSTOP);
    }
    agent.kill();
    for &c in &children {
        let _ = nix::sys::signal::kill(Pid::from_raw(c as i32), Signal::SIGKILL);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fill_files(&fs).len(), 1, "the crash left the fill file");
    let records = undo_records(&agent);
    assert!(records >= 1, "the crash left its undo record");

    let next = Agent::start_in(agent.dir.clone(), &[]);
    assert!(
        fill_files(&fs).is_empty(),
        "start-up left the fill file: {:?}",
        fs.entries()
    );
    assert_within("free after the restart", fs.space().1, before, 0.01);
    let records = undo_records(&next);
    assert_eq!(records, 0, "start-up left undo records");
}

/// The stressor among the cgroup's processes, waiting a moment for it.
fn started_in(cg: &TestCgroup) -> Option<u32> {
    let mut pid = None;
    wait_for(Duration::from_secs(5), || {
        pid = stressor_in(cg);
        pid.is_some()
    });
    pid
}

/// The stressor (`faultline-agent --internal io ...`, comm `fl-io` once it
/// runs) among the cgroup's processes.
fn stressor_in(cg: &TestCgroup) -> Option<u32> {
    cg.procs().into_iter().find(|p| {
        std::fs::read(format!("/proc/{p}/cmdline"))
            .is_ok_and(|c| c.windows(14).any(|w| w == b"--internal\0io\0"))
    })
}

/// Bytes per second over `secs`, from the stressor's /proc/PID/io and from
/// the loop device, after the stressor has moved data for a second.
#[expect(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "rates"
)]
fn measure(pid: u32, fs: &LoopFs, read: bool, secs: u64) -> (u64, u64) {
    let pick = |(r, w): (u64, u64)| if read { r } else { w };
    // Read mode first writes its file whole, unpaced: wait for the reads.
    let start = pick(proc_io(pid));
    assert!(
        wait_for(Duration::from_secs(20), || pick(proc_io(pid))
            > start + 4 * MIB),
        "the stressor moves no data: {:?}",
        proc_io(pid)
    );
    std::thread::sleep(Duration::from_secs(1));
    let (p0, d0, t0) = (pick(proc_io(pid)), pick(fs.device_bytes()), Instant::now());
    std::thread::sleep(Duration::from_secs(secs));
    let (p1, d1) = (pick(proc_io(pid)), pick(fs.device_bytes()));
    let dt = t0.elapsed().as_secs_f64();
    (
        ((p1 - p0) as f64 / dt) as u64,
        ((d1 - d0) as f64 / dt) as u64,
    )
}

#[tokio::test]
async fn io_pressure_runs_at_its_rate_in_the_cgroup_and_dies_with_the_agent() {
    require_root().unwrap();
    let mut agent = Agent::start();
    let mut client = agent.client().await;
    let fs = LoopFs::ext4(256 * MIB);
    let cg = TestCgroup::new("io-pressure");
    let dir = fs.mnt_str();
    let rate = 20 * MIB;

    for (what, mode, direct) in [
        ("write, synced", pb::IoMode::Write, false),
        ("read, page cache dropped", pb::IoMode::Read, false),
    ] {
        let exp = start(
            &mut client,
            experiment(
                io(&dir, mode, rate, direct),
                cgroup_target(&cg),
                Duration::from_secs(60),
            ),
        )
        .await;
        let pid = started_in(&cg).unwrap_or_else(|| {
            panic!("{what}: no stressor in {}: {:?}", cg.path_str(), cg.procs())
        });
        let (by_proc, by_dev) = measure(pid, &fs, mode == pb::IoMode::Read, 3);
        eprintln!(
            "{what}: {by_proc} B/s by /proc/{pid}/io, {by_dev} B/s at /dev/{}",
            fs.name
        );
        assert_within(&format!("{what}: /proc/PID/io rate"), by_proc, rate, 0.2);
        assert_within(&format!("{what}: loop device rate"), by_dev, rate, 0.2);
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "rates"
        )]
        let reported = metric(&get(&mut client, &exp.id).await, "achieved_bytes_per_sec") as u64;
        assert_within(
            &format!("{what}: achieved_bytes_per_sec"),
            reported,
            rate,
            0.2,
        );
        stop(&mut client, &exp.id).await;
        assert!(
            wait_for(Duration::from_secs(2), || stressor_in(&cg).is_none()),
            "{what}: the stressor outlived stop"
        );
        assert!(
            fill_files(&fs).is_empty(),
            "{what}: its file outlived stop: {:?}",
            fs.entries()
        );
    }

    // The flags, O_DIRECT, both directions; then the agent's SIGKILL.
    inject(
        &agent,
        &[
            "inject",
            "io-pressure",
            "--path",
            &dir,
            "--mode",
            "mixed",
            "--rate",
            "20MiB/s",
            "--direct",
            "--cgroup",
            &cg.path_str(),
            "--duration",
            "60s",
        ],
    );
    let pid = started_in(&cg).expect("the mixed, direct stressor in the cgroup");
    let (read, _) = measure(pid, &fs, true, 2);
    assert_within("mixed, direct: read half", read, rate / 2, 0.2);
    let (r, w) = fs.device_bytes();
    std::thread::sleep(Duration::from_secs(1));
    let (r1, w1) = fs.device_bytes();
    eprintln!(
        "mixed, direct: {} B read, {} B written at the device in 1 s",
        r1 - r,
        w1 - w
    );

    agent.kill();
    let t0 = Instant::now();
    let died = wait_for(Duration::from_secs(1), || {
        gone(pid) && stressor_in(&cg).is_none()
    });
    assert!(
        died,
        "the stressor {pid} outlived the agent's SIGKILL: cgroup holds {:?}",
        cg.procs()
    );
    eprintln!("stressor gone {:?} after the agent's SIGKILL", t0.elapsed());
}

async fn refused(
    client: &mut FaultServiceClient<Channel>,
    kind: pb::fault_spec::Kind,
    target: pb::Target,
) -> tonic::Status {
    match client
        .start_experiment(experiment(kind.clone(), target, Duration::from_secs(30)))
        .await
    {
        Ok(r) => panic!("accepted: {kind:?}: {r:?}"),
        Err(s) => s,
    }
}

#[tokio::test]
async fn bad_disk_and_io_requests_name_the_field_and_start_nothing() {
    use tonic::Code::{FailedPrecondition, InvalidArgument};
    require_root().unwrap();
    // The agent's state directory on a filesystem of the test's own (1 GiB:
    // its floor is 512 MiB).
    let state_fs = LoopFs::ext4(1 << 30);
    let agent = Agent::start_in(state_fs.mnt.join("agent"), &[]);
    let mut client = agent.client().await;
    let other = LoopFs::ext4(128 * MIB);
    let dir = other.mnt_str();
    let file = other.path("a-file");
    std::fs::write(&file, b"x").unwrap();
    let missing = other.path("missing");
    let state_dir = state_fs.mnt_str();
    let f = "spec.faults[0].disk_fill";
    let i = "spec.faults[0].io_pressure";
    let cases = [
        (
            fill(&missing, MIB, 0.0, 0),
            host(),
            InvalidArgument,
            format!("{f}.path"),
        ),
        (
            fill(&file, MIB, 0.0, 0),
            host(),
            InvalidArgument,
            format!("{f}.path"),
        ),
        (
            fill("relative/dir", MIB, 0.0, 0),
            host(),
            InvalidArgument,
            format!("{f}.path"),
        ),
        (fill(&dir, 0, 0.0, 0), host(), InvalidArgument, f.to_owned()),
        (
            fill(&dir, MIB, 0.0, 2 * MIB),
            host(),
            InvalidArgument,
            format!("{f}.size_bytes"),
        ),
        (
            fill(&dir, MIB, 5.0, 0),
            host(),
            InvalidArgument,
            format!("{f}.free_percent"),
        ),
        (
            fill(&dir, 0, 150.0, 0),
            host(),
            InvalidArgument,
            format!("{f}.free_percent"),
        ),
        // More free than there is, more to write than is free.
        (
            fill(&dir, 1 << 40, 0.0, 0),
            host(),
            FailedPrecondition,
            format!("{f}.free_bytes"),
        ),
        (
            fill(&dir, 0, 0.0, 1 << 40),
            host(),
            FailedPrecondition,
            format!("{f}.size_bytes"),
        ),
        // Below the floor of the state directory's filesystem.
        (
            fill(&state_dir, 100 * MIB, 0.0, 0),
            host(),
            FailedPrecondition,
            format!("{f}.free_bytes"),
        ),
        (
            fill(&state_dir, 0, 10.0, 0),
            host(),
            FailedPrecondition,
            format!("{f}.free_percent"),
        ),
        (
            fill("/", 0, 1.0, 0),
            host(),
            FailedPrecondition,
            format!("{f}.free_percent"),
        ),
        (
            fill(&dir, MIB, 0.0, 0),
            pid_target(std::process::id()),
            InvalidArgument,
            "spec.target.pids".into(),
        ),
        (
            io(&dir, pb::IoMode::Write, 0, false),
            host(),
            InvalidArgument,
            format!("{i}.rate_bytes_per_sec"),
        ),
        (
            io(&missing, pb::IoMode::Write, MIB, false),
            host(),
            InvalidArgument,
            format!("{i}.path"),
        ),
        (
            io(&file, pb::IoMode::Read, MIB, false),
            host(),
            InvalidArgument,
            format!("{i}.path"),
        ),
        (
            io(&dir, pb::IoMode::Write, MIB, false),
            pid_target(std::process::id()),
            InvalidArgument,
            "spec.target.pids".into(),
        ),
    ];
    for (kind, target, code, field) in cases {
        let s = refused(&mut client, kind.clone(), target).await;
        assert_eq!(s.code(), code, "{kind:?}: {s:?}");
        assert!(
            s.message().contains(&field),
            "{kind:?}: {:?} does not name {field}",
            s.message()
        );
        eprintln!("refused: {}", s.message());
    }
    let list = client
        .list_experiments(pb::ListExperimentsRequest {
            running_only: false,
            ..Default::default()
        })
        .await
        .expect("ListExperiments")
        .into_inner();
    assert!(
        list.experiments.is_empty(),
        "started: {:?}",
        list.experiments
    );
    assert!(
        fill_files(&other).is_empty() && fill_files(&state_fs).is_empty(),
        "files left"
    );

    // The control: the state directory's filesystem above its floor is
    // fine, and so is the other filesystem down to its last megabyte.
    let (_, free) = state_fs.space();
    for (kind, fs) in [
        (fill(&state_dir, 600 * MIB, 0.0, 0), &state_fs),
        (fill(&dir, MIB, 0.0, 0), &other),
    ] {
        let exp = start(
            &mut client,
            experiment(kind, host(), Duration::from_secs(30)),
        )
        .await;
        assert_eq!(fill_files(fs).len(), 1);
        stop(&mut client, &exp.id).await;
    }
    assert!(free > 600 * MIB);
}
