//! `faultctl caps`: the fault kinds this kernel supports, and why not.

use std::io::Write;

use faultline_proto::v1 as pb;

use crate::{
    connect::{Client, RpcError},
    output::{self, OutputFormat},
};

pub async fn caps(
    client: &mut Client,
    format: OutputFormat,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let caps = client
        .get_capabilities(pb::GetCapabilitiesRequest::default())
        .await
        .map_err(RpcError)?
        .into_inner();
    match format {
        OutputFormat::Table => output::write_capabilities_table(out, &caps)?,
        OutputFormat::Json => output::write_json(out, &output::CapabilitiesJson::from(&caps))?,
    }
    Ok(())
}
