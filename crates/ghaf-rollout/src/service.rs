//! The rollout service: manual actions, the controller's tick over every endpoint that
//! follows an alias or has a rollout in progress, the history and the A/B analysis.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ghaf_core::audit::AuditEntry;
use ghaf_core::{ProjectId, TenantId, UnixMillis};
use ghaf_ingest::IngestService;
use ghaf_meta::MetaStore;
use ghaf_serving::policy::{
    CANDIDATE_VARIANT, CanarySpec, QualityCheck, RolloutState, RolloutStatus, TrafficPolicy,
};
use ghaf_serving::{Endpoint, EndpointScope, ServeError, ServingService, Variant};
use ghaf_tracking::{TrackingError, TrackingService};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::RolloutError;
use crate::analysis::{self, Analysis, AnalysisSettings, VariantSample};
use crate::canary::{
    self, Decision, ManualAction, Outcome, QualityWindow, STABLE_VARIANT, StartArgs,
};
use crate::evidence::{self, CONTROLLER_ACTOR, Record};
use crate::measure;
use crate::quality;

/// A request to start a canary to a model version.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// Registered model of the candidate; the stable version's model when absent.
    #[serde(default)]
    pub model: Option<String>,
    /// Registered model version of the candidate.
    pub version: i64,
    /// Canary settings that replace the endpoint's policy; the endpoint's canary policy
    /// when absent.
    #[serde(default)]
    pub canary: Option<CanarySpec>,
}

/// Options of an A/B analysis; unset fields come from the endpoint's policy.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisRequest {
    /// Predictions logged at or after this time are joined with labels; the time of the
    /// endpoint's last change when absent.
    #[serde(default)]
    pub since: Option<UnixMillis>,
    #[serde(default)]
    pub metric: Option<String>,
    #[serde(default)]
    pub min_samples: Option<u64>,
    #[serde(default)]
    pub confidence: Option<f64>,
}

/// Counts of one controller pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TickSummary {
    /// Endpoints looked at.
    pub endpoints: usize,
    /// Decisions stored (rollouts started, steps passed, failed checks, promotions,
    /// rollbacks, alias switches).
    pub decisions: usize,
    /// Endpoints skipped because another writer changed them first.
    pub conflicts: usize,
    pub errors: usize,
}

type EndpointKey = (TenantId, ProjectId, String);

struct Inner {
    serving: Arc<ServingService>,
    tracking: TrackingService,
    meta: Arc<dyn MetaStore>,
    ingest: IngestService,
    /// Last error per endpoint, so a failure that repeats every tick is logged once.
    failing: Mutex<HashMap<EndpointKey, String>>,
    /// Last failed prediction log read per endpoint, so it is logged once.
    quality_failing: Mutex<HashMap<EndpointKey, String>>,
}

/// Rollouts of every endpoint on the metadata database.
#[derive(Clone)]
pub struct RolloutService {
    inner: Arc<Inner>,
}

fn scope_of(endpoint: &Endpoint) -> EndpointScope {
    EndpointScope {
        tenant: endpoint.tenant.clone(),
        project: endpoint.project.clone(),
    }
}

fn stable_variant(endpoint: &Endpoint) -> Option<&Variant> {
    endpoint
        .variants
        .iter()
        .find(|variant| variant.name == STABLE_VARIANT)
        .or_else(|| endpoint.variants.first())
}

fn weights(variants: &[Variant]) -> serde_json::Value {
    variants
        .iter()
        .map(|variant| {
            serde_json::json!({
                "variant": variant.name,
                "model": variant.model,
                "version": variant.version,
                "weight": variant.weight,
            })
        })
        .collect()
}

fn status_json(state: &RolloutState) -> serde_json::Value {
    serde_json::json!({
        "status": canary::status_name(state.status),
        "step": state.step,
        "failures": state.failures,
        "stable": { "model": state.stable_model, "version": state.stable_version },
        "candidate": { "model": state.candidate_model, "version": state.candidate_version },
        "reason": state.reason,
    })
}

impl RolloutService {
    pub fn new(
        serving: Arc<ServingService>,
        tracking: TrackingService,
        meta: Arc<dyn MetaStore>,
        ingest: IngestService,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                serving,
                tracking,
                meta,
                ingest,
                failing: Mutex::new(HashMap::new()),
                quality_failing: Mutex::new(HashMap::new()),
            }),
        }
    }

    async fn endpoint(&self, scope: &EndpointScope, name: &str) -> Result<Endpoint, RolloutError> {
        self.inner
            .serving
            .store()
            .get(&scope.tenant, &scope.project, name)
            .await?
            .ok_or_else(|| RolloutError::NotFound {
                what: "endpoint",
                name: name.to_owned(),
            })
    }

    async fn audit(&self, record: Record<'_>) {
        let tenant = record.tenant.clone();
        let endpoint = record.endpoint.to_owned();
        let rollout = record.rollout_id.to_owned();
        let action = format!("{}{}", evidence::ACTION_PREFIX, record.decision);
        if let Err(error) = evidence::append(self.inner.meta.as_ref(), record).await {
            tracing::error!(
                tenant = %tenant,
                endpoint,
                rollout_id = rollout,
                action,
                %error,
                "cannot append the audit entry of a rollout decision"
            );
        }
    }

    /// Starts a canary from the version the endpoint serves now to `request.version`.
    pub async fn start(
        &self,
        scope: &EndpointScope,
        name: &str,
        request: &StartRequest,
        actor: &str,
    ) -> Result<Endpoint, RolloutError> {
        let endpoint = self.endpoint(scope, name).await?;
        if let Some(state) = endpoint.rollout.as_ref().filter(|state| state.is_active()) {
            return Err(RolloutError::Conflict(format!(
                "endpoint {name:?} has rollout {} {} at step {}; promote, abort or wait for it \
                 before starting another",
                state.id,
                canary::status_name(state.status),
                state.step
            )));
        }
        let spec = match (&request.canary, &endpoint.policy) {
            (Some(spec), _) => spec.clone(),
            (None, TrafficPolicy::Canary(spec)) => spec.clone(),
            (None, policy) => {
                return Err(RolloutError::invalid(
                    "canary",
                    format!(
                        "endpoint {name:?} has a {} policy; pass canary settings with the \
                         request or set a canary policy on the endpoint first",
                        policy.kind()
                    ),
                ));
            }
        };
        canary::validate(&spec).map_err(|message| RolloutError::invalid("canary", message))?;
        let stable = stable_variant(&endpoint)
            .cloned()
            .ok_or_else(|| RolloutError::invalid("endpoint", "the endpoint has no variant"))?;
        let model = request
            .model
            .clone()
            .unwrap_or_else(|| stable.model.clone());
        if request.version < 1 {
            return Err(RolloutError::invalid(
                "version",
                format!("version is {}; model versions start at 1", request.version),
            ));
        }
        if model == stable.model && request.version == stable.version {
            return Err(RolloutError::invalid(
                "version",
                format!(
                    "endpoint {name:?} already serves {model} version {}; name another version",
                    request.version
                ),
            ));
        }
        self.check_version(scope, &model, request.version).await?;
        let reason = format!(
            "started by {actor}: {} version {} to {model} version {}",
            stable.model, stable.version, request.version
        );
        self.begin(
            &endpoint,
            &spec,
            &stable,
            (&model, request.version),
            actor,
            reason,
        )
        .await
    }

    async fn check_version(
        &self,
        scope: &EndpointScope,
        model: &str,
        version: i64,
    ) -> Result<(), RolloutError> {
        let tracking = ghaf_tracking::Scope {
            tenant: scope.tenant.clone(),
            project: scope.project.clone(),
        };
        match self
            .inner
            .tracking
            .store()
            .get_model_version(&tracking, model, version)
            .await
        {
            Ok(_) => Ok(()),
            Err(TrackingError::NotFound { .. }) => Err(RolloutError::NotFound {
                what: "model version",
                name: format!("{model} version {version}"),
            }),
            Err(error) => Err(error.into()),
        }
    }

    /// Stores a new rollout at step 0 and appends its `started` entry.
    async fn begin(
        &self,
        endpoint: &Endpoint,
        spec: &CanarySpec,
        stable: &Variant,
        candidate: (&str, i64),
        actor: &str,
        reason: String,
    ) -> Result<Endpoint, RolloutError> {
        let scope = scope_of(endpoint);
        let stats = self
            .inner
            .serving
            .variant_stats(&scope, &endpoint.name)
            .await?;
        let now = ghaf_core::now_millis();
        let (state, variants) = canary::start(
            spec,
            StartArgs {
                id: uuid::Uuid::now_v7().to_string(),
                stable: (&stable.model, stable.version),
                candidate,
                stats,
                now,
                actor,
                reason,
            },
        );
        let updated = self
            .inner
            .serving
            .apply_rollout(
                &scope,
                &endpoint.name,
                endpoint.generation,
                variants.clone(),
                TrafficPolicy::Canary(spec.clone()),
                Some(state.clone()),
                actor,
            )
            .await?;
        tracing::info!(
            tenant = %endpoint.tenant,
            project = %endpoint.project,
            endpoint = %endpoint.name,
            rollout_id = %state.id,
            stable_version = stable.version,
            candidate_version = candidate.1,
            actor,
            "rollout started"
        );
        self.audit(Record {
            tenant: &endpoint.tenant,
            project_name: &endpoint.project_name,
            endpoint: &endpoint.name,
            actor,
            decision: "started",
            rollout_id: &state.id,
            details: serde_json::json!({
                "rollout": status_json(&state),
                "weights": weights(&variants),
                "canary": spec,
                "follow_alias": endpoint.follow_alias,
                "generation": updated.generation,
            }),
        })
        .await;
        Ok(updated)
    }

    /// Promotes, pauses, resumes or aborts the endpoint's rollout.
    pub async fn act(
        &self,
        scope: &EndpointScope,
        name: &str,
        action: ManualAction,
        actor: &str,
    ) -> Result<Endpoint, RolloutError> {
        let endpoint = self.endpoint(scope, name).await?;
        let Some(state) = endpoint.rollout.clone() else {
            return Err(RolloutError::Conflict(format!(
                "endpoint {name:?} has no rollout to {}; start one with POST \
                 .../endpoints/{name}/rollout",
                action.as_str()
            )));
        };
        let stats = self.inner.serving.variant_stats(scope, name).await?;
        let now = ghaf_core::now_millis();
        let (next, variants) = canary::apply_manual(&state, action, &stats, now, actor)
            .map_err(RolloutError::Conflict)?;
        let evidence = match &endpoint.policy {
            TrafficPolicy::Canary(spec) => {
                serde_json::to_value(canary::measure_window(spec, &state, &stats, None, now))
                    .unwrap_or(serde_json::Value::Null)
            }
            _ => serde_json::Value::Null,
        };
        let variants = variants.unwrap_or_else(|| endpoint.variants.clone());
        let updated = self
            .inner
            .serving
            .apply_rollout(
                scope,
                name,
                endpoint.generation,
                variants.clone(),
                endpoint.policy.clone(),
                Some(next.clone()),
                actor,
            )
            .await?;
        tracing::info!(
            tenant = %scope.tenant,
            project = %scope.project,
            endpoint = name,
            rollout_id = %state.id,
            action = action.as_str(),
            actor,
            "rollout changed by hand"
        );
        let decision = action
            .audit_action()
            .trim_start_matches(evidence::ACTION_PREFIX);
        self.audit(Record {
            tenant: &endpoint.tenant,
            project_name: &endpoint.project_name,
            endpoint: name,
            actor,
            decision,
            rollout_id: &state.id,
            details: serde_json::json!({
                "rollout": status_json(&next),
                "weights": weights(&variants),
                "measurements": evidence,
                "generation": updated.generation,
            }),
        })
        .await;
        Ok(updated)
    }

    /// Lists the endpoint's history: rollout decisions and recorded changes, newest last.
    pub async fn history(
        &self,
        scope: &EndpointScope,
        name: &str,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, RolloutError> {
        let endpoint = self.endpoint(scope, name).await?;
        evidence::history(
            self.inner.meta.as_ref(),
            &scope.tenant,
            &endpoint.project_name,
            name,
            limit,
        )
        .await
    }

    /// Computes the A/B analysis of the endpoint's current variants.
    pub async fn analysis(
        &self,
        scope: &EndpointScope,
        name: &str,
        request: &AnalysisRequest,
    ) -> Result<Analysis, RolloutError> {
        let endpoint = self.endpoint(scope, name).await?;
        let mut settings = match &endpoint.policy {
            TrafficPolicy::Ab(spec) => AnalysisSettings {
                metric: spec.metric.clone(),
                min_samples: spec.min_samples,
                confidence: spec.confidence,
            },
            TrafficPolicy::Canary(spec) => AnalysisSettings {
                metric: spec.checks.quality.as_ref().map(|q| q.metric.clone()),
                min_samples: spec.min_requests,
                confidence: 0.95,
            },
            TrafficPolicy::Single => AnalysisSettings {
                metric: None,
                min_samples: 1000,
                confidence: 0.95,
            },
        };
        if let Some(metric) = &request.metric {
            if canary::higher_is_better(metric).is_none() {
                return Err(RolloutError::invalid(
                    "metric",
                    format!("metric {metric:?} is unknown; use accuracy, auc, rmse or mae"),
                ));
            }
            settings.metric = Some(metric.clone());
        }
        if let Some(min_samples) = request.min_samples {
            if min_samples == 0 {
                return Err(RolloutError::invalid(
                    "min_samples",
                    "min_samples is 0; use at least 1",
                ));
            }
            settings.min_samples = min_samples;
        }
        if let Some(confidence) = request.confidence {
            if !(confidence > 0.0 && confidence < 1.0) {
                return Err(RolloutError::invalid(
                    "confidence",
                    format!(
                        "confidence is {confidence}; use a level between 0 and 1, such as 0.95"
                    ),
                ));
            }
            settings.confidence = confidence;
        }

        let stats = self.inner.serving.variant_stats(scope, name).await?;
        let now = ghaf_core::now_millis();
        let since = request.since.unwrap_or(endpoint.updated_at);
        let groups = if settings.metric.is_some() {
            quality::read_labelled(
                &self.inner.ingest,
                &scope.tenant,
                &scope.project,
                name,
                since,
                now,
            )
            .await?
        } else {
            Default::default()
        };
        let routed = endpoint.variants.iter().filter(|variant| {
            endpoint
                .shadow
                .as_ref()
                .is_none_or(|shadow| shadow.variant != variant.name)
        });
        let samples: Vec<VariantSample> = routed
            .map(|variant| {
                let counters = measure::find(&stats, &variant.name, variant.version)
                    .cloned()
                    .unwrap_or_default();
                let labelled = groups
                    .get(&(variant.name.clone(), variant.version))
                    .cloned()
                    .unwrap_or_default();
                VariantSample {
                    variant: variant.name.clone(),
                    model: variant.model.clone(),
                    version: variant.version,
                    weight: variant.weight,
                    stats: counters,
                    logged: labelled.logged,
                    pairs: labelled.pairs,
                }
            })
            .collect();
        Ok(analysis::analyse(&samples, &settings))
    }

    /// Runs one controller pass over every endpoint that follows an alias or has a rollout
    /// in progress. Errors are logged per endpoint and do not stop the pass.
    pub async fn tick(&self) -> TickSummary {
        let mut summary = TickSummary::default();
        let endpoints = match self.inner.serving.rollout_endpoints().await {
            Ok(endpoints) => endpoints,
            Err(error) => {
                tracing::error!(%error, "cannot list the endpoints with rollouts");
                summary.errors += 1;
                return summary;
            }
        };
        for endpoint in endpoints {
            summary.endpoints += 1;
            let key = (
                endpoint.tenant.clone(),
                endpoint.project.clone(),
                endpoint.name.clone(),
            );
            match self.tick_endpoint(&endpoint).await {
                Ok(changed) => {
                    if changed {
                        summary.decisions += 1;
                    }
                    self.recovered(&key, &endpoint);
                }
                Err(RolloutError::Serve(ServeError::Conflict(message))) => {
                    summary.conflicts += 1;
                    tracing::debug!(
                        tenant = %endpoint.tenant,
                        project = %endpoint.project,
                        endpoint = %endpoint.name,
                        %message,
                        "endpoint changed by another writer; skipping this tick"
                    );
                }
                Err(error) => {
                    summary.errors += 1;
                    self.failed(&key, &endpoint, &error);
                }
            }
        }
        summary
    }

    fn failed(&self, key: &EndpointKey, endpoint: &Endpoint, error: &RolloutError) {
        let message = error.to_string();
        let mut failing = self
            .inner
            .failing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if failing.get(key) == Some(&message) {
            return;
        }
        tracing::error!(
            tenant = %endpoint.tenant,
            project = %endpoint.project,
            endpoint = %endpoint.name,
            rollout_id = endpoint.rollout.as_ref().map_or("", |state| state.id.as_str()),
            error = %message,
            "rollout controller failed on an endpoint; retrying every tick"
        );
        failing.insert(key.clone(), message);
    }

    fn recovered(&self, key: &EndpointKey, endpoint: &Endpoint) {
        let mut failing = self
            .inner
            .failing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if failing.remove(key).is_some() {
            tracing::info!(
                tenant = %endpoint.tenant,
                project = %endpoint.project,
                endpoint = %endpoint.name,
                "rollout controller works on the endpoint again"
            );
        }
    }

    /// Advances one endpoint; returns whether a decision was stored.
    async fn tick_endpoint(&self, endpoint: &Endpoint) -> Result<bool, RolloutError> {
        match &endpoint.rollout {
            Some(state) if state.status == RolloutStatus::Running => {
                self.evaluate(endpoint, state).await
            }
            Some(state) if state.status == RolloutStatus::Paused => Ok(false),
            _ => match &endpoint.follow_alias {
                Some(alias) => self.follow(endpoint, alias).await,
                None => Ok(false),
            },
        }
    }

    /// Moves an endpoint to the version its alias points at: a canary with a canary policy,
    /// a direct switch of the stable variant otherwise.
    async fn follow(&self, endpoint: &Endpoint, alias: &str) -> Result<bool, RolloutError> {
        let Some(stable) = stable_variant(endpoint).cloned() else {
            return Ok(false);
        };
        let tracking = ghaf_tracking::Scope {
            tenant: endpoint.tenant.clone(),
            project: endpoint.project.clone(),
        };
        let target = match self
            .inner
            .tracking
            .store()
            .get_version_by_alias(&tracking, &stable.model, alias)
            .await
        {
            Ok(version) => version.version,
            // An alias that is not set yet is waited for.
            Err(TrackingError::NotFound { .. }) => return Ok(false),
            Err(error) => return Err(error.into()),
        };
        if target == stable.version {
            return Ok(false);
        }
        // A version this endpoint rolled back or aborted is not tried again until the alias
        // moves to another version or someone starts a rollout by hand.
        if let Some(last) = &endpoint.rollout
            && matches!(
                last.status,
                RolloutStatus::RolledBack | RolloutStatus::Aborted
            )
            && last.candidate_model == stable.model
            && last.candidate_version == target
        {
            return Ok(false);
        }
        let reason = format!(
            "alias {alias:?} of {} moved to version {target}; the endpoint served version {}",
            stable.model, stable.version
        );
        if let TrafficPolicy::Canary(spec) = &endpoint.policy {
            canary::validate(spec).map_err(|message| RolloutError::invalid("policy", message))?;
            self.begin(
                endpoint,
                spec,
                &stable,
                (&stable.model, target),
                CONTROLLER_ACTOR,
                reason,
            )
            .await?;
            return Ok(true);
        }

        let mut variants = endpoint.variants.clone();
        for variant in &mut variants {
            if variant.name == stable.name {
                variant.version = target;
            }
        }
        let scope = scope_of(endpoint);
        let updated = self
            .inner
            .serving
            .apply_rollout(
                &scope,
                &endpoint.name,
                endpoint.generation,
                variants.clone(),
                endpoint.policy.clone(),
                endpoint.rollout.clone(),
                CONTROLLER_ACTOR,
            )
            .await?;
        tracing::info!(
            tenant = %endpoint.tenant,
            project = %endpoint.project,
            endpoint = %endpoint.name,
            alias,
            from_version = stable.version,
            to_version = target,
            "endpoint followed its alias"
        );
        self.audit(Record {
            tenant: &endpoint.tenant,
            project_name: &endpoint.project_name,
            endpoint: &endpoint.name,
            actor: CONTROLLER_ACTOR,
            decision: "alias_switched",
            rollout_id: "",
            details: serde_json::json!({
                "alias": alias,
                "model": stable.model,
                "from_version": stable.version,
                "to_version": target,
                "policy": endpoint.policy.kind(),
                "weights": weights(&variants),
                "reason": reason,
                "generation": updated.generation,
            }),
        })
        .await;
        Ok(true)
    }

    /// Judges a running rollout's window and stores the decision when it changes anything.
    async fn evaluate(
        &self,
        endpoint: &Endpoint,
        state: &RolloutState,
    ) -> Result<bool, RolloutError> {
        let TrafficPolicy::Canary(spec) = &endpoint.policy else {
            return Err(RolloutError::Conflict(format!(
                "rollout {} runs but the endpoint has a {} policy; abort the rollout or set a \
                 canary policy",
                state.id,
                endpoint.policy.kind()
            )));
        };
        let scope = scope_of(endpoint);
        let stats = self
            .inner
            .serving
            .variant_stats(&scope, &endpoint.name)
            .await?;
        let now = ghaf_core::now_millis();
        let quality = match &spec.checks.quality {
            Some(check) => self.read_quality(endpoint, state, check, now).await,
            None => None,
        };
        let decision = canary::decide(spec, state, &stats, quality, now);
        let Some(action) = decision.outcome.action() else {
            return Ok(false);
        };
        let variants = decision
            .variants
            .clone()
            .unwrap_or_else(|| endpoint.variants.clone());
        let updated = self
            .inner
            .serving
            .apply_rollout(
                &scope,
                &endpoint.name,
                endpoint.generation,
                variants.clone(),
                endpoint.policy.clone(),
                Some(decision.state.clone()),
                CONTROLLER_ACTOR,
            )
            .await?;
        log_decision(endpoint, state, &decision, action);
        self.audit(Record {
            tenant: &endpoint.tenant,
            project_name: &endpoint.project_name,
            endpoint: &endpoint.name,
            actor: CONTROLLER_ACTOR,
            decision: action.trim_start_matches(evidence::ACTION_PREFIX),
            rollout_id: &state.id,
            details: serde_json::json!({
                "rollout": status_json(&decision.state),
                "weights": weights(&variants),
                "measurements": decision.evidence,
                "generation": updated.generation,
            }),
        })
        .await;
        Ok(true)
    }
}

impl RolloutService {
    /// Reads the quality of a rollout's current window. A failed read is logged once per
    /// endpoint and leaves the quality check unjudged, so the request checks still run and
    /// can roll a failing candidate back.
    async fn read_quality(
        &self,
        endpoint: &Endpoint,
        state: &RolloutState,
        check: &QualityCheck,
        now: UnixMillis,
    ) -> Option<QualityWindow> {
        let read = quality::read_labelled(
            &self.inner.ingest,
            &endpoint.tenant,
            &endpoint.project,
            &endpoint.name,
            state.window_started_at,
            now,
        )
        .await;
        let key = (
            endpoint.tenant.clone(),
            endpoint.project.clone(),
            endpoint.name.clone(),
        );
        let mut failing = self
            .inner
            .quality_failing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match read {
            Ok(groups) => {
                if failing.remove(&key).is_some() {
                    tracing::info!(
                        tenant = %endpoint.tenant,
                        project = %endpoint.project,
                        endpoint = %endpoint.name,
                        rollout_id = %state.id,
                        "rollout quality check reads the prediction log again"
                    );
                }
                Some(quality::quality_window(
                    &check.metric,
                    &groups,
                    (CANDIDATE_VARIANT, state.candidate_version),
                    (STABLE_VARIANT, state.stable_version),
                ))
            }
            Err(error) => {
                let message = error.to_string();
                if failing.get(&key) != Some(&message) {
                    tracing::error!(
                        tenant = %endpoint.tenant,
                        project = %endpoint.project,
                        endpoint = %endpoint.name,
                        rollout_id = %state.id,
                        error = %message,
                        "cannot read the prediction log for the rollout's quality check; \
                         the request checks run without it and no step passes until it is read"
                    );
                    failing.insert(key, message);
                }
                None
            }
        }
    }
}

/// Logs a stored controller decision: failed checks and rollbacks as warnings.
fn log_decision(endpoint: &Endpoint, state: &RolloutState, decision: &Decision, action: &str) {
    let reason = decision.state.reason.as_deref().unwrap_or("");
    if matches!(decision.outcome, Outcome::CheckFailed | Outcome::RolledBack) {
        tracing::warn!(
            tenant = %endpoint.tenant,
            project = %endpoint.project,
            endpoint = %endpoint.name,
            rollout_id = %state.id,
            step = state.step,
            reason,
            action,
            "rollout check failed"
        );
    } else {
        tracing::info!(
            tenant = %endpoint.tenant,
            project = %endpoint.project,
            endpoint = %endpoint.name,
            rollout_id = %state.id,
            step = state.step,
            reason,
            action,
            "rollout advanced"
        );
    }
}

/// The background loop that runs [`RolloutService::tick`].
pub struct RolloutController;

impl RolloutController {
    /// Runs a controller pass every `tick` until `stop` turns true. Several replicas may run
    /// the loop at once: every write is a compare-and-set on the endpoint's generation, so a
    /// replica that loses the race skips that endpoint for the tick.
    pub fn spawn(
        service: RolloutService,
        tick: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            tracing::info!(
                tick_ms = tick.as_millis() as u64,
                "rollout controller started"
            );
            loop {
                // Each pass runs as its own task, so a panic in one pass is logged and the
                // next pass still runs.
                let pass = service.clone();
                let summary = match tokio::spawn(async move { pass.tick().await }).await {
                    Ok(summary) => summary,
                    Err(error) => {
                        tracing::error!(%error, "rollout controller pass panicked; the next pass runs as usual");
                        TickSummary::default()
                    }
                };
                if summary.decisions > 0 || summary.errors > 0 {
                    tracing::debug!(
                        endpoints = summary.endpoints,
                        decisions = summary.decisions,
                        conflicts = summary.conflicts,
                        errors = summary.errors,
                        "rollout controller pass"
                    );
                }
                tokio::select! {
                    () = tokio::time::sleep(tick) => {}
                    changed = stop.changed() => {
                        if changed.is_err() || *stop.borrow() {
                            break;
                        }
                    }
                }
            }
            tracing::info!("rollout controller stopped");
        })
    }
}
