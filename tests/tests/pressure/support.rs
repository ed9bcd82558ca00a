//! What the pressure tests read from the kernel: cgroups, processes, CPU
//! time, RSS; and their client calls.

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use faultline_proto::v1 as pb;
use faultline_tests::{ChildGuard, TestCgroup, cgroup2_root, wait_for};

/// The cgroup2 root hands cpu and memory to the test cgroups where it can
/// (the VMs: pure v2; on the hybrid host these controllers are v1's).
pub fn enable_controllers() {
    let root = cgroup2_root();
    let have = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    for c in ["cpu", "memory"] {
        if have.split_whitespace().any(|h| h == c) {
            let _ = std::fs::write(root.join("cgroup.subtree_control"), format!("+{c}"));
        }
    }
}

/// Every cgroup directory at and below `dir`.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&e.path()));
        }
    }
    out
}

pub fn procs_under(dir: &Path) -> Vec<u32> {
    walk(dir)
        .iter()
        .flat_map(|d| {
            std::fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

pub fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The stressor processes (`fl-cpu`, `fl-memory`) that are children of `agent`.
pub fn stressors_of(agent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| ppid(p) == Some(agent) && comm(p).starts_with("fl-"))
        .collect()
}

/// Every stressor process on the host, whoever started it.
pub fn any_stressor() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| matches!(comm(p).as_str(), "fl-cpu" | "fl-memory"))
        .collect()
}

/// The process state letter (R, S, Z...), "" when gone.
pub fn state(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s.rsplit_once(')')?.1.split_whitespace().next()?.to_owned()))
        .unwrap_or_default()
}

/// Exists and is not a zombie (a dead process its new parent has not reaped yet).
pub fn running(pid: u32) -> bool {
    !matches!(state(pid).as_str(), "" | "Z" | "X")
}

/// The agent's `n` stressors, once they have exec'd (named `fl-…`).
pub fn wait_stressors(agent: u32, n: usize) -> Vec<u32> {
    let mut pids = Vec::new();
    wait_for(Duration::from_secs(3), || {
        pids = stressors_of(agent);
        pids.len() >= n
    });
    assert_eq!(pids.len(), n, "stressors of the agent: {pids:?}");
    pids
}

/// CPU time of every thread of `pid`, in ns.
pub fn cpu_ns(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

pub fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
}

/// The cgroup's CPU usage (cpu.stat usage_usec), in ns.
pub fn usage_ns(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("cpu.stat"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse::<u64>().ok())
        .expect("cpu.stat usage_usec")
        * 1000
}

/// Percent of one CPU that `read` (ns of CPU time) grew by over `window`.
pub fn load_over(window: Duration, mut read: impl FnMut() -> u64) -> f64 {
    let (t0, c0) = (Instant::now(), read());
    std::thread::sleep(window);
    let (t1, c1) = (Instant::now(), read());
    (c1 - c0) as f64 / (t1 - t0).as_nanos() as f64 * 100.0
}

/// A busy loop in `cg`, pinned to `cpu`, at the stressor's weight.
pub fn spinner(cg: &TestCgroup, cpu: u32) -> ChildGuard {
    let mut cmd = cg.command("sh");
    cmd.args(["-c", "while :; do :; done"]).stdin(Stdio::null());
    // SAFETY: sched_setaffinity is async-signal-safe; the set is on the stack.
    unsafe {
        cmd.pre_exec(move || {
            let mut set = nix::sched::CpuSet::new();
            set.set(cpu as usize).map_err(std::io::Error::from)?;
            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
                .map_err(std::io::Error::from)?;
            // Weighted like the stressor (a session and autogroup of its
            // own at nice -15), so that the host's other load (builds)
            // hardly changes what it gets alone.
            libc::setsid();
            let _ = std::fs::write("/proc/self/autogroup", "-15");
            libc::setpriority(libc::PRIO_PROCESS, 0, -15);
            Ok(())
        });
    }
    ChildGuard(cmd.spawn().expect("spawn the busy target"))
}

pub async fn get(client: &mut Client, id: &str) -> pb::Experiment {
    client
        .get_experiment(pb::GetExperimentRequest { id: id.to_owned() })
        .await
        .expect("GetExperiment")
        .into_inner()
}

pub type Client =
    faultline_proto::v1::fault_service_client::FaultServiceClient<tonic::transport::Channel>;

pub fn metric(exp: &pb::Experiment, name: &str) -> Option<f64> {
    exp.faults
        .first()?
        .metrics
        .iter()
        .find(|m| m.name == name)
        .map(|m| m.value)
}

pub async fn stop(client: &mut Client, id: &str) {
    client
        .stop_experiment(pb::StopExperimentRequest { id: id.to_owned() })
        .await
        .expect("StopExperiment");
}

/// The cgroup's memory.current (v2 with the memory controller), if it has one.
/// The host's MemAvailable, in bytes.
pub fn mem_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .expect("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("MemAvailable in /proc/meminfo")
        * 1024
}

pub fn memory_current(dir: &Path) -> Option<u64> {
    std::fs::read_to_string(dir.join("memory.current"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A cgroup v1 memory cgroup of the test's (hybrid hosts: the limit lives
/// there, not in cgroup2): removed on drop, panics included, once what is
/// left in it is killed and gone.
pub struct V1MemoryCgroup(pub PathBuf);

impl V1MemoryCgroup {
    pub fn new(name: &std::ffi::OsStr) -> Self {
        let dir = Path::new("/sys/fs/cgroup/memory").join(name);
        std::fs::create_dir(&dir).expect("v1 memory cgroup");
        Self(dir)
    }
}

impl Drop for V1MemoryCgroup {
    fn drop(&mut self) {
        let removed = wait_for(Duration::from_secs(10), || {
            for pid in procs_under(&self.0) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::fs::remove_dir(&self.0).is_ok() || !self.0.exists()
        });
        if !removed {
            eprintln!("ERROR: cannot remove {}", self.0.display());
        }
    }
}
