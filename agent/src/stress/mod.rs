//! The agent's own work for pressure faults: the stressor processes' bodies
//! (what `faultline-agent --internal cpu|memory|io <json>` runs) and the fill
//! file the agent makes itself. The agent starts them (`worker::spawn_child`) in the target's cgroup
//! and reads their progress from /proc; they talk back through nothing else.
//!
//! Each body exits by itself when its parent changes (the agent died and
//! PR_SET_PDEATHSIG did not fire, e.g. a re-parented child), and otherwise
//! runs until the agent kills it.

pub mod cpu;
pub mod fill;
pub mod io;
pub mod memory;
pub mod process;

use std::time::Duration;

/// Exit status of a stressor given an argument it cannot parse.
pub const EXIT_BAD_ARG: i32 = 2;
/// Exit status of a stressor whose parent went away.
pub const EXIT_ORPHANED: i32 = 3;

/// Reads an argument (JSON of `T`), or explains on stderr why not.
fn parse_arg<T: serde::de::DeserializeOwned>(role: &str, arg: &str) -> Option<T> {
    match serde_json::from_str(arg) {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!("faultline-agent --internal {role}: bad argument: {e}");
            None
        }
    }
}

/// The parent's pid at start; [`Orphan::check`] says when it changed.
struct Orphan(libc::pid_t);

impl Orphan {
    fn new() -> Self {
        // SAFETY: getppid has no preconditions and cannot fail.
        Self(unsafe { libc::getppid() })
    }

    fn orphaned(&self) -> bool {
        // SAFETY: as above.
        unsafe { libc::getppid() != self.0 }
    }
}

/// A clock's reading in nanoseconds (MONOTONIC, THREAD_CPUTIME_ID).
fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both clocks always exist.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

fn mono_ns() -> i64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Sleeps until CLOCK_MONOTONIC reads `deadline_ns` (absolute, so the
/// wake-up time does not drift with the time spent computing).
fn sleep_until(deadline_ns: i64) {
    let ts = libc::timespec {
        tv_sec: deadline_ns / 1_000_000_000,
        tv_nsec: deadline_ns % 1_000_000_000,
    };
    // SAFETY: `ts` is a valid timespec; a null remainder is allowed with TIMER_ABSTIME.
    while unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &raw const ts,
            std::ptr::null_mut(),
        )
    } == libc::EINTR
    {}
}

fn sleep(d: Duration) {
    std::thread::sleep(d);
}

/// `MemAvailable` of /proc/meminfo in bytes.
pub fn mem_available() -> Option<u64> {
    meminfo_field("MemAvailable:")
}

/// `MemTotal` of /proc/meminfo in bytes.
pub fn mem_total() -> Option<u64> {
    meminfo_field("MemTotal:")
}

fn meminfo_field(name: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo(&text, name)
}

fn parse_meminfo(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The host floor of memory pressure: the larger of 5 % of RAM and 512 MiB
/// of MemAvailable, which no stressor takes the host below.
pub fn default_floor(mem_total: u64) -> u64 {
    (mem_total / 20).max(512 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_fields_are_bytes() {
        let text = "MemTotal:       24684300 kB\nMemFree:        23477000 kB\nMemAvailable:   24081020 kB\n";
        assert_eq!(
            parse_meminfo(text, "MemAvailable:"),
            Some(24_081_020 * 1024)
        );
        assert_eq!(parse_meminfo(text, "MemTotal:"), Some(24_684_300 * 1024));
        assert_eq!(parse_meminfo(text, "Cached:"), None);
    }

    #[test]
    fn the_floor_is_the_larger_of_5_percent_and_512_mib() {
        assert_eq!(default_floor(4 << 30), 512 << 20);
        assert_eq!(default_floor(40 << 30), 2 << 30);
    }
}
