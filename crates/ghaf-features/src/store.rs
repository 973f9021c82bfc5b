//! Feature store tables on the metadata database (SQLite or PostgreSQL): entities, view
//! versions, feature services and materialised intervals. Every query takes the tenant and
//! project.

use ghaf_core::{ProjectId, TenantId, UnixMillis};
use ghaf_meta::{Db, MetaError};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::FeatureError;
use crate::definition::{Entity, FeatureServiceSpec, FeatureViewSpec};

/// One stored version of a feature view.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredView {
    pub name: String,
    pub version: i64,
    pub spec: FeatureViewSpec,
    pub fingerprint: String,
    pub created_at: UnixMillis,
    pub created_by: String,
    pub updated_at: UnixMillis,
}

/// One materialisation run: the event-time range it wrote to the online store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Materialization {
    pub id: String,
    pub view: String,
    pub view_version: i64,
    pub dataset_version: i64,
    /// Inclusive event-time bounds, in microseconds since the Unix epoch.
    pub start_micros: i64,
    pub end_micros: i64,
    /// Keys whose stored value this run replaced or created.
    pub keys_written: u64,
    /// Keys whose stored value was newer than this run's, left unchanged.
    pub keys_skipped: u64,
    pub created_at: UnixMillis,
    pub created_by: String,
}

/// SQL access to the feature store tables.
#[derive(Clone, Debug)]
pub struct FeatureDb {
    db: Db,
}

fn corrupt(what: &'static str) -> impl Fn(serde_json::Error) -> FeatureError {
    move |error| FeatureError::Corrupt {
        what,
        message: error.to_string(),
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

impl FeatureDb {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub async fn list_entities(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
    ) -> Result<Vec<Entity>, FeatureError> {
        let rows = sqlx::query(self.db.sql(
            "SELECT spec_json FROM feature_entities WHERE tenant_id = ? AND project_id = ? ORDER BY name",
        ))
        .bind(tenant.as_str())
        .bind(project.as_str())
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let json: String = row.try_get("spec_json")?;
                serde_json::from_str(&json).map_err(corrupt("entity"))
            })
            .collect()
    }

    /// Creates or replaces an entity.
    pub async fn upsert_entity(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        entity: &Entity,
        actor: &str,
    ) -> Result<(), FeatureError> {
        self.upsert_named(
            "feature_entities",
            tenant,
            project,
            &entity.name,
            &to_json(entity),
            actor,
        )
        .await
    }

    pub async fn list_services(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
    ) -> Result<Vec<FeatureServiceSpec>, FeatureError> {
        let rows = sqlx::query(self.db.sql(
            "SELECT spec_json FROM feature_services WHERE tenant_id = ? AND project_id = ? ORDER BY name",
        ))
        .bind(tenant.as_str())
        .bind(project.as_str())
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let json: String = row.try_get("spec_json")?;
                serde_json::from_str(&json).map_err(corrupt("feature service"))
            })
            .collect()
    }

    pub async fn get_service(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        name: &str,
    ) -> Result<FeatureServiceSpec, FeatureError> {
        let row = sqlx::query(self.db.sql(
            "SELECT spec_json FROM feature_services WHERE tenant_id = ? AND project_id = ? AND name = ?",
        ))
        .bind(tenant.as_str())
        .bind(project.as_str())
        .bind(name)
        .fetch_optional(self.db.pool())
        .await?;
        let Some(row) = row else {
            return Err(FeatureError::NotFound {
                what: "feature service",
                name: name.to_owned(),
            });
        };
        let json: String = row.try_get("spec_json")?;
        serde_json::from_str(&json).map_err(corrupt("feature service"))
    }

    /// Creates or replaces a feature service.
    pub async fn upsert_service(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        service: &FeatureServiceSpec,
        actor: &str,
    ) -> Result<(), FeatureError> {
        self.upsert_named(
            "feature_services",
            tenant,
            project,
            &service.name,
            &to_json(service),
            actor,
        )
        .await
    }

    async fn upsert_named(
        &self,
        table: &'static str,
        tenant: &TenantId,
        project: &ProjectId,
        name: &str,
        spec_json: &str,
        actor: &str,
    ) -> Result<(), FeatureError> {
        let now = ghaf_core::now_millis();
        let statement = format!(
            "INSERT INTO {table} (tenant_id, project_id, name, spec_json, created_at, updated_at, updated_by) \
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, project_id, name) DO UPDATE SET \
             spec_json = excluded.spec_json, updated_at = excluded.updated_at, updated_by = excluded.updated_by"
        );
        sqlx::query(self.db.sql(&statement))
            .bind(tenant.as_str())
            .bind(project.as_str())
            .bind(name)
            .bind(spec_json)
            .bind(now)
            .bind(now)
            .bind(actor)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    const VIEW_COLUMNS: &'static str =
        "name, version, spec_json, fingerprint, created_at, created_by, updated_at";

    fn view_from_row(row: &AnyRow) -> Result<StoredView, FeatureError> {
        let json: String = row.try_get("spec_json")?;
        Ok(StoredView {
            name: row.try_get("name")?,
            version: row.try_get("version")?,
            spec: serde_json::from_str(&json).map_err(corrupt("feature view"))?,
            fingerprint: row.try_get("fingerprint")?,
            created_at: row.try_get("created_at")?,
            created_by: row.try_get("created_by")?,
            updated_at: row.try_get("updated_at")?,
        })
    }

    /// Lists the latest version of every view of the project.
    pub async fn list_views(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
    ) -> Result<Vec<StoredView>, FeatureError> {
        let statement = format!(
            "SELECT {} FROM feature_view_versions v WHERE tenant_id = ? AND project_id = ? AND \
             version = (SELECT MAX(version) FROM feature_view_versions w WHERE w.tenant_id = v.tenant_id \
             AND w.project_id = v.project_id AND w.name = v.name) ORDER BY name",
            Self::VIEW_COLUMNS
        );
        let rows = sqlx::query(self.db.sql(&statement))
            .bind(tenant.as_str())
            .bind(project.as_str())
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(Self::view_from_row).collect()
    }

    /// Lists every version of one view, oldest first.
    pub async fn list_view_versions(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        name: &str,
    ) -> Result<Vec<StoredView>, FeatureError> {
        let statement = format!(
            "SELECT {} FROM feature_view_versions WHERE tenant_id = ? AND project_id = ? AND name = ? \
             ORDER BY version",
            Self::VIEW_COLUMNS
        );
        let rows = sqlx::query(self.db.sql(&statement))
            .bind(tenant.as_str())
            .bind(project.as_str())
            .bind(name)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(Self::view_from_row).collect()
    }

    /// Returns one version of a view, the latest when `version` is `None`.
    pub async fn get_view(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        name: &str,
        version: Option<i64>,
    ) -> Result<StoredView, FeatureError> {
        let statement = match version {
            Some(_) => format!(
                "SELECT {} FROM feature_view_versions WHERE tenant_id = ? AND project_id = ? AND name = ? \
                 AND version = ?",
                Self::VIEW_COLUMNS
            ),
            None => format!(
                "SELECT {} FROM feature_view_versions WHERE tenant_id = ? AND project_id = ? AND name = ? \
                 ORDER BY version DESC LIMIT 1",
                Self::VIEW_COLUMNS
            ),
        };
        let mut query = sqlx::query(self.db.sql(&statement))
            .bind(tenant.as_str())
            .bind(project.as_str())
            .bind(name);
        if let Some(version) = version {
            query = query.bind(version);
        }
        match query.fetch_optional(self.db.pool()).await? {
            Some(row) => Self::view_from_row(&row),
            None => Err(FeatureError::NotFound {
                what: "feature view",
                name: match version {
                    Some(version) => format!("{name}@v{version}"),
                    None => name.to_owned(),
                },
            }),
        }
    }

    /// Stores `spec` as version `version`, which must be one more than the latest stored
    /// version (1 for a new view). A concurrent insert of the same version fails with
    /// `Conflict`.
    pub async fn insert_view_version(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        spec: &FeatureViewSpec,
        version: i64,
        fingerprint: &str,
        actor: &str,
    ) -> Result<StoredView, FeatureError> {
        let now = ghaf_core::now_millis();
        let inserted = sqlx::query(self.db.sql(
            "INSERT INTO feature_view_versions (tenant_id, project_id, name, version, spec_json, \
             fingerprint, created_at, created_by, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(tenant.as_str())
        .bind(project.as_str())
        .bind(&spec.name)
        .bind(version)
        .bind(to_json(spec))
        .bind(fingerprint)
        .bind(now)
        .bind(actor)
        .bind(now)
        .execute(self.db.pool())
        .await;
        if let Err(error) = inserted {
            let error = MetaError::from(error);
            if error.is_unique_violation() {
                return Err(FeatureError::Conflict {
                    what: "feature view",
                    name: spec.name.clone(),
                });
            }
            return Err(error.into());
        }
        Ok(StoredView {
            name: spec.name.clone(),
            version,
            spec: spec.clone(),
            fingerprint: fingerprint.to_owned(),
            created_at: now,
            created_by: actor.to_owned(),
            updated_at: now,
        })
    }

    /// Replaces the definition of an existing version whose fingerprint is `fingerprint`,
    /// for edits that do not create a version (description, tags, TTL, online flag).
    pub async fn update_view_in_place(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        spec: &FeatureViewSpec,
        version: i64,
        fingerprint: &str,
    ) -> Result<(), FeatureError> {
        let updated = sqlx::query(self.db.sql(
            "UPDATE feature_view_versions SET spec_json = ?, updated_at = ? WHERE tenant_id = ? \
             AND project_id = ? AND name = ? AND version = ? AND fingerprint = ?",
        ))
        .bind(to_json(spec))
        .bind(ghaf_core::now_millis())
        .bind(tenant.as_str())
        .bind(project.as_str())
        .bind(&spec.name)
        .bind(version)
        .bind(fingerprint)
        .execute(self.db.pool())
        .await?;
        if updated.rows_affected() != 1 {
            return Err(FeatureError::Conflict {
                what: "feature view",
                name: spec.name.clone(),
            });
        }
        Ok(())
    }

    pub async fn insert_materialization(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        record: &Materialization,
    ) -> Result<(), FeatureError> {
        sqlx::query(self.db.sql(
            "INSERT INTO feature_materializations (id, tenant_id, project_id, view_name, view_version, \
             dataset_version, start_micros, end_micros, keys_written, keys_skipped, created_at, created_by) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(&record.id)
        .bind(tenant.as_str())
        .bind(project.as_str())
        .bind(&record.view)
        .bind(record.view_version)
        .bind(record.dataset_version)
        .bind(record.start_micros)
        .bind(record.end_micros)
        .bind(i64::try_from(record.keys_written).unwrap_or(i64::MAX))
        .bind(i64::try_from(record.keys_skipped).unwrap_or(i64::MAX))
        .bind(record.created_at)
        .bind(&record.created_by)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Lists the materialisation runs of a view version, the latest end first.
    pub async fn list_materializations(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        view: &str,
        view_version: i64,
    ) -> Result<Vec<Materialization>, FeatureError> {
        let rows = sqlx::query(self.db.sql(
            "SELECT id, view_name, view_version, dataset_version, start_micros, end_micros, keys_written, \
             keys_skipped, created_at, created_by FROM feature_materializations WHERE tenant_id = ? AND \
             project_id = ? AND view_name = ? AND view_version = ? ORDER BY end_micros DESC, created_at DESC",
        ))
        .bind(tenant.as_str())
        .bind(project.as_str())
        .bind(view)
        .bind(view_version)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Materialization {
                    id: row.try_get("id")?,
                    view: row.try_get("view_name")?,
                    view_version: row.try_get("view_version")?,
                    dataset_version: row.try_get("dataset_version")?,
                    start_micros: row.try_get("start_micros")?,
                    end_micros: row.try_get("end_micros")?,
                    keys_written: u64::try_from(row.try_get::<i64, _>("keys_written")?)
                        .unwrap_or(0),
                    keys_skipped: u64::try_from(row.try_get::<i64, _>("keys_skipped")?)
                        .unwrap_or(0),
                    created_at: row.try_get("created_at")?,
                    created_by: row.try_get("created_by")?,
                })
            })
            .collect()
    }
}
