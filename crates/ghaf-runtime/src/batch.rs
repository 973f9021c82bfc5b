//! Adaptive batching of concurrent requests to one predictor.
//!
//! Every run happens on tokio's blocking thread pool, never on the caller's task, so a slow
//! model does not block tokio worker threads. A batchable request starts at once when the
//! predictor is idle, so a single client sees no added latency beyond the hand-off to a
//! blocking thread. Requests that arrive while a run is in progress wait in a bounded queue.
//! When the last run ends, the queued requests that fit together run as one batch,
//! concatenated along dimension 0. They fit together when they have the same input names,
//! datatypes and dimensions after the first, the same requested outputs, and at most
//! `max_batch_rows` rows in all. Each caller gets its own rows of every output. A queued
//! request that has waited `max_delay` starts its batch as soon as fewer than the allowed
//! number of runs are in progress, so with a concurrency above 1 `max_delay` bounds the time
//! a request waits before its batch starts.
//!
//! At most [`BatchLimits::max_concurrent_runs`] runs are in progress at once, and at most
//! one when the predictor reports [`Predictor::max_concurrent_runs`] of 1 (ONNX Runtime
//! sessions). A request that would make the queue longer than [`BatchLimits::max_queued`]
//! fails at once with [`RuntimeError::Unavailable`], which the serving layer maps to 503.
//!
//! When a batched run fails, or an output does not have one row per input row, each request
//! of the batch runs again on its own, so every caller gets exactly the result of an
//! unbatched call.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::{DataType, Predictor, RuntimeError, Tensor, TensorData};

/// Limits of adaptive batching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchOptions {
    /// Maximum rows in one batch. A single request with more rows still runs, alone.
    pub max_batch_rows: usize,
    /// Maximum time a queued request waits before its batch may start while other runs are
    /// in progress.
    pub max_delay: Duration,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            max_batch_rows: 256,
            max_delay: Duration::from_millis(1),
        }
    }
}

/// Bounds on the queued requests and concurrent runs of a [`Batcher`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    /// Maximum requests waiting in the queue. A request beyond it fails at once with
    /// [`RuntimeError::Unavailable`]. At least 1.
    pub max_queued: usize,
    /// Maximum runs in progress at once, each on its own blocking thread. A predictor's own
    /// [`Predictor::max_concurrent_runs`] lowers it. At least 1.
    pub max_concurrent_runs: usize,
}

impl Default for BatchLimits {
    /// 1024 queued requests; as many concurrent runs as the machine has cores, at least 2.
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |cores| cores.get());
        Self {
            max_queued: 1024,
            max_concurrent_runs: cores.max(2),
        }
    }
}

type Reply = oneshot::Sender<Result<Vec<Tensor>, RuntimeError>>;

/// Properties that requests must share to run in one batch. These are the name, datatype and
/// dimensions after the first of each input, in request order, and the requested outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
struct BatchKey {
    inputs: Vec<(String, DataType, Vec<i64>)>,
    outputs: Vec<String>,
}

struct Pending {
    inputs: Vec<Tensor>,
    outputs: Vec<String>,
    /// `None` for a request that cannot be batched; it always runs alone.
    key: Option<BatchKey>,
    rows: usize,
    enqueued: Instant,
    reply: Reply,
}

#[derive(Default)]
struct State {
    /// Runs in progress on blocking threads.
    running: usize,
    queue: VecDeque<Pending>,
}

struct Shared {
    predictor: Arc<dyn Predictor>,
    options: BatchOptions,
    limits: BatchLimits,
    state: Mutex<State>,
}

/// Batches concurrent requests to one predictor. Cloning shares the queue.
#[derive(Clone)]
pub struct Batcher {
    shared: Arc<Shared>,
}

impl Batcher {
    /// Creates a batcher with the default [`BatchLimits`].
    pub fn new(predictor: Arc<dyn Predictor>, options: BatchOptions) -> Self {
        Self::with_limits(predictor, options, BatchLimits::default())
    }

    /// Creates a batcher with explicit bounds on queued requests and concurrent runs.
    pub fn with_limits(
        predictor: Arc<dyn Predictor>,
        options: BatchOptions,
        limits: BatchLimits,
    ) -> Self {
        let own_limit = predictor.max_concurrent_runs().unwrap_or(usize::MAX);
        Self {
            shared: Arc::new(Shared {
                predictor,
                options: BatchOptions {
                    max_batch_rows: options.max_batch_rows.max(1),
                    max_delay: options.max_delay,
                },
                limits: BatchLimits {
                    max_queued: limits.max_queued.max(1),
                    max_concurrent_runs: limits.max_concurrent_runs.min(own_limit).max(1),
                },
                state: Mutex::new(State::default()),
            }),
        }
    }

    pub fn predictor(&self) -> &Arc<dyn Predictor> {
        &self.shared.predictor
    }

    /// Returns the limits in force: the configured ones, with `max_concurrent_runs` lowered to
    /// the predictor's own limit.
    pub fn limits(&self) -> BatchLimits {
        self.shared.limits
    }

    /// Returns the number of requests waiting for a batch.
    pub fn queued(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// Returns the number of runs in progress.
    pub fn running(&self) -> usize {
        self.shared.lock().running
    }

    /// Evaluates one request on tokio's blocking thread pool, batched with concurrent ones
    /// when possible. This is the entry point for async code: the calling task only awaits,
    /// so a slow model never blocks a tokio worker thread.
    ///
    /// Requests whose inputs do not all have the same number of rows in dimension 0 (at
    /// least 1), or whose signature inputs are not all variable in dimension 0, run alone:
    /// at once when fewer than the allowed runs are in progress, otherwise after queueing.
    /// When the queue already holds [`BatchLimits::max_queued`] requests, the request fails
    /// at once with [`RuntimeError::Unavailable`].
    ///
    /// Must be called within a tokio runtime. A caller that stops waiting does not cancel
    /// its request: it still runs, and its result is dropped.
    pub async fn predict(
        &self,
        inputs: Vec<Tensor>,
        outputs: Vec<String>,
    ) -> Result<Vec<Tensor>, RuntimeError> {
        let shared = &self.shared;
        let (key, rows) = match batch_key(shared.predictor.as_ref(), &inputs, &outputs) {
            Some((key, rows)) => (Some(key), rows),
            None => (None, 0),
        };
        let (reply, receiver) = oneshot::channel();
        let pending = Pending {
            inputs,
            outputs,
            rows,
            enqueued: Instant::now(),
            reply,
            key,
        };
        let queued = {
            let mut state = shared.lock();
            let run_now = if pending.key.is_some() {
                // Batchable: start at once only when the predictor is idle, otherwise wait
                // for partners.
                state.running == 0 && state.queue.is_empty()
            } else {
                state.running < shared.limits.max_concurrent_runs
            };
            if run_now {
                state.running += 1;
                drop(state);
                Shared::spawn_batch(shared, vec![pending]);
                false
            } else if state.queue.len() >= shared.limits.max_queued {
                let running = state.running;
                drop(state);
                tracing::warn!(
                    max_queued = shared.limits.max_queued,
                    running,
                    "prediction rejected: the batching queue is full"
                );
                return Err(RuntimeError::Unavailable(format!(
                    "the model is overloaded: its batching queue already holds the limit of \
                     {} waiting requests (max_queued); retry later",
                    shared.limits.max_queued
                )));
            } else {
                state.queue.push_back(pending);
                true
            }
        };

        if queued {
            let timer = self.shared.clone();
            let delay = shared.options.max_delay;
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let batches = timer.take_due(&mut timer.lock());
                for batch in batches {
                    Shared::spawn_batch(&timer, batch);
                }
            });
        }
        receiver.await.unwrap_or_else(|_| {
            Err(RuntimeError::Internal(
                "the run holding this request ended without a result (the model panicked)".into(),
            ))
        })
    }
}

/// Ends a run on drop and starts the queued batches that may start.
struct RunGuard {
    shared: Arc<Shared>,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.running -= 1;
        let mut batches = Vec::new();
        if state.running == 0
            && let Some(batch) = self.shared.take_batch(&mut state)
        {
            // The predictor went idle: the next batch starts whether or not it is due.
            state.running += 1;
            batches.push(batch);
        }
        batches.extend(self.shared.take_due(&mut state));
        drop(state);
        for batch in batches {
            Shared::spawn_batch(&self.shared, batch);
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes the next batch from the queue: the oldest request and, when it can be batched,
    /// every queued request with its key, in arrival order, while the rows fit
    /// `max_batch_rows`.
    fn take_batch(&self, state: &mut State) -> Option<Vec<Pending>> {
        let first = state.queue.pop_front()?;
        let mut rows = first.rows;
        let mut batch = vec![first];
        if batch[0].key.is_none() {
            return Some(batch);
        }
        let mut index = 0;
        while index < state.queue.len() {
            let candidate = &state.queue[index];
            if candidate.key == batch[0].key && rows + candidate.rows <= self.options.max_batch_rows
            {
                rows += candidate.rows;
                batch.extend(state.queue.remove(index));
            } else {
                index += 1;
            }
        }
        Some(batch)
    }

    /// Takes batches for queued requests that have waited `max_delay`, while fewer than
    /// `max_concurrent_runs` runs are in progress, and counts them as running.
    fn take_due(&self, state: &mut State) -> Vec<Vec<Pending>> {
        let mut batches = Vec::new();
        while state.running < self.limits.max_concurrent_runs
            && state
                .queue
                .front()
                .is_some_and(|oldest| oldest.enqueued.elapsed() >= self.options.max_delay)
        {
            if let Some(batch) = self.take_batch(state) {
                state.running += 1;
                batches.push(batch);
            }
        }
        batches
    }

    /// Runs `batch` on a blocking thread; the caller has counted it in `running`.
    fn spawn_batch(shared: &Arc<Shared>, batch: Vec<Pending>) {
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = RunGuard {
                shared: shared.clone(),
            };
            run_batch(shared.predictor.as_ref(), batch);
        });
    }
}

/// Returns the batch key and row count of a request that can be batched.
fn batch_key(
    predictor: &dyn Predictor,
    inputs: &[Tensor],
    outputs: &[String],
) -> Option<(BatchKey, usize)> {
    let signature = predictor.signature();
    if signature.inputs.is_empty()
        || signature
            .inputs
            .iter()
            .any(|meta| meta.shape.first() != Some(&-1))
        || inputs.is_empty()
    {
        return None;
    }
    let rows = *inputs[0].shape.first()?;
    if rows < 1 {
        return None;
    }
    let mut key_inputs = Vec::with_capacity(inputs.len());
    for tensor in inputs {
        if tensor.shape.first() != Some(&rows)
            || tensor.shape.iter().any(|&dim| dim < 0)
            || tensor.shape_elements() != Some(tensor.data.len())
        {
            return None;
        }
        key_inputs.push((
            tensor.name.clone(),
            tensor.datatype(),
            tensor.shape[1..].to_vec(),
        ));
    }
    Some((
        BatchKey {
            inputs: key_inputs,
            outputs: outputs.to_vec(),
        },
        rows as usize,
    ))
}

fn run_batch(predictor: &dyn Predictor, batch: Vec<Pending>) {
    if batch.len() == 1 {
        for pending in batch {
            let result = predictor.predict(&pending.inputs, &pending.outputs);
            let _ = pending.reply.send(result);
        }
        return;
    }

    let rows: Vec<usize> = batch.iter().map(|pending| pending.rows).collect();
    let total: usize = rows.iter().sum();
    let inputs: Vec<Tensor> = (0..batch[0].inputs.len())
        .map(|index| concat(batch.iter().map(|pending| &pending.inputs[index]), total))
        .collect();
    let split = predictor
        .predict(&inputs, &batch[0].outputs)
        .ok()
        .and_then(|outputs| split(outputs, &rows, total));

    match split {
        Some(parts) => {
            for (pending, outputs) in batch.into_iter().zip(parts) {
                let _ = pending.reply.send(Ok(outputs));
            }
        }
        None => {
            // Run each request alone, so errors reach the request that caused them.
            for pending in batch {
                let result = predictor.predict(&pending.inputs, &pending.outputs);
                let _ = pending.reply.send(result);
            }
        }
    }
}

/// Concatenates tensors of one input along dimension 0. The batch key guarantees equal
/// names, datatypes and trailing dimensions.
fn concat<'a>(tensors: impl Iterator<Item = &'a Tensor> + Clone, rows: usize) -> Tensor {
    let first = tensors
        .clone()
        .next()
        .expect("a batch has at least one request");
    let mut shape = first.shape.clone();
    shape[0] = rows as i64;
    macro_rules! join {
        ($variant:ident) => {{
            let mut values = Vec::new();
            for tensor in tensors {
                if let TensorData::$variant(part) = &tensor.data {
                    values.extend_from_slice(part);
                }
            }
            TensorData::$variant(values)
        }};
    }
    let data = match first.data {
        TensorData::Bool(_) => join!(Bool),
        TensorData::Uint8(_) => join!(Uint8),
        TensorData::Uint16(_) => join!(Uint16),
        TensorData::Uint32(_) => join!(Uint32),
        TensorData::Uint64(_) => join!(Uint64),
        TensorData::Int8(_) => join!(Int8),
        TensorData::Int16(_) => join!(Int16),
        TensorData::Int32(_) => join!(Int32),
        TensorData::Int64(_) => join!(Int64),
        TensorData::Fp16(_) => join!(Fp16),
        TensorData::Fp32(_) => join!(Fp32),
        TensorData::Fp64(_) => join!(Fp64),
        TensorData::Bytes(_) => join!(Bytes),
    };
    Tensor::new(first.name.clone(), shape, data)
}

/// Splits every output into one part per request by rows; `None` when an output does not
/// have `total` rows in dimension 0.
fn split(outputs: Vec<Tensor>, rows: &[usize], total: usize) -> Option<Vec<Vec<Tensor>>> {
    let mut parts: Vec<Vec<Tensor>> = rows.iter().map(|_| Vec::new()).collect();
    for output in outputs {
        if output.shape.first() != Some(&(total as i64)) || !output.data.len().is_multiple_of(total)
        {
            return None;
        }
        let per_row = output.data.len() / total;
        let mut start = 0;
        for (part, &count) in parts.iter_mut().zip(rows) {
            let mut shape = output.shape.clone();
            shape[0] = count as i64;
            let range = start * per_row..(start + count) * per_row;
            let mut tensor = Tensor::new(output.name.clone(), shape, slice(&output.data, range));
            tensor.parameters = output.parameters.clone();
            part.push(tensor);
            start += count;
        }
    }
    Some(parts)
}

fn slice(data: &TensorData, range: std::ops::Range<usize>) -> TensorData {
    match data {
        TensorData::Bool(v) => TensorData::Bool(v[range].to_vec()),
        TensorData::Uint8(v) => TensorData::Uint8(v[range].to_vec()),
        TensorData::Uint16(v) => TensorData::Uint16(v[range].to_vec()),
        TensorData::Uint32(v) => TensorData::Uint32(v[range].to_vec()),
        TensorData::Uint64(v) => TensorData::Uint64(v[range].to_vec()),
        TensorData::Int8(v) => TensorData::Int8(v[range].to_vec()),
        TensorData::Int16(v) => TensorData::Int16(v[range].to_vec()),
        TensorData::Int32(v) => TensorData::Int32(v[range].to_vec()),
        TensorData::Int64(v) => TensorData::Int64(v[range].to_vec()),
        TensorData::Fp16(v) => TensorData::Fp16(v[range].to_vec()),
        TensorData::Fp32(v) => TensorData::Fp32(v[range].to_vec()),
        TensorData::Fp64(v) => TensorData::Fp64(v[range].to_vec()),
        TensorData::Bytes(v) => TensorData::Bytes(v[range].to_vec()),
    }
}
