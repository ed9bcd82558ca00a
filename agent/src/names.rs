//! Parsing of the names operators use: errnos, signals and syscalls.

use std::str::FromStr as _;

use nix::{errno::Errno, sys::signal::Signal};

/// An errno given by name, e.g. `ECONNREFUSED` (or by number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrnoName(pub Errno);

impl ErrnoName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(n) = s.parse::<i32>() {
            let e = Errno::from_raw(n);
            return if n > 0 && e != Errno::UnknownErrno {
                Ok(Self(e))
            } else {
                Err(format!("unknown errno number {n}"))
            };
        }
        let wanted = s.to_ascii_uppercase();
        (1..4096)
            .map(Errno::from_raw)
            .find(|e| *e != Errno::UnknownErrno && format!("{e:?}") == wanted)
            .map(Self)
            .ok_or_else(|| format!("unknown errno {s:?} (expected a name such as ECONNREFUSED)"))
    }

    pub fn number(self) -> u32 {
        self.0 as i32 as u32
    }

    pub fn name(self) -> String {
        format!("{:?}", self.0)
    }
}

/// A signal given by name (`KILL`, `SIGKILL`) or number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalName(pub Signal);

impl SignalName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(n) = s.parse::<i32>() {
            return Signal::try_from(n)
                .map(Self)
                .map_err(|_| format!("unknown signal number {n}"));
        }
        let upper = s.to_ascii_uppercase();
        let full = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        Signal::from_str(&full)
            .map(Self)
            .map_err(|_| format!("unknown signal {s:?} (expected a name such as KILL or SIGSEGV)"))
    }

    pub fn number(self) -> u32 {
        self.0 as i32 as u32
    }

    pub fn name(self) -> &'static str {
        self.0.as_str()
    }
}

/// A syscall of this machine's architecture, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallName(pub syscalls::Sysno);

impl SyscallName {
    pub fn parse(s: &str) -> Result<Self, String> {
        syscalls::Sysno::from_str(s.trim())
            .map(Self)
            .map_err(|_| format!("unknown syscall {s:?} on {}", std::env::consts::ARCH))
    }

    pub fn number(self) -> u32 {
        self.0.id() as u32
    }

    pub fn name(self) -> &'static str {
        self.0.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_by_name_and_number() {
        assert_eq!(
            ErrnoName::parse("ECONNREFUSED").unwrap().number(),
            libc::ECONNREFUSED as u32
        );
        assert_eq!(
            ErrnoName::parse("etimedout").unwrap().number(),
            libc::ETIMEDOUT as u32
        );
        assert_eq!(ErrnoName::parse("5").unwrap().name(), "EIO");
        let err = ErrnoName::parse("EFOO").unwrap_err();
        assert!(err.contains("EFOO"), "{err}");
        assert!(ErrnoName::parse("0").is_err());
    }

    #[test]
    fn signal_forms() {
        assert_eq!(SignalName::parse("KILL").unwrap().number(), 9);
        assert_eq!(SignalName::parse("SIGSEGV").unwrap().number(), 11);
        assert_eq!(SignalName::parse("abrt").unwrap().number(), 6);
        assert_eq!(SignalName::parse("19").unwrap().name(), "SIGSTOP");
        assert!(SignalName::parse("NOPE").is_err());
    }

    #[test]
    fn syscall_names() {
        assert_eq!(
            SyscallName::parse("getpid").unwrap().number(),
            libc::SYS_getpid as u32
        );
        assert_eq!(
            SyscallName::parse("openat").unwrap().number(),
            libc::SYS_openat as u32
        );
        assert!(SyscallName::parse("frobnicate").is_err());
    }
}
