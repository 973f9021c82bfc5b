//! The training job system of Ghaf: job specifications, the job queue in the metadata
//! database, the worker that claims and runs jobs, and the executors that run them (the
//! built-in trainers in the process, a local command, or a Kubernetes `batch/v1` Job).
//!
//! The queue is the `jobs` table. A worker claims a queued job with a conditional `UPDATE`
//! on its state and holds a lease that it renews by heartbeat; a lease that expires puts the
//! job back in the queue as a new attempt. Tenant quotas (running jobs, CPUs, GPUs) are
//! checked in the claim transaction, so workers on several machines cannot exceed them
//! together. Every query takes the tenant and project.

pub mod conformance;
mod error;
pub mod executor;
pub mod gate;
pub mod spec;
mod store;
pub mod worker;

pub use error::JobError;
pub use spec::{
    Backoff, JobInput, JobKind, JobSpec, QualityGate, RegisterSpec, Resources, Trainer,
};
pub use store::{
    AttemptOutcome, CheckpointRef, ClaimRequest, Job, JobFilter, JobState, JobStore, Lease,
    LogChunk, LogStream, MAX_LOG_CHUNK_BYTES, Quota, StopRequest,
};
