//! The monitoring tables on the metadata database (SQLite or PostgreSQL): monitors,
//! evaluations, alert rules, alerts and deliveries. Every query takes the tenant, and reads
//! of one monitor the project too. Times are Unix milliseconds passed in by the caller.

use ghaf_core::{ProjectId, TenantId, UnixMillis};
use ghaf_meta::{Db, Dialect, MetaError};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::MonitoringError;
use crate::report::Report;
use crate::spec::{AlertRuleSpec, MonitorSpec};

/// The resolved reference of a monitor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReferenceRecord {
    pub dataset: String,
    pub version: i64,
    pub rows: u64,
    /// Watched features, resolved at creation.
    pub features: Vec<String>,
    /// SHA-256 of the blob holding the fitted reference (JSON).
    pub digest: String,
}

/// A stored monitor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Monitor {
    pub id: String,
    pub tenant: TenantId,
    pub project: ProjectId,
    pub name: String,
    pub spec: MonitorSpec,
    pub reference: ReferenceRecord,
    /// Blob digest of the prediction column's reference, fitted on the first window with
    /// predictions.
    pub prediction_reference: Option<String>,
    pub next_run_at: UnixMillis,
    pub last_evaluated_at: Option<UnixMillis>,
    pub last_error: Option<String>,
    pub created_at: UnixMillis,
    pub created_by: String,
    pub updated_at: UnixMillis,
}

/// A stored evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub id: String,
    pub monitor_id: String,
    pub evaluated_at: UnixMillis,
    pub window_start: Option<UnixMillis>,
    pub window_end: Option<UnixMillis>,
    pub rows: u64,
    pub report: Report,
}

/// A stored alert rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertRule {
    pub id: String,
    pub monitor_id: String,
    pub name: String,
    pub spec: AlertRuleSpec,
    /// Key of the webhook signature; shown once, when the rule is created.
    #[serde(skip_serializing)]
    pub secret: String,
    pub created_at: UnixMillis,
    pub created_by: String,
    pub updated_at: UnixMillis,
}

/// State of an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "firing" => Some(AlertState::Firing),
            "resolved" => Some(AlertState::Resolved),
            _ => None,
        }
    }
}

/// A stored alert.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: String,
    pub rule_id: String,
    pub monitor_id: String,
    pub subject: String,
    pub state: AlertState,
    pub fired_at: UnixMillis,
    pub last_seen_at: UnixMillis,
    pub resolved_at: Option<UnixMillis>,
    /// Evaluations that met the condition again while the alert fired or cooled down.
    pub repeats: u64,
    pub acknowledged_at: Option<UnixMillis>,
    pub acknowledged_by: Option<String>,
    pub evaluation_id: String,
    /// The numbers and window the alert was based on.
    pub evidence: serde_json::Value,
    /// Retraining job submitted by the rule's action.
    pub job_id: Option<String>,
    pub action_error: Option<String>,
}

/// Outcome of delivering one alert event to one sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: String,
    pub alert_id: String,
    /// `firing` or `resolved`.
    pub event: String,
    /// `webhook`, `nats` or `kafka`.
    pub sink: String,
    pub target: String,
    pub attempts: u32,
    /// `delivered` or `failed`.
    pub outcome: String,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub finished_at: UnixMillis,
}

/// SQL access to the monitoring tables.
#[derive(Clone, Debug)]
pub struct MonitorStore {
    db: Db,
}

const MONITOR_COLUMNS: &str = "id, tenant_id, project_id, name, spec_json, reference_json, \
     prediction_reference_json, next_run_at, last_evaluated_at, last_error, created_at, \
     created_by, updated_at";
const RULE_COLUMNS: &str =
    "id, monitor_id, name, spec_json, secret, created_at, created_by, updated_at";
const ALERT_COLUMNS: &str = "id, rule_id, monitor_id, subject, state, fired_at, last_seen_at, \
     resolved_at, repeats, acknowledged_at, acknowledged_by, evaluation_id, evidence_json, \
     job_id, action_error";

fn corrupt(what: &'static str) -> impl Fn(serde_json::Error) -> MonitoringError {
    move |error| MonitoringError::Corrupt {
        what,
        message: error.to_string(),
    }
}

fn to_json<T: Serialize>(value: &T, what: &'static str) -> Result<String, MonitoringError> {
    serde_json::to_string(value).map_err(corrupt(what))
}

fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

fn monitor_from_row(row: &AnyRow) -> Result<Monitor, MonitoringError> {
    let spec: String = row.try_get("spec_json")?;
    let reference: String = row.try_get("reference_json")?;
    Ok(Monitor {
        id: row.try_get("id")?,
        tenant: TenantId::from_stored(row.try_get::<String, _>("tenant_id")?),
        project: ProjectId::from_stored(row.try_get::<String, _>("project_id")?),
        name: row.try_get("name")?,
        spec: serde_json::from_str(&spec).map_err(corrupt("monitor spec"))?,
        reference: serde_json::from_str(&reference).map_err(corrupt("monitor reference"))?,
        prediction_reference: row.try_get("prediction_reference_json")?,
        next_run_at: row.try_get("next_run_at")?,
        last_evaluated_at: row.try_get("last_evaluated_at")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn rule_from_row(row: &AnyRow) -> Result<AlertRule, MonitoringError> {
    let spec: String = row.try_get("spec_json")?;
    Ok(AlertRule {
        id: row.try_get("id")?,
        monitor_id: row.try_get("monitor_id")?,
        name: row.try_get("name")?,
        spec: serde_json::from_str(&spec).map_err(corrupt("alert rule spec"))?,
        secret: row.try_get("secret")?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn alert_from_row(row: &AnyRow) -> Result<Alert, MonitoringError> {
    let state: String = row.try_get("state")?;
    let evidence: String = row.try_get("evidence_json")?;
    Ok(Alert {
        id: row.try_get("id")?,
        rule_id: row.try_get("rule_id")?,
        monitor_id: row.try_get("monitor_id")?,
        subject: row.try_get("subject")?,
        state: AlertState::parse(&state).ok_or_else(|| MonitoringError::Corrupt {
            what: "alert state",
            message: format!("unknown state {state:?}"),
        })?,
        fired_at: row.try_get("fired_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        resolved_at: row.try_get("resolved_at")?,
        repeats: u64::try_from(row.try_get::<i64, _>("repeats")?).unwrap_or(0),
        acknowledged_at: row.try_get("acknowledged_at")?,
        acknowledged_by: row.try_get("acknowledged_by")?,
        evaluation_id: row.try_get("evaluation_id")?,
        evidence: serde_json::from_str(&evidence).map_err(corrupt("alert evidence"))?,
        job_id: row.try_get("job_id")?,
        action_error: row.try_get("action_error")?,
    })
}

fn expect_unique_violation(error: sqlx::Error) -> Result<(), MonitoringError> {
    let error = MetaError::from(error);
    if error.is_unique_violation() {
        Ok(())
    } else {
        Err(MonitoringError::FailedPrecondition(format!(
            "metadata database error: {error}"
        )))
    }
}

impl MonitorStore {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Any>, MonitoringError> {
        let tx = match self.db.dialect() {
            Dialect::Sqlite => self.db.pool().begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => self.db.pool().begin().await?,
        };
        Ok(tx)
    }

    /// Stores a new monitor; `AlreadyExists` when the project has one with this name.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_monitor(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        spec: &MonitorSpec,
        reference: &ReferenceRecord,
        created_by: &str,
        now: UnixMillis,
    ) -> Result<Monitor, MonitoringError> {
        let id = new_id();
        let inserted = sqlx::query(self.db.sql(
            "INSERT INTO monitors (id, tenant_id, project_id, name, spec_json, reference_json, \
             next_run_at, created_at, created_by, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(&id)
        .bind(tenant.as_str())
        .bind(project.as_str())
        .bind(&spec.name)
        .bind(to_json(spec, "monitor spec")?)
        .bind(to_json(reference, "monitor reference")?)
        .bind(now)
        .bind(now)
        .bind(created_by)
        .bind(now)
        .execute(self.db.pool())
        .await;
        if let Err(error) = inserted {
            expect_unique_violation(error)?;
            return Err(MonitoringError::AlreadyExists {
                what: "monitor",
                name: spec.name.clone(),
            });
        }
        self.get_monitor(tenant, project, &spec.name).await
    }

    /// Replaces a monitor's spec and reference; the prediction reference is fitted again.
    pub async fn update_monitor(
        &self,
        monitor: &Monitor,
        spec: &MonitorSpec,
        reference: &ReferenceRecord,
        now: UnixMillis,
    ) -> Result<Monitor, MonitoringError> {
        sqlx::query(self.db.sql(
            "UPDATE monitors SET spec_json = ?, reference_json = ?, \
             prediction_reference_json = NULL, next_run_at = ?, updated_at = ? \
             WHERE tenant_id = ? AND id = ?",
        ))
        .bind(to_json(spec, "monitor spec")?)
        .bind(to_json(reference, "monitor reference")?)
        .bind(now)
        .bind(now)
        .bind(monitor.tenant.as_str())
        .bind(&monitor.id)
        .execute(self.db.pool())
        .await?;
        self.get_monitor(&monitor.tenant, &monitor.project, &monitor.name)
            .await
    }

    pub async fn get_monitor(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        name: &str,
    ) -> Result<Monitor, MonitoringError> {
        let statement = format!(
            "SELECT {MONITOR_COLUMNS} FROM monitors WHERE tenant_id = ? AND project_id = ? AND name = ?"
        );
        let row = sqlx::query(self.db.sql(&statement))
            .bind(tenant.as_str())
            .bind(project.as_str())
            .bind(name)
            .fetch_optional(self.db.pool())
            .await?;
        match row {
            Some(row) => monitor_from_row(&row),
            None => Err(MonitoringError::NotFound {
                what: "monitor",
                name: name.to_owned(),
            }),
        }
    }

    /// Lists the project's monitors by name.
    pub async fn list_monitors(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
    ) -> Result<Vec<Monitor>, MonitoringError> {
        let statement = format!(
            "SELECT {MONITOR_COLUMNS} FROM monitors WHERE tenant_id = ? AND project_id = ? ORDER BY name"
        );
        let rows = sqlx::query(self.db.sql(&statement))
            .bind(tenant.as_str())
            .bind(project.as_str())
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(monitor_from_row).collect()
    }

    /// Deletes a monitor with its evaluations, rules, alerts and deliveries.
    pub async fn delete_monitor(&self, monitor: &Monitor) -> Result<(), MonitoringError> {
        let mut tx = self.begin_write().await?;
        let tenant = monitor.tenant.as_str();
        for statement in [
            "DELETE FROM monitor_alert_deliveries WHERE tenant_id = ? AND alert_id IN \
             (SELECT id FROM monitor_alerts WHERE monitor_id = ?)",
            "DELETE FROM monitor_alerts WHERE tenant_id = ? AND monitor_id = ?",
            "DELETE FROM monitor_alert_rules WHERE tenant_id = ? AND monitor_id = ?",
            "DELETE FROM monitor_evaluations WHERE tenant_id = ? AND monitor_id = ?",
            "DELETE FROM monitors WHERE tenant_id = ? AND id = ?",
        ] {
            sqlx::query(self.db.sql(statement))
                .bind(tenant)
                .bind(&monitor.id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Returns up to `limit` monitors of every tenant whose next run is due.
    pub async fn due_monitors(
        &self,
        now: UnixMillis,
        limit: u32,
    ) -> Result<Vec<Monitor>, MonitoringError> {
        let statement = format!(
            "SELECT {MONITOR_COLUMNS} FROM monitors WHERE next_run_at <= ? ORDER BY next_run_at LIMIT ?"
        );
        let rows = sqlx::query(self.db.sql(&statement))
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(monitor_from_row).collect()
    }

    /// Moves a due monitor's next run from `expected` to `next`. Returns false when another
    /// evaluator moved it first, so one scheduled run happens once across replicas.
    pub async fn claim_run(
        &self,
        monitor: &Monitor,
        expected: UnixMillis,
        next: UnixMillis,
    ) -> Result<bool, MonitoringError> {
        let result = sqlx::query(self.db.sql(
            "UPDATE monitors SET next_run_at = ? WHERE tenant_id = ? AND id = ? AND next_run_at = ?",
        ))
        .bind(next)
        .bind(monitor.tenant.as_str())
        .bind(&monitor.id)
        .bind(expected)
        .execute(self.db.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Records the outcome of an evaluation attempt on the monitor row.
    pub async fn set_last_result(
        &self,
        monitor: &Monitor,
        evaluated_at: UnixMillis,
        error: Option<&str>,
    ) -> Result<(), MonitoringError> {
        sqlx::query(self.db.sql(
            "UPDATE monitors SET last_evaluated_at = ?, last_error = ? WHERE tenant_id = ? AND id = ?",
        ))
        .bind(evaluated_at)
        .bind(error)
        .bind(monitor.tenant.as_str())
        .bind(&monitor.id)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Stores the blob digest of the prediction column's reference, unless one was stored.
    pub async fn set_prediction_reference(
        &self,
        monitor: &Monitor,
        digest: &str,
    ) -> Result<(), MonitoringError> {
        sqlx::query(self.db.sql(
            "UPDATE monitors SET prediction_reference_json = ? WHERE tenant_id = ? AND id = ? \
             AND prediction_reference_json IS NULL",
        ))
        .bind(digest)
        .bind(monitor.tenant.as_str())
        .bind(&monitor.id)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    pub async fn insert_evaluation(
        &self,
        monitor: &Monitor,
        evaluated_at: UnixMillis,
        window_start: Option<UnixMillis>,
        window_end: Option<UnixMillis>,
        report: &Report,
    ) -> Result<Evaluation, MonitoringError> {
        let id = new_id();
        sqlx::query(self.db.sql(
            "INSERT INTO monitor_evaluations (id, monitor_id, tenant_id, evaluated_at, \
             window_start, window_end, rows_count, report_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(&id)
        .bind(&monitor.id)
        .bind(monitor.tenant.as_str())
        .bind(evaluated_at)
        .bind(window_start)
        .bind(window_end)
        .bind(i64::try_from(report.window.rows).unwrap_or(i64::MAX))
        .bind(to_json(report, "evaluation report")?)
        .execute(self.db.pool())
        .await?;
        Ok(Evaluation {
            id,
            monitor_id: monitor.id.clone(),
            evaluated_at,
            window_start,
            window_end,
            rows: report.window.rows,
            report: report.clone(),
        })
    }

    /// Lists a monitor's evaluations, newest first.
    pub async fn list_evaluations(
        &self,
        monitor: &Monitor,
        limit: u32,
    ) -> Result<Vec<Evaluation>, MonitoringError> {
        let rows = sqlx::query(self.db.sql(
            "SELECT id, monitor_id, evaluated_at, window_start, window_end, rows_count, report_json \
             FROM monitor_evaluations WHERE tenant_id = ? AND monitor_id = ? \
             ORDER BY evaluated_at DESC, id DESC LIMIT ?",
        ))
        .bind(monitor.tenant.as_str())
        .bind(&monitor.id)
        .bind(i64::from(limit))
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let report: String = row.try_get("report_json")?;
                Ok(Evaluation {
                    id: row.try_get("id")?,
                    monitor_id: row.try_get("monitor_id")?,
                    evaluated_at: row.try_get("evaluated_at")?,
                    window_start: row.try_get("window_start")?,
                    window_end: row.try_get("window_end")?,
                    rows: u64::try_from(row.try_get::<i64, _>("rows_count")?).unwrap_or(0),
                    report: serde_json::from_str(&report).map_err(corrupt("evaluation report"))?,
                })
            })
            .collect()
    }

    /// Stores a rule; `AlreadyExists` when the monitor has one with this name.
    pub async fn insert_rule(
        &self,
        monitor: &Monitor,
        spec: &AlertRuleSpec,
        secret: &str,
        created_by: &str,
        now: UnixMillis,
    ) -> Result<AlertRule, MonitoringError> {
        let inserted = sqlx::query(self.db.sql(
            "INSERT INTO monitor_alert_rules (id, monitor_id, tenant_id, name, spec_json, secret, \
             created_at, created_by, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(new_id())
        .bind(&monitor.id)
        .bind(monitor.tenant.as_str())
        .bind(&spec.name)
        .bind(to_json(spec, "alert rule spec")?)
        .bind(secret)
        .bind(now)
        .bind(created_by)
        .bind(now)
        .execute(self.db.pool())
        .await;
        if let Err(error) = inserted {
            expect_unique_violation(error)?;
            return Err(MonitoringError::AlreadyExists {
                what: "alert rule",
                name: spec.name.clone(),
            });
        }
        self.get_rule(monitor, &spec.name).await
    }

    /// Replaces a rule's spec; its secret and alerts stay.
    pub async fn update_rule(
        &self,
        monitor: &Monitor,
        rule: &AlertRule,
        spec: &AlertRuleSpec,
        now: UnixMillis,
    ) -> Result<AlertRule, MonitoringError> {
        sqlx::query(self.db.sql(
            "UPDATE monitor_alert_rules SET spec_json = ?, updated_at = ? WHERE tenant_id = ? AND id = ?",
        ))
        .bind(to_json(spec, "alert rule spec")?)
        .bind(now)
        .bind(monitor.tenant.as_str())
        .bind(&rule.id)
        .execute(self.db.pool())
        .await?;
        self.get_rule(monitor, &rule.name).await
    }

    pub async fn get_rule(
        &self,
        monitor: &Monitor,
        name: &str,
    ) -> Result<AlertRule, MonitoringError> {
        let statement = format!(
            "SELECT {RULE_COLUMNS} FROM monitor_alert_rules WHERE tenant_id = ? AND monitor_id = ? AND name = ?"
        );
        let row = sqlx::query(self.db.sql(&statement))
            .bind(monitor.tenant.as_str())
            .bind(&monitor.id)
            .bind(name)
            .fetch_optional(self.db.pool())
            .await?;
        match row {
            Some(row) => rule_from_row(&row),
            None => Err(MonitoringError::NotFound {
                what: "alert rule",
                name: name.to_owned(),
            }),
        }
    }

    pub async fn list_rules(&self, monitor: &Monitor) -> Result<Vec<AlertRule>, MonitoringError> {
        let statement = format!(
            "SELECT {RULE_COLUMNS} FROM monitor_alert_rules WHERE tenant_id = ? AND monitor_id = ? ORDER BY name"
        );
        let rows = sqlx::query(self.db.sql(&statement))
            .bind(monitor.tenant.as_str())
            .bind(&monitor.id)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(rule_from_row).collect()
    }

    /// Deletes a rule with its alerts and their deliveries.
    pub async fn delete_rule(
        &self,
        monitor: &Monitor,
        rule: &AlertRule,
    ) -> Result<(), MonitoringError> {
        let mut tx = self.begin_write().await?;
        let tenant = monitor.tenant.as_str();
        for statement in [
            "DELETE FROM monitor_alert_deliveries WHERE tenant_id = ? AND alert_id IN \
             (SELECT id FROM monitor_alerts WHERE rule_id = ?)",
            "DELETE FROM monitor_alerts WHERE tenant_id = ? AND rule_id = ?",
            "DELETE FROM monitor_alert_rules WHERE tenant_id = ? AND id = ?",
        ] {
            sqlx::query(self.db.sql(statement))
                .bind(tenant)
                .bind(&rule.id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Returns the newest alert of a rule for a subject.
    pub async fn latest_alert(
        &self,
        tenant: &TenantId,
        rule_id: &str,
        subject: &str,
    ) -> Result<Option<Alert>, MonitoringError> {
        let statement = format!(
            "SELECT {ALERT_COLUMNS} FROM monitor_alerts WHERE tenant_id = ? AND rule_id = ? \
             AND subject = ? ORDER BY fired_at DESC, id DESC LIMIT 1"
        );
        let row = sqlx::query(self.db.sql(&statement))
            .bind(tenant.as_str())
            .bind(rule_id)
            .bind(subject)
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref().map(alert_from_row).transpose()
    }

    /// Lists a rule's firing alerts.
    pub async fn firing_alerts(
        &self,
        tenant: &TenantId,
        rule_id: &str,
    ) -> Result<Vec<Alert>, MonitoringError> {
        let statement = format!(
            "SELECT {ALERT_COLUMNS} FROM monitor_alerts WHERE tenant_id = ? AND rule_id = ? \
             AND state = 'firing' ORDER BY fired_at"
        );
        let rows = sqlx::query(self.db.sql(&statement))
            .bind(tenant.as_str())
            .bind(rule_id)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(alert_from_row).collect()
    }

    pub async fn insert_alert(
        &self,
        monitor: &Monitor,
        rule: &AlertRule,
        subject: &str,
        evaluation_id: &str,
        evidence: &serde_json::Value,
        now: UnixMillis,
    ) -> Result<Alert, MonitoringError> {
        let id = new_id();
        sqlx::query(self.db.sql(
            "INSERT INTO monitor_alerts (id, rule_id, monitor_id, tenant_id, subject, state, \
             fired_at, last_seen_at, repeats, evaluation_id, evidence_json) \
             VALUES (?, ?, ?, ?, ?, 'firing', ?, ?, 0, ?, ?)",
        ))
        .bind(&id)
        .bind(&rule.id)
        .bind(&monitor.id)
        .bind(monitor.tenant.as_str())
        .bind(subject)
        .bind(now)
        .bind(now)
        .bind(evaluation_id)
        .bind(to_json(evidence, "alert evidence")?)
        .execute(self.db.pool())
        .await?;
        self.get_alert(&monitor.tenant, &monitor.id, &id).await
    }

    /// Counts a repeat of the condition on an alert. A firing alert also takes the new
    /// evidence; a resolved one in its cool-down keeps the evidence it fired with.
    pub async fn record_repeat(
        &self,
        tenant: &TenantId,
        alert: &Alert,
        evaluation_id: &str,
        evidence: &serde_json::Value,
        now: UnixMillis,
    ) -> Result<(), MonitoringError> {
        if alert.state == AlertState::Firing {
            sqlx::query(self.db.sql(
                "UPDATE monitor_alerts SET repeats = repeats + 1, last_seen_at = ?, \
                 evaluation_id = ?, evidence_json = ? WHERE tenant_id = ? AND id = ?",
            ))
            .bind(now)
            .bind(evaluation_id)
            .bind(to_json(evidence, "alert evidence")?)
            .bind(tenant.as_str())
            .bind(&alert.id)
            .execute(self.db.pool())
            .await?;
        } else {
            sqlx::query(self.db.sql(
                "UPDATE monitor_alerts SET repeats = repeats + 1 WHERE tenant_id = ? AND id = ?",
            ))
            .bind(tenant.as_str())
            .bind(&alert.id)
            .execute(self.db.pool())
            .await?;
        }
        Ok(())
    }

    pub async fn resolve_alert(
        &self,
        tenant: &TenantId,
        alert: &Alert,
        now: UnixMillis,
    ) -> Result<(), MonitoringError> {
        sqlx::query(self.db.sql(
            "UPDATE monitor_alerts SET state = 'resolved', resolved_at = ? \
             WHERE tenant_id = ? AND id = ? AND state = 'firing'",
        ))
        .bind(now)
        .bind(tenant.as_str())
        .bind(&alert.id)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Records the job a retrain action submitted, or why it failed.
    pub async fn set_alert_action(
        &self,
        tenant: &TenantId,
        alert_id: &str,
        job_id: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), MonitoringError> {
        sqlx::query(self.db.sql(
            "UPDATE monitor_alerts SET job_id = ?, action_error = ? WHERE tenant_id = ? AND id = ?",
        ))
        .bind(job_id)
        .bind(error)
        .bind(tenant.as_str())
        .bind(alert_id)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Acknowledges an alert; acknowledging twice keeps the first acknowledgement.
    pub async fn acknowledge_alert(
        &self,
        monitor: &Monitor,
        alert_id: &str,
        by: &str,
        now: UnixMillis,
    ) -> Result<Alert, MonitoringError> {
        self.get_alert(&monitor.tenant, &monitor.id, alert_id)
            .await?;
        sqlx::query(self.db.sql(
            "UPDATE monitor_alerts SET acknowledged_at = ?, acknowledged_by = ? \
             WHERE tenant_id = ? AND monitor_id = ? AND id = ? AND acknowledged_at IS NULL",
        ))
        .bind(now)
        .bind(by)
        .bind(monitor.tenant.as_str())
        .bind(&monitor.id)
        .bind(alert_id)
        .execute(self.db.pool())
        .await?;
        self.get_alert(&monitor.tenant, &monitor.id, alert_id).await
    }

    pub async fn get_alert(
        &self,
        tenant: &TenantId,
        monitor_id: &str,
        alert_id: &str,
    ) -> Result<Alert, MonitoringError> {
        let statement = format!(
            "SELECT {ALERT_COLUMNS} FROM monitor_alerts WHERE tenant_id = ? AND monitor_id = ? AND id = ?"
        );
        let row = sqlx::query(self.db.sql(&statement))
            .bind(tenant.as_str())
            .bind(monitor_id)
            .bind(alert_id)
            .fetch_optional(self.db.pool())
            .await?;
        match row {
            Some(row) => alert_from_row(&row),
            None => Err(MonitoringError::NotFound {
                what: "alert",
                name: alert_id.to_owned(),
            }),
        }
    }

    /// Lists a monitor's alerts, newest first, optionally only those in `state`.
    pub async fn list_alerts(
        &self,
        monitor: &Monitor,
        state: Option<AlertState>,
        limit: u32,
    ) -> Result<Vec<Alert>, MonitoringError> {
        let state_clause = if state.is_some() {
            " AND state = ?"
        } else {
            ""
        };
        let statement = format!(
            "SELECT {ALERT_COLUMNS} FROM monitor_alerts WHERE tenant_id = ? AND monitor_id = ?\
             {state_clause} ORDER BY fired_at DESC, id DESC LIMIT ?"
        );
        let mut query = sqlx::query(self.db.sql(&statement))
            .bind(monitor.tenant.as_str())
            .bind(&monitor.id);
        if let Some(state) = state {
            query = query.bind(state.as_str());
        }
        let rows = query
            .bind(i64::from(limit))
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(alert_from_row).collect()
    }

    pub async fn insert_delivery(
        &self,
        tenant: &TenantId,
        delivery: &Delivery,
    ) -> Result<(), MonitoringError> {
        sqlx::query(self.db.sql(
            "INSERT INTO monitor_alert_deliveries (id, alert_id, tenant_id, event, sink, target, \
             attempts, outcome, status_code, error, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(&delivery.id)
        .bind(&delivery.alert_id)
        .bind(tenant.as_str())
        .bind(&delivery.event)
        .bind(&delivery.sink)
        .bind(&delivery.target)
        .bind(i64::from(delivery.attempts))
        .bind(&delivery.outcome)
        .bind(delivery.status_code.map(i64::from))
        .bind(delivery.error.as_deref())
        .bind(delivery.finished_at)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Lists an alert's deliveries in the order they finished.
    pub async fn list_deliveries(
        &self,
        tenant: &TenantId,
        alert_id: &str,
    ) -> Result<Vec<Delivery>, MonitoringError> {
        let rows = sqlx::query(self.db.sql(
            "SELECT id, alert_id, event, sink, target, attempts, outcome, status_code, error, \
             finished_at FROM monitor_alert_deliveries WHERE tenant_id = ? AND alert_id = ? \
             ORDER BY finished_at, id",
        ))
        .bind(tenant.as_str())
        .bind(alert_id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Delivery {
                    id: row.try_get("id")?,
                    alert_id: row.try_get("alert_id")?,
                    event: row.try_get("event")?,
                    sink: row.try_get("sink")?,
                    target: row.try_get("target")?,
                    attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(0),
                    outcome: row.try_get("outcome")?,
                    status_code: row
                        .try_get::<Option<i64>, _>("status_code")?
                        .and_then(|code| u16::try_from(code).ok()),
                    error: row.try_get("error")?,
                    finished_at: row.try_get("finished_at")?,
                })
            })
            .collect()
    }

    /// Returns a fresh delivery id.
    pub fn new_delivery_id() -> String {
        new_id()
    }
}
