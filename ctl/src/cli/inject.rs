//! The flags of `faultctl inject KIND` that every kind shares, and how a
//! kind's fault becomes an experiment. Each kind's own subcommand and flags
//! are in its module, `crate::kinds::<kind>`, and the subcommands are made
//! from the list of kinds there ([`InjectCommand`]). Values go through the
//! same parsers as an experiment file's ([`spec`]'s), so a flag and a field
//! accept the same text.

#[cfg(test)]
mod host_tests;
#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, time::Duration};

use anyhow::bail;
use clap::{ArgGroup, Args};

pub use crate::kinds::InjectCommand;
use crate::{kinds::Injection, spec};

/// Target and lifetime flags of the process faults (`syscall-*`).
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("target")
        .args(["pids", "cgroup", "comm"])
        .required(true)
        .multiple(true)
))]
pub struct ExperimentArgs {
    /// Target this process (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Target processes in this cgroup v2 directory and its descendants.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<String>,
    /// Target processes with this name (the kernel's comm, at most 15 bytes).
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,
    /// Never fault this process (repeatable).
    #[arg(long = "exclude-pid", value_name = "PID")]
    pub exclude_pids: Vec<u32>,
    /// Never fault processes with this name.
    #[arg(long, value_name = "NAME")]
    pub exclude_comm: Option<String>,
    /// Accept a cgroup that covers the host's own machinery (the cgroup2
    /// root, or one holding the agent): dry runs only for these faults.
    #[arg(long)]
    pub allow_host_wide: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Lifetime flags shared by every `inject` subcommand.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// How long the faults stay armed, e.g. 30s, 2m, 1500ms.
    #[arg(long, value_parser = spec::parse_duration)]
    pub duration: Duration,
    /// Count what would be injected; inject nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Label the experiment (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Name for humans.
    #[arg(long)]
    pub name: Option<String>,
}

impl RunArgs {
    /// The experiment of one fault on `target`.
    pub fn into_experiment(
        self,
        target: spec::Target,
        fault: spec::Fault,
    ) -> anyhow::Result<spec::Experiment> {
        let mut labels = BTreeMap::new();
        for (key, value) in self.labels {
            if labels.insert(key.clone(), value).is_some() {
                bail!("--label {key} is given more than once");
            }
        }
        Ok(spec::Experiment {
            name: self.name.unwrap_or_default(),
            duration: self.duration,
            dry_run: self.dry_run,
            labels,
            target,
            faults: vec![fault],
        })
    }
}

impl ExperimentArgs {
    /// The process fault `fault` on the processes these flags name.
    pub fn into_injection<K>(self, fault: K) -> Injection<K> {
        let target = spec::Target {
            pids: self.pids,
            cgroup: self.cgroup.unwrap_or_default(),
            comm: self.comm.unwrap_or_default(),
            exclude_pids: self.exclude_pids,
            exclude_comm: self.exclude_comm.unwrap_or_default(),
            interface: String::new(),
            allow_host_wide: self.allow_host_wide,
        };
        Injection {
            fault,
            target,
            run: self.run,
        }
    }
}

/// `KEY=VALUE`; the value may be empty and may contain `=`.
fn parse_label(text: &str) -> Result<(String, String), String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!("expected KEY=VALUE, found no '=' in {text:?}"));
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(format!(
            "expected KEY=VALUE, found an empty key in {text:?}"
        ));
    }
    Ok((key.to_owned(), value.to_owned()))
}
