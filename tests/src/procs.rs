//! Processes seen from /proc: a parent's children, whether one is gone,
//! what it made the block layer read and write.

/// (state, parent pid) from /proc/PID/stat (the fields after the comm,
/// which may hold anything, even ") ").
fn stat(pid: u32) -> Option<(String, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = text.rsplit_once(')')?.1.split_whitespace();
    Some((rest.next()?.to_owned(), rest.next()?.parse().ok()?))
}

/// The processes whose parent is `pid` (what an agent started itself).
pub fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|p| stat(*p).is_some_and(|(_, ppid)| ppid == pid))
                .collect()
        })
        .unwrap_or_default()
}

/// Dead: no such process, or a zombie its new parent has not reaped yet.
pub fn gone(pid: u32) -> bool {
    stat(pid).is_none_or(|(state, _)| state == "Z")
}

/// (read_bytes, write_bytes) of /proc/PID/io: what the process made the
/// block layer read and write.
pub fn proc_io(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("read_bytes:"), field("write_bytes:"))
}
