//! The online store on Redis: one hash per key with the fields `e` (event time), `c`
//! (created time) and `v` (the JSON values). A Lua script compares and writes in one step,
//! so concurrent writers cannot interleave between the check and the write.

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;

use super::{EntityKey, OnlineRow, OnlineScope, OnlineStore, WriteCounts, backend_error};
use crate::FeatureError;

const BACKEND: &str = "redis";

/// Rows per pipelined round trip.
const PIPELINE_ROWS: usize = 1_000;

/// Writes ARGV[3] unless the stored (e, c) pair is greater than (ARGV[1], ARGV[2]). Lua
/// numbers are doubles, exact for microsecond times up to about the year 2255.
const WRITE_SCRIPT: &str = r"
local stored = redis.call('HMGET', KEYS[1], 'e', 'c')
if stored[1] then
  local e, c = tonumber(stored[1]), tonumber(stored[2])
  local ne, nc = tonumber(ARGV[1]), tonumber(ARGV[2])
  if ne < e or (ne == e and nc < c) then
    return 0
  end
end
redis.call('HSET', KEYS[1], 'e', ARGV[1], 'c', ARGV[2], 'v', ARGV[3])
return 1
";

/// Online store on a Redis server.
#[derive(Clone)]
pub struct RedisOnlineStore {
    connection: MultiplexedConnection,
    prefix: String,
    script: redis::Script,
}

fn failed(error: impl std::fmt::Display) -> FeatureError {
    backend_error(BACKEND)(&error)
}

impl RedisOnlineStore {
    /// Connects to `url` (such as `redis://127.0.0.1:6379/0`). Every key starts with
    /// `prefix`, so several deployments or tests can share one server.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, FeatureError> {
        let client = redis::Client::open(url)
            .map_err(|error| FeatureError::Online(format!("invalid Redis URL {url:?}: {error}")))?;
        let connection = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|error| {
                FeatureError::Online(format!("cannot connect to Redis at {url}: {error}"))
            })?;
        let script = redis::Script::new(WRITE_SCRIPT);
        let mut loader = connection.clone();
        script
            .prepare_invoke()
            .load_async(&mut loader)
            .await
            .map_err(failed)?;
        Ok(Self {
            connection,
            prefix: prefix.to_owned(),
            script,
        })
    }

    fn key(&self, scope: &OnlineScope, entity: &EntityKey) -> Vec<u8> {
        let mut key = self.prefix.as_bytes().to_vec();
        key.extend_from_slice(&scope.key(entity));
        key
    }
}

#[async_trait]
impl OnlineStore for RedisOnlineStore {
    async fn write(
        &self,
        scope: &OnlineScope,
        rows: Vec<(EntityKey, OnlineRow)>,
    ) -> Result<WriteCounts, FeatureError> {
        let mut counts = WriteCounts::default();
        let mut connection = self.connection.clone();
        for chunk in rows.chunks(PIPELINE_ROWS) {
            let mut pipe = redis::pipe();
            for (entity, row) in chunk {
                let values = serde_json::to_string(&row.values).unwrap_or_default();
                pipe.cmd("EVALSHA")
                    .arg(self.script.get_hash())
                    .arg(1)
                    .arg(self.key(scope, entity))
                    .arg(row.event_micros)
                    .arg(row.created_micros)
                    .arg(values);
            }
            let results: Vec<i64> = match pipe.query_async(&mut connection).await {
                Ok(results) => results,
                Err(error)
                    if error.kind()
                        == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    // The server lost its script cache (restart or SCRIPT FLUSH): load again
                    // and retry once; the script is idempotent per row.
                    self.script
                        .prepare_invoke()
                        .load_async(&mut connection)
                        .await
                        .map_err(failed)?;
                    pipe.query_async(&mut connection).await.map_err(failed)?
                }
                Err(error) => return Err(failed(error)),
            };
            for result in results {
                if result == 1 {
                    counts.written += 1;
                } else {
                    counts.skipped += 1;
                }
            }
        }
        Ok(counts)
    }

    async fn read(
        &self,
        scope: &OnlineScope,
        keys: &[EntityKey],
    ) -> Result<Vec<Option<OnlineRow>>, FeatureError> {
        let mut connection = self.connection.clone();
        let mut rows = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(PIPELINE_ROWS) {
            let mut pipe = redis::pipe();
            for entity in chunk {
                pipe.cmd("HMGET")
                    .arg(self.key(scope, entity))
                    .arg("e")
                    .arg("c")
                    .arg("v");
            }
            let results: Vec<(Option<i64>, Option<i64>, Option<String>)> =
                pipe.query_async(&mut connection).await.map_err(failed)?;
            for (event, created, values) in results {
                let row = match (event, created, values) {
                    (Some(event_micros), Some(created_micros), Some(values)) => Some(OnlineRow {
                        event_micros,
                        created_micros,
                        values: serde_json::from_str(&values).map_err(|error| {
                            FeatureError::Corrupt {
                                what: "online row",
                                message: error.to_string(),
                            }
                        })?,
                    }),
                    _ => None,
                };
                rows.push(row);
            }
        }
        Ok(rows)
    }

    fn backend(&self) -> &'static str {
        BACKEND
    }
}
