//! `disk_fill`: the agent `fallocate`s a file of its own in a directory
//! until the filesystem has the requested free space (or by a size). The
//! file is in the undo journal before it exists, so it goes on stop, when
//! the agent dies (the reaper) and at the next start.
//!
//! The floor (the larger of 5 % and 512 MiB stays free) guards `/`, the
//! agent's state directory and tmpfs: a request below it is refused up
//! front, and if other writers push such a filesystem below it while the
//! fault runs, the fill gives space back.

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
    time::SystemTime,
};

use faultline_proto::v1 as pb;

use super::{Fault, FaultKind, Plan};
use crate::{
    caps::Capability,
    domain::{Resolver, SpecError, Target},
    kernel::{KernelOps, Probed},
    stress::fill::{FillFile, Goal, Space, bytes_to_fill, fill_path, protected_filesystem},
    worker::{Action, Journal, Metric, Report, Undo, Worker, WorkerEnv, journal::Entry},
};

const MECHANISM: &str = "fill file";

#[derive(Clone, Debug, PartialEq)]
pub struct DiskFill {
    pub path: PathBuf,
    pub goal: Goal,
}

/// An absolute path on the wire, checked for shape only: whether it is a
/// directory is the host's business, asked when the fault is planned.
pub(super) fn absolute_path(field: &str, path: &str) -> Result<PathBuf, SpecError> {
    let field = format!("{field}.path");
    if path.is_empty() {
        return Err(SpecError::invalid(field, "a directory is required"));
    }
    if !path.starts_with('/') {
        return Err(SpecError::invalid(field, format!("{path:?} is not an absolute path")));
    }
    Ok(PathBuf::from(path))
}

/// The directory itself (symlinks resolved), or why it cannot be used.
pub(super) fn existing_dir(field: &str, path: &Path) -> Result<PathBuf, SpecError> {
    let field = format!("{field}.path");
    let shown = faultline_proto::text::escape_controls(&path.to_string_lossy()).into_owned();
    let dir = path
        .canonicalize()
        .map_err(|e| SpecError::invalid(&field, format!("{shown}: {e}")))?;
    if !dir.is_dir() {
        return Err(SpecError::invalid(field, format!("{shown} is not a directory")));
    }
    Ok(dir)
}

/// Which of the three amounts is set, named as on the wire.
fn goal(field: &str, w: &pb::DiskFill) -> Result<(Goal, &'static str), SpecError> {
    let mut set: Vec<(Goal, &'static str)> = Vec::new();
    if w.free_bytes != 0 {
        set.push((Goal::Free(w.free_bytes), "free_bytes"));
    }
    if w.free_percent != 0.0 {
        set.push((Goal::FreePercent(w.free_percent), "free_percent"));
    }
    if w.size_bytes != 0 {
        set.push((Goal::Size(w.size_bytes), "size_bytes"));
    }
    match set.as_slice() {
        [] => Err(SpecError::invalid(
            field,
            "needs one of free_bytes, free_percent or size_bytes",
        )),
        [(Goal::FreePercent(p), name)] if !(p.is_finite() && *p > 0.0 && *p < 100.0) => Err(
            SpecError::invalid(format!("{field}.{name}"), format!("{p} is not a percentage in (0, 100)")),
        ),
        [one] => Ok(*one),
        [(_, first), (_, second), ..] => Err(SpecError::invalid(
            format!("{field}.{second}"),
            format!("set together with {first}; give exactly one of free_bytes, free_percent and size_bytes"),
        )),
    }
}

fn goal_field(goal: Goal) -> &'static str {
    match goal {
        Goal::Free(_) => "free_bytes",
        Goal::FreePercent(_) => "free_percent",
        Goal::Size(_) => "size_bytes",
    }
}

impl FaultKind for DiskFill {
    const NAME: &'static str = faultline_proto::names::DISK_FILL;
    type Wire = pb::DiskFill;

    fn from_wire(field: &str, w: &pb::DiskFill, _: &dyn Resolver) -> Result<Self, SpecError> {
        Ok(Self {
            path: absolute_path(field, &w.path)?,
            goal: goal(field, w)?.0,
        })
    }

    fn capabilities(_: &dyn Probed) -> Vec<Capability> {
        vec![Capability::new(
            Self::NAME,
            MECHANISM,
            &["free_bytes", "free_percent", "size_bytes"],
            None::<String>,
        )]
    }

    #[cfg(test)]
    fn example() -> (pb::DiskFill, pb::Target) {
        let wire = pb::DiskFill {
            path: "/mnt/data".into(),
            free_bytes: 1 << 30,
            ..Default::default()
        };
        (wire, pb::Target::default())
    }
}

impl Fault for DiskFill {
    fn summary(&self) -> String {
        let amount = match self.goal {
            Goal::Free(b) => format!("until {b} bytes are free"),
            Goal::FreePercent(p) => format!("until {p} % is free"),
            Goal::Size(b) => format!("by {b} bytes"),
        };
        format!("fill {} {amount}", self.path.display())
    }

    fn check_target(&self, _: &str, target: &Target) -> Result<(), SpecError> {
        // The filesystem is the target; a selector would mean nothing.
        super::only_selectors(
            target,
            &[],
            "disk_fill fills a filesystem and takes no target selector",
        )
    }

    fn plan(&self, _: &str, _: &Target, _: &mut dyn KernelOps) -> Result<Plan, SpecError> {
        Ok(Plan::agent_side())
    }

    fn needs_no_target(&self) -> bool {
        true
    }

    fn worker(&self, field: &str, _: &Target, env: &WorkerEnv) -> Result<Option<Box<dyn Worker>>, SpecError> {
        let dir = existing_dir(field, &self.path)?;
        let host = |e: std::io::Error| SpecError::unsupported(format!("{field}.path"), e.to_string());
        let protected = protected_filesystem(&dir, &env.state_dir).map_err(host)?;
        let space = Space::of(&dir).map_err(host)?;
        let amount = format!("{field}.{}", goal_field(self.goal));
        let bytes = bytes_to_fill(self.goal, space, protected).map_err(|e| SpecError::unsupported(amount, e.to_string()))?;
        Ok(Some(Box::new(FillWorker {
            path: fill_path(&dir, &env.token),
            goal: self.goal,
            protected,
            journal: env.journal.clone(),
            dry_run: env.dry_run,
            planned: bytes,
            state: Mutex::default(),
        })))
    }

    fn to_wire(&self) -> pb::fault_spec::Kind {
        let mut w = pb::DiskFill {
            path: self.path.to_string_lossy().into_owned(),
            ..Default::default()
        };
        match self.goal {
            Goal::Free(b) => w.free_bytes = b,
            Goal::FreePercent(p) => w.free_percent = p,
            Goal::Size(b) => w.size_bytes = b,
        }
        pb::fault_spec::Kind::DiskFill(w)
    }
}

#[derive(Debug)]
struct FillWorker {
    path: PathBuf,
    goal: Goal,
    protected: Option<&'static str>,
    journal: std::sync::Arc<Journal>,
    dry_run: bool,
    /// Bytes the plan said it would allocate.
    planned: u64,
    state: Mutex<FillState>,
}

#[derive(Debug, Default)]
struct FillState {
    file: Option<FillFile>,
    entry: Option<Entry>,
    /// Free space when stopped, for the final report.
    last_free: Option<u64>,
    actions: Vec<Action>,
}

impl FillWorker {
    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("/"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FillState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Worker for FillWorker {
    fn mechanism(&self) -> &'static str {
        MECHANISM
    }

    fn start(&self) -> Result<(), String> {
        if self.dry_run {
            return Ok(());
        }
        let mut st = self.lock();
        // Recorded before the file exists: whoever finds the record removes it.
        let entry = self
            .journal
            .record(Undo::RemoveFile { path: self.path.clone() })
            .map_err(|e| format!("cannot record the fill file in the undo journal: {e}"))?;
        match FillFile::create(&self.path, self.goal, self.protected) {
            Ok(file) => {
                st.file = Some(file);
                st.entry = Some(entry);
                Ok(())
            }
            Err(e) => {
                entry.done();
                Err(format!("{}: {e}", self.path.display()))
            }
        }
    }

    fn stop(&self) {
        let mut st = self.lock();
        if let Some(file) = st.file.take() {
            file.remove();
            drop(file);
            st.last_free = Space::of(self.dir()).ok().map(|s| s.free);
        }
        if let Some(entry) = st.entry.take() {
            entry.done();
        }
    }

    #[expect(clippy::cast_precision_loss, reason = "byte counts shown as metrics")]
    fn report(&self) -> Report {
        let mut st = self.lock();
        let st = &mut *st;
        let (fill, free) = match &mut st.file {
            Some(file) => {
                let space = file.space_now().unwrap_or(Space { total: 0, free: 0 });
                let mut free = space.free;
                // Others wrote to a protected filesystem: give back what
                // brings it to its floor again (a cheap truncate).
                if self.protected.is_some() && space.total > 0 && space.free < space.floor() && !file.is_empty() {
                    let back = (space.floor() - space.free).min(file.len());
                    if file.shrink(back).is_ok() {
                        st.actions.push(Action {
                            at: SystemTime::now(),
                            pid: 0,
                            comm: String::new(),
                            what: format!("gave back {back} bytes: free space fell below the floor"),
                        });
                        free = file.space_now().map_or(free, |s| s.free);
                    }
                }
                (file.len(), free)
            }
            // Not started (a dry run) or stopped: the free space now.
            None => (0, st.last_free.or_else(|| Space::of(self.dir()).ok().map(|s| s.free)).unwrap_or(0)),
        };
        let mut metrics = vec![
            Metric::new("fill_bytes", fill as f64, "bytes"),
            Metric::new("free_bytes", free as f64, "bytes"),
        ];
        if self.dry_run {
            metrics.push(Metric::new("planned_fill_bytes", self.planned as f64, "bytes"));
        }
        Report {
            metrics,
            actions: st.actions.clone(),
            ..Report::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(free: u64, pct: f64, size: u64) -> pb::DiskFill {
        pb::DiskFill {
            path: "/d".into(),
            free_bytes: free,
            free_percent: pct,
            size_bytes: size,
        }
    }

    #[test]
    fn exactly_one_amount_named_on_the_wire() {
        assert_eq!(goal("f", &wire(5, 0.0, 0)).map(|g| g.0), Ok(Goal::Free(5)));
        assert_eq!(goal("f", &wire(0, 0.0, 0)).unwrap_err().field, "f");
        assert_eq!(goal("f", &wire(5, 0.0, 7)).unwrap_err().field, "f.size_bytes");
        assert_eq!(goal("f", &wire(0, 3.0, 7)).unwrap_err().field, "f.size_bytes");
        assert_eq!(goal("f", &wire(0, 100.0, 0)).unwrap_err().field, "f.free_percent");
        assert_eq!(goal("f", &wire(0, f64::NAN, 0)).unwrap_err().field, "f.free_percent");
    }

    #[test]
    fn paths_must_be_absolute() {
        assert_eq!(absolute_path("f", "").unwrap_err().field, "f.path");
        assert_eq!(absolute_path("f", "tmp").unwrap_err().field, "f.path");
        assert!(absolute_path("f", "/tmp").is_ok());
        assert_eq!(existing_dir("f", Path::new("/nonexistent-faultline")).unwrap_err().field, "f.path");
        assert_eq!(existing_dir("f", Path::new("/proc/self/stat")).unwrap_err().field, "f.path");
    }
}
