//! The reaper: a small process that outlives the agent just long enough to
//! undo what the undo journal records (paused processes, frozen cgroups,
//! fill files) when the agent dies, SIGKILL included. It holds the read end
//! of a pipe whose only write end the agent keeps; the kernel closes that
//! end when the agent dies, and the reaper's read returns end-of-file.

use std::{
    io::{Read as _, Write as _},
    path::Path,
    process::{Child, Command, Stdio},
};

/// The reaper's comm, as `ps` and the protection rules see it.
pub const COMM: &str = "faultline-reap";

/// The byte the agent writes on a clean stop: it has undone everything
/// itself, and a next agent may already be starting on the directory.
const CLEAN: u8 = b'q';

/// The agent's side: the reaper process and the pipe's write end.
#[derive(Debug)]
pub struct Reaper {
    child: Child,
    pipe: Option<std::fs::File>,
}

impl Reaper {
    /// Starts `faultline-agent --internal reaper STATE_DIR` from the agent's
    /// own binary. Deliberately not `worker::spawn_child`: that child dies
    /// with the agent (PR_SET_PDEATHSIG), and this one must not. It lives in
    /// the agent's cgroup, so it is protected like the agent.
    pub fn spawn(state_dir: &Path) -> std::io::Result<Self> {
        // Both ends close-on-exec: no stressor or other child of the agent
        // inherits the write end (which would keep the pipe open after the
        // agent died). The reaper gets the read end as its stdin.
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let child = Command::new("/proc/self/exe")
            .arg("--internal")
            .arg("reaper")
            .arg(state_dir)
            .stdin(Stdio::from(read))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        Ok(Self {
            child,
            pipe: Some(std::fs::File::from(write)),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A clean stop: tells the reaper there is nothing to undo and waits
    /// for it, so the agent's cgroup leaf is empty when the agent leaves it.
    pub fn finish(mut self) {
        if let Some(mut pipe) = self.pipe.take() {
            let _ = pipe.write_all(&[CLEAN]);
        }
        let _ = self.child.wait();
    }
}

/// `--internal reaper STATE_DIR`: waits for the agent to go, then undoes
/// what it left recorded.
pub fn main(state_dir: &str) -> i32 {
    set_comm(COMM);
    detach();
    let mut stdin = std::io::stdin().lock();
    let mut buf = [0u8; 64];
    let clean = loop {
        match stdin.read(&mut buf) {
            Ok(0) => break false,
            Ok(n) if buf[..n].contains(&CLEAN) => break true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("{COMM}: reading the agent's pipe failed ({e}); undoing now");
                break false;
            }
        }
    };
    if clean {
        return 0;
    }
    let journal = crate::worker::journal::dir_in(Path::new(state_dir));
    let undone = crate::worker::Journal::replay(&journal);
    if undone > 0 {
        eprintln!("{COMM}: the agent died; undid {undone} recorded change(s)");
    }
    0
}

fn set_comm(name: &str) {
    let Ok(c) = std::ffi::CString::new(name) else {
        return;
    };
    // SAFETY: PR_SET_NAME reads a NUL-terminated string (the kernel copies
    // at most 16 bytes), which `c` is for the duration of the call.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c.as_ptr());
    }
}

/// Out of the terminal's reach (a Ctrl-C or Ctrl-Z meant for the agent must
/// not stop the one process that undoes its work), out of the OOM killer's
/// (a memory-pressure fault is the moment it runs), and deaf to the
/// signals that end a session; it ends itself when the pipe closes.
fn detach() {
    let _ = nix::unistd::setsid();
    let _ = std::fs::write("/proc/self/oom_score_adj", "-1000");
    use nix::sys::signal::{SigHandler, Signal, signal};
    for sig in [
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGTERM,
        Signal::SIGQUIT,
        Signal::SIGTSTP,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
        Signal::SIGPIPE,
    ] {
        // SAFETY: SIG_IGN installs no handler code; nothing else in this
        // single-threaded process depends on these signals.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
}
