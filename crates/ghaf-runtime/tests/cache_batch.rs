//! The model cache (single-flight loads, states, remembered failures, LRU eviction) and the
//! adaptive batcher (batched results equal unbatched ones, the delay bound, mixed shapes).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use ghaf_runtime::{
    BatchOptions, Batcher, LoadedModel, ModelCache, ModelKey, ModelSignature, ModelState,
    NativePredictor, Predictor, RuntimeError, RuntimeOptions, Tensor, TensorData, load_model,
};
use ghaf_train::{Column, Dataset, GbdtParams, Model, train_gbdt};

fn model() -> Model {
    let rows = 300;
    let a: Vec<f64> = (0..rows).map(|i| (i as f64 * 0.21).sin()).collect();
    let b: Vec<f64> = (0..rows).map(|i| (i % 17) as f64).collect();
    let label: Vec<f64> = a
        .iter()
        .zip(&b)
        .map(|(x, y)| f64::from(x + y / 20.0 > 0.4))
        .collect();
    let data = Dataset::new(vec![Column::f64("a", a), Column::f64("b", b)], label).unwrap();
    let params = GbdtParams {
        n_estimators: 8,
        ..GbdtParams::default()
    };
    Model::Gbdt(train_gbdt(&data, None, &params).unwrap().model)
}

fn loaded_model() -> LoadedModel {
    let files = BTreeMap::from([("model.ghaf".to_string(), model().to_bytes())]);
    load_model(&files, &RuntimeOptions::default()).unwrap()
}

fn key(model: &str, version: i64) -> ModelKey {
    ModelKey {
        tenant: "acme".into(),
        project: "risk".into(),
        model: model.into(),
        version,
        options: RuntimeOptions::default(),
    }
}

/// A gate that loads and predictions wait on until the test opens it.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    changed: Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.changed.wait(open).unwrap();
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.changed.notify_all();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_gets_share_one_load() {
    let cache = ModelCache::new(4);
    let loads = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Gate::default());

    let mut tasks = Vec::new();
    for _ in 0..8 {
        let cache = cache.clone();
        let loads = loads.clone();
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_load(&key("m", 1), move || async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    tokio::task::spawn_blocking(move || gate.wait())
                        .await
                        .unwrap();
                    Ok(loaded_model())
                })
                .await
        }));
    }

    while loads.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    assert!(matches!(
        cache.state(&key("m", 1)),
        Some(ModelState::Loading { .. })
    ));

    gate.open();
    let mut predictors = Vec::new();
    for task in tasks {
        predictors.push(task.await.unwrap().unwrap().predictor);
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    for predictor in &predictors {
        assert!(Arc::ptr_eq(predictor, &predictors[0]));
    }
    assert!(matches!(
        cache.state(&key("m", 1)),
        Some(ModelState::Ready(_))
    ));
}

#[tokio::test]
async fn failure_is_remembered_until_invalidate() {
    let cache = ModelCache::new(4);
    let failed = cache
        .get_or_load(&key("m", 2), || async {
            Err(RuntimeError::Verification("digest mismatch".into()))
        })
        .await;
    assert!(matches!(failed, Err(RuntimeError::Verification(_))));
    assert!(matches!(
        cache.state(&key("m", 2)),
        Some(ModelState::Failed(RuntimeError::Verification(_)))
    ));

    let again = cache
        .get_or_load(&key("m", 2), || async { Ok(loaded_model()) })
        .await;
    assert!(
        matches!(again, Err(RuntimeError::Verification(_))),
        "{again:?}"
    );

    assert!(cache.invalidate(&key("m", 2)));
    assert!(cache.state(&key("m", 2)).is_none());
    let loaded = cache
        .get_or_load(&key("m", 2), || async { Ok(loaded_model()) })
        .await;
    assert!(loaded.is_ok());
}

#[tokio::test]
async fn start_load_returns_loading_then_ready() {
    let cache = ModelCache::new(4);
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let state = cache.start_load(&key("m", 3), || async move {
        released.await.unwrap();
        Ok(loaded_model())
    });
    assert!(matches!(state, ModelState::Loading { .. }));
    assert!(cache.get_ready(&key("m", 3)).is_none());
    release.send(()).unwrap();
    let model = cache
        .get_or_load(&key("m", 3), || async {
            panic!("a second load must not start")
        })
        .await
        .unwrap();
    assert!(cache.get_ready(&key("m", 3)).is_some());
    assert_eq!(model.model_file, "model.ghaf");
}

#[tokio::test]
async fn least_recently_used_is_evicted() {
    let cache = ModelCache::new(2);
    for version in [1, 2] {
        cache
            .get_or_load(&key("m", version), || async { Ok(loaded_model()) })
            .await
            .unwrap();
    }
    assert!(cache.get_ready(&key("m", 1)).is_some());
    cache
        .get_or_load(&key("m", 3), || async { Ok(loaded_model()) })
        .await
        .unwrap();
    assert_eq!(cache.len(), 2);
    assert!(cache.state(&key("m", 1)).is_some());
    assert!(
        cache.state(&key("m", 2)).is_none(),
        "version 2 was least recently used"
    );
    assert!(cache.state(&key("m", 3)).is_some());
}

/// A real native predictor that records the rows of every call and blocks its first call
/// on a gate.
struct Recording {
    inner: NativePredictor,
    calls: Mutex<Vec<i64>>,
    gate: Gate,
    entered: AtomicUsize,
}

impl Recording {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: NativePredictor::new(&model()).unwrap(),
            calls: Mutex::new(Vec::new()),
            gate: Gate::default(),
            entered: AtomicUsize::new(0),
        })
    }
}

impl Predictor for Recording {
    fn signature(&self) -> &ModelSignature {
        self.inner.signature()
    }

    fn predict(&self, inputs: &[Tensor], outputs: &[String]) -> Result<Vec<Tensor>, RuntimeError> {
        if self.entered.fetch_add(1, Ordering::SeqCst) == 0 {
            self.gate.wait();
        }
        let rows = inputs
            .first()
            .and_then(|t| t.shape.first().copied())
            .unwrap_or(0);
        self.calls.lock().unwrap().push(rows);
        self.inner.predict(inputs, outputs)
    }
}

fn request(seed: usize, rows: usize) -> Vec<Tensor> {
    let values: Vec<f64> = (0..rows * 2)
        .map(|i| ((seed * 31 + i) as f64 * 0.7).sin() * 3.0)
        .collect();
    vec![Tensor::new(
        "input",
        vec![rows as i64, 2],
        TensorData::Fp64(values),
    )]
}

async fn wait_for(condition: impl Fn() -> bool) {
    while !condition() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_requests_run_as_one_batch() {
    let recording = Recording::new();
    let reference = NativePredictor::new(&model()).unwrap();
    let batcher = Batcher::new(
        recording.clone(),
        BatchOptions {
            max_batch_rows: 100,
            // Long enough that only the end of the first run starts the queued batch.
            max_delay: Duration::from_secs(600),
        },
    );

    let first = {
        let batcher = batcher.clone();
        tokio::spawn(async move { batcher.predict(request(0, 2), Vec::new()).await })
    };
    wait_for(|| recording.entered.load(Ordering::SeqCst) == 1).await;
    let mut queued = Vec::new();
    for seed in 1..=5 {
        let batcher = batcher.clone();
        queued.push(tokio::spawn(async move {
            batcher.predict(request(seed, seed), Vec::new()).await
        }));
    }
    wait_for(|| batcher.queued() == 5).await;
    recording.gate.open();

    assert_eq!(
        first.await.unwrap().unwrap(),
        reference.predict(&request(0, 2), &[]).unwrap()
    );
    for (index, task) in queued.into_iter().enumerate() {
        let seed = index + 1;
        let batched = task.await.unwrap().unwrap();
        let alone = reference.predict(&request(seed, seed), &[]).unwrap();
        assert_eq!(batched, alone, "request {seed}");
    }
    assert_eq!(*recording.calls.lock().unwrap(), vec![2, 1 + 2 + 3 + 4 + 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_delay_starts_batch_during_run() {
    let recording = Recording::new();
    let batcher = Batcher::new(
        recording.clone(),
        BatchOptions {
            max_batch_rows: 100,
            max_delay: Duration::from_millis(1),
        },
    );
    let first = {
        let batcher = batcher.clone();
        tokio::spawn(async move { batcher.predict(request(0, 1), Vec::new()).await })
    };
    wait_for(|| recording.entered.load(Ordering::SeqCst) == 1).await;

    // The first run is still blocked, yet the queued request starts after max_delay.
    let second = batcher.predict(request(1, 3), Vec::new()).await.unwrap();
    assert_eq!(second[0].shape, vec![3, 1]);
    assert!(!first.is_finished());

    recording.gate.open();
    assert!(first.await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_requests_answered_correctly() {
    let recording = Recording::new();
    let reference = NativePredictor::new(&model()).unwrap();
    let batcher = Batcher::new(
        recording.clone(),
        BatchOptions {
            max_batch_rows: 4,
            max_delay: Duration::from_secs(600),
        },
    );
    let first = {
        let batcher = batcher.clone();
        tokio::spawn(async move { batcher.predict(request(0, 1), Vec::new()).await })
    };
    wait_for(|| recording.entered.load(Ordering::SeqCst) == 1).await;

    let fp32 = vec![Tensor::new(
        "input",
        vec![2, 2],
        TensorData::Fp32(vec![0.5, 1.0, -2.0, 4.0]),
    )];
    let wrong_columns = vec![Tensor::new(
        "input",
        vec![1, 3],
        TensorData::Fp64(vec![0.0; 3]),
    )];
    let wrong_count = vec![Tensor::new(
        "input",
        vec![2, 2],
        TensorData::Fp64(vec![0.0; 3]),
    )];
    let requests = vec![
        request(1, 3),
        fp32.clone(),
        wrong_columns,
        request(2, 3),
        wrong_count,
        request(3, 1),
    ];
    let mut tasks = Vec::new();
    for inputs in requests.clone() {
        let batcher = batcher.clone();
        tasks.push(tokio::spawn(async move {
            batcher.predict(inputs, Vec::new()).await
        }));
    }
    // The request whose element count does not match its shape is not batchable and runs
    // at once; the others queue.
    wait_for(|| batcher.queued() == 5).await;
    recording.gate.open();
    first.await.unwrap().unwrap();

    for (index, (task, inputs)) in tasks.into_iter().zip(&requests).enumerate() {
        let batched = task.await.unwrap();
        let alone = reference.predict(inputs, &[]);
        match (&batched, &alone) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "request {index}"),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "request {index}"),
            _ => panic!("request {index}: batched {batched:?}, alone {alone:?}"),
        }
    }
    assert!(
        matches!(
            reference.predict(&requests[2], &[]),
            Err(RuntimeError::InvalidInput { .. })
        ),
        "the 3-column request is invalid"
    );
}

// Transient load failures, eviction order, and the bounds of the batcher.

use ghaf_runtime::{BatchLimits, RetryBackoff};
use std::collections::HashSet;
use std::time::Instant;

#[test]
fn backoff_doubles_up_to_the_cap() {
    let backoff = RetryBackoff::default();
    let delays: Vec<u64> = (1..=8).map(|n| backoff.delay(n).as_secs()).collect();
    assert_eq!(delays, vec![1, 2, 4, 8, 16, 32, 60, 60]);
    assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(60));
}

#[test]
fn transient_and_permanent_errors_are_told_apart() {
    assert!(RuntimeError::Unavailable("no ONNX Runtime".into()).is_transient());
    assert!(RuntimeError::Internal("database closed".into()).is_transient());
    assert!(!RuntimeError::Verification("digest mismatch".into()).is_transient());
    assert!(!RuntimeError::Load("not a model".into()).is_transient());
}

#[tokio::test]
async fn transient_failure_is_retried_after_backoff() {
    let backoff = RetryBackoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(30),
    };
    let cache = ModelCache::with_backoff(4, backoff);
    let loads = Arc::new(AtomicUsize::new(0));
    let failing = |loads: Arc<AtomicUsize>| {
        move || async move {
            loads.fetch_add(1, Ordering::SeqCst);
            Err::<LoadedModel, _>(RuntimeError::Internal("metadata store unreachable".into()))
        }
    };

    let before = Instant::now();
    let first = cache
        .get_or_load(&key("m", 7), failing(loads.clone()))
        .await;
    let after = Instant::now();
    assert!(matches!(first, Err(RuntimeError::Internal(_))), "{first:?}");
    let Some(ModelState::Backoff {
        failures: 1,
        retry_at,
        error: RuntimeError::Internal(_),
    }) = cache.state(&key("m", 7))
    else {
        panic!("state {:?}", cache.state(&key("m", 7)));
    };
    assert!(retry_at >= before + backoff.initial);
    assert!(retry_at <= after + backoff.initial);
    assert!(cache.retry_after(&key("m", 7)).is_some());

    // Before the retry time the error comes back without a load.
    if Instant::now() < retry_at {
        let early = cache
            .get_or_load(&key("m", 7), failing(loads.clone()))
            .await;
        assert!(matches!(early, Err(RuntimeError::Internal(_))));
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    // After it, the next access loads again; a second failure doubles the wait.
    tokio::time::sleep_until(retry_at.into()).await;
    let before = Instant::now();
    let second = cache
        .get_or_load(&key("m", 7), failing(loads.clone()))
        .await;
    let after = Instant::now();
    assert!(second.is_err());
    assert_eq!(loads.load(Ordering::SeqCst), 2);
    let state = cache.state(&key("m", 7)).unwrap();
    let ModelState::Backoff {
        failures: 2,
        retry_at,
        ..
    } = state
    else {
        panic!("state {state:?}");
    };
    assert!(retry_at >= before + backoff.delay(2));
    assert!(retry_at <= after + backoff.delay(2));
    assert_eq!(backoff.delay(2), Duration::from_millis(30), "capped");

    // A poll through start_load after the wait starts a load that succeeds.
    tokio::time::sleep_until(retry_at.into()).await;
    let polled = cache.start_load(&key("m", 7), || async { Ok(loaded_model()) });
    assert!(matches!(polled, ModelState::Loading { .. }), "{polled:?}");
    let model = cache
        .get_or_load(&key("m", 7), || async {
            panic!("the retry is already loading")
        })
        .await;
    assert!(model.is_ok());
    assert!(matches!(
        cache.state(&key("m", 7)),
        Some(ModelState::Ready(_))
    ));
    assert!(cache.retry_after(&key("m", 7)).is_none());
}

#[tokio::test]
async fn start_load_reports_backoff_until_retry_time() {
    let cache = ModelCache::with_backoff(
        4,
        RetryBackoff {
            initial: Duration::from_secs(3600),
            max: Duration::from_secs(3600),
        },
    );
    let _ = cache
        .get_or_load(&key("m", 8), || async {
            Err(RuntimeError::Unavailable(
                "ONNX Runtime library missing".into(),
            ))
        })
        .await;
    let state = cache.start_load(&key("m", 8), || async {
        panic!("no load before the retry time")
    });
    let Some(wait) = state.retry_after() else {
        panic!("state {state:?}");
    };
    assert!(wait <= Duration::from_secs(3600));
    assert!(wait > Duration::from_secs(60));
    assert!(matches!(state.error(), Some(RuntimeError::Unavailable(_))));
}

#[tokio::test]
async fn permanent_failure_is_not_retried_after_backoff() {
    let cache = ModelCache::with_backoff(
        4,
        RetryBackoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(1),
        },
    );
    let failed = cache
        .get_or_load(&key("m", 9), || async {
            Err(RuntimeError::Load("model.ghaf is truncated".into()))
        })
        .await;
    assert!(matches!(failed, Err(RuntimeError::Load(_))));
    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = cache
        .get_or_load(&key("m", 9), || async {
            panic!("a permanent failure must not load again")
        })
        .await;
    assert!(matches!(again, Err(RuntimeError::Load(_))));
    assert!(matches!(
        cache.state(&key("m", 9)),
        Some(ModelState::Failed(RuntimeError::Load(_)))
    ));
    assert!(cache.retry_after(&key("m", 9)).is_none());
}

#[tokio::test]
async fn failed_entries_are_evicted_before_ready_ones() {
    let cache = ModelCache::new(2);
    cache
        .get_or_load(&key("m", 1), || async { Ok(loaded_model()) })
        .await
        .unwrap();
    // Used after version 1, so version 1 is the least recently used entry.
    let _ = cache
        .get_or_load(&key("m", 2), || async {
            Err(RuntimeError::Verification("digest mismatch".into()))
        })
        .await;
    cache
        .get_or_load(&key("m", 3), || async { Ok(loaded_model()) })
        .await
        .unwrap();
    assert_eq!(cache.len(), 2);
    assert!(
        cache.get_ready(&key("m", 1)).is_some(),
        "ready version kept"
    );
    assert!(
        cache.state(&key("m", 2)).is_none(),
        "failed version evicted"
    );
    assert!(cache.get_ready(&key("m", 3)).is_some());
}

#[tokio::test]
async fn just_loaded_model_is_not_its_own_victim() {
    let cache = ModelCache::new(2);
    for version in [1, 2] {
        cache
            .get_or_load(&key("m", version), || async { Ok(loaded_model()) })
            .await
            .unwrap();
    }
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let state = cache.start_load(&key("m", 3), || async move {
        released.await.unwrap();
        Ok(loaded_model())
    });
    assert!(matches!(state, ModelState::Loading { .. }));
    // Both ready versions are used while version 3 loads, after its load started.
    assert!(cache.get_ready(&key("m", 1)).is_some());
    assert!(cache.get_ready(&key("m", 2)).is_some());
    release.send(()).unwrap();
    wait_for(|| !matches!(cache.state(&key("m", 3)), Some(ModelState::Loading { .. }))).await;

    // A client polling through start_load gets the ready model, without a second load.
    let polled = cache.start_load(&key("m", 3), || async {
        panic!("the model was evicted by its own load")
    });
    assert!(matches!(polled, ModelState::Ready(_)), "{polled:?}");
    assert_eq!(cache.len(), 2);
    assert!(cache.state(&key("m", 1)).is_none(), "least recently used");
    assert!(cache.state(&key("m", 2)).is_some());
}

/// A real native predictor that blocks its first call on a gate and records the threads and
/// the maximum number of calls in progress at once.
struct Tracked {
    inner: NativePredictor,
    gate: Gate,
    entered: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    threads: Mutex<HashSet<std::thread::ThreadId>>,
    serial: bool,
}

impl Tracked {
    fn new(serial: bool) -> Arc<Self> {
        Arc::new(Self {
            inner: NativePredictor::new(&model()).unwrap(),
            gate: Gate::default(),
            entered: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            threads: Mutex::new(HashSet::new()),
            serial,
        })
    }
}

impl Predictor for Tracked {
    fn signature(&self) -> &ModelSignature {
        self.inner.signature()
    }

    fn predict(&self, inputs: &[Tensor], outputs: &[String]) -> Result<Vec<Tensor>, RuntimeError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        self.threads
            .lock()
            .unwrap()
            .insert(std::thread::current().id());
        if self.entered.fetch_add(1, Ordering::SeqCst) == 0 {
            self.gate.wait();
        }
        let result = self.inner.predict(inputs, outputs);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        result
    }

    fn max_concurrent_runs(&self) -> Option<usize> {
        self.serial.then_some(1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_queue_rejects_with_unavailable() {
    let tracked = Tracked::new(false);
    let batcher = Batcher::with_limits(
        tracked.clone(),
        BatchOptions {
            max_batch_rows: 100,
            max_delay: Duration::from_secs(600),
        },
        BatchLimits {
            max_queued: 2,
            max_concurrent_runs: 4,
        },
    );
    let first = {
        let batcher = batcher.clone();
        tokio::spawn(async move { batcher.predict(request(0, 1), Vec::new()).await })
    };
    wait_for(|| tracked.entered.load(Ordering::SeqCst) == 1).await;
    let mut queued = Vec::new();
    for seed in 1..=2 {
        let batcher = batcher.clone();
        queued.push(tokio::spawn(async move {
            batcher.predict(request(seed, 1), Vec::new()).await
        }));
    }
    wait_for(|| batcher.queued() == 2).await;

    let rejected = batcher.predict(request(3, 1), Vec::new()).await;
    match rejected {
        Err(RuntimeError::Unavailable(message)) => {
            assert!(message.contains("max_queued"), "{message}");
            assert!(message.contains('2'), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(batcher.queued(), 2, "the rejected request was not queued");

    tracked.gate.open();
    first.await.unwrap().unwrap();
    for task in queued {
        task.await.unwrap().unwrap();
    }
    // With the queue drained, requests are accepted again.
    batcher.predict(request(4, 1), Vec::new()).await.unwrap();
}

/// On a single-threaded runtime, a prediction on the caller's task would block the only
/// worker thread. The batcher runs it on a blocking thread instead.
#[tokio::test(flavor = "current_thread")]
async fn predict_runs_off_the_async_worker() {
    let tracked = Tracked::new(false);
    let batcher = Batcher::new(tracked.clone(), BatchOptions::default());
    let running = {
        let batcher = batcher.clone();
        tokio::spawn(async move { batcher.predict(request(0, 2), Vec::new()).await })
    };
    // The worker thread stays free while the model is blocked inside predict.
    wait_for(|| tracked.entered.load(Ordering::SeqCst) == 1).await;
    assert!(!running.is_finished());
    tracked.gate.open();
    running.await.unwrap().unwrap();
    batcher.predict(request(1, 2), Vec::new()).await.unwrap();

    let worker = std::thread::current().id();
    let threads = tracked.threads.lock().unwrap();
    assert!(!threads.is_empty());
    assert!(
        !threads.contains(&worker),
        "predict ran on the async worker"
    );
}

async fn overlapping_runs(serial: bool, limits: BatchLimits) -> (Arc<Tracked>, Batcher) {
    let tracked = Tracked::new(serial);
    let batcher = Batcher::with_limits(
        tracked.clone(),
        BatchOptions {
            max_batch_rows: 100,
            max_delay: Duration::from_millis(1),
        },
        limits,
    );

    let first = {
        let batcher = batcher.clone();
        tokio::spawn(async move { batcher.predict(request(0, 1), Vec::new()).await })
    };
    wait_for(|| tracked.entered.load(Ordering::SeqCst) == 1).await;

    // Requests that cannot share a batch: FP64 and FP32 inputs, and one whose element count
    // does not match its shape, which is not batchable at all.
    let mut tasks = Vec::new();
    for index in 0..6 {
        let inputs = match index % 3 {
            0 => request(index, 2),
            1 => vec![Tensor::new(
                "input",
                vec![1, 2],
                TensorData::Fp32(vec![index as f32, 1.0]),
            )],
            _ => vec![Tensor::new(
                "input",
                vec![2, 2],
                TensorData::Fp64(vec![0.0; 3]),
            )],
        };
        let batcher = batcher.clone();
        tasks.push(tokio::spawn(async move {
            batcher.predict(inputs, Vec::new()).await
        }));
    }

    // Give the max_delay timers time to fire while the first run is blocked.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        batcher.running() <= batcher.limits().max_concurrent_runs,
        "running {} above the limit",
        batcher.running()
    );
    tracked.gate.open();
    first.await.unwrap().unwrap();
    for task in tasks {
        let _ = task.await.unwrap();
    }
    (tracked, batcher)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serial_predictor_has_one_run_in_flight() {
    let (tracked, batcher) = overlapping_runs(true, BatchLimits::default()).await;
    assert_eq!(batcher.limits().max_concurrent_runs, 1);
    assert_eq!(tracked.max_in_flight.load(Ordering::SeqCst), 1);
    // A run counts as running until its thread has sent every reply and released the slot.
    wait_for(|| batcher.running() == 0).await;
    assert_eq!(batcher.queued(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn configured_concurrency_bounds_runs() {
    let limits = BatchLimits {
        max_queued: 64,
        max_concurrent_runs: 2,
    };
    let (tracked, batcher) = overlapping_runs(false, limits).await;
    assert_eq!(batcher.limits().max_concurrent_runs, 2);
    let max_in_flight = tracked.max_in_flight.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&max_in_flight),
        "{max_in_flight} runs at once"
    );
}
