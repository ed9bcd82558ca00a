//! Runtime state on the host: the single-instance lock and clean-up
//! of whatever an earlier run left behind.

use std::{
    fs::{self, File, OpenOptions},
    io::Write as _,
    path::{Path, PathBuf},
};

use nix::fcntl::{Flock, FlockArg};

use crate::config::Config;

/// Where pins of this tool would live. The agent pins nothing (faults must
/// die with it), so it needs no bpffs and never mounts one (a bpffs mount
/// brings the kernel's preloaded `progs.debug`/`maps.debug` with it); if one
/// is mounted, anything here is stale and removed at start-up.
const PIN_DIR: &str = "/sys/fs/bpf/faultline";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create state directory {0}: {1}")]
    StateDir(PathBuf, std::io::Error),
    #[error("another faultline-agent is running (it holds {0}); stop it first")]
    Locked(PathBuf),
    #[error("cannot lock {0}: {1}")]
    Lock(PathBuf, std::io::Error),
}

/// Held for the agent's lifetime; the kernel drops the lock when it dies.
pub struct InstanceLock {
    _lock: Flock<File>,
    pid_file: PathBuf,
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.pid_file);
    }
}

pub fn prepare(cfg: &Config) -> Result<InstanceLock, StateError> {
    fs::create_dir_all(&cfg.state_dir)
        .map_err(|e| StateError::StateDir(cfg.state_dir.clone(), e))?;
    let lock_path = cfg.lock_path();
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StateError::Lock(lock_path.clone(), e))?;
    let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        if e == nix::errno::Errno::EWOULDBLOCK {
            StateError::Locked(lock_path.clone())
        } else {
            StateError::Lock(lock_path.clone(), e.into())
        }
    })?;

    let pid_file = cfg.state_dir.join("agent.pid");
    if let Ok(old) = fs::read_to_string(&pid_file) {
        tracing::warn!(
            previous_pid = old.trim(),
            "the previous agent did not shut down cleanly; its bpf_links went with it, cleaning up the rest"
        );
    }
    if let Ok(mut f) = File::create(&pid_file) {
        let _ = writeln!(f, "{}", std::process::id());
    }
    if let Some(dir) = cfg.socket_dir() {
        let _ = fs::create_dir_all(dir);
    }
    // Nobody else can hold the lock, so a socket file left here is stale.
    if cfg.socket.exists() {
        let _ = fs::remove_file(&cfg.socket);
    }
    ensure_securityfs();
    remove_stale_pins(Path::new(PIN_DIR));
    Ok(InstanceLock {
        _lock: lock,
        pid_file,
    })
}

/// securityfs tells which LSMs are active (/sys/kernel/security/lsm), which
/// GetCapabilities reports; some hosts boot without it mounted.
fn ensure_securityfs() {
    const SECURITYFS: &str = "/sys/kernel/security";
    if std::path::Path::new(SECURITYFS).join("lsm").exists() {
        return;
    }
    match nix::mount::mount(
        Some("securityfs"),
        SECURITYFS,
        Some("securityfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    ) {
        Ok(()) => tracing::info!(path = SECURITYFS, "mounted securityfs"),
        Err(e) => tracing::debug!(path = SECURITYFS, error = %e, "could not mount securityfs"),
    }
}

fn remove_stale_pins(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let res = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match res {
            Ok(()) => tracing::warn!(path = %path.display(), "removed a stale bpffs pin"),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a stale pin");
            }
        }
    }
    let _ = fs::remove_dir(dir);
}
