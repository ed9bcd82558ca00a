//! One module per subcommand; [`run`] dispatches to them.

mod apply;
mod caps;
mod completion;
mod inject;
mod ls;
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
    let out = &mut io::stdout().lock();
    // Experiments are built before connecting, so that a bad file is
    // reported as such even when the agent is down.
    match cli.command {
        // These two need no agent.
        Command::Completion { shell } => completion::completion(shell, out),
        Command::Man => completion::man(out),
        Command::Inject(inject) => {
            let experiment = inject.into_experiment()?;
            inject::start(&mut connect(address).await?, experiment, format, out).await
        }
        Command::Apply { file } => {
            let experiment = apply::load(&file)?;
            inject::start(&mut connect(address).await?, experiment, format, out).await
        }
        Command::Caps => caps::caps(&mut connect(address).await?, format, out).await,
        Command::Ls { running } => {
            ls::list(&mut connect(address).await?, running, format, out).await
        }
        Command::Status { id } => {
            status::status(&mut connect(address).await?, id, format, out).await
        }
        Command::Stop(StopArgs { id: Some(id), .. }) => {
            stop::stop(&mut connect(address).await?, id, format, out).await
        }
        Command::Stop(StopArgs { id: None, .. }) => {
            stop::stop_all(&mut connect(address).await?, format, out).await
        }
        Command::Watch { id, interval } => {
            watch::watch(&mut connect(address).await?, id, interval, format, out).await
        }
    }
}
