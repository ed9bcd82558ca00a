//! The memory stressor: makes `size_bytes` of anonymous memory resident and
//! keeps it so, never taking the host's MemAvailable below a floor.
//!
//! Resident as fast as the kernel allows: `MADV_POPULATE_WRITE` (Linux 5.14)
//! faults a whole range in with one call and no user-space page walk; older
//! kernels get one write per page. It populates in chunks so that it can
//! honour a ramp and look at MemAvailable between chunks; every
//! [`TICK`] it compares MemAvailable with the floor and gives chunks back
//! (`MADV_DONTNEED`) while the host is below it, taking them again once the
//! host is a chunk above it. Every [`REFRESH`] it populates what it holds
//! again, so pages swapped or reclaimed away come back.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{EXIT_BAD_ARG, EXIT_ORPHANED, Orphan, mem_available, mono_ns, sleep};

/// What the agent asks of a memory stressor (`--internal memory <json>`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryStress {
    pub size_bytes: u64,
    /// 0: as fast as possible.
    pub ramp_bytes_per_sec: u64,
    /// MemAvailable below which the stressor gives memory back.
    pub floor_bytes: u64,
}

/// `MADV_POPULATE_WRITE` from linux/mman.h (libc does not have it everywhere).
const MADV_POPULATE_WRITE: libc::c_int = 23;
/// The unit the stressor takes and gives back.
const CHUNK: usize = 64 << 20;
const TICK: Duration = Duration::from_millis(100);
/// With a ramp, memory is taken in steps this far apart.
const RAMP_STEP: Duration = Duration::from_millis(20);
const REFRESH_NS: i64 = 1_000_000_000;

/// `--internal memory <json>`: runs until killed; returns only on a bad
/// argument, a failed mapping, or when the agent is gone.
pub fn child_main(arg: &str) -> i32 {
    let Some(spec) = super::parse_arg::<MemoryStress>("memory", arg) else {
        return EXIT_BAD_ARG;
    };
    let Ok(size) = usize::try_from(spec.size_bytes) else {
        return EXIT_BAD_ARG;
    };
    if size == 0 {
        eprintln!("faultline-agent --internal memory: size_bytes must be above 0");
        return EXIT_BAD_ARG;
    }
    let map = match Mapping::new(size) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("faultline-agent --internal memory: mmap of {size} bytes: {e}");
            return 1;
        }
    };
    let orphan = Orphan::new();
    let mut held = Held {
        map,
        resident: 0,
        fallback: false,
    };
    let start = mono_ns();
    let mut last_refresh = start;
    let mut next_check = start;
    loop {
        if orphan.orphaned() {
            return EXIT_ORPHANED;
        }
        let now = mono_ns();
        // How much the ramp allows by now.
        let allowed = if spec.ramp_bytes_per_sec == 0 {
            size
        } else {
            let by_now =
                u128::from(spec.ramp_bytes_per_sec) * (now - start) as u128 / 1_000_000_000;
            usize::try_from(by_now).unwrap_or(usize::MAX).min(size)
        };
        let avail = mem_available().unwrap_or(u64::MAX);
        if avail < spec.floor_bytes {
            held.give_back((spec.floor_bytes - avail) as usize);
        } else if held.resident < allowed {
            // Only what keeps the host a chunk clear of the floor.
            let room = usize::try_from(avail - spec.floor_bytes).unwrap_or(usize::MAX);
            if room > CHUNK {
                let step = (allowed - held.resident).min(CHUNK).min(room - CHUNK);
                if let Err(e) = held.take(step) {
                    eprintln!("faultline-agent --internal memory: populate: {e}");
                    sleep(TICK);
                }
                // More to take at full speed: straight on to the next chunk.
                if spec.ramp_bytes_per_sec == 0 && held.resident < allowed {
                    continue;
                }
            }
        } else if now - last_refresh >= REFRESH_NS {
            held.refresh();
            last_refresh = now;
        }
        next_check += if spec.ramp_bytes_per_sec == 0 || held.resident >= size {
            TICK.as_nanos() as i64
        } else {
            RAMP_STEP.as_nanos() as i64
        };
        let now = mono_ns();
        if next_check > now {
            sleep(Duration::from_nanos((next_check - now) as u64));
        } else {
            next_check = now;
        }
    }
}

/// The anonymous mapping and how much of it, from its start, is resident.
struct Held {
    map: Mapping,
    resident: usize,
    /// MADV_POPULATE_WRITE is missing (before 5.14): touch each page.
    fallback: bool,
}

impl Held {
    fn take(&mut self, bytes: usize) -> std::io::Result<()> {
        let bytes = page_round(bytes).min(self.map.len - self.resident);
        self.populate(self.resident, bytes)?;
        self.resident += bytes;
        Ok(())
    }

    fn give_back(&mut self, bytes: usize) {
        let bytes = bytes
            .div_ceil(CHUNK)
            .saturating_mul(CHUNK)
            .min(self.resident);
        let from = self.resident - bytes;
        // SAFETY: [from, from + bytes) lies inside the mapping, which only this
        // process uses and which holds no Rust values.
        unsafe { libc::madvise(self.map.base.add(from).cast(), bytes, libc::MADV_DONTNEED) };
        self.resident = from;
    }

    fn refresh(&mut self) {
        if let Err(e) = self.populate(0, self.resident) {
            eprintln!("faultline-agent --internal memory: re-populate: {e}");
        }
    }

    fn populate(&mut self, from: usize, bytes: usize) -> std::io::Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        if !self.fallback {
            loop {
                // SAFETY: the range lies inside the mapping (see give_back).
                let rc = unsafe {
                    libc::madvise(self.map.base.add(from).cast(), bytes, MADV_POPULATE_WRITE)
                };
                if rc == 0 {
                    return Ok(());
                }
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR | libc::EAGAIN) => {}
                    Some(libc::EINVAL) => {
                        self.fallback = true;
                        break;
                    }
                    _ => return Err(e),
                }
            }
        }
        let page = page_size();
        let mut off = from;
        while off < from + bytes {
            // SAFETY: `off` is inside the mapping; a volatile write of one
            // byte to memory no one else reads.
            unsafe { self.map.base.add(off).write_volatile(1) };
            off += page;
        }
        Ok(())
    }
}

struct Mapping {
    base: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> std::io::Result<Self> {
        let len = page_round(len);
        // SAFETY: a fresh private anonymous mapping; no address hint.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self {
            base: base.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

fn page_round(n: usize) -> usize {
    n.div_ceil(page_size()) * page_size()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 64 MiB taken become resident; given back they are not.
    #[test]
    fn taken_memory_is_resident_and_given_back_is_not() {
        let rss = || {
            let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
            statm
                .split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<usize>()
                .unwrap()
                * page_size()
        };
        let mut held = Held {
            map: Mapping::new(CHUNK).unwrap(),
            resident: 0,
            fallback: false,
        };
        let before = rss();
        held.take(CHUNK).unwrap();
        assert!(rss() >= before + CHUNK * 9 / 10, "{} → {}", before, rss());
        held.give_back(1);
        assert_eq!(held.resident, 0);
        assert!(rss() < before + CHUNK / 10, "{} → {}", before, rss());
    }
}
