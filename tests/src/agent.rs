//! A running `faultline-agent`: started on a private socket and state
//! directory, its log, its attachments, a client, signals and shutdown.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use faultline_proto::v1::fault_service_client::FaultServiceClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

use crate::{bin, in_vm, keeper_links, unique};

/// The directories of the `Agent`s alive in this process, one entry per
/// agent: a test may kill an agent and start the next one in the same
/// directory, and the directory goes only with the last of them.
static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A running `faultline-agent` on a private socket and state directory.
/// Dropping it stops the agent (if `kill` or `shutdown` has not) and removes
/// its directory, once no other `Agent` of this process uses it.
pub struct Agent {
    child: Option<Child>,
    pub dir: PathBuf,
    pub socket: PathBuf,
}

impl Agent {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(unique("faultline-agent"));
        Self::start_in(dir, extra)
    }

    /// Starts an agent whose socket, state and log live in `dir`.
    pub fn start_in(dir: PathBuf, extra: &[&str]) -> Self {
        Self::start_via(dir, &[], extra)
    }

    /// Like `start_in`, with the agent's command line after `wrapper`
    /// (e.g. `unshare --mount sh -c 'SET-UP; exec "$@"' sh`): the wrapper
    /// must end by exec'ing the agent, so its pid is the agent's.
    pub fn start_via(dir: PathBuf, wrapper: &[&str], extra: &[&str]) -> Self {
        std::fs::create_dir_all(&dir).expect("agent dir");
        DIRS.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(dir.clone());
        let socket = dir.join("agent.sock");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("agent.log"))
            .expect("agent log");
        let mut cmd = match wrapper {
            [] => Command::new(bin("faultline-agent")),
            [program, args @ ..] => {
                let mut c = Command::new(program);
                c.args(args).arg(bin("faultline-agent"));
                c
            }
        };
        if in_vm() {
            // Under emulation the kernel verifies programs many times slower;
            // each test loads only what it uses.
            cmd.args(["--probe", "lazy"]);
        }
        let spawned = cmd
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(extra)
            .env("FAULTLINE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn();
        let mut agent = Self {
            child: None,
            dir,
            socket,
        };
        agent.child = Some(spawned.expect("spawn faultline-agent"));
        agent.wait_ready();
        agent
    }

    fn wait_ready(&mut self) {
        let t0 = Instant::now();
        let limit = Duration::from_secs(if in_vm() { 120 } else { 30 });
        while t0.elapsed() < limit {
            // Ready: listening and, unless probing lazily (in the VMs), done
            // loading its programs in the background, so a test's first
            // request does not wait for the prober and timings stay honest.
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok()
                && (in_vm() || self.log().contains("all program groups probed"))
            {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "faultline-agent exited early with {status}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "faultline-agent did not listen on {} within {limit:?}; log:\n{}",
            self.socket.display(),
            self.log()
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent running").id()
    }

    /// ids of the bpf_links this agent holds open (its attachments), from
    /// /proc/PID/fdinfo: precise even when other agents run on the host.
    /// The agent's links that keep the TCX hooks on (config
    /// `keep_tcx_hooks`) are not attachments of a fault and are left out:
    /// see `keeper_links`.
    pub fn links(&self) -> Vec<u32> {
        let keepers = keeper_links();
        self.fdinfo_ids("link_id:")
            .into_iter()
            .filter(|l| !keepers.contains(l))
            .collect()
    }

    /// The agent's links that only keep the TCX hooks on.
    pub fn keeper_links(&self) -> Vec<u32> {
        let keepers = keeper_links();
        self.fdinfo_ids("link_id:")
            .into_iter()
            .filter(|l| keepers.contains(l))
            .collect()
    }

    /// ids of the programs this agent holds loaded.
    pub fn programs(&self) -> Vec<u32> {
        self.fdinfo_ids("prog_id:")
    }

    fn fdinfo_ids(&self, key: &str) -> Vec<u32> {
        let Some(child) = self.child.as_ref() else {
            return Vec::new();
        };
        let Ok(dir) = std::fs::read_dir(format!("/proc/{}/fdinfo", child.id())) else {
            return Vec::new();
        };
        let mut ids: Vec<u32> = dir
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            // A link's fdinfo names its program too: count programs only
            // from program fds.
            .filter(|info| key == "link_id:" || !info.contains("link_id:"))
            .filter_map(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse().ok()))
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// The metrics address the agent logged (`--metrics-listen` with port 0).
    pub fn metrics_addr(&self) -> std::net::SocketAddr {
        let mut found = None;
        crate::wait_for(Duration::from_secs(10), || {
            found = self.log().lines().find_map(|l| {
                let (_, rest) = l.split_once("serving Prometheus metrics on http://")?;
                rest.split('/').next()?.parse().ok()
            });
            found.is_some()
        });
        found
            .unwrap_or_else(|| panic!("the agent did not log its metrics address:\n{}", self.log()))
    }

    pub async fn client(&self) -> FaultServiceClient<Channel> {
        FaultServiceClient::new(
            unix_channel(&self.socket)
                .await
                .expect("connect to the agent socket"),
        )
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig)
            .expect("signal agent");
    }

    /// SIGKILL, and reap. The directory stays, for a next agent to start
    /// in (`start_in`); it goes when the last `Agent` using it is dropped.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM (graceful), wait up to 10 s, then SIGKILL.
    pub fn shutdown(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGCONT,
        );
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        c.wait().ok()
    }
}

/// The cgroup an agent started by this process moves into (below this
/// process's own): it removes it when it stops cleanly, not when killed.
fn agent_leaf() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(
        crate::cgroup2_root()
            .join(rel.trim_start_matches('/'))
            .join("faultline-agent"),
    )
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.shutdown();
        // Empty once no agent runs: another agent of this process may still.
        if let Some(leaf) = agent_leaf() {
            let _ = std::fs::remove_dir(leaf);
        }
        let mut dirs = DIRS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(i) = dirs.iter().position(|d| *d == self.dir) {
            dirs.swap_remove(i);
        }
        if dirs.contains(&self.dir) {
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!(
                "ERROR: cannot remove the agent directory {}: {e}",
                self.dir.display()
            );
        }
    }
}

pub async fn unix_channel(path: &Path) -> anyhow::Result<Channel> {
    connect_unix(Endpoint::try_from("http://[::]:50051")?, path).await
}

/// A channel whose HTTP/2 receive windows are the protocol's default
/// 64 KiB (hyper's client default is megabytes): a client that stops
/// reading stops the server's sending soon, as most clients would.
pub async fn small_window_channel(path: &Path) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::try_from("http://[::]:50051")?
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535);
    connect_unix(endpoint, path).await
}

async fn connect_unix(endpoint: Endpoint, path: &Path) -> anyhow::Result<Channel> {
    let path = path.to_path_buf();
    Ok(endpoint
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await?)
}
