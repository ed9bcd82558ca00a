//! Child processes of the agent (stressors): started from one long-lived
//! thread, so that `PR_SET_PDEATHSIG` — which fires when the *thread* that
//! forked exits — means "the agent died", never "a blocking-pool thread
//! retired". Each child joins its cgroups before it runs any code of its own.

use std::{
    ffi::CString,
    io,
    os::unix::{ffi::OsStrExt as _, process::CommandExt as _},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Mutex, OnceLock, mpsc},
};

use super::INTERNAL_FLAG;

struct Request {
    role: String,
    arg: String,
    join: Vec<PathBuf>,
    oom_score_adj: Option<i32>,
    reply: mpsc::Sender<io::Result<Child>>,
}

fn spawner() -> &'static Mutex<mpsc::Sender<Request>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        // Lives as long as the agent: nothing ever drops the sender.
        std::thread::Builder::new()
            .name("spawner".into())
            .spawn(move || {
                for r in rx {
                    let _ = r
                        .reply
                        .send(start(&r.role, &r.arg, &r.join, r.oom_score_adj));
                }
            })
            .expect("cannot start the spawner thread");
        Mutex::new(tx)
    })
}

/// Starts `faultline-agent --internal ROLE ARG`: the agent's own binary. The
/// child dies with the agent (`PR_SET_PDEATHSIG`, SIGKILL), joins every
/// cgroup directory in `join` (writes itself to its `cgroup.procs`), and
/// takes `oom_score_adj` if given, all before exec. stdin and stdout are
/// /dev/null, stderr is the agent's. Every fd the agent holds is
/// close-on-exec (Rust's std, tokio and the kernel's bpf fds all are), so the
/// child inherits none.
pub fn spawn_child(
    role: &str,
    arg: &str,
    join: &[PathBuf],
    oom_score_adj: Option<i32>,
) -> io::Result<Child> {
    let (reply, answer) = mpsc::channel();
    let req = Request {
        role: role.to_owned(),
        arg: arg.to_owned(),
        join: join.to_vec(),
        oom_score_adj,
        reply,
    };
    spawner()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .send(req)
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}

fn cstring(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))
}

/// Writes `data` to the file at `path` with raw syscalls only: this runs
/// between fork and exec, where allocating is not safe.
fn write_raw(path: &CString, data: &[u8]) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated; the fd is checked and closed here.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `data` is valid for its length; `fd` is open.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    let err = io::Error::last_os_error();
    // SAFETY: `fd` was opened above and is not used after this.
    unsafe { libc::close(fd) };
    if n < 0 { Err(err) } else { Ok(()) }
}

fn start(role: &str, arg: &str, join: &[PathBuf], oom: Option<i32>) -> io::Result<Child> {
    let procs: Vec<CString> = join
        .iter()
        .map(|d| cstring(d.join("cgroup.procs").as_os_str().as_bytes()))
        .collect::<io::Result<_>>()?;
    let oom_path = cstring(b"/proc/self/oom_score_adj")?;
    let oom_value = oom.map(|v| v.to_string().into_bytes());
    let parent = std::process::id();
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg(INTERNAL_FLAG)
        .arg(role)
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: the closure only makes async-signal-safe calls (prctl,
    // getppid, open, write, close) on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The agent may have died before the prctl took effect.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            for p in &procs {
                write_raw(p, b"0")?;
            }
            if let Some(v) = &oom_value {
                write_raw(&oom_path, v)?;
            }
            Ok(())
        });
    }
    cmd.spawn()
}
