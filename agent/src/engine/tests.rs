//! The engine against a fake kernel: all-or-nothing arming, rollback at
//! every position, reference counts.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use faultline_common::{FaultCounters, FaultSlot};
use faultline_proto::v1 as pb;

use super::*;
use crate::{
    domain::{HostResolver, spec_from_proto},
    kernel::{CounterSource, Mechanism, Probed, Reason, ScanList},
};

/// Records every call; fails the `fail_at`-th acquire (0-based), if set.
#[derive(Default)]
struct FakeKernel {
    written: BTreeMap<u32, FaultSlot>,
    /// Users of each shared resource (attachments, fq, watched syscalls).
    users: BTreeMap<Resource, usize>,
    /// (slot, list) pairs listed.
    listed: BTreeMap<(u32, ScanList), ()>,
    acquires: usize,
    fail_at: Option<usize>,
    refused: BTreeMap<Mechanism, Reason>,
    /// How long loading programs takes (`ensure`).
    load_time: Duration,
}

impl Probed for FakeKernel {
    fn reason(&self, m: Mechanism) -> Option<&Reason> {
        self.refused.get(&m)
    }
    fn fq_reason(&self) -> Option<&str> {
        None
    }
    fn sock_ops_reason(&self) -> Option<&Reason> {
        None
    }
    fn interface_via_cgroup_probed(&self) -> bool {
        false
    }
}

struct NoCounters;

impl CounterSource for NoCounters {
    fn read(&self, _: u32) -> Option<FaultCounters> {
        Some(FaultCounters::default())
    }
}

impl KernelOps for FakeKernel {
    fn ensure(&mut self, _: Mechanism) {
        std::thread::sleep(self.load_time);
    }

    fn write_fault(
        &mut self,
        slot: u32,
        f: &FaultSlot,
        _: &[(u32, u32)],
    ) -> Result<(), KernelError> {
        self.written.insert(slot, *f);
        Ok(())
    }

    fn clear_fault(&mut self, slot: u32) -> Result<(), KernelError> {
        self.written.remove(&slot);
        Ok(())
    }

    fn read_counters(&self, _: u32) -> Result<FaultCounters, KernelError> {
        Ok(FaultCounters::default())
    }

    fn acquire(&mut self, slot: u32, r: Resource) -> Result<(), KernelError> {
        let n = self.acquires;
        self.acquires += 1;
        if self.fail_at == Some(n) {
            return Err(KernelError::Unavailable {
                mechanism: "fake",
                reason: format!("acquire #{n} fails"),
            });
        }
        match r {
            Resource::Listed(list) => {
                self.listed.insert((slot, list), ());
            }
            other => *self.users.entry(other).or_default() += 1,
        }
        Ok(())
    }

    fn release(&mut self, slot: u32, r: Resource) {
        match r {
            Resource::Listed(list) => {
                self.listed.remove(&(slot, list));
            }
            other => {
                let n = self
                    .users
                    .get_mut(&other)
                    .expect("released what was never taken");
                *n -= 1;
                if *n == 0 {
                    self.users.remove(&other);
                }
            }
        }
    }

    fn set_slot_limit(&mut self, _: u32) -> Result<(), KernelError> {
        Ok(())
    }

    fn set_protected(&mut self, _: &[u32]) -> Result<(), KernelError> {
        Ok(())
    }

    fn refresh_ssh_ports(&mut self) -> Result<(), KernelError> {
        Ok(())
    }

    fn counter_source(&self) -> Arc<dyn CounterSource + Send + Sync> {
        Arc::new(NoCounters)
    }
}

fn policy() -> Policy {
    Policy {
        max_duration: Duration::from_secs(3600),
        protected_pids: Vec::new(),
        protected_comms: Vec::new(),
        agent_cgroup: None,
    }
}

/// Two faults on this process: a signal (watch + sys_enter) and a connect
/// error (cgroup sock_addr): four resources in all.
fn spec() -> ExperimentSpec {
    let wire = pb::ExperimentSpec {
        impact: 0,
        faults: vec![
            pb::FaultSpec {
                kind: Some(pb::fault_spec::Kind::SyscallSignal(pb::SyscallSignal {
                    syscall: "getppid".into(),
                    signal: "SIGSTOP".into(),
                    probability: 1.0,
                    nth_call: 0,
                })),
            },
            pb::FaultSpec {
                kind: Some(pb::fault_spec::Kind::SyscallError(pb::SyscallError {
                    syscall: "connect".into(),
                    errno: "ECONNREFUSED".into(),
                    probability: 1.0,
                    ..Default::default()
                })),
            },
        ],
        target: Some(pb::Target {
            comm: "fl-fake-target".into(),
            ..Default::default()
        }),
        duration_ms: 60_000,
        ..Default::default()
    };
    spec_from_proto(Some(&wire), &HostResolver).unwrap()
}

#[test]
fn arming_is_all_or_nothing_at_every_position() {
    // Resources in order: WatchSyscall, Attach(SysEnter), Attach(CgroupSockAddr).
    for fail_at in 0..3 {
        let kernel = FakeKernel {
            fail_at: Some(fail_at),
            ..FakeKernel::default()
        };
        let mut engine = Engine::new(kernel, policy());
        let err = engine.start(spec()).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("acquire #{fail_at} fails")),
            "{err}"
        );
        let k = engine.kernel();
        assert!(
            k.users.is_empty(),
            "fail at {fail_at}: still held {:?}",
            k.users
        );
        assert!(
            k.written.is_empty(),
            "fail at {fail_at}: slots left {:?}",
            k.written.keys()
        );
        assert!(k.listed.is_empty());
        assert!(engine.running_ids().is_empty());
        assert_eq!(
            engine.free.len(),
            MAX_FAULTS as usize,
            "every slot free again"
        );
    }
    let mut engine = Engine::new(FakeKernel::default(), policy());
    let id = engine.start(spec()).unwrap();
    assert_eq!(engine.kernel().users.len(), 3);
    assert_eq!(engine.kernel().written.len(), 2);
    let view = engine.view(&id).unwrap();
    assert_eq!(view.faults[0].mechanism, "raw_tracepoint");
    assert_eq!(view.faults[1].mechanism, "cgroup_sock_addr");
}

#[test]
fn shared_mechanisms_detach_with_their_last_user() {
    let mut engine = Engine::new(FakeKernel::default(), policy());
    let a = engine.start(spec()).unwrap();
    let b = engine.start(spec()).unwrap();
    let sys_enter = Resource::Attach(Mechanism::SysEnter);
    assert_eq!(engine.kernel().users[&sys_enter], 2);
    assert!(engine.finish(&a, State::Stopped, "t").unwrap());
    assert_eq!(engine.kernel().users[&sys_enter], 1, "b still needs it");
    assert!(
        !engine.finish(&a, State::Stopped, "t").unwrap(),
        "a ended already"
    );
    assert!(engine.finish(&b, State::Expired, "t").unwrap());
    assert!(
        engine.kernel().users.is_empty(),
        "{:?}",
        engine.kernel().users
    );
    assert!(engine.kernel().written.is_empty());
    assert_eq!(engine.view(&b).unwrap().state, State::Expired);
}

#[test]
fn a_refused_mechanism_names_the_fault_and_arms_nothing() {
    let kernel = FakeKernel {
        refused: [(
            Mechanism::CgroupSockAddr,
            Reason::NoCgroup2("no cgroup2 root".to_owned()),
        )]
        .into(),
        ..FakeKernel::default()
    };
    let mut engine = Engine::new(kernel, policy());
    let err = engine.start(spec()).unwrap_err();
    let EngineError::Spec(s) = err else {
        panic!("{err}")
    };
    assert_eq!(s.field, "spec.faults[1].syscall_error");
    assert!(
        s.reason
            .contains("cgroup_sock_addr is unavailable on this kernel: no cgroup2 root")
    );
    assert_eq!(
        engine.kernel().acquires,
        0,
        "refused before arming anything"
    );
}

#[test]
fn views_do_not_need_the_engine() {
    let engine = Arc::new(Mutex::new(Engine::new(FakeKernel::default(), policy())));
    let records = engine.lock().unwrap().records();
    let id = engine.lock().unwrap().start(spec()).unwrap();
    // Held as a slow start would hold it; the store still answers.
    let _busy = engine.lock().unwrap();
    let view = records.read().unwrap().view(&id, &NoCounters).unwrap();
    assert_eq!(view.state, State::Running);
    assert_eq!(records.read().unwrap().list(true, &NoCounters).len(), 1);
}

/// The deadline counts from arming, not from the request: loading the
/// programs first (seconds under emulation) does not eat the fault's time.
#[test]
fn the_deadline_counts_after_the_programs_load() {
    let kernel = FakeKernel {
        load_time: Duration::from_millis(100),
        ..FakeKernel::default()
    };
    let mut engine = Engine::new(kernel, policy());
    let spec = spec();
    let duration = spec.duration.as_nanos() as u64;
    let before = boottime_ns();
    engine.start(spec).unwrap();
    let after = boottime_ns();
    for slot in engine.kernel().written.values() {
        let from = slot.deadline_ns - duration;
        assert!(
            from >= before + 100_000_000 && from <= after,
            "the deadline counts from {} ms after the request",
            (from - before) / 1_000_000
        );
    }
}
