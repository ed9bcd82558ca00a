//! `faultctl ls`: every experiment, or the running ones.

use std::io::Write;

use faultline_proto::v1 as pb;

use crate::{
    connect::Agent,
    output::{self, OutputFormat},
};

pub async fn list(
    agent: &Agent,
    running_only: bool,
    format: OutputFormat,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let experiments = agent
        .call(|mut c| async move {
            c.list_experiments(pb::ListExperimentsRequest {
                running_only,
                ..Default::default()
            })
            .await
        })
        .await?
        .experiments;
    match format {
        OutputFormat::Table => {
            output::write_experiments_table(out, &experiments, output::now_ms())?;
        }
        OutputFormat::Json => {
            let all: Vec<output::ExperimentJson> = experiments
                .iter()
                .map(output::ExperimentJson::from)
                .collect();
            output::write_json(out, &all)?;
        }
    }
    Ok(())
}
