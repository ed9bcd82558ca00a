//! Runtime state on the host: the single-instance lock and clean-up
//! of whatever an earlier run left behind.

use std::{
    fs::{self, File, OpenOptions},
    io::{Read as _, Write as _},
    os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use nix::{
    fcntl::{Flock, FlockArg},
    sys::stat::{Mode, fchmod},
    unistd::{Gid, Uid, fchown},
};

use crate::config::Config;

/// Where pins of this tool would live. The agent pins nothing (faults must
/// die with it), so it needs no bpffs and never mounts one (a bpffs mount
/// brings the kernel's preloaded `progs.debug`/`maps.debug` with it); if one
/// is mounted, anything here is stale and removed at start-up.
const PIN_DIR: &str = "/sys/fs/bpf/faultline";

/// The agent's files and directories: no access for anyone else.
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create state directory {0}: {1}")]
    StateDir(PathBuf, std::io::Error),
    /// A directory another user could write to, or that is not ours: the
    /// agent's lock, pid file and socket would be theirs to replace.
    #[error("config key `{key}`: {path} {reason}; use a directory only root can write to")]
    Unsafe {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
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

/// Makes `dir` (mode 0700) if it is missing; refuses an existing one that
/// is a symlink, not a directory, not owned by the agent's user, or
/// writable by the group or others. `key` is the config key it came from.
fn private_dir(dir: &Path, key: &'static str) -> Result<(), StateError> {
    let unsafe_dir = |reason: String| StateError::Unsafe {
        key,
        path: dir.to_path_buf(),
        reason,
    };
    if fs::symlink_metadata(dir).is_err() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(|e| StateError::StateDir(dir.to_path_buf(), e))?;
    }
    let meta = fs::symlink_metadata(dir).map_err(|e| StateError::StateDir(dir.to_path_buf(), e))?;
    if meta.file_type().is_symlink() {
        return Err(unsafe_dir("is a symbolic link".into()));
    }
    if !meta.is_dir() {
        return Err(unsafe_dir("is not a directory".into()));
    }
    let euid = Uid::effective().as_raw();
    if meta.uid() != euid {
        return Err(unsafe_dir(format!(
            "is owned by uid {}, not by the agent's uid {euid}",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "is writable by its group or by others (mode {:04o})",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Opens (creating) one of the agent's files in the state directory: mode
/// 0600 and owned by the agent whatever an older agent left (its lock was
/// 0644, so any user could take it), never through a symlink.
fn open_private(path: &Path, options: &mut OpenOptions) -> std::io::Result<File> {
    let file = options
        .create(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if meta.uid() != Uid::effective().as_raw() {
        fchown(&file, Some(Uid::effective()), Some(Gid::effective()))?;
    }
    if meta.mode() & 0o7777 != FILE_MODE {
        fchmod(&file, Mode::from_bits_truncate(FILE_MODE))?;
    }
    Ok(file)
}

/// Replaces the contents of one of the agent's files (see `open_private`).
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut f = open_private(path, OpenOptions::new().write(true).truncate(true))?;
    f.write_all(contents)
}

/// Reads one of the agent's files, never through a symlink; None if absent.
pub fn read_private(path: &Path) -> Option<String> {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    let mut text = String::new();
    f.read_to_string(&mut text).ok()?;
    Some(text)
}

pub fn prepare(cfg: &Config) -> Result<InstanceLock, StateError> {
    private_dir(&cfg.state_dir, "state_dir")?;
    if let Some(dir) = cfg.socket_dir()
        && dir != cfg.state_dir
    {
        private_dir(dir, "socket")?;
    }
    let lock_path = cfg.lock_path();
    let file = open_private(&lock_path, OpenOptions::new().truncate(false).write(true))
        .map_err(|e| StateError::Lock(lock_path.clone(), e))?;
    let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        if e == nix::errno::Errno::EWOULDBLOCK {
            StateError::Locked(lock_path.clone())
        } else {
            StateError::Lock(lock_path.clone(), e.into())
        }
    })?;

    let pid_file = cfg.state_dir.join("agent.pid");
    if let Some(old) = read_private(&pid_file) {
        tracing::warn!(
            previous_pid = %faultline_proto::text::Escaped(old.trim()),
            "the previous agent did not shut down cleanly; its bpf_links went with it, cleaning up the rest"
        );
    }
    if let Err(e) = write_private(&pid_file, format!("{}\n", std::process::id()).as_bytes()) {
        tracing::warn!(file = %pid_file.display(), error = %e, "cannot write the pid file");
    }
    remove_stale_socket(&cfg.socket);
    ensure_securityfs();
    remove_stale_pins(Path::new(PIN_DIR));
    Ok(InstanceLock {
        _lock: lock,
        pid_file,
    })
}

/// Nobody else can hold the lock, so a socket left at the path is stale.
/// Only a socket is removed: a symlink or a file there is someone's, and
/// binding then fails naming the path.
fn remove_stale_socket(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            let _ = fs::remove_file(path);
        }
        Ok(_) => {
            tracing::warn!(path = %path.display(), "the socket path exists and is not a socket; left alone");
        }
        Err(_) => {}
    }
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
