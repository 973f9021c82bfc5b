//! Endpoint records on the metadata database (SQLite or PostgreSQL). Every query takes the
//! tenant and the project.

use ghaf_core::{ProjectId, TenantId, UnixMillis};
use ghaf_meta::Db;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::ServeError;
use crate::policy::{RolloutState, ShadowSpec, TrafficPolicy};

/// One model version an endpoint routes traffic to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    /// Name of the variant within the endpoint, such as `primary`.
    pub name: String,
    /// Registered model name.
    pub model: String,
    /// Registered model version number.
    pub version: i64,
    /// Share of traffic relative to the other variants' weights.
    pub weight: u32,
}

/// A stored endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub tenant: TenantId,
    pub project: ProjectId,
    pub project_name: String,
    pub name: String,
    pub description: String,
    pub feature_service: Option<String>,
    pub execution_provider: String,
    pub variants: Vec<Variant>,
    /// Traffic policy that spreads requests over the variants.
    #[serde(default)]
    pub policy: TrafficPolicy,
    /// Variant that receives a share of requests as mirrored copies, compared and logged
    /// but never returned.
    #[serde(default)]
    pub shadow: Option<ShadowSpec>,
    /// Registered model alias (such as `champion`) whose moves the rollout controller
    /// follows.
    #[serde(default)]
    pub follow_alias: Option<String>,
    /// State of the current or last automated rollout.
    #[serde(default)]
    pub rollout: Option<RolloutState>,
    /// Incremented by every update.
    pub generation: i64,
    pub created_at: UnixMillis,
    pub created_by: String,
    pub updated_at: UnixMillis,
    pub updated_by: String,
}

/// Endpoint records.
#[derive(Clone)]
pub struct EndpointStore {
    db: Db,
}

const COLUMNS: &str = "tenant_id, project_id, name, project_name, description, feature_service, \
     execution_provider, variants_json, generation, created_at, created_by, updated_at, updated_by, \
     policy_json, shadow_json, follow_alias, rollout_json";

/// Decodes a stored JSON column, naming the column and endpoint when it is invalid.
fn decode<T: serde::de::DeserializeOwned>(
    column: &str,
    endpoint: &str,
    text: &str,
) -> Result<T, ServeError> {
    serde_json::from_str(text).map_err(|error| {
        ServeError::Internal(format!(
            "stored {column} of endpoint {endpoint:?} is not valid: {error}"
        ))
    })
}

fn encode<T: Serialize>(column: &str, value: &T) -> Result<String, ServeError> {
    serde_json::to_string(value)
        .map_err(|error| ServeError::Internal(format!("cannot encode {column}: {error}")))
}

fn from_row(row: &AnyRow) -> Result<Endpoint, ServeError> {
    let variants: String = row.try_get("variants_json")?;
    let variants = serde_json::from_str(&variants).map_err(|error| {
        ServeError::Internal(format!(
            "stored endpoint variants are not valid JSON: {error}"
        ))
    })?;
    let name: String = row.try_get("name")?;
    let policy: String = row.try_get("policy_json")?;
    let shadow: Option<String> = row.try_get("shadow_json")?;
    let rollout: Option<String> = row.try_get("rollout_json")?;
    Ok(Endpoint {
        policy: decode("policy_json", &name, &policy)?,
        shadow: shadow
            .map(|text| decode("shadow_json", &name, &text))
            .transpose()?,
        follow_alias: row.try_get("follow_alias")?,
        rollout: rollout
            .map(|text| decode("rollout_json", &name, &text))
            .transpose()?,
        tenant: TenantId::from_stored(row.try_get::<String, _>("tenant_id")?),
        project: ProjectId::from_stored(row.try_get::<String, _>("project_id")?),
        name,
        project_name: row.try_get("project_name")?,
        description: row.try_get("description")?,
        feature_service: row.try_get("feature_service")?,
        execution_provider: row.try_get("execution_provider")?,
        variants,
        generation: row.try_get("generation")?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
        updated_at: row.try_get("updated_at")?,
        updated_by: row.try_get("updated_by")?,
    })
}

fn variants_json(variants: &[Variant]) -> Result<String, ServeError> {
    serde_json::to_string(variants)
        .map_err(|error| ServeError::Internal(format!("cannot encode variants: {error}")))
}

impl EndpointStore {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Stores a new endpoint; `AlreadyExists` when the project has one with that name.
    pub async fn insert(&self, endpoint: &Endpoint) -> Result<(), ServeError> {
        let result = sqlx::query(self.db.sql(&format!(
            "INSERT INTO endpoints ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )))
        .bind(endpoint.tenant.as_str())
        .bind(endpoint.project.as_str())
        .bind(&endpoint.name)
        .bind(&endpoint.project_name)
        .bind(&endpoint.description)
        .bind(endpoint.feature_service.as_deref())
        .bind(&endpoint.execution_provider)
        .bind(variants_json(&endpoint.variants)?)
        .bind(endpoint.generation)
        .bind(endpoint.created_at)
        .bind(&endpoint.created_by)
        .bind(endpoint.updated_at)
        .bind(&endpoint.updated_by)
        .bind(encode("policy", &endpoint.policy)?)
        .bind(endpoint.shadow.as_ref().map(|s| encode("shadow", s)).transpose()?)
        .bind(endpoint.follow_alias.as_deref())
        .bind(endpoint.rollout.as_ref().map(|r| encode("rollout", r)).transpose()?)
        .execute(self.db.pool())
        .await;
        match result.map_err(ghaf_meta::MetaError::from) {
            Ok(_) => Ok(()),
            Err(error) if error.is_unique_violation() => Err(ServeError::AlreadyExists {
                endpoint: endpoint.name.clone(),
            }),
            Err(error) => Err(error.into()),
        }
    }

    /// Replaces an endpoint's settings and increments its generation when the stored one
    /// is still `expected_generation`; `Conflict` when another update came first.
    pub async fn update(
        &self,
        endpoint: &Endpoint,
        expected_generation: i64,
    ) -> Result<(), ServeError> {
        let result = sqlx::query(self.db.sql(
            "UPDATE endpoints SET description = ?, feature_service = ?, execution_provider = ?, \
             variants_json = ?, generation = ?, updated_at = ?, updated_by = ?, policy_json = ?, \
             shadow_json = ?, follow_alias = ?, rollout_json = ? \
             WHERE tenant_id = ? AND project_id = ? AND name = ? AND generation = ?",
        ))
        .bind(&endpoint.description)
        .bind(endpoint.feature_service.as_deref())
        .bind(&endpoint.execution_provider)
        .bind(variants_json(&endpoint.variants)?)
        .bind(endpoint.generation)
        .bind(endpoint.updated_at)
        .bind(&endpoint.updated_by)
        .bind(encode("policy", &endpoint.policy)?)
        .bind(
            endpoint
                .shadow
                .as_ref()
                .map(|s| encode("shadow", s))
                .transpose()?,
        )
        .bind(endpoint.follow_alias.as_deref())
        .bind(
            endpoint
                .rollout
                .as_ref()
                .map(|r| encode("rollout", r))
                .transpose()?,
        )
        .bind(endpoint.tenant.as_str())
        .bind(endpoint.project.as_str())
        .bind(&endpoint.name)
        .bind(expected_generation)
        .execute(self.db.pool())
        .await?;
        if result.rows_affected() == 0 {
            return Err(ServeError::Conflict(format!(
                "endpoint {:?} was changed or deleted by another request; read it again and retry",
                endpoint.name
            )));
        }
        Ok(())
    }

    pub async fn get(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        name: &str,
    ) -> Result<Option<Endpoint>, ServeError> {
        let row = sqlx::query(self.db.sql(&format!(
            "SELECT {COLUMNS} FROM endpoints WHERE tenant_id = ? AND project_id = ? AND name = ?"
        )))
        .bind(tenant.as_str())
        .bind(project.as_str())
        .bind(name)
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Lists a project's endpoints by name.
    pub async fn list(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
    ) -> Result<Vec<Endpoint>, ServeError> {
        let rows = sqlx::query(self.db.sql(&format!(
            "SELECT {COLUMNS} FROM endpoints WHERE tenant_id = ? AND project_id = ? ORDER BY name"
        )))
        .bind(tenant.as_str())
        .bind(project.as_str())
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Lists every endpoint of every tenant, for loading at start-up.
    pub async fn list_all(&self) -> Result<Vec<Endpoint>, ServeError> {
        let rows = sqlx::query(self.db.sql(&format!(
            "SELECT {COLUMNS} FROM endpoints ORDER BY tenant_id, project_id, name"
        )))
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Lists every endpoint of every tenant that follows an alias or has a rollout state,
    /// for the rollout controller.
    pub async fn list_with_rollouts(&self) -> Result<Vec<Endpoint>, ServeError> {
        let rows = sqlx::query(self.db.sql(&format!(
            "SELECT {COLUMNS} FROM endpoints WHERE follow_alias IS NOT NULL OR rollout_json IS NOT NULL \
             ORDER BY tenant_id, project_id, name"
        )))
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Deletes an endpoint; returns false when there was none.
    pub async fn delete(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        name: &str,
    ) -> Result<bool, ServeError> {
        let result = sqlx::query(
            self.db
                .sql("DELETE FROM endpoints WHERE tenant_id = ? AND project_id = ? AND name = ?"),
        )
        .bind(tenant.as_str())
        .bind(project.as_str())
        .bind(name)
        .execute(self.db.pool())
        .await?;
        Ok(result.rows_affected() > 0)
    }
}
