//! `faultctl inject KIND` and `faultctl apply`: start an experiment, print its id.

use std::io::Write;

use anyhow::anyhow;
use faultline_proto::v1 as pb;

use crate::{
    connect::Agent,
    output::{self, OutputFormat},
    spec,
};

pub async fn start(
    agent: &Agent,
    experiment: spec::Experiment,
    format: OutputFormat,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let request = pb::StartExperimentRequest {
        spec: Some(experiment.into()),
        ..Default::default()
    };
    let response = agent
        .call(|mut c| async move { c.start_experiment(request).await })
        .await?;
    let experiment = response
        .experiment
        .ok_or_else(|| anyhow!("the agent started the experiment but did not return it"))?;
    match format {
        OutputFormat::Table => writeln!(out, "{}", experiment.id)?,
        OutputFormat::Json => output::write_json(out, &output::ExperimentJson::from(&experiment))?,
    }
    Ok(())
}
