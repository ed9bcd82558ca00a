//! The ports sshd listens on, found from the host's sockets: the TCP
//! sockets in LISTEN state (`/proc/<pid>/net/tcp` and `tcp6`, in that
//! process's network namespace) whose inode is an open file of a process
//! whose name starts with `sshd`. Network faults spare these ports (and the
//! configured `ssh_ports`) unless a fault sets `include_ssh`.

use std::{
    collections::{BTreeSet, HashSet},
    fs,
    path::Path,
};

/// `/proc/net/tcp`'s state of a listening socket (`TCP_LISTEN`).
const TCP_LISTEN: &str = "0A";

/// Names that count as sshd: `sshd` itself and its helpers
/// (`sshd-session`, `sshd-auth`, ...), which share its sockets.
fn is_sshd(comm: &str) -> bool {
    comm.trim_end().starts_with("sshd")
}

/// Listening ports in the text of `/proc/net/tcp` or `tcp6` whose socket
/// inode is in `inodes`.
pub fn listening_ports(table: &str, inodes: &HashSet<u64>) -> BTreeSet<u16> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if f.len() < 10 || f[3] != TCP_LISTEN {
                return None;
            }
            let inode: u64 = f[9].parse().ok()?;
            if !inodes.contains(&inode) {
                return None;
            }
            let (_, port) = f[1].rsplit_once(':')?;
            u16::from_str_radix(port, 16).ok()
        })
        .collect()
}

/// Socket inodes among a process's open files (`socket:[N]` links).
fn socket_inodes(pid_dir: &Path) -> HashSet<u64> {
    let Ok(fds) = fs::read_dir(pid_dir.join("fd")) else {
        return HashSet::new();
    };
    fds.filter_map(Result::ok)
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// The TCP ports every process named `sshd*` under `proc` (the procfs
/// mount) listens on. Processes that exit meanwhile are skipped; an error
/// only when `proc` itself cannot be read.
pub fn sshd_ports(proc: &Path) -> std::io::Result<BTreeSet<u16>> {
    let mut ports = BTreeSet::new();
    for entry in fs::read_dir(proc)?.filter_map(Result::ok) {
        let name = entry.file_name();
        if !name
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        let dir = entry.path();
        if !fs::read_to_string(dir.join("comm")).is_ok_and(|c| is_sshd(&c)) {
            continue;
        }
        let inodes = socket_inodes(&dir);
        if inodes.is_empty() {
            continue;
        }
        for table in ["net/tcp", "net/tcp6"] {
            if let Ok(text) = fs::read_to_string(dir.join(table)) {
                ports.extend(listening_ports(&text, &inodes));
            }
        }
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0
   1: 0100007F:08AE 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1002 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1003 1 0000000000000000 100 0 0 10 0
   3: 0100007F:0016 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0D3D 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2001 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn only_listening_sockets_of_the_given_inodes() {
        let inodes: HashSet<u64> = [1001, 1002].into();
        // 8080 (inode 1003) is someone else's; the established row is not a listener.
        assert_eq!(listening_ports(TCP, &inodes), BTreeSet::from([22, 2222]));
        assert_eq!(
            listening_ports(TCP6, &[2001].into()),
            BTreeSet::from([3389])
        );
        assert!(listening_ports(TCP6, &inodes).is_empty());
        assert!(listening_ports("garbage\nmore garbage here", &inodes).is_empty());
    }

    #[test]
    fn sshd_and_its_helpers_count() {
        for c in ["sshd\n", "sshd-session\n", "sshd-auth"] {
            assert!(is_sshd(c), "{c:?}");
        }
        for c in ["ssh\n", "xsshd\n", "bash\n"] {
            assert!(!is_sshd(c), "{c:?}");
        }
    }
}
