//! Turning the kernel's refusals into reasons a person can act on: the
//! verifier's last words, an error with its causes, why BPF LSM is missing.

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

/// Why BPF LSM programs cannot be used, from the active LSM list and the
/// kernel's answer to loading one.
pub fn lsm_reason(program: &str, load_error: &str) -> String {
    match std::fs::read_to_string("/sys/kernel/security/lsm") {
        Ok(list) if !list.split(',').any(|l| l.trim() == "bpf") => format!(
            "BPF LSM not active (active LSMs: {}): add bpf to the lsm= boot parameter",
            list.trim()
        ),
        _ if load_error.contains("(os error 1)") => format!(
            "BPF LSM is active, but this kernel refuses trampoline programs: \
             loading {program} failed with EPERM and an empty verifier log"
        ),
        Ok(_) => format!("the kernel refused {program}: {load_error}"),
        Err(_) => format!(
            "the kernel refused {program} (securityfs not readable, LSM list unknown): {load_error}"
        ),
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
