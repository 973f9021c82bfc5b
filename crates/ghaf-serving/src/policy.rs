//! Traffic policies of an endpoint and the state of a rollout.
//!
//! The policy says how requests are spread over the endpoint's variants; the rollout state
//! says where an automated canary stands. Both are stored as JSON on the endpoint record,
//! so every replica routes by the same settings, and every change increments the endpoint's
//! generation.

use ghaf_core::UnixMillis;
use serde::{Deserialize, Serialize};

/// Name of the variant that serves a new version during a canary.
pub const CANDIDATE_VARIANT: &str = "candidate";

/// How requests are spread over the variants of an endpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TrafficPolicy {
    /// Every request goes to the first variant.
    #[default]
    Single,
    /// Requests are split over the variants by weight.
    Ab(AbSpec),
    /// A new version takes a growing share of traffic, step by step, while checks pass.
    Canary(CanarySpec),
}

/// Which part of a request keeps a caller on one variant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case", deny_unknown_fields)]
pub enum StickyKey {
    /// A request header, such as `x-user-id`.
    Header { name: String },
    /// The first element of each request's input tensor of this name, such as an entity
    /// key.
    Input { name: String },
}

/// An A/B test over the endpoint's variants, weighted by each variant's `weight`. The
/// default is the JSON `{"kind": "ab"}`: no sticky key, no metric, 1000 samples, 0.95.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbSpec {
    /// Requests with the same key reach the same variant while the weights stay the same;
    /// without a key, each request is assigned at random.
    #[serde(default)]
    pub sticky: Option<StickyKey>,
    /// Quality metric the analysis compares once labels arrive: `accuracy`, `auc`,
    /// `rmse` or `mae`.
    #[serde(default)]
    pub metric: Option<String>,
    /// Requests (and labelled rows, for the quality metric) each variant needs before the
    /// analysis calls a winner.
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
    /// Confidence level of the significance test, such as 0.95.
    #[serde(default = "default_confidence")]
    pub confidence: f64,
}

impl Default for AbSpec {
    fn default() -> Self {
        Self {
            sticky: None,
            metric: None,
            min_samples: default_min_samples(),
            confidence: default_confidence(),
        }
    }
}

/// Settings of an automated canary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanarySpec {
    /// Candidate traffic share at each step, in percent, increasing; the candidate is
    /// promoted after the last step passes.
    pub steps: Vec<u32>,
    /// Time each step runs before its checks are judged, in seconds.
    pub interval_secs: u64,
    /// Candidate requests a check needs before it is judged.
    pub min_requests: u64,
    /// Failed checks after which the candidate is rolled back.
    pub failure_threshold: u32,
    #[serde(default)]
    pub checks: CanaryChecks,
    #[serde(default)]
    pub sticky: Option<StickyKey>,
}

/// Thresholds a canary step must meet; unset checks are skipped.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryChecks {
    /// Largest share of candidate requests that may fail, such as 0.01.
    #[serde(default)]
    pub max_error_rate: Option<f64>,
    /// Largest candidate p99 latency in milliseconds.
    #[serde(default)]
    pub max_p99_ms: Option<f64>,
    /// Largest ratio of the candidate's p99 latency to the stable version's.
    #[serde(default)]
    pub max_p99_ratio: Option<f64>,
    /// Quality check once labels exist: the candidate's metric may be at most `max_drop`
    /// worse than the stable version's on the same window.
    #[serde(default)]
    pub quality: Option<QualityCheck>,
}

/// A model-quality check of a canary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityCheck {
    /// `accuracy`, `auc`, `rmse` or `mae`.
    pub metric: String,
    /// Largest allowed loss against the stable version, in the metric's units.
    pub max_drop: f64,
    /// Labelled candidate rows needed before the check is judged.
    #[serde(default = "default_min_labels")]
    pub min_labels: u64,
}

/// Requests mirrored to a variant whose answers are logged and compared but never returned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowSpec {
    /// Name of the shadow variant in the endpoint's variants (its weight is ignored).
    pub variant: String,
    /// Share of requests mirrored, in percent (0 to 100).
    pub percent: f64,
}

/// State of an automated rollout: its status, step, failed checks and check window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutState {
    /// UUIDv7 of this rollout.
    pub id: String,
    pub status: RolloutStatus,
    /// Model and version that served all traffic before the rollout.
    pub stable_model: String,
    pub stable_version: i64,
    pub candidate_model: String,
    pub candidate_version: i64,
    /// Index into the canary steps of the step that runs now.
    pub step: usize,
    pub step_started_at: UnixMillis,
    /// Failed checks so far.
    pub failures: u32,
    pub started_at: UnixMillis,
    pub started_by: String,
    /// Set when the rollout ended (promoted, rolled back or aborted).
    #[serde(default)]
    pub ended_at: Option<UnixMillis>,
    /// Why the last decision was taken, in words.
    #[serde(default)]
    pub reason: Option<String>,
    /// Cumulative stats of the variants when the current step (or check window) started;
    /// a check judges the difference to the stats read then.
    #[serde(default)]
    pub baseline: Vec<VariantStats>,
    /// Time the current check window started; quality is read from predictions logged
    /// after it.
    #[serde(default)]
    pub window_started_at: UnixMillis,
}

/// Status of a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutStatus {
    Running,
    Paused,
    Promoted,
    RolledBack,
    Aborted,
}

fn default_min_samples() -> u64 {
    1000
}

fn default_confidence() -> f64 {
    0.95
}

fn default_min_labels() -> u64 {
    200
}

/// Upper bounds of the latency histogram buckets, in microseconds; a last bucket holds
/// everything slower.
pub const LATENCY_BOUNDS_US: [u64; 24] = [
    50, 100, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 7_500, 10_000, 15_000, 20_000,
    30_000, 50_000, 75_000, 100_000, 200_000, 500_000, 1_000_000, 2_000_000, 5_000_000,
];

/// Cumulative request counters of one variant of an endpoint, summed over every replica.
/// A rollout keeps a copy taken when a step starts and judges the difference.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VariantStats {
    pub variant: String,
    pub model: String,
    pub version: i64,
    /// Requests routed to the variant (for a shadow variant: mirrored requests).
    pub requests: u64,
    /// Requests that failed on the server side (model errors, load failures); requests
    /// rejected as invalid input are not counted.
    pub errors: u64,
    /// Request counts per latency bucket: `LATENCY_BOUNDS_US.len() + 1` entries.
    pub latency_buckets: Vec<u64>,
    /// Shadow only: mirrored requests whose answer was compared with the primary's.
    #[serde(default)]
    pub shadow_compared: u64,
    /// Shadow only: compared requests where the answers disagreed.
    #[serde(default)]
    pub shadow_disagreed: u64,
}

/// Quality metrics an A/B analysis or a canary quality check can compare.
pub const QUALITY_METRICS: [&str; 4] = ["accuracy", "auc", "rmse", "mae"];

/// Largest weight of one variant, so the sum of any number of weights fits in a `u64`
/// and weights stay readable as percentages or per-mille shares.
pub const MAX_VARIANT_WEIGHT: u32 = 1_000_000;

impl TrafficPolicy {
    /// Name of the policy kind, as in the JSON `kind` field.
    pub fn kind(&self) -> &'static str {
        match self {
            TrafficPolicy::Single => "single",
            TrafficPolicy::Ab(_) => "ab",
            TrafficPolicy::Canary(_) => "canary",
        }
    }

    /// Sticky key of an A/B test or a canary; `None` for a single variant.
    pub fn sticky(&self) -> Option<&StickyKey> {
        match self {
            TrafficPolicy::Single => None,
            TrafficPolicy::Ab(spec) => spec.sticky.as_ref(),
            TrafficPolicy::Canary(spec) => spec.sticky.as_ref(),
        }
    }
}

impl RolloutState {
    /// Returns whether the rollout still controls the endpoint (running or paused).
    pub fn is_active(&self) -> bool {
        matches!(self.status, RolloutStatus::Running | RolloutStatus::Paused)
    }
}

impl VariantStats {
    /// Returns the counters gathered since `earlier`, a copy of the same variant's stats
    /// taken before. Counters that went down (a replica's rows were pruned) count as 0.
    pub fn delta(&self, earlier: &VariantStats) -> VariantStats {
        let buckets = self
            .latency_buckets
            .iter()
            .enumerate()
            .map(|(index, count)| {
                count.saturating_sub(earlier.latency_buckets.get(index).copied().unwrap_or(0))
            })
            .collect();
        VariantStats {
            variant: self.variant.clone(),
            model: self.model.clone(),
            version: self.version,
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            latency_buckets: buckets,
            shadow_compared: self.shadow_compared.saturating_sub(earlier.shadow_compared),
            shadow_disagreed: self
                .shadow_disagreed
                .saturating_sub(earlier.shadow_disagreed),
        }
    }

    /// Returns the share of requests that failed on the server side; `None` without
    /// requests.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }

    /// Returns the upper bound, in milliseconds, of the latency bucket that contains the
    /// `q`-quantile (0 < `q` <= 1) of the recorded requests, so the true quantile is at most
    /// this value. Requests slower than the last bound of [`LATENCY_BOUNDS_US`] give
    /// `f64::INFINITY`. Returns `None` when no latency was recorded or `q` is out of range.
    pub fn latency_quantile_ms(&self, q: f64) -> Option<f64> {
        if !(q > 0.0 && q <= 1.0) {
            return None;
        }
        let total: u64 = self.latency_buckets.iter().sum();
        if total == 0 {
            return None;
        }
        // Rank of the quantile among the recorded requests, counted from 1.
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (index, count) in self.latency_buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(match LATENCY_BOUNDS_US.get(index) {
                    Some(bound) => *bound as f64 / 1000.0,
                    None => f64::INFINITY,
                });
            }
        }
        Some(f64::INFINITY)
    }
}

/// Returns the index of the latency bucket for `micros`.
pub fn latency_bucket(micros: u64) -> usize {
    LATENCY_BOUNDS_US.partition_point(|&bound| bound < micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(requests: u64, errors: u64, buckets: &[(usize, u64)]) -> VariantStats {
        let mut latency_buckets = vec![0; LATENCY_BOUNDS_US.len() + 1];
        for &(index, count) in buckets {
            latency_buckets[index] = count;
        }
        VariantStats {
            variant: "primary".into(),
            model: "m".into(),
            version: 1,
            requests,
            errors,
            latency_buckets,
            ..VariantStats::default()
        }
    }

    #[test]
    fn latency_bucket_bounds_inclusive() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(50), 0);
        assert_eq!(latency_bucket(51), 1);
        assert_eq!(latency_bucket(5_000_000), LATENCY_BOUNDS_US.len() - 1);
        assert_eq!(latency_bucket(5_000_001), LATENCY_BOUNDS_US.len());
    }

    #[test]
    fn quantile_is_bucket_upper_bound() {
        // 98 requests at most 1 ms, 2 requests between 10 and 15 ms.
        let stats = stats(100, 0, &[(6, 98), (13, 2)]);
        assert_eq!(stats.latency_quantile_ms(0.5), Some(1.0));
        assert_eq!(stats.latency_quantile_ms(0.98), Some(1.0));
        assert_eq!(stats.latency_quantile_ms(0.99), Some(15.0));
        assert_eq!(stats.latency_quantile_ms(0.0), None);
    }

    #[test]
    fn quantile_of_overflow_is_infinite() {
        let stats = stats(1, 0, &[(LATENCY_BOUNDS_US.len(), 1)]);
        assert_eq!(stats.latency_quantile_ms(0.99), Some(f64::INFINITY));
    }

    #[test]
    fn quantile_without_requests_is_none() {
        assert_eq!(stats(0, 0, &[]).latency_quantile_ms(0.5), None);
    }

    #[test]
    fn delta_subtracts_each_counter() {
        let earlier = stats(10, 1, &[(3, 10)]);
        let later = stats(25, 4, &[(3, 20), (5, 5)]);
        let delta = later.delta(&earlier);
        assert_eq!(delta.requests, 15);
        assert_eq!(delta.errors, 3);
        assert_eq!(delta.latency_buckets[3], 10);
        assert_eq!(delta.latency_buckets[5], 5);
        assert_eq!(delta.error_rate(), Some(0.2));
    }

    #[test]
    fn error_rate_without_requests_is_none() {
        assert_eq!(stats(0, 0, &[]).error_rate(), None);
    }

    #[test]
    fn policy_json_round_trips() {
        let policy: TrafficPolicy =
            serde_json::from_str(r#"{"kind":"ab","sticky":{"from":"header","name":"x-user-id"}}"#)
                .unwrap();
        assert_eq!(policy.kind(), "ab");
        assert_eq!(
            policy.sticky(),
            Some(&StickyKey::Header {
                name: "x-user-id".into()
            })
        );
        let single: TrafficPolicy = serde_json::from_str(r#"{"kind":"single"}"#).unwrap();
        assert_eq!(single, TrafficPolicy::Single);
    }
}
