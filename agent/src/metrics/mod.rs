//! Prometheus metrics (`prometheus-client`), served by `http` on the
//! configured loopback address (`metrics_listen`).
//!
//! Two sources: process-wide counters the code bumps as things happen
//! (`api`: every gRPC call by method and code, and its latency; the
//! probe's mechanism availability), and `experiments`, a collector that
//! reads the engine's records at scrape time, so the per-experiment
//! counters are the same live in-kernel counters `GetExperiment` reports,
//! without taking the engine's lock (and the engine's lease expiries).
//!
//! Metric names are a contract (dashboards and alerts use them):
//! `faultline_experiments_active{kind}`,
//! `faultline_fault_matched_total` and `faultline_fault_injected_total`
//! `{experiment,name,kind,index}`, `faultline_mechanism_available{mechanism}`,
//! `faultline_api_calls_total{method,code}`,
//! `faultline_api_call_duration_seconds{method}`,
//! `faultline_lease_expiries_total`, `faultline_build_info{version}`.

mod api;
mod experiments;
mod http;

use std::{collections::BTreeMap, sync::RwLock};

pub use api::{ApiCalls, ApiCallsLayer};
pub use http::spawn;
use prometheus_client::{
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{caps::Capability, engine::EngineHandle};

/// Each mechanism's availability from the last full probe (capability rows
/// by mechanism name); empty until the programs are probed.
static MECHANISMS: RwLock<BTreeMap<&'static str, bool>> = RwLock::new(BTreeMap::new());

/// Records what a full probe found: a mechanism is available if any
/// capability row naming it is supported (a row may be refused for a
/// reason of its kind's own, such as fq, while the programs load).
pub fn mechanisms_probed(caps: &[Capability]) {
    let mut found: BTreeMap<&'static str, bool> = BTreeMap::new();
    for c in caps {
        *found.entry(c.mechanism).or_default() |= c.supported;
    }
    *MECHANISMS
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = found;
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct MechanismLabel {
    mechanism: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

/// The registry one scrape encodes: the process-wide metrics and the
/// experiments' collector over `engine`.
pub fn registry(engine: EngineHandle) -> Registry {
    let mut r = Registry::default();
    let build: Family<VersionLabel, Gauge> = Family::default();
    build
        .get_or_create(&VersionLabel {
            version: env!("CARGO_PKG_VERSION"),
        })
        .set(1);
    r.register(
        "faultline_build_info",
        "The agent's version (the value is always 1)",
        build,
    );
    api::register(&mut r);
    r.register_collector(Box::new(experiments::Experiments::new(engine)));
    r.register_collector(Box::new(Mechanisms));
    r
}

/// `faultline_mechanism_available`, read from the last probe at scrape time.
#[derive(Debug)]
struct Mechanisms;

impl prometheus_client::collector::Collector for Mechanisms {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric as _;
        let found = MECHANISMS
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let g = prometheus_client::metrics::gauge::ConstGauge::new(0i64);
        let mut m = encoder.encode_descriptor(
            "faultline_mechanism_available",
            "1 if this kernel loaded the mechanism's programs, 0 if it refused them (from the probe)",
            None,
            g.metric_type(),
        )?;
        for (mechanism, ok) in found {
            let labels = MechanismLabel { mechanism };
            prometheus_client::metrics::gauge::ConstGauge::new(i64::from(ok))
                .encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The registry as OpenMetrics text.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; an encoder error would be a bug
    // of a collector, shown as a truncated answer rather than a panic.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!(error = %e, "encoding the metrics failed");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mechanisms_are_available_if_any_row_is() {
        let row = |m, ok: bool| Capability::new("k", m, &[], (!ok).then_some("refused"));
        mechanisms_probed(&[
            row("tcx", true),
            row("tcx", false),
            row("bpf_lsm:file_open", false),
        ]);
        let mut r = Registry::default();
        r.register_collector(Box::new(Mechanisms));
        let text = render(&r);
        assert!(
            text.contains("faultline_mechanism_available{mechanism=\"tcx\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("faultline_mechanism_available{mechanism=\"bpf_lsm:file_open\"} 0\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
