//! The canary state machine: pure functions of the spec, the rollout state, the variants'
//! cumulative counters and the time, with no I/O.
//!
//! A rollout judges its checks on a check window: the counters since `state.baseline` (and,
//! for quality, predictions logged since `state.window_started_at`). Each configured check is
//! judged as soon as the window has `min_requests` candidate requests (error rate, p99,
//! p99 ratio) or `min_labels` labelled candidate rows (quality). A failed check increments
//! `failures` and starts a new window at the same step. At `failure_threshold` failures all
//! traffic goes back to the stable version at once. A step passes when `interval_secs` have
//! elapsed since it started, every configured check was judged and passed in the current
//! window, and the window has `min_requests` candidate requests.
//!
//! Bound: a window whose request checks fail ends at the first controller tick that sees
//! `min_requests` candidate requests, so it contains fewer than `min_requests + T` candidate
//! requests, where T is the number of candidate requests that arrive within one tick. A
//! candidate that fails its request checks in every window therefore serves fewer than
//! `failure_threshold × (min_requests + T)` requests before the rollback is applied
//! ([`request_bound`]). Quality checks wait for labels, so their bound depends on how fast
//! labels arrive, not on this formula.
//!
//! NOTE: the p99 ratio is judged only once the stable version also has `min_requests` in the
//! window. At a step above 50% the stable version gets fewer requests than the candidate,
//! so a candidate that fails only the ratio serves about `min_requests × s / (100 − s)`
//! requests per window (s the step's share) and can exceed [`request_bound`].
//!
//! A variant's summed counters fall when stats rows are deleted, for example the rows of
//! replicas that stopped long ago. The window then restarts at the same step
//! ([`Outcome::WindowRestarted`]) because a difference against the old baseline undercounts it.

use ghaf_core::UnixMillis;
use ghaf_serving::Variant;
use ghaf_serving::policy::{
    CANDIDATE_VARIANT, CanarySpec, QualityCheck, RolloutState, RolloutStatus, VariantStats,
};
use serde::{Deserialize, Serialize};

use crate::measure;

/// Name of the variant that serves the stable version.
pub const STABLE_VARIANT: &str = ghaf_serving::PRIMARY_VARIANT;

/// Quality of both variants over the current check window, read from the prediction log
/// joined with labels.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QualityWindow {
    /// `accuracy`, `auc`, `f1`, `rmse` or `mae`.
    pub metric: String,
    pub candidate: Option<f64>,
    pub candidate_labels: u64,
    pub stable: Option<f64>,
    pub stable_labels: u64,
}

/// Returns whether a larger value of a quality metric is better; `None` for an unknown
/// metric.
pub fn higher_is_better(metric: &str) -> Option<bool> {
    match metric {
        "accuracy" | "auc" | "f1" => Some(true),
        "rmse" | "mae" => Some(false),
        _ => None,
    }
}

/// Result of one check on the current window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// `error_rate`, `p99_ms`, `p99_ratio` or `quality`.
    pub check: String,
    /// Largest allowed value (for `quality`: the largest allowed drop).
    pub threshold: f64,
    /// Measured value (for `quality`: the candidate's drop against the stable version).
    #[serde(default)]
    pub value: Option<f64>,
    /// Whether the window had enough requests or labels to judge the check.
    pub judged: bool,
    pub passed: bool,
    /// Reason the check was not judged, or a note on a check judged without a comparison.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Counters of one variant over the current window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VariantWindow {
    pub variant: String,
    pub model: String,
    pub version: i64,
    pub weight: u32,
    pub requests: u64,
    pub errors: u64,
    pub error_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Measurements a decision was based on, stored in the audit entry of the decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub rollout_id: String,
    /// Index of the step the measurements belong to.
    pub step: usize,
    /// Candidate share of traffic at that step, in percent.
    pub step_percent: u32,
    pub steps: Vec<u32>,
    pub candidate: VariantWindow,
    pub stable: VariantWindow,
    /// Candidate p99 divided by stable p99.
    pub p99_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<QualityWindow>,
    pub checks: Vec<CheckResult>,
    /// Failed checks after the decision.
    pub failures: u32,
    pub failure_threshold: u32,
    pub min_requests: u64,
    pub interval_secs: u64,
    pub window_started_at: UnixMillis,
    pub step_started_at: UnixMillis,
    /// Seconds the step has run.
    pub step_elapsed_secs: f64,
}

/// Next move of the controller after a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The rollout is not running (paused or ended): nothing changes.
    Idle,
    /// The step goes on: the interval has not elapsed or a check is not judged yet.
    Wait,
    /// A check failed below the threshold: a new window starts at the same step.
    CheckFailed,
    /// The step passed and the next one starts with new weights.
    StepPassed,
    /// The last step passed: the candidate serves all traffic.
    Promoted,
    /// Failures reached the threshold: the stable version serves all traffic.
    RolledBack,
    /// A variant's counters fell below the window's baseline, so a new window starts at the
    /// same step without a failure.
    WindowRestarted,
}

impl Outcome {
    /// Returns the audit action of the decision; `None` for decisions that change nothing.
    pub fn action(self) -> Option<&'static str> {
        match self {
            Outcome::Idle | Outcome::Wait => None,
            Outcome::CheckFailed => Some("endpoints.rollout.check_failed"),
            Outcome::StepPassed => Some("endpoints.rollout.step_passed"),
            Outcome::Promoted => Some("endpoints.rollout.promoted"),
            Outcome::RolledBack => Some("endpoints.rollout.rolled_back"),
            Outcome::WindowRestarted => Some("endpoints.rollout.window_restarted"),
        }
    }
}

/// A decision with the state and variants to store.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub outcome: Outcome,
    pub state: RolloutState,
    /// New variants when the weights or versions change.
    pub variants: Option<Vec<Variant>>,
    pub evidence: Evidence,
}

/// Checks that a canary spec can run, and returns what to fix otherwise.
pub fn validate(spec: &CanarySpec) -> Result<(), String> {
    if spec.steps.is_empty() {
        return Err(
            "canary steps are empty; give the candidate's traffic share per step, \
             in percent, such as [10, 50]"
                .to_owned(),
        );
    }
    for (index, &step) in spec.steps.iter().enumerate() {
        if !(1..=100).contains(&step) {
            return Err(format!(
                "canary step {index} is {step}%; each step must be 1 to 100"
            ));
        }
        if index > 0 && step <= spec.steps[index - 1] {
            return Err(format!(
                "canary steps {:?} must increase; step {index} ({step}%) is not above the one before",
                spec.steps
            ));
        }
    }
    if spec.min_requests == 0 {
        return Err("canary min_requests is 0; set at least 1".to_owned());
    }
    if spec.failure_threshold == 0 {
        return Err("canary failure_threshold is 0; set at least 1".to_owned());
    }
    if let Some(rate) = spec.checks.max_error_rate
        && !(0.0..=1.0).contains(&rate)
    {
        return Err(format!(
            "canary max_error_rate is {rate}; use a share from 0 to 1, such as 0.01"
        ));
    }
    for (name, value) in [
        ("max_p99_ms", spec.checks.max_p99_ms),
        ("max_p99_ratio", spec.checks.max_p99_ratio),
    ] {
        if let Some(value) = value
            && !(value.is_finite() && value > 0.0)
        {
            return Err(format!("canary {name} is {value}; use a positive number"));
        }
    }
    if let Some(quality) = &spec.checks.quality {
        validate_quality(quality)?;
    }
    Ok(())
}

fn validate_quality(quality: &QualityCheck) -> Result<(), String> {
    if higher_is_better(&quality.metric).is_none() {
        return Err(format!(
            "canary quality metric {:?} is unknown; use accuracy, auc, f1, rmse or mae",
            quality.metric
        ));
    }
    if !(quality.max_drop.is_finite() && quality.max_drop >= 0.0) {
        return Err(format!(
            "canary quality max_drop is {}; use 0 or a positive number",
            quality.max_drop
        ));
    }
    if quality.min_labels == 0 {
        return Err("canary quality min_labels is 0; set at least 1".to_owned());
    }
    Ok(())
}

/// Variants of a canary step: the stable version as `primary` with 100 − `percent`, the
/// candidate with `percent`.
pub fn step_variants(state: &RolloutState, percent: u32) -> Vec<Variant> {
    let percent = percent.min(100);
    vec![
        Variant {
            name: STABLE_VARIANT.to_owned(),
            model: state.stable_model.clone(),
            version: state.stable_version,
            weight: 100 - percent,
        },
        Variant {
            name: CANDIDATE_VARIANT.to_owned(),
            model: state.candidate_model.clone(),
            version: state.candidate_version,
            weight: percent,
        },
    ]
}

/// Returns the single variant that serves all traffic.
pub fn single_variant(model: &str, version: i64) -> Vec<Variant> {
    vec![Variant {
        name: STABLE_VARIANT.to_owned(),
        model: model.to_owned(),
        version,
        weight: 100,
    }]
}

/// Returns the upper bound on the requests a candidate that fails its request checks serves
/// before the rollback: `failure_threshold × (min_requests + per_tick)`, where `per_tick` is the
/// most candidate requests that arrive within one controller tick. The p99 ratio check at a
/// step above 50% can exceed it, because it also waits for `min_requests` stable requests.
pub fn request_bound(spec: &CanarySpec, per_tick: u64) -> u64 {
    u64::from(spec.failure_threshold).saturating_mul(spec.min_requests.saturating_add(per_tick))
}

/// Arguments of a new rollout.
#[derive(Clone, Debug)]
pub struct StartArgs<'a> {
    pub id: String,
    pub stable: (&'a str, i64),
    pub candidate: (&'a str, i64),
    pub stats: Vec<VariantStats>,
    pub now: UnixMillis,
    pub actor: &'a str,
    pub reason: String,
}

/// Starts a rollout at step 0: the candidate gets `steps[0]` percent and the window starts
/// with the counters read now.
pub fn start(spec: &CanarySpec, args: StartArgs<'_>) -> (RolloutState, Vec<Variant>) {
    let state = RolloutState {
        id: args.id,
        status: RolloutStatus::Running,
        stable_model: args.stable.0.to_owned(),
        stable_version: args.stable.1,
        candidate_model: args.candidate.0.to_owned(),
        candidate_version: args.candidate.1,
        step: 0,
        step_started_at: args.now,
        failures: 0,
        started_at: args.now,
        started_by: args.actor.to_owned(),
        ended_at: None,
        reason: Some(args.reason),
        baseline: args.stats,
        window_started_at: args.now,
    };
    let percent = spec.steps.first().copied().unwrap_or(100);
    let variants = step_variants(&state, percent);
    (state, variants)
}

fn variant_window(
    stats: &[VariantStats],
    baseline: &[VariantStats],
    name: &str,
    model: &str,
    version: i64,
    weight: u32,
) -> (VariantWindow, VariantStats) {
    let window = match measure::find(stats, name, version) {
        Some(current) => measure::delta(current, measure::find(baseline, name, version)),
        None => VariantStats {
            variant: name.to_owned(),
            model: model.to_owned(),
            version,
            ..VariantStats::default()
        },
    };
    let view = VariantWindow {
        variant: name.to_owned(),
        model: model.to_owned(),
        version,
        weight,
        requests: window.requests,
        errors: window.errors,
        error_rate: measure::error_rate(&window),
        p50_ms: measure::latency_quantile_ms(&window, 0.5),
        p99_ms: measure::latency_quantile_ms(&window, 0.99),
    };
    (view, window)
}

/// Measures the current window of a running rollout.
pub fn measure_window(
    spec: &CanarySpec,
    state: &RolloutState,
    stats: &[VariantStats],
    quality: Option<QualityWindow>,
    now: UnixMillis,
) -> Evidence {
    let percent = spec.steps.get(state.step).copied().unwrap_or(100);
    let (candidate, _) = variant_window(
        stats,
        &state.baseline,
        CANDIDATE_VARIANT,
        &state.candidate_model,
        state.candidate_version,
        percent,
    );
    let (stable, _) = variant_window(
        stats,
        &state.baseline,
        STABLE_VARIANT,
        &state.stable_model,
        state.stable_version,
        100 - percent.min(100),
    );
    let p99_ratio = match (candidate.p99_ms, stable.p99_ms) {
        (Some(candidate), Some(stable)) if stable > 0.0 => Some(candidate / stable),
        _ => None,
    };
    let mut evidence = Evidence {
        rollout_id: state.id.clone(),
        step: state.step,
        step_percent: percent,
        steps: spec.steps.clone(),
        candidate,
        stable,
        p99_ratio,
        quality,
        checks: Vec::new(),
        failures: state.failures,
        failure_threshold: spec.failure_threshold,
        min_requests: spec.min_requests,
        interval_secs: spec.interval_secs,
        window_started_at: state.window_started_at,
        step_started_at: state.step_started_at,
        step_elapsed_secs: (now - state.step_started_at).max(0) as f64 / 1000.0,
    };
    evidence.checks = judge(spec, &evidence);
    evidence
}

fn not_judged(check: &str, threshold: f64, value: Option<f64>, note: String) -> CheckResult {
    CheckResult {
        check: check.to_owned(),
        threshold,
        value,
        judged: false,
        passed: false,
        note: Some(note),
    }
}

fn judged(check: &str, threshold: f64, value: f64) -> CheckResult {
    CheckResult {
        check: check.to_owned(),
        threshold,
        value: Some(value),
        judged: true,
        passed: value <= threshold,
        note: None,
    }
}

/// Judges every configured check on the window in `evidence`.
fn judge(spec: &CanarySpec, evidence: &Evidence) -> Vec<CheckResult> {
    let mut results = Vec::new();
    let candidate = &evidence.candidate;
    let stable = &evidence.stable;
    let enough = candidate.requests >= spec.min_requests;
    let requests_note = || {
        format!(
            "{} of {} candidate requests in this window",
            candidate.requests, spec.min_requests
        )
    };
    // The stable version gets no traffic at a 100% step, so comparisons with it pass.
    let stable_idle = stable.weight == 0;

    if let Some(max) = spec.checks.max_error_rate {
        results.push(match candidate.error_rate {
            Some(rate) if enough => judged("error_rate", max, rate),
            rate => not_judged("error_rate", max, rate, requests_note()),
        });
    }
    if let Some(max) = spec.checks.max_p99_ms {
        results.push(match candidate.p99_ms {
            Some(p99) if enough => judged("p99_ms", max, p99),
            p99 => not_judged("p99_ms", max, p99, requests_note()),
        });
    }
    if let Some(max) = spec.checks.max_p99_ratio {
        results.push(if !enough {
            not_judged("p99_ratio", max, evidence.p99_ratio, requests_note())
        } else if stable_idle {
            CheckResult {
                note: Some("the stable version gets no traffic at this step".to_owned()),
                ..judged("p99_ratio", max, 0.0)
            }
        } else {
            match evidence.p99_ratio {
                Some(ratio) if stable.requests >= spec.min_requests => {
                    judged("p99_ratio", max, ratio)
                }
                ratio => not_judged(
                    "p99_ratio",
                    max,
                    ratio,
                    format!(
                        "{} of {} stable requests in this window",
                        stable.requests, spec.min_requests
                    ),
                ),
            }
        });
    }
    if let Some(quality) = &spec.checks.quality {
        results.push(judge_quality(
            quality,
            evidence.quality.as_ref(),
            stable_idle,
        ));
    }
    results
}

fn judge_quality(
    check: &QualityCheck,
    window: Option<&QualityWindow>,
    stable_idle: bool,
) -> CheckResult {
    let Some(window) = window else {
        return not_judged(
            "quality",
            check.max_drop,
            None,
            "no labelled predictions in this window, or the prediction log could not be read"
                .to_owned(),
        );
    };
    if window.candidate_labels < check.min_labels {
        return not_judged(
            "quality",
            check.max_drop,
            None,
            format!(
                "{} of {} labelled candidate rows in this window",
                window.candidate_labels, check.min_labels
            ),
        );
    }
    if stable_idle {
        return CheckResult {
            note: Some("the stable version gets no traffic at this step".to_owned()),
            ..judged("quality", check.max_drop, 0.0)
        };
    }
    let higher = higher_is_better(&check.metric).unwrap_or(true);
    match (window.candidate, window.stable) {
        (Some(candidate), Some(stable)) if window.stable_labels >= check.min_labels => {
            let drop = if higher {
                stable - candidate
            } else {
                candidate - stable
            };
            judged("quality", check.max_drop, drop)
        }
        _ => not_judged(
            "quality",
            check.max_drop,
            None,
            format!(
                "{} of {} labelled stable rows with a {} value in this window",
                window.stable_labels, check.min_labels, check.metric
            ),
        ),
    }
}

/// Decides the next move of a rollout from the counters read now (`stats`, cumulative) and
/// the quality of the current window.
pub fn decide(
    spec: &CanarySpec,
    state: &RolloutState,
    stats: &[VariantStats],
    quality: Option<QualityWindow>,
    now: UnixMillis,
) -> Decision {
    let mut evidence = measure_window(spec, state, stats, quality, now);
    let mut next = state.clone();
    if state.status != RolloutStatus::Running {
        return Decision {
            outcome: Outcome::Idle,
            state: next,
            variants: None,
            evidence,
        };
    }

    if let Some(variant) = counters_went_back(state, stats) {
        // The checks ran on a difference that undercounts the window, so none of them counts.
        evidence.checks.clear();
        next.baseline = stats.to_vec();
        next.window_started_at = now;
        next.reason = Some(format!(
            "the {variant} counters fell below the window's baseline (stats rows were deleted \
             or pruned); a new window starts at step {}",
            state.step
        ));
        return Decision {
            outcome: Outcome::WindowRestarted,
            state: next,
            variants: None,
            evidence,
        };
    }

    let failed: Vec<&CheckResult> = evidence
        .checks
        .iter()
        .filter(|check| check.judged && !check.passed)
        .collect();
    if !failed.is_empty() {
        let names: Vec<String> = failed
            .iter()
            .map(|check| {
                format!(
                    "{} {} > {}",
                    check.check,
                    check.value.map_or_else(|| "-".to_owned(), format_value),
                    format_value(check.threshold)
                )
            })
            .collect();
        next.failures = state.failures.saturating_add(1);
        evidence.failures = next.failures;
        if next.failures >= spec.failure_threshold {
            next.status = RolloutStatus::RolledBack;
            next.ended_at = Some(now);
            next.reason = Some(format!(
                "rolled back after {} failed checks (threshold {}): {}",
                next.failures,
                spec.failure_threshold,
                names.join(", ")
            ));
            let variants = single_variant(&state.stable_model, state.stable_version);
            return Decision {
                outcome: Outcome::RolledBack,
                state: next,
                variants: Some(variants),
                evidence,
            };
        }
        next.reason = Some(format!(
            "check failed at step {} ({} of {} failures): {}",
            state.step,
            next.failures,
            spec.failure_threshold,
            names.join(", ")
        ));
        next.baseline = stats.to_vec();
        next.window_started_at = now;
        return Decision {
            outcome: Outcome::CheckFailed,
            state: next,
            variants: None,
            evidence,
        };
    }

    let interval_ms = i64::try_from(spec.interval_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let elapsed = now - state.step_started_at >= interval_ms;
    let all_judged = evidence.checks.iter().all(|check| check.judged);
    let enough = evidence.candidate.requests >= spec.min_requests;
    if !(elapsed && all_judged && enough) {
        return Decision {
            outcome: Outcome::Wait,
            state: next,
            variants: None,
            evidence,
        };
    }

    if state.step + 1 < spec.steps.len() {
        next.step = state.step + 1;
        next.step_started_at = now;
        next.baseline = stats.to_vec();
        next.window_started_at = now;
        let percent = spec.steps[next.step];
        next.reason = Some(format!(
            "step {} passed with {} candidate requests; step {} sends {percent}% to the candidate",
            state.step, evidence.candidate.requests, next.step
        ));
        let variants = step_variants(&next, percent);
        return Decision {
            outcome: Outcome::StepPassed,
            state: next,
            variants: Some(variants),
            evidence,
        };
    }

    next.status = RolloutStatus::Promoted;
    next.ended_at = Some(now);
    next.reason = Some(format!(
        "promoted after the last step ({}%) passed with {} candidate requests",
        evidence.step_percent, evidence.candidate.requests
    ));
    let variants = single_variant(&state.candidate_model, state.candidate_version);
    Decision {
        outcome: Outcome::Promoted,
        state: next,
        variants: Some(variants),
        evidence,
    }
}

/// Returns the name of the first variant (candidate, then stable) whose counters fell below
/// the rollout's baseline.
fn counters_went_back(state: &RolloutState, stats: &[VariantStats]) -> Option<&'static str> {
    let variants = [
        (
            CANDIDATE_VARIANT,
            &state.candidate_model,
            state.candidate_version,
        ),
        (STABLE_VARIANT, &state.stable_model, state.stable_version),
    ];
    variants.into_iter().find_map(|(name, model, version)| {
        let current = measure::find(stats, name, version).filter(|s| &s.model == model)?;
        let baseline = measure::find(&state.baseline, name, version);
        measure::went_back(current, baseline).then_some(name)
    })
}

fn format_value(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value:.4}")
    }
}

/// A manual action on a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ManualAction {
    Promote,
    Pause,
    Resume,
    Abort,
}

impl ManualAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ManualAction::Promote => "promote",
            ManualAction::Pause => "pause",
            ManualAction::Resume => "resume",
            ManualAction::Abort => "abort",
        }
    }

    /// Returns the audit action of the decision.
    pub fn audit_action(self) -> &'static str {
        match self {
            ManualAction::Promote => "endpoints.rollout.promoted",
            ManualAction::Pause => "endpoints.rollout.paused",
            ManualAction::Resume => "endpoints.rollout.resumed",
            ManualAction::Abort => "endpoints.rollout.aborted",
        }
    }
}

/// Applies a manual action to a rollout. Returns the new state and, when the routing
/// changes, the new variants; an error message when the action does not apply to the
/// rollout's status.
pub fn apply_manual(
    state: &RolloutState,
    action: ManualAction,
    stats: &[VariantStats],
    now: UnixMillis,
    actor: &str,
) -> Result<(RolloutState, Option<Vec<Variant>>), String> {
    let active = matches!(state.status, RolloutStatus::Running | RolloutStatus::Paused);
    if !active {
        return Err(format!(
            "rollout {} is {}, so it cannot {}; start a new rollout first",
            state.id,
            status_name(state.status),
            action.as_str()
        ));
    }
    let mut next = state.clone();
    match action {
        ManualAction::Promote => {
            next.status = RolloutStatus::Promoted;
            next.ended_at = Some(now);
            next.reason = Some(format!(
                "promoted by {actor} at step {}, skipping the remaining steps",
                state.step
            ));
            let variants = single_variant(&state.candidate_model, state.candidate_version);
            Ok((next, Some(variants)))
        }
        ManualAction::Abort => {
            next.status = RolloutStatus::Aborted;
            next.ended_at = Some(now);
            next.reason = Some(format!("aborted by {actor} at step {}", state.step));
            let variants = single_variant(&state.stable_model, state.stable_version);
            Ok((next, Some(variants)))
        }
        ManualAction::Pause => {
            if state.status == RolloutStatus::Paused {
                return Err(format!("rollout {} is already paused", state.id));
            }
            next.status = RolloutStatus::Paused;
            next.reason = Some(format!(
                "paused by {actor} at step {}; traffic keeps the current weights",
                state.step
            ));
            Ok((next, None))
        }
        ManualAction::Resume => {
            if state.status == RolloutStatus::Running {
                return Err(format!("rollout {} is running, not paused", state.id));
            }
            next.status = RolloutStatus::Running;
            // The step runs again from now, on a new window, so traffic served while paused
            // is not judged.
            next.step_started_at = now;
            next.window_started_at = now;
            next.baseline = stats.to_vec();
            next.reason = Some(format!("resumed by {actor} at step {}", state.step));
            Ok((next, None))
        }
    }
}

/// Name of a status as stored.
pub fn status_name(status: RolloutStatus) -> &'static str {
    match status {
        RolloutStatus::Running => "running",
        RolloutStatus::Paused => "paused",
        RolloutStatus::Promoted => "promoted",
        RolloutStatus::RolledBack => "rolled_back",
        RolloutStatus::Aborted => "aborted",
    }
}
