//! The helpers `faultline-agent --internal ROLE ARG` runs: one entry point
//! per role, in one table.

/// A role's entry point: its argument in, its exit status out.
type Entry = fn(&str) -> i32;

/// Every role, by name.
const ROLES: &[(&str, Entry)] = &[
    ("cpu", crate::stress::cpu::child_main),
    ("memory", crate::stress::memory::child_main),
    (crate::stress::io::ROLE, crate::stress::io::child_main),
    ("reaper", crate::procs::reaper::main),
];

/// Runs `role`; exit status 64 for a role that does not exist.
pub fn run(role: &str, arg: &str) -> i32 {
    match ROLES.iter().find(|(name, _)| *name == role) {
        Some((name, entry)) => {
            // Named for `ps` and tests: fl-<role>, at most 15 bytes.
            let comm: String = format!("fl-{name}").chars().take(15).collect();
            let comm = std::ffi::CString::new(comm).unwrap_or_default();
            // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most
            // 16 bytes, which `comm` is, and keeps no pointer to it.
            unsafe { libc::prctl(libc::PR_SET_NAME, comm.as_ptr()) };
            entry(arg)
        }
        None => {
            eprintln!("faultline-agent: no internal role {role:?}");
            64
        }
    }
}
