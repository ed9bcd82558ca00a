//! Pressure stall information: a cgroup's `<resource>.pressure` files, or
//! the host's `/proc/pressure/<resource>`.
//!
//! Each file has a `some` line and (for memory and io, and cpu at cgroup
//! level and on 5.13+) a `full` line: `some avg10=0.12 avg60=0.05
//! avg300=0.01 total=123456`. `total` is the stall time in microseconds
//! since boot (or since the cgroup was made), so the stall share over any
//! window is exact: Δtotal / Δwall.

use std::path::{Path, PathBuf};

/// The resources PSI reports, in the order shown.
pub const RESOURCES: [&str; 3] = ["cpu", "memory", "io"];

/// One line of a pressure file.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Line {
    pub avg10: f64,
    /// Stall time so far, µs.
    pub total_us: u64,
}

/// One resource's pressure now.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Reading {
    pub some: Line,
    pub full: Line,
}

/// Parses a pressure file's text; None if it has no `some` line.
pub fn parse(text: &str) -> Option<Reading> {
    let mut some = None;
    let mut full = Line::default();
    for l in text.lines() {
        let mut words = l.split_whitespace();
        let which = words.next();
        let mut line = Line::default();
        for w in words {
            match w.split_once('=') {
                Some(("avg10", v)) => line.avg10 = v.parse().ok()?,
                Some(("total", v)) => line.total_us = v.parse().ok()?,
                _ => {}
            }
        }
        match which {
            Some("some") => some = Some(line),
            Some("full") => full = line,
            _ => {}
        }
    }
    Some(Reading { some: some?, full })
}

/// Where a target's pressure is read.
#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    /// Shown as `Impact.source`: the cgroup's directory, or `/proc/pressure`.
    pub name: String,
    /// The files, by resource (only those present).
    pub files: Vec<(&'static str, PathBuf)>,
}

impl Source {
    /// The cgroup's own files where it has them (cgroup v2 with PSI; on a
    /// hybrid host the v2 directories have them too), else the host's.
    pub fn for_cgroup(dir: Option<&Path>) -> Self {
        if let Some(dir) = dir {
            let files = present(dir, |r| format!("{r}.pressure"));
            if !files.is_empty() {
                return Self {
                    name: dir.display().to_string(),
                    files,
                };
            }
        }
        Self {
            name: "/proc/pressure".into(),
            files: present(Path::new("/proc/pressure"), str::to_owned),
        }
    }

    /// Reads every file; a file that cannot be read now is left out.
    pub fn read(&self) -> Vec<(&'static str, Reading)> {
        self.files
            .iter()
            .filter_map(|(r, p)| {
                let text = std::fs::read_to_string(p).ok()?;
                Some((*r, parse(&text)?))
            })
            .collect()
    }
}

fn present(dir: &Path, name: impl Fn(&str) -> String) -> Vec<(&'static str, PathBuf)> {
    RESOURCES
        .iter()
        .map(|r| (*r, dir.join(name(r))))
        .filter(|(_, p)| {
            std::fs::read_to_string(p)
                .ok()
                .and_then(|t| parse(&t))
                .is_some()
        })
        .collect()
}

/// The v2 cgroup a process is in (`0::/path` of /proc/PID/cgroup), as a
/// directory under the cgroup2 mount.
pub fn cgroup_of(pid: u32, mount: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(mount.join(rel.trim_start_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_some_and_full() {
        let r = parse(
            "some avg10=1.50 avg60=0.25 avg300=0.72 total=5819684906\n\
             full avg10=0.00 avg60=0.00 avg300=0.00 total=12\n",
        )
        .unwrap();
        assert_eq!(r.some.avg10, 1.5);
        assert_eq!(r.some.total_us, 5_819_684_906);
        assert_eq!(r.full.total_us, 12);
        // cpu.pressure before 5.13 has no full line.
        let r = parse("some avg10=0.02 avg60=0.25 avg300=0.72 total=7\n").unwrap();
        assert_eq!(r.full, Line::default());
        assert_eq!(parse(""), None);
        assert_eq!(parse("some avg10=x total=1"), None);
    }

    #[test]
    fn the_host_files_are_found_without_a_cgroup() {
        let s = Source::for_cgroup(None);
        assert_eq!(s.name, "/proc/pressure");
        if Path::new("/proc/pressure/cpu").exists() {
            assert!(s.read().iter().any(|(r, _)| *r == "cpu"));
        }
    }
}
