//! `faultctl stop ID` and `faultctl stop --all`.

use std::io::Write;

use faultline_proto::v1 as pb;

use crate::{
    connect::Agent,
    output::{self, OutputFormat},
};

pub async fn stop(
    agent: &Agent,
    id: String,
    format: OutputFormat,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let experiment = agent
        .call(|mut c| async move { c.stop_experiment(pb::StopExperimentRequest { id }).await })
        .await?;
    match format {
        OutputFormat::Table => writeln!(
            out,
            "{}  {}  matched={} injected={}",
            experiment.id,
            output::state_name(experiment.state),
            experiment.matched,
            experiment.injected
        )?,
        OutputFormat::Json => output::write_json(out, &output::ExperimentJson::from(&experiment))?,
    }
    Ok(())
}

pub async fn stop_all(
    agent: &Agent,
    format: OutputFormat,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let stopped = agent
        .call(|mut c| async move { c.stop_all(pb::StopAllRequest {}).await })
        .await?
        .stopped_ids;
    match format {
        OutputFormat::Table if stopped.is_empty() => eprintln!("no running experiments"),
        OutputFormat::Table => {
            for id in &stopped {
                writeln!(out, "{id}")?;
            }
        }
        OutputFormat::Json => {
            output::write_json(out, &serde_json::json!({ "stopped_ids": stopped }))?;
        }
    }
    Ok(())
}
