//! The storage contract of tracking and the registry.

use async_trait::async_trait;
use ghaf_core::UnixMillis;

use crate::filter::{ExperimentClause, OrderBy, RegistryClause};
use crate::*;

/// Storage of experiments, runs, logged models, artifact entries and the registry.
///
/// Every method works inside one [`Scope`]; an object of another project or tenant is
/// reported as not found. Every write is atomic. Soft-deleted experiments and runs stay
/// readable by id.
#[async_trait]
pub trait TrackingStore: Send + Sync + 'static {
    // Experiments.

    /// Creates the experiment `"0"` named `Default` when the project has none.
    async fn ensure_default_experiment(&self, scope: &Scope) -> Result<(), TrackingError>;
    /// Creates an experiment with the next free id; `AlreadyExists` when the name is taken.
    async fn create_experiment(
        &self,
        scope: &Scope,
        name: &str,
        artifact_location: Option<&str>,
        tags: &[Tag],
    ) -> Result<Experiment, TrackingError>;
    async fn get_experiment(&self, scope: &Scope, id: i64) -> Result<Experiment, TrackingError>;
    async fn get_experiment_by_name(
        &self,
        scope: &Scope,
        name: &str,
    ) -> Result<Experiment, TrackingError>;
    async fn search_experiments(
        &self,
        scope: &Scope,
        view: ViewType,
        filter: &[ExperimentClause],
        order_by: &[OrderBy<&'static str>],
        max_results: u32,
        offset: u64,
    ) -> Result<Page<Experiment>, TrackingError>;
    async fn rename_experiment(
        &self,
        scope: &Scope,
        id: i64,
        name: &str,
    ) -> Result<(), TrackingError>;
    /// Moves an experiment and its runs to `stage`.
    async fn set_experiment_stage(
        &self,
        scope: &Scope,
        id: i64,
        stage: LifecycleStage,
    ) -> Result<(), TrackingError>;
    async fn set_experiment_tag(
        &self,
        scope: &Scope,
        id: i64,
        tag: &Tag,
    ) -> Result<(), TrackingError>;

    // Runs.

    async fn create_run(&self, scope: &Scope, run: &NewRun) -> Result<Run, TrackingError>;
    async fn get_run(&self, scope: &Scope, run_id: &str) -> Result<Run, TrackingError>;
    async fn update_run(
        &self,
        scope: &Scope,
        run_id: &str,
        update: &RunUpdate,
    ) -> Result<RunInfo, TrackingError>;
    async fn set_run_stage(
        &self,
        scope: &Scope,
        run_id: &str,
        stage: LifecycleStage,
    ) -> Result<(), TrackingError>;
    /// Logs metrics, params and tags atomically. A param that exists with another value is
    /// rejected, as params are immutable; the same value again is accepted.
    async fn log_batch(
        &self,
        scope: &Scope,
        run_id: &str,
        metrics: &[Metric],
        params: &[Param],
        tags: &[Tag],
    ) -> Result<(), TrackingError>;
    /// Logs a batch as [`TrackingStore::log_batch`] does and appends `entry` to the audit
    /// log in the same transaction, so both commit or neither does. `audit` must write to
    /// this store's database. Fails with [`TrackingError::AuditRefused`], having written
    /// nothing, when the tenant's audit chain cannot be extended.
    async fn log_batch_audited(
        &self,
        scope: &Scope,
        batch: &Batch<'_>,
        audit: &dyn ghaf_meta::TransactionalAudit,
        entry: &ghaf_core::audit::NewAuditEntry,
    ) -> Result<ghaf_core::audit::AuditEntry, TrackingError>;
    async fn delete_run_tag(
        &self,
        scope: &Scope,
        run_id: &str,
        key: &str,
    ) -> Result<(), TrackingError>;
    /// Returns the history of one metric ordered by step, then timestamp.
    async fn metric_history(
        &self,
        scope: &Scope,
        run_id: &str,
        key: &str,
        max_results: u32,
        offset: u64,
    ) -> Result<Page<Metric>, TrackingError>;
    async fn search_runs(
        &self,
        scope: &Scope,
        query: &RunQuery,
    ) -> Result<Page<Run>, TrackingError>;
    async fn log_outputs(
        &self,
        scope: &Scope,
        run_id: &str,
        outputs: &[ModelOutput],
    ) -> Result<(), TrackingError>;

    // Logged models.

    async fn create_logged_model(
        &self,
        scope: &Scope,
        model: &NewLoggedModel,
    ) -> Result<LoggedModel, TrackingError>;
    async fn get_logged_model(
        &self,
        scope: &Scope,
        model_id: &str,
    ) -> Result<LoggedModel, TrackingError>;
    async fn set_logged_model_status(
        &self,
        scope: &Scope,
        model_id: &str,
        status: LoggedModelStatus,
    ) -> Result<LoggedModel, TrackingError>;
    async fn set_logged_model_tags(
        &self,
        scope: &Scope,
        model_id: &str,
        tags: &[Tag],
    ) -> Result<(), TrackingError>;
    /// Lists logged models of the experiments, optionally with one name, newest first.
    async fn search_logged_models(
        &self,
        scope: &Scope,
        experiment_ids: &[i64],
        name: Option<&str>,
        max_results: u32,
        offset: u64,
    ) -> Result<Page<LoggedModel>, TrackingError>;

    // Artifact entries.

    /// Records that `path` contains the content with `digest`, replacing an earlier entry.
    async fn put_artifact(&self, scope: &Scope, entry: &ArtifactEntry)
    -> Result<(), TrackingError>;
    async fn get_artifact(
        &self,
        scope: &Scope,
        path: &str,
    ) -> Result<Option<ArtifactEntry>, TrackingError>;
    /// Lists every entry below `prefix` (all depths), sorted by path.
    async fn list_artifacts(
        &self,
        scope: &Scope,
        prefix: &str,
    ) -> Result<Vec<ArtifactEntry>, TrackingError>;
    /// Deletes `path` and everything below it; returns the number of entries removed.
    async fn delete_artifacts(&self, scope: &Scope, path: &str) -> Result<u64, TrackingError>;

    // Registry.

    async fn create_registered_model(
        &self,
        scope: &Scope,
        name: &str,
        description: &str,
        user_id: &str,
        tags: &[Tag],
    ) -> Result<RegisteredModel, TrackingError>;
    async fn get_registered_model(
        &self,
        scope: &Scope,
        name: &str,
    ) -> Result<RegisteredModel, TrackingError>;
    async fn update_registered_model(
        &self,
        scope: &Scope,
        name: &str,
        description: &str,
    ) -> Result<RegisteredModel, TrackingError>;
    /// Deletes a registered model with its versions, tags and aliases.
    async fn delete_registered_model(&self, scope: &Scope, name: &str)
    -> Result<(), TrackingError>;
    async fn search_registered_models(
        &self,
        scope: &Scope,
        filter: &[RegistryClause],
        order_by: &[OrderBy<&'static str>],
        max_results: u32,
        offset: u64,
    ) -> Result<Page<RegisteredModel>, TrackingError>;
    async fn set_registered_model_tag(
        &self,
        scope: &Scope,
        name: &str,
        tag: &Tag,
    ) -> Result<(), TrackingError>;
    async fn delete_registered_model_tag(
        &self,
        scope: &Scope,
        name: &str,
        key: &str,
    ) -> Result<(), TrackingError>;

    /// Returns the version number the next [`TrackingStore::create_model_version`] of `name`
    /// will most likely get; the manifest is signed for it before the insert.
    async fn next_version(&self, scope: &Scope, name: &str) -> Result<i64, TrackingError>;
    /// Inserts a version with the number `version`; `AlreadyExists` when another request
    /// took that number first.
    async fn create_model_version(
        &self,
        scope: &Scope,
        version: i64,
        new: &NewModelVersion,
    ) -> Result<ModelVersion, TrackingError>;
    async fn get_model_version(
        &self,
        scope: &Scope,
        name: &str,
        version: i64,
    ) -> Result<ModelVersion, TrackingError>;
    async fn update_model_version(
        &self,
        scope: &Scope,
        name: &str,
        version: i64,
        description: Option<&str>,
        details: Option<&VersionDetails>,
    ) -> Result<ModelVersion, TrackingError>;
    async fn delete_model_version(
        &self,
        scope: &Scope,
        name: &str,
        version: i64,
    ) -> Result<(), TrackingError>;
    async fn search_model_versions(
        &self,
        scope: &Scope,
        filter: &[RegistryClause],
        order_by: &[OrderBy<&'static str>],
        max_results: u32,
        offset: u64,
    ) -> Result<Page<ModelVersion>, TrackingError>;
    /// Moves a version to `stage`; with `archive_existing`, other versions in that stage
    /// move to `Archived`.
    async fn transition_stage(
        &self,
        scope: &Scope,
        name: &str,
        version: i64,
        stage: Stage,
        archive_existing: bool,
        now: UnixMillis,
    ) -> Result<ModelVersion, TrackingError>;
    async fn set_model_version_tag(
        &self,
        scope: &Scope,
        name: &str,
        version: i64,
        tag: &Tag,
    ) -> Result<(), TrackingError>;
    async fn delete_model_version_tag(
        &self,
        scope: &Scope,
        name: &str,
        version: i64,
        key: &str,
    ) -> Result<(), TrackingError>;
    /// Points `alias` at `version`, moving it from another version if needed.
    async fn set_alias(
        &self,
        scope: &Scope,
        name: &str,
        alias: &str,
        version: i64,
    ) -> Result<(), TrackingError>;
    async fn delete_alias(
        &self,
        scope: &Scope,
        name: &str,
        alias: &str,
    ) -> Result<(), TrackingError>;
    async fn get_version_by_alias(
        &self,
        scope: &Scope,
        name: &str,
        alias: &str,
    ) -> Result<ModelVersion, TrackingError>;
}
