//! The safety model's hardening, against a real agent: plain TCP only by an
//! explicit opt-in, a state directory and socket no other user can touch
//! (tried as `nobody` through `setpriv`), control characters escaped in what
//! people read, and `faultctl` never waiting forever on a silent agent.
//! None of this depends on the kernel's BPF features: host only.
#![expect(
    unused_crate_dependencies,
    reason = "the test harness's dependencies serve other test files"
)]

use std::{
    io::{BufRead as _, BufReader},
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use faultline_proto::v1 as pb;
use faultline_tests::{
    Agent, ChildGuard, bin, connect_error, experiment, free_loopback_port, in_vm, pid_target,
    require_root, start, wait_for,
};
use nix::sys::signal::Signal;

/// `nobody` with no groups: an unprivileged local user.
const AS_NOBODY: [&str; 4] = [
    "setpriv",
    "--reuid=nobody",
    "--regid=nogroup",
    "--clear-groups",
];

fn skip_in_vm() -> bool {
    if in_vm() {
        eprintln!("SKIP in the VM: the same on every kernel, tested on the host");
    }
    in_vm()
}

/// A directory of the test's own, removed when dropped (a failing test too).
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "faultline-hardening-{what}-{}-{n}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs an agent that must refuse to start; its exit status and stderr.
fn refused_start(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = TempDir::new("stderr");
    let err_path = out.0.join("stderr");
    let mut child = ChildGuard(
        Command::new(bin("faultline-agent"))
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .expect("spawn faultline-agent"),
    );
    let mut status = None;
    wait_for(Duration::from_secs(10), || {
        status = child.0.try_wait().ok().flatten();
        status.is_some()
    });
    drop(child);
    let code = status.and_then(|s| s.code());
    (code, std::fs::read_to_string(&err_path).unwrap_or_default())
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o7777
}

fn faultctl(agent: &Agent, args: &[&str]) -> Output {
    Command::new(bin("faultctl"))
        .arg("--socket")
        .arg(&agent.socket)
        .args(args)
        .output()
        .expect("run faultctl")
}

/// A loopback port nothing listens on right now.
/// A dry-run experiment on a `sleep` of the test's own (dropped with it).
fn dry_run(name: &str) -> (pb::StartExperimentRequest, ChildGuard) {
    let sleeper = ChildGuard(Command::new("sleep").arg("60").spawn().expect("sleep"));
    let mut req = experiment(
        connect_error("ECONNREFUSED", 1.0, 0, ""),
        pid_target(sleeper.0.id()),
        Duration::from_secs(60),
    );
    if let Some(spec) = req.spec.as_mut() {
        spec.name = name.into();
        spec.dry_run = true;
    }
    (req, sleeper)
}

#[tokio::test]
async fn plain_tcp_needs_the_insecure_opt_in_and_warns_about_it() {
    require_root().unwrap();
    if skip_in_vm() {
        return;
    }
    let dir = TempDir::new("tcp");
    let listen = free_loopback_port().to_string();
    let socket = dir.0.join("agent.sock");
    let state = dir.0.join("state");
    let base = [
        "--socket",
        socket.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ];
    // The flag and the environment variable alike.
    for (args, env) in [
        (vec!["--listen", listen.as_str()], vec![]),
        (vec![], vec![("FAULTLINE_LISTEN", listen.as_str())]),
    ] {
        let all: Vec<&str> = base.iter().copied().chain(args).collect();
        let (code, stderr) = refused_start(&all, &env);
        assert_eq!(code, Some(64), "plain TCP without the opt-in: {stderr}");
        assert!(
            stderr.contains("`listen`")
                && stderr.contains("no authentication")
                && stderr.contains("TLS")
                && stderr.contains("insecure_listen"),
            "the refusal says why and how: {stderr}"
        );
    }
    assert!(!state.exists(), "a refused configuration touches no state");

    let agent = Agent::start_with(&["--listen", &listen, "--insecure-listen"]);
    let log = agent.log();
    let warning = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains(&listen))
        .unwrap_or_else(|| panic!("no warning naming {listen} in the log:\n{log}"));
    for risk in [
        "no authentication",
        "any local user",
        "hostnetwork",
        "root api",
    ] {
        assert!(
            warning.to_lowercase().contains(risk),
            "the warning names {risk:?}: {warning}"
        );
    }
    // The port serves the API.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{listen}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect over TCP");
    let list = pb::fault_service_client::FaultServiceClient::new(channel)
        .list_experiments(pb::ListExperimentsRequest::default())
        .await
        .expect("ListExperiments over TCP");
    assert!(list.into_inner().experiments.is_empty());
}

#[tokio::test]
async fn a_state_or_socket_directory_others_could_write_is_refused() {
    require_root().unwrap();
    if skip_in_vm() {
        return;
    }
    let dir = TempDir::new("dirs");
    let world = dir.0.join("world-writable");
    std::fs::create_dir(&world).unwrap();
    std::fs::set_permissions(&world, std::fs::Permissions::from_mode(0o777)).unwrap();
    let group = dir.0.join("group-writable");
    std::fs::create_dir(&group).unwrap();
    std::fs::set_permissions(&group, std::fs::Permissions::from_mode(0o770)).unwrap();
    let theirs = dir.0.join("nobodys");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
    nix::unistd::chown(&theirs, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let good = dir.0.join("good");
    let sock_in = |d: &Path| d.join("agent.sock").to_str().unwrap().to_owned();
    // (the state directory, the socket, the key named, the reason)
    let cases = [
        (
            &world,
            sock_in(&good),
            "state_dir",
            "writable by its group or by others (mode 0777)",
        ),
        (
            &group,
            sock_in(&good),
            "state_dir",
            "writable by its group or by others (mode 0770)",
        ),
        (&theirs, sock_in(&good), "state_dir", "owned by uid 65534"),
        (
            &good,
            sock_in(&world),
            "socket",
            "writable by its group or by others (mode 0777)",
        ),
    ];
    for (state, socket, key, reason) in cases {
        let args = ["--state-dir", state.to_str().unwrap(), "--socket", &socket];
        let (code, stderr) = refused_start(&args, &[]);
        assert_eq!(code, Some(64), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("`{key}`")) && stderr.contains(reason),
            "{args:?} is refused naming `{key}` and {reason:?}: {stderr}"
        );
        assert!(
            !state.join("agent.lock").exists() && !Path::new(&socket).exists(),
            "nothing is created in a refused directory"
        );
    }
}

#[tokio::test]
async fn nobody_cannot_take_the_lock_and_the_state_files_are_private() {
    require_root().unwrap();
    if skip_in_vm() {
        return;
    }
    // What an older agent left: a readable state directory (0755, root's:
    // accepted) with a lock file of mode 0644 that any user could open.
    let dir = TempDir::new("lock");
    let state = dir.0.join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let lock = state.join("agent.lock");
    std::fs::write(&lock, "").unwrap();
    std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A pid file planted as a symlink: written through, it would clobber
    // the file it points to.
    let victim = dir.0.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::os::unix::fs::symlink(&victim, state.join("agent.pid")).unwrap();

    let mut agent = Agent::start_in(dir.0.clone(), &[]);
    assert_eq!(
        mode(&lock),
        0o600,
        "the older agent's lock file is now 0600"
    );
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "precious\n",
        "the pid file is never written through a symlink"
    );
    assert!(
        agent.log().contains("cannot write the pid file"),
        "the refused pid file is reported:\n{}",
        agent.log()
    );
    agent.kill();

    // With no agent holding it, nobody tries to take the lock and keep it.
    let holder = Command::new(AS_NOBODY[0])
        .args(&AS_NOBODY[1..])
        .args(["flock", "-xn"])
        .arg(&lock)
        .args(["sleep", "30"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv flock");
    let mut holder = ChildGuard(holder);
    let mut status = None;
    wait_for(Duration::from_secs(2), || {
        status = holder.0.try_wait().ok().flatten();
        status.is_some()
    });
    let mut stderr = String::new();
    if let Some(mut e) = holder.0.stderr.take()
        && status.is_some()
    {
        std::io::Read::read_to_string(&mut e, &mut stderr).unwrap();
    }
    assert!(
        status.is_some_and(|s| !s.success()) && stderr.contains("Permission denied"),
        "nobody cannot open the lock file, so cannot hold it (status {status:?}): {stderr}"
    );
    eprintln!("nobody's flock: {status:?}: {}", stderr.trim());
    // And the next agent starts.
    let next = Agent::start_in(dir.0.clone(), &[]);
    drop(holder);
    assert_eq!(mode(&lock), 0o600);
    drop(next);
    drop(agent);
}

#[tokio::test]
async fn a_nobody_connect_loop_never_wins_the_socket_race_even_under_umask_000() {
    require_root().unwrap();
    if skip_in_vm() {
        return;
    }
    let dir = TempDir::new("race");
    let socket = dir.0.join("agent.sock");
    let race = Command::new(AS_NOBODY[0])
        .args(&AS_NOBODY[1..])
        .arg(bin("fl-probe"))
        .args(["unix-race", socket.to_str().unwrap(), "30"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("setpriv fl-probe unix-race");
    let mut race = ChildGuard(race);
    let mut lines = BufReader::new(race.0.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "started");
    // The agent inherits umask 000: every file it makes would be open to
    // all, but for its own umask.
    let agent = Agent::start_via(
        dir.0.clone(),
        &["sh", "-c", "umask 000; exec \"$@\"", "sh"],
        &[],
    );
    let report = lines.next().expect("the race's report").unwrap();
    let _ = race.0.wait();
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    eprintln!("nobody's connect() loop: {report}");
    let counts = report["counts"].as_object().unwrap();
    assert!(
        report["appeared_after_missing"] == true
            && counts.get("ENOENT").and_then(serde_json::Value::as_u64) > Some(0)
            && counts.get("EACCES").and_then(serde_json::Value::as_u64) > Some(0),
        "the loop must have raced the bind: ENOENT, then the socket appeared: {report}"
    );
    assert!(
        counts.keys().all(|k| k == "ENOENT" || k == "EACCES"),
        "nobody never connected, nor got past the permission check: {report}"
    );
    assert_eq!(mode(&socket), 0o600, "socket mode");
    let state = dir.0.join("state");
    assert_eq!(mode(&state), 0o700, "the state directory, under umask 000");
    for file in ["agent.lock", "agent.pid"] {
        assert_eq!(mode(&state.join(file)), 0o600, "{file}, under umask 000");
    }
    drop(agent);
}

#[tokio::test]
async fn control_characters_are_escaped_in_tables_and_the_log_and_exact_in_json() {
    require_root().unwrap();
    if skip_in_vm() {
        return;
    }
    let agent = Agent::start();
    let name = "red\x1b[31mX\nfake line";
    let label = "a\x1b]0;title\x07b";
    let (mut req, _sleeper) = dry_run(name);
    if let Some(spec) = req.spec.as_mut() {
        spec.labels.insert("team".into(), label.into());
    }
    let started = start(&mut agent.client().await, req).await;
    let shown_name = r"red\x1b[31mX\nfake line";
    let shown_label = r"team=a\x1b]0;title\x07b";

    let ls = faultctl(&agent, &["ls"]);
    let table = String::from_utf8_lossy(&ls.stdout);
    assert!(ls.status.success(), "{ls:?}");
    assert!(
        table.contains(shown_name) && !table.contains('\x1b') && table.lines().count() == 2,
        "ls shows the name escaped, on one row:\n{table}"
    );
    let status = faultctl(&agent, &["status", &started.id]);
    let detail = String::from_utf8_lossy(&status.stdout);
    assert!(
        detail.contains(shown_label) && detail.contains(shown_name) && !detail.contains('\x1b'),
        "status shows the label escaped:\n{detail}"
    );
    let json = faultctl(&agent, &["--output", "json", "ls"]);
    let all: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(all[0]["name"], name, "JSON is exact");
    assert_eq!(all[0]["labels"]["team"], label, "JSON is exact");

    let log = agent.log();
    assert!(
        log.contains(shown_name) && log.contains(shown_label),
        "the log shows the name and label escaped:\n{log}"
    );
    assert!(
        !log.contains('\x1b')
            && !log.contains('\x07')
            && !log.lines().any(|l| l.starts_with("fake")),
        "no raw control character and no forged line in the log:\n{log:?}"
    );
}

/// SIGCONT when dropped, so a failing test leaves a running agent to stop.
struct Stopped<'a>(&'a Agent);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        self.0.signal(Signal::SIGCONT);
    }
}

#[tokio::test]
async fn faultctl_gives_up_on_a_stopped_agent_within_its_timeout() {
    require_root().unwrap();
    if skip_in_vm() {
        return;
    }
    let agent = Agent::start();
    agent.signal(Signal::SIGSTOP);
    let stopped = Stopped(&agent);
    let t0 = Instant::now();
    // Spawned and bounded, so a faultctl that hangs fails the test instead.
    let mut ls = ChildGuard(
        Command::new(bin("faultctl"))
            .arg("--socket")
            .arg(&agent.socket)
            .args(["ls", "--timeout", "2s"])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("faultctl ls"),
    );
    let mut status = None;
    wait_for(Duration::from_secs(6), || {
        status = ls.0.try_wait().ok().flatten();
        status.is_some()
    });
    let took = t0.elapsed();
    drop(stopped);
    let mut stderr = String::new();
    if let Some(mut e) = ls.0.stderr.take()
        && status.is_some()
    {
        std::io::Read::read_to_string(&mut e, &mut stderr).unwrap();
    }
    eprintln!("faultctl ls --timeout 2s on a stopped agent: {status:?} after {took:?}: {stderr}");
    assert!(
        status.is_some_and(|s| !s.success()),
        "{status:?} after {took:?}"
    );
    assert!(took < Duration::from_secs(3), "gave up after {took:?}");
    assert!(
        stderr.contains(agent.socket.to_str().unwrap())
            && stderr.contains("did not answer within 2s")
            && stderr.contains("stopped")
            && stderr.contains("wedged"),
        "the error names the agent, the time and what it may mean: {stderr}"
    );
    // Resumed, it answers again.
    assert!(
        faultctl(&agent, &["ls", "--timeout", "5s"])
            .status
            .success()
    );
}

#[tokio::test]
async fn watch_notices_an_agent_gone_silent() {
    require_root().unwrap();
    if skip_in_vm() {
        return;
    }
    let agent = Agent::start();
    let mut watch = ChildGuard(
        Command::new(bin("faultctl"))
            .arg("--socket")
            .arg(&agent.socket)
            .args(["--timeout", "2s", "watch", "--interval", "200ms"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("faultctl watch"),
    );
    let mut lines = BufReader::new(watch.0.stdout.take().unwrap()).lines();
    // An experiment, so the stream is known to be open (its `started` and
    // counters arrive) when the agent stops.
    // A running experiment, so events flow (its `started`, then counters
    // every 200ms) and the stream is known to be open when the agent stops.
    let (req, _sleeper) = dry_run("watched");
    let started = start(&mut agent.client().await, req).await;
    let line = lines.next().expect("an event").unwrap();
    assert!(line.contains(&started.id), "{line}");
    agent.signal(Signal::SIGSTOP);
    let stopped = Stopped(&agent);
    let t0 = Instant::now();
    let mut status = None;
    wait_for(Duration::from_secs(12), || {
        status = watch.0.try_wait().ok().flatten();
        status.is_some()
    });
    let took = t0.elapsed();
    drop(stopped);
    let mut stderr = String::new();
    if let Some(mut e) = watch.0.stderr.take()
        && status.is_some()
    {
        std::io::Read::read_to_string(&mut e, &mut stderr).unwrap();
    }
    eprintln!("watch on a stopped agent ended after {took:?} with {status:?}: {stderr}");
    assert!(
        status.is_some_and(|s| !s.success()),
        "watch must end, non-zero, within the keepalive bound (5s + 2s), got {status:?} after {took:?}"
    );
    assert!(
        stderr.contains(agent.socket.to_str().unwrap()) && stderr.contains("keepalive"),
        "the error names the agent and the silence: {stderr}"
    );
}
