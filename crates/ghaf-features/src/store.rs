//! Feature store tables on the metadata database (SQLite or PostgreSQL): entities, view
//! versions, feature services and materialised intervals. Every query takes the tenant and
//! project.

use ghaf_core::{ProjectId, TenantId, UnixMillis};
use ghaf_meta::{Db, MetaError};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::FeatureError;
use crate::definition::{Entity, FeatureServiceSpec, FeatureViewSpec, KeyType};

/// One join key of a stored view version: the entity, its key column and type, as they
/// were when the version was applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredJoinKey {
    pub entity: String,
    pub column: String,
    pub value_type: KeyType,
}

/// One stored version of a feature view.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredView {
    pub name: String,
    pub version: i64,
    pub spec: FeatureViewSpec,
    pub fingerprint: String,
    /// The join keys the version was applied with; empty for versions stored before join
    /// keys were recorded, which use the current entities.
    #[serde(default)]
    pub join_keys: Vec<StoredJoinKey>,
    pub created_at: UnixMillis,
    /// Principal id of the creator.
    pub created_by: String,
    /// The creator's principal name, when the principal still exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by_name: Option<String>,
    pub updated_at: UnixMillis,
}

impl StoredView {
    /// The entities to compile this version with: its recorded join keys, or `current`
    /// for a version stored without them.
    pub fn entities(&self, current: &[Entity]) -> Vec<Entity> {
        if self.join_keys.is_empty() {
            return current.to_vec();
        }
        let mut entities: Vec<Entity> = self
            .join_keys
            .iter()
            .map(|key| Entity {
                name: key.entity.clone(),
                join_key: Some(key.column.clone()),
                value_type: key.value_type,
                description: String::new(),
            })
            .collect();
        for entity in current {
            if !entities.iter().any(|e| e.name == entity.name) {
                entities.push(entity.clone());
            }
        }
        entities
    }
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

    /// Columns of a view version, from `feature_view_versions v` joined with the creator's
    /// principal `p`.
    const VIEW_COLUMNS: &'static str = "v.name, v.version, v.spec_json, v.fingerprint, \
         v.join_keys_json, v.created_at, v.created_by, p.name AS created_by_name, v.updated_at";

    /// The view-version table with the creator's principal, for `VIEW_COLUMNS`.
    const VIEW_TABLE: &'static str =
        "feature_view_versions v LEFT JOIN principals p ON p.id = v.created_by";

    fn view_from_row(row: &AnyRow) -> Result<StoredView, FeatureError> {
        let json: String = row.try_get("spec_json")?;
        let keys: Option<String> = row.try_get("join_keys_json")?;
        let join_keys = match keys {
            Some(keys) => serde_json::from_str(&keys).map_err(corrupt("feature view join keys"))?,
            None => Vec::new(),
        };
        Ok(StoredView {
            name: row.try_get("name")?,
            version: row.try_get("version")?,
            spec: serde_json::from_str(&json).map_err(corrupt("feature view"))?,
            fingerprint: row.try_get("fingerprint")?,
            join_keys,
            created_at: row.try_get("created_at")?,
            created_by: row.try_get("created_by")?,
            created_by_name: row.try_get("created_by_name")?,
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
            "SELECT {} FROM {} WHERE v.tenant_id = ? AND v.project_id = ? AND \
             v.version = (SELECT MAX(version) FROM feature_view_versions w WHERE w.tenant_id = v.tenant_id \
             AND w.project_id = v.project_id AND w.name = v.name) ORDER BY v.name",
            Self::VIEW_COLUMNS,
            Self::VIEW_TABLE
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
            "SELECT {} FROM {} WHERE v.tenant_id = ? AND v.project_id = ? AND v.name = ? \
             ORDER BY v.version",
            Self::VIEW_COLUMNS,
            Self::VIEW_TABLE
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
                "SELECT {} FROM {} WHERE v.tenant_id = ? AND v.project_id = ? AND v.name = ? \
                 AND v.version = ?",
                Self::VIEW_COLUMNS,
                Self::VIEW_TABLE
            ),
            None => format!(
                "SELECT {} FROM {} WHERE v.tenant_id = ? AND v.project_id = ? AND v.name = ? \
                 ORDER BY v.version DESC LIMIT 1",
                Self::VIEW_COLUMNS,
                Self::VIEW_TABLE
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
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_view_version(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        spec: &FeatureViewSpec,
        version: i64,
        fingerprint: &str,
        join_keys: &[StoredJoinKey],
        actor: &str,
    ) -> Result<StoredView, FeatureError> {
        let now = ghaf_core::now_millis();
        let inserted = sqlx::query(self.db.sql(
            "INSERT INTO feature_view_versions (tenant_id, project_id, name, version, spec_json, \
             fingerprint, join_keys_json, created_at, created_by, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(tenant.as_str())
        .bind(project.as_str())
        .bind(&spec.name)
        .bind(version)
        .bind(to_json(spec))
        .bind(fingerprint)
        .bind(to_json(&join_keys))
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
            join_keys: join_keys.to_vec(),
            created_at: now,
            created_by: actor.to_owned(),
            created_by_name: None,
            updated_at: now,
        })
    }

    /// Replaces the definition of an existing version whose fingerprint is `fingerprint`,
    /// for edits that do not create a version (description, tags, TTL, online flag). Only
    /// the latest version can be updated: when another apply has added a newer version since
    /// the plan was made, the update fails with `VersionConflict` naming both versions.
    pub async fn update_view_in_place(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        spec: &FeatureViewSpec,
        version: i64,
        fingerprint: &str,
    ) -> Result<(), FeatureError> {
        // The subquery makes the check and the update one statement, so a version inserted
        // between a separate check and the update cannot slip through.
        let updated = sqlx::query(self.db.sql(
            "UPDATE feature_view_versions SET spec_json = ?, updated_at = ? WHERE tenant_id = ? \
             AND project_id = ? AND name = ? AND version = ? AND fingerprint = ? AND version = \
             (SELECT MAX(w.version) FROM feature_view_versions w WHERE w.tenant_id = ? AND \
             w.project_id = ? AND w.name = ?)",
        ))
        .bind(to_json(spec))
        .bind(ghaf_core::now_millis())
        .bind(tenant.as_str())
        .bind(project.as_str())
        .bind(&spec.name)
        .bind(version)
        .bind(fingerprint)
        .bind(tenant.as_str())
        .bind(project.as_str())
        .bind(&spec.name)
        .execute(self.db.pool())
        .await?;
        if updated.rows_affected() != 1
            && let Some(latest) = self
                .latest_view_version(tenant, project, &spec.name)
                .await?
            && latest != version
        {
            return Err(FeatureError::VersionConflict {
                view: spec.name.clone(),
                planned: version,
                latest,
            });
        }
        if updated.rows_affected() != 1 {
            return Err(FeatureError::Conflict {
                what: "feature view",
                name: spec.name.clone(),
            });
        }
        Ok(())
    }

    /// The latest version number of a view, `None` when it has none.
    async fn latest_view_version(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        name: &str,
    ) -> Result<Option<i64>, FeatureError> {
        let row = sqlx::query(self.db.sql(
            "SELECT MAX(version) AS latest FROM feature_view_versions WHERE tenant_id = ? AND \
             project_id = ? AND name = ?",
        ))
        .bind(tenant.as_str())
        .bind(project.as_str())
        .bind(name)
        .fetch_one(self.db.pool())
        .await?;
        Ok(row.try_get::<Option<i64>, _>("latest")?)
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
