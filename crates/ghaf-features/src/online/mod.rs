//! The online store: the latest feature row per entity key of each view version, for
//! low-latency reads.
//!
//! Every row is stored under its scope (tenant, project, view and view version) and its
//! entity key with the join-key names sorted. A write replaces the stored row only when it
//! is not older by (event time, created time), so a late or replayed write never overwrites
//! a newer one. An equal pair overwrites, which makes replaying the same run idempotent.
//! The TTL is applied on read: a value older than `now - ttl` comes back as
//! `OUTSIDE_MAX_AGE`.

mod cache;
mod codec;
mod embedded;
mod redis_store;

use std::collections::BTreeMap;

use async_trait::async_trait;
use ghaf_core::{ProjectId, TenantId};
use serde::{Deserialize, Serialize};

pub use cache::{DEFINITION_CACHE_TTL, DefinitionCache, OnlineView};
pub use embedded::RedbOnlineStore;
pub use redis_store::RedisOnlineStore;

use crate::FeatureError;

/// Names the key space of one view version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnlineScope {
    pub tenant: TenantId,
    pub project: ProjectId,
    pub view: String,
    pub version: i64,
}

impl OnlineScope {
    /// Returns the storage key of an entity key in a store with one key space for all
    /// scopes (Redis): the scope as `tenant/project/view@vN/`, then the key's encoded bytes.
    pub fn key(&self, entity: &EntityKey) -> Vec<u8> {
        let mut key = format!(
            "{}/{}/{}@v{}/",
            self.tenant.as_str(),
            self.project.as_str(),
            self.view,
            self.version
        )
        .into_bytes();
        entity.encode_into(&mut key);
        key
    }
}

/// A join-key value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KeyValue {
    Int(i64),
    Text(String),
}

/// An entity key: join-key column names and values, sorted by name so that the encoding
/// does not depend on the order a request lists them in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntityKey(BTreeMap<String, KeyValue>);

impl EntityKey {
    pub fn new(parts: impl IntoIterator<Item = (String, KeyValue)>) -> Self {
        EntityKey(parts.into_iter().collect())
    }

    /// Returns the canonical encoding: JSON of the sorted (name, value) pairs.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the canonical encoding (see [`EntityKey::encode`]) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        // serde_json fails only on I/O errors, which a Vec never returns, and on map keys
        // that are not strings, which these are.
        let _ = serde_json::to_writer(out, &self.0);
    }
}

/// One stored feature row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OnlineRow {
    /// Event time in microseconds since the Unix epoch; `i64::MIN` for static rows.
    #[serde(rename = "e")]
    pub event_micros: i64,
    /// Created time in microseconds; `i64::MIN` when the view has none.
    #[serde(rename = "c")]
    pub created_micros: i64,
    /// Feature values by name, as JSON (numbers, strings, booleans, RFC 3339 times, null).
    #[serde(rename = "v")]
    pub values: BTreeMap<String, serde_json::Value>,
}

impl OnlineRow {
    /// Returns whether this row may replace `stored`: true unless it is older by (event, created).
    pub fn supersedes(&self, stored: &OnlineRow) -> bool {
        (self.event_micros, self.created_micros) >= (stored.event_micros, stored.created_micros)
    }
}

/// The requested features of one stored row, in request order: what an online read needs
/// of a row, without decoding its other values.
#[derive(Clone, Debug, PartialEq)]
pub struct PickedRow {
    /// Event time in microseconds since the Unix epoch; `i64::MIN` for static rows.
    pub event_micros: i64,
    /// Created time in microseconds; `i64::MIN` when the view has none.
    pub created_micros: i64,
    /// One entry per requested feature; `None` where the row has no such value.
    pub values: Vec<Option<serde_json::Value>>,
}

impl PickedRow {
    /// Picks `features` from a whole row.
    pub fn pick(row: &OnlineRow, features: &[&str]) -> Self {
        PickedRow {
            event_micros: row.event_micros,
            created_micros: row.created_micros,
            values: features
                .iter()
                .map(|feature| row.values.get(*feature).cloned())
                .collect(),
        }
    }
}

/// Result of a batch write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteCounts {
    /// Rows stored, new or replacing an older row.
    pub written: u64,
    /// Rows left out because the stored row was newer.
    pub skipped: u64,
}

/// Storage of online feature rows. Implementations must apply the newer-wins rule of
/// [`OnlineRow::supersedes`] atomically per key.
#[async_trait]
pub trait OnlineStore: Send + Sync {
    /// Writes rows, each replacing the stored row of its key unless that one is newer.
    async fn write(
        &self,
        scope: &OnlineScope,
        rows: Vec<(EntityKey, OnlineRow)>,
    ) -> Result<WriteCounts, FeatureError>;

    /// Reads the stored rows of `keys`, in order; `None` for a key without a row.
    async fn read(
        &self,
        scope: &OnlineScope,
        keys: &[EntityKey],
    ) -> Result<Vec<Option<OnlineRow>>, FeatureError>;

    /// Reads `features` of the stored rows of `keys`, in order; `None` for a key without a
    /// row. The default reads whole rows and picks from them.
    async fn read_features(
        &self,
        scope: &OnlineScope,
        keys: &[EntityKey],
        features: &[&str],
    ) -> Result<Vec<Option<PickedRow>>, FeatureError> {
        let rows = self.read(scope, keys).await?;
        Ok(rows
            .iter()
            .map(|row| row.as_ref().map(|row| PickedRow::pick(row, features)))
            .collect())
    }

    /// Reads stored rows into the backend's cache in this process until about `max_bytes`
    /// of keys and rows are read, so the first reads after a start find them in memory.
    /// It blocks the calling thread, so call it from a blocking thread. The default reads
    /// nothing, for backends that keep no cache in this process.
    fn warm(&self, max_bytes: u64) -> Result<Warmed, FeatureError> {
        let _ = max_bytes;
        Ok(Warmed::default())
    }

    /// Name of the backend for logs and errors.
    fn backend(&self) -> &'static str;
}

/// Counts of the rows [`OnlineStore::warm`] read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Warmed {
    /// View version tables read, in whole or in part.
    pub tables: u64,
    /// Rows read.
    pub rows: u64,
    /// Bytes of the keys and rows read.
    pub bytes: u64,
}

/// Status of one returned value, named as in Feast's serving API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FieldStatus {
    Present,
    NullValue,
    NotFound,
    OutsideMaxAge,
}

/// One value read from the online store, with its status and event time.
#[derive(Clone, Debug, PartialEq)]
pub struct OnlineValue {
    pub value: serde_json::Value,
    pub status: FieldStatus,
    /// Event time of the row it came from; `None` when not found or static.
    pub event_micros: Option<i64>,
}

/// Resolves one feature of a stored row to a value and status. With a TTL, a row whose
/// event time is before `now - ttl` is `OUTSIDE_MAX_AGE` and its value is not returned.
pub fn resolve(
    row: Option<&OnlineRow>,
    feature: &str,
    ttl: Option<i64>,
    now_micros: i64,
) -> OnlineValue {
    match row {
        Some(row) => resolve_value(
            row.values.get(feature).cloned(),
            row.event_micros,
            ttl,
            now_micros,
        ),
        None => resolve_value(None, i64::MIN, ttl, now_micros),
    }
}

/// Resolves a value taken from a row with event time `event_micros`. `None` stands for a
/// value the row lacks or a row that was not found. The TTL applies as in [`resolve`].
pub fn resolve_value(
    value: Option<serde_json::Value>,
    event_micros: i64,
    ttl: Option<i64>,
    now_micros: i64,
) -> OnlineValue {
    let Some(value) = value else {
        return OnlineValue {
            value: serde_json::Value::Null,
            status: FieldStatus::NotFound,
            event_micros: None,
        };
    };
    let event = (event_micros != i64::MIN).then_some(event_micros);
    if let Some(ttl) = ttl
        && event_micros < now_micros.saturating_sub(ttl)
    {
        return OnlineValue {
            value: serde_json::Value::Null,
            status: FieldStatus::OutsideMaxAge,
            event_micros: event,
        };
    }
    let status = if value.is_null() {
        FieldStatus::NullValue
    } else {
        FieldStatus::Present
    };
    OnlineValue {
        value,
        status,
        event_micros: event,
    }
}

pub(crate) fn backend_error(
    backend: &'static str,
) -> impl Fn(&dyn std::fmt::Display) -> FeatureError {
    move |error| FeatureError::Online(format!("{backend}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ghaf_core::Name;

    #[test]
    fn key_sorts_join_key_names() {
        let a = EntityKey::new([
            ("origin".to_owned(), KeyValue::Text("JFK".to_owned())),
            ("carrier".to_owned(), KeyValue::Text("AA".to_owned())),
        ]);
        let b = EntityKey::new([
            ("carrier".to_owned(), KeyValue::Text("AA".to_owned())),
            ("origin".to_owned(), KeyValue::Text("JFK".to_owned())),
        ]);
        assert_eq!(a.encode(), b.encode());
        let scope = OnlineScope {
            tenant: TenantId::new(Name::parse("acme").unwrap()),
            project: ProjectId::from_stored("p1"),
            view: "weather".to_owned(),
            version: 2,
        };
        let key = String::from_utf8(scope.key(&a)).unwrap();
        assert_eq!(key, r#"acme/p1/weather@v2/{"carrier":"AA","origin":"JFK"}"#);
        assert_eq!(a.encode(), br#"{"carrier":"AA","origin":"JFK"}"#);
    }
}
