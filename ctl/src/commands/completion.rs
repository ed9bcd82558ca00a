//! `faultctl completion SHELL` and the hidden `faultctl man`: generated from
//! the clap definition, so they list every subcommand and flag. They need no
//! agent. `cargo xtask man` writes the page to target/man/faultctl.1.

use std::io::Write;

use clap::CommandFactory as _;

use crate::cli::Cli;

pub fn completion(shell: clap_complete::Shell, out: &mut impl Write) -> anyhow::Result<()> {
    clap_complete::generate(shell, &mut Cli::command(), "faultctl", out);
    Ok(())
}

pub fn man(out: &mut impl Write) -> anyhow::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(out)?;
    Ok(())
}
