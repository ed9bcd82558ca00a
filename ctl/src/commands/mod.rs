//! One module per subcommand; [`run`] dispatches to them.

mod apply;
mod caps;
mod certs;
mod completion;
mod inject;
mod ls;
mod run;
mod status;
mod stop;
mod watch;

use std::io;

use crate::{
    cli::{Cli, Command, StopArgs},
    connect::{AgentAddress, connect},
};

/// Runs the parsed command line, printing to standard output.
pub async fn run(cli: Cli, address: &AgentAddress) -> anyhow::Result<()> {
    let format = cli.output;
    let timeout = cli.timeout;
    let connect = |address| connect(address, timeout);
    let out = &mut io::stdout().lock();
    // Experiments are built before connecting, so that a bad file is
    // reported as such even when the agent is down.
    match cli.command {
        // These two need no agent.
        Command::Completion { shell } => completion::completion(shell, out),
        Command::Man => completion::man(out),
        Command::Certs(c) => certs::run(c, out),
        Command::Inject(inject) => {
            let experiment = inject.into_experiment()?;
            inject::start(&connect(address).await?, experiment, format, out).await
        }
        Command::Apply { file } => {
            let experiment = apply::load(&file)?;
            inject::start(&connect(address).await?, experiment, format, out).await
        }
        Command::Run { file, lease } => {
            let experiment = apply::load(&file)?;
            run::run(&connect(address).await?, experiment, lease, format, out).await
        }
        Command::Caps => caps::caps(&connect(address).await?, format, out).await,
        Command::Ls { running } => ls::list(&connect(address).await?, running, format, out).await,
        Command::Status { id } => status::status(&connect(address).await?, id, format, out).await,
        Command::Stop(StopArgs { id: Some(id), .. }) => {
            stop::stop(&connect(address).await?, id, format, out).await
        }
        Command::Stop(StopArgs { id: None, .. }) => {
            stop::stop_all(&connect(address).await?, format, out).await
        }
        Command::Watch { id, interval } => {
            watch::watch(&connect(address).await?, id, interval, format, out).await
        }
    }
}
