//! A filesystem of the test's own: a sparse image in a temp directory,
//! `mke2fs -t ext4`, attached to a free loop device and mounted. Dropping
//! it unmounts, detaches and removes it. Tests fill only these.

use std::{
    fs::{File, OpenOptions},
    os::fd::AsRawFd as _,
    path::PathBuf,
    process::Command,
    time::Duration,
};

use crate::unique;

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;

/// A mounted ext4 filesystem on a loop device.
pub struct LoopFs {
    dir: PathBuf,
    pub mnt: PathBuf,
    /// The loop device's name (`loop3`), for /sys/block/NAME.
    pub name: String,
    dev: Option<File>,
    mounted: bool,
}

impl LoopFs {
    /// A new ext4 filesystem of `size` bytes (the image is sparse).
    pub fn ext4(size: u64) -> Self {
        let dir = std::env::temp_dir().join(unique("fl-loopfs"));
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt).expect("loopfs dir");
        let mut me = Self {
            dir,
            mnt,
            name: String::new(),
            dev: None,
            mounted: false,
        };
        let image = me.dir.join("image");
        File::create(&image)
            .and_then(|f| f.set_len(size))
            .expect("loopfs image");
        // e2fsprogs' mke2fs (the VM guests have it too): busybox's makes ext2 only.
        let out = Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4"])
            .arg(&image)
            .output()
            .expect("run mke2fs");
        assert!(out.status.success(), "mke2fs: {out:?}");
        let backing = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&image)
            .expect("open image");
        let ctl = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/loop-control")
            .expect("/dev/loop-control");
        // Another process may take the free device between the two calls.
        for _ in 0..20 {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
            let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
            assert!(
                n >= 0,
                "LOOP_CTL_GET_FREE: {}",
                std::io::Error::last_os_error()
            );
            let dev = OpenOptions::new()
                .read(true)
                .write(true)
                .open(format!("/dev/loop{n}"))
                .expect("open loop device");
            // SAFETY: LOOP_SET_FD takes the backing file's fd as its
            // argument; both fds are open.
            let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD, backing.as_raw_fd()) };
            if rc == 0 {
                me.name = format!("loop{n}");
                me.dev = Some(dev);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(me.dev.is_some(), "no free loop device");
        nix::mount::mount(
            Some(format!("/dev/{}", me.name).as_str()),
            &me.mnt,
            Some("ext4"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .expect("mount the loop filesystem");
        me.mounted = true;
        me
    }

    pub fn path(&self, name: &str) -> String {
        self.mnt.join(name).to_string_lossy().into_owned()
    }

    pub fn mnt_str(&self) -> String {
        self.mnt.to_string_lossy().into_owned()
    }

    /// (size, free) in bytes, free as an unprivileged writer sees it
    /// (`f_bavail`), as the agent counts it.
    pub fn space(&self) -> (u64, u64) {
        let st = nix::sys::statvfs::statvfs(&self.mnt).expect("statvfs");
        (
            st.blocks() * st.fragment_size(),
            st.blocks_available() * st.fragment_size(),
        )
    }

    /// Bytes the device has read and written so far (/sys/block/NAME/stat,
    /// 512-byte sectors).
    pub fn device_bytes(&self) -> (u64, u64) {
        let stat = std::fs::read_to_string(format!("/sys/block/{}/stat", self.name))
            .expect("loop device stat");
        let f: Vec<u64> = stat
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        (f[2] * 512, f[6] * 512)
    }

    /// Names in the mount's top directory (besides `lost+found`).
    pub fn entries(&self) -> Vec<String> {
        std::fs::read_dir(&self.mnt)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n != "lost+found")
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted {
            let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
        }
        if let Some(dev) = &self.dev {
            // SAFETY: LOOP_CLR_FD takes no argument; the fd is open.
            let _ = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD, 0) };
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
