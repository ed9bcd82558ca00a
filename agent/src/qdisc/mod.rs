//! The fq qdisc that `latency` faults need: the TCX egress program only
//! stamps each packet with its earliest departure time; fq holds it until
//! then. The agent makes fq the interface's root qdisc while a latency fault
//! uses the interface and deletes it afterwards, which restores the kernel's
//! default qdisc.
//!
//! A qdisc is not a bpf_link: it would survive the agent. So every interface
//! the agent gave an fq root is written to a file in the state directory,
//! and the next start removes those that still carry the agent's handle.
//!
//! The qdiscs are read, replaced and deleted over rtnetlink (a synchronous
//! `NETLINK_ROUTE` socket from `netlink-sys`, messages from
//! `netlink-packet-route`): the same requests `tc qdisc show/replace/del`
//! sends, without needing iproute2 or parsing its text.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use rtnl::{Qdisc, Rtnl};

/// Handle of the fq root qdiscs the agent installs (`fa17:`), so it removes
/// only its own.
const HANDLE: u32 = 0xfa17_0000;
/// Root qdiscs the kernel or a distribution sets up by default. Anything
/// else was configured by someone, and the agent does not replace it.
const DEFAULT_ROOTS: [&str; 5] = ["noqueue", "pfifo_fast", "fq_codel", "mq", "pfifo"];
/// fq's `limit` (packets in the qdisc) and `flow_limit` (per flow): room
/// for the packets a delayed flow holds at high rates.
const FQ_LIMIT: u32 = 100_000;
const FQ_FLOW_LIMIT: u32 = 10_000;

/// Why `latency` cannot run on this host, or None.
///
/// The kernel is asked: an fq root qdisc is created on `lo` in a private,
/// throw-away network namespace (which also loads `sch_fq` where it is a
/// module). Where no namespace can be made, the module lists decide.
pub fn unavailable_reason() -> Option<String> {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    match fq_in_private_netns() {
        Ok(()) => None,
        Err(Probe::Refused(answer)) => Some(format!(
            "the fq qdisc is not available on kernel {release} (CONFIG_NET_SCH_FQ, module sch_fq): the kernel \
             refused an fq qdisc in a private network namespace: {answer}; latency needs fq to hold packets \
             until their departure time"
        )),
        Err(Probe::NotRun(why)) => {
            tracing::debug!(error = %why, "could not ask the kernel for fq; reading the module lists");
            modules_have_fq(&release)
        }
    }
}

enum Probe {
    /// The kernel refused the fq qdisc.
    Refused(String),
    /// The question could not be asked (no namespace, no socket).
    NotRun(String),
}

fn fq_in_private_netns() -> Result<(), Probe> {
    // unshare() moves only the calling thread; the namespace goes away with
    // the thread and the socket.
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| Probe::NotRun(format!("unshare(CLONE_NEWNET): {e}")))?;
        let mut rtnl = Rtnl::open().map_err(|e| Probe::NotRun(e.to_string()))?;
        // The loopback device is index 1 in every network namespace.
        rtnl.replace_fq(1, HANDLE, FQ_LIMIT, FQ_FLOW_LIMIT)
            .map_err(|e| Probe::Refused(e.to_string()))
    })
    .join()
    .unwrap_or_else(|_| Err(Probe::NotRun("the probe thread panicked".into())))
}

/// The fallback: sch_fq loaded, built in, or a module of this kernel.
fn modules_have_fq(release: &str) -> Option<String> {
    if Path::new("/sys/module/sch_fq").exists() {
        return None;
    }
    let dir = PathBuf::from("/lib/modules").join(release);
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

/// A handle as tc prints it: `fa17:`, `1:2`.
fn handle_text(handle: u32) -> String {
    match handle & 0xffff {
        0 => format!("{:x}:", handle >> 16),
        minor => format!("{:x}:{minor:x}", handle >> 16),
    }
}

/// The root qdisc of `ifindex`, for messages named `ifname`.
fn root_qdisc(rtnl: &mut Rtnl, ifindex: u32, ifname: &str) -> Result<Qdisc, String> {
    rtnl.root_qdisc(ifindex)
        .map_err(|e| format!("reading the root qdisc of {ifname}: {e}"))?
        .ok_or_else(|| format!("no root qdisc reported for {ifname}"))
}

/// Deletes the root qdisc of `ifindex` if it is still the agent's fq.
fn remove_own(ifindex: u32, ifname: &str) -> Result<bool, String> {
    let mut rtnl = Rtnl::open().map_err(|e| e.to_string())?;
    match root_qdisc(&mut rtnl, ifindex, ifname) {
        Ok(q) if q.kind == "fq" && q.handle == HANDLE => {
            rtnl.delete_root(ifindex)
                .map_err(|e| format!("deleting the root qdisc of {ifname}: {e}"))?;
            Ok(true)
        }
        // The interface is gone, or someone replaced our qdisc.
        _ => Ok(false),
    }
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
    /// The kernel refused, or could not be asked.
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
        if let Some(text) = crate::state::read_private(&record) {
            for ifname in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                // Recorded by name: an interface that is gone has no index.
                let Ok(ifindex) = nix::net::if_::if_nametoindex(ifname) else {
                    continue;
                };
                match remove_own(ifindex, ifname) {
                    Ok(true) => tracing::warn!(
                        interface = ifname,
                        "removed the fq qdisc a previous agent left behind"
                    ),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(interface = ifname, error = %e, "could not remove a stale fq qdisc");
                    }
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
        // 0600, never through a symlink, like every file in the state directory.
        if let Err(e) = crate::state::write_private(&self.record, text.as_bytes()) {
            tracing::warn!(file = %self.record.display(), error = %e, "recording fq interfaces failed");
        }
    }

    /// Makes sure `ifname` has an fq root qdisc while someone needs it.
    pub fn acquire(&mut self, ifindex: u32, ifname: &str) -> Result<(), QdiscError> {
        if let Some(e) = self.entries.get_mut(&ifindex) {
            e.users += 1;
            return Ok(());
        }
        let mut rtnl = Rtnl::open().map_err(|e| QdiscError::Failed(e.to_string()))?;
        let kind = root_qdisc(&mut rtnl, ifindex, ifname)
            .map_err(QdiscError::Failed)?
            .kind;
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
            if let Err(e) = rtnl.replace_fq(ifindex, HANDLE, FQ_LIMIT, FQ_FLOW_LIMIT) {
                self.entries.remove(&ifindex);
                self.save();
                return Err(QdiscError::Failed(format!(
                    "replacing the root qdisc of {ifname} ({kind}) by fq {}: {e}",
                    handle_text(HANDLE)
                )));
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
            if let Err(err) = remove_own(ifindex, &e.ifname) {
                tracing::warn!(interface = %e.ifname, error = %err, "removing the fq qdisc failed");
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

mod rtnl;
#[cfg(test)]
mod tests;
