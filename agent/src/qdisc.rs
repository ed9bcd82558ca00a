//! The fq qdisc that `latency` faults need: the TCX egress program only
//! stamps each packet with its earliest departure time; fq holds it until
//! then. The agent makes fq the interface's root qdisc while a latency fault
//! uses the interface and deletes it afterwards, which restores the kernel's
//! default qdisc.
//!
//! A qdisc is not a bpf_link: it would survive the agent. So every interface
//! the agent gave an fq root is written to a file in the state directory,
//! and the next start removes those that still carry the agent's handle.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

/// Handle of the fq root qdiscs the agent installs, so it removes only its own.
const HANDLE: &str = "fa17:";
/// Root qdiscs the kernel or a distribution sets up by default. Anything
/// else was configured by someone, and the agent does not replace it.
const DEFAULT_ROOTS: [&str; 5] = ["noqueue", "pfifo_fast", "fq_codel", "mq", "pfifo"];

/// Why `latency` cannot run on this host, or None.
pub fn unavailable_reason() -> Option<String> {
    if let Err(e) = Command::new("tc").arg("-V").output() {
        return Some(format!(
            "the tc command (iproute2) is needed to install the fq qdisc: {e}"
        ));
    }
    if Path::new("/sys/module/sch_fq").exists() {
        return None;
    }
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = PathBuf::from("/lib/modules").join(&release);
    for list in ["modules.builtin", "modules.dep"] {
        if std::fs::read_to_string(dir.join(list)).is_ok_and(|t| t.contains("/sch_fq.ko")) {
            return None;
        }
    }
    Some(format!(
        "the fq qdisc is not available on kernel {release} (sch_fq is neither loaded, built in, nor a module \
         under {}; CONFIG_NET_SCH_FQ): latency needs fq to hold packets until their departure time",
        dir.display()
    ))
}

fn tc(args: &[&str]) -> Result<String, String> {
    let out = Command::new("tc")
        .args(args)
        .output()
        .map_err(|e| format!("running tc: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "tc {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Kind and handle of an interface's root qdisc ("noqueue", "0:").
fn root_qdisc(ifname: &str) -> Result<(String, String), String> {
    let text = tc(&["qdisc", "show", "dev", ifname, "root"])?;
    let line = text
        .lines()
        .find(|l| l.starts_with("qdisc "))
        .ok_or_else(|| format!("no root qdisc reported for {ifname}"))?;
    let mut w = line.split_whitespace().skip(1);
    Ok((
        w.next().unwrap_or_default().to_owned(),
        w.next().unwrap_or_default().to_owned(),
    ))
}

struct Entry {
    ifname: String,
    users: usize,
    /// The agent installed this fq (and removes it with the last user).
    owned: bool,
}

/// Why an fq root qdisc could not be put in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QdiscError {
    /// Someone configured another root qdisc, which the agent leaves alone.
    Configured(String),
    /// `tc` failed.
    Failed(String),
}

pub struct FqManager {
    record: PathBuf,
    entries: BTreeMap<u32, Entry>,
}

impl FqManager {
    /// Removes fq roots a previous agent left behind (it died before it
    /// could), then starts with none.
    pub fn new(state_dir: &Path) -> Self {
        let record = state_dir.join("fq-interfaces");
        if let Ok(text) = std::fs::read_to_string(&record) {
            for ifname in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                match root_qdisc(ifname) {
                    Ok((kind, handle)) if kind == "fq" && handle == HANDLE => {
                        match tc(&["qdisc", "del", "dev", ifname, "root"]) {
                            Ok(_) => tracing::warn!(
                                interface = ifname,
                                "removed the fq qdisc a previous agent left behind"
                            ),
                            Err(e) => {
                                tracing::warn!(interface = ifname, error = %e, "could not remove a stale fq qdisc");
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        let _ = std::fs::remove_file(&record);
        Self {
            record,
            entries: BTreeMap::new(),
        }
    }

    fn save(&self) {
        let text: String = self
            .entries
            .values()
            .filter(|e| e.owned)
            .map(|e| format!("{}\n", e.ifname))
            .collect();
        if let Err(e) = std::fs::write(&self.record, text) {
            tracing::warn!(file = %self.record.display(), error = %e, "recording fq interfaces failed");
        }
    }

    /// Makes sure `ifname` has an fq root qdisc while someone needs it.
    pub fn acquire(&mut self, ifindex: u32, ifname: &str) -> Result<(), QdiscError> {
        if let Some(e) = self.entries.get_mut(&ifindex) {
            e.users += 1;
            return Ok(());
        }
        let (kind, _) = root_qdisc(ifname).map_err(QdiscError::Failed)?;
        let owned = if kind == "fq" {
            // Someone runs fq already: use it, leave it in place afterwards.
            false
        } else if DEFAULT_ROOTS.contains(&kind.as_str()) {
            // Recorded first, so a crash between the two leaves a record.
            self.entries.insert(
                ifindex,
                Entry {
                    ifname: ifname.to_owned(),
                    users: 1,
                    owned: true,
                },
            );
            self.save();
            if let Err(e) = tc(&[
                "qdisc",
                "replace",
                "dev",
                ifname,
                "root",
                "handle",
                HANDLE,
                "fq",
                "limit",
                "100000",
                "flow_limit",
                "10000",
            ]) {
                self.entries.remove(&ifindex);
                self.save();
                return Err(QdiscError::Failed(e));
            }
            tracing::info!(interface = ifname, replaced = %kind, "installed the fq root qdisc");
            return Ok(());
        } else {
            return Err(QdiscError::Configured(format!(
                "{ifname} has a configured root qdisc ({kind}); latency needs fq as the root qdisc and the agent \
                 does not replace a qdisc someone set up"
            )));
        };
        self.entries.insert(
            ifindex,
            Entry {
                ifname: ifname.to_owned(),
                users: 1,
                owned,
            },
        );
        Ok(())
    }

    pub fn release(&mut self, ifindex: u32) {
        let Some(e) = self.entries.get_mut(&ifindex) else {
            return;
        };
        e.users = e.users.saturating_sub(1);
        if e.users > 0 {
            return;
        }
        let e = self.entries.remove(&ifindex).expect("present");
        if e.owned {
            match root_qdisc(&e.ifname) {
                Ok((kind, handle)) if kind == "fq" && handle == HANDLE => {
                    if let Err(err) = tc(&["qdisc", "del", "dev", &e.ifname, "root"]) {
                        tracing::warn!(interface = %e.ifname, error = %err, "removing the fq qdisc failed");
                    }
                }
                // The interface is gone, or someone replaced our qdisc.
                _ => {}
            }
            self.save();
        }
    }
}

impl Drop for FqManager {
    fn drop(&mut self) {
        let owned: Vec<u32> = self.entries.keys().copied().collect();
        for ifindex in owned {
            if let Some(e) = self.entries.get_mut(&ifindex) {
                e.users = 1;
            }
            self.release(ifindex);
        }
    }
}
