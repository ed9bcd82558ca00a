//! What the kernel programs never fault, whatever a slot says: protected
//! pids and names, kernel threads, the agent's cgroup; and the clean-up
//! that takes a target pid out of the maps when its process exits.

use std::collections::BTreeSet;

use aya::{maps::lpm_trie::Key, programs::RawTracePoint};
use faultline_common::{COMM_LEN, MAX_PROTECTED_NAMES, MAX_PROTECTED_PIDS};

use super::{Kernel, KernelError, catalogue::program, verifier::chain};
use crate::{cgroup::Cgroup, domain::ProtectedName};

pub(super) const EXIT_PROGRAM: &str = "fl_process_exit";

/// The `sched_process_exit` program, attached while any slot lists pids or
/// counts calls per process (`holders`).
pub(super) struct ExitWatch {
    unavailable: Option<String>,
    holders: BTreeSet<u32>,
    link: Option<Box<dyn std::any::Any + Send>>,
}

impl ExitWatch {
    /// Loads the program (one short loop: the verifier takes it at once on
    /// every kernel); a refusal makes pid targets unavailable, with the reason.
    pub(super) fn load(ebpf: &mut aya::Ebpf) -> Self {
        let unavailable = program::<RawTracePoint>(ebpf, EXIT_PROGRAM)
            .and_then(RawTracePoint::load)
            .err()
            .map(|e| chain(&e));
        Self {
            unavailable,
            holders: BTreeSet::new(),
            link: None,
        }
    }
}

/// Kernel identity facts the programs need for the protections above.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Identity {
    pub task_flags_offset: u32,
    pub agent_cgroup_id: u64,
    pub agent_cgroup_level: u32,
}

impl Kernel {
    /// Replaces the in-kernel set of protected processes.
    pub fn set_protected(&mut self, pids: &[u32]) -> Result<(), KernelError> {
        if pids.len() > MAX_PROTECTED_PIDS as usize {
            return Err(KernelError::ListFull(MAX_PROTECTED_PIDS, "protected pid"));
        }
        let old: Vec<u32> = self.protected.keys().filter_map(Result::ok).collect();
        for p in old.iter().filter(|p| !pids.contains(p)) {
            let _ = self.protected.remove(p);
        }
        for p in pids {
            self.protected
                .insert(p, 1, 0)
                .map_err(Self::map_err("FL_PROTECTED"))?;
        }
        Ok(())
    }

    /// Sets the process names (exact, or prefixes) that are never faulted.
    pub fn set_protected_comms(&mut self, names: &[ProtectedName]) -> Result<(), KernelError> {
        if names.len() > MAX_PROTECTED_NAMES as usize {
            return Err(KernelError::ListFull(MAX_PROTECTED_NAMES, "protected name"));
        }
        for n in names {
            let (bits, data) = n.kernel_key();
            self.protected_comms
                .insert(&Key::new(bits, data), 1, 0)
                .map_err(Self::map_err("FL_PROT_COMMS"))?;
        }
        Ok(())
    }

    /// Tells the programs where `task_struct.flags` is (from the kernel's
    /// BTF; kernel threads are skipped only when known) and which cgroup is
    /// the agent's.
    pub fn set_identity(
        &mut self,
        task_flags_offset: Option<u32>,
        agent_cgroup: Option<&Cgroup>,
    ) -> Result<(), KernelError> {
        self.identity = Identity {
            task_flags_offset: task_flags_offset.unwrap_or(0),
            agent_cgroup_id: agent_cgroup.map_or(0, |c| c.id),
            agent_cgroup_level: agent_cgroup.map_or(0, |c| c.level),
        };
        self.set_slot_limit(self.slot_limit)
    }

    /// Slot `index` lists pids or counts calls: keep the exit clean-up
    /// attached (before its entries are written).
    pub(super) fn hold_exit_watch(&mut self, index: u32) -> Result<(), KernelError> {
        if let Some(reason) = &self.exit_watch.unavailable {
            return Err(KernelError::Unavailable {
                mechanism: "raw_tracepoint sched_process_exit",
                reason: reason.clone(),
            });
        }
        if self.exit_watch.link.is_none() {
            let failed = |source| KernelError::Attach {
                program: EXIT_PROGRAM,
                source,
            };
            let p = program::<RawTracePoint>(&mut self.ebpf, EXIT_PROGRAM).map_err(failed)?;
            let id = p.attach("sched_process_exit").map_err(failed)?;
            let link = p.take_link(id).map_err(failed)?;
            self.exit_watch.link = Some(Box::new(link));
        }
        self.exit_watch.holders.insert(index);
        Ok(())
    }

    pub(super) fn release_exit_watch(&mut self, index: u32) {
        self.exit_watch.holders.remove(&index);
        if self.exit_watch.holders.is_empty() {
            self.exit_watch.link = None;
        }
    }
}

/// The kernel's comm is at most 15 bytes and NUL-terminated.
const _: () = assert!(COMM_LEN == 16);
