//! The `.deb`: built by `cargo xtask package` (from the debug binaries the
//! suite already has, so it stays quick), installed with `dpkg -i`, its
//! files where Debian puts them, its agent run with its own default config
//! (socket and state in a temporary directory: a host's real agent is never
//! touched), its clean-up mode undoing a planted journal record, and purged
//! without a trace. Host only (no dpkg in the VMs).
#![expect(
    unused_crate_dependencies,
    reason = "the test harness's dependencies serve other test files"
)]

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use faultline_tests::require_root;

const PACKAGE: &str = "faultline";

/// What the package must install, beside the binaries.
const FILES: &[&str] = &[
    "/usr/bin/faultline-agent",
    "/usr/bin/faultctl",
    "/usr/lib/systemd/system/faultline-agent.service",
    "/etc/faultline/agent.toml",
    "/usr/share/man/man1/faultctl.1.gz",
    "/usr/share/bash-completion/completions/faultctl",
    "/usr/share/zsh/vendor-completions/_faultctl",
    "/usr/share/fish/vendor_completions.d/faultctl.fish",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
}

fn ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", PACKAGE])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).ends_with(" installed"))
}

/// Purges the package when the test ends, passed or not.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", PACKAGE]).status();
    }
}

/// The test's directory, removed when the test ends, passed or not.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The agent started from the package; killed if the test fails early.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn build_deb() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = ok(Command::new(cargo)
        .current_dir(root())
        .args(["xtask", "package", "--debug"]));
    let log = String::from_utf8_lossy(&out.stderr);
    let line = log
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("wrote "))
        .unwrap_or_else(|| panic!("`cargo xtask package` named no .deb:\n{log}"));
    PathBuf::from(line.trim())
}

#[test]
fn the_deb_installs_its_agent_serves_cleans_up_and_purges_clean() {
    if Command::new("dpkg").arg("--version").output().is_err() {
        eprintln!("SKIP: no dpkg on this machine; the package test needs a Debian-like host");
        return;
    }
    require_root().unwrap();
    assert!(
        !installed(),
        "a {PACKAGE} package is already installed here; this test would replace and purge it"
    );
    let t0 = Instant::now();
    let deb = build_deb();
    eprintln!("built {} in {:?}", deb.display(), t0.elapsed());

    let purge = Purge;
    ok(Command::new("dpkg").arg("-i").arg(&deb));
    assert!(installed(), "dpkg -i left {PACKAGE} not installed");
    for file in FILES {
        let meta = std::fs::metadata(file).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(meta.len() > 0, "{file} is empty");
    }
    for exe in ["/usr/bin/faultline-agent", "/usr/bin/faultctl"] {
        let mode = std::fs::metadata(exe).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755, "{exe} has mode {mode:o}");
    }
    // The installed config is the agent's embedded default, kept by dpkg
    // across upgrades (a conffile).
    assert_eq!(
        std::fs::read_to_string("/etc/faultline/agent.toml").unwrap(),
        std::fs::read_to_string(root().join("agent/default-config.toml")).unwrap()
    );
    let conffiles = ok(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", PACKAGE]));
    assert!(
        String::from_utf8_lossy(&conffiles.stdout).contains("/etc/faultline/agent.toml"),
        "not a conffile: {}",
        String::from_utf8_lossy(&conffiles.stdout)
    );
    let listed = String::from_utf8(ok(Command::new("dpkg").args(["-L", PACKAGE])).stdout)
        .expect("dpkg -L is text");
    let files: Vec<&str> = listed.lines().filter(|l| Path::new(l).is_file()).collect();
    verify_unit();

    // The installed agent, with the installed config: only the socket and
    // state directory move (flags override the file), so a real agent's
    // /run/faultline is never touched.
    let tmp =
        TempDir(std::env::temp_dir().join(format!("faultline-package-{}", std::process::id())));
    let dir = tmp.0.clone();
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("agent.sock");
    let state = dir.join("state");
    let agent_args = |extra: &[&str]| {
        let mut c = Command::new("/usr/bin/faultline-agent");
        c.args(["--config", "/etc/faultline/agent.toml", "--socket"])
            .arg(&socket)
            .arg("--state-dir")
            .arg(&state)
            .args(extra);
        c
    };
    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
    let mut agent = Running(
        agent_args(&[])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the installed agent"),
    );
    let caps = serves(&socket, &mut agent.0, &dir);
    assert!(
        caps.contains("syscall_error") && caps.contains("cgroup_sock_addr"),
        "faultctl caps:\n{caps}"
    );

    // --cleanup (the unit's ExecStopPost) refuses while the agent runs...
    let leftover = dir.join("leftover-fill");
    std::fs::write(&leftover, b"x").unwrap();
    let record = state.join("undo/0-test.json");
    std::fs::write(
        &record,
        serde_json::json!({"remove_file": {"path": leftover}}).to_string(),
    )
    .unwrap();
    let refused = agent_args(&["--cleanup"]).output().unwrap();
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains("another faultline-agent"),
        "--cleanup beside a running agent: {refused:?}"
    );
    assert!(
        leftover.exists(),
        "--cleanup undid a running agent's journal"
    );
    // ... and after it stopped, undoes what the journal holds.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = agent.0.wait().unwrap();
    assert!(status.success(), "the agent's SIGTERM exit: {status}");
    // The agent replays the journal only at start-up; a record written
    // after that is still there for the clean-up to find.
    assert!(record.exists() && leftover.exists());
    ok(&mut agent_args(&["--cleanup"]));
    assert!(!leftover.exists(), "--cleanup left the journaled file");
    assert!(!record.exists(), "--cleanup left the journal record");
    drop(agent);
    drop(tmp);

    drop(purge);
    assert!(!installed(), "dpkg --purge left {PACKAGE} installed");
    let left: Vec<&&str> = files.iter().filter(|f| Path::new(f).exists()).collect();
    assert!(left.is_empty(), "left after the purge: {left:?}");
    assert!(
        !Path::new("/etc/faultline").exists(),
        "/etc/faultline left after the purge"
    );
    eprintln!("whole test: {:?}", t0.elapsed());
}

/// Waits until the installed faultctl gets the installed agent's
/// capabilities over its socket; returns them.
fn serves(socket: &Path, agent: &mut Child, dir: &Path) -> String {
    let t0 = Instant::now();
    loop {
        let out = Command::new("/usr/bin/faultctl")
            .arg("--socket")
            .arg(socket)
            .arg("caps")
            .output()
            .unwrap();
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        if let Ok(Some(status)) = agent.try_wait() {
            panic!(
                "the installed agent exited with {status}:\n{}",
                std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
            );
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the installed agent did not serve within 30 s: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// systemd is not PID 1 here (no unit can be started); the installed unit
/// is checked by `systemd-analyze verify` where systemd's tools exist.
fn verify_unit() {
    let unit = "/usr/lib/systemd/system/faultline-agent.service";
    let Ok(out) = Command::new("systemd-analyze")
        .args(["verify", unit])
        .output()
    else {
        eprintln!("no systemd-analyze here: the unit file is installed but not verified");
        return;
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Complaints about the unit itself name it; others (the host's own
    // units, a missing D-Bus) do not concern the package.
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("faultline-agent.service"))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify {unit} ({}):\n{text}",
        out.status
    );
}
