//! System plumbing: CPU pinning, private network namespaces, acceptors,
//! child processes, CPU time and pressure.

use std::{
    io::{BufRead as _, BufReader},
    net::{SocketAddr, TcpListener},
    os::fd::{AsRawFd as _, OwnedFd},
    process::{Child, ExitStatus},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, ensure};
use nix::{
    sched::{CloneFlags, CpuSet, sched_getaffinity, sched_setaffinity, setns, unshare},
    sys::socket::{AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, listen, socket},
    unistd::Pid,
};

/// Time for the kernel to tear down a network namespace we dropped.
pub const NETNS_TEARDOWN: Duration = Duration::from_millis(300);
/// Wall-clock over CPU time above which a measurement shared its CPU.
pub const CONTENDED_WALL_OVER_CPU: f64 = 1.1;
// ---- CPU placement ----

/// CPUs for the measured process and for its counterpart (the acceptor), when
/// this process may run on at least two.
#[derive(Clone, Copy)]
pub struct Pinning {
    pub measured: usize,
    pub other: usize,
}

impl Pinning {
    pub fn detect() -> Option<Self> {
        let allowed = sched_getaffinity(Pid::from_raw(0)).ok()?;
        (allowed.is_set(0).ok()? && allowed.is_set(1).ok()?).then_some(Self {
            measured: 1,
            other: 0,
        })
    }
}

/// Pins a thread (or a single-threaded process) to one CPU; pid 0 is the calling thread.
pub fn pin(pid: Pid, cpu: usize) -> anyhow::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)
        .with_context(|| format!("CPU {cpu} out of range"))?;
    sched_setaffinity(pid, &set).with_context(|| format!("pin {pid} to CPU {cpu}"))
}

// ---- network namespaces ----

/// A fresh network namespace for one loopback measurement: loopback up and
/// ephemeral ports 1024-65535 (a per-namespace sysctl; the host's is
/// untouched). Each loopback connect() closed by the client leaves a TIME_WAIT
/// socket for 60 s, and connect() picks even ports first: once they are taken
/// (~14,000 connects with the default 32768-60999) every connect() scans the
/// range and costs 5x more, depending on the history of the run rather than on
/// what is measured. A fresh namespace has no TIME_WAIT sockets and room for
/// ~32,000 connects. (Disabling TIME_WAIT instead reuses 4-tuples the acceptor
/// has not closed yet, and some connects then wait for a retransmit.)
pub struct PrivateNet {
    ns: OwnedFd,
}

impl PrivateNet {
    pub fn new() -> anyhow::Result<Self> {
        // unshare() moves only the calling thread: do it on a throwaway thread
        // and keep the namespace alive through its fd.
        std::thread::spawn(|| -> anyhow::Result<Self> {
            unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
            let ns = OwnedFd::from(
                std::fs::File::open("/proc/thread-self/ns/net").context("open the new netns")?,
            );
            // /proc/sys/net resolves to the namespace of the thread that opens it.
            std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "1024 65535")
                .context("widen ip_local_port_range in the private network namespace")?;
            loopback_up()?;
            Ok(Self { ns })
        })
        .join()
        .map_err(|_| anyhow!("creating the network namespace panicked"))?
    }

    /// Moves the calling thread, and every thread or process it creates from
    /// now on, into this namespace.
    pub fn enter(&self) -> anyhow::Result<()> {
        setns(&self.ns, CloneFlags::CLONE_NEWNET)
            .context("setns into the private network namespace")
    }
}

pub fn loopback_up() -> anyhow::Result<()> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("socket for SIOCSIFFLAGS")?;
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: both ioctls read or write the ifreq we own, through a socket we own.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut ifr) < 0 {
            return Err(std::io::Error::last_os_error()).context("SIOCGIFFLAGS lo");
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &raw const ifr) < 0 {
            return Err(std::io::Error::last_os_error()).context("SIOCSIFFLAGS lo up");
        }
    }
    Ok(())
}

/// TcpExt ListenOverflows of the calling thread's network namespace, so far:
/// SYNs a full accept queue dropped (the client retransmits after 1 s).
pub fn listen_overflows() -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/net/netstat")?;
    let mut tcp_ext = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = tcp_ext
        .next()
        .zip(tcp_ext.next())
        .context("no TcpExt lines")?;
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ListenOverflows")
        .context("no ListenOverflows counter")?
        .1
        .parse()
        .context("ListenOverflows value")
}

/// A loopback TCP listener with the deepest accept queue the namespace allows
/// (somaxconn, 4096 in a fresh one), drained by a thread that accepts and
/// drops. The harness's `Acceptor` listens with std's backlog of 128, which a
/// hot connect() loop fills within ~1 ms whenever the draining thread is not
/// scheduled; the next SYN is dropped and that connect() stalls for the 1 s
/// SYN retransmit, which would be measured as if it were the agent's latency.
pub struct DeepAcceptor {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DeepAcceptor {
    pub fn new() -> anyhow::Result<Self> {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .context("acceptor socket")?;
        bind(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 0)).context("bind 127.0.0.1:0")?;
        listen(&fd, Backlog::MAXALLOWABLE).context("listen")?;
        let listener = TcpListener::from(fd);
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => drop(conn),
                    Err(_) => std::thread::sleep(Duration::from_micros(200)),
                }
            }
        });
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for DeepAcceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A child process killed and reaped on drop.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
/// CPU time a single-threaded process has run, in ns (sum_exec_runtime).
pub fn cpu_ns(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/schedstat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    text.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{path}: {text:?}"))
}
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}
/// Waits for a child to exit; an error after `timeout` (the guard kills it).
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> anyhow::Result<ExitStatus> {
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        ensure!(t0.elapsed() < timeout, "did not exit within {timeout:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reads the child's first stdout line and checks that it says `listening`.
pub fn wait_listening(child: &mut Child) -> anyhow::Result<BufReader<std::process::ChildStdout>> {
    let mut out = BufReader::new(child.stdout.take().context("child stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)
        .context("read the child's stdout")?;
    ensure!(
        line.trim() == "listening",
        "expected `listening`, the child printed {line:?}"
    );
    Ok(out)
}
/// PSI's cumulative "some task waited for a CPU" time, in µs.
pub fn cpu_pressure_us() -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/pressure/cpu").context("read /proc/pressure/cpu")?;
    text.lines()
        .find(|l| l.starts_with("some "))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("total=")))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("/proc/pressure/cpu: {text:?}"))
}
