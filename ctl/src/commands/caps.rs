//! `faultctl caps`: the fault kinds this kernel supports, and why not.

use std::io::Write;

use faultline_proto::v1 as pb;

use crate::{
    connect::Agent,
    output::{self, OutputFormat},
};

pub async fn caps(agent: &Agent, format: OutputFormat, out: &mut impl Write) -> anyhow::Result<()> {
    let caps = agent
        .call(|mut c| async move {
            c.get_capabilities(pb::GetCapabilitiesRequest::default())
                .await
        })
        .await?;
    match format {
        OutputFormat::Table => output::write_capabilities_table(out, &caps)?,
        OutputFormat::Json => output::write_json(out, &output::CapabilitiesJson::from(&caps))?,
    }
    Ok(())
}
