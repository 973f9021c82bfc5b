//! Monitors of a project: CRUD, evaluation on demand, stored reports with plot-ready series,
//! alert rules, alerts with acknowledgement and delivery outcomes, and ad-hoc drift between
//! two dataset versions.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use ghaf_auth::{Action, Caller};
use ghaf_core::ErrorCode;
use ghaf_meta::Project;
use ghaf_monitoring::report::DriftSummary;
use ghaf_monitoring::service::Series;
use ghaf_monitoring::spec::{DatasetRef, DriftMode};
use ghaf_monitoring::store::AlertState;
use ghaf_monitoring::{
    Alert, AlertRule, AlertRuleSpec, Delivery, Evaluation, Monitor, MonitorSpec, MonitoringError,
    MonitoringService,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Access, ApiRouter, RouteInfo};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::middleware::AuditDetails;
use crate::state::AppState;

const MONITORS: &str = "/api/v1/projects/{project}/monitors";
const MONITOR: &str = "/api/v1/projects/{project}/monitors/{monitor}";
const RULES: &str = "/api/v1/projects/{project}/monitors/{monitor}/alert-rules";
const RULE: &str = "/api/v1/projects/{project}/monitors/{monitor}/alert-rules/{rule}";
const ALERTS: &str = "/api/v1/projects/{project}/monitors/{monitor}/alerts";

pub fn register(api: &mut ApiRouter) {
    use Access::Action as A;
    let read = A(Action::MonitorRead);
    let write = A(Action::MonitorWrite);
    api.add(
        RouteInfo::new(Method::GET, MONITORS, read, "List the project's monitors")
            .response("MonitorList"),
        list_monitors,
    );
    api.add(
        RouteInfo::new(
            Method::POST,
            MONITORS,
            write,
            "Create a monitor; its reference is fitted once and stored",
        )
        .request("MonitorSpecBody")
        .response("MonitorView")
        .status(201),
        create_monitor,
    );
    api.add(
        RouteInfo::new(Method::GET, MONITOR, read, "Get a monitor").response("MonitorView"),
        get_monitor,
    );
    api.add(
        RouteInfo::new(
            Method::PUT,
            MONITOR,
            write,
            "Replace a monitor's spec and fit its reference again",
        )
        .request("MonitorSpecBody")
        .response("MonitorView"),
        update_monitor,
    );
    api.add(
        RouteInfo::new(
            Method::DELETE,
            MONITOR,
            write,
            "Delete a monitor with its reports, rules and alerts",
        )
        .status(204),
        delete_monitor,
    );
    api.add(
        RouteInfo::new(
            Method::POST,
            "/api/v1/projects/{project}/monitors/{monitor}/evaluate",
            write,
            "Evaluate a monitor now, store the report and apply its alert rules",
        )
        .response("EvaluationView"),
        evaluate,
    );
    api.add(
        RouteInfo::new(
            Method::GET,
            "/api/v1/projects/{project}/monitors/{monitor}/reports",
            read,
            "List stored reports, newest first, with series per feature oldest first",
        )
        .response("ReportList")
        .query(&[("limit", "Maximum number of reports, 1 to 1000; default 50")]),
        reports,
    );
    api.add(
        RouteInfo::new(Method::GET, RULES, read, "List a monitor's alert rules")
            .response("AlertRuleList"),
        list_rules,
    );
    api.add(
        RouteInfo::new(
            Method::POST,
            RULES,
            write,
            "Create an alert rule; the response holds its webhook signing secret, shown once",
        )
        .request("AlertRuleSpecBody")
        .response("CreatedAlertRuleView")
        .status(201),
        create_rule,
    );
    api.add(
        RouteInfo::new(Method::PUT, RULE, write, "Replace an alert rule's spec")
            .request("AlertRuleSpecBody")
            .response("AlertRuleView"),
        update_rule,
    );
    api.add(
        RouteInfo::new(
            Method::DELETE,
            RULE,
            write,
            "Delete an alert rule with its alerts",
        )
        .status(204),
        delete_rule,
    );
    api.add(
        RouteInfo::new(
            Method::GET,
            ALERTS,
            read,
            "List a monitor's alerts, newest first",
        )
        .response("AlertList")
        .query(&[
            ("state", "firing or resolved"),
            ("limit", "Maximum number of alerts, 1 to 1000; default 100"),
        ]),
        list_alerts,
    );
    api.add(
        RouteInfo::new(
            Method::POST,
            "/api/v1/projects/{project}/monitors/{monitor}/alerts/{alert}/ack",
            write,
            "Acknowledge an alert",
        )
        .response("AlertView"),
        acknowledge,
    );
    api.add(
        RouteInfo::new(
            Method::GET,
            "/api/v1/projects/{project}/monitors/{monitor}/alerts/{alert}/deliveries",
            read,
            "List the delivery outcomes of an alert",
        )
        .response("DeliveryList"),
        deliveries,
    );
    api.add(
        RouteInfo::new(
            Method::POST,
            "/api/v1/projects/{project}/drift",
            read,
            "Compute drift between two dataset versions without a monitor",
        )
        .request("DriftRequest")
        .response("DriftView"),
        adhoc_drift,
    );
}

impl From<MonitoringError> for ApiError {
    fn from(error: MonitoringError) -> Self {
        let details = match error.field() {
            Some(field) => serde_json::json!({ "field": field }),
            None => serde_json::Value::Null,
        };
        ApiError::new(error.code(), error.to_string()).with_details(details)
    }
}

fn service(state: &AppState) -> Result<&MonitoringService, ApiError> {
    state.monitoring().ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unavailable,
            "monitoring is not configured on this server",
        )
    })
}

fn time(millis: i64) -> String {
    ghaf_core::format_millis(millis)
}

/// Body of monitor creation and replacement: the monitor spec.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(value_type = Object)]
pub struct MonitorSpecBody(pub serde_json::Value);

/// Body of alert-rule creation and replacement: the rule spec.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(value_type = Object)]
pub struct AlertRuleSpecBody(pub serde_json::Value);

/// A monitor.
#[derive(Debug, Serialize, ToSchema)]
pub struct MonitorView {
    pub name: String,
    #[schema(value_type = Object)]
    pub spec: MonitorSpec,
    /// Reference dataset version, its rows, the watched features and the blob digest of the
    /// fitted reference.
    #[schema(value_type = Object)]
    pub reference: ghaf_monitoring::store::ReferenceRecord,
    /// Whether the prediction column's reference was fitted (on the first window with
    /// predictions).
    pub prediction_reference_fitted: bool,
    pub next_run_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_evaluated_at: Option<String>,
    /// Error of the latest evaluation, if it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub created_at: String,
    pub created_by: String,
    pub updated_at: String,
}

impl From<Monitor> for MonitorView {
    fn from(monitor: Monitor) -> Self {
        Self {
            name: monitor.name,
            spec: monitor.spec,
            reference: monitor.reference,
            prediction_reference_fitted: monitor.prediction_reference.is_some(),
            next_run_at: time(monitor.next_run_at),
            last_evaluated_at: monitor.last_evaluated_at.map(time),
            last_error: monitor.last_error,
            created_at: time(monitor.created_at),
            created_by: monitor.created_by,
            updated_at: time(monitor.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MonitorList {
    pub monitors: Vec<MonitorView>,
}

/// A stored evaluation with its report.
#[derive(Debug, Serialize, ToSchema)]
pub struct EvaluationView {
    pub id: String,
    pub evaluated_at: String,
    pub rows: u64,
    /// Drift, performance, missing values and freshness.
    #[schema(value_type = Object)]
    pub report: ghaf_monitoring::report::Report,
}

impl From<Evaluation> for EvaluationView {
    fn from(evaluation: Evaluation) -> Self {
        Self {
            id: evaluation.id,
            evaluated_at: time(evaluation.evaluated_at),
            rows: evaluation.rows,
            report: evaluation.report,
        }
    }
}

/// Stored reports and series over them.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportList {
    /// Newest first.
    pub evaluations: Vec<EvaluationView>,
    /// Oldest first: times, rows, drift share, per-feature score, drifted and null share,
    /// and performance metrics per subject.
    #[schema(value_type = Object)]
    pub series: Series,
}

/// An alert rule; the secret is never returned after creation.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertRuleView {
    pub name: String,
    #[schema(value_type = Object)]
    pub spec: AlertRuleSpec,
    pub created_at: String,
    pub created_by: String,
    pub updated_at: String,
}

impl From<AlertRule> for AlertRuleView {
    fn from(rule: AlertRule) -> Self {
        Self {
            name: rule.name,
            spec: rule.spec,
            created_at: time(rule.created_at),
            created_by: rule.created_by,
            updated_at: time(rule.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertRuleList {
    pub rules: Vec<AlertRuleView>,
}

/// A created rule with its webhook signing secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedAlertRuleView {
    pub rule: AlertRuleView,
    /// Key of the `X-Ghaf-Signature` HMAC-SHA256 of webhook deliveries; store it now, it is
    /// not shown again.
    pub secret: String,
}

/// An alert.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertView {
    pub id: String,
    pub rule: String,
    pub subject: String,
    /// firing or resolved.
    pub state: String,
    pub fired_at: String,
    pub last_seen_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
    /// Evaluations that met the condition again while the alert fired or cooled down.
    pub repeats: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acknowledged_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<String>,
    pub evaluation_id: String,
    /// The numbers and window the alert was based on.
    #[schema(value_type = Object)]
    pub evidence: serde_json::Value,
    /// Retraining job submitted by the rule's action.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_error: Option<String>,
}

fn alert_view(alert: Alert, rules: &[AlertRule]) -> AlertView {
    let rule = rules
        .iter()
        .find(|rule| rule.id == alert.rule_id)
        .map_or_else(|| alert.rule_id.clone(), |rule| rule.name.clone());
    AlertView {
        id: alert.id,
        rule,
        subject: alert.subject,
        state: alert.state.as_str().to_owned(),
        fired_at: time(alert.fired_at),
        last_seen_at: time(alert.last_seen_at),
        resolved_at: alert.resolved_at.map(time),
        repeats: alert.repeats,
        acknowledged_at: alert.acknowledged_at.map(time),
        acknowledged_by: alert.acknowledged_by,
        evaluation_id: alert.evaluation_id,
        evidence: alert.evidence,
        job_id: alert.job_id,
        action_error: alert.action_error,
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertList {
    pub alerts: Vec<AlertView>,
}

/// Outcome of one delivery of an alert event.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    /// firing or resolved.
    pub event: String,
    /// webhook, nats or kafka.
    pub sink: String,
    pub target: String,
    pub attempts: u32,
    /// delivered or failed.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub finished_at: String,
}

impl From<Delivery> for DeliveryView {
    fn from(delivery: Delivery) -> Self {
        Self {
            event: delivery.event,
            sink: delivery.sink,
            target: delivery.target,
            attempts: delivery.attempts,
            outcome: delivery.outcome,
            status_code: delivery.status_code,
            error: delivery.error,
            finished_at: time(delivery.finished_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryView>,
}

/// Body of `POST /projects/{project}/drift`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DriftRequest {
    /// `{"dataset": NAME, "version": N}`; the newest version when `version` is absent.
    #[schema(value_type = Object)]
    pub reference: DatasetRef,
    #[schema(value_type = Object)]
    pub current: DatasetRef,
    /// Columns to test; empty means every numeric or categorical column in both.
    #[serde(default)]
    pub features: Vec<String>,
    /// `default` or `evidently`.
    #[serde(default)]
    #[schema(value_type = String)]
    pub mode: DriftMode,
}

/// Drift between two dataset versions.
#[derive(Debug, Serialize, ToSchema)]
pub struct DriftView {
    #[schema(value_type = Object)]
    pub drift: DriftSummary,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitQuery {
    limit: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertQuery {
    state: Option<String>,
    limit: Option<u32>,
}

fn check_limit(limit: Option<u32>, default: u32) -> Result<u32, ApiError> {
    match limit {
        None => Ok(default),
        Some(limit) if (1..=1000).contains(&limit) => Ok(limit),
        Some(limit) => Err(ApiError::invalid_field(
            "limit",
            format!("limit is {limit}; use 1 to 1000"),
        )),
    }
}

async fn monitor_of(state: &AppState, project: &Project, name: &str) -> Result<Monitor, ApiError> {
    Ok(service(state)?
        .get_monitor(&project.tenant, &project.id, name)
        .await?)
}

async fn list_monitors(
    State(state): State<AppState>,
    Extension(project): Extension<Project>,
) -> Result<Json<MonitorList>, ApiError> {
    let monitors = service(&state)?
        .store()
        .list_monitors(&project.tenant, &project.id)
        .await?;
    Ok(Json(MonitorList {
        monitors: monitors.into_iter().map(Into::into).collect(),
    }))
}

async fn create_monitor(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(project): Extension<Project>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<(StatusCode, Extension<AuditDetails>, Json<MonitorView>), ApiError> {
    let spec = MonitorSpec::from_json(body)?;
    let monitor = service(&state)?
        .create_monitor(
            &project.tenant,
            &project.id,
            &spec,
            caller.principal.as_str(),
        )
        .await?;
    let details = AuditDetails(serde_json::json!({
        "monitor": monitor.name,
        "reference": format!("{}@{}", monitor.reference.dataset, monitor.reference.version),
    }));
    Ok((
        StatusCode::CREATED,
        Extension(details),
        Json(monitor.into()),
    ))
}

async fn get_monitor(
    State(state): State<AppState>,
    Extension(project): Extension<Project>,
    ApiPath((_, monitor)): ApiPath<(String, String)>,
) -> Result<Json<MonitorView>, ApiError> {
    Ok(Json(monitor_of(&state, &project, &monitor).await?.into()))
}

async fn update_monitor(
    State(state): State<AppState>,
    Extension(project): Extension<Project>,
    ApiPath((_, monitor)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<(Extension<AuditDetails>, Json<MonitorView>), ApiError> {
    let spec = MonitorSpec::from_json(body)?;
    let monitor = monitor_of(&state, &project, &monitor).await?;
    let updated = service(&state)?.update_monitor(&monitor, &spec).await?;
    let details = AuditDetails(serde_json::json!({ "monitor": updated.name }));
    Ok((Extension(details), Json(updated.into())))
}

async fn delete_monitor(
    State(state): State<AppState>,
    Extension(project): Extension<Project>,
    ApiPath((_, monitor)): ApiPath<(String, String)>,
) -> Result<(StatusCode, Extension<AuditDetails>), ApiError> {
    let monitor = monitor_of(&state, &project, &monitor).await?;
    service(&state)?.store().delete_monitor(&monitor).await?;
    let details = AuditDetails(serde_json::json!({ "monitor": monitor.name }));
    Ok((StatusCode::NO_CONTENT, Extension(details)))
}

async fn evaluate(
    State(state): State<AppState>,
    Extension(project): Extension<Project>,
    ApiPath((_, monitor)): ApiPath<(String, String)>,
) -> Result<Json<EvaluationView>, ApiError> {
    let monitor = monitor_of(&state, &project, &monitor).await?;
    let evaluation = service(&state)?.evaluate(&monitor).await?;
    Ok(Json(evaluation.into()))
}

async fn reports(
    State(state): State<AppState>,
    Extension(project): Extension<Project>,
    ApiPath((_, monitor)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<LimitQuery>,
) -> Result<Json<ReportList>, ApiError> {
    let limit = check_limit(query.limit, 50)?;
    let monitor = monitor_of(&state, &project, &monitor).await?;
    let evaluations = service(&state)?
        .store()
        .list_evaluations(&monitor, limit)
        .await?;
    let series = Series::from_evaluations(&evaluations);
    Ok(Json(ReportList {
        evaluations: evaluations.into_iter().map(Into::into).collect(),
        series,
    }))
}

async fn list_rules(
    State(state): State<AppState>,
    Extension(project): Extension<Project>,
    ApiPath((_, monitor)): ApiPath<(String, String)>,
) -> Result<Json<AlertRuleList>, ApiError> {
    let monitor = monitor_of(&state, &project, &monitor).await?;
    let rules = service(&state)?.store().list_rules(&monitor).await?;
    Ok(Json(AlertRuleList {
        rules: rules.into_iter().map(Into::into).collect(),
    }))
}

fn rule_audit(monitor: &Monitor, rule: &AlertRuleSpec) -> AuditDetails {
    AuditDetails(serde_json::json!({
        "monitor": monitor.name,
        "rule": rule.name,
        "condition": rule.condition,
        "action": rule.action.as_ref().map(|_| "retrain"),
    }))
}

async fn create_rule(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(project): Extension<Project>,
    ApiPath((_, monitor)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<
    (
        StatusCode,
        Extension<AuditDetails>,
        Json<CreatedAlertRuleView>,
    ),
    ApiError,
> {
    let spec = AlertRuleSpec::from_json(body)?;
    let monitor = monitor_of(&state, &project, &monitor).await?;
    let created = service(&state)?
        .create_rule(&monitor, &spec, caller.principal.as_str())
        .await?;
    Ok((
        StatusCode::CREATED,
        Extension(rule_audit(&monitor, &spec)),
        Json(CreatedAlertRuleView {
            rule: created.rule.into(),
            secret: created.secret,
        }),
    ))
}

async fn update_rule(
    State(state): State<AppState>,
    Extension(project): Extension<Project>,
    ApiPath((_, monitor, rule)): ApiPath<(String, String, String)>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<(Extension<AuditDetails>, Json<AlertRuleView>), ApiError> {
    let spec = AlertRuleSpec::from_json(body)?;
    if spec.name != rule {
        return Err(ApiError::invalid_field(
            "name",
            format!(
                "the body names rule {:?} but the path names {rule:?}; a rule cannot be renamed",
                spec.name
            ),
        ));
    }
    let monitor = monitor_of(&state, &project, &monitor).await?;
    let store = service(&state)?.store();
    let existing = store.get_rule(&monitor, &rule).await?;
    let updated = store
        .update_rule(&monitor, &existing, &spec, ghaf_core::now_millis())
        .await?;
    Ok((Extension(rule_audit(&monitor, &spec)), Json(updated.into())))
}

async fn delete_rule(
    State(state): State<AppState>,
    Extension(project): Extension<Project>,
    ApiPath((_, monitor, rule)): ApiPath<(String, String, String)>,
) -> Result<(StatusCode, Extension<AuditDetails>), ApiError> {
    let monitor = monitor_of(&state, &project, &monitor).await?;
    let store = service(&state)?.store();
    let existing = store.get_rule(&monitor, &rule).await?;
    store.delete_rule(&monitor, &existing).await?;
    Ok((
        StatusCode::NO_CONTENT,
        Extension(rule_audit(&monitor, &existing.spec)),
    ))
}

async fn list_alerts(
    State(state): State<AppState>,
    Extension(project): Extension<Project>,
    ApiPath((_, monitor)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<AlertQuery>,
) -> Result<Json<AlertList>, ApiError> {
    let limit = check_limit(query.limit, 100)?;
    let state_filter = match query.state.as_deref() {
        None => None,
        Some(text) => Some(AlertState::parse(text).ok_or_else(|| {
            ApiError::invalid_field(
                "state",
                format!("state {text:?} is invalid; use firing or resolved"),
            )
        })?),
    };
    let monitor = monitor_of(&state, &project, &monitor).await?;
    let store = service(&state)?.store();
    let rules = store.list_rules(&monitor).await?;
    let alerts = store.list_alerts(&monitor, state_filter, limit).await?;
    Ok(Json(AlertList {
        alerts: alerts
            .into_iter()
            .map(|alert| alert_view(alert, &rules))
            .collect(),
    }))
}

async fn acknowledge(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(project): Extension<Project>,
    ApiPath((_, monitor, alert)): ApiPath<(String, String, String)>,
) -> Result<(Extension<AuditDetails>, Json<AlertView>), ApiError> {
    let monitor = monitor_of(&state, &project, &monitor).await?;
    let store = service(&state)?.store();
    let acknowledged = store
        .acknowledge_alert(
            &monitor,
            &alert,
            caller.principal.as_str(),
            ghaf_core::now_millis(),
        )
        .await?;
    let rules = store.list_rules(&monitor).await?;
    let details = AuditDetails(serde_json::json!({ "monitor": monitor.name, "alert": alert }));
    Ok((Extension(details), Json(alert_view(acknowledged, &rules))))
}

async fn deliveries(
    State(state): State<AppState>,
    Extension(project): Extension<Project>,
    ApiPath((_, monitor, alert)): ApiPath<(String, String, String)>,
) -> Result<Json<DeliveryList>, ApiError> {
    let monitor = monitor_of(&state, &project, &monitor).await?;
    let deliveries = service(&state)?.deliveries(&monitor, &alert).await?;
    Ok(Json(DeliveryList {
        deliveries: deliveries.into_iter().map(Into::into).collect(),
    }))
}

async fn adhoc_drift(
    State(state): State<AppState>,
    Extension(project): Extension<Project>,
    ApiJson(body): ApiJson<DriftRequest>,
) -> Result<Json<DriftView>, ApiError> {
    let drift = service(&state)?
        .drift_between(
            &project.tenant,
            &project.id,
            &body.reference,
            &body.current,
            &body.features,
            body.mode,
        )
        .await?;
    Ok(Json(DriftView { drift }))
}
