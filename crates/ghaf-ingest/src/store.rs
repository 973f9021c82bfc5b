//! Dataset catalogue tables (datasets, schema versions, dataset versions, lineage events) on
//! the metadata database, SQLite or PostgreSQL. Every query takes the tenant.

use ghaf_core::{ProjectId, TenantId, UnixMillis};
use ghaf_meta::{Db, Dialect, MetaError};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::IngestError;
use crate::pipeline::IngestReport;
use crate::profile::Profile;
use crate::schema::DatasetSchema;

/// How many times a version insert is retried when a concurrent insert took the same number.
const VERSION_INSERT_ATTEMPTS: u32 = 8;

/// A dataset: a named, schema-checked collection of immutable versions in a project.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    pub id: String,
    pub tenant: TenantId,
    pub project: ProjectId,
    pub name: String,
    pub description: String,
    /// Number of the current schema version; new versions are checked against it.
    pub schema_version: i64,
    pub schema: DatasetSchema,
    pub created_at: UnixMillis,
    pub created_by: String,
}

/// One version of a dataset's schema.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SchemaVersion {
    pub version: i64,
    pub schema: DatasetSchema,
    pub created_at: UnixMillis,
    pub created_by: String,
}

/// An immutable dataset version: accepted rows stored as one Parquet blob.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetVersion {
    pub dataset_id: String,
    /// 1, 2, 3 … in order of creation within the dataset.
    pub version: i64,
    pub schema_version: i64,
    /// SHA-256 of the Parquet file, its address in the blob store.
    pub content_digest: String,
    pub content_size: u64,
    pub row_count: u64,
    pub quarantined_rows: u64,
    /// SHA-256 of the quarantine file (NDJSON) when rows failed.
    pub quarantine_digest: Option<String>,
    pub report: IngestReport,
    pub profile: Profile,
    /// Origin of the rows, such as `upload:flights.csv` or a file path.
    pub source: String,
    pub created_at: UnixMillis,
    pub created_by: String,
}

/// A stored OpenLineage run event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredLineageEvent {
    pub id: String,
    pub project: ProjectId,
    pub run_id: String,
    pub event_type: String,
    pub event_time: UnixMillis,
    pub job_name: String,
    pub dataset: String,
    pub event: serde_json::Value,
}

/// Filter of a lineage event listing.
#[derive(Clone, Debug, Default)]
pub struct LineageFilter {
    /// Only events of these projects; `None` for all of the tenant's.
    pub projects: Option<Vec<ProjectId>>,
    pub dataset: Option<String>,
    pub run_id: Option<String>,
    /// Only events strictly after this event id (for paging).
    pub after: Option<String>,
    pub limit: u32,
}

/// SQL access to the dataset tables.
#[derive(Clone, Debug)]
pub struct DatasetStore {
    db: Db,
}

fn corrupt(what: &'static str) -> impl Fn(serde_json::Error) -> IngestError {
    move |error| IngestError::Corrupt {
        what,
        message: error.to_string(),
    }
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl DatasetStore {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Any>, IngestError> {
        // SQLite takes the write lock up front, so the read of the next number cannot go stale.
        let tx = match self.db.dialect() {
            Dialect::Sqlite => self.db.pool().begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => self.db.pool().begin().await?,
        };
        Ok(tx)
    }

    /// Creates a dataset with schema version 1; `AlreadyExists` when the project has a
    /// dataset of that name.
    pub async fn create_dataset(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        name: &str,
        description: &str,
        schema: &DatasetSchema,
        created_by: &str,
    ) -> Result<Dataset, IngestError> {
        let dataset = Dataset {
            id: uuid::Uuid::now_v7().simple().to_string(),
            tenant: tenant.clone(),
            project: project.clone(),
            name: name.to_owned(),
            description: description.to_owned(),
            schema_version: 1,
            schema: schema.clone(),
            created_at: ghaf_core::now_millis(),
            created_by: created_by.to_owned(),
        };
        let schema_json = serde_json::to_string(schema).map_err(corrupt("dataset schema"))?;
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(self.db.sql(
            "INSERT INTO datasets (id, tenant_id, project_id, name, description, schema_version, \
             created_at, created_by) VALUES (?, ?, ?, ?, ?, 1, ?, ?)",
        ))
        .bind(&dataset.id)
        .bind(tenant.as_str())
        .bind(project.as_str())
        .bind(name)
        .bind(description)
        .bind(dataset.created_at)
        .bind(created_by)
        .execute(&mut *tx)
        .await;
        if let Err(error) = inserted {
            let error = MetaError::from(error);
            if error.is_unique_violation() {
                return Err(IngestError::AlreadyExists {
                    what: "dataset",
                    name: name.to_owned(),
                });
            }
            return Err(error.into());
        }
        sqlx::query(self.db.sql(
            "INSERT INTO dataset_schemas (dataset_id, version, schema_json, created_at, created_by) \
             VALUES (?, 1, ?, ?, ?)",
        ))
        .bind(&dataset.id)
        .bind(&schema_json)
        .bind(dataset.created_at)
        .bind(created_by)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(dataset)
    }

    const DATASET_COLUMNS: &'static str = "d.id, d.tenant_id, d.project_id, d.name, d.description, \
         d.schema_version, d.created_at, d.created_by, s.schema_json";

    fn dataset_from_row(row: &AnyRow) -> Result<Dataset, IngestError> {
        let schema_json: String = row.try_get("schema_json")?;
        Ok(Dataset {
            id: row.try_get("id")?,
            tenant: TenantId::from_stored(row.try_get::<String, _>("tenant_id")?),
            project: ProjectId::from_stored(row.try_get::<String, _>("project_id")?),
            name: row.try_get("name")?,
            description: row.try_get("description")?,
            schema_version: row.try_get("schema_version")?,
            schema: serde_json::from_str(&schema_json).map_err(corrupt("dataset schema"))?,
            created_at: row.try_get("created_at")?,
            created_by: row.try_get("created_by")?,
        })
    }

    pub async fn list_datasets(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
    ) -> Result<Vec<Dataset>, IngestError> {
        let statement = format!(
            "SELECT {} FROM datasets d JOIN dataset_schemas s ON s.dataset_id = d.id AND \
             s.version = d.schema_version WHERE d.tenant_id = ? AND d.project_id = ? ORDER BY d.name",
            Self::DATASET_COLUMNS
        );
        let rows = sqlx::query(self.db.sql(&statement))
            .bind(tenant.as_str())
            .bind(project.as_str())
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(Self::dataset_from_row).collect()
    }

    /// Returns the dataset named `name` in the project; `NotFound` when there is none.
    pub async fn get_dataset(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        name: &str,
    ) -> Result<Dataset, IngestError> {
        let statement = format!(
            "SELECT {} FROM datasets d JOIN dataset_schemas s ON s.dataset_id = d.id AND \
             s.version = d.schema_version WHERE d.tenant_id = ? AND d.project_id = ? AND d.name = ?",
            Self::DATASET_COLUMNS
        );
        let row = sqlx::query(self.db.sql(&statement))
            .bind(tenant.as_str())
            .bind(project.as_str())
            .bind(name)
            .fetch_optional(self.db.pool())
            .await?;
        match row {
            Some(row) => Self::dataset_from_row(&row),
            None => Err(IngestError::NotFound {
                what: "dataset",
                name: name.to_owned(),
            }),
        }
    }

    /// Adds a schema version after the dataset's current one (`expected`) and makes it
    /// current. A concurrent change of the schema makes this fail with a conflict.
    pub async fn add_schema_version(
        &self,
        dataset: &Dataset,
        schema: &DatasetSchema,
        created_by: &str,
    ) -> Result<SchemaVersion, IngestError> {
        let version = dataset.schema_version + 1;
        let created_at = ghaf_core::now_millis();
        let schema_json = serde_json::to_string(schema).map_err(corrupt("dataset schema"))?;
        let mut tx = self.begin_write().await?;
        let moved = sqlx::query(self.db.sql(
            "UPDATE datasets SET schema_version = ? WHERE id = ? AND tenant_id = ? AND schema_version = ?",
        ))
        .bind(version)
        .bind(&dataset.id)
        .bind(dataset.tenant.as_str())
        .bind(dataset.schema_version)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() != 1 {
            return Err(MetaError::Conflict {
                what: "dataset schema",
                name: dataset.name.clone(),
            }
            .into());
        }
        sqlx::query(self.db.sql(
            "INSERT INTO dataset_schemas (dataset_id, version, schema_json, created_at, created_by) \
             VALUES (?, ?, ?, ?, ?)",
        ))
        .bind(&dataset.id)
        .bind(version)
        .bind(&schema_json)
        .bind(created_at)
        .bind(created_by)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(SchemaVersion {
            version,
            schema: schema.clone(),
            created_at,
            created_by: created_by.to_owned(),
        })
    }

    /// Lists the schema versions of a dataset, oldest first.
    pub async fn list_schemas(&self, dataset: &Dataset) -> Result<Vec<SchemaVersion>, IngestError> {
        let rows = sqlx::query(self.db.sql(
            "SELECT s.version, s.schema_json, s.created_at, s.created_by FROM dataset_schemas s \
             JOIN datasets d ON d.id = s.dataset_id WHERE d.id = ? AND d.tenant_id = ? ORDER BY s.version",
        ))
        .bind(&dataset.id)
        .bind(dataset.tenant.as_str())
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let schema_json: String = row.try_get("schema_json")?;
                Ok(SchemaVersion {
                    version: row.try_get("version")?,
                    schema: serde_json::from_str(&schema_json)
                        .map_err(corrupt("dataset schema"))?,
                    created_at: row.try_get("created_at")?,
                    created_by: row.try_get("created_by")?,
                })
            })
            .collect()
    }

    const VERSION_COLUMNS: &'static str = "dataset_id, version, schema_version, content_digest, \
         content_size, row_count, quarantined_rows, quarantine_digest, report_json, profile_json, \
         source, created_at, created_by";

    fn version_from_row(row: &AnyRow) -> Result<DatasetVersion, IngestError> {
        let report: String = row.try_get("report_json")?;
        let profile: String = row.try_get("profile_json")?;
        Ok(DatasetVersion {
            dataset_id: row.try_get("dataset_id")?,
            version: row.try_get("version")?,
            schema_version: row.try_get("schema_version")?,
            content_digest: row.try_get("content_digest")?,
            content_size: to_u64(row.try_get("content_size")?),
            row_count: to_u64(row.try_get("row_count")?),
            quarantined_rows: to_u64(row.try_get("quarantined_rows")?),
            quarantine_digest: row.try_get("quarantine_digest")?,
            report: serde_json::from_str(&report).map_err(corrupt("ingest report"))?,
            profile: serde_json::from_str(&profile).map_err(corrupt("dataset profile"))?,
            source: row.try_get("source")?,
            created_at: row.try_get("created_at")?,
            created_by: row.try_get("created_by")?,
        })
    }

    /// Returns the version of the dataset stored under `digest`, if any.
    pub async fn find_version_by_digest(
        &self,
        tenant: &TenantId,
        dataset_id: &str,
        digest: &str,
    ) -> Result<Option<DatasetVersion>, IngestError> {
        let statement = format!(
            "SELECT {} FROM dataset_versions WHERE tenant_id = ? AND dataset_id = ? AND content_digest = ?",
            Self::VERSION_COLUMNS
        );
        let row = sqlx::query(self.db.sql(&statement))
            .bind(tenant.as_str())
            .bind(dataset_id)
            .bind(digest)
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref().map(Self::version_from_row).transpose()
    }

    /// Records a version under the next number. When the dataset already has a version with
    /// the same content digest, that version is returned with `false` and nothing is written.
    /// The insert is one transaction, so a version is either fully visible or absent.
    pub async fn insert_version(
        &self,
        tenant: &TenantId,
        version: &DatasetVersion,
    ) -> Result<(DatasetVersion, bool), IngestError> {
        self.insert_version_with_keys(tenant, version, &[]).await
    }

    /// Records a version like [`DatasetStore::insert_version`] and, in the same transaction,
    /// the message keys of its rows. A key that another version stored first fails the
    /// insert with a conflict, so a redelivered message is never stored twice.
    pub async fn insert_version_with_keys(
        &self,
        tenant: &TenantId,
        version: &DatasetVersion,
        message_keys: &[String],
    ) -> Result<(DatasetVersion, bool), IngestError> {
        let report = serde_json::to_string(&version.report).map_err(corrupt("ingest report"))?;
        let profile =
            serde_json::to_string(&version.profile).map_err(corrupt("dataset profile"))?;
        for _ in 0..VERSION_INSERT_ATTEMPTS {
            if let Some(existing) = self
                .find_version_by_digest(tenant, &version.dataset_id, &version.content_digest)
                .await?
            {
                return Ok((existing, false));
            }
            let mut tx = self.begin_write().await?;
            let next: i64 = sqlx::query(self.db.sql(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM dataset_versions WHERE dataset_id = ?",
            ))
            .bind(&version.dataset_id)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
            let statement = format!(
                "INSERT INTO dataset_versions ({}, tenant_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                Self::VERSION_COLUMNS
            );
            let inserted = sqlx::query(self.db.sql(&statement))
                .bind(&version.dataset_id)
                .bind(next)
                .bind(version.schema_version)
                .bind(&version.content_digest)
                .bind(to_i64(version.content_size))
                .bind(to_i64(version.row_count))
                .bind(to_i64(version.quarantined_rows))
                .bind(version.quarantine_digest.as_deref())
                .bind(&report)
                .bind(&profile)
                .bind(&version.source)
                .bind(version.created_at)
                .bind(&version.created_by)
                .bind(tenant.as_str())
                .execute(&mut *tx)
                .await;
            let inserted = match inserted {
                Ok(_) => {
                    self.insert_message_keys(&mut tx, &version.dataset_id, next, message_keys)
                        .await
                }
                Err(error) => Err(error),
            };
            match inserted {
                Ok(()) => {
                    tx.commit().await?;
                    let mut stored = version.clone();
                    stored.version = next;
                    return Ok((stored, true));
                }
                Err(error) => {
                    let error = MetaError::from(error);
                    if !error.is_unique_violation() {
                        return Err(error.into());
                    }
                    // Another writer took the number or stored the same content; look again.
                    drop(tx);
                }
            }
        }
        Err(MetaError::Conflict {
            what: "dataset version",
            name: version.dataset_id.clone(),
        }
        .into())
    }

    async fn insert_message_keys(
        &self,
        tx: &mut Transaction<'static, Any>,
        dataset_id: &str,
        version: i64,
        message_keys: &[String],
    ) -> Result<(), sqlx::Error> {
        for key in message_keys {
            sqlx::query(self.db.sql(
                "INSERT INTO dataset_message_keys (dataset_id, message_key, version) VALUES (?, ?, ?)",
            ))
            .bind(dataset_id)
            .bind(key)
            .bind(version)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// Returns which of `keys` the dataset has already stored.
    pub async fn stored_message_keys(
        &self,
        dataset_id: &str,
        keys: &[String],
    ) -> Result<std::collections::HashSet<String>, IngestError> {
        let mut stored = std::collections::HashSet::new();
        for chunk in keys.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let statement = format!(
                "SELECT message_key FROM dataset_message_keys WHERE dataset_id = ? AND message_key IN ({marks})"
            );
            let mut query = sqlx::query(self.db.sql(&statement)).bind(dataset_id);
            for key in chunk {
                query = query.bind(key);
            }
            for row in query.fetch_all(self.db.pool()).await? {
                stored.insert(row.try_get::<String, _>(0)?);
            }
        }
        Ok(stored)
    }

    /// Lists the versions of a dataset, newest first.
    pub async fn list_versions(
        &self,
        tenant: &TenantId,
        dataset_id: &str,
    ) -> Result<Vec<DatasetVersion>, IngestError> {
        let statement = format!(
            "SELECT {} FROM dataset_versions WHERE tenant_id = ? AND dataset_id = ? ORDER BY version DESC",
            Self::VERSION_COLUMNS
        );
        let rows = sqlx::query(self.db.sql(&statement))
            .bind(tenant.as_str())
            .bind(dataset_id)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(Self::version_from_row).collect()
    }

    /// Returns one version; `NotFound` when the dataset has no such version.
    pub async fn get_version(
        &self,
        tenant: &TenantId,
        dataset_id: &str,
        version: i64,
    ) -> Result<DatasetVersion, IngestError> {
        let statement = format!(
            "SELECT {} FROM dataset_versions WHERE tenant_id = ? AND dataset_id = ? AND version = ?",
            Self::VERSION_COLUMNS
        );
        let row = sqlx::query(self.db.sql(&statement))
            .bind(tenant.as_str())
            .bind(dataset_id)
            .bind(version)
            .fetch_optional(self.db.pool())
            .await?;
        match row {
            Some(row) => Self::version_from_row(&row),
            None => Err(IngestError::NotFound {
                what: "dataset version",
                name: version.to_string(),
            }),
        }
    }

    pub async fn insert_lineage_event(
        &self,
        tenant: &TenantId,
        event: &StoredLineageEvent,
    ) -> Result<(), IngestError> {
        let event_json = serde_json::to_string(&event.event).map_err(corrupt("lineage event"))?;
        sqlx::query(self.db.sql(
            "INSERT INTO lineage_events (id, tenant_id, project_id, run_id, event_type, event_time, \
             job_name, dataset_name, event_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(&event.id)
        .bind(tenant.as_str())
        .bind(event.project.as_str())
        .bind(&event.run_id)
        .bind(&event.event_type)
        .bind(event.event_time)
        .bind(&event.job_name)
        .bind(&event.dataset)
        .bind(&event_json)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Lists lineage events of the tenant in the order they were recorded.
    pub async fn list_lineage_events(
        &self,
        tenant: &TenantId,
        filter: &LineageFilter,
    ) -> Result<Vec<StoredLineageEvent>, IngestError> {
        if filter.projects.as_ref().is_some_and(Vec::is_empty) {
            return Ok(Vec::new());
        }
        let mut statement = String::from(
            "SELECT id, project_id, run_id, event_type, event_time, job_name, dataset_name, event_json \
             FROM lineage_events WHERE tenant_id = ?",
        );
        if let Some(projects) = &filter.projects {
            let marks = vec!["?"; projects.len()].join(", ");
            statement.push_str(&format!(" AND project_id IN ({marks})"));
        }
        if filter.dataset.is_some() {
            statement.push_str(" AND dataset_name = ?");
        }
        if filter.run_id.is_some() {
            statement.push_str(" AND run_id = ?");
        }
        if filter.after.is_some() {
            statement.push_str(" AND id > ?");
        }
        statement.push_str(" ORDER BY id LIMIT ?");

        let mut query = sqlx::query(self.db.sql(&statement)).bind(tenant.as_str());
        for project in filter.projects.iter().flatten() {
            query = query.bind(project.as_str());
        }
        if let Some(dataset) = &filter.dataset {
            query = query.bind(dataset);
        }
        if let Some(run_id) = &filter.run_id {
            query = query.bind(run_id);
        }
        if let Some(after) = &filter.after {
            query = query.bind(after);
        }
        query = query.bind(i64::from(filter.limit.clamp(1, 1000)));
        let rows = query.fetch_all(self.db.pool()).await?;
        rows.iter()
            .map(|row| {
                let event_json: String = row.try_get("event_json")?;
                Ok(StoredLineageEvent {
                    id: row.try_get("id")?,
                    project: ProjectId::from_stored(row.try_get::<String, _>("project_id")?),
                    run_id: row.try_get("run_id")?,
                    event_type: row.try_get("event_type")?,
                    event_time: row.try_get("event_time")?,
                    job_name: row.try_get("job_name")?,
                    dataset: row.try_get("dataset_name")?,
                    event: serde_json::from_str(&event_json).map_err(corrupt("lineage event"))?,
                })
            })
            .collect()
    }
}
