//! Traffic settings of an endpoint (policy, variants, shadow, followed alias), the
//! compare-and-set write the rollout controller uses, and the variant stats it reads.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ghaf_core::Name;
use serde::Serialize;

use crate::loader::LoadError;
use crate::policy::{
    CANDIDATE_VARIANT, CanarySpec, MAX_VARIANT_WEIGHT, QUALITY_METRICS, RolloutState, ShadowSpec,
    StickyKey, TrafficPolicy, VariantStats,
};
use crate::stats::LATENCY_BUCKETS;
use crate::store::{Endpoint, Variant};
use crate::{
    DeploySpec, EndpointInfo, EndpointScope, PRIMARY_VARIANT, ServeError, ServingService,
    VariantState, lock_read, tracking_scope,
};

/// Maximum variants of one endpoint, shadow included; each one loads a model on every
/// replica.
pub const MAX_VARIANTS: usize = 16;
/// Maximum length of a sticky key's header or input name, and of a followed alias.
const MAX_KEY_NAME: usize = 256;
/// Time between two checks of the load state in [`ServingService::wait_loaded`].
const LOAD_POLL: Duration = Duration::from_millis(25);

/// New traffic settings for an endpoint; `None` fields stay as they are.
#[derive(Clone, Debug, Default)]
pub struct PolicyUpdate {
    pub policy: Option<TrafficPolicy>,
    /// The full list of variants, replacing the stored one.
    pub variants: Option<Vec<Variant>>,
    /// `Some(None)` removes the shadow.
    pub shadow: Option<Option<ShadowSpec>>,
    /// `Some(None)` stops following an alias.
    pub follow_alias: Option<Option<String>>,
}

/// Stats of one variant with the figures derived from them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VariantStatsView {
    #[serde(flatten)]
    pub stats: VariantStats,
    /// Share of requests that failed on the server side; `None` without requests.
    pub error_rate: Option<f64>,
    /// Upper bound of the latency bucket that contains the median, in milliseconds.
    pub p50_ms: Option<f64>,
    /// Upper bound of the latency bucket that contains the 99th percentile, in milliseconds;
    /// `null` in JSON when it lies beyond the last bucket bound (5 s).
    pub p99_ms: Option<f64>,
}

impl From<VariantStats> for VariantStatsView {
    fn from(stats: VariantStats) -> Self {
        Self {
            error_rate: stats.error_rate(),
            p50_ms: stats.latency_quantile_ms(0.5),
            p99_ms: stats.latency_quantile_ms(0.99),
            stats,
        }
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> ServeError {
    ServeError::InvalidArgument {
        field,
        message: message.into(),
    }
}

/// Checks the syntax of a followed alias.
pub(crate) fn validate_alias(alias: &str) -> Result<(), ServeError> {
    let valid = !alias.is_empty()
        && alias.len() <= MAX_KEY_NAME
        && alias
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid {
        return Err(invalid(
            "follow_alias",
            format!(
                "alias {alias:?} is not a valid alias name; use 1 to {MAX_KEY_NAME} letters, digits, '_' or '-'"
            ),
        ));
    }
    Ok(())
}

fn validate_variants(variants: &[Variant]) -> Result<(), ServeError> {
    if variants.is_empty() {
        return Err(invalid("variants", "list at least one variant"));
    }
    if variants.len() > MAX_VARIANTS {
        return Err(invalid(
            "variants",
            format!(
                "{} variants listed; an endpoint has at most {MAX_VARIANTS}",
                variants.len()
            ),
        ));
    }
    let mut names = HashSet::new();
    for (index, variant) in variants.iter().enumerate() {
        Name::parse(&variant.name).map_err(|error| {
            invalid(
                "variants",
                format!(
                    "variant {index} has the invalid name {:?}: {error}",
                    variant.name
                ),
            )
        })?;
        if !names.insert(variant.name.as_str()) {
            return Err(invalid(
                "variants",
                format!(
                    "variant name {:?} is listed twice; names must be unique",
                    variant.name
                ),
            ));
        }
        if variant.model.trim().is_empty() {
            return Err(invalid(
                "variants",
                format!("variant {:?} names no model", variant.name),
            ));
        }
        if variant.version < 1 {
            return Err(invalid(
                "variants",
                format!(
                    "variant {:?} has version {}; model versions start at 1",
                    variant.name, variant.version
                ),
            ));
        }
        if variant.weight > MAX_VARIANT_WEIGHT {
            return Err(invalid(
                "variants",
                format!(
                    "variant {:?} has weight {}; use at most {MAX_VARIANT_WEIGHT}",
                    variant.name, variant.weight
                ),
            ));
        }
    }
    Ok(())
}

fn validate_sticky(sticky: Option<&StickyKey>) -> Result<(), ServeError> {
    let name = match sticky {
        None => return Ok(()),
        Some(StickyKey::Header { name }) | Some(StickyKey::Input { name }) => name,
    };
    if name.trim().is_empty() || name.len() > MAX_KEY_NAME {
        return Err(invalid(
            "policy.sticky",
            format!("sticky key name {name:?} must have 1 to {MAX_KEY_NAME} characters"),
        ));
    }
    Ok(())
}

fn validate_metric(field: &'static str, metric: &str) -> Result<(), ServeError> {
    if !QUALITY_METRICS.contains(&metric) {
        return Err(invalid(
            field,
            format!(
                "unknown metric {metric:?}; use one of {}",
                QUALITY_METRICS.join(", ")
            ),
        ));
    }
    Ok(())
}

fn validate_canary(spec: &CanarySpec) -> Result<(), ServeError> {
    if spec.steps.is_empty() {
        return Err(invalid(
            "policy.steps",
            "list at least one step, such as [5, 25, 50, 100]",
        ));
    }
    let mut previous = 0;
    for &step in &spec.steps {
        if step == 0 || step > 100 {
            return Err(invalid(
                "policy.steps",
                format!("step {step} is outside 1 to 100 percent"),
            ));
        }
        if step <= previous {
            return Err(invalid(
                "policy.steps",
                format!("step {step} follows {previous}; steps must increase strictly"),
            ));
        }
        previous = step;
    }
    if spec.interval_secs < 1 {
        return Err(invalid(
            "policy.interval_secs",
            "interval_secs is 0; a step runs at least 1 second",
        ));
    }
    if spec.min_requests < 1 {
        return Err(invalid(
            "policy.min_requests",
            "min_requests is 0; a check needs at least 1 request",
        ));
    }
    if spec.failure_threshold < 1 {
        return Err(invalid(
            "policy.failure_threshold",
            "failure_threshold is 0; roll back after at least 1 failed check",
        ));
    }
    let checks = &spec.checks;
    if let Some(rate) = checks.max_error_rate
        && !(0.0..=1.0).contains(&rate)
    {
        return Err(invalid(
            "policy.checks.max_error_rate",
            format!("max_error_rate is {rate}; use a share from 0 to 1, such as 0.01"),
        ));
    }
    if let Some(ms) = checks.max_p99_ms
        && !(ms.is_finite() && ms > 0.0)
    {
        return Err(invalid(
            "policy.checks.max_p99_ms",
            format!("max_p99_ms is {ms}; use a positive number of milliseconds"),
        ));
    }
    if let Some(ratio) = checks.max_p99_ratio
        && !(ratio.is_finite() && ratio > 0.0)
    {
        return Err(invalid(
            "policy.checks.max_p99_ratio",
            format!("max_p99_ratio is {ratio}; use a positive ratio, such as 1.5"),
        ));
    }
    if let Some(quality) = &checks.quality {
        validate_metric("policy.checks.quality.metric", &quality.metric)?;
        if !(quality.max_drop.is_finite() && quality.max_drop >= 0.0) {
            return Err(invalid(
                "policy.checks.quality.max_drop",
                format!(
                    "max_drop is {}; use 0 or a positive amount in the metric's units",
                    quality.max_drop
                ),
            ));
        }
        if quality.min_labels < 1 {
            return Err(invalid(
                "policy.checks.quality.min_labels",
                "min_labels is 0; a quality check needs at least 1 labelled row",
            ));
        }
    }
    validate_sticky(spec.sticky.as_ref())
}

/// Checks a policy, its variants and the shadow together.
pub(crate) fn validate_traffic(
    policy: &TrafficPolicy,
    variants: &[Variant],
    shadow: Option<&ShadowSpec>,
) -> Result<(), ServeError> {
    validate_variants(variants)?;
    if let Some(shadow) = shadow {
        if !(shadow.percent.is_finite() && (0.0..=100.0).contains(&shadow.percent)) {
            return Err(invalid(
                "shadow.percent",
                format!(
                    "percent is {}; mirror 0 to 100 percent of requests",
                    shadow.percent
                ),
            ));
        }
        if !variants.iter().any(|v| v.name == shadow.variant) {
            return Err(invalid(
                "shadow.variant",
                format!(
                    "variant {:?} is not among the endpoint's variants ({}); add it to variants with weight 0",
                    shadow.variant,
                    variants
                        .iter()
                        .map(|v| v.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let canary_candidate =
            matches!(policy, TrafficPolicy::Canary(_)) && shadow.variant == CANDIDATE_VARIANT;
        if shadow.variant == PRIMARY_VARIANT || canary_candidate {
            return Err(invalid(
                "shadow.variant",
                format!(
                    "variant {:?} receives routed traffic and cannot be the shadow; mirror to another variant",
                    shadow.variant
                ),
            ));
        }
    }
    let routed: Vec<&Variant> = variants
        .iter()
        .filter(|v| shadow.is_none_or(|s| s.variant != v.name))
        .collect();
    if routed.is_empty() {
        return Err(invalid(
            "variants",
            "every variant is the shadow; list a variant that answers requests",
        ));
    }
    match policy {
        TrafficPolicy::Single => Ok(()),
        TrafficPolicy::Ab(spec) => {
            if routed.len() < 2 {
                return Err(invalid(
                    "variants",
                    "an A/B policy needs at least 2 variants besides the shadow",
                ));
            }
            if routed.iter().all(|v| v.weight == 0) {
                return Err(invalid(
                    "variants",
                    "every weight of the A/B variants is 0; give at least one variant a positive weight",
                ));
            }
            if let Some(metric) = &spec.metric {
                validate_metric("policy.metric", metric)?;
            }
            if spec.min_samples < 1 {
                return Err(invalid(
                    "policy.min_samples",
                    "min_samples is 0; the analysis needs at least 1 sample per variant",
                ));
            }
            if !(spec.confidence > 0.0 && spec.confidence < 1.0) {
                return Err(invalid(
                    "policy.confidence",
                    format!(
                        "confidence is {}; use a level between 0 and 1, such as 0.95",
                        spec.confidence
                    ),
                ));
            }
            validate_sticky(spec.sticky.as_ref())
        }
        TrafficPolicy::Canary(spec) => {
            if !routed.iter().any(|v| v.name == PRIMARY_VARIANT) {
                return Err(invalid(
                    "variants",
                    format!(
                        "a canary policy needs the stable variant {PRIMARY_VARIANT:?}; the candidate is named {CANDIDATE_VARIANT:?}"
                    ),
                ));
            }
            validate_canary(spec)
        }
    }
}

impl ServingService {
    /// Returns the version a registered model's alias points at now.
    pub async fn resolve_alias(
        &self,
        scope: &EndpointScope,
        model: &str,
        alias: &str,
    ) -> Result<i64, ServeError> {
        match self
            .inner
            .loader
            .resolve_alias(&tracking_scope(scope), model, alias)
            .await
        {
            Ok(version) => Ok(version),
            Err(LoadError::NotFound(_)) => Err(ServeError::NotFound {
                what: "model alias",
                name: format!("{model}@{alias}"),
            }),
            Err(LoadError::Failed(reason)) => Err(ServeError::Internal(reason)),
            Err(LoadError::Transient(reason)) => Err(ServeError::Unavailable(format!(
                "cannot resolve alias {alias:?} of model {model}: {reason}; retry later"
            ))),
        }
    }

    /// Checks that every (model, version) of `variants` that `known` does not list is
    /// registered.
    async fn check_variant_references(
        &self,
        scope: &EndpointScope,
        variants: &[Variant],
        known: &[Variant],
    ) -> Result<(), ServeError> {
        let mut checked: HashSet<(&str, i64)> = known
            .iter()
            .map(|v| (v.model.as_str(), v.version))
            .collect();
        for variant in variants {
            if !checked.insert((variant.model.as_str(), variant.version)) {
                continue;
            }
            let spec = DeploySpec {
                model: variant.model.clone(),
                version: variant.version,
                ..DeploySpec::default()
            };
            self.check_references(scope, &spec).await?;
        }
        Ok(())
    }

    async fn stored(&self, scope: &EndpointScope, name: &str) -> Result<Endpoint, ServeError> {
        self.inner
            .store
            .get(&scope.tenant, &scope.project, name)
            .await?
            .ok_or_else(|| ServeError::NotFound {
                what: "endpoint",
                name: name.to_owned(),
            })
    }

    /// Changes an endpoint's traffic settings and installs them on this server at once; a
    /// variant whose model did not change keeps its loaded model. Other replicas pick the
    /// change up within [`crate::REVALIDATE_AFTER`]. Setting a canary policy stores the
    /// policy only: the rollout controller starts rollouts. While a rollout runs or is
    /// paused, the policy and variants belong to it and cannot be changed here.
    pub async fn set_policy(
        &self,
        scope: &EndpointScope,
        name: &str,
        update: PolicyUpdate,
        actor: &str,
    ) -> Result<EndpointInfo, ServeError> {
        let current = self.stored(scope, name).await?;
        if (update.policy.is_some() || update.variants.is_some())
            && current
                .rollout
                .as_ref()
                .is_some_and(RolloutState::is_active)
        {
            return Err(ServeError::Conflict(format!(
                "endpoint {name:?} has a rollout in progress, which controls its policy and variants; abort or finish the rollout first"
            )));
        }
        let mut endpoint = current.clone();
        if let Some(policy) = update.policy {
            endpoint.policy = policy;
        }
        let variants_given = update.variants.is_some();
        if let Some(variants) = update.variants {
            endpoint.variants = variants;
        }
        if let Some(shadow) = update.shadow {
            // Removing the shadow without a new variant list also removes its variant:
            // left in place, it would start taking routed traffic by its weight, which was
            // ignored while it was the shadow.
            if shadow.is_none()
                && !variants_given
                && let Some(removed) = &current.shadow
            {
                endpoint.variants.retain(|v| v.name != removed.variant);
            }
            endpoint.shadow = shadow;
        }
        if let Some(alias) = update.follow_alias {
            if let Some(alias) = &alias {
                validate_alias(alias)?;
            }
            endpoint.follow_alias = alias;
        }
        validate_traffic(
            &endpoint.policy,
            &endpoint.variants,
            endpoint.shadow.as_ref(),
        )?;
        self.check_variant_references(scope, &endpoint.variants, &current.variants)
            .await?;
        endpoint.generation = current.generation + 1;
        endpoint.updated_at = ghaf_core::now_millis();
        endpoint.updated_by = actor.to_owned();
        self.inner
            .store
            .update(&endpoint, current.generation)
            .await?;
        tracing::info!(
            tenant = %scope.tenant,
            project = %scope.project,
            endpoint = name,
            generation = endpoint.generation,
            policy = endpoint.policy.kind(),
            variants = endpoint.variants.len(),
            shadow = endpoint.shadow.as_ref().map_or("", |s| s.variant.as_str()),
            actor,
            "endpoint traffic settings changed"
        );
        // The generation was just written, so only a runtime of this write (installed by a
        // concurrent read of the store) can be as new; an older one is replaced.
        let runtime = self.install_runtime(endpoint, true);
        Ok(self.info(&runtime))
    }

    /// Replaces an endpoint's variants, policy and rollout state when its stored
    /// generation is still `expected_generation`, and installs the new runtime on this
    /// server at once (variants whose model did not change keep their loaded model).
    /// Returns `Conflict` when another write came first. A shadow variant that `variants`
    /// leaves out is carried over from the stored variants, so the shadow outlives the
    /// rollout.
    #[allow(clippy::too_many_arguments)]
    pub async fn apply_rollout(
        &self,
        scope: &EndpointScope,
        name: &str,
        expected_generation: i64,
        variants: Vec<Variant>,
        policy: TrafficPolicy,
        rollout: Option<RolloutState>,
        actor: &str,
    ) -> Result<Endpoint, ServeError> {
        let current = self.stored(scope, name).await?;
        if current.generation != expected_generation {
            return Err(ServeError::Conflict(format!(
                "endpoint {name:?} is at generation {}, not {expected_generation}; another write came first, read it again and retry",
                current.generation
            )));
        }
        let mut endpoint = current.clone();
        endpoint.variants = variants;
        if let Some(shadow) = &current.shadow
            && !endpoint.variants.iter().any(|v| v.name == shadow.variant)
            && let Some(stored) = current.variants.iter().find(|v| v.name == shadow.variant)
        {
            endpoint.variants.push(stored.clone());
        }
        endpoint.policy = policy;
        endpoint.rollout = rollout;
        validate_traffic(
            &endpoint.policy,
            &endpoint.variants,
            endpoint.shadow.as_ref(),
        )?;
        self.check_variant_references(scope, &endpoint.variants, &current.variants)
            .await?;
        endpoint.generation = current.generation + 1;
        endpoint.updated_at = ghaf_core::now_millis();
        endpoint.updated_by = actor.to_owned();
        self.inner
            .store
            .update(&endpoint, expected_generation)
            .await?;
        tracing::info!(
            tenant = %scope.tenant,
            project = %scope.project,
            endpoint = name,
            generation = endpoint.generation,
            policy = endpoint.policy.kind(),
            rollout = endpoint.rollout.as_ref().map_or("", |r| r.id.as_str()),
            actor,
            "rollout changed the endpoint's traffic"
        );
        self.install_runtime(endpoint.clone(), true);
        Ok(endpoint)
    }

    /// Lists every endpoint of every tenant whose `follow_alias` is set or whose rollout is
    /// running or paused.
    pub async fn rollout_endpoints(&self) -> Result<Vec<Endpoint>, ServeError> {
        let endpoints = self.inner.store.list_with_rollouts().await?;
        Ok(endpoints
            .into_iter()
            .filter(|endpoint| {
                endpoint.follow_alias.is_some()
                    || endpoint
                        .rollout
                        .as_ref()
                        .is_some_and(RolloutState::is_active)
            })
            .collect())
    }

    /// Cumulative stats of the endpoint's variants summed over replicas (flushes this
    /// replica first). One entry per (variant, model, version): the current variants first,
    /// in their order and with zero counters when they have served nothing yet, then
    /// earlier variants that still have counters.
    pub async fn variant_stats(
        &self,
        scope: &EndpointScope,
        name: &str,
    ) -> Result<Vec<VariantStats>, ServeError> {
        let record = self.stored(scope, name).await?;
        self.inner.stats.flush().await?;
        let mut stored = self
            .inner
            .stats
            .read(&scope.tenant, &scope.project, name)
            .await?;
        let mut result = Vec::with_capacity(stored.len() + record.variants.len());
        for variant in &record.variants {
            let position = stored.iter().position(|s| {
                s.variant == variant.name
                    && s.model == variant.model
                    && s.version == variant.version
            });
            result.push(match position {
                Some(index) => stored.remove(index),
                None => VariantStats {
                    variant: variant.name.clone(),
                    model: variant.model.clone(),
                    version: variant.version,
                    latency_buckets: vec![0; LATENCY_BUCKETS],
                    ..VariantStats::default()
                },
            });
        }
        result.extend(stored);
        Ok(result)
    }

    /// Waits until every variant of the endpoint on this server is ready or failed, up to
    /// `timeout`, and returns the endpoint with its status then (still `loading` after a
    /// timeout).
    pub async fn wait_loaded(
        &self,
        scope: &EndpointScope,
        name: &str,
        timeout: Duration,
    ) -> Result<EndpointInfo, ServeError> {
        let deadline = Instant::now() + timeout;
        loop {
            let runtime =
                self.runtime_for(scope, name)
                    .await?
                    .ok_or_else(|| ServeError::NotFound {
                        what: "endpoint",
                        name: name.to_owned(),
                    })?;
            let settled = runtime.variants.iter().all(|variant| {
                matches!(
                    &*lock_read(&variant.slot.state),
                    VariantState::Ready(_) | VariantState::Failed { .. }
                )
            });
            let now = Instant::now();
            if settled || now >= deadline {
                return Ok(self.info(&runtime));
            }
            tokio::time::sleep(LOAD_POLL.min(deadline - now)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::AbSpec;

    fn variant(name: &str, weight: u32) -> Variant {
        Variant {
            name: name.into(),
            model: "m".into(),
            version: 1,
            weight,
        }
    }

    fn field(result: Result<(), ServeError>) -> Option<&'static str> {
        result.err().and_then(|error| error.field())
    }

    #[test]
    fn ab_needs_two_variants() {
        let policy = TrafficPolicy::Ab(AbSpec::default());
        let result = validate_traffic(&policy, &[variant("primary", 100)], None);
        assert_eq!(field(result), Some("variants"));
    }

    #[test]
    fn shadow_must_not_be_primary() {
        let shadow = ShadowSpec {
            variant: "primary".into(),
            percent: 10.0,
        };
        let result = validate_traffic(
            &TrafficPolicy::Single,
            &[variant("primary", 100), variant("b", 0)],
            Some(&shadow),
        );
        assert_eq!(field(result), Some("shadow.variant"));
    }

    #[test]
    fn valid_ab_with_shadow_passes() {
        let shadow = ShadowSpec {
            variant: "shadow".into(),
            percent: 50.0,
        };
        let result = validate_traffic(
            &TrafficPolicy::Ab(AbSpec::default()),
            &[
                variant("primary", 70),
                variant("b", 30),
                variant("shadow", 0),
            ],
            Some(&shadow),
        );
        assert!(result.is_ok(), "{result:?}");
    }

    #[test]
    fn alias_names_are_checked() {
        assert!(validate_alias("champion").is_ok());
        assert_eq!(field(validate_alias("")), Some("follow_alias"));
        assert_eq!(field(validate_alias("a b")), Some("follow_alias"));
    }
}
