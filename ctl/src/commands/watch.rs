//! `faultctl watch [ID]`: experiment events as they happen.

use std::{io::Write, time::Duration};

use anyhow::Context as _;
use faultline_proto::v1 as pb;

use crate::{
    connect::Agent,
    output::{self, OutputFormat},
};

/// Without an id, follows every experiment until interrupted; with an id,
/// stops after that experiment's last event.
pub async fn watch(
    agent: &Agent,
    id: Option<String>,
    interval: Duration,
    format: OutputFormat,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let request = pb::WatchEventsRequest {
        experiment_id: id.clone().unwrap_or_default(),
        counters_interval_ms: u32::try_from(interval.as_millis()).unwrap_or(u32::MAX),
    };
    // Subscribing is a call with the deadline; the stream then stays open
    // as long as the agent answers keepalive pings.
    let mut events = agent
        .call(|mut c| async move { c.watch_events(request).await })
        .await?;
    if let Some(id) = &id {
        // Asked after subscribing, so that an end in between still arrives
        // as an event; an unknown id fails here instead of waiting forever.
        let request = pb::GetExperimentRequest { id: id.clone() };
        let experiment = agent
            .call(|mut c| async move { c.get_experiment(request).await })
            .await?;
        if experiment.state != pb::ExperimentState::Running as i32 {
            eprintln!(
                "experiment {} is {}: no more events",
                faultline_proto::text::escape_controls(id),
                output::state_name(experiment.state)
            );
            return Ok(());
        }
    }
    loop {
        let event = match events.message().await {
            Ok(Some(event)) => event,
            Ok(None) => break,
            Err(status) => return Err(agent.stream_error(status).await.into()),
        };
        match format {
            OutputFormat::Table => output::write_event_line(out, &event),
            OutputFormat::Json => output::write_json_line(out, &output::EventJson::from(&event)),
        }
        .context("cannot write to standard output")?;
        // Each event should show up at once, also when piped.
        out.flush()?;
        if id.is_some() && is_final(&event) {
            break;
        }
    }
    Ok(())
}

fn is_final(event: &pb::Event) -> bool {
    matches!(
        pb::EventType::try_from(event.r#type),
        Ok(pb::EventType::Expired | pb::EventType::Stopped | pb::EventType::Failed)
    )
}
