//! Prometheus metrics (`GET /metrics`), through the `metrics` facade and its Prometheus
//! exporter.
//!
//! Hot paths hold metric handles made once (an atomic add per frame or packet); gauges and
//! totals the pipeline already counts ([`crate::broadcast::Stats`]) are copied in when scraped.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
/// How often recorded histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs the process-wide recorder (once); `None` if another recorder was installed first.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("whepcast_encode_seconds".into()),
                    &[0.001, 0.002, 0.004, 0.008, 0.016, 0.033, 0.066, 0.1, 0.25],
                )
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            // Histogram samples pile up in the recorder until drained: without this, the
            // encode-time histogram alone would grow by ~20 MB a day when nobody scrapes.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("whepcast-metrics".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                });
            Some(handle)
        })
        .as_ref()
}
