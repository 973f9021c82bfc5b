//! Cache of loaded models with single-flight loading, retries of transient load failures
//! after a backoff, and LRU eviction.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::watch;

use crate::{LoadedModel, RuntimeError, RuntimeOptions};

/// Identity of a cache entry: one model version of one project, loaded with one set of options.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModelKey {
    pub tenant: String,
    pub project: String,
    pub model: String,
    pub version: i64,
    pub options: RuntimeOptions,
}

/// Waiting time before a transient load failure is retried: `initial` after the first
/// failure, doubling with each further consecutive failure, at most `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryBackoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for RetryBackoff {
    /// 1 s doubling to at most 60 s.
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

impl RetryBackoff {
    /// Returns the wait after `failures` consecutive transient failures (at least 1).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.initial
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// State of a cache entry, which the serving layer reports as "not ready" while a model loads.
#[derive(Clone, Debug)]
pub enum ModelState {
    /// A load is running; the instant is when it started.
    Loading {
        since: Instant,
    },
    Ready(LoadedModel),
    /// The load failed permanently ([`RuntimeError::is_transient`] is false: the files are
    /// bad or failed verification). It is kept until [`ModelCache::invalidate`].
    Failed(RuntimeError),
    /// The last `failures` loads failed with transient errors, the last with `error`. The
    /// first access at or after `retry_at` loads again; earlier accesses get `error`.
    Backoff {
        error: RuntimeError,
        failures: u32,
        retry_at: Instant,
    },
}

impl ModelState {
    /// Returns when a load is retried, for a state in [`ModelState::Backoff`].
    pub fn retry_at(&self) -> Option<Instant> {
        match self {
            Self::Backoff { retry_at, .. } => Some(*retry_at),
            _ => None,
        }
    }

    /// Returns how long from now until a load is retried, for a state in
    /// [`ModelState::Backoff`]; zero once that time has passed. A server sends it, rounded
    /// up to whole seconds, as `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_at()
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// Returns the error of a failed state, permanent or transient.
    pub fn error(&self) -> Option<&RuntimeError> {
        match self {
            Self::Failed(error) | Self::Backoff { error, .. } => Some(error),
            _ => None,
        }
    }
}

type LoadResult = Result<LoadedModel, RuntimeError>;

enum Slot {
    Loading {
        since: Instant,
        done: watch::Receiver<Option<LoadResult>>,
    },
    Ready(LoadedModel),
    Failed(RuntimeError),
    Backoff {
        error: RuntimeError,
        retry_at: Instant,
    },
}

struct Entry {
    slot: Slot,
    /// Value of [`Entries::clock`] at the last use or at the end of the last load, for LRU
    /// eviction.
    last_used: u64,
    /// Distinguishes an entry from one inserted for the same key after an invalidation, so a
    /// stale load does not overwrite it.
    generation: u64,
    /// Consecutive transient load failures, which set the backoff of the next retry.
    failures: u32,
}

impl Entry {
    fn state(&self) -> ModelState {
        match &self.slot {
            Slot::Loading { since, .. } => ModelState::Loading { since: *since },
            Slot::Ready(model) => ModelState::Ready(model.clone()),
            Slot::Failed(error) => ModelState::Failed(error.clone()),
            Slot::Backoff { error, retry_at } => ModelState::Backoff {
                error: error.clone(),
                failures: self.failures,
                retry_at: *retry_at,
            },
        }
    }

    /// Whether an access now starts a new load: a transient failure whose backoff is over.
    fn retry_due(&self, now: Instant) -> bool {
        matches!(&self.slot, Slot::Backoff { retry_at, .. } if now >= *retry_at)
    }
}

#[derive(Default)]
struct Entries {
    map: HashMap<ModelKey, Entry>,
    clock: u64,
    next_generation: u64,
}

/// Loaded models keyed by [`ModelKey`], at most `max_models` of them.
///
/// Concurrent requests for a key that is not cached share one load. Loads run in their own
/// tokio task, so a caller that stops waiting does not cancel a load others wait for.
///
/// A load that fails with a permanent error ([`RuntimeError::is_transient`] is false) is
/// remembered until [`ModelCache::invalidate`]. One that fails with a transient error enters
/// [`ModelState::Backoff`]: accesses before its `retry_at` get the error at once, and the
/// first access after it loads again. The wait follows the cache's [`RetryBackoff`].
///
/// When a load completes and more than `max_models` entries exist, failed entries (permanent
/// or in backoff) are evicted first, then the least recently used ready ones. Loading entries
/// and the entry whose load just completed are never evicted, so while many loads run the
/// cache can hold more than `max_models` entries.
#[derive(Clone)]
pub struct ModelCache {
    entries: Arc<Mutex<Entries>>,
    max_models: usize,
    backoff: RetryBackoff,
}

impl ModelCache {
    /// Creates a cache of at most `max_models` (at least 1) models with the default
    /// [`RetryBackoff`].
    pub fn new(max_models: usize) -> Self {
        Self::with_backoff(max_models, RetryBackoff::default())
    }

    /// Creates a cache of at most `max_models` (at least 1) models that retries transient
    /// load failures after `backoff`.
    pub fn with_backoff(max_models: usize, backoff: RetryBackoff) -> Self {
        Self {
            entries: Arc::new(Mutex::new(Entries::default())),
            max_models: max_models.max(1),
            backoff: RetryBackoff {
                initial: backoff.initial,
                max: backoff.max.max(backoff.initial),
            },
        }
    }

    pub fn max_models(&self) -> usize {
        self.max_models
    }

    pub fn backoff(&self) -> RetryBackoff {
        self.backoff
    }

    /// Returns the number of entries in any state.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the state of `key`, or `None` when it is not cached.
    pub fn state(&self, key: &ModelKey) -> Option<ModelState> {
        self.lock().map.get(key).map(Entry::state)
    }

    /// Returns how long from now until a failed load of `key` is retried: `Some` only while
    /// `key` is in [`ModelState::Backoff`].
    pub fn retry_after(&self, key: &ModelKey) -> Option<Duration> {
        self.state(key).and_then(|state| state.retry_after())
    }

    /// Returns the model of `key` when it is ready, and marks it as used.
    pub fn get_ready(&self, key: &ModelKey) -> Option<LoadedModel> {
        let mut entries = self.lock();
        entries.clock += 1;
        let clock = entries.clock;
        let entry = entries.map.get_mut(key)?;
        match &entry.slot {
            Slot::Ready(model) => {
                entry.last_used = clock;
                Some(model.clone())
            }
            _ => None,
        }
    }

    /// Starts loading `key` with `load` unless it is cached (or in backoff whose time has
    /// come), and returns its state without waiting. A serving layer calls this and returns
    /// "not ready" while the state is [`ModelState::Loading`], and 503 with `Retry-After` from
    /// [`ModelState::retry_after`] while it is [`ModelState::Backoff`].
    pub fn start_load<F, Fut>(&self, key: &ModelKey, load: F) -> ModelState
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = LoadResult> + Send + 'static,
    {
        let mut entries = self.lock();
        entries.clock += 1;
        let clock = entries.clock;
        let now = Instant::now();
        let mut failures = 0;
        if let Some(entry) = entries.map.get_mut(key) {
            entry.last_used = clock;
            if !entry.retry_due(now) {
                return entry.state();
            }
            failures = entry.failures;
        }
        self.spawn_load(&mut entries, key, load(), now, failures);
        ModelState::Loading { since: now }
    }

    /// Returns the model of `key`, loading it with `load` when it is not cached and waiting
    /// for a load in progress. A permanent failure is returned without loading again; so is
    /// a transient one until its backoff is over, after which this call loads again.
    pub async fn get_or_load<F, Fut>(&self, key: &ModelKey, load: F) -> LoadResult
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = LoadResult> + Send + 'static,
    {
        let mut done = {
            let mut entries = self.lock();
            entries.clock += 1;
            let clock = entries.clock;
            let now = Instant::now();
            let mut failures = 0;
            let existing = match entries.map.get_mut(key) {
                Some(entry) => {
                    entry.last_used = clock;
                    failures = entry.failures;
                    match &entry.slot {
                        _ if entry.retry_due(now) => None,
                        Slot::Ready(model) => return Ok(model.clone()),
                        Slot::Failed(error) | Slot::Backoff { error, .. } => {
                            return Err(error.clone());
                        }
                        Slot::Loading { done, .. } => Some(done.clone()),
                    }
                }
                None => None,
            };
            match existing {
                Some(done) => done,
                None => self.spawn_load(&mut entries, key, load(), now, failures),
            }
        };
        match done.wait_for(Option::is_some).await {
            Ok(result) => result.clone().unwrap_or_else(|| {
                Err(RuntimeError::Internal(
                    "the model load ended without a result".into(),
                ))
            }),
            Err(_) => Err(RuntimeError::Internal(
                "the model load task ended without a result".into(),
            )),
        }
    }

    /// Removes `key` in any state, so the next request loads it again. A load in progress
    /// keeps running, but its result is discarded. Returns whether an entry was removed.
    pub fn invalidate(&self, key: &ModelKey) -> bool {
        self.lock().map.remove(key).is_some()
    }

    /// Removes every entry whose key matches `predicate`, such as all versions of one model.
    /// Returns the number removed.
    pub fn invalidate_matching(&self, predicate: impl Fn(&ModelKey) -> bool) -> usize {
        let mut entries = self.lock();
        let before = entries.map.len();
        entries.map.retain(|key, _| !predicate(key));
        before - entries.map.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Inserts a loading entry for `key`, which has failed `failures` times in a row so far,
    /// and spawns the task that runs `load`.
    fn spawn_load(
        &self,
        entries: &mut Entries,
        key: &ModelKey,
        load: impl Future<Output = LoadResult> + Send + 'static,
        since: Instant,
        failures: u32,
    ) -> watch::Receiver<Option<LoadResult>> {
        let (sender, receiver) = watch::channel(None);
        entries.next_generation += 1;
        let generation = entries.next_generation;
        let last_used = entries.clock;
        entries.map.insert(
            key.clone(),
            Entry {
                slot: Slot::Loading {
                    since,
                    done: receiver.clone(),
                },
                last_used,
                generation,
                failures,
            },
        );

        let cache = self.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let result = match AssertUnwindSafe(load).catch_unwind().await {
                Ok(result) => result,
                Err(_) => Err(RuntimeError::Internal("the model load panicked".into())),
            };
            cache.complete(&key, generation, &result);
            // Waiters hold receivers; none waiting is fine.
            let _ = sender.send(Some(result));
        });
        receiver
    }

    fn complete(&self, key: &ModelKey, generation: u64, result: &LoadResult) {
        let mut entries = self.lock();
        entries.clock += 1;
        let clock = entries.clock;
        let Some(entry) = entries.map.get_mut(key) else {
            return;
        };
        if entry.generation != generation {
            return;
        }
        // A client polling through `start_load` sees the model as just used, so it is not
        // the next eviction victim.
        entry.last_used = clock;
        entry.slot = match result {
            Ok(model) => {
                entry.failures = 0;
                Slot::Ready(model.clone())
            }
            Err(error) if error.is_transient() => {
                entry.failures = entry.failures.saturating_add(1);
                let delay = self.backoff.delay(entry.failures);
                tracing::warn!(
                    tenant = %key.tenant,
                    project = %key.project,
                    model = %key.model,
                    version = key.version,
                    failures = entry.failures,
                    retry_in_ms = delay.as_millis() as u64,
                    %error,
                    "model load failed; it is retried after the backoff"
                );
                Slot::Backoff {
                    error: error.clone(),
                    retry_at: Instant::now() + delay,
                }
            }
            Err(error) => {
                tracing::warn!(
                    tenant = %key.tenant,
                    project = %key.project,
                    model = %key.model,
                    version = key.version,
                    %error,
                    "model load failed; it is not retried until the model is invalidated"
                );
                entry.failures = 0;
                Slot::Failed(error.clone())
            }
        };
        self.evict(&mut entries, key);
    }

    /// Evicts entries until at most `max_models` remain: failed ones (permanent or in
    /// backoff) first, then the least recently used ready ones. Loading entries and `keep`,
    /// whose load just completed, are never evicted.
    fn evict(&self, entries: &mut Entries, keep: &ModelKey) {
        while entries.map.len() > self.max_models {
            let victim = entries
                .map
                .iter()
                .filter(|(key, _)| *key != keep)
                .filter_map(|(key, entry)| {
                    let rank = match entry.slot {
                        Slot::Failed(_) | Slot::Backoff { .. } => 0,
                        Slot::Ready(_) => 1,
                        Slot::Loading { .. } => return None,
                    };
                    Some(((rank, entry.last_used), key))
                })
                .min_by_key(|(order, _)| *order)
                .map(|(_, key)| key.clone());
            let Some(victim) = victim else {
                return;
            };
            tracing::debug!(
                tenant = %victim.tenant,
                project = %victim.project,
                model = %victim.model,
                version = victim.version,
                "evicted model from the cache"
            );
            entries.map.remove(&victim);
        }
    }
}
