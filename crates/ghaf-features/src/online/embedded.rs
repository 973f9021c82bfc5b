//! The embedded online store on redb: one file under the data directory, one table of
//! storage key to JSON-encoded row. Each write batch is one redb write transaction, so the
//! newer-wins check and the insert of a key happen together.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::{EntityKey, OnlineRow, OnlineScope, OnlineStore, WriteCounts, backend_error};
use crate::FeatureError;

const ROWS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("online_rows");
const BACKEND: &str = "redb";

/// Maximum number of keys a read looks up on the calling task instead of the blocking pool.
/// A hand-off to the pool wakes a pool thread and then the task again. Each key costs a
/// B-tree lookup in redb's page cache and a JSON decode of a few hundred bytes, so a batch
/// of this size stays short enough to run between two awaits.
const MAX_INLINE_READ_KEYS: usize = 128;

/// Online store in a redb file.
#[derive(Clone)]
pub struct RedbOnlineStore {
    db: Arc<redb::Database>,
}

fn failed(error: impl std::fmt::Display) -> FeatureError {
    backend_error(BACKEND)(&error)
}

fn decode(bytes: &[u8]) -> Result<OnlineRow, FeatureError> {
    serde_json::from_slice(bytes).map_err(|error| FeatureError::Corrupt {
        what: "online row",
        message: error.to_string(),
    })
}

impl RedbOnlineStore {
    /// Opens or creates the store file at `path`, creating its directory.
    pub fn open(path: &Path) -> Result<Self, FeatureError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let db = redb::Database::create(path).map_err(|error| {
            FeatureError::Online(format!(
                "cannot open the online store {}: {error}",
                path.display()
            ))
        })?;
        let tx = db.begin_write().map_err(failed)?;
        tx.open_table(ROWS).map_err(failed)?;
        tx.commit().map_err(failed)?;
        Ok(Self { db: Arc::new(db) })
    }

    fn write_blocking(
        db: &redb::Database,
        scope: &OnlineScope,
        rows: Vec<(EntityKey, OnlineRow)>,
    ) -> Result<WriteCounts, FeatureError> {
        let mut counts = WriteCounts::default();
        let tx = db.begin_write().map_err(failed)?;
        {
            let mut table = tx.open_table(ROWS).map_err(failed)?;
            for (entity, row) in rows {
                let key = scope.key(&entity);
                let stored = match table.get(key.as_slice()).map_err(failed)? {
                    Some(guard) => Some(decode(guard.value())?),
                    None => None,
                };
                if stored
                    .as_ref()
                    .is_some_and(|stored| !row.supersedes(stored))
                {
                    counts.skipped += 1;
                    continue;
                }
                let bytes = serde_json::to_vec(&row).unwrap_or_default();
                table
                    .insert(key.as_slice(), bytes.as_slice())
                    .map_err(failed)?;
                counts.written += 1;
            }
        }
        tx.commit().map_err(failed)?;
        Ok(counts)
    }

    fn read_blocking(
        db: &redb::Database,
        scope: &OnlineScope,
        keys: &[EntityKey],
    ) -> Result<Vec<Option<OnlineRow>>, FeatureError> {
        let tx = db.begin_read().map_err(failed)?;
        let table = tx.open_table(ROWS).map_err(failed)?;
        let prefix = scope.key_prefix();
        let mut key = Vec::with_capacity(prefix.len() + 64);
        keys.iter()
            .map(|entity| {
                key.clear();
                key.extend_from_slice(&prefix);
                entity.encode_into(&mut key);
                match table.get(key.as_slice()).map_err(failed)? {
                    Some(guard) => decode(guard.value()).map(Some),
                    None => Ok(None),
                }
            })
            .collect()
    }
}

#[async_trait]
impl OnlineStore for RedbOnlineStore {
    async fn write(
        &self,
        scope: &OnlineScope,
        rows: Vec<(EntityKey, OnlineRow)>,
    ) -> Result<WriteCounts, FeatureError> {
        let db = self.db.clone();
        let scope = scope.clone();
        tokio::task::spawn_blocking(move || Self::write_blocking(&db, &scope, rows))
            .await
            .map_err(failed)?
    }

    async fn read(
        &self,
        scope: &OnlineScope,
        keys: &[EntityKey],
    ) -> Result<Vec<Option<OnlineRow>>, FeatureError> {
        if keys.len() <= MAX_INLINE_READ_KEYS {
            return Self::read_blocking(&self.db, scope, keys);
        }
        let db = self.db.clone();
        let scope = scope.clone();
        let keys = keys.to_vec();
        tokio::task::spawn_blocking(move || Self::read_blocking(&db, &scope, &keys))
            .await
            .map_err(failed)?
    }

    fn backend(&self) -> &'static str {
        BACKEND
    }
}
