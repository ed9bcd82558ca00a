//! The IO stressor, run as the agent's child (`--internal io <json>`): a
//! writer, a reader or both against a file of its own in the fault's
//! directory, paced to a target throughput by a token bucket.
//!
//! Every byte it moves reaches the device: writes are synced per chunk
//! (`fdatasync`) or go around the page cache (`O_DIRECT`); reads read a
//! file written first (at the same pace) and synced, with `O_DIRECT`, or
//! dropping the pages they read (`POSIX_FADV_DONTNEED`, no readahead) so
//! every pass misses the cache.

use std::{
    fs::{File, OpenOptions},
    io,
    os::unix::fs::{FileExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use nix::{
    fcntl::{PosixFadviseAdvice, posix_fadvise},
    sys::{
        signal::{SigSet, Signal},
        signalfd::{SfdFlags, SignalFd},
        statvfs::statvfs,
    },
    unistd::{fdatasync, getppid},
};
use serde::{Deserialize, Serialize};

/// The stressor's role (`faultline-agent --internal io ARG`).
pub const ROLE: &str = "io";

/// What the child does; its argument, as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IoSpec {
    pub dir: PathBuf,
    pub token: String,
    pub mode: IoMode,
    /// Bytes per second, reads and writes together.
    pub rate: u64,
    pub direct: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoMode {
    Write,
    Read,
    /// Reads and writes alternating, half the rate each.
    Mixed,
}

/// The stressor's file in `dir`.
pub fn io_path(dir: &Path, token: &str) -> PathBuf {
    dir.join(format!(".faultline-io-{token}"))
}

/// `O_DIRECT` needs buffers, offsets and lengths aligned to the device's
/// logical block; 4 KiB covers every common device.
const ALIGN: usize = 4096;
const MAX_CHUNK: u64 = 1 << 20;
/// The file the stressor cycles through, at most.
const MAX_FILE: u64 = 64 << 20;

/// The chunk for a rate: about 20 operations a second, so the pace is
/// smooth at a second's scale, between 4 KiB and 1 MiB.
pub fn chunk_for(rate: u64) -> u64 {
    let align = ALIGN as u64;
    (rate / 20 / align * align).clamp(align, MAX_CHUNK)
}

/// The child's entry point; the exit code is the result (0: stopped by
/// SIGTERM or because the agent went away; 1: an IO error, said on stderr;
/// 2: a bad argument).
pub fn child_main(arg: &str) -> i32 {
    let spec: IoSpec = match serde_json::from_str(arg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("faultline io stressor: bad argument: {e}");
            return 2;
        }
    };
    let path = io_path(&spec.dir, &spec.token);
    let result = run(&spec, &path);
    let _ = std::fs::remove_file(&path);
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("faultline io stressor: {}: {e}", path.display());
            1
        }
    }
}

/// SIGTERM and SIGINT, read without a handler: blocked, and polled from a
/// signalfd between operations.
fn stop_signals() -> io::Result<SignalFd> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    mask.thread_block().map_err(io::Error::from)?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(io::Error::from)
}

struct Stop {
    signals: SignalFd,
    parent: nix::unistd::Pid,
}

impl Stop {
    /// Told to stop, or the agent is gone (re-parented).
    fn now(&self) -> bool {
        matches!(self.signals.read_signal(), Ok(Some(_))) || getppid() != self.parent
    }
}

fn run(spec: &IoSpec, path: &Path) -> io::Result<()> {
    if spec.rate == 0 {
        return Err(io::Error::other("rate 0"));
    }
    let stop = Stop {
        signals: stop_signals()?,
        parent: getppid(),
    };
    let chunk = chunk_for(spec.rate);
    let st = statvfs(&spec.dir).map_err(io::Error::from)?;
    let free = st.blocks_available().saturating_mul(st.fragment_size());
    // A quarter of the free space at most: the stressor presses on IO,
    // it does not fill the disk (that is disk_fill's job).
    let mut size = (free / 4).min(MAX_FILE);
    if spec.mode != IoMode::Write {
        // Reads need the file written first, at the same pace: two
        // seconds' worth, so that they start soon.
        size = size.min(spec.rate.saturating_mul(2).max(16 * chunk));
    }
    let size = size / chunk * chunk;
    if size < 4 * chunk {
        return Err(io::Error::other(format!("only {free} bytes free")));
    }
    let mut flags = libc::O_NOFOLLOW | libc::O_CLOEXEC;
    if spec.direct {
        flags |= libc::O_DIRECT;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(flags)
        .open(path)?;
    let mut io = Stressor::new(file, spec.direct, chunk, size);
    let mut bucket = Bucket::new(spec.rate, chunk);
    if spec.mode != IoMode::Write {
        io.prepare(&stop, &mut bucket)?;
    }
    let mut write_next = spec.mode != IoMode::Read;
    while !stop.now() {
        if !bucket.take(chunk) {
            continue;
        }
        if write_next {
            io.write()?;
        } else {
            io.read()?;
        }
        if spec.mode == IoMode::Mixed {
            write_next = !write_next;
        }
    }
    Ok(())
}

/// Bytes allowed at `rate`, refilled continuously; a second's
/// tenth at most saved up, so a stall is not made up by a burst.
struct Bucket {
    rate: f64,
    cap: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    #[expect(
        clippy::cast_precision_loss,
        reason = "rates far below 2^52 bytes per second"
    )]
    fn new(rate: u64, chunk: u64) -> Self {
        let rate = rate as f64;
        Self {
            rate,
            cap: (rate / 10.0).max(chunk as f64),
            tokens: 0.0,
            last: Instant::now(),
        }
    }

    /// Takes `bytes` if there are enough, else sleeps a little (at most
    /// 20 ms, so a stop is seen soon) and says no.
    #[expect(clippy::cast_precision_loss, reason = "a chunk of at most 1 MiB")]
    fn take(&mut self, bytes: u64) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.cap);
        self.last = now;
        let want = bytes as f64;
        if self.tokens >= want {
            self.tokens -= want;
            return true;
        }
        let wait = ((want - self.tokens) / self.rate).min(0.02);
        std::thread::sleep(Duration::from_secs_f64(wait));
        false
    }
}

/// The file, an aligned buffer and where the next write and read go.
struct Stressor {
    file: File,
    direct: bool,
    buf: Vec<u8>,
    start: usize,
    chunk: u64,
    size: u64,
    write_at: u64,
    read_at: u64,
}

impl Stressor {
    #[expect(clippy::cast_possible_truncation, reason = "a chunk of at most 1 MiB")]
    fn new(file: File, direct: bool, chunk: u64, size: u64) -> Self {
        let len = chunk as usize;
        // Not zeros: some devices and filesystems skip or compress them.
        let mut buf: Vec<u8> = (0..len + ALIGN)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 1)
            .collect();
        let start = buf.as_ptr().align_offset(ALIGN);
        buf.truncate(start + len);
        Self {
            file,
            direct,
            buf,
            start,
            chunk,
            size,
            write_at: 0,
            // Half a file apart: a chunk just written (and dropped from
            // the cache) is never one the reader is about to read.
            read_at: size / 2 / chunk * chunk,
        }
    }

    /// Writes the whole file once, at the stressor's pace (its writes
    /// are the pressure of the first seconds), for the reads to read.
    fn prepare(&mut self, stop: &Stop, bucket: &mut Bucket) -> io::Result<()> {
        let mut left = self.size / self.chunk;
        while left > 0 {
            if stop.now() {
                return Ok(());
            }
            if bucket.take(self.chunk) {
                self.write()?;
                left -= 1;
            }
        }
        fdatasync(&self.file).map_err(io::Error::from)?;
        self.drop_cache(0, 0);
        // No readahead: each read fetches its chunk and nothing more, so
        // what reaches the device is what the bucket allowed.
        let _ = posix_fadvise(&self.file, 0, 0, PosixFadviseAdvice::POSIX_FADV_RANDOM);
        Ok(())
    }

    fn write(&mut self) -> io::Result<()> {
        let at = self.write_at;
        self.file.write_all_at(&self.buf[self.start..], at)?;
        if !self.direct {
            fdatasync(&self.file).map_err(io::Error::from)?;
            self.drop_cache(at, self.chunk);
        }
        self.write_at = (at + self.chunk) % self.size;
        Ok(())
    }

    fn read(&mut self) -> io::Result<()> {
        let at = self.read_at;
        let start = self.start;
        self.file.read_exact_at(&mut self.buf[start..], at)?;
        self.read_at = (at + self.chunk) % self.size;
        if !self.direct {
            self.drop_cache(at, self.chunk);
            if self.read_at == 0 {
                // Readahead may have cached past the last chunk read.
                self.drop_cache(0, 0);
            }
        }
        Ok(())
    }

    /// Drops the cached pages of a range (0, 0: the whole file), so the
    /// next read of it goes to the device. Advice only: an error is no
    /// reason to stop.
    fn drop_cache(&self, at: u64, len: u64) {
        if let (Ok(at), Ok(len)) = (i64::try_from(at), i64::try_from(len)) {
            let _ = posix_fadvise(&self.file, at, len, PosixFadviseAdvice::POSIX_FADV_DONTNEED);
        }
    }
}

/// Bytes a process has made the block layer read and write
/// (`/proc/<pid>/io` `read_bytes` + `write_bytes`).
pub fn proc_io_bytes(pid: u32) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io"))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            matches!(k, "read_bytes" | "write_bytes").then(|| v.trim().parse::<u64>().ok())?
        })
        .sum())
}

/// Throughput over the last second from cumulative byte counts sampled
/// every so often.
#[derive(Debug, Default)]
pub struct RateMeter {
    samples: std::collections::VecDeque<(Instant, u64)>,
}

impl RateMeter {
    pub fn sample(&mut self, at: Instant, total: u64) {
        self.samples.push_back((at, total));
        // Keep the newest sample at least a second old, and no older.
        while self.samples.len() > 2
            && at.duration_since(self.samples[1].0) >= Duration::from_secs(1)
        {
            self.samples.pop_front();
        }
    }

    /// Bytes per second between the oldest kept sample and the newest.
    #[expect(clippy::cast_precision_loss, reason = "byte counts far below 2^52")]
    pub fn per_sec(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some(&(t0, b0)), Some(&(t1, b1))) if t1 > t0 => {
                b1.saturating_sub(b0) as f64 / t1.duration_since(t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }

    pub fn total(&self) -> u64 {
        self.samples.back().map_or(0, |s| s.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_aligned_and_bounded() {
        assert_eq!(chunk_for(1), 4096);
        assert_eq!(chunk_for(20 << 20), 1 << 20);
        assert_eq!(chunk_for(1 << 40), 1 << 20);
        assert_eq!(chunk_for(10 << 20) % 4096, 0);
    }

    #[test]
    fn the_meter_reports_the_last_second() {
        let mut m = RateMeter::default();
        let t0 = Instant::now();
        for i in 0..=20u32 {
            // 1 MB/s for 2 s, then 3 MB/s for 3 s
            let t = u64::from(i) * 250;
            let bytes = if t <= 2000 {
                t * 1000
            } else {
                2_000_000 + (t - 2000) * 3000
            };
            m.sample(t0 + Duration::from_millis(t), bytes);
        }
        let r = m.per_sec();
        assert!((r - 3_000_000.0).abs() < 1.0, "{r}");
    }

    #[test]
    fn the_spec_is_json_with_lowercase_modes() {
        let spec = IoSpec {
            dir: "/d".into(),
            token: "t".into(),
            mode: IoMode::Mixed,
            rate: 5,
            direct: true,
        };
        let text = serde_json::to_string(&spec).unwrap_or_default();
        assert!(text.contains("\"mixed\""), "{text}");
        assert_eq!(serde_json::from_str::<IoSpec>(&text).ok(), Some(spec));
    }
}
