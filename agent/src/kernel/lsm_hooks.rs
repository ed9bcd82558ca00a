//! The BPF LSM programs: which hook fails which syscalls, and what besides
//! the target each may filter on. `syscall_error` asks for calls by name.

use faultline_common::lsm_op;

/// What besides the target an LSM fault may filter on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Nothing else (fork, kill, socket).
    None,
    /// A file or directory subtree (`path`).
    Path,
    /// The socket's local port (`port`).
    LocalPort,
}

/// One LSM hook: its program, the operation bit it reports and the syscalls
/// it fails.
#[derive(Debug)]
pub struct Hook {
    /// The kernel's LSM hook name.
    pub hook: &'static str,
    pub program: &'static str,
    /// Name shown as the mechanism in capabilities.
    pub mechanism: &'static str,
    pub op: u32,
    pub syscalls: &'static [&'static str],
    pub filter: Filter,
}

macro_rules! hook {
    ($hook:literal, $op:ident, $filter:ident, [$($sc:literal),+]) => {
        Hook {
            hook: $hook,
            program: concat!("fl_lsm_", $hook),
            mechanism: concat!("bpf_lsm:", $hook),
            op: lsm_op::$op,
            syscalls: &[$($sc),+],
            filter: Filter::$filter,
        }
    };
}

/// Every hook, in the order of `Mechanism::Lsm` indices.
pub static HOOKS: [Hook; 19] = [
    hook!(
        "file_open",
        OPEN,
        Path,
        ["open", "openat", "openat2", "creat"]
    ),
    hook!(
        "file_permission",
        READ,
        Path,
        ["read", "pread64", "readv", "preadv", "preadv2"]
    ),
    // WRITE shares the file_permission program (by access mask); it is a
    // separate row so each syscall name maps to one operation.
    hook!(
        "file_permission",
        WRITE,
        Path,
        ["write", "pwrite64", "writev", "pwritev", "pwritev2"]
    ),
    hook!("mmap_file", MMAP, Path, ["mmap"]),
    hook!("file_mprotect", MPROTECT, Path, ["mprotect"]),
    hook!("file_ioctl", IOCTL, Path, ["ioctl"]),
    hook!("bprm_check_security", EXEC, Path, ["execve", "execveat"]),
    hook!(
        "task_alloc",
        FORK,
        None,
        ["fork", "vfork", "clone", "clone3"]
    ),
    hook!("task_kill", KILL, None, ["kill", "tkill", "tgkill"]),
    hook!("socket_create", SOCKET, None, ["socket"]),
    hook!("socket_accept", ACCEPT, LocalPort, ["accept", "accept4"]),
    hook!("socket_listen", LISTEN, LocalPort, ["listen"]),
    hook!(
        "socket_recvmsg",
        RECVMSG,
        LocalPort,
        ["recvmsg", "recvfrom", "recvmmsg"]
    ),
    hook!("inode_unlink", UNLINK, Path, ["unlink", "unlinkat"]),
    hook!("inode_rmdir", RMDIR, Path, ["rmdir"]),
    hook!("inode_mkdir", MKDIR, Path, ["mkdir", "mkdirat"]),
    hook!(
        "inode_rename",
        RENAME,
        Path,
        ["rename", "renameat", "renameat2"]
    ),
    hook!("inode_link", LINK, Path, ["link", "linkat"]),
    hook!("inode_symlink", SYMLINK, Path, ["symlink", "symlinkat"]),
];

/// The program names to load, each once (file_permission serves two rows).
pub fn programs() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = HOOKS.iter().map(|h| (h.program, h.hook)).collect();
    out.dedup();
    out
}

/// Index into `HOOKS` of the hook that fails `syscall`.
pub fn hook_for(syscall: &str) -> Option<usize> {
    HOOKS.iter().position(|h| h.syscalls.contains(&syscall))
}

/// The hook index a mechanism attaches: rows sharing a program attach it once.
pub fn attach_index(index: usize) -> usize {
    let program = HOOKS[index].program;
    HOOKS
        .iter()
        .position(|h| h.program == program)
        .unwrap_or(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_syscall_maps_to_one_hook() {
        let mut seen = std::collections::HashSet::new();
        for h in &HOOKS {
            for s in h.syscalls {
                assert!(seen.insert(*s), "{s} is listed twice");
                assert_eq!(HOOKS[hook_for(s).unwrap()].op, h.op);
            }
        }
        assert_eq!(HOOKS[hook_for("openat").unwrap()].hook, "file_open");
        assert_eq!(HOOKS[hook_for("write").unwrap()].op, lsm_op::WRITE);
        assert!(hook_for("connect").is_none());
        // file_permission is loaded and attached once for read and write.
        assert_eq!(programs().len(), HOOKS.len() - 1);
        let read = hook_for("read").unwrap();
        let write = hook_for("write").unwrap();
        assert_eq!(attach_index(read), attach_index(write));
    }
}
