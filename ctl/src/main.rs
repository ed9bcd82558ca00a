//! `faultctl`: the operator CLI for faultline-agent's gRPC API.
//!
//! [`cli`] defines the command line, [`commands`] runs each subcommand,
//! [`spec`] is the experiment file (and what `inject` builds from flags),
//! [`kinds`] holds each fault kind (its file shape, wire form and `inject`
//! subcommand, one module each), [`output`] prints tables and JSON, and
//! [`connect`] reaches the agent.
#![cfg_attr(
    test,
    expect(
        unused_crate_dependencies,
        reason = "dev-dependencies serve tests/cli.rs"
    )
)]

mod cli;
mod commands;
mod connect;
mod kinds;
mod output;
mod spec;
#[cfg(test)]
mod test_support;

use std::{io, process::ExitCode};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let (cli, address) = cli::parse_cli();
    match commands::run(cli, &address).await {
        Ok(()) => ExitCode::SUCCESS,
        // `faultctl watch | head` closing the pipe is a normal way to stop.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            // The agent's messages quote the request: no control characters.
            let line = format!("{err:#}").replace('\n', " ");
            eprintln!("error: {}", faultline_proto::text::escape_controls(&line));
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}
