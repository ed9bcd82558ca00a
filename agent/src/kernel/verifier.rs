//! Turning the kernel's refusals into reasons a person can act on: typed
//! reasons (`Reason`), the verifier's last words, an error with its causes.

/// A verifier refusal in a few lines: the syscall's error and the log's
/// last lines, which say why. Full logs reach megabytes, far beyond what a
/// gRPC status message or a log line should carry.
pub fn brief(full: &str) -> String {
    const KEEP: usize = 400;
    if full.len() <= KEEP {
        return full.to_owned();
    }
    let (head, log) = full.split_once("Verifier output:").unwrap_or((full, ""));
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    // The verifier's complaint is the last line before its statistics
    // (and before the error chain's own tail, which starts with ':').
    let stats = |l: &str| {
        l.starts_with("verification time")
            || l.starts_with("stack depth")
            || l.starts_with("processed ")
            || l.starts_with(':')
    };
    let complaint = lines.iter().rev().find(|l| !stats(l));
    let processed = lines.iter().rev().find(|l| l.starts_with("processed "));
    let tail = [complaint, processed]
        .into_iter()
        .flatten()
        .copied()
        .collect::<Vec<_>>()
        .join(" | ");
    let mut out: String = head.chars().take(KEEP / 2).collect();
    out.push_str(" … verifier: ");
    out.extend(tail.chars().take(KEEP / 2));
    out
}

/// An error with its causes, so "bpf_link_create failed" carries the errno.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// Why a mechanism cannot be used on this kernel, found while loading its
/// programs. Shown (by `Display`) in capabilities and refusals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The kernel refused to load a program: its words, briefly.
    Refused {
        program: &'static str,
        detail: String,
    },
    /// BPF LSM is not in the active LSM list.
    LsmInactive { active: String },
    /// BPF LSM is active, but every trampoline program is refused (EPERM
    /// with an empty verifier log: a locked-down or sandbox kernel).
    TrampolinesRefused { program: &'static str },
    /// Refused, and securityfs could not tell whether BPF LSM is active.
    LsmUnknown {
        program: &'static str,
        detail: String,
    },
    /// Interface scope needs TCX links (Linux 6.6 or later).
    NoTcx,
    /// No usable cgroup2 root.
    NoCgroup2(String),
    /// Something the programs need could not be prepared (BTF, offsets,
    /// program arrays).
    Setup(String),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused { program, detail } => write!(f, "the kernel refused {program}: {detail}"),
            Self::LsmInactive { active } => write!(
                f,
                "BPF LSM not active (active LSMs: {active}): add bpf to the lsm= boot parameter"
            ),
            Self::TrampolinesRefused { program } => write!(
                f,
                "BPF LSM is active, but this kernel refuses trampoline programs: \
                 loading {program} failed with EPERM and an empty verifier log"
            ),
            Self::LsmUnknown { program, detail } => write!(
                f,
                "the kernel refused {program} (securityfs not readable, LSM list unknown): {detail}"
            ),
            Self::NoTcx => f.write_str(
                "interface scope needs TCX links (Linux 6.6 or later); a legacy tc filter would outlive the agent",
            ),
            Self::NoCgroup2(why) | Self::Setup(why) => f.write_str(why),
        }
    }
}

impl Reason {
    /// Why an LSM program was refused, from the active LSM list and the
    /// kernel's answer (`detail`, already brief).
    pub fn lsm(program: &'static str, detail: String) -> Self {
        match std::fs::read_to_string("/sys/kernel/security/lsm") {
            Ok(list) if !list.split(',').any(|l| l.trim() == "bpf") => Self::LsmInactive {
                active: list.trim().to_owned(),
            },
            _ if detail.contains("(os error 1)") => Self::TrampolinesRefused { program },
            Ok(_) => Self::Refused { program, detail },
            Err(_) => Self::LsmUnknown { program, detail },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::brief;

    #[test]
    fn brief_keeps_the_error_and_the_verifiers_last_words() {
        let log = format!(
            "the BPF_PROG_LOAD syscall returned Argument list too long (os error 7). Verifier output: {}\nBPF program is too large. Processed 1000001 insn\nprocessed 1000001 insns",
            "0: R1=ctx() R10=fp0\n".repeat(5000)
        );
        let b = brief(&log);
        assert!(b.len() < 600, "{} bytes", b.len());
        assert!(
            b.starts_with("the BPF_PROG_LOAD syscall returned Argument list too long"),
            "{b}"
        );
        assert!(b.contains("BPF program is too large"), "{b}");
        // A complaint followed by statistics (Debian 6.1 on fl_sock_ops).
        let log = format!(
            "the BPF_PROG_LOAD syscall returned Invalid argument (os error 22). Verifier output: {}\n\
             141: (85) call bpf_get_current_ancestor_cgroup_id#123\n\
             unknown func bpf_get_current_ancestor_cgroup_id#123\n\
             verification time 14563 usec\nstack depth 320+0\n\
             processed 850 insns (limit 1000000) max_states_per_insn 4\n: Invalid argument (os error 22)",
            "0: R1=ctx() R10=fp0\n".repeat(50)
        );
        let b = brief(&log);
        assert!(
            b.contains("unknown func bpf_get_current_ancestor_cgroup_id#123 | processed 850 insns"),
            "{b}"
        );
        assert_eq!(brief("short"), "short");
    }
}
