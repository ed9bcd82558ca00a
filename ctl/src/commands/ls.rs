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
    // Every page, in order: the agent answers at most 1000 (and 4 MiB) at once.
    let mut experiments = Vec::new();
    let mut page_token = String::new();
    loop {
        let token = std::mem::take(&mut page_token);
        let page = agent
            .call(|mut c| async move {
                c.list_experiments(pb::ListExperimentsRequest {
                    running_only,
                    page_size: 1000,
                    page_token: token,
                })
                .await
            })
            .await?;
        experiments.extend(page.experiments);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
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
