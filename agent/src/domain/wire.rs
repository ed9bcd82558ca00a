//! The wire (proto) form of an experiment spec and back: request syntax is
//! validated here, once, and every error names the field at fault. Policy
//! (protected targets, the duration cap, kernel support) is the engine's.

use std::{collections::BTreeMap, time::Duration};

use faultline_common::MAX_TARGET_PIDS;
use faultline_proto::v1 as pb;
use prost::Message as _;

use super::{ExperimentSpec, Resolver, SpecError, Target};
use crate::{
    faults::{self, FaultSpec},
    limits::{
        MAX_LABEL_KEY_BYTES, MAX_LABEL_VALUE_BYTES, MAX_LABELS, MAX_NAME_BYTES, MAX_SPEC_BYTES,
        clip,
    },
};

const MAX_FAULTS_PER_EXPERIMENT: usize = 16;

fn inv(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError::invalid(field, reason)
}

fn comm(field: &str, s: &str) -> Result<Option<String>, SpecError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if s.len() > 15 {
        return Err(inv(
            field,
            format!("{s:?} is longer than the kernel's 15-byte process name"),
        ));
    }
    Ok(Some(s.to_owned()))
}

fn pids(field: &str, list: &[u32]) -> Result<Vec<u32>, SpecError> {
    if list.len() > MAX_TARGET_PIDS {
        return Err(inv(
            field,
            format!("at most {MAX_TARGET_PIDS} pids, got {}", list.len()),
        ));
    }
    if let Some(i) = list.iter().position(|p| *p == 0) {
        return Err(inv(format!("{field}[{i}]"), "pid 0 is not a process"));
    }
    Ok(list.to_vec())
}

/// Each target pid must be a running user-space process (not a thread of
/// one, not a kernel thread); its start time is kept with it.
fn identities(field: &str, list: &[u32], r: &dyn Resolver) -> Result<Vec<u64>, SpecError> {
    let mut out = Vec::with_capacity(list.len());
    for (i, pid) in list.iter().enumerate() {
        let field = format!("{field}[{i}]");
        let p = r.process(*pid).map_err(|e| inv(&field, e))?;
        if p.tgid != *pid {
            return Err(inv(
                field,
                format!(
                    "{pid} is a thread of process {}: target the process (its tgid)",
                    p.tgid
                ),
            ));
        }
        if p.kernel_thread {
            return Err(SpecError::protected(
                field,
                format!("pid {pid} ({}) is a kernel thread", p.comm),
            ));
        }
        out.push(p.start);
    }
    Ok(out)
}

/// The target; `selector_required` is false when every fault applies to
/// the host as a whole by its own definition (`Fault::needs_no_target`).
fn target(
    t: Option<&pb::Target>,
    r: &dyn Resolver,
    selector_required: bool,
) -> Result<Target, SpecError> {
    let empty = pb::Target::default();
    let t = match t {
        Some(t) => t,
        None if !selector_required => &empty,
        None => {
            return Err(inv(
                "spec.target",
                "required: give pids, a cgroup or a comm",
            ));
        }
    };
    let cgroup = match t.cgroup.trim() {
        "" => None,
        path => Some(r.cgroup(path).map_err(|e| inv("spec.target.cgroup", e))?),
    };
    let interface = match t.interface.trim() {
        "" => None,
        name => Some(
            r.interface(name)
                .map_err(|e| inv("spec.target.interface", e))?,
        ),
    };
    let included = pids("spec.target.pids", &t.pids)?;
    let out = Target {
        pid_starts: identities("spec.target.pids", &included, r)?,
        pids: included,
        cgroup,
        allow_host_wide: t.allow_host_wide,
        comm: comm("spec.target.comm", &t.comm)?,
        exclude_pids: pids("spec.target.exclude_pids", &t.exclude_pids)?,
        exclude_comm: comm("spec.target.exclude_comm", &t.exclude_comm)?,
        interface,
    };
    if let Some(pid) = out.pids.iter().find(|p| out.exclude_pids.contains(p)) {
        return Err(inv(
            "spec.target.exclude_pids",
            format!("pid {pid} is both included and excluded"),
        ));
    }
    if out.interface.is_some() && out.cgroup.is_some() {
        return Err(inv(
            "spec.target.interface",
            "give either an interface or a cgroup, not both",
        ));
    }
    if selector_required
        && out.pids.is_empty()
        && out.cgroup.is_none()
        && out.comm.is_none()
        && out.interface.is_none()
    {
        return Err(inv(
            "spec.target",
            "no selector: give pids, a cgroup or a comm (a fault never applies to the whole host implicitly)",
        ));
    }
    Ok(out)
}

/// The size limits (`crate::limits`), before anything else is read: a
/// refusal names the field and the limit, and never quotes the value.
fn check_sizes(s: &pb::ExperimentSpec) -> Result<(), SpecError> {
    if s.name.len() > MAX_NAME_BYTES {
        return Err(inv(
            "spec.name",
            format!("at most {MAX_NAME_BYTES} bytes, got {}", s.name.len()),
        ));
    }
    if s.labels.len() > MAX_LABELS {
        return Err(inv(
            "spec.labels",
            format!("at most {MAX_LABELS} labels, got {}", s.labels.len()),
        ));
    }
    // In key order, so the field named is the same on every retry.
    let mut keys: Vec<&String> = s.labels.keys().collect();
    keys.sort();
    for k in keys {
        let shown = clip(k, MAX_LABEL_KEY_BYTES);
        if k.is_empty() || k.len() > MAX_LABEL_KEY_BYTES {
            return Err(inv(
                format!("spec.labels[{shown:?}]"),
                format!(
                    "a label key has 1 to {MAX_LABEL_KEY_BYTES} bytes, got {}",
                    k.len()
                ),
            ));
        }
        let v = &s.labels[k];
        if v.len() > MAX_LABEL_VALUE_BYTES {
            return Err(inv(
                format!("spec.labels[{shown:?}]"),
                format!(
                    "a label value has at most {MAX_LABEL_VALUE_BYTES} bytes, got {}",
                    v.len()
                ),
            ));
        }
    }
    // Last, so a long label or name is named as such.
    let encoded = s.encoded_len();
    if encoded > MAX_SPEC_BYTES {
        return Err(inv(
            "spec",
            format!("at most {MAX_SPEC_BYTES} bytes encoded, got {encoded}"),
        ));
    }
    Ok(())
}

/// Validates a request's spec.
pub fn spec_from_proto(
    spec: Option<&pb::ExperimentSpec>,
    resolver: &dyn Resolver,
) -> Result<ExperimentSpec, SpecError> {
    let s = spec.ok_or_else(|| inv("spec", "required"))?;
    if s.faults.is_empty() {
        return Err(inv("spec.faults", "at least one fault is required"));
    }
    if s.faults.len() > MAX_FAULTS_PER_EXPERIMENT {
        return Err(inv(
            "spec.faults",
            format!("at most {MAX_FAULTS_PER_EXPERIMENT} faults per experiment"),
        ));
    }
    if s.duration_ms == 0 {
        return Err(inv(
            "spec.duration_ms",
            "required: every experiment must be time-boxed",
        ));
    }
    check_sizes(s)?;
    let faults: Vec<FaultSpec> = s
        .faults
        .iter()
        .enumerate()
        .map(|(i, f)| faults::from_wire(i, f.kind.as_ref(), resolver))
        .collect::<Result<_, _>>()?;
    let selector_required = !faults.iter().all(|f| f.needs_no_target());
    let target = target(s.target.as_ref(), resolver, selector_required)?;
    let impact = match pb::ImpactMode::try_from(s.impact) {
        Ok(pb::ImpactMode::Default) => None,
        Ok(pb::ImpactMode::On) => Some(true),
        Ok(pb::ImpactMode::Off) => Some(false),
        Err(_) => {
            return Err(inv(
                "spec.impact",
                format!("unknown impact mode {}", s.impact),
            ));
        }
    };
    for (i, f) in faults.iter().enumerate() {
        f.check_target(&faults::field_of(i, f), &target)?;
    }
    Ok(ExperimentSpec {
        name: s.name.clone(),
        faults,
        target,
        duration: Duration::from_millis(s.duration_ms),
        dry_run: s.dry_run,
        labels: s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
        impact,
    })
}

/// The wire form of a validated spec (what `GetExperiment` reports).
pub fn spec_to_proto(s: &ExperimentSpec) -> pb::ExperimentSpec {
    let t = &s.target;
    pb::ExperimentSpec {
        name: s.name.clone(),
        faults: s
            .faults
            .iter()
            .map(|f| pb::FaultSpec {
                kind: Some(f.to_wire()),
            })
            .collect(),
        target: Some(pb::Target {
            pids: t.pids.clone(),
            cgroup: t
                .cgroup
                .as_ref()
                .map(|c| c.path.display().to_string())
                .unwrap_or_default(),
            comm: t.comm.clone().unwrap_or_default(),
            exclude_pids: t.exclude_pids.clone(),
            exclude_comm: t.exclude_comm.clone().unwrap_or_default(),
            interface: t
                .interface
                .as_ref()
                .map(|i| i.name.clone())
                .unwrap_or_default(),
            allow_host_wide: t.allow_host_wide,
        }),
        duration_ms: s.duration.as_millis() as u64,
        dry_run: s.dry_run,
        labels: s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        impact: match s.impact {
            None => pb::ImpactMode::Default,
            Some(true) => pb::ImpactMode::On,
            Some(false) => pb::ImpactMode::Off,
        } as i32,
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::HostResolver;

    fn base() -> pb::ExperimentSpec {
        pb::ExperimentSpec {
            name: "t".into(),
            faults: vec![pb::FaultSpec {
                kind: Some(pb::fault_spec::Kind::SyscallError(pb::SyscallError {
                    syscall: "connect".into(),
                    errno: "ECONNREFUSED".into(),
                    probability: 0.5,
                    port: 8080,
                    cidr: "127.0.0.0/8".into(),
                    path: String::new(),
                })),
            }],
            target: Some(pb::Target {
                pids: vec![std::process::id()],
                ..Default::default()
            }),
            duration_ms: 1000,
            ..Default::default()
        }
    }

    fn field_of(spec: pb::ExperimentSpec) -> String {
        spec_from_proto(Some(&spec), &HostResolver)
            .unwrap_err()
            .field
    }

    #[test]
    fn valid_spec_converts() {
        let s = spec_from_proto(Some(&base()), &HostResolver).unwrap();
        assert_eq!(s.duration, Duration::from_secs(1));
        assert_eq!(
            s.faults[0].summary(),
            "connect -> ECONNREFUSED p=0.5 port=8080 cidr=127.0.0.0/8"
        );
    }

    #[test]
    fn each_bad_field_is_named() {
        let with_err = |f: &dyn Fn(&mut pb::SyscallError)| {
            let mut s = base();
            if let Some(pb::fault_spec::Kind::SyscallError(e)) = &mut s.faults[0].kind {
                f(e);
            }
            field_of(s)
        };
        assert_eq!(
            with_err(&|e| e.errno = "EFOO".into()),
            "spec.faults[0].syscall_error.errno"
        );
        assert_eq!(
            with_err(&|e| e.syscall = "frob".into()),
            "spec.faults[0].syscall_error.syscall"
        );
        assert_eq!(
            with_err(&|e| e.probability = 1.5),
            "spec.faults[0].syscall_error.probability"
        );
        assert_eq!(
            with_err(&|e| e.port = 70000),
            "spec.faults[0].syscall_error.port"
        );
        assert_eq!(
            with_err(&|e| e.cidr = "10.0.0.0/40".into()),
            "spec.faults[0].syscall_error.cidr"
        );
        // Filters that do not apply to the call are refused, not ignored.
        assert_eq!(
            with_err(&|e| e.path = "/tmp".into()),
            "spec.faults[0].syscall_error.path"
        );
        let lsm = |e: &mut pb::SyscallError| {
            e.syscall = "openat".into();
            e.port = 0;
            e.cidr = String::new();
        };
        assert_eq!(
            with_err(&|e| {
                lsm(e);
                e.cidr = "10.0.0.0/8".into();
            }),
            "spec.faults[0].syscall_error.cidr"
        );
        assert_eq!(
            with_err(&|e| {
                lsm(e);
                e.port = 80;
            }),
            "spec.faults[0].syscall_error.port"
        );
        assert_eq!(
            with_err(&|e| {
                lsm(e);
                e.path = "relative/dir".into();
            }),
            "spec.faults[0].syscall_error.path"
        );
        assert_eq!(
            with_err(&|e| {
                lsm(e);
                e.path = "/no/such/faultline/dir".into();
            }),
            "spec.faults[0].syscall_error.path"
        );
        assert_eq!(
            with_err(&|e| {
                e.syscall = "fork".into();
                e.port = 0;
                e.cidr = String::new();
                e.path = "/tmp".into();
            }),
            "spec.faults[0].syscall_error.path"
        );

        let mut s = base();
        s.duration_ms = 0;
        assert_eq!(field_of(s), "spec.duration_ms");
        let mut s = base();
        s.target = Some(pb::Target::default());
        assert_eq!(field_of(s), "spec.target");
        let mut s = base();
        s.target = Some(pb::Target {
            cgroup: "/definitely/not/a/cgroup".into(),
            ..Default::default()
        });
        assert_eq!(field_of(s), "spec.target.cgroup");
        let mut s = base();
        s.target = Some(pb::Target {
            pids: vec![u32::MAX - 1],
            ..Default::default()
        });
        assert_eq!(field_of(s), "spec.target.pids[0]");
        let mut s = base();
        s.faults[0].kind = Some(pb::fault_spec::Kind::SyscallSignal(pb::SyscallSignal {
            syscall: "getpid".into(),
            signal: "NOTASIG".into(),
            ..Default::default()
        }));
        assert_eq!(field_of(s), "spec.faults[0].syscall_signal.signal");
    }

    /// A host where every name resolves (or none does), so validation is
    /// tested without root and without the names existing.
    pub(super) struct FakeHost {
        pub(super) exists: bool,
    }

    impl Resolver for FakeHost {
        fn cgroup(&self, path: &str) -> Result<crate::cgroup::Cgroup, String> {
            if !self.exists {
                return Err(format!("{path} does not exist"));
            }
            Ok(crate::cgroup::Cgroup {
                path: path.into(),
                id: 4242,
                level: 2,
            })
        }
        fn interface(&self, name: &str) -> Result<crate::domain::Interface, String> {
            if !self.exists {
                return Err(format!("no interface named {name:?} on this host"));
            }
            Ok(crate::domain::Interface {
                name: name.into(),
                ifindex: 7,
            })
        }
        fn path(&self, path: &str) -> Result<crate::domain::PathMatch, String> {
            if !self.exists {
                return Err(format!("{path}: No such file or directory"));
            }
            Ok(crate::domain::PathMatch {
                path: path.into(),
                ino: 1,
                kernel_dev: 2,
                generation: Some(3),
            })
        }
        fn process(&self, pid: u32) -> Result<super::super::Process, String> {
            if !self.exists {
                return Err(format!("no process with pid {pid}"));
            }
            Ok(super::super::Process {
                tgid: pid,
                start: 1,
                kernel_thread: false,
                comm: "fake".into(),
            })
        }
    }

    fn net_spec(kind: pb::fault_spec::Kind, target: pb::Target) -> pb::ExperimentSpec {
        pb::ExperimentSpec {
            faults: vec![pb::FaultSpec { kind: Some(kind) }],
            target: Some(target),
            duration_ms: 1000,
            ..Default::default()
        }
    }

    #[test]
    fn scope_rules_without_root() {
        let yes = FakeHost { exists: true };
        let no = FakeHost { exists: false };
        let iface = pb::Target {
            interface: "veth-x".into(),
            ..Default::default()
        };
        let cgroup = pb::Target {
            cgroup: "/app".into(),
            ..Default::default()
        };
        let dup = pb::fault_spec::Kind::Duplicate(pb::Duplicate {
            probability: 0.5,
            ..Default::default()
        });
        let s = spec_from_proto(Some(&net_spec(dup.clone(), iface.clone())), &yes).unwrap();
        assert_eq!(s.target.interface.as_ref().unwrap().ifindex, 7);
        assert_eq!(s.faults[0].kind(), "duplicate");
        let err = spec_from_proto(Some(&net_spec(dup.clone(), cgroup.clone())), &yes).unwrap_err();
        assert_eq!(err.field, "spec.faults[0].duplicate");
        assert!(err.reason.contains("needs an interface scope"), "{err}");
        let err = spec_from_proto(Some(&net_spec(dup, iface.clone())), &no).unwrap_err();
        assert_eq!(err.field, "spec.target.interface");
        let answer = pb::fault_spec::Kind::DnsError(pb::DnsError {
            failure: pb::DnsFailure::Servfail.into(),
            probability: 1.0,
            ..Default::default()
        });
        let err = spec_from_proto(Some(&net_spec(answer, cgroup)), &yes).unwrap_err();
        assert_eq!(err.field, "spec.faults[0].dns_error.failure");
        let signal = pb::fault_spec::Kind::SyscallSignal(pb::SyscallSignal {
            syscall: "getpid".into(),
            signal: "SIGKILL".into(),
            probability: 1.0,
            nth_call: 0,
        });
        let err = spec_from_proto(Some(&net_spec(signal, iface)), &yes).unwrap_err();
        assert_eq!(err.field, "spec.target.interface");
    }

    /// Every kind goes wire -> domain -> wire unchanged (once normalised),
    /// from each kind's own example.
    #[test]
    fn every_kind_round_trips() {
        let examples = faults::examples();
        assert_eq!(examples.len(), faults::KINDS.len());
        let yes = FakeHost { exists: true };
        for (kind, target) in examples {
            let wire = net_spec(kind, target);
            let domain = spec_from_proto(Some(&wire), &yes).unwrap();
            let back = spec_to_proto(&domain);
            assert_eq!(back.faults, wire.faults);
            let again = spec_from_proto(Some(&back), &yes).unwrap();
            assert_eq!(again, domain);
        }
    }
}
