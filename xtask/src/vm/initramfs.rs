//! The guest's whole filesystem: a newc cpio archive with busybox, the host
//! tools the tests call (with their shared libraries), our binaries, the
//! kernel modules and a generated `/init` script.

use std::{
    collections::BTreeMap,
    ffi::OsString,
    fs::{self, File},
    io::{BufWriter, Write as _},
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    command::{capture, quote},
    vm::kernel::Kernel,
};

/// Host programs the tests run, copied at their host paths. busybox has an
/// `ip` and a `tc` too, but without network namespace or qdisc support;
/// `bash -c 'timeout 4 cat /dev/zero > /dev/tcp/...'` needs bash's `/dev/tcp`
/// and coreutils' `timeout` exit code 124. busybox's `mke2fs` makes ext2
/// only; the path-identity test wants e2fsprogs' ext4.
const HOST_TOOLS: &[&str] = &[
    "ip", "tc", "ss", "nsenter", "taskset", "strace", "bash", "timeout", "cat", "mke2fs",
];

/// Where busybox-static installs its binary.
const BUSYBOX: &str = "/bin/busybox";

/// Markers `/init` prints; the host parses them from the serial console.
pub const BOOTED: &str = "FAULTLINE-VM-BOOTED:";
pub const RUN: &str = "FAULTLINE-VM-RUN:";
pub const EXIT: &str = "FAULTLINE-VM-EXIT:";
pub const RESULT: &str = "FAULTLINE-VM-RESULT:";

/// Guest directory of the workspace's binaries (`FAULTLINE_BIN_DIR`).
const BIN_DIR: &str = "fl/bin";
/// Guest directory of the integration test executables.
const TEST_DIR: &str = "fl/tests";
/// Guest directory of the kernel modules, loaded in the order `/init` lists.
const MODULE_DIR: &str = "fl/modules";

/// What the guest runs: stripped copies of the workspace's binaries and tests.
pub struct Payload {
    /// Binaries for `FAULTLINE_BIN_DIR` (agent, faultctl, fl-probe, ...).
    pub bins: Vec<PathBuf>,
    /// Integration test executables, run in this order, named by their file.
    pub tests: Vec<PathBuf>,
}

/// What `/init` does with the payload on one kernel.
pub struct Run<'a> {
    /// `FAULTLINE_EXPECT`: mechanisms this kernel must support.
    pub expected_mechanisms: &'a str,
    /// Extra arguments for every test binary (e.g. a name filter).
    pub test_args: &'a [OsString],
    /// Run `faultline-bench` with these arguments instead of the tests.
    pub bench: Option<&'a [OsString]>,
}

/// Writes the initramfs for `kernel` to `output`.
pub fn write(kernel: &Kernel, payload: &Payload, run: &Run, output: &Path) -> Result<()> {
    let mut archive = Archive::default();
    for dir in [
        "dev", "proc", "sys", "run", "tmp", "root", "etc", "sbin", "usr/bin", "usr/sbin",
    ] {
        archive.dir(dir);
    }
    archive.insert("dev/console", Entry::CharDevice { major: 5, minor: 1 });
    archive.insert(
        "etc/passwd",
        Entry::text("root:x:0:0:root:/root:/bin/sh\n", 0o644),
    );
    archive.insert("etc/group", Entry::text("root:x:0:\n", 0o644));

    add_busybox(&mut archive)?;
    let tools: Vec<PathBuf> = HOST_TOOLS
        .iter()
        .map(|tool| find_host_tool(tool))
        .collect::<Result<_>>()?;
    for tool in &tools {
        archive.executable(tool, tool);
    }
    for bin in &payload.bins {
        archive.executable(&guest_path(BIN_DIR, bin), bin);
    }
    for test in &payload.tests {
        archive.executable(&guest_path(TEST_DIR, test), test);
    }
    for program in tools.iter().chain(&payload.bins).chain(&payload.tests) {
        for library in shared_libraries(program)? {
            archive.executable(&library, &library);
        }
    }

    let mut modules = Vec::new();
    for module in &kernel.modules {
        let guest = guest_path(MODULE_DIR, module);
        archive.file(&guest, module, 0o644);
        modules.push(guest);
    }
    let tests: Vec<PathBuf> = payload
        .tests
        .iter()
        .map(|test| guest_path(TEST_DIR, test))
        .collect();
    archive.insert(
        "init",
        Entry::text(&init_script(&modules, &tests, run), 0o755),
    );
    archive
        .write(output)
        .with_context(|| format!("writing the initramfs {}", output.display()))
}

/// `/DIR/NAME` for the host file `file`.
fn guest_path(dir: &str, file: &Path) -> PathBuf {
    Path::new("/")
        .join(dir)
        .join(file.file_name().expect("a file path has a name"))
}

/// busybox with a symlink per applet, except for the tools copied from the host.
fn add_busybox(archive: &mut Archive) -> Result<()> {
    archive.executable(Path::new(BUSYBOX), Path::new(BUSYBOX));
    let applets = capture(Command::new(BUSYBOX).arg("--list-full"))
        .context("listing busybox applets (setup installs busybox-static)")?;
    for applet in applets.lines() {
        let name = applet.rsplit('/').next().unwrap_or(applet);
        if applet != "bin/busybox" && !HOST_TOOLS.contains(&name) {
            archive.insert(applet, Entry::Symlink(BUSYBOX.into()));
        }
    }
    Ok(())
}

fn find_host_tool(name: &str) -> Result<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
        .with_context(|| format!("{name} is not installed on the host (setup installs it)"))
}

/// The libraries and dynamic loader `ldd` lists for `program`, at the paths
/// the loader looks for them.
fn shared_libraries(program: &Path) -> Result<Vec<PathBuf>> {
    let output = Command::new("ldd")
        .arg(program)
        .output()
        .with_context(|| format!("running ldd {}", program.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        // Static executables make ldd fail: they need nothing.
        if stdout.contains("not a dynamic executable") || output.stderr.is_empty() {
            return Ok(Vec::new());
        }
        bail!(
            "ldd {} failed: {}",
            program.display(),
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    Ok(parse_ldd(&stdout))
}

fn parse_ldd(output: &str) -> Vec<PathBuf> {
    output
        .lines()
        .filter_map(|line| {
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or
            // `/lib64/ld-linux-x86-64.so.2 (0x...)`; the vDSO has no file.
            let path = line.split_once("=>").map_or(line, |(_, path)| path);
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// The guest's PID 1, run by busybox sh.
fn init_script(modules: &[PathBuf], tests: &[PathBuf], run: &Run) -> String {
    let quoted = |paths: &[PathBuf]| {
        paths
            .iter()
            .map(|path| quote(path.as_os_str()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let test_args: Vec<String> = run.test_args.iter().map(|arg| quote(arg)).collect();
    let work = match run.bench {
        None => format!(
            r#"for test in {tests}; do
    echo "{RUN} ${{test##*/}}"
    "$test" --test-threads=1 {test_args}
    code=$?
    echo "{EXIT} ${{test##*/}} $code"
    [ "$code" -eq 0 ] || result=fail
done"#,
            tests = quoted(tests),
            test_args = test_args.join(" "),
        ),
        Some(args) => format!(
            r#"echo "{RUN} faultline-bench"
/{BIN_DIR}/faultline-bench {args}
code=$?
echo "{EXIT} faultline-bench $code"
[ "$code" -eq 0 ] || result=fail"#,
            args = args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" "),
        ),
    };
    format!(
        r#"#!/bin/sh
# PID 1 of a `cargo xtask test --vm` guest, generated by xtask/src/vm/initramfs.rs.
export PATH=/fl/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root

mount_or_warn() {{
    mkdir -p "$3"
    mount -t "$1" "$2" "$3" || echo "FAULTLINE-VM: could not mount $1 at $3"
}}
mount_or_warn proc proc /proc
mount_or_warn sysfs sysfs /sys
mount_or_warn devtmpfs devtmpfs /dev
mount_or_warn tmpfs tmpfs /run
mount_or_warn tmpfs tmpfs /tmp
mount_or_warn cgroup2 cgroup2 /sys/fs/cgroup
mount_or_warn bpf bpf /sys/fs/bpf
mount_or_warn securityfs securityfs /sys/kernel/security
mount_or_warn tracefs tracefs /sys/kernel/tracing
mkdir -p /run/netns
ip link set lo up

for module in {modules}; do
    insmod "$module" || echo "FAULTLINE-VM: could not load $module"
done

echo "{BOOTED} $(uname -r)"
echo "LSMs: $(cat /sys/kernel/security/lsm)"
echo "modules: $(cut -d ' ' -f 1 /proc/modules | tr '\n' ' ')"
# Hand the resource controllers to the test cgroups (pure cgroup v2, as on
# most production hosts): the pressure and pause faults charge to them.
for c in cpu cpuset memory io pids; do
    echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || echo "FAULTLINE-VM: no cgroup2 controller $c"
done
echo "cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers); enabled: $(cat /sys/fs/cgroup/cgroup.subtree_control)"

export FAULTLINE_BIN_DIR=/{BIN_DIR} RUST_BACKTRACE=1 FAULTLINE_IN_VM=1
export FAULTLINE_EXPECT={expect}
result=pass
{work}
echo "{RESULT} $result"
poweroff -f
"#,
        modules = quoted(modules),
        expect = quote(run.expected_mechanisms.as_ref()),
    )
}

/// One archive member.
enum Entry {
    Dir,
    /// A host file's contents.
    File {
        source: PathBuf,
        mode: u32,
    },
    Data {
        bytes: Vec<u8>,
        mode: u32,
    },
    Symlink(PathBuf),
    CharDevice {
        major: u32,
        minor: u32,
    },
}

impl Entry {
    fn text(text: &str, mode: u32) -> Self {
        Self::Data {
            bytes: text.as_bytes().to_vec(),
            mode,
        }
    }
}

/// Members by path without the leading `/`; sorted, so every directory is
/// written before its contents.
#[derive(Default)]
struct Archive {
    entries: BTreeMap<PathBuf, Entry>,
}

impl Archive {
    fn insert(&mut self, path: impl AsRef<Path>, entry: Entry) {
        let path = path
            .as_ref()
            .strip_prefix("/")
            .unwrap_or(path.as_ref())
            .to_path_buf();
        for parent in path.ancestors().skip(1) {
            if !parent.as_os_str().is_empty() {
                self.entries
                    .entry(parent.to_path_buf())
                    .or_insert(Entry::Dir);
            }
        }
        self.entries.insert(path, entry);
    }

    fn dir(&mut self, path: &str) {
        self.insert(path, Entry::Dir);
    }

    fn file(&mut self, guest: &Path, source: &Path, mode: u32) {
        self.insert(
            guest,
            Entry::File {
                source: source.to_path_buf(),
                mode,
            },
        );
    }

    fn executable(&mut self, guest: &Path, source: &Path) {
        self.file(guest, source, 0o755);
    }

    /// Writes the archive in the "newc" cpio format the kernel unpacks.
    fn write(&self, output: &Path) -> Result<()> {
        let mut out = BufWriter::new(File::create(output)?);
        for (inode, (path, entry)) in (1..).zip(&self.entries) {
            let (mode, data, rdev) = match entry {
                Entry::Dir => (0o040_755, Vec::new(), (0, 0)),
                Entry::File { source, mode } => {
                    let data = fs::read(source)
                        .with_context(|| format!("reading {}", source.display()))?;
                    (0o100_000 | mode, data, (0, 0))
                }
                Entry::Data { bytes, mode } => (0o100_000 | mode, bytes.clone(), (0, 0)),
                Entry::Symlink(target) => {
                    (0o120_777, target.as_os_str().as_bytes().to_vec(), (0, 0))
                }
                Entry::CharDevice { major, minor } => (0o020_600, Vec::new(), (*major, *minor)),
            };
            write_member(
                &mut out,
                inode,
                mode,
                rdev,
                path.as_os_str().as_bytes(),
                &data,
            )?;
        }
        write_member(&mut out, 0, 0, (0, 0), b"TRAILER!!!", &[])?;
        out.flush()?;
        Ok(())
    }
}

fn write_member(
    out: &mut impl std::io::Write,
    inode: u32,
    mode: u32,
    (rdev_major, rdev_minor): (u32, u32),
    name: &[u8],
    data: &[u8],
) -> Result<()> {
    let name_size = u32::try_from(name.len() + 1)?;
    let file_size = u32::try_from(data.len()).context("archive member over 4 GiB")?;
    let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
    // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
    // rdevmajor, rdevminor, namesize, check
    write!(
        out,
        "070701{inode:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{file_size:08x}\
         {:08x}{:08x}{rdev_major:08x}{rdev_minor:08x}{name_size:08x}{:08x}",
        0, 0, 0, 0, 0, 0
    )?;
    out.write_all(name)?;
    out.write_all(&[0])?;
    pad(out, 110 + name.len() + 1)?;
    out.write_all(data)?;
    pad(out, data.len())?;
    Ok(())
}

/// Zero bytes up to the next multiple of four, as newc aligns both the name
/// (after the 110-byte header) and the data.
fn pad(out: &mut impl std::io::Write, written: usize) -> Result<()> {
    out.write_all(&[0; 3][..(4 - written % 4) % 4])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines_name_library_files() {
        let output = "\
\tlinux-vdso.so.1 (0x00007ffc4a1f2000)
\tlibbpf.so.1 => /lib/x86_64-linux-gnu/libbpf.so.1 (0x00007f0d2a000000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0d29e00000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f0d2a1a0000)
";
        assert_eq!(
            parse_ldd(output),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libbpf.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn members_are_aligned_and_parents_come_first() {
        let mut archive = Archive::default();
        archive.insert("usr/bin/tool", Entry::text("abc", 0o755));
        let names: Vec<_> = archive.entries.keys().cloned().collect();
        assert_eq!(
            names,
            [
                PathBuf::from("usr"),
                PathBuf::from("usr/bin"),
                PathBuf::from("usr/bin/tool")
            ]
        );
        let mut out = Vec::new();
        write_member(&mut out, 1, 0o100_755, (0, 0), b"usr/bin/tool", b"abc").unwrap();
        // 110-byte header + 13-byte name padded to 124, 3 data bytes padded to 4.
        assert_eq!(out.len(), 128);
        assert!(out.starts_with(b"070701"));
        assert_eq!(&out[110..123], b"usr/bin/tool\0");
    }
}
