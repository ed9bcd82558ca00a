//! Sockets and counters on the test's side of the traffic: a TCP acceptor,
//! reachability, free ports, a bare HTTP GET, numbered UDP datagrams,
//! forced receive buffers and the counters of /proc/net.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    sync::atomic::Ordering,
    time::Duration,
};

/// A TCP listener on loopback that accepts and drops connections, so a
/// connect() that is not faulted succeeds.
pub struct Acceptor {
    pub addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Acceptor {
    pub fn new(ip: &str) -> Self {
        let l = TcpListener::bind(format!("{ip}:0")).expect("bind acceptor");
        l.set_nonblocking(true).expect("nonblocking");
        let addr = l.local_addr().expect("addr");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => drop(c),
                    Err(_) => std::thread::sleep(Duration::from_micros(200)),
                }
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether a TCP connect to `addr` completes within `timeout`.
pub fn tcp_reachable(addr: SocketAddr, timeout: Duration) -> bool {
    std::net::TcpStream::connect_timeout(&addr, timeout).is_ok()
}

/// Receives numbered datagrams on a socket until `quiet` passes with none;
/// returns the set of sequence numbers seen.
pub fn receive_numbered(
    sock: &std::net::UdpSocket,
    quiet: Duration,
) -> std::collections::BTreeSet<u32> {
    sock.set_read_timeout(Some(quiet)).expect("timeout");
    let mut seen = std::collections::BTreeSet::new();
    let mut buf = [0u8; 64];
    while let Ok(n) = sock.recv(&mut buf) {
        if n >= 4 {
            seen.insert(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
        }
    }
    seen
}

/// A UDP receiver on loopback with a receive buffer large enough that the
/// kernel never drops for lack of room (SO_RCVBUFFORCE, root only).
pub fn udp_receiver(ip: &str) -> std::net::UdpSocket {
    let sock = std::net::UdpSocket::bind(format!("{ip}:0")).expect("bind receiver");
    force_receive_buffer(&sock);
    sock
}

/// Gives a socket a 64 MiB receive buffer (SO_RCVBUFFORCE, root only), so
/// the kernel never drops datagrams for lack of room during a test.
pub fn force_receive_buffer(sock: &std::net::UdpSocket) {
    let size: libc::c_int = 64 << 20;
    // SAFETY: valid fd, option value pointer and length.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(sock),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
}

/// A counter from a /proc/net/{snmp,netstat} text: a header line and a
/// value line, both starting with `group`.
pub fn proc_net_counter(text: &str, group: &str, name: &str) -> u64 {
    let mut lines = text.lines().filter(|l| l.starts_with(group));
    let (head, vals) = (lines.next().unwrap(), lines.next().unwrap());
    let i = head.split_whitespace().position(|h| h == name).unwrap();
    vals.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// Segments this TCP socket retransmitted over its life (`TCP_INFO`'s
/// `tcpi_total_retrans`): its own count, unlike /proc/net/snmp's, which
/// every socket of the namespace adds to.
pub fn tcp_total_retrans(sock: &std::net::TcpStream) -> u32 {
    // SAFETY: tcp_info is plain old data; all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: valid fd; the value pointer and its length describe `info`.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(sock),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &raw mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info.tcpi_total_retrans
}

/// A port free on `ip` right now.
pub fn free_port(ip: IpAddr) -> SocketAddr {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// A loopback port free right now.
pub fn free_loopback_port() -> SocketAddr {
    free_port(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// A plain HTTP/1.0 GET (the answer ends when the server closes): the
/// status and the body.
pub fn http_get(addr: SocketAddr, path_and_query: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}
