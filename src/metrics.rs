//! Prometheus metrics: counters kept in memory by this process, and queue gauges read from the
//! database when scraped (so that every instance reports the shared queue).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Labels of inbound requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InboundLabels {
    /// `esp`, `sparkloop`, ...
    pub endpoint: &'static str,
    /// `stored`, `duplicate`, `ignored`, `unauthorized`, `bad_request`, `too_large`, `unavailable`.
    pub outcome: &'static str,
}

/// Labels of finished attempts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    /// The job's kind (`subscribe`, ...).
    pub kind: String,
    /// `done`, `retry` or `dead`.
    pub outcome: &'static str,
}

/// Labels naming a destination.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabels {
    /// `sparkloop`, ...
    pub destination: String,
}

/// Labels naming a table.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    /// `inbound_events`, `jobs`, `attempts`, `admin_sessions`.
    pub table: &'static str,
}

/// Labels naming a kind of reconciliation difference.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DifferenceLabels {
    /// `missing_at_platform`, `unsubscribed_here`, `unknown_here`, `fields_differ`.
    pub kind: &'static str,
}

/// The buckets of the attempt latency histogram.
#[derive(Clone)]
pub struct LatencyBuckets;

impl MetricConstructor<Histogram> for LatencyBuckets {
    fn new_metric(&self) -> Histogram {
        // 5 ms to about 20 s.
        Histogram::new(exponential_buckets(0.005, 2.0, 13))
    }
}

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    /// Inbound webhook requests by endpoint and outcome.
    pub inbound: Family<InboundLabels, Counter>,
    /// Delivery attempts by job kind and outcome.
    pub jobs: Family<JobLabels, Counter>,
    /// Attempt latency by destination.
    pub attempt_seconds: Family<DestinationLabels, Histogram, LatencyBuckets>,
    queue_depth: Family<DestinationLabels, Gauge>,
    drain_seconds: Family<DestinationLabels, Gauge<f64, AtomicU64>>,
    oldest_due_seconds: Gauge<f64, AtomicU64>,
    /// Rows deleted by retention, by table.
    pub pruned_rows: Family<TableLabels, Counter>,
    /// Bytes the SQLite file gave back to the file system after pruning.
    pub reclaimed_bytes: Counter,
    /// Subscribers erased (forget, the admin API, erase-on-delete).
    pub erasures: Counter,
    reconcile_differences: Family<DifferenceLabels, Gauge>,
    reconcile_last_run: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("bridge");
        let inbound = Family::<InboundLabels, Counter>::default();
        registry.register(
            "inbound_requests",
            "Inbound webhook requests",
            inbound.clone(),
        );
        let jobs = Family::<JobLabels, Counter>::default();
        registry.register(
            "job_attempts",
            "Delivery attempts by job kind and outcome",
            jobs.clone(),
        );
        let attempt_seconds = Family::new_with_constructor(LatencyBuckets);
        registry.register(
            "attempt_duration_seconds",
            "Duration of outgoing delivery calls",
            attempt_seconds.clone(),
        );
        let queue_depth = Family::<DestinationLabels, Gauge>::default();
        registry.register(
            "queue_depth",
            "Pending and running jobs per destination",
            queue_depth.clone(),
        );
        let drain_seconds = Family::<DestinationLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "queue_drain_estimate_seconds",
            "How long the open jobs take at the destination's rate limit (paced destinations)",
            drain_seconds.clone(),
        );
        let oldest_due_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "oldest_due_job_age_seconds",
            "How long the oldest due job has been waiting (0 when none is due)",
            oldest_due_seconds.clone(),
        );
        let pruned_rows = Family::<TableLabels, Counter>::default();
        registry.register(
            "pruned_rows",
            "Rows deleted by retention (BRIDGE_RETENTION), by table",
            pruned_rows.clone(),
        );
        let reclaimed_bytes = Counter::default();
        registry.register(
            "reclaimed_bytes",
            "Bytes the SQLite file gave back after pruning (incremental vacuum)",
            reclaimed_bytes.clone(),
        );
        let erasures = Counter::default();
        registry.register(
            "erasures",
            "Subscribers erased with everything stored about them",
            erasures.clone(),
        );
        let reconcile_differences = Family::<DifferenceLabels, Gauge>::default();
        registry.register(
            "reconcile_differences",
            "Differences the last reconciliation that mended found, by kind (DESIGN 3.9)",
            reconcile_differences.clone(),
        );
        let reconcile_last_run = Gauge::default();
        registry.register(
            "reconcile_last_run_timestamp_seconds",
            "When the last reconciliation that mended finished (unix seconds; 0: never)",
            reconcile_last_run.clone(),
        );
        Metrics {
            reconcile_differences,
            reconcile_last_run,
            pruned_rows,
            reclaimed_bytes,
            erasures,
            registry,
            inbound,
            jobs,
            attempt_seconds,
            queue_depth,
            drain_seconds,
            oldest_due_seconds,
        }
    }
}

impl Metrics {
    /// Counts one inbound request.
    pub fn inbound(&self, endpoint: &'static str, outcome: &'static str) {
        self.inbound
            .get_or_create(&InboundLabels { endpoint, outcome })
            .inc();
    }

    /// Renders the text exposition, after setting the queue gauges to `depths` (destination,
    /// open jobs, and how long they take at its rate limit if it is paced; the platform's queue,
    /// `upstream`, shown even when empty), `oldest_due_seconds` and the last reconciliation's
    /// counts (recorded in the database, so every instance reports the one that ran).
    pub fn render(
        &self,
        upstream: &str,
        depths: &[(String, i64, Option<f64>)],
        oldest_due_seconds: f64,
        last_reconcile: Option<&crate::db::reconcile::Run>,
    ) -> String {
        if let Some(run) = last_reconcile {
            for (kind, count) in [
                ("missing_at_platform", run.missing_at_platform),
                ("unsubscribed_here", run.unsubscribed_here),
                ("unknown_here", run.unknown_here),
                ("fields_differ", run.fields_differ),
            ] {
                self.reconcile_differences
                    .get_or_create(&DifferenceLabels { kind })
                    .set(count);
            }
            self.reconcile_last_run.set(run.finished_at / 1000);
        }
        self.queue_depth.clear();
        self.drain_seconds.clear();
        // An empty queue is reported as 0 rather than left out.
        self.queue_depth
            .get_or_create(&DestinationLabels {
                destination: upstream.into(),
            })
            .set(0);
        for (destination, depth, drain) in depths {
            let labels = DestinationLabels {
                destination: destination.clone(),
            };
            self.queue_depth.get_or_create(&labels).set(*depth);
            if let Some(drain) = drain {
                self.drain_seconds.get_or_create(&labels).set(*drain);
            }
        }
        self.oldest_due_seconds.set(oldest_due_seconds);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}
