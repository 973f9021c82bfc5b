//! The embedded online store on redb: one file under the data directory, with one table
//! per view version named after its [`OnlineScope`]. A table maps the encoded entity key to
//! the row in the binary encoding of [`super::codec`]. Each write batch is one redb write
//! transaction, so the newer-wins check and the insert of a key happen together.
//!
//! Keys within a table contain only the entity key, so lookups compare short keys. Files
//! written before this layout kept every row in one table, `online_rows`, under the full
//! storage key ([`OnlineScope::key`]). Opening such a file moves its rows into the tables of
//! their scopes in one transaction and drops the old table.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableError, TableHandle};

use super::codec;
use super::{
    EntityKey, OnlineRow, OnlineScope, OnlineStore, PickedRow, Warmed, WriteCounts, backend_error,
};
use crate::FeatureError;

/// The single table of files written before rows were kept per view version.
const LEGACY_ROWS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("online_rows");
/// Prefix of the name of every scope's table.
const TABLE_PREFIX: &str = "rows/";
const BACKEND: &str = "redb";

/// Maximum number of keys a read looks up on the calling task instead of the blocking pool.
/// A hand-off to the pool wakes a pool thread and then the task again. Each key costs a
/// B-tree lookup in redb's page cache and the decode of a few hundred bytes, so a batch of
/// this size stays short enough to run between two awaits.
const MAX_INLINE_READ_KEYS: usize = 128;

/// Online store in a redb file.
#[derive(Clone)]
pub struct RedbOnlineStore {
    db: Arc<redb::Database>,
}

fn failed(error: impl std::fmt::Display) -> FeatureError {
    backend_error(BACKEND)(&error)
}

/// Returns the name of the table of `scope`: `rows/` and the scope part of its storage keys.
fn table_name(scope: &OnlineScope) -> String {
    format!(
        "{TABLE_PREFIX}{}/{}/{}@v{}",
        scope.tenant.as_str(),
        scope.project.as_str(),
        scope.view,
        scope.version
    )
}

/// Counts of a conversion from the single legacy table.
#[derive(Debug, Default)]
struct Converted {
    /// Rows moved into their scope's table.
    moved: u64,
    /// Rows dropped because the scope's table had a newer row for the key.
    older: u64,
    /// Entries dropped because their key or row could not be read.
    unreadable: u64,
}

/// Splits a legacy storage key `tenant/project/view@vN/{entity}` into the scope part
/// (without the last `/`) and the encoded entity key. Tenant and view names are validated
/// names and project ids are UUIDs, none of which contains `{`, and the encoded entity key
/// is a JSON object, which starts with one.
fn split_legacy_key(key: &[u8]) -> Option<(&str, &[u8])> {
    let split = key.iter().position(|&b| b == b'{')?;
    let scope = std::str::from_utf8(&key[..split]).ok()?.strip_suffix('/')?;
    (!scope.is_empty()).then_some((scope, &key[split..]))
}

/// A scope's table in a write transaction.
type RowTable<'txn> = redb::Table<'txn, &'static [u8], &'static [u8]>;

/// Returns the definition of the table named `name`: encoded entity key to encoded row.
fn rows_table(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

impl RedbOnlineStore {
    /// Opens or creates the store file at `path`, creating its directory. A file in the
    /// layout with one table for all rows is converted first.
    pub fn open(path: &Path) -> Result<Self, FeatureError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut db = redb::Database::create(path).map_err(|error| {
            FeatureError::Online(format!(
                "cannot open the online store {}: {error}",
                path.display()
            ))
        })?;
        if let Some(converted) = Self::convert_legacy(&db, path)? {
            tracing::info!(
                path = %path.display(),
                moved = converted.moved,
                dropped_older = converted.older,
                skipped_unreadable = converted.unreadable,
                "converted the online store to one table per view version"
            );
            // The old table's pages are free now; compaction returns them to the file system.
            if let Err(error) = db.compact(redb::CompactionMode::Balanced) {
                tracing::warn!(
                    path = %path.display(),
                    %error,
                    "failed to compact the online store after converting it"
                );
            }
        }
        Ok(Self { db: Arc::new(db) })
    }

    /// Moves the rows of the single legacy table into the tables of their scopes and drops
    /// it, in one transaction. Returns `None` when the file has no legacy table. A legacy
    /// row older than the row already in its scope's table is dropped. An entry that cannot
    /// be read is logged and dropped, so one damaged row does not keep the server from
    /// starting.
    ///
    /// An older build reads only the legacy table, so after a downgrade the online store
    /// looks empty until the views are materialised again.
    fn convert_legacy(db: &redb::Database, path: &Path) -> Result<Option<Converted>, FeatureError> {
        let read = db.begin_read().map_err(failed)?;
        match read.open_table(LEGACY_ROWS) {
            Ok(_) => {}
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(failed(error)),
        }
        drop(read);
        tracing::info!(
            path = %path.display(),
            "converting the online store to one table per view version"
        );
        let tx = db.begin_write().map_err(failed)?;
        let mut converted = Converted::default();
        {
            let legacy = tx.open_table(LEGACY_ROWS).map_err(failed)?;
            let mut current: Option<(String, RowTable<'_>)> = None;
            for entry in legacy.iter().map_err(failed)? {
                let (key, row) = entry.map_err(failed)?;
                let key = key.value();
                let row = row.value();
                let Some((scope, entity)) = split_legacy_key(key) else {
                    tracing::warn!(
                        path = %path.display(),
                        key = %String::from_utf8_lossy(key),
                        "dropping an online row whose key names no scope and entity"
                    );
                    converted.unreadable += 1;
                    continue;
                };
                let legacy_row = match codec::decode(row) {
                    Ok(legacy_row) => legacy_row,
                    Err(error) => {
                        tracing::warn!(
                            path = %path.display(),
                            key = %String::from_utf8_lossy(key),
                            %error,
                            "dropping an online row that cannot be decoded"
                        );
                        converted.unreadable += 1;
                        continue;
                    }
                };
                let name = format!("{TABLE_PREFIX}{scope}");
                // Keys are sorted, so the rows of one scope come together.
                if current.as_ref().is_none_or(|(open, _)| *open != name) {
                    let table = tx.open_table(rows_table(&name)).map_err(failed)?;
                    current = Some((name, table));
                }
                let (_, table) = current.as_mut().expect("the scope's table is open");
                // A scope's table already has rows when an older build ran on a converted
                // file. Newer-wins decides between the two, as for any write, and a stored
                // row that cannot be decoded is replaced.
                let older = match table.get(entity).map_err(failed)? {
                    Some(stored) => codec::decode(stored.value())
                        .is_ok_and(|stored| !legacy_row.supersedes(&stored)),
                    None => false,
                };
                if older {
                    converted.older += 1;
                } else {
                    table.insert(entity, row).map_err(failed)?;
                    converted.moved += 1;
                }
            }
        }
        tx.delete_table(LEGACY_ROWS).map_err(failed)?;
        tx.commit().map_err(failed)?;
        Ok(Some(converted))
    }

    /// Returns the names of the view version tables in the order [`OnlineStore::warm`]
    /// reads them. The newest version of each view comes first and older versions follow
    /// from the newest down. A budget smaller than the store therefore goes to the versions
    /// that reads use, unless a feature service pins an older one.
    ///
    /// NOTE: tables of deleted views, projects and tenants stay in the file and are warmed
    /// like live ones, because the store does not know which views still exist.
    fn tables_to_warm(tx: &redb::ReadTransaction) -> Result<Vec<String>, FeatureError> {
        let mut tables: Vec<(String, String, i64)> = tx
            .list_tables()
            .map_err(failed)?
            .filter(|handle| handle.name().starts_with(TABLE_PREFIX))
            .map(|handle| {
                let name = handle.name().to_owned();
                let (view, version) = match name.rsplit_once("@v") {
                    Some((view, version)) => (view.to_owned(), version.parse().unwrap_or(0)),
                    None => (name.clone(), 0),
                };
                (name, view, version)
            })
            .collect();
        let mut newest: std::collections::HashMap<String, i64> = Default::default();
        for (_, view, version) in &tables {
            let entry = newest.entry(view.clone()).or_insert(*version);
            *entry = (*entry).max(*version);
        }
        let order = |(name, view, version): &(String, String, i64)| {
            (
                newest[view] != *version,
                std::cmp::Reverse(*version),
                name.clone(),
            )
        };
        tables.sort_by_cached_key(order);
        Ok(tables.into_iter().map(|(name, _, _)| name).collect())
    }

    fn write_blocking(
        db: &redb::Database,
        scope: &OnlineScope,
        rows: Vec<(EntityKey, OnlineRow)>,
    ) -> Result<WriteCounts, FeatureError> {
        let mut counts = WriteCounts::default();
        let name = table_name(scope);
        let tx = db.begin_write().map_err(failed)?;
        {
            let mut table = tx.open_table(rows_table(&name)).map_err(failed)?;
            let mut key = Vec::with_capacity(64);
            let mut bytes = Vec::with_capacity(512);
            for (entity, row) in rows {
                key.clear();
                entity.encode_into(&mut key);
                let stored = match table.get(key.as_slice()).map_err(failed)? {
                    Some(guard) => Some(codec::decode(guard.value())?),
                    None => None,
                };
                if stored
                    .as_ref()
                    .is_some_and(|stored| !row.supersedes(stored))
                {
                    counts.skipped += 1;
                    continue;
                }
                bytes.clear();
                codec::encode_into(&row, &mut bytes)?;
                table
                    .insert(key.as_slice(), bytes.as_slice())
                    .map_err(failed)?;
                counts.written += 1;
            }
        }
        tx.commit().map_err(failed)?;
        Ok(counts)
    }

    /// Looks up `keys` in the table of `scope` and decodes each row found with `decode`.
    fn read_blocking<T>(
        db: &redb::Database,
        scope: &OnlineScope,
        keys: &[EntityKey],
        mut decode: impl FnMut(&[u8]) -> Result<T, FeatureError>,
    ) -> Result<Vec<Option<T>>, FeatureError> {
        let name = table_name(scope);
        let tx = db.begin_read().map_err(failed)?;
        let table = match tx.open_table(rows_table(&name)) {
            Ok(table) => table,
            // Nothing was ever written for this view version.
            Err(TableError::TableDoesNotExist(_)) => {
                return Ok(keys.iter().map(|_| None).collect());
            }
            Err(error) => return Err(failed(error)),
        };
        let mut key = Vec::with_capacity(64);
        keys.iter()
            .map(|entity| {
                key.clear();
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
            return Self::read_blocking(&self.db, scope, keys, codec::decode);
        }
        let db = self.db.clone();
        let scope = scope.clone();
        let keys = keys.to_vec();
        tokio::task::spawn_blocking(move || Self::read_blocking(&db, &scope, &keys, codec::decode))
            .await
            .map_err(failed)?
    }

    async fn read_features(
        &self,
        scope: &OnlineScope,
        keys: &[EntityKey],
        features: &[&str],
    ) -> Result<Vec<Option<PickedRow>>, FeatureError> {
        if keys.len() <= MAX_INLINE_READ_KEYS {
            let mut picker = codec::Picker::new(features);
            return Self::read_blocking(&self.db, scope, keys, |bytes| picker.decode(bytes));
        }
        let db = self.db.clone();
        let scope = scope.clone();
        let keys = keys.to_vec();
        let features: Vec<String> = features.iter().map(|&f| f.to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            let features: Vec<&str> = features.iter().map(String::as_str).collect();
            let mut picker = codec::Picker::new(&features);
            Self::read_blocking(&db, &scope, &keys, |bytes| picker.decode(bytes))
        })
        .await
        .map_err(failed)?
    }

    fn warm(&self, max_bytes: u64) -> Result<Warmed, FeatureError> {
        let mut warmed = Warmed::default();
        if max_bytes == 0 {
            return Ok(warmed);
        }
        let tx = self.db.begin_read().map_err(failed)?;
        for name in Self::tables_to_warm(&tx)? {
            let table = tx.open_table(rows_table(&name)).map_err(failed)?;
            warmed.tables += 1;
            for entry in table.iter().map_err(failed)? {
                let (key, row) = entry.map_err(failed)?;
                warmed.rows += 1;
                warmed.bytes += (key.value().len() + row.value().len()) as u64;
                if warmed.bytes >= max_bytes {
                    return Ok(warmed);
                }
            }
        }
        Ok(warmed)
    }

    fn backend(&self) -> &'static str {
        BACKEND
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ghaf_core::{Name, ProjectId, TenantId};
    use serde_json::json;

    fn scope(view: &str, version: i64) -> OnlineScope {
        OnlineScope {
            tenant: TenantId::new(Name::parse("acme").unwrap()),
            project: ProjectId::from_stored("p1"),
            view: view.to_owned(),
            version,
        }
    }

    fn entity(id: i64) -> EntityKey {
        EntityKey::new([("driver_id".to_owned(), super::super::KeyValue::Int(id))])
    }

    fn row(event: i64, rate: f64) -> OnlineRow {
        OnlineRow {
            event_micros: event,
            created_micros: i64::MIN,
            values: [("rate".to_owned(), json!(rate))].into(),
        }
    }

    /// A file with the single JSON table opens with its rows moved into their scopes'
    /// tables. Newer-wins still guards them, also against rows already in the new layout.
    #[tokio::test]
    async fn legacy_single_table_is_converted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("online.redb");
        {
            let db = redb::Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let mut table = tx.open_table(LEGACY_ROWS).unwrap();
                for (scope, id, event, rate) in [
                    (scope("trips", 1), 1, 10, 1.5),
                    (scope("trips", 1), 2, 10, 2.5),
                    (scope("trips", 2), 1, 20, 9.0),
                    (scope("trips", 2), 2, 20, 8.0),
                ] {
                    let key = scope.key(&entity(id));
                    let json = serde_json::to_vec(&row(event, rate)).unwrap();
                    table.insert(key.as_slice(), json.as_slice()).unwrap();
                }
                // Entries that cannot be read: a key without an entity part, and a row
                // that is no JSON object.
                table
                    .insert(b"acme/p1/trips@v1/".as_slice(), b"{}".as_slice())
                    .unwrap();
                let damaged = scope("trips", 1).key(&entity(9));
                table
                    .insert(damaged.as_slice(), b"{\"e\":".as_slice())
                    .unwrap();

                // Rows already in the new layout, as an older build leaves them after
                // running on a converted file: one newer and one older than the legacy row.
                let mut existing = tx
                    .open_table(rows_table(&table_name(&scope("trips", 2))))
                    .unwrap();
                for (id, event, rate) in [(1, 30, 4.0), (2, 5, 7.0)] {
                    let mut bytes = Vec::new();
                    codec::encode_into(&row(event, rate), &mut bytes).unwrap();
                    existing
                        .insert(entity(id).encode().as_slice(), bytes.as_slice())
                        .unwrap();
                }
            }
            tx.commit().unwrap();
        }

        let db = redb::Database::create(&path).unwrap();
        let converted = RedbOnlineStore::convert_legacy(&db, &path)
            .unwrap()
            .unwrap();
        assert_eq!(converted.moved, 3);
        assert_eq!(converted.older, 1);
        assert_eq!(converted.unreadable, 2);
        drop(db);

        let store = RedbOnlineStore::open(&path).unwrap();
        let v1 = store
            .read(&scope("trips", 1), &[entity(1), entity(2), entity(9)])
            .await
            .unwrap();
        assert_eq!(v1, vec![Some(row(10, 1.5)), Some(row(10, 2.5)), None]);
        let v2 = store
            .read(&scope("trips", 2), &[entity(1), entity(2)])
            .await
            .unwrap();
        assert_eq!(v2, vec![Some(row(30, 4.0)), Some(row(20, 8.0))]);

        // Moved rows are still JSON, and a read of chosen features decodes them too.
        let picked = store
            .read_features(&scope("trips", 1), &[entity(2)], &["rate", "absent"])
            .await
            .unwrap();
        let picked = picked[0].as_ref().unwrap();
        assert_eq!(picked.values, vec![Some(json!(2.5)), None]);
        assert_eq!(picked.event_micros, 10);

        let counts = store
            .write(&scope("trips", 1), vec![(entity(1), row(5, 0.0))])
            .await
            .unwrap();
        assert_eq!((counts.written, counts.skipped), (0, 1));

        let tx = store.db.begin_read().unwrap();
        assert!(matches!(
            tx.open_table(LEGACY_ROWS),
            Err(TableError::TableDoesNotExist(_))
        ));
        drop(tx);
        drop(store);

        // A second open finds nothing left to convert.
        let db = redb::Database::create(&path).unwrap();
        assert!(
            RedbOnlineStore::convert_legacy(&db, &path)
                .unwrap()
                .is_none()
        );
        drop(db);
        let store = RedbOnlineStore::open(&path).unwrap();
        let again = store.read(&scope("trips", 2), &[entity(1)]).await.unwrap();
        assert_eq!(again, vec![Some(row(30, 4.0))]);
    }

    #[test]
    fn legacy_keys_split_at_the_entity() {
        let key = scope("trips", 3).key(&entity(7));
        let (scope_part, entity_part) = split_legacy_key(&key).unwrap();
        assert_eq!(scope_part, "acme/p1/trips@v3");
        assert_eq!(entity_part, br#"{"driver_id":7}"#);
        assert_eq!(
            format!("{TABLE_PREFIX}{scope_part}"),
            table_name(&scope("trips", 3))
        );
        assert!(split_legacy_key(b"acme/p1/trips@v3/").is_none());
        assert!(split_legacy_key(br#"{"driver_id":7}"#).is_none());
        assert!(split_legacy_key(b"no-slash{}").is_none());
    }

    #[tokio::test]
    async fn unknown_scope_reads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbOnlineStore::open(&dir.path().join("online.redb")).unwrap();
        let rows = store
            .read(&scope("never", 1), &[entity(1), entity(2)])
            .await
            .unwrap();
        assert_eq!(rows, vec![None, None]);
    }

    /// The warm-up reads the view version tables, newest version first, stops once its
    /// byte budget is used, and skips tables that contain no view version's rows.
    #[tokio::test]
    async fn warm_reads_tables_up_to_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("online.redb");
        {
            let db = redb::Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(TableDefinition::<&str, &str>::new("other"))
                .unwrap()
                .insert("key", "value")
                .unwrap();
            tx.commit().unwrap();
        }
        let store = RedbOnlineStore::open(&path).unwrap();
        assert_eq!(store.warm(1 << 30).unwrap(), Warmed::default());
        // Version 10 of `trips` has rows of another size, so the bytes of a one-row warm-up
        // show which table it read.
        let wide = |id: i64| OnlineRow {
            event_micros: 10,
            created_micros: i64::MIN,
            values: [
                ("rate".to_owned(), json!(id as f64)),
                ("label".to_owned(), json!("a longer value")),
            ]
            .into(),
        };
        let tables = [
            (scope("trips", 2), false),
            (scope("trips", 10), true),
            (scope("clicks", 1), false),
        ];
        let mut encoded_bytes = 0;
        // Encoded key and length of key plus row, for the rows of version 10.
        let mut wide_rows = Vec::new();
        for (scope, is_wide) in &tables {
            let rows: Vec<_> = (1..=50)
                .map(|id| {
                    let row = if *is_wide {
                        wide(id)
                    } else {
                        row(10, id as f64)
                    };
                    (entity(id), row)
                })
                .collect();
            for (key, row) in &rows {
                let mut bytes = Vec::new();
                key.encode_into(&mut bytes);
                let key_len = bytes.len();
                codec::encode_into(row, &mut bytes).unwrap();
                encoded_bytes += bytes.len() as u64;
                if *is_wide {
                    wide_rows.push((bytes[..key_len].to_vec(), bytes.len() as u64));
                }
            }
            store.write(scope, rows).await.unwrap();
        }
        // redb iterates a table in key order.
        let first_wide_row_bytes = wide_rows.iter().min().unwrap().1;

        let all = store.warm(1 << 30).unwrap();
        assert_eq!(all.tables, 3);
        assert_eq!(all.rows, 150);
        assert_eq!(all.bytes, encoded_bytes);
        let tx = store.db.begin_read().unwrap();
        let order = RedbOnlineStore::tables_to_warm(&tx).unwrap();
        assert_eq!(
            order,
            vec![
                table_name(&scope("trips", 10)),
                table_name(&scope("clicks", 1)),
                table_name(&scope("trips", 2)),
            ]
        );
        // A budget of one byte stops after the first row of the newest version.
        let first_row = store.warm(1).unwrap();
        assert_eq!(first_row.tables, 1);
        assert_eq!(first_row.rows, 1);
        assert_eq!(first_row.bytes, first_wide_row_bytes);
        assert_eq!(store.warm(0).unwrap(), Warmed::default());

        let read = store.read(&scope("trips", 2), &[entity(7)]).await.unwrap();
        assert_eq!(read, vec![Some(row(10, 7.0))]);
    }
}
