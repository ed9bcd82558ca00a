//! `io_pressure`: a stressor child of the agent (`stress::io`) reads
//! and/or writes a file of its own in a directory at a target throughput,
//! synced per chunk or `O_DIRECT`. Given a cgroup, the child lives there
//! (and in the target's v1 `blkio` cgroup on a hybrid host), so its IO is
//! charged to it. The child dies with the agent (`PR_SET_PDEATHSIG`); its
//! file and any cgroup made for it are in the undo journal.

use std::{
    path::PathBuf,
    process::Child,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use faultline_proto::v1 as pb;

use super::{
    Fault, FaultKind, Plan,
    disk_fill::{absolute_path, existing_dir},
};
use crate::{
    caps::Capability,
    cgroup::Cgroup,
    domain::{Resolver, SpecError, Target},
    kernel::{KernelOps, Probed},
    stress::{
        fill::Space,
        io::{IoMode, IoSpec, ROLE, RateMeter, chunk_for, io_path, proc_io_bytes},
    },
    worker::{
        Journal, Metric, Report, Undo, Worker, WorkerEnv, journal::Entry, placement,
        placement::Placement, spawn::spawn_child,
    },
};

const MECHANISM: &str = "stressor process";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoPressure {
    pub path: PathBuf,
    pub mode: IoMode,
    pub rate: u64,
    pub direct: bool,
}

impl FaultKind for IoPressure {
    const NAME: &'static str = faultline_proto::names::IO_PRESSURE;
    type Wire = pb::IoPressure;

    fn from_wire(field: &str, w: &pb::IoPressure, _: &dyn Resolver) -> Result<Self, SpecError> {
        let mode = match pb::IoMode::try_from(w.mode) {
            Ok(pb::IoMode::Unspecified | pb::IoMode::Write) => IoMode::Write,
            Ok(pb::IoMode::Read) => IoMode::Read,
            Ok(pb::IoMode::Mixed) => IoMode::Mixed,
            Err(_) => {
                return Err(SpecError::invalid(
                    format!("{field}.mode"),
                    format!("unknown I/O mode {}", w.mode),
                ));
            }
        };
        if w.rate_bytes_per_sec == 0 {
            return Err(SpecError::invalid(
                format!("{field}.rate_bytes_per_sec"),
                "the throughput must be above 0",
            ));
        }
        Ok(Self {
            path: absolute_path(field, &w.path)?,
            mode,
            rate: w.rate_bytes_per_sec,
            direct: w.direct,
        })
    }

    fn capabilities(_: &dyn Probed) -> Vec<Capability> {
        vec![Capability::new(
            Self::NAME,
            MECHANISM,
            &["write", "read", "mixed", "direct"],
            None::<String>,
        )]
    }

    #[cfg(test)]
    fn example() -> (pb::IoPressure, pb::Target) {
        let wire = pb::IoPressure {
            path: "/mnt/data".into(),
            mode: pb::IoMode::Mixed.into(),
            rate_bytes_per_sec: 50 << 20,
            direct: true,
        };
        let target = pb::Target {
            cgroup: "/sys/fs/cgroup/app".into(),
            ..Default::default()
        };
        (wire, target)
    }
}

impl Fault for IoPressure {
    fn summary(&self) -> String {
        let mode = match self.mode {
            IoMode::Write => "write",
            IoMode::Read => "read",
            IoMode::Mixed => "mixed",
        };
        let how = if self.direct { "direct" } else { "sync" };
        format!("{mode} {} B/s ({how}) in {}", self.rate, self.path.display())
    }

    fn check_target(&self, _: &str, target: &Target) -> Result<(), SpecError> {
        // Charged to a cgroup, or to no one: processes cannot be charged.
        super::only_selectors(
            target,
            &["cgroup"],
            "io_pressure is charged to a cgroup or runs on the host; it takes no other selector",
        )
    }

    fn plan(&self, _: &str, _: &Target, _: &mut dyn KernelOps) -> Result<Plan, SpecError> {
        Ok(Plan::agent_side())
    }

    fn needs_no_target(&self) -> bool {
        true
    }

    fn impact_by_default(&self) -> bool {
        true
    }

    fn worker(&self, field: &str, target: &Target, env: &WorkerEnv) -> Result<Option<Box<dyn Worker>>, SpecError> {
        let dir = existing_dir(field, &self.path)?;
        let space = Space::of(&dir).map_err(|e| SpecError::unsupported(format!("{field}.path"), e.to_string()))?;
        // The stressor cycles through a file of up to a quarter of the
        // free space, at least four chunks.
        let need = 16 * chunk_for(self.rate);
        if space.free < need {
            return Err(SpecError::unsupported(
                format!("{field}.path"),
                format!("{} bytes free; the stressor needs {need}", space.free),
            ));
        }
        let spec = IoSpec {
            dir,
            token: env.token.clone(),
            mode: self.mode,
            rate: self.rate,
            direct: self.direct,
        };
        Ok(Some(Box::new(IoWorker {
            spec,
            cgroup: target.cgroup.clone(),
            journal: env.journal.clone(),
            dry_run: env.dry_run,
            state: Mutex::default(),
        })))
    }

    fn to_wire(&self) -> pb::fault_spec::Kind {
        let mode = match self.mode {
            IoMode::Write => pb::IoMode::Write,
            IoMode::Read => pb::IoMode::Read,
            IoMode::Mixed => pb::IoMode::Mixed,
        };
        pb::fault_spec::Kind::IoPressure(pb::IoPressure {
            path: self.path.to_string_lossy().into_owned(),
            mode: mode.into(),
            rate_bytes_per_sec: self.rate,
            direct: self.direct,
        })
    }
}

#[derive(Debug)]
struct IoWorker {
    spec: IoSpec,
    cgroup: Option<Cgroup>,
    journal: Arc<Journal>,
    dry_run: bool,
    state: Mutex<IoState>,
}

#[derive(Debug, Default)]
struct IoState {
    child: Option<Child>,
    pid: u32,
    placement: Placement,
    entries: Vec<Entry>,
    meter: RateMeter,
    /// How the child ended by itself, if it did.
    exited: Option<String>,
}

impl IoWorker {
    fn lock(&self) -> std::sync::MutexGuard<'_, IoState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn launch(&self, st: &mut IoState) -> Result<(), String> {
        let file = io_path(&self.spec.dir, &self.spec.token);
        let entry = self
            .journal
            .record(Undo::RemoveFile { path: file })
            .map_err(|e| format!("cannot record the stressor's file in the undo journal: {e}"))?;
        st.entries.push(entry);
        if let Some(cg) = &self.cgroup {
            st.placement = placement::place(cg, &["blkio"], &self.spec.token)?;
            for dir in &st.placement.created {
                let entry = self
                    .journal
                    .record(Undo::RemoveCgroup { dir: dir.clone() })
                    .map_err(|e| format!("cannot record the stressor's cgroup: {e}"))?;
                st.entries.push(entry);
            }
        }
        let arg = serde_json::to_string(&self.spec).map_err(|e| e.to_string())?;
        let child = spawn_child(ROLE, &arg, &st.placement.join, None).map_err(|e| format!("cannot start the stressor: {e}"))?;
        st.pid = child.id();
        st.child = Some(child);
        st.meter.sample(Instant::now(), 0);
        Ok(())
    }
}

/// Ends the child: SIGTERM (it removes its file), SIGKILL after 2 s.
fn end(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
        let until = Instant::now() + Duration::from_secs(2);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Worker for IoWorker {
    fn mechanism(&self) -> &'static str {
        MECHANISM
    }

    fn start(&self) -> Result<(), String> {
        if self.dry_run {
            return Ok(());
        }
        let mut st = self.lock();
        let res = self.launch(&mut st);
        if res.is_err() {
            drop(st);
            self.stop();
        }
        res
    }

    fn stop(&self) {
        let mut st = self.lock();
        if let Some(mut child) = st.child.take() {
            if let Ok(total) = proc_io_bytes(child.id()) {
                st.meter.sample(Instant::now(), total);
            }
            end(&mut child);
        }
        st.placement.remove();
        for entry in std::mem::take(&mut st.entries) {
            // The child removes its file when told to stop; not when killed.
            if let Err(e) = entry.undo.apply() {
                tracing::warn!(error = %e, "io_pressure clean-up failed");
            }
            entry.done();
        }
    }

    #[expect(clippy::cast_precision_loss, reason = "byte counts shown as metrics")]
    fn report(&self) -> Report {
        let mut st = self.lock();
        let st = &mut *st;
        if let Some(child) = &mut st.child {
            match child.try_wait() {
                Ok(None) => {
                    if let Ok(total) = proc_io_bytes(st.pid) {
                        st.meter.sample(Instant::now(), total);
                    }
                }
                Ok(Some(status)) => {
                    st.exited = Some(format!("the io stressor exited by itself ({status}); the agent's log has its error"));
                    st.child = None;
                }
                Err(e) => st.exited = Some(format!("cannot wait for the io stressor: {e}")),
            }
        }
        Report {
            metrics: vec![
                Metric::new("achieved_bytes_per_sec", st.meter.per_sec(), "bytes/s"),
                Metric::new("bytes_total", st.meter.total() as f64, "bytes"),
            ],
            failure: st.exited.clone(),
            ..Report::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoResolver;
    impl Resolver for NoResolver {
        fn cgroup(&self, _: &str) -> Result<Cgroup, String> {
            Err("none".into())
        }
        fn interface(&self, _: &str) -> Result<crate::domain::Interface, String> {
            Err("none".into())
        }
        fn path(&self, _: &str) -> Result<crate::domain::PathMatch, String> {
            Err("none".into())
        }
        fn process(&self, _: u32) -> Result<crate::domain::Process, String> {
            Err("none".into())
        }
    }

    #[test]
    fn rate_path_and_mode_are_checked() {
        let ok = pb::IoPressure {
            path: "/d".into(),
            mode: 0,
            rate_bytes_per_sec: 1,
            direct: false,
        };
        assert_eq!(IoPressure::from_wire("f", &ok, &NoResolver).map(|f| f.mode), Ok(IoMode::Write));
        let e = |w: pb::IoPressure| IoPressure::from_wire("f", &w, &NoResolver).unwrap_err().field;
        assert_eq!(e(pb::IoPressure { rate_bytes_per_sec: 0, ..ok.clone() }), "f.rate_bytes_per_sec");
        assert_eq!(e(pb::IoPressure { mode: 9, ..ok.clone() }), "f.mode");
        assert_eq!(e(pb::IoPressure { path: "d".into(), ..ok }), "f.path");
    }
}
