//! The target process of the end-to-end tests: makes real syscalls and
//! reports, as one JSON line, which errno each one got.
//!
//! fl-probe connect ADDR COUNT      TCP connect() COUNT times
//! fl-probe bind ADDR COUNT         bind() a UDP socket COUNT times
//! fl-probe sendto ADDR COUNT       unconnected UDP sendto() COUNT times
//! fl-probe udp-connect ADDR COUNT  connect() a UDP socket COUNT times (IPv4 or IPv6 by ADDR)
//! fl-probe loop SYSCALL PERIOD_MS [counted]
//!                                  call getppid|uname|getcwd forever; counted: wait for a line
//!                                  on stdin first, then print each call's number once it returned
//! fl-probe connect-dstopts ADDR    TCP connect() to an IPv6 ADDR once, every packet carrying an
//!                                  IPv6 destination-options extension header; prints "ok" or the errno
//! fl-probe first-error ADDR       connect in a loop until one fails; print when
//! fl-probe first-ok ADDR          connect every 200 µs until one succeeds; print when
//! fl-probe serve                   read commands ("connect ADDR N", ...) from stdin, answer each
//! fl-probe fs OP PATH COUNT        file and process calls: open, read, write (on PATH),
//!                                  unlink, mkdir (of PATH.N), fork, exec (PATH noop),
//!                                  accept (listen on PATH = ADDR, connect to self, accept)
//! fl-probe noop                    exit 0 at once (the program `fs exec` runs)
//! fl-probe tcp-blast ADDR SECONDS  connect and write zeros for SECONDS, then close
//! fl-probe tcp-sink-timed ADDR     accept one connection, read to EOF; print bytes and seconds
//!                                  from the first byte to EOF as JSON
//! fl-probe tcp-source ADDR SECONDS listen, accept one connection, write zeros to it for SECONDS
//! fl-probe udp-echo ADDR           answer every datagram with itself, forever
//! fl-probe udp-rtt ADDR COUNT      COUNT ping-pongs with an udp-echo, one at a time; RTTs in µs
//! fl-probe dns-serve ADDR          a tiny DNS server (UDP and TCP): NOERROR, no answers, to everything
//! fl-probe dns-query ADDR NAME COUNT [tcp]
//!                                  COUNT A queries for NAME; counts answers by RCODE, and timeouts
//! fl-probe unix-race PATH SECONDS  connect() to a unix socket in a tight loop, until 1 s after the
//!                                  socket appeared or SECONDS; counts by errno ("ok": connected)
#![expect(
    unused_crate_dependencies,
    reason = "a binary beside the library: the package's dependencies are mostly the library's"
)]
use std::{
    collections::BTreeMap,
    io::{BufRead as _, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

fn errno_name(e: &std::io::Error) -> String {
    e.raw_os_error().map_or_else(
        || e.to_string(),
        |n| format!("{:?}", nix::errno::Errno::from_raw(n)),
    )
}

fn run(op: &str, addr: &str, count: u64) -> String {
    let addr: SocketAddr = addr.parse().expect("ADDR must be ip:port");
    let mut ok = 0u64;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let any: SocketAddr = if addr.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    }
    .parse()
    .unwrap();
    for _ in 0..count {
        let res = match op {
            "connect" => TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map(drop),
            "bind" => UdpSocket::bind(addr).map(drop),
            // The bind to port 0 is set-up; the connect is what a fault hits.
            "udp-connect" => UdpSocket::bind(any)
                .expect("bind the socket to connect")
                .connect(addr),
            "sendto" => UdpSocket::bind(any)
                .and_then(|s| s.send_to(b"x", addr))
                .map(drop),
            other => panic!("unknown op {other}"),
        };
        match res {
            Ok(()) => ok += 1,
            Err(e) => *errors.entry(errno_name(&e)).or_default() += 1,
        }
    }
    serde_json::json!({ "ok": ok, "errors": errors }).to_string()
}

/// A DNS response to `query`: QR and RA set, RCODE 0, nothing else added.
fn dns_reply(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    let mut r = query.to_vec();
    r[2] |= 0x80;
    r[3] = 0x80;
    Some(r)
}

fn dns_serve(addr: &str) {
    let udp = UdpSocket::bind(addr).expect("bind udp");
    let tcp = std::net::TcpListener::bind(addr).expect("bind tcp");
    std::thread::spawn(move || {
        for conn in tcp.incoming() {
            let Ok(mut c) = conn else { continue };
            std::thread::spawn(move || {
                use std::io::Read as _;
                let mut len = [0u8; 2];
                while c.read_exact(&mut len).is_ok() {
                    let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    if c.read_exact(&mut q).is_err() {
                        return;
                    }
                    if let Some(r) = dns_reply(&q) {
                        let mut out = (r.len() as u16).to_be_bytes().to_vec();
                        out.extend_from_slice(&r);
                        if c.write_all(&out).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    println!("listening");
    std::io::stdout().flush().expect("flush");
    let mut buf = [0u8; 1500];
    loop {
        if let Ok((n, from)) = udp.recv_from(&mut buf)
            && let Some(r) = dns_reply(&buf[..n])
        {
            let _ = udp.send_to(&r, from);
        }
    }
}

/// An A query for `name` with this id, recursion desired.
fn dns_message(id: u16, name: &str) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m
}

fn rcode_name(r: u8) -> String {
    match r {
        0 => "NOERROR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        other => format!("RCODE{other}"),
    }
}

fn dns_query(server: SocketAddr, name: &str, count: u16, tcp: bool) -> String {
    use std::io::Read as _;
    let timeout = Duration::from_millis(300);
    let mut ok = 0u64;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let udp = (!tcp).then(|| {
        let s = UdpSocket::bind(if server.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        })
        .expect("bind");
        s.connect(server).expect("connect");
        s.set_read_timeout(Some(timeout)).expect("timeout");
        s
    });
    for id in 0..count {
        let q = dns_message(id, name);
        let answer: Option<Vec<u8>> = if let Some(s) = &udp {
            s.send(&q).expect("send");
            let mut buf = [0u8; 1500];
            loop {
                match s.recv(&mut buf) {
                    // Skip late answers to earlier queries.
                    Ok(n) if n >= 12 && buf[..2] == id.to_be_bytes() => {
                        break Some(buf[..n].to_vec());
                    }
                    Ok(_) => continue,
                    Err(_) => break None,
                }
            }
        } else {
            (|| {
                let mut c = TcpStream::connect_timeout(&server, timeout).ok()?;
                c.set_read_timeout(Some(timeout)).ok()?;
                let mut out = (q.len() as u16).to_be_bytes().to_vec();
                out.extend_from_slice(&q);
                c.write_all(&out).ok()?;
                let mut len = [0u8; 2];
                c.read_exact(&mut len).ok()?;
                let mut r = vec![0u8; usize::from(u16::from_be_bytes(len))];
                c.read_exact(&mut r).ok()?;
                Some(r)
            })()
        };
        match answer {
            Some(r) if r.len() >= 12 && r[2] & 0x80 != 0 && r[3] & 0x0f == 0 => ok += 1,
            Some(r) if r.len() >= 12 => *errors.entry(rcode_name(r[3] & 0x0f)).or_default() += 1,
            _ => *errors.entry("timeout".into()).or_default() += 1,
        }
    }
    serde_json::json!({ "ok": ok, "errors": errors }).to_string()
}

/// One file or process call COUNT times, each result counted by errno.
fn run_fs(op: &str, path: &str, count: u64) -> String {
    use std::{
        fs::{File, OpenOptions},
        io::{Read as _, Seek as _, Write as _},
    };
    let mut ok = 0u64;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    // Set-up that must not be what the fault hits: an open file, a listener.
    let mut file = match op {
        "read" => Some(File::open(path).expect("open for read")),
        "write" => Some(
            OpenOptions::new()
                .write(true)
                .open(path)
                .expect("open for write"),
        ),
        _ => None,
    };
    let listener = (op == "accept").then(|| std::net::TcpListener::bind(path).expect("listen"));
    let me = std::env::current_exe().expect("current_exe");
    let t0 = std::time::Instant::now();
    for i in 0..count {
        let res: std::io::Result<()> = match op {
            "open" => File::open(path).map(drop),
            "read" => {
                let f = file.as_mut().expect("file");
                let mut b = [0u8; 1];
                f.rewind().and_then(|()| f.read(&mut b)).map(drop)
            }
            "write" => file.as_mut().expect("file").write_all(b"x"),
            "unlink" => {
                let p = format!("{path}.{i}");
                File::create(&p).expect("create the file to unlink");
                // A file the fault kept stays; the test's scratch directory
                // goes with it.
                std::fs::remove_file(&p)
            }
            "mkdir" => {
                let p = format!("{path}.{i}");
                let r = std::fs::create_dir(&p);
                let _ = std::fs::remove_dir(&p);
                r
            }
            "fork" => {
                // SAFETY: the child only calls _exit.
                match unsafe { libc::fork() } {
                    -1 => Err(std::io::Error::last_os_error()),
                    // SAFETY: in the child of fork(): _exit is async-signal-safe
                    // and ends it at once, touching nothing the parent shares.
                    0 => unsafe { libc::_exit(0) },
                    child => {
                        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child), None);
                        Ok(())
                    }
                }
            }
            "exec" => std::process::Command::new(if path == "self" {
                me.as_path()
            } else {
                std::path::Path::new(path)
            })
            .arg("noop")
            .status()
            .map(drop),
            "accept" => {
                let l = listener.as_ref().expect("listener");
                let _client = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
                l.accept().map(drop)
            }
            other => panic!("unknown fs op {other}"),
        };
        match res {
            Ok(()) => ok += 1,
            Err(e) => *errors.entry(errno_name(&e)).or_default() += 1,
        }
    }
    let ns_per_call = t0.elapsed().as_nanos() as f64 / count.max(1) as f64;
    serde_json::json!({ "ok": ok, "errors": errors, "ns_per_call": ns_per_call }).to_string()
}

/// Races an agent's start-up: every connect() outcome counted, and whether
/// the socket was seen to appear (an ENOENT, then another answer).
fn unix_race(path: &str, secs: f64) -> String {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let t0 = std::time::Instant::now();
    let mut appeared: Option<std::time::Instant> = None;
    let mut missing_first = false;
    println!("started");
    std::io::stdout().flush().expect("flush");
    while t0.elapsed().as_secs_f64() < secs && appeared.is_none_or(|t| t.elapsed().as_secs() < 1) {
        let key = match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => "ok".to_owned(),
            Err(e) => errno_name(&e),
        };
        if key == "ENOENT" {
            missing_first |= appeared.is_none();
        } else if appeared.is_none() {
            appeared = Some(std::time::Instant::now());
        }
        *counts.entry(key).or_default() += 1;
    }
    serde_json::json!({"counts": counts, "appeared_after_missing": missing_first && appeared.is_some()})
        .to_string()
}

/// One TCP connect to an IPv6 address with a sticky destination-options
/// header (8 bytes: a PadN option), so that every packet the socket sends
/// has an extension header between the IPv6 and the TCP header.
fn connect_dstopts(addr: &str) -> String {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    let addr: std::net::SocketAddrV6 = addr.parse().expect("an IPv6 ADDR");
    // SAFETY: plain socket(2); the result is checked and owned below.
    let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_STREAM, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a fresh socket nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // Next header (filled in by the kernel), length 0 (8 bytes), PadN of 4.
    let opts: [u8; 8] = [0, 0, 1, 4, 0, 0, 0, 0];
    // SAFETY: `opts` outlives the call and its length is passed with it.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_DSTOPTS,
            opts.as_ptr().cast(),
            opts.len() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "IPV6_DSTOPTS: {}", std::io::Error::last_os_error());
    let stream = std::net::TcpStream::from(sock);
    let tv = libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    };
    // SAFETY: `tv` outlives the call and its length is passed with it.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&raw const tv).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
    let sa = libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: addr.port().to_be(),
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr {
            s6_addr: addr.ip().octets(),
        },
        sin6_scope_id: 0,
    };
    // SAFETY: `sa` is a valid sockaddr_in6 and its length is passed with it.
    let r = unsafe {
        libc::connect(
            stream.as_raw_fd(),
            (&raw const sa).cast(),
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    };
    if r == 0 {
        "ok".into()
    } else {
        errno_name(&std::io::Error::last_os_error())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("noop") => {}
        Some("unix-race") => println!("{}", unix_race(&args[1], args[2].parse().expect("SECONDS"))),
        Some("tcp-blast") => {
            let mut s = TcpStream::connect(&args[1]).expect("connect");
            let secs: f64 = args[2].parse().expect("SECONDS");
            let buf = vec![0u8; 64 << 10];
            let t0 = std::time::Instant::now();
            while t0.elapsed().as_secs_f64() < secs {
                s.write_all(&buf).expect("write");
            }
        }
        Some("tcp-source") => {
            // Listen on ADDR, accept one connection, write to it for
            // SECONDS, close.
            let l = std::net::TcpListener::bind(&args[1]).expect("listen");
            let secs: f64 = args[2].parse().expect("SECONDS");
            println!("listening");
            std::io::stdout().flush().expect("flush");
            let (mut c, _) = l.accept().expect("accept");
            let buf = vec![0u8; 64 << 10];
            let t0 = std::time::Instant::now();
            while t0.elapsed().as_secs_f64() < secs {
                c.write_all(&buf).expect("write");
            }
        }
        Some("tcp-sink-timed") => {
            use std::io::Read as _;
            let l = std::net::TcpListener::bind(&args[1]).expect("listen");
            println!("listening");
            std::io::stdout().flush().expect("flush");
            let (mut c, _) = l.accept().expect("accept");
            let mut buf = vec![0u8; 256 << 10];
            let mut bytes = 0u64;
            let mut t0 = None;
            loop {
                let n = c.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                t0.get_or_insert_with(std::time::Instant::now);
                bytes += n as u64;
            }
            let secs = t0.map_or(0.0, |t| t.elapsed().as_secs_f64());
            println!("{}", serde_json::json!({ "bytes": bytes, "secs": secs }));
        }
        Some("dns-serve") => dns_serve(&args[1]),
        Some("dns-query") => {
            let server: SocketAddr = args[1].parse().expect("ADDR");
            let count: u16 = args[3].parse().expect("COUNT");
            let tcp = args.get(4).is_some_and(|a| a == "tcp");
            println!("{}", dns_query(server, &args[2], count, tcp));
        }
        Some("udp-echo") => {
            let sock = UdpSocket::bind(&args[1]).expect("bind");
            println!("listening");
            std::io::stdout().flush().expect("flush");
            let mut buf = [0u8; 2048];
            loop {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        }
        Some("udp-rtt") => {
            let addr: SocketAddr = args[1].parse().expect("ADDR");
            let count: u32 = args[2].parse().expect("COUNT");
            let sock = UdpSocket::bind(if addr.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            })
            .expect("bind");
            sock.connect(addr).expect("connect");
            sock.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            let mut rtts = Vec::new();
            let mut lost = 0u64;
            let mut buf = [0u8; 64];
            for seq in 0..count {
                let t = std::time::Instant::now();
                sock.send(&seq.to_be_bytes()).expect("send");
                // Skip late answers to earlier pings.
                loop {
                    match sock.recv(&mut buf) {
                        Ok(4) if buf[..4] == seq.to_be_bytes() => {
                            rtts.push(t.elapsed().as_secs_f64() * 1e6);
                            break;
                        }
                        Ok(_) => continue,
                        Err(_) => {
                            lost += 1;
                            break;
                        }
                    }
                }
            }
            println!(
                "{}",
                serde_json::json!({ "ok": rtts.len(), "errors": { "lost": lost }, "rtt_us": rtts })
            );
        }
        Some("connect-dstopts") => println!("{}", connect_dstopts(&args[1])),
        Some("fs") if args.len() == 4 => {
            println!(
                "{}",
                run_fs(&args[1], &args[2], args[3].parse().expect("COUNT"))
            );
        }
        Some("loop") => {
            let period = Duration::from_millis(args[2].parse().expect("PERIOD_MS"));
            let counted = args.get(3).map(String::as_str) == Some("counted");
            if counted {
                // No call before the test says go: the fault is armed by then,
                // so its count and ours start together.
                std::io::stdin()
                    .read_line(&mut String::new())
                    .expect("read go");
            }
            for n in 1u64.. {
                match args[1].as_str() {
                    "getppid" => {
                        nix::unistd::getppid();
                    }
                    "uname" => {
                        let _ = nix::sys::utsname::uname();
                    }
                    "getcwd" => {
                        let _ = std::env::current_dir();
                    }
                    other => panic!("unsupported loop syscall {other}"),
                }
                if counted {
                    println!("{n}");
                }
                std::thread::sleep(period);
            }
        }
        Some("udp-send") => {
            // Numbered datagrams (u32 sequence, big-endian), paced lightly so
            // the receiver's buffer is never the thing that loses them.
            let addr: SocketAddr = args[1].parse().expect("ADDR");
            let count: u32 = args[2].parse().expect("COUNT");
            let any = if addr.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let sock = UdpSocket::bind(any).expect("bind");
            let mut errors = 0u64;
            for seq in 0..count {
                // The sequence number twice, then zeros: a receiver can tell
                // a corrupted datagram from an intact one.
                let mut msg = [0u8; 16];
                msg[..4].copy_from_slice(&seq.to_be_bytes());
                msg[4..8].copy_from_slice(&seq.to_be_bytes());
                if sock.send_to(&msg, addr).is_err() {
                    errors += 1;
                }
                if seq % 64 == 63 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            println!(
                "{}",
                serde_json::json!({ "ok": u64::from(count) - errors, "errors": { "send": errors } })
            );
        }
        Some("tcp-sink") => {
            // Accept one connection and count the bytes until EOF.
            let l = std::net::TcpListener::bind(&args[1]).expect("listen");
            println!("listening");
            let (mut c, _) = l.accept().expect("accept");
            let n = std::io::copy(&mut c, &mut std::io::sink()).expect("read");
            eprintln!("received {n}");
        }
        Some("udp-blast") => {
            // As fast as possible for SECONDS: datagrams of SIZE bytes in the
            // same numbered format as udp-send, zero-padded.
            let addr: SocketAddr = args[1].parse().expect("ADDR");
            let secs: f64 = args[2].parse().expect("SECONDS");
            let size: usize = args[3].parse().expect("SIZE");
            let any = if addr.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let sock = UdpSocket::bind(any).expect("bind");
            let mut msg = vec![0u8; size.max(16)];
            let t0 = std::time::Instant::now();
            let mut seq = 0u32;
            while t0.elapsed().as_secs_f64() < secs {
                msg[..4].copy_from_slice(&seq.to_be_bytes());
                msg[4..8].copy_from_slice(&seq.to_be_bytes());
                let _ = sock.send_to(&msg, addr);
                seq += 1;
            }
            println!("{}", serde_json::json!({ "ok": seq, "errors": {} }));
        }
        Some("udp-count") => {
            // Receive numbered datagrams until QUIET_MS pass with none; report
            // how many distinct sequence numbers came and how many repeats.
            let sock = UdpSocket::bind(&args[1]).expect("bind");
            faultline_tests::force_receive_buffer(&sock);
            println!("listening");
            std::io::stdout().flush().expect("flush");
            let quiet = Duration::from_millis(args[2].parse().expect("QUIET_MS"));
            let mut first = true;
            let mut seen = std::collections::HashSet::new();
            let mut repeats = 0u64;
            let mut corrupted = 0u64;
            let mut buf = [0u8; 2048];
            let mut bytes = 0u64;
            let mut first_at = None;
            let mut last_at = std::time::Instant::now();
            loop {
                // Wait as long as it takes for the first datagram.
                sock.set_read_timeout(if first { None } else { Some(quiet) })
                    .expect("timeout");
                let Ok(n) = sock.recv(&mut buf) else { break };
                first = false;
                last_at = std::time::Instant::now();
                first_at.get_or_insert(last_at);
                bytes += n as u64;
                if n < 16
                    || buf[..4] != buf[4..8]
                    || buf[8..n.min(buf.len())].iter().any(|b| *b != 0)
                {
                    corrupted += 1;
                } else if !seen.insert(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]])) {
                    repeats += 1;
                }
            }
            println!(
                "{}",
                serde_json::json!({ "ok": seen.len(), "errors": {
                    "repeats": repeats, "corrupted": corrupted, "bytes": bytes,
                    // From the first datagram to the last.
                    "span_us": first_at.map_or(0, |f| last_at.duration_since(f).as_micros() as u64),
                } })
            );
        }
        Some("accept") => {
            let l = std::net::TcpListener::bind(&args[1]).expect("listen");
            println!("listening");
            for c in l.incoming() {
                drop(c);
            }
        }
        Some("first-error") => {
            // Connect in a loop until one fails; print when (CLOCK_MONOTONIC).
            let addr: SocketAddr = args[1].parse().expect("ADDR");
            loop {
                if let Err(e) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
                        .expect("clock");
                    let ns = now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64;
                    println!(
                        "{}",
                        serde_json::json!({ "mono_ns": ns, "errno": errno_name(&e) })
                    );
                    return;
                }
            }
        }
        Some("first-ok") => {
            // The moment a fault is gone, as the target sees it (CLOCK_MONOTONIC);
            // paced, so it leaves the CPU to the agent it waits for.
            let addr: SocketAddr = args[1].parse().expect("ADDR");
            while TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
                std::thread::sleep(Duration::from_micros(200));
            }
            let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
            let ns = now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64;
            println!("{}", serde_json::json!({ "mono_ns": ns }));
        }
        Some("serve") => {
            let stdin = std::io::stdin();
            let mut out = std::io::stdout();
            for line in stdin.lock().lines() {
                let line = line.expect("stdin");
                let w: Vec<&str> = line.split_whitespace().collect();
                if w.len() != 3 {
                    break;
                }
                let res = run(w[0], w[1], w[2].parse().expect("COUNT"));
                writeln!(out, "{res}").expect("stdout");
                out.flush().expect("flush");
            }
        }
        Some(op) if args.len() == 3 => {
            println!("{}", run(op, &args[1], args[2].parse().expect("COUNT")));
        }
        _ => {
            eprintln!(
                "usage: fl-probe connect|bind|sendto|udp-connect ADDR COUNT | loop SYSCALL PERIOD_MS | serve"
            );
            std::process::exit(2);
        }
    }
}
