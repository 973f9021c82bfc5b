//! The worker: a claim loop with a pool of executor slots. Each claimed attempt runs in a
//! task of its own with a heartbeat that renews its lease and picks up cancellation, and a
//! log writer that stores the attempt's output in chunks. On shutdown (SIGTERM) every
//! running attempt is interrupted and requeued, and the next attempt resumes from its
//! checkpoint.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::executor::{ExecError, Executor, JobContext, LogSink, Services, StopReason};
use crate::store::{AttemptOutcome, ClaimRequest};
use crate::{Job, JobError, Lease, LogStream, StopRequest};

/// Settings of a worker.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Lease owner name, unique per worker process, such as `host-1234`.
    pub id: String,
    /// Attempts run at the same time.
    pub slots: usize,
    /// GPUs of this machine; jobs asking for more are left to other workers.
    pub gpus: u32,
    /// Time between claims while idle.
    pub poll_interval: Duration,
    /// Lease duration; a worker that sends no heartbeat for this long loses its jobs.
    pub lease: Duration,
    /// Time between heartbeats; well below `lease`.
    pub heartbeat: Duration,
    /// Time attempts get to stop after shutdown before the worker returns.
    pub shutdown_grace: Duration,
    /// Parent of the attempts' scratch directories.
    pub work_dir: PathBuf,
}

impl WorkerConfig {
    /// Returns a configuration with the defaults and a worker id from the host name and pid.
    pub fn new(work_dir: PathBuf) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".to_owned());
        Self {
            id: format!(
                "{host}-{}-{}",
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            slots: 2,
            gpus: 0,
            poll_interval: Duration::from_secs(1),
            lease: Duration::from_secs(60),
            heartbeat: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            work_dir,
        }
    }
}

/// Claims jobs and runs them with the executor registered for their kind.
pub struct Worker {
    config: WorkerConfig,
    services: Services,
    executors: BTreeMap<&'static str, Arc<dyn Executor>>,
    /// GPUs of this machine held by running attempts; Kubernetes jobs hold none here.
    gpus_in_use: AtomicU32,
    /// Serialises claims, so two slots cannot both count the same GPUs as free.
    claiming: tokio::sync::Mutex<()>,
}

/// Releases the local GPUs of an attempt when it ends, however it ends.
struct GpuHold<'a> {
    in_use: &'a AtomicU32,
    gpus: u32,
}

impl Drop for GpuHold<'_> {
    fn drop(&mut self) {
        let _ = self
            .in_use
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
                Some(held.saturating_sub(self.gpus))
            });
    }
}

/// GPUs of this machine that an attempt of `job` uses.
fn local_gpus(job: &Job) -> u32 {
    match job.spec.kind {
        crate::JobKind::Kubernetes { .. } => 0,
        _ => job.spec.resources.gpus,
    }
}

impl Worker {
    pub fn new(config: WorkerConfig, services: Services) -> Self {
        Self {
            config,
            services,
            executors: BTreeMap::new(),
            gpus_in_use: AtomicU32::new(0),
            claiming: tokio::sync::Mutex::new(()),
        }
    }

    /// Runs jobs of `kind` (`builtin`, `command`, `kubernetes`) with `executor`.
    pub fn with_executor(mut self, kind: &'static str, executor: Arc<dyn Executor>) -> Self {
        self.executors.insert(kind, executor);
        self
    }

    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    fn lease_millis(&self) -> i64 {
        i64::try_from(self.config.lease.as_millis()).unwrap_or(i64::MAX)
    }

    /// Claims one job if one is due; `None` when the queue has nothing for this worker.
    /// Only jobs that fit in the GPUs not held by this worker's running attempts are
    /// claimed, and a claimed job keeps its GPUs until [`Worker::run_attempt`] returns.
    pub async fn claim(&self) -> Result<Option<(Job, Lease)>, JobError> {
        let kinds: Vec<&str> = self.executors.keys().copied().collect();
        let _claiming = self.claiming.lock().await;
        let in_use = self.gpus_in_use.load(Ordering::SeqCst);
        let request = ClaimRequest {
            owner: &self.config.id,
            kinds: &kinds,
            max_gpus: self.config.gpus.saturating_sub(in_use),
            lease_millis: self.lease_millis(),
        };
        let claimed = self
            .services
            .jobs
            .claim(&request, ghaf_core::now_millis())
            .await?;
        if let Some((job, _)) = &claimed {
            self.gpus_in_use
                .fetch_add(local_gpus(job), Ordering::SeqCst);
        }
        Ok(claimed)
    }

    /// Runs the claim loop until `shutdown` becomes true, then interrupts running attempts,
    /// waits up to the grace period for them to requeue, and returns.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(worker = %self.config.id, slots = self.config.slots, kinds = ?self.executors.keys().collect::<Vec<_>>(), "job worker started");
        let (interrupt_tx, interrupt_rx) = watch::channel(false);
        let mut running: JoinSet<()> = JoinSet::new();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let mut claimed_any = false;
            while running.len() < self.config.slots.max(1) {
                match self.claim().await {
                    Ok(Some((job, lease))) => {
                        claimed_any = true;
                        let worker = self.clone();
                        let interrupt = interrupt_rx.clone();
                        running
                            .spawn(async move { worker.run_attempt(job, lease, interrupt).await });
                    }
                    Ok(None) => break,
                    Err(error) => {
                        tracing::warn!(worker = %self.config.id, %error, "cannot claim a job; retrying");
                        break;
                    }
                }
            }
            if claimed_any {
                continue;
            }
            tokio::select! {
                _ = shutdown.changed() => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
                () = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }

        tracing::info!(worker = %self.config.id, running = running.len(), "job worker stopping; interrupting running attempts");
        let _ = interrupt_tx.send(true);
        let drained = tokio::time::timeout(self.config.shutdown_grace, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(worker = %self.config.id, "attempts still running after the shutdown grace period; their leases will expire");
            running.abort_all();
        }
        tracing::info!(worker = %self.config.id, "job worker stopped");
    }

    /// Runs one claimed attempt to its end and records the outcome. When `interrupt` becomes
    /// true, the attempt stops and the job is requeued.
    pub async fn run_attempt(&self, job: Job, lease: Lease, mut interrupt: watch::Receiver<bool>) {
        let _gpus = GpuHold {
            in_use: &self.gpus_in_use,
            gpus: local_gpus(&job),
        };
        let jobs = self.services.jobs.clone();
        let (stop_tx, stop_rx) = watch::channel(None::<StopReason>);
        let (log_tx, log_rx) = mpsc::unbounded_channel();
        let log = LogSink::new(log_tx);
        let writer = tokio::spawn(write_logs(jobs.clone(), lease.clone(), log_rx));
        log.system(format!(
            "attempt {} started on worker {}",
            lease.attempt, self.config.id
        ));
        tracing::info!(job = %job.id, tenant = %job.tenant, attempt = lease.attempt, worker = %self.config.id, "job attempt started");

        let heartbeat = {
            let jobs = jobs.clone();
            let lease = lease.clone();
            let stop_tx = stop_tx.clone();
            let every = self.config.heartbeat;
            let lease_millis = self.lease_millis();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(every) => {}
                        changed = interrupt.changed() => {
                            if changed.is_err() || *interrupt.borrow() {
                                let _ = stop_tx.send(Some(StopReason::Interrupted));
                                return;
                            }
                            continue;
                        }
                    }
                    match jobs
                        .heartbeat(&lease, lease_millis, ghaf_core::now_millis())
                        .await
                    {
                        Ok(StopRequest::None) => {}
                        Ok(StopRequest::Cancel) => {
                            let _ = stop_tx.send(Some(StopReason::Cancelled));
                        }
                        Err(JobError::LeaseLost { .. }) => {
                            let _ = stop_tx.send(Some(StopReason::LeaseLost));
                            return;
                        }
                        Err(error) => {
                            tracing::warn!(job = %lease.job_id, tenant = %lease.tenant, %error, "job heartbeat failed; retrying");
                        }
                    }
                }
            })
        };

        let outcome = match self.executors.get(job.spec.kind.name()) {
            None => Err(ExecError::permanent(format!(
                "worker {} has no executor for {} jobs",
                self.config.id,
                job.spec.kind.name()
            ))),
            Some(executor) => {
                let work_dir = self
                    .config
                    .work_dir
                    .join(format!("{}-a{}", job.id, lease.attempt));
                match tokio::fs::create_dir_all(&work_dir).await {
                    Err(error) => Err(ExecError::transient(format!(
                        "cannot create the work directory {}: {error}",
                        work_dir.display()
                    ))),
                    Ok(()) => {
                        let context = JobContext {
                            job: job.clone(),
                            lease: lease.clone(),
                            log: log.clone(),
                            stop: stop_rx,
                            work_dir: work_dir.clone(),
                            services: self.services.clone(),
                        };
                        let result = executor.run(&context).await;
                        if let Err(error) = tokio::fs::remove_dir_all(&work_dir).await {
                            tracing::warn!(job = %job.id, dir = %work_dir.display(), %error, "cannot remove a job work directory");
                        }
                        result
                    }
                }
            }
        };
        heartbeat.abort();

        let outcome = match outcome {
            Ok(result) => Some(AttemptOutcome::Succeeded(result)),
            Err(ExecError::Stopped(StopReason::Cancelled)) => Some(AttemptOutcome::Cancelled),
            Err(ExecError::Stopped(StopReason::Interrupted)) => Some(AttemptOutcome::Interrupted {
                reason: format!(
                    "attempt {} was interrupted by the shutdown of worker {}",
                    lease.attempt, self.config.id
                ),
            }),
            Err(ExecError::Stopped(StopReason::LeaseLost)) => None,
            Err(ExecError::Failed { message, retryable }) => Some(AttemptOutcome::Failed {
                error: message,
                retryable,
            }),
        };
        match &outcome {
            Some(AttemptOutcome::Succeeded(_)) => {
                log.system(format!("attempt {} succeeded", lease.attempt))
            }
            Some(AttemptOutcome::Failed { error, retryable }) => log.write(
                LogStream::System,
                format!(
                    "attempt {} failed{}: {error}",
                    lease.attempt,
                    if *retryable { "" } else { " permanently" }
                ),
            ),
            Some(AttemptOutcome::Cancelled) => {
                log.system(format!("attempt {} cancelled", lease.attempt))
            }
            Some(AttemptOutcome::Interrupted { reason }) => log.system(reason.clone()),
            None => log.system(format!(
                "attempt {} lost its lease and stopped",
                lease.attempt
            )),
        }
        drop(log);
        let _ = writer.await;

        let Some(outcome) = outcome else {
            tracing::warn!(job = %job.id, tenant = %job.tenant, attempt = lease.attempt, "job attempt lost its lease");
            return;
        };
        match jobs.finish(&lease, &outcome, ghaf_core::now_millis()).await {
            Ok(finished) => {
                if let AttemptOutcome::Failed { error, .. } = &outcome {
                    tracing::warn!(job = %job.id, tenant = %job.tenant, attempt = lease.attempt, state = finished.state.as_str(), %error, "job attempt failed");
                } else {
                    tracing::info!(job = %job.id, tenant = %job.tenant, attempt = lease.attempt, state = finished.state.as_str(), "job attempt ended");
                }
            }
            Err(error) => {
                tracing::error!(job = %job.id, tenant = %job.tenant, attempt = lease.attempt, %error, "cannot record the end of a job attempt");
            }
        }
    }
}

/// Stores log lines of an attempt, batching what arrives together into one chunk.
async fn write_logs(
    jobs: crate::JobStore,
    lease: Lease,
    mut receiver: mpsc::UnboundedReceiver<(LogStream, String)>,
) {
    let mut failures = 0u32;
    while let Some((stream, mut text)) = receiver.recv().await {
        // Lines of the same stream that are already waiting go into the same chunk.
        let mut pending: Option<(LogStream, String)> = None;
        while text.len() < crate::MAX_LOG_CHUNK_BYTES {
            match receiver.try_recv() {
                Ok((next_stream, next)) if next_stream == stream => text.push_str(&next),
                Ok(other) => {
                    pending = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        for (stream, text) in std::iter::once((stream, text)).chain(pending) {
            if let Err(error) = jobs
                .append_log(&lease, stream, &text, ghaf_core::now_millis())
                .await
            {
                failures += 1;
                if failures <= 3 {
                    tracing::warn!(job = %lease.job_id, tenant = %lease.tenant, %error, "cannot store job log output");
                }
            }
        }
    }
}
