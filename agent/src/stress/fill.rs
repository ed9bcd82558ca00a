//! Filling a filesystem: how much to allocate for a requested free space,
//! the floor that protects the host's own filesystems, and the fill file
//! itself (`fallocate`, so no data is written and it takes milliseconds).
//!
//! Free space is what an unprivileged writer sees, `f_bavail × f_frsize`:
//! the root-reserved blocks stay free, which is also what `df` shows.

use std::{
    fs::{File, OpenOptions},
    io,
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use nix::{
    fcntl::{FallocateFlags, fallocate},
    sys::{
        statfs::{TMPFS_MAGIC, fstatfs},
        statvfs::{fstatvfs, statvfs},
    },
};

/// 512 MiB: the least free space the floor keeps, whatever the size.
pub const FLOOR_MIN_BYTES: u64 = 512 << 20;
/// The share of the filesystem the floor keeps free, when larger.
pub const FLOOR_PERCENT: u64 = 5;

/// How large the filesystem is and how much of it is free, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    pub total: u64,
    pub free: u64,
}

impl Space {
    /// The filesystem that holds `path`.
    pub fn of(path: &Path) -> io::Result<Self> {
        let st = statvfs(path).map_err(io::Error::from)?;
        Ok(Self::from_statvfs(&st))
    }

    fn of_file(file: &File) -> io::Result<Self> {
        let st = fstatvfs(file).map_err(io::Error::from)?;
        Ok(Self::from_statvfs(&st))
    }

    fn from_statvfs(st: &nix::sys::statvfs::Statvfs) -> Self {
        let frsize = st.fragment_size();
        Self {
            total: st.blocks().saturating_mul(frsize),
            free: st.blocks_available().saturating_mul(frsize),
        }
    }

    /// The floor for this filesystem: the larger of 5 % of it and 512 MiB.
    pub fn floor(&self) -> u64 {
        (self.total / 100 * FLOOR_PERCENT).max(FLOOR_MIN_BYTES)
    }
}

/// What the fill asks for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Goal {
    /// Leave this many bytes free.
    Free(u64),
    /// Leave this share of the filesystem (0..=100) free.
    FreePercent(f64),
    /// Allocate this many bytes, whatever is left.
    Size(u64),
}

impl Goal {
    /// The free space the fill leaves, given the space now (the fill file
    /// not counted).
    pub fn target_free(self, space: Space) -> u64 {
        match self {
            Self::Free(bytes) => bytes,
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss,
                reason = "a share (0..=100) of a byte count below 2^63; rounding is far inside 1 %"
            )]
            Self::FreePercent(p) => (space.total as f64 * p / 100.0).round() as u64,
            Self::Size(bytes) => space.free.saturating_sub(bytes),
        }
    }
}

/// Why a fill cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FillError {
    #[error("the filesystem has {free} bytes free, not more than the {target} requested")]
    AlreadyBelow { free: u64, target: u64 },
    #[error("the filesystem has only {free} bytes free, less than the {size} requested")]
    TooLarge { free: u64, size: u64 },
    #[error(
        "it would leave {target} bytes free on {what}, below its floor of {floor} bytes (the larger of 5 % and 512 MiB)"
    )]
    Floor {
        target: u64,
        floor: u64,
        what: &'static str,
    },
}

/// How many bytes to allocate for `goal`, or why not. `protected` names
/// the filesystem when the floor applies to it (`/`, the agent's state
/// directory, a tmpfs, which is memory).
pub fn bytes_to_fill(
    goal: Goal,
    space: Space,
    protected: Option<&'static str>,
) -> Result<u64, FillError> {
    if let Goal::Size(size) = goal
        && size > space.free
    {
        return Err(FillError::TooLarge {
            free: space.free,
            size,
        });
    }
    let target = goal.target_free(space);
    if let Some(what) = protected {
        let floor = space.floor();
        if target < floor {
            return Err(FillError::Floor {
                target,
                floor,
                what,
            });
        }
    }
    if target >= space.free {
        return Err(FillError::AlreadyBelow {
            free: space.free,
            target,
        });
    }
    Ok(space.free - target)
}

/// Whether the floor protects the filesystem holding `dir`, and why: it
/// is the filesystem of `/` or of the agent's state directory (filling
/// them can stop the host or the agent itself), or a tmpfs (its pages are
/// memory).
pub fn protected_filesystem(dir: &Path, state_dir: &Path) -> io::Result<Option<&'static str>> {
    let dev = std::fs::metadata(dir)?.dev();
    if std::fs::metadata("/")?.dev() == dev {
        return Ok(Some("the root filesystem"));
    }
    // The state directory exists while the agent runs; its parent when a
    // test or a check looks before that.
    let state = state_dir
        .ancestors()
        .find_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.dev());
    if state == Some(dev) {
        return Ok(Some("the agent's state directory's filesystem"));
    }
    let file = File::open(dir)?;
    if fstatfs(&file).map_err(io::Error::from)?.filesystem_type() == TMPFS_MAGIC {
        return Ok(Some("a tmpfs (its pages are memory)"));
    }
    Ok(None)
}

/// The name of the fill file of the fault with this token, in `dir`.
pub fn fill_path(dir: &Path, token: &str) -> PathBuf {
    dir.join(format!(".faultline-fill-{token}"))
}

/// A fill file, allocated; removed by `remove` (not on drop: the worker
/// decides, after its undo record says so).
#[derive(Debug)]
pub struct FillFile {
    file: File,
    path: PathBuf,
    len: u64,
}

impl FillFile {
    /// Creates `path` (which must not exist) and allocates it until the
    /// filesystem has `goal`'s free space, re-reading the free space after
    /// each step: extent metadata costs blocks too, and others may write.
    /// The floor is re-checked against the space now; on error the file is
    /// removed.
    pub fn create(path: &Path, goal: Goal, protected: Option<&'static str>) -> io::Result<Self> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(0o600)
            .open(path)?;
        let mut fill = Self {
            file,
            path: path.to_path_buf(),
            len: 0,
        };
        match fill.allocate(goal, protected) {
            Ok(()) => Ok(fill),
            Err(e) => {
                fill.remove();
                Err(e)
            }
        }
    }

    fn allocate(&mut self, goal: Goal, protected: Option<&'static str>) -> io::Result<()> {
        let space = Space::of_file(&self.file)?;
        let bytes =
            bytes_to_fill(goal, space, protected).map_err(|e| io::Error::other(e.to_string()))?;
        let target = space.free - bytes;
        self.grow(bytes)?;
        // A few corrections: metadata blocks and concurrent writers move
        // the free space; each step is a fraction of the last.
        for _ in 0..4 {
            let now = Space::of_file(&self.file)?.free;
            let block = 4096;
            if now > target + block {
                self.grow(now - target)?;
            } else if now + block < target && self.len > 0 {
                let shrink = (target - now).min(self.len);
                self.len -= shrink;
                self.file.set_len(self.len)?;
            } else {
                break;
            }
        }
        Ok(())
    }

    fn grow(&mut self, bytes: u64) -> io::Result<()> {
        let (Ok(offset), Ok(len)) = (i64::try_from(self.len), i64::try_from(bytes)) else {
            return Err(io::Error::other("size out of range"));
        };
        match fallocate(&self.file, FallocateFlags::empty(), offset, len) {
            Ok(()) => {}
            // Full before the last block: the space is what it is, and
            // the free space read afterwards is the truth.
            Err(nix::errno::Errno::ENOSPC) => {}
            Err(nix::errno::Errno::EOPNOTSUPP) => {
                return Err(io::Error::other(
                    "the filesystem does not support fallocate",
                ));
            }
            Err(e) => return Err(e.into()),
        }
        self.len = self.file.metadata()?.len();
        Ok(())
    }

    /// Bytes the file holds now.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The filesystem's space now.
    pub fn space_now(&self) -> io::Result<Space> {
        Space::of_file(&self.file)
    }

    /// Gives back `bytes` at the end of the file (other writers pushed a
    /// protected filesystem below its floor).
    pub fn shrink(&mut self, bytes: u64) -> io::Result<()> {
        self.len = self.len.saturating_sub(bytes);
        self.file.set_len(self.len)
    }

    /// Unlinks the file (the space is freed when the descriptor closes).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    fn space(total: u64, free: u64) -> Space {
        Space { total, free }
    }

    #[test]
    fn each_goal_gives_the_bytes_to_allocate() {
        let s = space(10 * GIB, 6 * GIB);
        assert_eq!(bytes_to_fill(Goal::Free(GIB), s, None), Ok(5 * GIB));
        assert_eq!(bytes_to_fill(Goal::FreePercent(10.0), s, None), Ok(5 * GIB));
        assert_eq!(bytes_to_fill(Goal::Size(2 * GIB), s, None), Ok(2 * GIB));
        assert_eq!(bytes_to_fill(Goal::Free(0), s, None), Ok(6 * GIB));
    }

    #[test]
    fn impossible_goals_are_refused() {
        let s = space(10 * GIB, GIB);
        assert!(matches!(
            bytes_to_fill(Goal::Free(2 * GIB), s, None),
            Err(FillError::AlreadyBelow { .. })
        ));
        assert!(matches!(
            bytes_to_fill(Goal::Size(2 * GIB), s, None),
            Err(FillError::TooLarge { .. })
        ));
    }

    #[test]
    fn the_floor_is_the_larger_of_5_percent_and_512_mib() {
        assert_eq!(space(GIB, GIB).floor(), 512 * MIB);
        assert_eq!(space(100 * GIB, GIB).floor(), 5 * GIB);
        let s = space(4 * GIB, 2 * GIB);
        let floor = Err(FillError::Floor {
            target: 511 * MIB,
            floor: 512 * MIB,
            what: "x",
        });
        assert_eq!(bytes_to_fill(Goal::Free(511 * MIB), s, Some("x")), floor);
        assert_eq!(
            bytes_to_fill(Goal::Free(512 * MIB), s, Some("x")),
            Ok(1536 * MIB)
        );
        // Unprotected: down to nothing.
        assert_eq!(bytes_to_fill(Goal::Free(0), s, None), Ok(2 * GIB));
    }
}
