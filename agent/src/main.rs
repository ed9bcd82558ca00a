//! `faultline-agent`: the privileged host daemon.
#![expect(
    unused_crate_dependencies,
    reason = "a binary beside the library: the package's dependencies are mostly the library's"
)]

use std::process::ExitCode;

use clap::Parser as _;
use faultline_agent::{
    cgroup,
    config::{Cli, Config, EXIT_CONFIG, ProbeMode},
    engine::{Engine, EngineHandle, Policy},
    kernel::Kernel,
    procs, qdisc, server, state, worker,
};
use tracing::{error, info, warn};

fn main() -> ExitCode {
    // One of the agent's own helpers (a stressor, the reaper): nothing of
    // the daemon's start-up applies to it.
    if let Some(status) = worker::internal_role(&std::env::args_os().collect::<Vec<_>>()) {
        return ExitCode::from(u8::try_from(status).unwrap_or(1));
    }
    // Before anything is created: the socket is then 0600 from the moment
    // bind() makes it (a chmod after bind leaves a moment in which other
    // users can connect, and keep that connection), and every file and
    // directory the agent makes is its own only.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    // A flag clap cannot parse is a bad configuration like any other: exit
    // 64 (EX_USAGE), as for bad values in the file or the environment.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version: printed, and a success.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("faultline-agent: bad configuration: {e}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    let cfg = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("faultline-agent: bad configuration: {e}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    if cli.print_config {
        println!("{cfg:#?}");
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cfg.log))
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: in a file or the journal they
        // are noise, and the log should hold no escape sequences at all.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if cli.cleanup {
        return match cleanup(&cfg) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!("clean-up failed: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            // A state directory or socket directory others could write to
            // is a bad configuration too.
            if matches!(
                e.downcast_ref::<state::StateError>(),
                Some(state::StateError::Unsafe { .. })
            ) {
                eprintln!("faultline-agent: bad configuration: {e}");
                return ExitCode::from(EXIT_CONFIG as u8);
            }
            ExitCode::FAILURE
        }
    }
}

/// Loads every program group in a low-priority thread, one group per
/// engine lock, so requests are served meanwhile; then logs what this
/// kernel supports.
fn spawn_prober(engine: EngineHandle) {
    let spawned = std::thread::Builder::new()
        .name("probe".into())
        .spawn(move || {
            // SAFETY: plain syscalls on this thread (Linux nice values are per thread).
            unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                libc::setpriority(libc::PRIO_PROCESS, tid, 10);
            }
            let t0 = std::time::Instant::now();
            loop {
                let mut e = engine.lock();
                let Some(group) = e.kernel().unprobed() else {
                    break;
                };
                e.kernel_mut().probe(group);
            }
            let mut e = engine.lock();
            info!(
                elapsed_ms = t0.elapsed().as_millis() as u64,
                "all program groups probed"
            );
            release_freed_memory();
            for c in faultline_agent::caps::probe(e.kernel_mut(), &[]) {
                if c.supported {
                    info!(kind = c.fault_kind, mechanism = c.mechanism, "fault mechanism available");
                } else {
                    info!(kind = c.fault_kind, mechanism = c.mechanism, reason = %c.reason, "fault mechanism unavailable");
                }
            }
        });
    if let Err(e) = spawned {
        error!("starting the program prober failed ({e}); programs load on first use");
    }
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    let _lock = state::prepare(&cfg)?;
    // The OOM killer takes the stressors (oom_score_adj 1000) and almost
    // anything else before the agent, which must live to stop them.
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", "-900") {
        warn!(error = %e, "cannot lower the agent's oom_score_adj");
    }
    replay_journal(&cfg);
    let journal = worker::Journal::open(&cfg.state_dir)?;
    let mut kernel = Kernel::load(cfg.nth_call_capacity)?;
    kernel.enable_qdiscs(&cfg.state_dir);
    kernel.set_keep_tcx_hooks(cfg.keep_tcx_hooks);
    kernel.set_interface_via_cgroup(cfg.interface_via_cgroup);
    if let Some(addr) = cfg.listen {
        kernel.set_control_port(addr.port())?;
    }
    let agent_cgroup = own_cgroup();
    kernel.set_identity(None, agent_cgroup.as_ref())?;
    // Started in the agent's cgroup (so protected with it): it undoes what
    // the journal holds when the agent dies, SIGKILL included.
    let reaper = procs::reaper::Reaper::spawn(&cfg.state_dir)
        .map_err(|e| anyhow::anyhow!("cannot start the reaper process: {e}"))?;
    info!(pid = reaper.pid(), "reaper started");
    let mut protected_pids = cfg.protected_pids.clone();
    if agent_cgroup.is_none() {
        // No cgroup of its own to protect it by: protected by pid.
        protected_pids.push(reaper.pid());
    }
    let policy = Policy {
        max_duration: cfg.max_duration,
        protected_pids,
        protected_comms: cfg.protected_comms.clone(),
        agent_cgroup: agent_cgroup.clone(),
    };
    kernel.set_protected_comms(&policy.protected_comms)?;
    kernel.set_protected(&policy.protected_pids)?;
    kernel.set_ssh_ports(&cfg.ssh_ports)?;
    let engine = EngineHandle::new(
        Engine::new(kernel, policy)
            .with_journal(journal, cfg.state_dir.clone())
            .with_limits(cfg.limits),
    )
    .with_default_lease(cfg.default_lease);
    spawn_task_flags_reader(engine.clone(), agent_cgroup.clone());
    if cfg.probe == ProbeMode::Start {
        spawn_prober(engine.clone());
    }
    let on_signal = engine.clone();
    let shutdown = async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        info!("shutting down: stopping every experiment");
        let stopped = on_signal.stop_all("agent shut down").await;
        info!(stopped = stopped.len(), "experiments stopped");
    };
    server::serve(&cfg, engine.clone(), shutdown).await?;
    engine.stop_all("agent shut down").await;
    // Everything is undone: the reaper goes (before the agent leaves its
    // cgroup leaf, which must be empty to be removed).
    reaper.finish();
    if let Some(leaf) = &agent_cgroup {
        cgroup::leave_agent_leaf(leaf);
    }
    info!("agent stopped");
    Ok(())
}

/// What agent-side work of an earlier run left on the host (its reaper may
/// have died with it) is undone before anything else.
fn replay_journal(cfg: &Config) {
    let undone = worker::Journal::replay(&worker::journal::dir_in(&cfg.state_dir));
    if undone > 0 {
        warn!(
            undone,
            "undid what an earlier run left behind (paused processes, fill files, cgroups)"
        );
    }
}

/// `--cleanup`: start-up's undo steps and nothing else, under the same
/// lock (so never behind a running agent's back): the journal, then the fq
/// root qdiscs the state directory records (`FqManager::new` removes them).
/// Links need nothing: they went with the agent.
fn cleanup(cfg: &Config) -> Result<(), state::StateError> {
    let _lock = state::prepare(cfg)?;
    replay_journal(cfg);
    drop(qdisc::FqManager::new(&cfg.state_dir));
    info!(state_dir = %cfg.state_dir.display(), "clean-up done");
    Ok(())
}

/// Moves the agent into a cgroup of its own (protected: never a target,
/// skipped in the kernel). None if it is left in the root.
fn own_cgroup() -> Option<cgroup::Cgroup> {
    match cgroup::enter_agent_leaf() {
        Ok(c) => {
            info!(cgroup = %c.path.display(), "the agent runs in a cgroup of its own");
            Some(c)
        }
        Err((stayed, why)) => {
            warn!(
                "{why}; the agent stays where it is, and only its own pid is protected in the kernel"
            );
            stayed.filter(|c| c.level > 0)
        }
    }
}

/// Gives the heap that start-up freed (parsed BTF, ELF sections, verifier
/// logs) back to the kernel: glibc keeps freed memory in its arenas, which
/// an idle agent would otherwise hold as resident for good.
fn release_freed_memory() {
    // SAFETY: malloc_trim only walks and trims glibc's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Finds where the kernel keeps a task's flags, so kernel threads are
/// skipped in the kernel too (the API refuses them regardless). Reading the
/// kernel's BTF takes a while (seconds in a debug build), so it happens
/// beside serving, not before.
fn spawn_task_flags_reader(engine: EngineHandle, agent_cgroup: Option<cgroup::Cgroup>) {
    let read = move || {
        let offset =
            faultline_agent::btf::Btf::from_sys_fs().and_then(|b| b.offset("task_struct", "flags"));
        match offset {
            Ok(o) => {
                if let Err(e) = engine
                    .lock()
                    .kernel_mut()
                    .set_identity(Some(o), agent_cgroup.as_ref())
                {
                    error!(error = %e, "cannot tell the kernel programs where task flags are");
                }
            }
            Err(e) => warn!(
                error = %e,
                "kernel threads are refused at the API but cannot be told apart in the kernel"
            ),
        }
        release_freed_memory();
    };
    if let Err(e) = std::thread::Builder::new().name("btf".into()).spawn(read) {
        error!("starting the BTF reader failed ({e}); kernel threads are refused at the API only");
    }
}
