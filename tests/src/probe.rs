//! `fl-probe`, the target process the tests fault: one-shot runs, the
//! long-lived `serve` target, servers that report when they listen, and a
//! guard for any child process.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::SocketAddr,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

use crate::{TestCgroup, bin};

/// What one probe run saw.
#[derive(Debug, serde::Deserialize)]
pub struct ProbeResult {
    pub ok: u64,
    pub errors: std::collections::BTreeMap<String, u64>,
    /// `fl-probe fs`: wall nanoseconds per call, timed inside the probe.
    #[serde(default)]
    pub ns_per_call: f64,
    /// `fl-probe udp-rtt`: every round-trip time, in microseconds.
    #[serde(default)]
    pub rtt_us: Vec<f64>,
}

impl ProbeResult {
    pub fn errno(&self, name: &str) -> u64 {
        self.errors.get(name).copied().unwrap_or(0)
    }
    pub fn total(&self) -> u64 {
        self.ok + self.errors.values().sum::<u64>()
    }
}

/// Runs `fl-probe ARGS...` to completion, optionally inside a cgroup, and
/// reads its JSON answer.
fn run_probe(cgroup: Option<&TestCgroup>, args: &[&str]) -> ProbeResult {
    let exe = bin("fl-probe");
    let mut cmd = match cgroup {
        Some(cg) => cg.command(exe),
        None => Command::new(exe),
    };
    let out = cmd.args(args).output().expect("run fl-probe");
    assert!(
        out.status.success(),
        "fl-probe {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("fl-probe JSON")
}

/// Runs `fl-probe OP ADDR COUNT` to completion, optionally inside a cgroup.
pub fn probe(cgroup: Option<&TestCgroup>, op: &str, addr: SocketAddr, count: u64) -> ProbeResult {
    run_probe(cgroup, &[op, &addr.to_string(), &count.to_string()])
}

/// Runs `fl-probe fs OP PATH COUNT` (file and process calls), optionally
/// inside a cgroup.
pub fn probe_fs(cgroup: Option<&TestCgroup>, op: &str, path: &str, count: u64) -> ProbeResult {
    run_probe(cgroup, &["fs", op, path, &count.to_string()])
}

/// A long-lived `fl-probe serve` target: same process, commands over stdin.
pub struct ProbeServer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl ProbeServer {
    pub fn spawn(cgroup: Option<&TestCgroup>) -> Self {
        Self::spawn_exe(cgroup, &bin("fl-probe"))
    }

    /// `fl-probe serve` under another process name (`comm`): run through a
    /// symbolic link of that name, removed once the probe has started.
    pub fn spawn_as(cgroup: Option<&TestCgroup>, comm: &str) -> Self {
        let dir = std::env::temp_dir().join(crate::unique("faultline-comm"));
        std::fs::create_dir_all(&dir).expect("mkdir for the probe's link");
        let link = dir.join(comm);
        std::os::unix::fs::symlink(bin("fl-probe"), &link).expect("link fl-probe");
        let server = Self::spawn_exe(cgroup, &link);
        let _ = std::fs::remove_dir_all(&dir);
        server
    }

    fn spawn_exe(cgroup: Option<&TestCgroup>, exe: &std::path::Path) -> Self {
        let mut cmd = match cgroup {
            Some(cg) => cg.command(exe),
            None => Command::new(exe),
        };
        let mut child = cmd
            .arg("serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn fl-probe serve");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Self {
            child,
            stdin,
            stdout,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn run(&mut self, op: &str, addr: SocketAddr, count: u64) -> ProbeResult {
        writeln!(self.stdin, "{op} {addr} {count}").expect("write to probe");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read from probe");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("probe answered {line:?}: {e}"))
    }
}

impl Drop for ProbeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An `fl-probe` server that has said "listening"; killed when dropped.
pub struct Listener {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Listener {
    /// Spawns `cmd` (an `fl-probe` server; its stdout is piped here) and
    /// waits for its "listening" line.
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn an fl-probe server");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut server = Self { child, out };
        let line = server.next_line();
        assert_eq!(line.trim(), "listening", "fl-probe server ready");
        server
    }

    /// The server's next line of output.
    pub fn next_line(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).expect("read fl-probe output");
        line
    }

    /// The server's report: its next line, as JSON; then reaps it.
    pub fn result<T: serde::de::DeserializeOwned>(mut self) -> T {
        let line = self.next_line();
        let _ = self.child.wait();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("fl-probe report {line:?}: {e}"))
    }

    /// Waits for the server to exit; its stderr (if the command piped it).
    pub fn stderr(mut self) -> String {
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        let _ = self.child.wait();
        err
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills and reaps a child process on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An `fl-probe` server under another process name (`comm`, e.g. `sshd`):
/// `build` makes its command from the path of a symbolic link of that
/// name to `fl-probe`, removed once the server listens.
pub fn spawn_named(comm: &str, build: impl FnOnce(&std::path::Path) -> Command) -> Listener {
    let dir = std::env::temp_dir().join(crate::unique("faultline-comm"));
    std::fs::create_dir_all(&dir).expect("mkdir for the server's link");
    let link = dir.join(comm);
    std::os::unix::fs::symlink(bin("fl-probe"), &link).expect("link fl-probe");
    let server = Listener::spawn(build(&link));
    let _ = std::fs::remove_dir_all(&dir);
    server
}
