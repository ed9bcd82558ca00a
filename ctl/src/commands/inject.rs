//! `faultctl inject KIND` and `faultctl apply`: start an experiment, print its id.

use std::io::Write;

use anyhow::anyhow;
use faultline_proto::v1 as pb;

use crate::{
    connect::{Client, RpcError},
    output::{self, OutputFormat},
    spec,
};

pub async fn start(
    client: &mut Client,
    experiment: spec::Experiment,
    format: OutputFormat,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let request = pb::StartExperimentRequest {
        spec: Some(experiment.into()),
    };
    let response = client
        .start_experiment(request)
        .await
        .map_err(RpcError)?
        .into_inner();
    let experiment = response
        .experiment
        .ok_or_else(|| anyhow!("the agent started the experiment but did not return it"))?;
    match format {
        OutputFormat::Table => writeln!(out, "{}", experiment.id)?,
        OutputFormat::Json => output::write_json(out, &output::ExperimentJson::from(&experiment))?,
    }
    Ok(())
}
