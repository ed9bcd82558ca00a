//! Booting one kernel under qemu (TCG: there is no KVM here), streaming its
//! serial console and reading the markers `/init` prints.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc::{self, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::{
    command::display,
    vm::initramfs::{BOOTED, EXIT, RESULT, RUN},
};

/// Kernel command line. `panic=-1` with `-no-reboot` turns a kernel panic
/// (or `/init` dying) into qemu exiting; `mitigations=off` spares TCG the
/// page-table switch on every syscall; Debian's default `lsm=` already ends in
/// `bpf`.
const APPEND: &str = "console=ttyS0 panic=-1 quiet mitigations=off";

/// How one kernel's run ended.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// qemu exited without `/init` printing its result line.
    NoResult,
    TimedOut,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "FAIL",
            Self::NoResult => "NO RESULT",
            Self::TimedOut => "TIMEOUT",
        }
    }
}

/// One test executable's run inside the guest.
pub struct BinaryRun {
    pub name: String,
    pub exit_code: Option<i32>,
    pub duration: Duration,
}

/// One test inside a test binary. libtest runs them one at a time here and
/// finishes each line as its test ends, so a test took from the end of the
/// previous line to the end of its own.
pub struct TestRun {
    pub binary: String,
    pub test: String,
    /// `ok`, `FAILED` or `ignored`.
    pub result: String,
    pub duration: Duration,
}

/// A failed test and the first line of its panic message.
pub struct Failure {
    pub binary: String,
    pub test: String,
    pub message: Option<String>,
}

/// Everything the host learned from one guest.
pub struct Outcome {
    pub verdict: Verdict,
    /// From starting qemu to `/init` having mounted and loaded everything.
    pub boot: Option<Duration>,
    pub total: Duration,
    pub binaries: Vec<BinaryRun>,
    pub tests: Vec<TestRun>,
    pub passed: u32,
    pub failed: u32,
    pub ignored: u32,
    pub failures: Vec<Failure>,
    /// The guest kernel itself panicked (console "Kernel panic - not
    /// syncing"), which ends the run without a result.
    pub kernel_panic: bool,
    /// This outcome is the second boot, after the first one panicked.
    pub retried_after_panic: bool,
}

/// Boots `vmlinuz` with `initrd`, echoing each console line prefixed with
/// `label`, and kills qemu after `timeout`.
pub fn boot(vmlinuz: &Path, initrd: &Path, label: &str, timeout: Duration) -> Result<Outcome> {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "3072"])
        // The tests use loopback and veth pairs inside the guest only.
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", APPEND])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let line = display(&cmd);
    eprintln!("    $ {line}");
    let start = Instant::now();
    let mut qemu = KillOnDrop(
        cmd.spawn()
            .with_context(|| format!("could not start `{line}`"))?,
    );

    let console = qemu.0.stdout.take().expect("stdout is piped");
    let (lines, received) = mpsc::channel();
    let reader = thread::spawn(move || {
        for line in BufReader::new(console).split(b'\n') {
            let Ok(line) = line else { break };
            let line = printable(&String::from_utf8_lossy(&line));
            if lines.send(line).is_err() {
                break;
            }
        }
    });

    let mut console = Console::new(start);
    let deadline = start + timeout;
    let timed_out = loop {
        match received.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                println!("[{label}] {line}");
                console.read(&line);
            }
            Err(RecvTimeoutError::Timeout) => {
                eprintln!("[{label}] timed out after {timeout:?}: killing qemu");
                break true;
            }
            Err(RecvTimeoutError::Disconnected) => break false,
        }
    };
    qemu.0.kill().ok();
    let status = qemu.0.wait().context("waiting for qemu")?;
    reader.join().ok();
    if !timed_out && console.verdict.is_none() {
        eprintln!("[{label}] qemu exited ({status}) before /init printed its result");
    }
    Ok(console.finish(timed_out, start.elapsed()))
}

/// Kills qemu if xtask returns early (an error, a panic), so no guest outlives it.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            self.0.kill().ok();
            self.0.wait().ok();
        }
    }
}

/// Reads the guest's console line by line.
struct Console {
    start: Instant,
    boot: Option<Duration>,
    verdict: Option<Verdict>,
    running: Option<(String, Instant)>,
    binaries: Vec<BinaryRun>,
    tests: Vec<TestRun>,
    /// When the previous test (or the binary's `running N tests` line) ended.
    test_clock: Instant,
    counts: [u32; 3],
    failures: Vec<Failure>,
    /// The test whose captured output libtest is printing (`---- NAME stdout ----`).
    reporting: Option<String>,
    panicked: bool,
    kernel_panic: bool,
}

impl Console {
    fn new(start: Instant) -> Self {
        Self {
            start,
            boot: None,
            verdict: None,
            running: None,
            binaries: Vec::new(),
            tests: Vec::new(),
            test_clock: start,
            counts: [0; 3],
            failures: Vec::new(),
            reporting: None,
            panicked: false,
            kernel_panic: false,
        }
    }

    fn read(&mut self, line: &str) {
        let now = Instant::now();
        if line.contains("Kernel panic - not syncing") {
            self.kernel_panic = true;
        }
        // The first marker shares its line with the firmware's last words.
        let after = |marker: &str| line.find(marker).map(|at| &line[at + marker.len()..]);
        if after(BOOTED).is_some() {
            self.boot = Some(now - self.start);
        } else if let Some(name) = after(RUN) {
            self.running = Some((name.trim().to_owned(), now));
        } else if let Some(rest) = after(EXIT) {
            let mut words = rest.split_whitespace();
            let name = words.next().unwrap_or_default().to_owned();
            let exit_code = words.next().and_then(|code| code.parse().ok());
            let started = self.running.take().map_or(now, |(_, started)| started);
            self.binaries.push(BinaryRun {
                name,
                exit_code,
                duration: now - started,
            });
        } else if let Some(result) = after(RESULT) {
            self.verdict = Some(if result.trim() == "pass" {
                Verdict::Pass
            } else {
                Verdict::Fail
            });
        } else if let Some(counts) = line.strip_prefix("test result: ") {
            for (slot, key) in self.counts.iter_mut().zip(["passed", "failed", "ignored"]) {
                *slot += libtest_count(counts, key);
            }
        } else if line.starts_with("running ")
            && (line.ends_with(" tests") || line.ends_with(" test"))
        {
            self.test_clock = now;
        } else if let Some((test, result)) = line
            .strip_prefix("test ")
            .and_then(|rest| rest.split_once(" ... "))
        {
            if result == "FAILED" {
                self.failures.push(Failure {
                    binary: self.binary(),
                    test: test.to_owned(),
                    message: None,
                });
            }
            self.tests.push(TestRun {
                binary: self.binary(),
                test: test.to_owned(),
                result: result.to_owned(),
                duration: now - self.test_clock,
            });
            self.test_clock = now;
        } else if let Some(test) = line
            .strip_prefix("---- ")
            .and_then(|rest| rest.strip_suffix(" stdout ----"))
        {
            self.reporting = Some(test.to_owned());
            self.panicked = false;
        } else if line.contains("panicked at") {
            self.panicked = true;
        } else if self.panicked && !line.trim().is_empty() {
            self.panicked = false;
            let binary = self.binary();
            if let Some(failure) = self.failures.iter_mut().find(|failure| {
                failure.binary == binary
                    && Some(&failure.test) == self.reporting.as_ref()
                    && failure.message.is_none()
            }) {
                failure.message = Some(line.trim().to_owned());
            }
        }
    }

    fn binary(&self) -> String {
        self.running
            .as_ref()
            .map(|(name, _)| name.clone())
            .unwrap_or_default()
    }

    fn finish(self, timed_out: bool, total: Duration) -> Outcome {
        let verdict = if timed_out {
            Verdict::TimedOut
        } else {
            self.verdict.unwrap_or(Verdict::NoResult)
        };
        let [passed, failed, ignored] = self.counts;
        Outcome {
            verdict,
            boot: self.boot,
            total,
            binaries: self.binaries,
            tests: self.tests,
            passed,
            failed,
            ignored,
            failures: self.failures,
            kernel_panic: self.kernel_panic,
            retried_after_panic: false,
        }
    }
}

/// `line` without terminal control sequences (the firmware clears the screen)
/// and trailing white space.
fn printable(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            // ESC [ parameters final-byte, or ESC and one character.
            '\x1b' => {
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.truncate(out.trim_end().len());
    out
}

/// `N` from `... N passed; ...` in libtest's `test result:` line.
fn libtest_count(counts: &str, key: &str) -> u32 {
    counts
        .split(';')
        .find_map(|part| {
            let mut words = part.split_whitespace().rev();
            (words.next() == Some(key)).then(|| words.next()?.parse().ok())?
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_markers_and_libtest_output_are_read() {
        let firmware_and_banner =
            printable("Booting from ROM..\x1bc\x1b[?7l\x1b[2JFAULTLINE-VM-BOOTED: 6.12.117\r");
        assert_eq!(
            firmware_and_banner,
            "Booting from ROM..FAULTLINE-VM-BOOTED: 6.12.117"
        );
        let mut console = Console::new(Instant::now());
        console.read(&firmware_and_banner);
        for line in [
            "FAULTLINE-VM-RUN: network",
            "running 2 tests",
            "test loss_on_veth ... ok",
            "test delay_on_veth ... FAILED",
            "---- delay_on_veth stdout ----",
            "",
            "thread 'delay_on_veth' panicked at tests/tests/network.rs:10:5:",
            "expected netem, saw none",
            "test result: FAILED. 1 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out",
            "FAULTLINE-VM-EXIT: network 101",
            "FAULTLINE-VM-RESULT: fail",
        ] {
            console.read(line);
        }
        let outcome = console.finish(false, Duration::ZERO);
        assert!(outcome.verdict == Verdict::Fail);
        assert!(outcome.boot.is_some());
        assert_eq!((outcome.passed, outcome.failed, outcome.ignored), (1, 1, 2));
        assert_eq!(outcome.binaries.len(), 1);
        assert_eq!(outcome.binaries[0].exit_code, Some(101));
        assert_eq!(outcome.tests.len(), 2);
        assert_eq!(outcome.tests[1].test, "delay_on_veth");
        assert_eq!(outcome.tests[1].result, "FAILED");
        assert_eq!(outcome.failures.len(), 1);
        assert_eq!(outcome.failures[0].binary, "network");
        assert_eq!(outcome.failures[0].test, "delay_on_veth");
        assert_eq!(
            outcome.failures[0].message.as_deref(),
            Some("expected netem, saw none")
        );
        assert!(!outcome.kernel_panic);
    }

    #[test]
    fn a_guest_kernel_panic_is_noticed() {
        let mut console = Console::new(Instant::now());
        for line in [
            "FAULTLINE-VM-RUN: syscall_signal",
            "test target_dies ... [  446.973337] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI",
            "[  446.978672] Kernel panic - not syncing: Fatal exception in interrupt",
        ] {
            console.read(line);
        }
        let outcome = console.finish(false, Duration::ZERO);
        assert!(outcome.verdict == Verdict::NoResult);
        assert!(outcome.kernel_panic);
    }
}
