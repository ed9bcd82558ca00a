//! `faultctl run -f FILE [--lease 15s]`: an experiment in the foreground
//! under a lease. faultctl renews the lease every third of its time, shows
//! the time left and the counters, and stops the experiment on Ctrl-C,
//! SIGTERM or SIGHUP (the terminal gone). If faultctl dies or its link does,
//! renewals stop and the agent stops the experiment when the lease lapses.

use std::{
    hash::{BuildHasher as _, Hasher as _},
    io::{IsTerminal as _, Write},
    time::Duration,
};

use anyhow::anyhow;
use faultline_proto::{text::escape_controls, v1 as pb};
use tokio::signal::unix::{SignalKind, signal};
use tonic::Code;

use crate::{
    connect::{Agent, CallError},
    output::{self, OutputFormat},
    spec,
};

/// Start attempts on transport errors (each with the same request id, so a
/// start that reached the agent is never made twice).
const START_ATTEMPTS: u32 = 5;
/// How often the progress line is redrawn (and the experiment read).
const PROGRESS: Duration = Duration::from_secs(1);

/// A request id no other run shares: the pid and 64 random bits.
fn fresh_request_id() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("faultctl-run-{}-{:016x}", std::process::id(), h.finish())
}

/// A failure that may not have reached the agent, or whose answer was lost.
fn is_transport(e: &CallError) -> bool {
    match e {
        CallError::NoAnswer(_) | CallError::Connect(_) => true,
        CallError::Rpc(s) => matches!(
            s.0.code(),
            Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded | Code::Unknown
        ),
    }
}

async fn start(
    agent: &Agent,
    experiment: spec::Experiment,
    lease: Duration,
) -> anyhow::Result<pb::Experiment> {
    let request = pb::StartExperimentRequest {
        spec: Some(experiment.into()),
        lease_ttl_ms: u32::try_from(lease.as_millis()).unwrap_or(u32::MAX),
        request_id: fresh_request_id(),
    };
    let mut attempt = 1;
    loop {
        let r = request.clone();
        match agent
            .call(|mut c| async move { c.start_experiment(r).await })
            .await
        {
            Ok(answer) => {
                return answer.experiment.ok_or_else(|| {
                    anyhow!("the agent started the experiment but did not return it")
                });
            }
            Err(e) if is_transport(&e) && attempt < START_ATTEMPTS => {
                eprintln!("starting failed ({e}); trying again with the same request id");
                tokio::time::sleep(Duration::from_millis(200) * attempt).await;
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Why the foreground run ends.
enum End {
    /// The experiment ended by itself (or someone else ended it).
    Ended(Box<pb::Experiment>),
    /// A signal asked faultctl to stop it.
    Signal(&'static str, i32),
}

pub async fn run(
    agent: &Agent,
    experiment: spec::Experiment,
    lease: Duration,
    format: OutputFormat,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    // Before the start: a Ctrl-C while it is under way stops it after.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let started = start(agent, experiment, lease).await?;
    let id = started.id.clone();
    if format == OutputFormat::Table {
        writeln!(out, "{id}")?;
        out.flush()?;
    }
    let progress = Progress::new(&started, lease);
    let every = lease / 3;
    let renewer = async {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tick.tick().await;
            let request = pb::RenewLeaseRequest {
                ids: vec![id.clone()],
            };
            match agent
                .call_within(every, |mut c| async move { c.renew_lease(request).await })
                .await
            {
                Ok(answer) => match answer.leases.first() {
                    Some(l) if l.renewed => progress.renewed(l.lease_expires_at_ms),
                    // Ended, or lapsed: the progress read shows which.
                    Some(l) => {
                        progress.note(format!("lease not renewed: {}", l.reason));
                        return;
                    }
                    None => progress.note("lease not renewed: empty answer".into()),
                },
                Err(e) => progress.note(format!("renewal failed: {e}")),
            }
        }
    };
    let watcher = async {
        let mut tick = tokio::time::interval(PROGRESS);
        loop {
            tick.tick().await;
            let request = pb::GetExperimentRequest { id: id.clone() };
            match agent
                .call_within(
                    every,
                    |mut c| async move { c.get_experiment(request).await },
                )
                .await
            {
                Ok(e) if e.state != pb::ExperimentState::Running as i32 => return e,
                Ok(e) => progress.draw(&e),
                Err(e) => progress.note(format!("reading the experiment failed: {e}")),
            }
        }
    };
    let end = {
        tokio::pin!(renewer);
        tokio::pin!(watcher);
        let mut renewing = true;
        loop {
            tokio::select! {
                () = &mut renewer, if renewing => renewing = false,
                e = &mut watcher => break End::Ended(Box::new(e)),
                _ = sigint.recv() => break End::Signal("SIGINT", libc_sig::SIGINT),
                _ = sigterm.recv() => break End::Signal("SIGTERM", libc_sig::SIGTERM),
                _ = sighup.recv() => break End::Signal("SIGHUP", libc_sig::SIGHUP),
            }
        }
    };
    progress.clear();
    let (last, code) = match end {
        End::Ended(e) => {
            let failed = e.state != pb::ExperimentState::Expired as i32;
            (*e, i32::from(failed))
        }
        End::Signal(name, sig) => {
            eprintln!("{name}: stopping {}", escape_controls(&id));
            let request = pb::StopExperimentRequest { id: id.clone() };
            let e = agent
                .call(|mut c| async move { c.stop_experiment(request).await })
                .await?;
            (e, 128 + sig)
        }
    };
    match format {
        OutputFormat::Table => writeln!(
            out,
            "{}  {}{}  matched={} injected={}",
            last.id,
            output::state_name(last.state),
            if last.message.is_empty() {
                String::new()
            } else {
                format!(" ({})", escape_controls(&last.message))
            },
            last.matched,
            last.injected
        )?,
        OutputFormat::Json => output::write_json(out, &output::ExperimentJson::from(&last))?,
    }
    out.flush()?;
    // The exit status tells a script how it ended: 0 when it ran its
    // course, 128 + the signal when one stopped it, 1 otherwise (a lapsed
    // lease, a failure, a stop by someone else).
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}

/// Signal numbers for the exit status (Linux).
mod libc_sig {
    pub const SIGHUP: i32 = 1;
    pub const SIGINT: i32 = 2;
    pub const SIGTERM: i32 = 15;
}

/// The live line on standard error: redrawn in place on a terminal, a line
/// every few seconds otherwise. Write errors are ignored (a terminal that
/// went away must not stop the renewals).
struct Progress {
    tty: bool,
    lease: Duration,
    lease_expires_at_ms: std::cell::Cell<u64>,
    note: std::cell::RefCell<Option<String>>,
    drawn: std::cell::Cell<u32>,
}

impl Progress {
    fn new(e: &pb::Experiment, lease: Duration) -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            lease,
            lease_expires_at_ms: e.lease_expires_at_ms.into(),
            note: None.into(),
            drawn: 0.into(),
        }
    }

    fn renewed(&self, expires_at_ms: u64) {
        self.lease_expires_at_ms.set(expires_at_ms);
        self.note.replace(None);
    }

    fn note(&self, text: String) {
        self.note.replace(Some(text));
    }

    fn draw(&self, e: &pb::Experiment) {
        let now = output::now_ms();
        let left =
            |at: u64| output::compact_duration(Duration::from_millis(at.saturating_sub(now)));
        let mut line = format!(
            "{}  running  {} left  matched={} injected={}  lease {} (renewed every {})",
            escape_controls(&e.id),
            left(e.deadline_ms),
            e.matched,
            e.injected,
            left(self.lease_expires_at_ms.get()),
            output::compact_duration(self.lease / 3),
        );
        if let Some(n) = &*self.note.borrow() {
            line.push_str("  ");
            line.push_str(&escape_controls(n));
        }
        let n = self.drawn.get();
        self.drawn.set(n + 1);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else if n.is_multiple_of(5) {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    fn clear(&self) {
        if self.tty && self.drawn.get() > 0 {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[2K");
        }
    }
}
