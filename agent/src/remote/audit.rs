//! The audit log: one JSON line per mutating call and per refusal, in a
//! file only the agent can read (0600, rotated by size) and in tracing.

use std::{
    fs::File,
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use serde::Serialize;
use tonic::Status;

use crate::grpc::caller::Caller;

/// Rotated at this size into `.1`, `.2` (older ones dropped): 3 files.
pub const MAX_BYTES: u64 = 16 << 20;
pub const KEEP: usize = 2;

#[derive(Serialize)]
struct Entry<'a> {
    time: String,
    identity: &'a str,
    peer: &'a str,
    method: &'a str,
    experiment_id: &'a str,
    spec_summary: &'a str,
    outcome: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
}

struct Sink {
    file: Option<File>,
    size: u64,
}

pub struct Audit {
    path: Option<PathBuf>,
    max_bytes: u64,
    sink: Mutex<Sink>,
}

fn open(path: &Path) -> std::io::Result<(File, u64)> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let size = f.metadata()?.len();
    Ok((f, size))
}

impl Audit {
    /// Opens (creates 0600) the log at `path`.
    pub fn open(path: &Path, max_bytes: u64) -> std::io::Result<Self> {
        let (file, size) = open(path)?;
        Ok(Self {
            path: Some(path.to_owned()),
            max_bytes,
            sink: Mutex::new(Sink {
                file: Some(file),
                size,
            }),
        })
    }

    /// Tracing only (unit tests).
    pub fn tracing_only() -> Self {
        Self {
            path: None,
            max_bytes: MAX_BYTES,
            sink: Mutex::new(Sink {
                file: None,
                size: 0,
            }),
        }
    }

    pub fn refusal(&self, identity: &str, peer: &str, method: &str, s: &Status) {
        self.write(&Entry {
            time: now(),
            identity,
            peer,
            method,
            experiment_id: "",
            spec_summary: "",
            outcome: format!("{:?}", s.code()),
            message: s.message(),
        });
    }

    pub fn ok(&self, caller: &Caller, method: &str, experiment_id: &str, spec_summary: &str) {
        self.write(&Entry {
            time: now(),
            identity: &caller.identity,
            peer: &caller.peer,
            method,
            experiment_id,
            spec_summary,
            outcome: "ok".into(),
            message: "",
        });
    }

    fn write(&self, e: &Entry<'_>) {
        let line = serde_json::to_string(e).unwrap_or_default();
        tracing::info!(target: "faultline_agent::audit", "{}", faultline_proto::text::Escaped(&line));
        let Some(path) = &self.path else { return };
        let mut sink = self
            .sink
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if sink.size + line.len() as u64 + 1 > self.max_bytes && sink.size > 0 {
            sink.file = None;
            rotate(path);
            match open(path) {
                Ok((f, size)) => {
                    *sink = Sink {
                        file: Some(f),
                        size,
                    }
                }
                Err(err) => {
                    tracing::error!(error = %err, path = %path.display(), "cannot reopen the audit log");
                }
            }
        }
        if let Some(f) = sink.file.as_mut() {
            match f.write_all(format!("{line}\n").as_bytes()) {
                Ok(()) => sink.size += line.len() as u64 + 1,
                Err(err) => tracing::error!(error = %err, "cannot write the audit log"),
            }
        }
    }
}

/// `audit.log` → `.1` → `.2`; the oldest goes.
fn rotate(path: &Path) {
    let nth = |n: usize| PathBuf::from(format!("{}.{n}", path.display()));
    for n in (1..KEEP).rev() {
        let _ = std::fs::rename(nth(n), nth(n + 1));
    }
    let _ = std::fs::rename(path, nth(1));
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Records a mutating call that succeeded (its refusals are recorded by
/// the authorisation layer): one call per mutating handler.
pub fn ok<T>(req: &tonic::Request<T>, method: &str, experiment_id: &str, spec_summary: &str) {
    let caller = Caller::of(req);
    match req.extensions().get::<Arc<Audit>>() {
        Some(a) => a.ok(&caller, method, experiment_id, spec_summary),
        None => Audit::tracing_only().ok(&caller, method, experiment_id, spec_summary),
    }
}

/// What an experiment does, in a line: `kind: summary; …`.
pub fn summary(view: &crate::engine::ExperimentView) -> String {
    view.faults
        .iter()
        .map(|f| format!("{}: {}", f.kind, f.summary))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn entries_are_json_lines_and_rotate_by_size() {
        let dir = std::env::temp_dir().join(format!("fl-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.log");
        let a = Audit::open(&path, 400).unwrap();
        let caller = Caller {
            identity: "alice".into(),
            role: None,
            peer: "10.0.0.1:4".into(),
            remote: true,
        };
        a.ok(&caller, "StartExperiment", "e1", "syscall_error for 30s");
        a.refusal("bob", "unix", "StopAll", &Status::permission_denied("no"));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["identity"], "alice");
        assert_eq!(lines[0]["outcome"], "ok");
        assert_eq!(lines[0]["experiment_id"], "e1");
        assert_eq!(lines[1]["outcome"], "PermissionDenied");
        assert_eq!(lines[1]["message"], "no");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        for _ in 0..20 {
            a.ok(&caller, "StopExperiment", "e1", "");
        }
        assert!(std::fs::metadata(&path).unwrap().len() <= 400);
        assert!(dir.join("audit.log.1").exists() && dir.join("audit.log.2").exists());
        assert!(!dir.join("audit.log.3").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
