//! What this kernel can do: each fault kind's rows, from what loading its
//! programs found.

use crate::{
    faults,
    kernel::{Group, Kernel, Mechanism, Probed},
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capability {
    pub fault_kind: &'static str,
    pub mechanism: &'static str,
    pub covers: Vec<String>,
    pub supported: bool,
    pub reason: String,
}

impl Capability {
    /// A row for `kind` on mechanism `m`, supported unless `m` was refused.
    pub fn row(kernel: &dyn Probed, kind: &'static str, m: Mechanism, covers: &[&str]) -> Self {
        Self::new(kind, m.name(), covers, kernel.reason(m))
    }

    /// A row under a name of its own (`tcx+fq`, `sock_ops`, …), supported
    /// unless `reason`.
    pub fn new(
        kind: &'static str,
        mechanism: &'static str,
        covers: &[&str],
        reason: Option<impl std::fmt::Display>,
    ) -> Self {
        Self {
            fault_kind: kind,
            mechanism,
            covers: covers.iter().map(|s| (*s).to_owned()).collect(),
            supported: reason.is_none(),
            reason: reason.map(|r| r.to_string()).unwrap_or_default(),
        }
    }

    /// The same row, unsupported for `reason` unless already unsupported.
    #[must_use]
    pub fn unless(mut self, reason: Option<impl std::fmt::Display>) -> Self {
        if let (true, Some(r)) = (self.supported, reason) {
            self.supported = false;
            self.reason = r.to_string();
        }
        self
    }
}

/// Every row, or only those of the `only` mechanisms; loads the programs
/// the answer needs that the agent has not probed yet.
pub fn probe(kernel: &mut Kernel, only: &[String]) -> Vec<Capability> {
    if only.is_empty() {
        for g in Group::ALL {
            kernel.probe(g);
        }
    } else {
        for g in only.iter().filter_map(|m| Group::of_name(m)) {
            kernel.probe(g);
        }
    }
    let mut caps = faults::capabilities(kernel);
    if only.is_empty() {
        crate::metrics::mechanisms_probed(&caps);
    } else {
        caps.retain(|c| only.iter().any(|m| m == c.mechanism));
    }
    caps
}
