//! A network namespace behind a veth pair, and commands and `fl-probe`
//! servers run inside it.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    sync::atomic::Ordering,
    time::Duration,
};

use crate::{Listener, SEQ, bin, wait_for};

/// A network namespace with a veth pair to the root namespace. Addresses
/// are private to the test: `host_ip` on the root side, `peer_ips` inside.
/// Dropping it deletes the namespace, which deletes the veth pair, and
/// checks that both are gone: a failure panics (or, while the test is
/// already panicking, is printed).
pub struct TestNetns {
    pub name: String,
    pub host_if: String,
    pub host_ip: std::net::Ipv4Addr,
    pub peer_ips: Vec<std::net::Ipv4Addr>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestNetns {
    #[expect(
        clippy::new_without_default,
        reason = "creating a namespace is not a default value"
    )]
    pub fn new() -> Self {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}{}", std::process::id() % 10000, n);
        let name = format!("fl-{tag}");
        let host_if = format!("flh{tag}");
        let peer_if = format!("flp{tag}");
        // 10.213.<n>.0/24: a private range used only inside this test's pair.
        let octet = (std::process::id() as u8).wrapping_add(n as u8);
        let host_ip = std::net::Ipv4Addr::new(10, 213, octet, 1);
        let peer_ips = vec![
            std::net::Ipv4Addr::new(10, 213, octet, 2),
            std::net::Ipv4Addr::new(10, 213, octet, 3),
        ];
        ip(&["netns", "add", &name]);
        let ns = Self {
            name: name.clone(),
            host_if: host_if.clone(),
            host_ip,
            peer_ips: peer_ips.clone(),
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if, "netns", &name,
        ]);
        ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        for a in &peer_ips {
            ip(&[
                "-n",
                &name,
                "addr",
                "add",
                &format!("{a}/24"),
                "dev",
                &peer_if,
            ]);
        }
        ip(&["-n", &name, "link", "set", &peer_if, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        ns
    }

    /// A command run inside the namespace (network only: `nsenter --net`
    /// keeps /sys and the cgroup mounts visible, unlike `ip netns exec`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.name))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Starts `fl-probe accept ADDR` inside the namespace and waits until it listens.
    pub fn spawn_acceptor(&self, addr: SocketAddr) -> Listener {
        self.probe_server(&["accept", &addr.to_string()])
    }

    /// `spawn_acceptor` under another process name (`comm`, e.g. `sshd`).
    pub fn spawn_acceptor_as(&self, comm: &str, addr: SocketAddr) -> Listener {
        crate::spawn_named(comm, |exe| {
            let mut cmd = self.command(exe);
            cmd.args(["accept", &addr.to_string()]);
            cmd
        })
    }

    /// Starts an `fl-probe` server (`args`) inside the namespace and waits
    /// until it listens.
    pub fn probe_server(&self, args: &[&str]) -> Listener {
        let mut cmd = self.command(bin("fl-probe"));
        cmd.args(args);
        Listener::spawn(cmd)
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let mut problems = Vec::new();
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => problems.push(format!(
                "ip netns del {}: {}: {}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => problems.push(format!("ip netns del {}: {e}", self.name)),
        }
        if Path::new("/run/netns").join(&self.name).exists() {
            problems.push(format!("/run/netns/{} is still there", self.name));
        }
        // The peer end goes with the namespace, and the host end with it,
        // once the last process inside has left: wait, then delete the pair
        // by its host end.
        let host_if = Path::new("/sys/class/net").join(&self.host_if);
        if !wait_for(Duration::from_secs(3), || !host_if.exists()) {
            let out = Command::new("ip")
                .args(["link", "del", &self.host_if])
                .stderr(Stdio::piped())
                .output();
            if host_if.exists() {
                problems.push(format!(
                    "the veth {} outlived its namespace and `ip link del` left it: {}",
                    self.host_if,
                    out.map_or_else(
                        |e| e.to_string(),
                        |o| String::from_utf8_lossy(&o.stderr).trim().to_owned()
                    )
                ));
            }
        }
        if problems.is_empty() {
            return;
        }
        let msg = format!(
            "cleaning up network namespace {}: {}",
            self.name,
            problems.join("; ")
        );
        if std::thread::panicking() {
            eprintln!("ERROR: {msg}");
        } else {
            panic!("{msg}");
        }
    }
}
