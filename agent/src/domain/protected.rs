//! Process names that are never faulted: exact names (`auditd`) and
//! prefix patterns (`systemd*`), checked at the API and in the kernel.

use faultline_common::COMM_LEN;

/// One entry of `protected_comms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtectedName {
    /// The name, or the pattern's prefix (without `*`).
    stem: String,
    prefix: bool,
}

impl ProtectedName {
    /// `name` or `prefix*`: 1 to 15 bytes (the kernel's comm length), with
    /// `*` allowed only at the end.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (stem, prefix) = match s.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (s, false),
        };
        if stem.is_empty() || stem.len() > COMM_LEN - 1 {
            return Err(format!(
                "{s:?}: a process name (or a pattern's prefix) has 1 to {} bytes",
                COMM_LEN - 1
            ));
        }
        if stem.contains(['*', '?', '[']) {
            return Err(format!(
                "{s:?}: only a trailing `*` is a pattern (a prefix), e.g. \"systemd*\""
            ));
        }
        Ok(Self {
            stem: stem.to_owned(),
            prefix,
        })
    }

    /// Does a process named `comm` (as /proc/PID/comm or a target's `comm`
    /// gives it) fall under this entry?
    pub fn matches(&self, comm: &str) -> bool {
        if self.prefix {
            comm.starts_with(&self.stem)
        } else {
            comm == self.stem
        }
    }

    /// The kernel's longest-prefix-match key: the bytes to compare with a
    /// task's NUL-padded comm and how many bits of them count. An exact
    /// name includes its terminating NUL, so `sshd` does not cover `sshd2`.
    pub fn kernel_key(&self) -> (u32, [u8; COMM_LEN]) {
        let mut data = [0u8; COMM_LEN];
        data[..self.stem.len()].copy_from_slice(self.stem.as_bytes());
        let bytes = self.stem.len() + usize::from(!self.prefix);
        ((bytes * 8) as u32, data)
    }
}

impl std::fmt::Display for ProtectedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.stem, if self.prefix { "*" } else { "" })
    }
}

/// The first entry of `list` that covers `comm`.
pub fn protecting<'a>(list: &'a [ProtectedName], comm: &str) -> Option<&'a ProtectedName> {
    list.iter().find(|p| p.matches(comm))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_and_prefixes() {
        let exact = ProtectedName::parse("sshd").unwrap();
        assert!(exact.matches("sshd"));
        assert!(!exact.matches("sshd-session"));
        assert_eq!(exact.kernel_key().0, 40);
        let pat = ProtectedName::parse("sshd*").unwrap();
        assert!(pat.matches("sshd") && pat.matches("sshd-session"));
        assert!(!pat.matches("ssh"));
        assert_eq!(pat.kernel_key().0, 32);
        assert_eq!(&pat.kernel_key().1[..5], b"sshd\0");
        assert_eq!(pat.to_string(), "sshd*");
        // 15 bytes, the kernel's longest comm: the key is all 16 bytes.
        assert_eq!(
            ProtectedName::parse("faultline-agent")
                .unwrap()
                .kernel_key()
                .0,
            128
        );
    }

    #[test]
    fn bad_entries_say_why() {
        for bad in [
            "",
            "*",
            "a*b",
            "s?d",
            "sixteen-bytes-xx",
            "sixteen-bytes-xx*",
        ] {
            let e = ProtectedName::parse(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
    }
}
