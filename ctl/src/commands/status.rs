//! `faultctl status ID`: one experiment with its per-fault counters.

use std::io::Write;

use faultline_proto::v1 as pb;

use crate::{
    connect::{Client, RpcError},
    output::{self, OutputFormat},
};

pub async fn status(
    client: &mut Client,
    id: String,
    format: OutputFormat,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let experiment = client
        .get_experiment(pb::GetExperimentRequest { id })
        .await
        .map_err(RpcError)?
        .into_inner();
    match format {
        OutputFormat::Table => output::write_experiment_detail(out, &experiment, output::now_ms())?,
        OutputFormat::Json => output::write_json(out, &output::ExperimentJson::from(&experiment))?,
    }
    Ok(())
}
