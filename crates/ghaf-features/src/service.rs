//! [`FeatureStore`]: plans and applies definitions, loads view versions over dataset
//! versions, builds point-in-time training sets, materialises views into the online store
//! and serves online reads.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, RecordBatch, RecordBatchReader};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use ghaf_core::{ProjectId, TenantId};
use ghaf_ingest::{DatasetSchema, DatasetVersion, IngestService, PushFormat, VersionEncoding};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use crate::FeatureError;
use crate::apply::{Change, Plan, PlannedChange, changed_fields, mentions};
use crate::definition::{Definitions, Entity, FeatureRef, FeatureServiceSpec, KeyType};
use crate::online::{
    DefinitionCache, EntityKey, KeyValue, OnlineRow, OnlineScope, OnlineStore, OnlineView,
    PickedRow, resolve_value,
};
use crate::push::{PushTarget, batch_of, rows_of};
use crate::store::{FeatureDb, Materialization, StoredJoinKey, StoredView};
use crate::table_cache::{TableCache, TableKey};
use crate::training::{ViewSelection, point_in_time_join, timestamp_column};
use crate::value::json_value;
use crate::view::{CompiledView, FeatureTable};

/// View versions kept compiled with their feature tables, so repeated training sets over the
/// same dataset versions skip reading and computing them again.
const CACHED_TABLES: usize = 8;

/// Rows per online-store write batch during materialisation.
const MATERIALIZE_BATCH: usize = 10_000;

/// The stored definitions of a project.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Registry {
    pub entities: Vec<Entity>,
    /// The latest version of each view.
    pub feature_views: Vec<StoredView>,
    pub feature_services: Vec<FeatureServiceSpec>,
}

/// A view version compiled over one dataset version, with its feature table.
pub struct LoadedView {
    pub view: CompiledView,
    pub table: FeatureTable,
    pub dataset: String,
    pub dataset_version: i64,
}

type CacheKey = (String, String, String, i64, String);

/// Loaded tables in memory, oldest first.
type LoadedTables = Mutex<Vec<(CacheKey, Arc<LoadedView>)>>;

/// Feature selection of a request: a list of references or a feature service.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FeatureSelection {
    #[serde(default)]
    pub features: Option<Vec<String>>,
    #[serde(default)]
    pub feature_service: Option<String>,
}

/// The rows a training set is built for.
pub enum EntitySource {
    /// A dataset version; the latest when `version` is `None`.
    Dataset { name: String, version: Option<i64> },
    /// Rows supplied by the caller, such as an uploaded Parquet file.
    Rows { batch: RecordBatch, origin: String },
}

/// A training-set request.
pub struct TrainingSetRequest {
    pub entities: EntitySource,
    pub selection: FeatureSelection,
    /// Entity-table column with each row's lookup time; see [`timestamp_column`].
    pub timestamp_column: Option<String>,
    pub full_feature_names: bool,
    /// Dataset that receives the training set as a new version; created when missing.
    pub output_dataset: String,
}

/// A stored training set.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainingSetOutcome {
    pub dataset: String,
    pub version: DatasetVersion,
    /// Lineage of the rows: the entity table and each view version with its dataset version.
    pub source: String,
    pub columns: Vec<String>,
    pub rows: u64,
}

/// Result of one materialisation run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MaterializeOutcome {
    pub record: Materialization,
    pub backend: String,
}

/// A Feast-shaped online read request.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct OnlineRequest {
    #[serde(flatten)]
    pub selection: FeatureSelection,
    /// Join-key column name to one value per entity row.
    pub entities: BTreeMap<String, Vec<serde_json::Value>>,
    #[serde(default)]
    pub full_feature_names: bool,
}

/// One column of an online response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OnlineColumn {
    pub values: Vec<serde_json::Value>,
    pub statuses: Vec<crate::online::FieldStatus>,
    /// RFC 3339; `1970-01-01T00:00:00Z` when there is no event time, as in Feast. The
    /// features of one row share its string.
    #[serde(with = "shared_strings")]
    pub event_timestamps: Vec<Arc<str>>,
}

/// (De)serialises a list of shared strings as a list of JSON strings.
mod shared_strings {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(values: &[Arc<str>], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(values.iter().map(|value| &**value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Arc<str>>, D::Error> {
        let values = Vec::<String>::deserialize(deserializer)?;
        Ok(values.into_iter().map(Arc::from).collect())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OnlineMetadata {
    pub feature_names: Vec<String>,
}

/// A Feast-shaped online read response: join keys first, then the features in the requested
/// order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OnlineResponse {
    pub metadata: OnlineMetadata,
    pub results: Vec<OnlineColumn>,
}

/// Online writes of one view during a push.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OnlinePush {
    pub view: String,
    pub version: i64,
    pub written: u64,
    /// Keys whose stored row was newer than the pushed one.
    pub skipped: u64,
    /// Pushed rows this view could not store online: a null join key or a null event time.
    pub rejected: u64,
    /// The first rejected rows (at most 100), each with its row number and reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected_rows: Vec<RejectedRow>,
}

/// A pushed row that an online view rejected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RejectedRow {
    /// Row number in the pushed `df`, from 1.
    pub row: u64,
    pub reason: String,
}

/// Most rejected rows listed per view in a push report; the count covers all of them.
const LISTED_REJECTIONS: usize = 100;

/// Result of a push.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PushReport {
    /// The offline push into the dataset, when the push went offline.
    pub offline: Option<ghaf_ingest::PushOutcome>,
    pub online: Vec<OnlinePush>,
    /// Online views over the dataset left out because they have rolling aggregations.
    pub skipped_views: Vec<String>,
}

/// Empties the online definition cache when dropped.
struct InvalidateOnDrop<'a>(&'a DefinitionCache);

impl Drop for InvalidateOnDrop<'_> {
    fn drop(&mut self) {
        self.0.invalidate();
    }
}

/// One view version referenced by an online read, resolved, with its features in request
/// order.
struct OnlineGroup {
    view: Arc<OnlineView>,
    /// The version as referenced: `None` for the latest.
    version: Option<i64>,
    features: Vec<(usize, String)>,
}

/// One view version referenced by a request, with its features in request order.
struct ViewGroup {
    view: String,
    version: Option<i64>,
    features: Vec<(usize, String)>,
}

/// Adds a loaded table to the in-memory cache, dropping the oldest beyond
/// [`CACHED_TABLES`].
fn keep_in_memory(cache: &LoadedTables, key: CacheKey, loaded: Arc<LoadedView>) {
    let mut cache = cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    cache.push((key, loaded));
    if cache.len() > CACHED_TABLES {
        cache.remove(0);
    }
}

/// Writes a computed table to the table cache directory. A failed write is logged and only
/// means that the next restart computes the table again.
fn write_table(
    tables: &TableCache,
    table_key: &TableKey,
    source_schema: &Schema,
    loaded: &LoadedView,
) {
    let view = &loaded.view;
    match tables.store(table_key, source_schema, &loaded.table) {
        Ok(Some(bytes)) => tracing::info!(
            view = %view.name,
            version = view.version,
            bytes,
            path = %tables.path(table_key).display(),
            "wrote feature table cache file"
        ),
        Ok(None) => tracing::info!(
            view = %view.name,
            version = view.version,
            "feature table is larger than the table cache budget; not written"
        ),
        Err(error) => tracing::warn!(
            view = %view.name,
            version = view.version,
            path = %tables.path(table_key).display(),
            error = %error,
            "failed to write the feature table cache file"
        ),
    }
}

/// A count of table computations and writes still running, with a wake-up for waiters.
#[derive(Default)]
struct PendingWrites {
    running: std::sync::atomic::AtomicUsize,
    done: tokio::sync::Notify,
}

/// One running computation or write; dropping it, also on a panic, counts it as done.
struct PendingWrite(Arc<PendingWrites>);

impl PendingWrites {
    fn start(self: &Arc<Self>) -> PendingWrite {
        self.running
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        PendingWrite(self.clone())
    }

    async fn wait(&self) {
        loop {
            // A `Notified` receives `notify_waiters` from its creation on, so a write that
            // ends between the check and the await still wakes this waiter.
            let done = self.done.notified();
            if self.running.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            done.await;
        }
    }
}

impl Drop for PendingWrite {
    fn drop(&mut self) {
        self.0
            .running
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.0.done.notify_waiters();
    }
}

/// A request's reference to the gate of one table being loaded. Dropping it, also when the
/// request is cancelled, removes the gate once no other request uses it. A later request
/// then finds the table in memory or creates a new gate.
struct LoadGate<'a> {
    loading: &'a Mutex<HashMap<CacheKey, Arc<tokio::sync::Mutex<()>>>>,
    key: &'a CacheKey,
    gate: Option<Arc<tokio::sync::Mutex<()>>>,
}

impl<'a> LoadGate<'a> {
    fn enter(
        loading: &'a Mutex<HashMap<CacheKey, Arc<tokio::sync::Mutex<()>>>>,
        key: &'a CacheKey,
    ) -> Self {
        let gate = loading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        LoadGate {
            loading,
            key,
            gate: Some(gate),
        }
    }

    fn gate(&self) -> &tokio::sync::Mutex<()> {
        self.gate.as_deref().expect("the gate is held until drop")
    }
}

impl Drop for LoadGate<'_> {
    fn drop(&mut self) {
        let mut loading = self
            .loading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // References are only made and dropped under this lock, so the map's own one being
        // the last means no other request uses the gate.
        drop(self.gate.take());
        if loading
            .get(self.key)
            .is_some_and(|gate| Arc::strong_count(gate) == 1)
        {
            loading.remove(self.key);
        }
    }
}

/// The feature store of all tenants, on one metadata database, ingest service and online
/// store.
pub struct FeatureStore {
    db: FeatureDb,
    ingest: IngestService,
    online: Arc<dyn OnlineStore>,
    cache: Arc<LoadedTables>,
    /// One lock per table being loaded, so concurrent requests for the same view version
    /// compute or read its table once and the others wait for it.
    loading: Mutex<HashMap<CacheKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Views and services resolved by online reads; emptied by [`FeatureStore::apply`].
    definitions: DefinitionCache,
    /// Feature tables persisted on disk across restarts; `None` keeps them in memory only.
    tables: Option<TableCache>,
    /// Table computations and table cache writes still running.
    table_writes: Arc<PendingWrites>,
}

fn now_micros() -> i64 {
    ghaf_core::now_millis().saturating_mul(1_000)
}

/// Most entity rows one online read may ask for.
pub const MAX_ONLINE_ROWS: usize = 10_000;

/// Most values (entity rows times features) one online read may return; it bounds the
/// memory a request can make the server allocate.
pub const MAX_ONLINE_CELLS: usize = 1_000_000;

/// Formats microseconds since the epoch as RFC 3339 UTC.
pub fn format_micros(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

impl FeatureStore {
    pub fn new(db: FeatureDb, ingest: IngestService, online: Arc<dyn OnlineStore>) -> Self {
        Self {
            db,
            ingest,
            online,
            cache: Arc::default(),
            loading: Mutex::new(HashMap::new()),
            definitions: DefinitionCache::default(),
            tables: None,
            table_writes: Arc::default(),
        }
    }

    /// Persists computed feature tables in `tables` and reads them back after a restart.
    pub fn with_table_cache(mut self, tables: TableCache) -> Self {
        self.tables = Some(tables);
        self
    }

    /// Sets how long online reads reuse the views and feature services they read, which
    /// bounds how late they see definitions applied through another server on the same
    /// database (default [`crate::online::DEFINITION_CACHE_TTL`]).
    pub fn with_definition_cache_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.definitions = DefinitionCache::new(ttl);
        self
    }

    pub fn db(&self) -> &FeatureDb {
        &self.db
    }

    pub fn online(&self) -> &Arc<dyn OnlineStore> {
        &self.online
    }

    pub async fn registry(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
    ) -> Result<Registry, FeatureError> {
        Ok(Registry {
            entities: self.db.list_entities(tenant, project).await?,
            feature_views: self.db.list_views(tenant, project).await?,
            feature_services: self.db.list_services(tenant, project).await?,
        })
    }

    /// Arrow schema of a dataset's current schema version.
    async fn dataset_schema(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        name: &str,
        view: &str,
    ) -> Result<SchemaRef, FeatureError> {
        let dataset = self
            .ingest
            .store()
            .get_dataset(tenant, project, name)
            .await
            .map_err(|error| match error {
                ghaf_ingest::IngestError::NotFound { .. } => FeatureError::definition(format!(
                    "feature view {view:?} reads dataset {name:?}, which does not exist in this project"
                )),
                other => other.into(),
            })?;
        Ok(dataset.schema.arrow_schema())
    }

    /// Compares `definitions` with the stored ones and checks every view against its
    /// dataset's schema. Nothing is written.
    pub async fn plan(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        definitions: &Definitions,
    ) -> Result<Plan, FeatureError> {
        let stored = self.registry(tenant, project).await?;
        let stored_views: Vec<_> = stored
            .feature_views
            .iter()
            .map(|v| v.spec.clone())
            .collect();
        definitions.validate(&stored.entities, &stored_views)?;

        // A re-applied entity without a description keeps the stored one: omitting the
        // field is not a request to clear it.
        let applied: Vec<Entity> = definitions
            .entities
            .iter()
            .map(|entity| {
                let mut entity = entity.clone();
                if entity.description.is_empty()
                    && let Some(old) = stored.entities.iter().find(|e| e.name == entity.name)
                {
                    entity.description = old.description.clone();
                }
                entity
            })
            .collect();
        let mut entities: Vec<Entity> = applied.clone();
        for entity in &stored.entities {
            if !entities.iter().any(|e| e.name == entity.name) {
                entities.push(entity.clone());
            }
        }

        let mut changes = Vec::new();
        for entity in &applied {
            let old = stored.entities.iter().find(|e| e.name == entity.name);
            let change = match old {
                None => Change::Create,
                Some(old) if old == entity => Change::Unchanged,
                Some(_) => Change::Update { version: None },
            };
            changes.push(PlannedChange {
                kind: "entity".to_owned(),
                name: entity.name.clone(),
                fields: old.map(|o| changed_fields(o, entity)).unwrap_or_default(),
                change,
            });
        }

        let mut views = Vec::new();
        for spec in &definitions.feature_views {
            let schema = self
                .dataset_schema(tenant, project, &spec.source.dataset, &spec.name)
                .await?;
            let compiled = CompiledView::compile(spec, 0, &entities, &schema)?;
            let join_keys: Vec<StoredJoinKey> = spec
                .entities
                .iter()
                .zip(&compiled.keys)
                .map(|(entity, key)| StoredJoinKey {
                    entity: entity.clone(),
                    column: key.column.clone(),
                    value_type: key.key_type,
                })
                .collect();
            let fingerprint = spec.fingerprint(&entities);
            let old = stored.feature_views.iter().find(|v| v.name == spec.name);
            let change = match old {
                None => Change::Create,
                Some(old) if old.fingerprint != fingerprint => Change::NewVersion {
                    from: old.version,
                    to: old.version + 1,
                },
                Some(old) if &old.spec != spec => Change::Update {
                    version: Some(old.version),
                },
                Some(_) => Change::Unchanged,
            };
            changes.push(PlannedChange {
                kind: "feature_view".to_owned(),
                name: spec.name.clone(),
                fields: old
                    .map(|o| changed_fields(&o.spec, spec))
                    .unwrap_or_default(),
                change: change.clone(),
            });
            views.push((spec.clone(), fingerprint, change, join_keys));
        }

        for service in &definitions.feature_services {
            let old = stored
                .feature_services
                .iter()
                .find(|s| s.name == service.name);
            let change = match old {
                None => Change::Create,
                Some(old) if old == service => Change::Unchanged,
                Some(_) => Change::Update { version: None },
            };
            changes.push(PlannedChange {
                kind: "feature_service".to_owned(),
                name: service.name.clone(),
                fields: old.map(|o| changed_fields(o, service)).unwrap_or_default(),
                change,
            });
        }

        let mut kept = Vec::new();
        for entity in &stored.entities {
            if !mentions(definitions, "entity", &entity.name) {
                kept.push(format!("entity {}", entity.name));
            }
        }
        for view in &stored.feature_views {
            if !mentions(definitions, "feature_view", &view.name) {
                kept.push(format!("feature_view {}", view.name));
            }
        }
        for service in &stored.feature_services {
            if !mentions(definitions, "feature_service", &service.name) {
                kept.push(format!("feature_service {}", service.name));
            }
        }

        Ok(Plan {
            changes,
            kept,
            entities: applied,
            views,
            services: definitions.feature_services.clone(),
        })
    }

    /// Writes a plan: entities, then views, then services. A view changed by another apply
    /// since the plan was made fails with `Conflict` and leaves that view as it was.
    pub async fn apply(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        plan: &Plan,
        actor: &str,
    ) -> Result<(), FeatureError> {
        // Every write below may already be committed when a later one fails, or when the
        // caller drops this future, so the cache is emptied on every exit.
        let _invalidate = InvalidateOnDrop(&self.definitions);
        for (entity, change) in plan.entities.iter().zip(&plan.changes) {
            if change.change != Change::Unchanged {
                self.db
                    .upsert_entity(tenant, project, entity, actor)
                    .await?;
            }
        }
        for (spec, fingerprint, change, keys) in &plan.views {
            match change {
                Change::Create => {
                    self.db
                        .insert_view_version(tenant, project, spec, 1, fingerprint, keys, actor)
                        .await?;
                }
                Change::NewVersion { to, .. } => {
                    self.db
                        .insert_view_version(tenant, project, spec, *to, fingerprint, keys, actor)
                        .await?;
                }
                Change::Update {
                    version: Some(version),
                } => {
                    self.db
                        .update_view_in_place(tenant, project, spec, *version, fingerprint)
                        .await?;
                }
                Change::Update { version: None } | Change::Unchanged => {}
            }
        }
        let service_changes = plan.changes.iter().filter(|c| c.kind == "feature_service");
        for (service, change) in plan.services.iter().zip(service_changes) {
            if change.change != Change::Unchanged {
                self.db
                    .upsert_service(tenant, project, service, actor)
                    .await?;
            }
        }
        tracing::info!(
            tenant = %tenant,
            project = %project,
            actor,
            changes = plan.changes.iter().filter(|c| c.change != Change::Unchanged).count(),
            "applied feature definitions"
        );
        Ok(())
    }

    /// Returns the dataset version a view version reads: its pinned version or the latest.
    async fn source_version(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        stored: &StoredView,
    ) -> Result<(ghaf_ingest::Dataset, DatasetVersion), FeatureError> {
        let source = &stored.spec.source;
        self.dataset_version(tenant, project, &source.dataset, source.version)
            .await
    }

    /// Returns a dataset and its version `version`, or its latest version without one.
    async fn dataset_version(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        name: &str,
        version: Option<i64>,
    ) -> Result<(ghaf_ingest::Dataset, DatasetVersion), FeatureError> {
        let store = self.ingest.store();
        let dataset = store.get_dataset(tenant, project, name).await?;
        let version = match version {
            Some(number) => store.get_version(tenant, &dataset.id, number).await?,
            None => store
                .list_versions(tenant, &dataset.id)
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| FeatureError::NotFound {
                    what: "dataset version",
                    name: format!("{name} (the dataset has no versions; ingest data first)"),
                })?,
        };
        Ok((dataset, version))
    }

    /// Reads a dataset version's rows into one batch.
    async fn read_version(
        &self,
        tenant: &TenantId,
        version: &DatasetVersion,
    ) -> Result<RecordBatch, FeatureError> {
        let digest = IngestService::digest(&version.content_digest)?;
        let bytes = self.ingest.blobs().get(tenant, &digest).await?;
        tokio::task::spawn_blocking(move || read_parquet(bytes))
            .await
            .map_err(|error| FeatureError::Online(format!("the read worker stopped: {error}")))?
    }

    /// Loads a view version over its dataset version: compiled, with its feature table in
    /// index order. The table comes from memory, else from the table cache directory, else
    /// it is computed from the dataset version and written to the table cache.
    pub async fn load_view(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        name: &str,
        version: Option<i64>,
    ) -> Result<Arc<LoadedView>, FeatureError> {
        let stored = self.db.get_view(tenant, project, name, version).await?;
        let (dataset, dataset_version) = self.source_version(tenant, project, &stored).await?;
        let key: CacheKey = (
            tenant.as_str().to_owned(),
            project.as_str().to_owned(),
            format!("{}#{}", stored.name, stored.updated_at),
            stored.version,
            dataset_version.content_digest.clone(),
        );
        if let Some(found) = self.cached(&key) {
            return Ok(found);
        }
        let gate = LoadGate::enter(&self.loading, &key);
        let _loading = gate.gate().lock().await;
        // The request that held the gate before may have loaded the table.
        if let Some(found) = self.cached(&key) {
            return Ok(found);
        }
        self.load_table(
            tenant,
            project,
            &stored,
            dataset,
            &dataset_version,
            key.clone(),
        )
        .await
    }

    /// Loads a view version's table from the table cache directory, else computes it, and
    /// keeps it in memory.
    async fn load_table(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        stored: &StoredView,
        dataset: ghaf_ingest::Dataset,
        dataset_version: &DatasetVersion,
        key: CacheKey,
    ) -> Result<Arc<LoadedView>, FeatureError> {
        let started = std::time::Instant::now();
        let entities = stored.entities(&self.db.list_entities(tenant, project).await?);
        let table_key = TableKey::new(
            tenant.as_str(),
            project.as_str(),
            &stored.name,
            stored.version,
            &stored.spec.fingerprint(&entities),
            &dataset_version.content_digest,
        );
        let persisted = match &self.tables {
            Some(tables) => {
                self.load_persisted(tables, &table_key, stored, &entities)
                    .await
            }
            None => None,
        };
        let (loaded, origin) = match persisted {
            Some((view, table)) => {
                let loaded = Arc::new(LoadedView {
                    view,
                    table,
                    dataset: dataset.name,
                    dataset_version: dataset_version.version,
                });
                keep_in_memory(&self.cache, key, loaded.clone());
                (loaded, "table cache")
            }
            None => {
                let loaded = self
                    .compute_table(
                        tenant,
                        dataset.name,
                        dataset_version,
                        stored,
                        &entities,
                        key,
                        table_key,
                    )
                    .await?;
                (loaded, "dataset version")
            }
        };
        tracing::debug!(
            tenant = %tenant,
            project = %project,
            view = %stored.name,
            version = stored.version,
            dataset_version = dataset_version.version,
            rows = loaded.table.row_count(),
            origin,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded feature table"
        );
        Ok(loaded)
    }

    /// Reads a view version's table from the table cache directory. A missing file gives
    /// `None`. An unusable file is logged, deleted and also gives `None`, so the caller
    /// computes the table again. A file that could not be read is logged and kept.
    async fn load_persisted(
        &self,
        tables: &TableCache,
        table_key: &TableKey,
        stored: &StoredView,
        entities: &[Entity],
    ) -> Option<(CompiledView, FeatureTable)> {
        let tables_for_read = tables.clone();
        let key = table_key.clone();
        let spec = stored.spec.clone();
        let version = stored.version;
        let entities = entities.to_vec();
        let result = tokio::task::spawn_blocking(move || {
            let Some(persisted) = tables_for_read.load(&key)? else {
                return Ok(None);
            };
            let view = CompiledView::compile(&spec, version, &entities, &persisted.source_schema)?;
            let table = persisted.into_table(&view)?;
            Ok::<_, FeatureError>(Some((view, table)))
        })
        .await
        .map_err(|error| FeatureError::Online(format!("the table cache reader stopped: {error}")))
        .and_then(|result| result);
        match result {
            Ok(found) => found,
            // A failed read (too many open files, a stopped runtime) does not show that the
            // file is damaged, so the file stays for the next call.
            Err(error @ (FeatureError::Io(_) | FeatureError::Online(_))) => {
                tracing::warn!(
                    view = %stored.name,
                    version = stored.version,
                    path = %tables.path(table_key).display(),
                    error = %error,
                    "failed to read the feature table cache file; computing the table without it"
                );
                None
            }
            Err(error) => {
                let path = tables.path(table_key);
                tracing::warn!(
                    view = %stored.name,
                    version = stored.version,
                    path = %path.display(),
                    error = %error,
                    "feature table cache file is unusable; deleting it and computing the table again"
                );
                if let Err(error) = tables.remove(table_key) {
                    tracing::warn!(path = %path.display(), error = %error, "failed to delete the feature table cache file");
                }
                None
            }
        }
    }

    /// Computes a view version's table from its dataset version, in index order, keeps it
    /// in memory and then writes it to the table cache directory. The computation, the
    /// memory cache insert and the write run on one blocking thread that the request does
    /// not own, so a request that times out or is cancelled still leaves the table for the
    /// next one. The request gets the table before the file is written.
    #[allow(clippy::too_many_arguments)]
    async fn compute_table(
        &self,
        tenant: &TenantId,
        dataset: String,
        dataset_version: &DatasetVersion,
        stored: &StoredView,
        entities: &[Entity],
        key: CacheKey,
        table_key: TableKey,
    ) -> Result<Arc<LoadedView>, FeatureError> {
        let batch = self.read_version(tenant, dataset_version).await?;
        let view = CompiledView::compile(&stored.spec, stored.version, entities, &batch.schema())?;
        let cache = self.cache.clone();
        let tables = self.tables.clone();
        let dataset_version = dataset_version.version;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let pending = self.table_writes.start();
        tokio::task::spawn_blocking(move || {
            let _pending = pending;
            let table = match view.table(&batch).and_then(FeatureTable::into_sorted) {
                Ok(table) => table,
                Err(error) => {
                    let _ = sender.send(Err(error));
                    return;
                }
            };
            let source_schema = batch.schema();
            drop(batch);
            let loaded = Arc::new(LoadedView {
                view,
                table,
                dataset,
                dataset_version,
            });
            keep_in_memory(&cache, key, loaded.clone());
            // A request that went away no longer needs the table, but the next one does.
            let _ = sender.send(Ok(loaded.clone()));
            if let Some(tables) = tables {
                write_table(&tables, &table_key, &source_schema, &loaded);
            }
        });
        receiver.await.map_err(|_| {
            FeatureError::Online(
                "the feature table computation stopped before it finished (see the \
                     server log for a panic); try the request again"
                    .to_owned(),
            )
        })?
    }

    /// Waits until the table cache files of the tables computed so far are written. Loads
    /// write them in the background, so a caller that needs the files, such as a shutdown
    /// or a test, waits here.
    pub async fn wait_for_table_writes(&self) {
        self.table_writes.wait().await;
    }

    fn cached(&self, key: &CacheKey) -> Option<Arc<LoadedView>> {
        let cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cache.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    /// Resolves a selection to views and features, in request order. A whole-view entry of
    /// a service expands to every feature of the view version.
    async fn resolve_selection(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        selection: &FeatureSelection,
    ) -> Result<(Vec<ViewGroup>, usize), FeatureError> {
        let references: Vec<FeatureRef> = match (&selection.features, &selection.feature_service) {
            (Some(features), None) => {
                if features.is_empty() {
                    return Err(FeatureError::InvalidArgument {
                        argument: "features",
                        message: "the list is empty; name at least one view:feature".to_owned(),
                    });
                }
                features
                    .iter()
                    .map(|f| FeatureRef::parse(f))
                    .collect::<Result<_, _>>()?
            }
            (None, Some(service)) => {
                let service = self.db.get_service(tenant, project, service).await?;
                let mut references = Vec::new();
                for entry in &service.features {
                    let parsed = FeatureRef::parse_service_entry(entry)?;
                    if parsed.feature.is_some() {
                        references.push(parsed);
                        continue;
                    }
                    let stored = self
                        .db
                        .get_view(tenant, project, &parsed.view, parsed.version)
                        .await?;
                    for feature in &stored.spec.features {
                        references.push(FeatureRef {
                            feature: Some(feature.name.clone()),
                            ..parsed.clone()
                        });
                    }
                }
                references
            }
            _ => {
                return Err(FeatureError::InvalidArgument {
                    argument: "features",
                    message: "give either `features` or `feature_service`, not both or neither"
                        .to_owned(),
                });
            }
        };
        let mut groups: Vec<ViewGroup> = Vec::new();
        for (position, reference) in references.iter().enumerate() {
            let feature = reference.feature.clone().unwrap_or_default();
            match groups
                .iter_mut()
                .find(|g| g.view == reference.view && g.version == reference.version)
            {
                Some(group) => group.features.push((position, feature)),
                None => groups.push(ViewGroup {
                    view: reference.view.clone(),
                    version: reference.version,
                    features: vec![(position, feature)],
                }),
            }
        }
        Ok((groups, references.len()))
    }

    /// Builds a point-in-time training set and stores it as a new version of
    /// `output_dataset`.
    pub async fn training_set(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        project_name: &str,
        request: TrainingSetRequest,
        actor: &str,
    ) -> Result<TrainingSetOutcome, FeatureError> {
        let started = std::time::Instant::now();
        // The entity table and the views' tables are read at the same time.
        let entities = async {
            match request.entities {
                EntitySource::Dataset { name, version } => {
                    let (_, stored) = self
                        .dataset_version(tenant, project, &name, version)
                        .await?;
                    let batch = self.read_version(tenant, &stored).await?;
                    Ok::<_, FeatureError>((batch, format!("{name}@v{}", stored.version)))
                }
                EntitySource::Rows { batch, origin } => Ok((batch, origin)),
            }
        };
        let ((entities, origin), (groups, loaded)) = tokio::try_join!(
            entities,
            self.load_views(tenant, project, &request.selection)
        )?;
        let read = started.elapsed();
        let (batch, views) = Self::join_loaded(
            &entities,
            &groups,
            &loaded,
            request.timestamp_column.as_deref(),
            request.full_feature_names,
        )?;
        let source = format!("training-set:entities={origin};views={}", views.join(","));
        let columns: Vec<String> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let rows = batch.num_rows() as u64;
        let joined = started.elapsed();
        let version = self
            .store_batch(
                tenant,
                project,
                project_name,
                &request.output_dataset,
                &batch,
                &source,
                actor,
            )
            .await?;
        tracing::info!(
            tenant = %tenant,
            project = %project,
            dataset = %request.output_dataset,
            version = version.version,
            rows,
            read_ms = read.as_millis() as u64,
            join_ms = (joined - read).as_millis() as u64,
            store_ms = (started.elapsed() - joined).as_millis() as u64,
            "stored training set"
        );
        Ok(TrainingSetOutcome {
            dataset: request.output_dataset,
            version,
            source,
            columns,
            rows,
        })
    }

    /// Resolves `selection` and loads the table of each of its view versions.
    async fn load_views(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        selection: &FeatureSelection,
    ) -> Result<(Vec<ViewGroup>, Vec<Arc<LoadedView>>), FeatureError> {
        let (groups, _) = self.resolve_selection(tenant, project, selection).await?;
        let mut loaded = Vec::with_capacity(groups.len());
        for group in &groups {
            loaded.push(
                self.load_view(tenant, project, &group.view, group.version)
                    .await?,
            );
        }
        Ok((groups, loaded))
    }

    /// Joins the selected features to `entities` and returns the batch with the lineage of
    /// each view (`view@vN(dataset@vM)`).
    pub async fn join(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        entities: &RecordBatch,
        selection: &FeatureSelection,
        timestamp: Option<&str>,
        full_feature_names: bool,
    ) -> Result<(RecordBatch, Vec<String>), FeatureError> {
        let (groups, loaded) = self.load_views(tenant, project, selection).await?;
        Self::join_loaded(entities, &groups, &loaded, timestamp, full_feature_names)
    }

    /// Joins the features of loaded view versions to `entities`, as [`FeatureStore::join`]
    /// describes.
    fn join_loaded(
        entities: &RecordBatch,
        groups: &[ViewGroup],
        loaded: &[Arc<LoadedView>],
        timestamp: Option<&str>,
        full_feature_names: bool,
    ) -> Result<(RecordBatch, Vec<String>), FeatureError> {
        // Views without an event time need no lookup time, so an entity table of keys
        // alone is enough when every view is static.
        let all_static = loaded.iter().all(|l| l.view.spec.event_time.is_none());
        let timestamp = match timestamp_column(&entities.schema(), timestamp) {
            Ok(column) => Some(column),
            Err(_) if all_static && timestamp.is_none() => None,
            Err(error) => return Err(error),
        };
        let mut selections = Vec::with_capacity(groups.len());
        let mut lineage = Vec::with_capacity(groups.len());
        for (group, view) in groups.iter().zip(loaded) {
            let mut features = Vec::with_capacity(group.features.len());
            for (_, name) in &group.features {
                let index = view
                    .view
                    .features
                    .iter()
                    .position(|f| &f.name == name)
                    .ok_or_else(|| FeatureError::InvalidReference {
                        reference: format!("{}:{name}", group.view),
                        message: format!(
                            "view {}@v{} has no feature {name:?}",
                            group.view, view.view.version
                        ),
                    })?;
                features.push(index);
            }
            let prefix = match group.version {
                Some(version) => format!("{}@v{version}", group.view),
                None => group.view.clone(),
            };
            lineage.push(format!(
                "{}@v{}({}@v{})",
                group.view, view.view.version, view.dataset, view.dataset_version
            ));
            selections.push(ViewSelection {
                view: &view.view,
                table: &view.table,
                features,
                prefix,
            });
        }
        let batch = point_in_time_join(
            entities,
            timestamp.as_deref(),
            &selections,
            full_feature_names,
        )?;
        // The join appends features view by view; put them back in the requested order.
        let passed = entities.num_columns();
        let positions: Vec<usize> = groups
            .iter()
            .flat_map(|group| group.features.iter().map(|(position, _)| *position))
            .collect();
        let mut appended: Vec<usize> = (0..positions.len()).collect();
        appended.sort_by_key(|&column| positions[column]);
        let order: Vec<usize> = (0..passed)
            .chain(appended.into_iter().map(|column| passed + column))
            .collect();
        let batch = batch.project(&order)?;
        Ok((batch, lineage))
    }

    /// Stores a batch as a new version of a dataset, creating the dataset with a schema that
    /// matches the batch when it does not exist.
    #[allow(clippy::too_many_arguments)]
    async fn store_batch(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        project_name: &str,
        name: &str,
        batch: &RecordBatch,
        source: &str,
        actor: &str,
    ) -> Result<DatasetVersion, FeatureError> {
        let started = std::time::Instant::now();
        let dataset = match self.ingest.store().get_dataset(tenant, project, name).await {
            Ok(dataset) => dataset,
            Err(ghaf_ingest::IngestError::NotFound { .. }) => {
                let schema = dataset_schema_for(batch)?;
                self.ingest
                    .create_dataset(
                        tenant,
                        project,
                        name,
                        "Point-in-time training sets.",
                        &schema,
                        actor,
                    )
                    .await?
            }
            Err(error) => return Err(error.into()),
        };
        // Parquet ingest reads the declared columns by name and ignores others, so a batch
        // whose columns differ from the dataset's would lose features silently.
        let expected: Vec<&str> = dataset
            .schema
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        let schema = batch.schema();
        let actual: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        if expected != actual {
            return Err(FeatureError::InvalidArgument {
                argument: "output_dataset",
                message: format!(
                    "dataset {name:?} has the columns {expected:?}, but the training set has {actual:?}; \
                     choose another output dataset"
                ),
            });
        }
        let prepared = started.elapsed();
        // Training sets are written once and read whole, so the fast encoding fits them.
        let outcome = self
            .ingest
            .ingest_batch(
                &dataset,
                project_name,
                batch.clone(),
                source,
                VersionEncoding::Fast,
                actor,
            )
            .await?;
        tracing::debug!(
            dataset = %name,
            version = outcome.version.version,
            prepare_ms = prepared.as_millis() as u64,
            ingest_ms = (started.elapsed() - prepared).as_millis() as u64,
            "stored a batch as a dataset version"
        );
        Ok(outcome.version)
    }

    /// Writes the latest row per key with `start <= event time <= end` to the online store
    /// and records the interval. Without `start`, the run continues from the end of the
    /// latest recorded interval of this view version over the same dataset version, or
    /// starts at `end - ttl` (every row when the view has no TTL): a view without event time
    /// and a view whose dataset has a newer version are written again whole.
    #[allow(clippy::too_many_arguments)]
    pub async fn materialize(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        view: &str,
        version: Option<i64>,
        start: Option<i64>,
        end: i64,
        actor: &str,
    ) -> Result<MaterializeOutcome, FeatureError> {
        let loaded = self.load_view(tenant, project, view, version).await?;
        let compiled = &loaded.view;
        if !compiled.spec.online {
            return Err(FeatureError::InvalidArgument {
                argument: "view",
                message: format!(
                    "feature view {view:?} has `online: false`; set it to true to materialise"
                ),
            });
        }
        let start = match start {
            Some(start) => start,
            None => {
                let runs = self
                    .db
                    .list_materializations(tenant, project, view, compiled.version)
                    .await?;
                // A view without event time has one row per key with no time to resume
                // from, and a newer dataset version can hold rows older than the last
                // interval's end: both are written again from the start of the TTL.
                let resume = runs.first().filter(|last| {
                    compiled.spec.event_time.is_some()
                        && last.dataset_version == loaded.dataset_version
                });
                match (resume, compiled.ttl) {
                    (Some(last), _) => last.end_micros,
                    (None, Some(ttl)) => end.saturating_sub(ttl),
                    (None, None) => i64::MIN,
                }
            }
        };
        if start > end {
            return Err(FeatureError::InvalidArgument {
                argument: "start",
                message: format!(
                    "the start {} is after the end {}",
                    format_micros(start),
                    format_micros(end)
                ),
            });
        }

        let rows = loaded.table.index.latest_in_range(start, end);
        let scope = OnlineScope {
            tenant: tenant.clone(),
            project: project.clone(),
            view: view.to_owned(),
            version: compiled.version,
        };
        let mut written = 0;
        let mut skipped = 0;
        for chunk in rows.chunks(MATERIALIZE_BATCH) {
            let batch: Vec<(EntityKey, OnlineRow)> = chunk
                .iter()
                .map(|&row| online_row(compiled, &loaded.table, row as usize))
                .collect::<Result<_, _>>()?;
            // The server logs a failed request once; the message carries the view's ids.
            let counts = self.online.write(&scope, batch).await.map_err(|error| {
                FeatureError::Online(format!(
                    "materialising {view}@v{} of project {project} failed: {error}",
                    compiled.version
                ))
            })?;
            written += counts.written;
            skipped += counts.skipped;
        }
        let record = Materialization {
            id: uuid::Uuid::now_v7().simple().to_string(),
            view: view.to_owned(),
            view_version: compiled.version,
            dataset_version: loaded.dataset_version,
            start_micros: start,
            end_micros: end,
            keys_written: written,
            keys_skipped: skipped,
            created_at: ghaf_core::now_millis(),
            created_by: actor.to_owned(),
        };
        self.db
            .insert_materialization(tenant, project, &record)
            .await?;
        tracing::info!(
            tenant = %tenant,
            project = %project,
            view,
            version = compiled.version,
            written,
            skipped,
            "materialised feature view"
        );
        Ok(MaterializeOutcome {
            record,
            backend: self.online.backend().to_owned(),
        })
    }

    /// Resolves the selection of an online read to view versions and features, in request
    /// order, through the definition cache. A whole-view entry of a service expands to
    /// every feature of the view version. Returns the groups and the number of features.
    async fn resolve_online_selection(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        selection: &FeatureSelection,
    ) -> Result<(Vec<OnlineGroup>, usize), FeatureError> {
        let mut references: Vec<FeatureRef> = Vec::new();
        match (&selection.features, &selection.feature_service) {
            (Some(features), None) => {
                if features.is_empty() {
                    return Err(FeatureError::InvalidArgument {
                        argument: "features",
                        message: "the list is empty; name at least one view:feature".to_owned(),
                    });
                }
                for feature in features {
                    references.push(FeatureRef::parse(feature)?);
                }
            }
            (None, Some(service)) => {
                let service = self
                    .definitions
                    .service(&self.db, tenant, project, service)
                    .await?;
                for entry in &service.features {
                    let parsed = FeatureRef::parse_service_entry(entry)?;
                    if parsed.feature.is_some() {
                        references.push(parsed);
                        continue;
                    }
                    let view = self
                        .definitions
                        .view(&self.db, tenant, project, &parsed.view, parsed.version)
                        .await?;
                    for feature in &view.stored.spec.features {
                        references.push(FeatureRef {
                            feature: Some(feature.name.clone()),
                            ..parsed.clone()
                        });
                    }
                }
            }
            _ => {
                return Err(FeatureError::InvalidArgument {
                    argument: "features",
                    message: "give either `features` or `feature_service`, not both or neither"
                        .to_owned(),
                });
            }
        }

        let mut groups: Vec<OnlineGroup> = Vec::new();
        for (position, reference) in references.iter().enumerate() {
            let feature = reference.feature.clone().unwrap_or_default();
            let found = groups
                .iter_mut()
                .find(|g| g.view.stored.name == reference.view && g.version == reference.version);
            match found {
                Some(group) => group.features.push((position, feature)),
                None => {
                    let view = self
                        .definitions
                        .view(
                            &self.db,
                            tenant,
                            project,
                            &reference.view,
                            reference.version,
                        )
                        .await?;
                    groups.push(OnlineGroup {
                        view,
                        version: reference.version,
                        features: vec![(position, feature)],
                    });
                }
            }
        }
        Ok((groups, references.len()))
    }

    /// Reads features of entity rows from the online store, in Feast's response shape.
    pub async fn get_online_features(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        request: &OnlineRequest,
    ) -> Result<OnlineResponse, FeatureError> {
        self.get_online_features_at(tenant, project, request, now_micros())
            .await
    }

    /// [`FeatureStore::get_online_features`] with the TTL measured from `now` (microseconds).
    pub async fn get_online_features_at(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        request: &OnlineRequest,
        now: i64,
    ) -> Result<OnlineResponse, FeatureError> {
        let rows = request.entities.values().map(Vec::len).next().unwrap_or(0);
        if request.entities.is_empty() {
            return Err(FeatureError::InvalidArgument {
                argument: "entities",
                message: "no entity columns given; pass each join key with one value per row"
                    .to_owned(),
            });
        }
        if let Some((name, values)) = request.entities.iter().find(|(_, v)| v.len() != rows) {
            return Err(FeatureError::InvalidArgument {
                argument: "entities",
                message: format!(
                    "column {name:?} has {} values, another has {rows}; give every column one value per row",
                    values.len()
                ),
            });
        }
        if rows > MAX_ONLINE_ROWS {
            return Err(FeatureError::InvalidArgument {
                argument: "entities",
                message: format!(
                    "{rows} entity rows in one request; read at most {MAX_ONLINE_ROWS} per \
                     request and split larger reads"
                ),
            });
        }
        let (groups, feature_count) = self
            .resolve_online_selection(tenant, project, &request.selection)
            .await?;
        let cells = rows.saturating_mul(feature_count.max(1));
        if cells > MAX_ONLINE_CELLS {
            return Err(FeatureError::InvalidArgument {
                argument: "entities",
                message: format!(
                    "{rows} entity rows times {feature_count} features is {cells} values; read \
                     at most {MAX_ONLINE_CELLS} values per request and split larger reads"
                ),
            });
        }
        let epoch: Arc<str> = format_micros(0).into();
        let mut names: Vec<String> = request.entities.keys().cloned().collect();
        // Join keys come back as given with status PRESENT, as in Feast; a null key gets
        // NULL_VALUE.
        let mut results: Vec<OnlineColumn> = request
            .entities
            .values()
            .map(|values| OnlineColumn {
                values: values.clone(),
                statuses: values
                    .iter()
                    .map(|v| {
                        if v.is_null() {
                            crate::online::FieldStatus::NullValue
                        } else {
                            crate::online::FieldStatus::Present
                        }
                    })
                    .collect(),
                event_timestamps: vec![epoch.clone(); values.len()],
            })
            .collect();
        let mut features: Vec<Option<(String, OnlineColumn)>> = vec![None; feature_count];

        for group in &groups {
            let stored = &group.view.stored;
            let ttl = group.view.ttl_micros;
            let join_keys = &group.view.join_keys;
            let mut keys = Vec::with_capacity(rows);
            // A row with a null join key matches nothing: its features come back NOT_FOUND,
            // as for an unknown key, and the other rows are read as usual.
            let mut present = Vec::with_capacity(rows);
            'rows: for row in 0..rows {
                let mut parts = Vec::with_capacity(join_keys.len());
                for (column, key_type) in join_keys {
                    let values = request.entities.get(column).ok_or_else(|| {
                        FeatureError::InvalidArgument {
                            argument: "entities",
                            message: format!(
                                "feature view {:?} needs the join key {column:?}",
                                stored.name
                            ),
                        }
                    })?;
                    if values[row].is_null() {
                        present.push(false);
                        continue 'rows;
                    }
                    parts.push((column.clone(), key_value(column, &values[row], *key_type)?));
                }
                present.push(true);
                keys.push(EntityKey::new(parts));
            }
            let scope = OnlineScope {
                tenant: tenant.clone(),
                project: project.clone(),
                view: stored.name.clone(),
                version: stored.version,
            };
            for (_, feature) in &group.features {
                if stored.spec.feature(feature).is_none() {
                    return Err(FeatureError::InvalidReference {
                        reference: format!("{}:{feature}", stored.name),
                        message: format!(
                            "view {}@v{} has no feature {feature:?}",
                            stored.name, stored.version
                        ),
                    });
                }
            }
            let requested: Vec<&str> = group.features.iter().map(|(_, f)| f.as_str()).collect();
            let found = self.online.read_features(&scope, &keys, &requested).await?;
            let mut found = found.into_iter();
            let mut stored_rows: Vec<Option<PickedRow>> = present
                .iter()
                .map(|&present| {
                    if present {
                        found.next().flatten()
                    } else {
                        None
                    }
                })
                .collect();
            // Each row's event time is formatted once and shared by its features.
            let row_timestamps: Vec<Option<Arc<str>>> = stored_rows
                .iter()
                .map(|row| {
                    row.as_ref()
                        .filter(|row| row.event_micros != i64::MIN)
                        .map(|row| format_micros(row.event_micros).into())
                })
                .collect();
            for (index, (position, feature)) in group.features.iter().enumerate() {
                let mut column = OnlineColumn {
                    values: Vec::with_capacity(rows),
                    statuses: Vec::with_capacity(rows),
                    event_timestamps: Vec::with_capacity(rows),
                };
                for (row, timestamp) in stored_rows.iter_mut().zip(&row_timestamps) {
                    // Each picked value is used by one feature position, so it is moved out.
                    let value = match row {
                        Some(row) => {
                            resolve_value(row.values[index].take(), row.event_micros, ttl, now)
                        }
                        None => resolve_value(None, i64::MIN, ttl, now),
                    };
                    column.values.push(value.value);
                    column.statuses.push(value.status);
                    let timestamp = match (value.event_micros, timestamp) {
                        (Some(_), Some(timestamp)) => timestamp.clone(),
                        _ => epoch.clone(),
                    };
                    column.event_timestamps.push(timestamp);
                }
                let name = if request.full_feature_names {
                    match group.version {
                        Some(version) => format!("{}@v{version}__{feature}", stored.name),
                        None => format!("{}__{feature}", stored.name),
                    }
                } else {
                    feature.clone()
                };
                features[*position] = Some((name, column));
            }
        }
        for (name, column) in features.into_iter().flatten() {
            // Feast clients read values by name, so two outputs with one name are refused,
            // as training sets refuse them.
            if names.contains(&name) {
                return Err(FeatureError::InvalidArgument {
                    argument: "features",
                    message: format!(
                        "two output columns are named {name:?}; request full feature names or \
                         drop one of the references"
                    ),
                });
            }
            names.push(name);
            results.push(column);
        }
        Ok(OnlineResponse {
            metadata: OnlineMetadata {
                feature_names: names,
            },
            results,
        })
    }

    /// Pushes rows (Feast's columnar `df`) for `dataset`: offline as a validated segment of
    /// the dataset, online into every online view over the dataset's latest version, or
    /// both. With both, only the rows the offline push accepted go online. Views with
    /// rolling aggregations are skipped online, because a window needs the rows before the
    /// pushed ones; materialise them after an offline push instead.
    #[allow(clippy::too_many_arguments)]
    pub async fn push(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        project_name: &str,
        dataset: &str,
        df: &serde_json::Map<String, serde_json::Value>,
        to: PushTarget,
        actor: &str,
    ) -> Result<PushReport, FeatureError> {
        let dataset = self
            .ingest
            .store()
            .get_dataset(tenant, project, dataset)
            .await?;
        let rows = rows_of(df)?;
        if rows.is_empty() {
            return Err(FeatureError::InvalidArgument {
                argument: "df",
                message: "no rows; give each column a list of values".to_owned(),
            });
        }
        // Type errors fail the whole push before anything is written.
        let typed = batch_of(&dataset.schema, &rows)?;

        let mut report = PushReport::default();
        let online_batch = if to.offline() {
            let body = serde_json::to_vec(&rows).unwrap_or_default();
            let outcome = self
                .ingest
                .push(&dataset, project_name, &body, PushFormat::JsonArray, actor)
                .await?;
            let accepted = match &outcome.segment {
                Some(segment) if to.online() => Some(self.read_version(tenant, segment).await?),
                _ => None,
            };
            report.offline = Some(outcome);
            accepted
        } else {
            Some(typed)
        };
        let Some(batch) = online_batch else {
            return Ok(report);
        };

        let entities = self.db.list_entities(tenant, project).await?;
        for stored in self.db.list_views(tenant, project).await? {
            let spec = &stored.spec;
            if spec.source.dataset != dataset.name || spec.source.version.is_some() || !spec.online
            {
                continue;
            }
            if spec.features.iter().any(|f| f.aggregation.is_some()) {
                report.skipped_views.push(stored.name.clone());
                continue;
            }
            let view_entities = stored.entities(&entities);
            let view =
                CompiledView::compile(spec, stored.version, &view_entities, &batch.schema())?;
            let table = view.table(&batch)?;
            let latest = table.index.latest_in_range(i64::MIN, i64::MAX);
            let rows: Vec<(EntityKey, OnlineRow)> = latest
                .iter()
                .map(|&row| online_row(&view, &table, row as usize))
                .collect::<Result<_, _>>()?;
            let scope = OnlineScope {
                tenant: tenant.clone(),
                project: project.clone(),
                view: stored.name.clone(),
                version: stored.version,
            };
            // Rows the index left out have no key or no time to store them under; they are
            // reported instead of vanishing.
            let mut rejected = 0u64;
            let mut rejected_rows = Vec::new();
            for row in 0..table.row_count() {
                if table.index.position(row).is_some() {
                    continue;
                }
                rejected += 1;
                if rejected_rows.len() < LISTED_REJECTIONS {
                    let null_key = view
                        .keys
                        .iter()
                        .zip(&table.keys)
                        .find(|(_, column)| column.is_null(row));
                    let reason = match (null_key, &spec.event_time) {
                        (Some((key, _)), _) => format!("the join key {:?} is null", key.column),
                        (None, Some(column)) => format!("the event time {column:?} is null"),
                        (None, None) => "the row has no key to store it under".to_owned(),
                    };
                    rejected_rows.push(RejectedRow {
                        row: row as u64 + 1,
                        reason,
                    });
                }
            }
            if rejected > 0 {
                tracing::warn!(
                    tenant = %tenant,
                    project = %project,
                    dataset = %dataset.name,
                    view = %stored.name,
                    version = stored.version,
                    rejected,
                    "pushed rows rejected online: null join key or event time"
                );
            }
            let counts = self.online.write(&scope, rows).await?;
            report.online.push(OnlinePush {
                view: stored.name.clone(),
                version: stored.version,
                written: counts.written,
                skipped: counts.skipped,
                rejected,
                rejected_rows,
            });
        }
        tracing::info!(
            tenant = %tenant,
            project = %project,
            dataset = %dataset.name,
            rows = df.values().next().and_then(|v| v.as_array()).map_or(0, Vec::len),
            views = report.online.len(),
            "pushed feature rows"
        );
        Ok(report)
    }

    /// Loads definitions from a directory and plans them.
    pub async fn plan_dir(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        dir: &Path,
    ) -> Result<Plan, FeatureError> {
        let definitions = Definitions::load_dir(dir)?;
        self.plan(tenant, project, &definitions).await
    }
}

fn key_value(
    column: &str,
    value: &serde_json::Value,
    key_type: KeyType,
) -> Result<KeyValue, FeatureError> {
    let invalid = || FeatureError::InvalidArgument {
        argument: "entities",
        message: format!(
            "join key {column:?} is {}, but a value is {value}",
            key_type.as_str()
        ),
    };
    match key_type {
        KeyType::Integer => value.as_i64().map(KeyValue::Int).ok_or_else(invalid),
        KeyType::String => value
            .as_str()
            .map(|s| KeyValue::Text(s.to_owned()))
            .ok_or_else(invalid),
    }
}

/// Builds the online row of one feature-table row.
fn online_row(
    view: &CompiledView,
    table: &FeatureTable,
    row: usize,
) -> Result<(EntityKey, OnlineRow), FeatureError> {
    let mut parts = Vec::with_capacity(view.keys.len());
    for (key, column) in view.keys.iter().zip(&table.keys) {
        let value = match key.key_type {
            KeyType::Integer => KeyValue::Int(
                column
                    .as_any()
                    .downcast_ref::<arrow::array::Int64Array>()
                    .map(|a| a.value(row))
                    .unwrap_or_default(),
            ),
            KeyType::String => KeyValue::Text(
                column
                    .as_any()
                    .downcast_ref::<arrow::array::StringArray>()
                    .map(|a| a.value(row).to_owned())
                    .unwrap_or_default(),
            ),
        };
        parts.push((key.column.clone(), value));
    }
    let mut values = BTreeMap::new();
    for (feature, column) in view.features.iter().zip(&table.features) {
        values.insert(feature.name.clone(), json_value(column.as_ref(), row)?);
    }
    Ok((
        EntityKey::new(parts),
        OnlineRow {
            event_micros: table.events[row].unwrap_or(i64::MIN),
            created_micros: table.created_at(row).unwrap_or(i64::MIN),
            values,
        },
    ))
}

/// Maximum threads one Parquet read decodes columns on.
const READ_THREADS: usize = 4;

/// Decodes a Parquet file into one batch. The top-level columns are split into groups
/// decoded on parallel threads, because a stored version is usually one row group, so row
/// groups give no parallelism.
fn read_parquet(bytes: bytes::Bytes) -> Result<RecordBatch, FeatureError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())?;
    let schema = builder.schema().clone();
    let rows = usize::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
    let columns = schema.fields().len();
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(READ_THREADS)
        .min(columns)
        .max(1);
    // One batch per group of columns, so nothing is concatenated afterwards.
    let batch_size = rows.clamp(1, 1 << 24);
    let read_group = |group: Vec<usize>| -> Result<RecordBatch, FeatureError> {
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())?;
        let mask = ProjectionMask::roots(builder.parquet_schema(), group);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(batch_size)
            .build()?;
        let schema = reader.schema();
        let batches = reader.collect::<Result<Vec<_>, _>>()?;
        Ok(concat_batches(&schema, &batches)?)
    };
    drop(builder);
    if threads == 1 {
        return read_group((0..columns).collect());
    }
    let groups: Vec<Vec<usize>> = (0..threads)
        .map(|thread| (thread..columns).step_by(threads).collect())
        .collect();
    let parts = std::thread::scope(|scope| {
        let handles: Vec<_> = groups
            .iter()
            .map(|group| {
                let group = group.clone();
                scope.spawn(move || read_group(group))
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle.join().unwrap_or_else(|_| {
                    Err(FeatureError::Online(
                        "a Parquet read thread panicked".to_owned(),
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()
    })?;
    let mut arrays: Vec<Option<ArrayRef>> = vec![None; columns];
    for (group, part) in groups.iter().zip(parts) {
        for (&column, array) in group.iter().zip(part.columns()) {
            arrays[column] = Some(array.clone());
        }
    }
    let arrays: Vec<ArrayRef> = arrays.into_iter().flatten().collect();
    Ok(RecordBatch::try_new(schema, arrays)?)
}

/// Derives a dataset schema for a batch: each column nullable, with the matching type.
fn dataset_schema_for(batch: &RecordBatch) -> Result<DatasetSchema, FeatureError> {
    let mut columns = Vec::new();
    for field in batch.schema().fields() {
        let column_type = match field.data_type() {
            DataType::Int64 | DataType::Int32 | DataType::Int16 | DataType::Int8 => "integer",
            DataType::Float64 | DataType::Float32 => "float",
            DataType::Utf8 | DataType::LargeUtf8 => "string",
            DataType::Boolean => "boolean",
            DataType::Date32 => "date",
            DataType::Timestamp(..) => "timestamp",
            other => {
                return Err(FeatureError::InvalidArgument {
                    argument: "entity table",
                    message: format!(
                        "column {:?} has type {other}, which a dataset cannot store",
                        field.name()
                    ),
                });
            }
        };
        let mut column =
            serde_json::json!({ "name": field.name(), "type": column_type, "nullable": true });
        if let DataType::Timestamp(_, Some(zone)) = field.data_type() {
            column["timezone"] = serde_json::Value::String(zone.to_string());
        }
        columns.push(column);
    }
    Ok(DatasetSchema::from_json(
        serde_json::json!({ "columns": columns }),
    )?)
}
