//! Live request counters of each variant, kept in atomics on this replica and flushed to
//! the table `endpoint_variant_stats`, one row per replica, so that every replica's
//! counters add up.
//!
//! Counters are cumulative since the replica started. They are keyed by endpoint, variant,
//! model and version, not by endpoint generation, so a weight change keeps counting where
//! it was and a rollout can judge the difference between two reads.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ghaf_core::{ProjectId, TenantId, UnixMillis};
use ghaf_meta::Db;
use sqlx::Row;

use crate::ServeError;
use crate::policy::{LATENCY_BOUNDS_US, VariantStats, latency_bucket};

/// Time between two background flushes of this replica's counters.
pub const STATS_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Age after which a replica's rows are deleted by the flush: replicas that stopped
/// long ago no longer add to the sums.
pub const STATS_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Flushes between two deletions of rows older than [`STATS_RETENTION`].
const PRUNE_EVERY_FLUSHES: u64 = 600;

/// Number of latency buckets: one per bound and one for slower requests.
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

/// Identity of one variant's counters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct StatsKey {
    pub tenant: TenantId,
    pub project: ProjectId,
    pub endpoint: String,
    pub variant: String,
    pub model: String,
    pub version: i64,
}

/// Counters of one variant on this replica, updated with relaxed atomics on the request
/// path.
#[derive(Debug, Default)]
pub(crate) struct VariantCounters {
    requests: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS],
    shadow_compared: AtomicU64,
    shadow_disagreed: AtomicU64,
}

impl VariantCounters {
    /// Counts one request with its latency; `failed` when it failed on the server side.
    pub(crate) fn record(&self, latency_us: u64, failed: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency[latency_bucket(latency_us)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one comparison of a mirrored request's outputs with the primary's.
    pub(crate) fn record_comparison(&self, disagreed: bool) {
        self.shadow_compared.fetch_add(1, Ordering::Relaxed);
        if disagreed {
            self.shadow_disagreed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn snapshot(&self, key: &StatsKey) -> VariantStats {
        VariantStats {
            variant: key.variant.clone(),
            model: key.model.clone(),
            version: key.version,
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            latency_buckets: self
                .latency
                .iter()
                .map(|bucket| bucket.load(Ordering::Relaxed))
                .collect(),
            shadow_compared: self.shadow_compared.load(Ordering::Relaxed),
            shadow_disagreed: self.shadow_disagreed.load(Ordering::Relaxed),
        }
    }
}

/// Record of the flushes so far: the counters of each key at its last successful write,
/// and the number of flushes.
#[derive(Default)]
struct Flushed {
    /// Every counter is compared, not only the request count: a snapshot can be taken
    /// between the request increment of [`VariantCounters::record`] and its error or
    /// latency increment, and those must still be written when no further request comes.
    written: HashMap<StatsKey, VariantStats>,
    flushes: u64,
}

/// The counters of every variant this replica served, and their flush to the database.
pub(crate) struct StatsRegistry {
    db: Db,
    replica_id: String,
    counters: RwLock<HashMap<StatsKey, Arc<VariantCounters>>>,
    /// Serializes flushes, so an older snapshot never overwrites a newer one.
    flushed: tokio::sync::Mutex<Flushed>,
}

impl StatsRegistry {
    pub(crate) fn new(db: Db) -> Self {
        Self {
            db,
            replica_id: uuid::Uuid::now_v7().to_string(),
            counters: RwLock::new(HashMap::new()),
            flushed: tokio::sync::Mutex::new(Flushed::default()),
        }
    }

    pub(crate) fn replica_id(&self) -> &str {
        &self.replica_id
    }

    /// Returns the counters of `key`, created at zero on first use.
    pub(crate) fn counters(&self, key: StatsKey) -> Arc<VariantCounters> {
        if let Some(existing) = crate::lock_read(&self.counters).get(&key) {
            return existing.clone();
        }
        crate::lock_write(&self.counters)
            .entry(key)
            .or_default()
            .clone()
    }

    /// Forgets this replica's counters of an endpoint and deletes every replica's rows of
    /// it, after the endpoint was deleted.
    pub(crate) async fn forget(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        endpoint: &str,
    ) -> Result<(), ServeError> {
        let mut flushed = self.flushed.lock().await;
        crate::lock_write(&self.counters).retain(|key, _| {
            !(key.tenant == *tenant && key.project == *project && key.endpoint == endpoint)
        });
        flushed.written.retain(|key, _| {
            !(key.tenant == *tenant && key.project == *project && key.endpoint == endpoint)
        });
        sqlx::query(self.db.sql(
            "DELETE FROM endpoint_variant_stats WHERE tenant_id = ? AND project_id = ? AND endpoint = ?",
        ))
        .bind(tenant.as_str())
        .bind(project.as_str())
        .bind(endpoint)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Writes the counters that changed since the last flush as this replica's rows, and
    /// deletes rows older than [`STATS_RETENTION`] now and then.
    pub(crate) async fn flush(&self) -> Result<(), ServeError> {
        let mut flushed = self.flushed.lock().await;
        let snapshots: Vec<(StatsKey, VariantStats)> = crate::lock_read(&self.counters)
            .iter()
            .map(|(key, counters)| (key.clone(), counters.snapshot(key)))
            .collect();
        let now = ghaf_core::now_millis();
        for (key, stats) in snapshots {
            if flushed.written.get(&key) == Some(&stats) {
                continue;
            }
            self.upsert(&key, &stats, now).await?;
            flushed.written.insert(key, stats);
        }
        if flushed.flushes.is_multiple_of(PRUNE_EVERY_FLUSHES) {
            // This replica's rows of variants that served nothing for a while are still
            // part of the sums: refresh them first, so the deletion below never removes
            // them and their cumulative counts never come back as new requests later.
            sqlx::query(
                self.db
                    .sql("UPDATE endpoint_variant_stats SET updated_at = ? WHERE replica_id = ?"),
            )
            .bind(now)
            .bind(&self.replica_id)
            .execute(self.db.pool())
            .await?;
            let cutoff = now - i64::try_from(STATS_RETENTION.as_millis()).unwrap_or(i64::MAX);
            let pruned = sqlx::query(
                self.db
                    .sql("DELETE FROM endpoint_variant_stats WHERE updated_at < ?"),
            )
            .bind(cutoff)
            .execute(self.db.pool())
            .await?;
            if pruned.rows_affected() > 0 {
                tracing::info!(
                    rows = pruned.rows_affected(),
                    "deleted variant stats of replicas idle for more than 7 days"
                );
            }
        }
        flushed.flushes += 1;
        Ok(())
    }

    async fn upsert(
        &self,
        key: &StatsKey,
        stats: &VariantStats,
        now: UnixMillis,
    ) -> Result<(), ServeError> {
        let latency = serde_json::to_string(&stats.latency_buckets).map_err(|error| {
            ServeError::Internal(format!("cannot encode latency buckets: {error}"))
        })?;
        sqlx::query(self.db.sql(
            "INSERT INTO endpoint_variant_stats (tenant_id, project_id, endpoint, variant, model, \
             version, replica_id, requests, errors, latency_json, shadow_compared, \
             shadow_disagreed, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (tenant_id, project_id, endpoint, variant, model, version, replica_id) \
             DO UPDATE SET requests = excluded.requests, errors = excluded.errors, \
             latency_json = excluded.latency_json, shadow_compared = excluded.shadow_compared, \
             shadow_disagreed = excluded.shadow_disagreed, updated_at = excluded.updated_at",
        ))
        .bind(key.tenant.as_str())
        .bind(key.project.as_str())
        .bind(&key.endpoint)
        .bind(&key.variant)
        .bind(&key.model)
        .bind(key.version)
        .bind(&self.replica_id)
        .bind(to_i64(stats.requests))
        .bind(to_i64(stats.errors))
        .bind(latency)
        .bind(to_i64(stats.shadow_compared))
        .bind(to_i64(stats.shadow_disagreed))
        .bind(now)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Returns an endpoint's stats summed over every replica's rows, one entry per
    /// (variant, model, version), sorted by those.
    pub(crate) async fn read(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        endpoint: &str,
    ) -> Result<Vec<VariantStats>, ServeError> {
        let rows = sqlx::query(self.db.sql(
            "SELECT variant, model, version, requests, errors, latency_json, shadow_compared, \
             shadow_disagreed FROM endpoint_variant_stats \
             WHERE tenant_id = ? AND project_id = ? AND endpoint = ?",
        ))
        .bind(tenant.as_str())
        .bind(project.as_str())
        .bind(endpoint)
        .fetch_all(self.db.pool())
        .await?;
        let mut sums: BTreeMap<(String, String, i64), VariantStats> = BTreeMap::new();
        for row in rows {
            let variant: String = row.try_get("variant")?;
            let model: String = row.try_get("model")?;
            let version: i64 = row.try_get("version")?;
            let latency: String = row.try_get("latency_json")?;
            let buckets: Vec<u64> = serde_json::from_str(&latency).map_err(|error| {
                ServeError::Internal(format!(
                    "stored latency buckets of endpoint {endpoint:?} variant {variant:?} are not valid JSON: {error}"
                ))
            })?;
            let sum = sums
                .entry((variant.clone(), model.clone(), version))
                .or_insert_with(|| VariantStats {
                    variant,
                    model,
                    version,
                    latency_buckets: vec![0; LATENCY_BUCKETS],
                    ..VariantStats::default()
                });
            sum.requests += from_i64(row.try_get("requests")?);
            sum.errors += from_i64(row.try_get("errors")?);
            sum.shadow_compared += from_i64(row.try_get("shadow_compared")?);
            sum.shadow_disagreed += from_i64(row.try_get("shadow_disagreed")?);
            for (index, count) in buckets.into_iter().enumerate().take(LATENCY_BUCKETS) {
                sum.latency_buckets[index] += count;
            }
        }
        Ok(sums.into_values().collect())
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn from_i64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> StatsKey {
        StatsKey {
            tenant: TenantId::from_stored("t1"),
            project: ProjectId::from_stored("p1"),
            endpoint: "live".into(),
            variant: "primary".into(),
            model: "m".into(),
            version: 1,
        }
    }

    async fn read_one(registry: &StatsRegistry) -> Option<VariantStats> {
        let key = key();
        registry
            .read(&key.tenant, &key.project, &key.endpoint)
            .await
            .unwrap()
            .into_iter()
            .next()
    }

    #[tokio::test]
    async fn error_after_snapshot_is_flushed() {
        let (meta, _dir) = ghaf_meta::testing::sqlite_store().await;
        let registry = StatsRegistry::new(meta.db().clone());
        let counters = registry.counters(key());
        // A flush that runs between the two halves of `record` sees the request without
        // its error and latency.
        counters.requests.fetch_add(1, Ordering::Relaxed);
        registry.flush().await.unwrap();
        counters.errors.fetch_add(1, Ordering::Relaxed);
        counters.latency[0].fetch_add(1, Ordering::Relaxed);
        registry.flush().await.unwrap();

        let stats = read_one(&registry).await.unwrap();
        assert_eq!(stats.requests, 1);
        assert_eq!(stats.errors, 1);
        assert_eq!(stats.latency_buckets[0], 1);
    }

    #[tokio::test]
    async fn prune_keeps_live_replica_rows() {
        let (meta, _dir) = ghaf_meta::testing::sqlite_store().await;
        let registry = StatsRegistry::new(meta.db().clone());
        registry.counters(key()).record(100, false);
        registry.flush().await.unwrap();
        // The variant then serves nothing for longer than the retention.
        sqlx::query("UPDATE endpoint_variant_stats SET updated_at = 0")
            .execute(meta.db().pool())
            .await
            .unwrap();
        registry.flushed.lock().await.flushes = PRUNE_EVERY_FLUSHES;
        registry.flush().await.unwrap();

        let stats = read_one(&registry).await;
        assert_eq!(stats.map(|s| s.requests), Some(1));
    }

    #[tokio::test]
    async fn prune_deletes_stopped_replica_rows() {
        let (meta, _dir) = ghaf_meta::testing::sqlite_store().await;
        let stopped = StatsRegistry::new(meta.db().clone());
        stopped.counters(key()).record(100, false);
        stopped.flush().await.unwrap();
        sqlx::query("UPDATE endpoint_variant_stats SET updated_at = 0")
            .execute(meta.db().pool())
            .await
            .unwrap();

        let live = StatsRegistry::new(meta.db().clone());
        live.flush().await.unwrap();
        assert_eq!(read_one(&live).await, None);
    }
}
