//! `faultctl stop ID` and `faultctl stop --all`.

use std::io::Write;

use faultline_proto::v1 as pb;

use crate::{
    connect::{Client, RpcError},
    output::{self, OutputFormat},
};

pub async fn stop(
    client: &mut Client,
    id: String,
    format: OutputFormat,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let experiment = client
        .stop_experiment(pb::StopExperimentRequest { id })
        .await
        .map_err(RpcError)?
        .into_inner();
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
    client: &mut Client,
    format: OutputFormat,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let stopped = client
        .stop_all(pb::StopAllRequest {})
        .await
        .map_err(RpcError)?
        .into_inner()
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
