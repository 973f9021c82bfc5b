//! Prometheus metrics of the HTTP server. Labels hold route templates and status codes only,
//! never user data, so their number stays bounded.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerLabels {
    consumer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

/// The server's metric registry and handles.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    consumer_lag: Family<ConsumerLabels, Gauge>,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram>,
    audit_entries: Family<OutcomeLabels, Counter>,
    audit_failures: Counter,
    audit_suppressed: Counter,
    prediction_log_dropped: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ghaf");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests served, by route template and status",
            requests.clone(),
        );
        let durations = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency in seconds, by route template",
            durations.clone(),
        );
        let audit_entries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "audit_entries",
            "Audit entries appended, by outcome",
            audit_entries.clone(),
        );
        let audit_failures = Counter::default();
        registry.register(
            "audit_append_failures",
            "Audit entries that could not be stored",
            audit_failures.clone(),
        );
        let audit_suppressed = Counter::default();
        registry.register(
            "audit_suppressed",
            "Entries of unauthenticated calls not written because they exceeded the rate limit",
            audit_suppressed.clone(),
        );
        let prediction_log_dropped = Counter::default();
        registry.register(
            "prediction_log_dropped_rows",
            "Prediction log rows dropped because the log queue was full or the log dataset could not be written",
            prediction_log_dropped.clone(),
        );
        let consumer_lag = Family::<ConsumerLabels, Gauge>::default();
        registry.register(
            "ingest_consumer_lag_messages",
            "Messages of a stream consumer's subject not yet delivered, by durable consumer name",
            consumer_lag.clone(),
        );
        Self {
            consumer_lag,
            registry: Arc::new(registry),
            requests,
            durations,
            audit_entries,
            audit_failures,
            audit_suppressed,
            prediction_log_dropped,
        }
    }

    pub fn observe_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.durations
            .get_or_create(&RouteLabels {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    pub fn audit_appended(&self, outcome: &str) {
        self.audit_entries
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Sets the lag of the stream consumer named `consumer` (a configured durable name).
    pub fn set_consumer_lag(&self, consumer: &str, lag: u64) {
        self.consumer_lag
            .get_or_create(&ConsumerLabels {
                consumer: consumer.to_owned(),
            })
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
    }

    pub fn audit_failed(&self) {
        self.audit_failures.inc();
    }

    pub fn audit_suppressed(&self) {
        self.audit_suppressed.inc();
    }

    pub fn prediction_log_dropped(&self, rows: u64) {
        self.prediction_log_dropped.inc_by(rows);
    }

    /// Renders every metric in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(%error, "cannot encode metrics");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
