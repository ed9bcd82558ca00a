//! What identifies a file to the LSM programs: its inode number, the
//! device of the superblock holding it (the kernel's `s_dev`, which for a
//! btrfs subvolume differs from `stat`'s `st_dev`), and its inode
//! generation, so that an inode number reused after a delete is a
//! different file.

use std::{fs::File, os::fd::AsRawFd as _};

use super::PathMatch;

/// `FS_IOC_GETVERSION` (`_IOR('v', 1, long)`): the inode's `i_generation`.
const FS_IOC_GETVERSION: libc::c_ulong = 0x8008_7601;
/// `RAMFS_MAGIC` (rootfs): neither libc nor nix names it.
const RAMFS_MAGIC: nix::sys::statfs::FsType = nix::sys::statfs::FsType(0x8584_58f6);

/// Resolves an absolute path to the identity the kernel compares.
pub fn resolve(path: &str) -> Result<PathMatch, String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    if !path.starts_with('/') {
        return Err(format!("{path:?} is not an absolute path"));
    }
    let meta = std::fs::metadata(path).map_err(|e| format!("{path}: {e}"))?;
    if !meta.is_file() && !meta.is_dir() {
        // Opening a device or a FIFO to ask its generation could act on it.
        return Err(format!("{path} is neither a regular file nor a directory"));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("{path}: {e}"))?;
    let (ino, mnt_id) = statx_ino_mnt(&file).map_err(|e| format!("{path}: {e}"))?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    let (major, minor) = superblock_dev(&mountinfo, mnt_id)
        .ok_or_else(|| format!("{path}: mount {mnt_id} is not in /proc/self/mountinfo"))?;
    Ok(PathMatch {
        path: path.to_owned(),
        ino,
        kernel_dev: (major << 20) | minor,
        generation: generation(&file, path)?,
    })
}

/// The inode number and the id of the mount holding `file` (`statx`'s
/// `STATX_MNT_ID`, Linux 5.8 and later).
fn statx_ino_mnt(file: &File) -> Result<(u64, u64), String> {
    // SAFETY: statx is plain old data; all zeroes is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the fd is open for the call's duration, the path is a valid
    // NUL-terminated empty string (AT_EMPTY_PATH: the fd itself) and `stx`
    // is a writable statx the kernel fills.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_INO | libc::STATX_MNT_ID,
            &raw mut stx,
        )
    };
    if rc != 0 {
        return Err(format!("statx: {}", std::io::Error::last_os_error()));
    }
    if stx.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(
            "this kernel reports no mount id (statx STATX_MNT_ID, Linux 5.8), so the \
             superblock's device cannot be found"
                .into(),
        );
    }
    Ok((stx.stx_ino, stx.stx_mnt_id))
}

/// The `major:minor` that `/proc/self/mountinfo` shows for mount `mnt_id`:
/// the superblock's `s_dev`, the number the kernel programs compare.
pub fn superblock_dev(mountinfo: &str, mnt_id: u64) -> Option<(u32, u32)> {
    mountinfo.lines().find_map(|line| {
        let mut fields = line.split(' ');
        if fields.next()?.parse::<u64>().ok()? != mnt_id {
            return None;
        }
        let (major, minor) = fields.nth(1)?.split_once(':')?;
        Some((major.parse().ok()?, minor.parse().ok()?))
    })
}

/// The inode generation to compare, or `None` where the file system has
/// none to ask for but never reuses an inode number: tmpfs and ramfs take
/// numbers from a counter that only increases (tmpfs's own per
/// superblock since Linux 5.9, 64-bit with `inode64`; ramfs's the
/// kernel's `get_next_ino`), so a number comes back only after 2^32
/// creations. Anywhere else a file without a generation is refused.
fn generation(file: &File, path: &str) -> Result<Option<u32>, String> {
    let mut generation: libc::c_long = 0;
    // SAFETY: FS_IOC_GETVERSION writes at most one long through the pointer,
    // which points to a live c_long; the fd is open.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_GETVERSION, &raw mut generation) };
    if rc == 0 {
        // The kernel stores a u32 (`inode::i_generation`).
        return Ok(Some(generation as u32));
    }
    let err = std::io::Error::last_os_error();
    let fs_type = nix::sys::statfs::fstatfs(file)
        .map(|s| s.filesystem_type())
        .map_err(|e| format!("{path}: fstatfs: {e}"))?;
    if fs_type == nix::sys::statfs::TMPFS_MAGIC || fs_type == RAMFS_MAGIC {
        return Ok(None);
    }
    let fs_type = fs_type.0;
    Err(format!(
        "{path}: its file system (type {fs_type:#x}) gives no inode generation \
         (FS_IOC_GETVERSION: {err}), so a file reusing its inode number after a \
         delete could not be told apart; use a path on ext4, xfs, btrfs, f2fs or tmpfs"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
25 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
61 25 0:48 /@home /home rw,relatime shared:30 - btrfs /dev/nvme0n1p3 rw,subvol=/@home
1234 25 7:3 / /mnt/with\\040space rw - ext4 /dev/loop3 rw
";

    #[test]
    fn superblock_dev_is_the_mounts_major_minor() {
        assert_eq!(superblock_dev(MOUNTINFO, 25), Some((259, 2)));
        // A btrfs subvolume: the superblock's anonymous device, not st_dev.
        assert_eq!(superblock_dev(MOUNTINFO, 61), Some((0, 48)));
        assert_eq!(superblock_dev(MOUNTINFO, 1234), Some((7, 3)));
        assert_eq!(superblock_dev(MOUNTINFO, 22), Some((0, 21)));
    }

    #[test]
    fn superblock_dev_of_an_unknown_or_garbled_mount_is_none() {
        assert_eq!(superblock_dev(MOUNTINFO, 2), None);
        assert_eq!(superblock_dev(MOUNTINFO, 123), None, "no prefix match");
        assert_eq!(superblock_dev("25 1 259-2 / / rw - ext4 x rw\n", 25), None);
        assert_eq!(superblock_dev("25 1\n", 25), None);
        assert_eq!(superblock_dev("", 25), None);
    }

    #[test]
    fn resolves_a_temp_file_with_the_stat_inode() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = std::env::temp_dir().join(format!("fl-identity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("f");
        std::fs::write(&f, b"x").unwrap();
        let got = resolve(f.to_str().unwrap());
        let meta = std::fs::metadata(&f).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        match got {
            Ok(p) => assert_eq!(p.ino, meta.ino()),
            // A temp dir on a file system without generations is refused
            // with the reason.
            Err(e) => assert!(e.contains("no inode generation"), "{e}"),
        }
        assert!(resolve("relative").unwrap_err().contains("absolute"));
    }
}
