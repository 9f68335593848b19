//! Prometheus metrics (`GET /metrics`), through the `metrics` facade and its Prometheus
//! exporter.
//!
//! Hot paths hold metric handles made once (an atomic add per frame or packet); gauges and
//! totals the pipeline already counts ([`crate::pipeline::Stats`]) are copied in when scraped.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
/// How often recorded histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds recorded histogram samples into their buckets every few seconds until `stop`: they
/// pile up in the recorder until drained, and the encode-time histogram alone would grow by
/// ~20 MB a day when nobody scrapes. A running server spawns this.
pub async fn upkeep(stop: tokio_util::sync::CancellationToken) {
    let Some(handle) = install() else { return };
    let mut every = tokio::time::interval(UPKEEP_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => handle.run_upkeep(),
        }
    }
}

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
            Some(handle)
        })
        .as_ref()
}
