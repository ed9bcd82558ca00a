//! `faultctl status ID`: one experiment with its per-fault counters.

use std::io::Write;

use faultline_proto::v1 as pb;

use crate::{
    connect::Agent,
    output::{self, OutputFormat},
};

pub async fn status(
    agent: &Agent,
    id: String,
    format: OutputFormat,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let experiment = agent
        .call(|mut c| async move { c.get_experiment(pb::GetExperimentRequest { id }).await })
        .await?;
    match format {
        OutputFormat::Table => output::write_experiment_detail(out, &experiment, output::now_ms())?,
        OutputFormat::Json => output::write_json(out, &output::ExperimentJson::from(&experiment))?,
    }
    Ok(())
}
