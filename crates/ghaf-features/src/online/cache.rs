//! In-memory copies of the definitions that online reads resolve on every request: view
//! versions with their TTL and join keys, and feature services.
//!
//! An online read would otherwise query the metadata database once per view and once per
//! feature service. Entries are dropped when this process applies definitions (see
//! [`DefinitionCache::invalidate`]) and are read again after [`DEFINITION_CACHE_TTL`], so a
//! change applied through another server on the same database is seen within that time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ghaf_core::{ProjectId, TenantId};

use crate::FeatureError;
use crate::definition::{Entity, FeatureServiceSpec, KeyType};
use crate::store::{FeatureDb, StoredView};

/// How long an entry is used before it is read from the database again. It bounds how long
/// a server keeps serving definitions that another server replaced.
pub const DEFINITION_CACHE_TTL: Duration = Duration::from_secs(2);

/// Maximum number of views, and of services, kept; a full map is emptied.
const CACHE_CAPACITY: usize = 10_000;

/// A view version as online reads use it.
#[derive(Debug)]
pub struct OnlineView {
    pub stored: StoredView,
    /// TTL in microseconds, applied on read; `None` when values never expire.
    pub ttl_micros: Option<i64>,
    /// Join-key column and type of each entity of the view, in the view's order.
    pub join_keys: Vec<(String, KeyType)>,
}

impl OnlineView {
    /// Builds the online form of `stored`: its recorded join keys, or for a version stored
    /// without them, the join keys of `current` entities.
    pub fn new(stored: StoredView, current: &[Entity]) -> Result<Self, FeatureError> {
        let ttl_micros = stored.spec.ttl_micros()?;
        let entities = stored.entities(current);
        let join_keys = stored
            .spec
            .entities
            .iter()
            .map(|name| {
                entities
                    .iter()
                    .find(|e| &e.name == name)
                    .map(|e| (e.join_key().to_owned(), e.value_type))
                    .ok_or_else(|| FeatureError::NotFound {
                        what: "entity",
                        name: name.clone(),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            stored,
            ttl_micros,
            join_keys,
        })
    }
}

/// A view name with its pinned version, or `None` for the latest version.
type ViewKey = (TenantId, ProjectId, String, Option<i64>);
type ServiceKey = (TenantId, ProjectId, String);

struct Entry<T> {
    value: Arc<T>,
    read_at: Instant,
}

#[derive(Default)]
struct Maps {
    /// Incremented by every invalidation, so that a database read that started before it is
    /// not stored after it.
    generation: u64,
    views: HashMap<ViewKey, Entry<OnlineView>>,
    services: HashMap<ServiceKey, Entry<FeatureServiceSpec>>,
}

/// Cache of resolved views and feature services for online reads.
pub struct DefinitionCache {
    ttl: Duration,
    maps: Mutex<Maps>,
}

impl Default for DefinitionCache {
    fn default() -> Self {
        Self::new(DEFINITION_CACHE_TTL)
    }
}

impl DefinitionCache {
    /// Creates an empty cache whose entries are used for `ttl` after they were read.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            maps: Mutex::new(Maps::default()),
        }
    }

    fn maps(&self) -> MutexGuard<'_, Maps> {
        self.maps
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Drops every entry. Call it after writing definitions, before the write is reported
    /// as done, so that the next read on this server uses the new definitions.
    pub fn invalidate(&self) {
        let mut maps = self.maps();
        maps.generation += 1;
        maps.views.clear();
        maps.services.clear();
    }

    /// Returns a view version (`None`: the latest), from the cache when it was read less
    /// than the TTL ago.
    pub async fn view(
        &self,
        db: &FeatureDb,
        tenant: &TenantId,
        project: &ProjectId,
        name: &str,
        version: Option<i64>,
    ) -> Result<Arc<OnlineView>, FeatureError> {
        let key = (tenant.clone(), project.clone(), name.to_owned(), version);
        let generation = {
            let maps = self.maps();
            if let Some(entry) = maps.views.get(&key)
                && entry.read_at.elapsed() < self.ttl
            {
                return Ok(entry.value.clone());
            }
            maps.generation
        };

        let read_at = Instant::now();
        let stored = db.get_view(tenant, project, name, version).await?;
        let current = if stored.join_keys.is_empty() {
            db.list_entities(tenant, project).await?
        } else {
            Vec::new()
        };
        let view = Arc::new(OnlineView::new(stored, &current)?);

        let mut maps = self.maps();
        if maps.generation == generation {
            if maps.views.len() >= CACHE_CAPACITY {
                maps.views.clear();
            }
            maps.views.insert(
                key,
                Entry {
                    value: view.clone(),
                    read_at,
                },
            );
        }
        Ok(view)
    }

    /// Returns a feature service, from the cache when it was read less than the TTL ago.
    pub async fn service(
        &self,
        db: &FeatureDb,
        tenant: &TenantId,
        project: &ProjectId,
        name: &str,
    ) -> Result<Arc<FeatureServiceSpec>, FeatureError> {
        let key = (tenant.clone(), project.clone(), name.to_owned());
        let generation = {
            let maps = self.maps();
            if let Some(entry) = maps.services.get(&key)
                && entry.read_at.elapsed() < self.ttl
            {
                return Ok(entry.value.clone());
            }
            maps.generation
        };

        let read_at = Instant::now();
        let service = Arc::new(db.get_service(tenant, project, name).await?);

        let mut maps = self.maps();
        if maps.generation == generation {
            if maps.services.len() >= CACHE_CAPACITY {
                maps.services.clear();
            }
            maps.services.insert(
                key,
                Entry {
                    value: service.clone(),
                    read_at,
                },
            );
        }
        Ok(service)
    }
}
