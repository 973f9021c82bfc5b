//! Scheduler scenarios of [`JobStore`], driven step by step with explicit times and injected
//! failures. Every function runs against an empty metadata database and panics on a failed
//! expectation; the crate's tests run them on SQLite and on PostgreSQL.

use ghaf_core::{Name, PrincipalId, ProjectId, TenantId, UnixMillis};
use ghaf_meta::{MetaStore, SqlMetaStore};

use crate::store::{AttemptOutcome, ClaimRequest};
use crate::{
    Backoff, CheckpointRef, JobError, JobInput, JobKind, JobSpec, JobState, JobStore, LogStream,
    Quota, Resources, StopRequest, Trainer,
};

/// Start of every scenario's clock, in Unix milliseconds.
const T0: UnixMillis = 1_800_000_000_000;
const SECOND: i64 = 1000;
const LEASE: i64 = 30 * SECOND;
const KINDS: &[&str] = &["builtin", "command", "kubernetes"];

/// Creates tenant `acme` with project `p` and tenant `beta` with project `q`.
async fn setup(meta: &SqlMetaStore) -> (JobStore, TenantId, ProjectId, TenantId, ProjectId) {
    let creator = PrincipalId::from_stored("creator");
    let mut made = Vec::new();
    for (tenant, project) in [("acme", "p"), ("beta", "q")] {
        let tenant = TenantId::new(Name::parse(tenant).unwrap());
        meta.create_tenant(&tenant, "test tenant").await.unwrap();
        let project = meta
            .create_project(&tenant, &Name::parse(project).unwrap(), "", &creator)
            .await
            .unwrap();
        made.push((tenant, project.id));
    }
    let (beta, q) = made.pop().unwrap();
    let (acme, p) = made.pop().unwrap();
    (JobStore::new(meta.db().clone()), acme, p, beta, q)
}

fn spec(name: &str) -> JobSpec {
    JobSpec {
        name: name.to_owned(),
        kind: JobKind::Builtin {
            trainer: Trainer::Gbdt,
            features: Vec::new(),
            validation_fraction: 0.2,
            seed: 42,
            checkpoint_every: 10,
        },
        inputs: vec![JobInput::DatasetVersion {
            dataset: "flights".to_owned(),
            version: 1,
        }],
        label: Some("delayed".to_owned()),
        parameters: serde_json::Map::new(),
        resources: Resources::default(),
        priority: 0,
        max_attempts: 3,
        backoff: Backoff {
            initial_seconds: 10,
            multiplier: 2.0,
            max_seconds: 600,
        },
        register: None,
    }
}

fn command_spec(name: &str, gpus: u32) -> JobSpec {
    JobSpec {
        kind: JobKind::Command {
            command: vec!["true".to_owned()],
            env: Default::default(),
            timeout_seconds: None,
        },
        inputs: Vec::new(),
        label: None,
        resources: Resources {
            gpus,
            ..Resources::default()
        },
        ..spec(name)
    }
}

fn worker(owner: &str) -> ClaimRequest<'_> {
    ClaimRequest {
        owner,
        kinds: KINDS,
        max_gpus: 8,
        lease_millis: LEASE,
    }
}

fn failure() -> AttemptOutcome {
    AttemptOutcome::Failed {
        error: "injected failure".to_owned(),
        retryable: true,
    }
}

/// A failed attempt is retried after 10 s, then 20 s, and the third failure fails the job.
pub async fn retry_with_backoff(meta: &SqlMetaStore) {
    let (store, acme, p, _, _) = setup(meta).await;
    let job = store
        .submit(&acme, &p, &spec("retry"), "alice", T0)
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.attempt, 0);

    let (claimed, lease) = store.claim(&worker("w1"), T0).await.unwrap().unwrap();
    assert_eq!(claimed.id, job.id);
    assert_eq!(claimed.state, JobState::Running);
    assert_eq!(lease.attempt, 1);

    let now = T0 + SECOND;
    let after_first = store.finish(&lease, &failure(), now).await.unwrap();
    assert_eq!(after_first.state, JobState::Queued);
    assert_eq!(after_first.not_before, now + 10 * SECOND);
    assert_eq!(after_first.error.as_deref(), Some("injected failure"));

    assert!(
        store
            .claim(&worker("w1"), now + 9 * SECOND)
            .await
            .unwrap()
            .is_none(),
        "claimed before not_before"
    );
    let (_, lease) = store
        .claim(&worker("w2"), now + 10 * SECOND)
        .await
        .unwrap()
        .expect("claimable at not_before");
    assert_eq!(lease.attempt, 2);

    let now = now + 11 * SECOND;
    let after_second = store.finish(&lease, &failure(), now).await.unwrap();
    assert_eq!(after_second.state, JobState::Queued);
    assert_eq!(after_second.not_before, now + 20 * SECOND);

    let (_, lease) = store
        .claim(&worker("w1"), now + 20 * SECOND)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lease.attempt, 3);
    let last = store
        .finish(&lease, &failure(), now + 21 * SECOND)
        .await
        .unwrap();
    assert_eq!(last.state, JobState::Failed);
    assert_eq!(last.finished_at, Some(now + 21 * SECOND));
    assert!(
        store
            .claim(&worker("w1"), now + 3600 * SECOND)
            .await
            .unwrap()
            .is_none()
    );
}

/// A failure marked not retryable fails the job on the first attempt.
pub async fn permanent_failure_is_not_retried(meta: &SqlMetaStore) {
    let (store, acme, p, _, _) = setup(meta).await;
    store
        .submit(&acme, &p, &spec("bad"), "alice", T0)
        .await
        .unwrap();
    let (_, lease) = store.claim(&worker("w1"), T0).await.unwrap().unwrap();
    let outcome = AttemptOutcome::Failed {
        error: "label column missing".to_owned(),
        retryable: false,
    };
    let job = store.finish(&lease, &outcome, T0 + SECOND).await.unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.attempt, 1);
}

/// A queued job is cancelled at once; a running one sees the request at its heartbeat and
/// ends cancelled even when it reports a failure; a finished job cannot be cancelled.
pub async fn cancel_queued_and_running(meta: &SqlMetaStore) {
    let (store, acme, p, _, _) = setup(meta).await;
    let queued = store
        .submit(&acme, &p, &spec("queued"), "alice", T0)
        .await
        .unwrap();
    let cancelled = store.cancel(&acme, &p, &queued.id, T0 + 1).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert!(
        store.claim(&worker("w1"), T0 + 2).await.unwrap().is_none(),
        "a cancelled job was claimed"
    );

    let running = store
        .submit(&acme, &p, &spec("running"), "alice", T0)
        .await
        .unwrap();
    let (_, lease) = store.claim(&worker("w1"), T0 + 3).await.unwrap().unwrap();
    assert_eq!(
        store.heartbeat(&lease, LEASE, T0 + 4).await.unwrap(),
        StopRequest::None
    );
    let requested = store.cancel(&acme, &p, &running.id, T0 + 5).await.unwrap();
    assert_eq!(requested.state, JobState::Running);
    assert!(requested.cancel_requested);
    assert_eq!(
        store.heartbeat(&lease, LEASE, T0 + 6).await.unwrap(),
        StopRequest::Cancel
    );
    let ended = store.finish(&lease, &failure(), T0 + 7).await.unwrap();
    assert_eq!(
        ended.state,
        JobState::Cancelled,
        "a cancelled job was retried"
    );

    let done = store
        .submit(&acme, &p, &spec("done"), "alice", T0)
        .await
        .unwrap();
    let (_, lease) = store.claim(&worker("w1"), T0 + 8).await.unwrap().unwrap();
    store
        .finish(
            &lease,
            &AttemptOutcome::Succeeded(serde_json::json!({})),
            T0 + 9,
        )
        .await
        .unwrap();
    let error = store
        .cancel(&acme, &p, &done.id, T0 + 10)
        .await
        .unwrap_err();
    assert!(matches!(error, JobError::InvalidState(_)), "{error}");
}

/// Quotas on running jobs and GPUs hold jobs in the queue until a slot frees, never block
/// another tenant, and reject a job larger than the whole quota at submission.
pub async fn quota_exhaustion(meta: &SqlMetaStore) {
    let (store, acme, p, beta, q) = setup(meta).await;
    store
        .set_quota(
            &acme,
            &Quota {
                max_running_jobs: Some(2),
                max_cpus: Some(8.0),
                max_gpus: Some(2),
            },
            T0,
        )
        .await
        .unwrap();

    let too_big = store
        .submit(&acme, &p, &command_spec("huge", 3), "alice", T0)
        .await
        .unwrap_err();
    assert!(matches!(too_big, JobError::QuotaExceeded(_)), "{too_big}");

    let first = store
        .submit(&acme, &p, &command_spec("gpu-a", 2), "alice", T0)
        .await
        .unwrap();
    let second = store
        .submit(&acme, &p, &command_spec("gpu-b", 2), "alice", T0 + 1)
        .await
        .unwrap();
    let small = store
        .submit(&acme, &p, &command_spec("cpu", 0), "alice", T0 + 2)
        .await
        .unwrap();
    let third = store
        .submit(&acme, &p, &command_spec("cpu-2", 0), "alice", T0 + 3)
        .await
        .unwrap();
    let other = store
        .submit(&beta, &q, &command_spec("beta", 2), "bob", T0 + 4)
        .await
        .unwrap();

    let now = T0 + 10;
    let (job, lease_first) = store.claim(&worker("w1"), now).await.unwrap().unwrap();
    assert_eq!(job.id, first.id);
    // The second GPU job does not fit (2 + 2 > 2 GPUs), so the CPU-only job runs next.
    let (job, _) = store.claim(&worker("w1"), now).await.unwrap().unwrap();
    assert_eq!(job.id, small.id);
    // Two jobs run, the quota's maximum: only the other tenant's job is claimable.
    let (job, _) = store.claim(&worker("w1"), now).await.unwrap().unwrap();
    assert_eq!(job.id, other.id);
    assert!(store.claim(&worker("w1"), now).await.unwrap().is_none());
    let waiting = store.get(&acme, &p, &second.id).await.unwrap();
    assert_eq!(waiting.state, JobState::Queued);

    store
        .finish(
            &lease_first,
            &AttemptOutcome::Succeeded(serde_json::json!({})),
            now + 1,
        )
        .await
        .unwrap();
    let (job, _) = store.claim(&worker("w1"), now + 2).await.unwrap().unwrap();
    assert_eq!(
        job.id, second.id,
        "the freed GPUs go to the waiting GPU job"
    );
    assert!(store.claim(&worker("w1"), now + 3).await.unwrap().is_none());
    assert_eq!(
        store.get(&acme, &p, &third.id).await.unwrap().state,
        JobState::Queued
    );
}

/// Many workers claim the same single job at the same time; exactly one gets it.
pub async fn workers_race_for_one_job(meta: &SqlMetaStore) {
    let (store, acme, p, _, _) = setup(meta).await;
    let job = store
        .submit(&acme, &p, &spec("contested"), "alice", T0)
        .await
        .unwrap();
    let owners: Vec<String> = (0..8).map(|i| format!("worker-{i}")).collect();
    let claims = owners.iter().map(|owner| {
        let store = store.clone();
        async move { store.claim(&worker(owner), T0 + 1).await.unwrap() }
    });
    let results = futures::future::join_all(claims).await;
    let winners: Vec<_> = results.into_iter().flatten().collect();
    assert_eq!(
        winners.len(),
        1,
        "more or fewer than one worker won the job"
    );
    let (won, lease) = &winners[0];
    assert_eq!(won.id, job.id);
    let stored = store.get(&acme, &p, &job.id).await.unwrap();
    assert_eq!(stored.lease_owner.as_deref(), Some(lease.owner.as_str()));
    assert_eq!(stored.attempt, 1);
}

/// A lease without heartbeats expires: the job returns to the queue as a new, counted
/// attempt after the backoff, and the old worker can no longer heartbeat or finish it.
pub async fn expired_lease_requeues(meta: &SqlMetaStore) {
    let (store, acme, p, _, _) = setup(meta).await;
    let job = store
        .submit(&acme, &p, &spec("orphan"), "alice", T0)
        .await
        .unwrap();
    let (_, old) = store.claim(&worker("dead"), T0).await.unwrap().unwrap();
    store
        .heartbeat(&old, LEASE, T0 + 20 * SECOND)
        .await
        .unwrap();

    // The lease now runs to T0 + 50 s; before that nothing is requeued.
    assert!(
        store
            .requeue_expired(T0 + 49 * SECOND)
            .await
            .unwrap()
            .is_empty()
    );
    let expired_at = T0 + 51 * SECOND;
    assert_eq!(
        store.requeue_expired(expired_at).await.unwrap(),
        vec![job.id.clone()]
    );
    let requeued = store.get(&acme, &p, &job.id).await.unwrap();
    assert_eq!(requeued.state, JobState::Queued);
    assert_eq!(requeued.not_before, expired_at + 10 * SECOND);
    assert!(requeued.lease_owner.is_none());

    let lost = store
        .heartbeat(&old, LEASE, expired_at + 1)
        .await
        .unwrap_err();
    assert!(matches!(lost, JobError::LeaseLost { .. }), "{lost}");
    let (_, new) = store
        .claim(&worker("alive"), expired_at + 10 * SECOND)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(new.attempt, 2);
    let late = store
        .finish(
            &old,
            &AttemptOutcome::Succeeded(serde_json::json!({})),
            expired_at + 11 * SECOND,
        )
        .await
        .unwrap_err();
    assert!(matches!(late, JobError::LeaseLost { .. }), "{late}");
    assert_eq!(
        store.get(&acme, &p, &job.id).await.unwrap().state,
        JobState::Running
    );
}

/// An interrupted attempt (SIGTERM) is requeued at once without counting toward
/// `max_attempts`, and the next attempt sees the checkpoint of the interrupted one.
pub async fn interruption_requeues_with_checkpoint(meta: &SqlMetaStore) {
    let (store, acme, p, _, _) = setup(meta).await;
    let one_attempt = JobSpec {
        max_attempts: 1,
        ..spec("spot")
    };
    let job = store
        .submit(&acme, &p, &one_attempt, "alice", T0)
        .await
        .unwrap();
    let (_, lease) = store
        .claim(&worker("spot-node"), T0)
        .await
        .unwrap()
        .unwrap();
    let checkpoint = CheckpointRef {
        digest: "ab".repeat(32),
        size: 1234,
        progress: 20,
        attempt: lease.attempt,
        created_at: T0 + 5 * SECOND,
    };
    store
        .save_checkpoint(&lease, &checkpoint, T0 + 5 * SECOND)
        .await
        .unwrap();

    let interrupted = store
        .finish(
            &lease,
            &AttemptOutcome::Interrupted {
                reason: "SIGTERM".to_owned(),
            },
            T0 + 6 * SECOND,
        )
        .await
        .unwrap();
    assert_eq!(interrupted.state, JobState::Queued);
    assert_eq!(interrupted.not_before, T0 + 6 * SECOND);
    assert_eq!(interrupted.interruptions, 1);
    assert_eq!(interrupted.counted_attempts(), 0);

    let (resumed, lease) = store
        .claim(&worker("other-node"), T0 + 6 * SECOND)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resumed.id, job.id);
    assert_eq!(lease.attempt, 2);
    assert_eq!(resumed.checkpoint, Some(checkpoint));
    let done = store
        .finish(
            &lease,
            &AttemptOutcome::Succeeded(serde_json::json!({"trees": 100})),
            T0 + 9 * SECOND,
        )
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.result, Some(serde_json::json!({"trees": 100})));
}

/// Higher priority first; equal priorities in submission order; kinds and GPU capacity
/// the worker lacks are skipped.
pub async fn priority_and_capability_order(meta: &SqlMetaStore) {
    let (store, acme, p, _, _) = setup(meta).await;
    let low = store
        .submit(
            &acme,
            &p,
            &JobSpec {
                priority: -5,
                ..spec("low")
            },
            "alice",
            T0,
        )
        .await
        .unwrap();
    let high = store
        .submit(
            &acme,
            &p,
            &JobSpec {
                priority: 10,
                ..spec("high")
            },
            "alice",
            T0 + 1,
        )
        .await
        .unwrap();
    let mid_old = store
        .submit(&acme, &p, &spec("mid-old"), "alice", T0 + 2)
        .await
        .unwrap();
    let mid_new = store
        .submit(&acme, &p, &spec("mid-new"), "alice", T0 + 3)
        .await
        .unwrap();
    let gpu = store
        .submit(
            &acme,
            &p,
            &JobSpec {
                priority: 100,
                ..command_spec("gpu", 1)
            },
            "alice",
            T0 + 4,
        )
        .await
        .unwrap();

    let builtin_only = ClaimRequest {
        owner: "cpu-worker",
        kinds: &["builtin"],
        max_gpus: 0,
        lease_millis: LEASE,
    };
    let mut order = Vec::new();
    while let Some((job, _)) = store.claim(&builtin_only, T0 + 10).await.unwrap() {
        order.push(job.id);
    }
    assert_eq!(order, vec![high.id, mid_old.id, mid_new.id, low.id]);
    assert_eq!(
        store.get(&acme, &p, &gpu.id).await.unwrap().state,
        JobState::Queued
    );
    let (job, _) = store
        .claim(&worker("gpu-worker"), T0 + 11)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.id, gpu.id);
}

/// Log chunks are numbered per job, split at 64 KiB, read after a sequence number, and
/// invisible from another project.
pub async fn logs_in_chunks(meta: &SqlMetaStore) {
    let (store, acme, p, beta, q) = setup(meta).await;
    let job = store
        .submit(&acme, &p, &spec("chatty"), "alice", T0)
        .await
        .unwrap();
    let (_, lease) = store.claim(&worker("w1"), T0).await.unwrap().unwrap();
    assert_eq!(
        store
            .append_log(&lease, LogStream::System, "attempt 1 started\n", T0)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .append_log(&lease, LogStream::Stdout, "round 1\n", T0 + 1)
            .await
            .unwrap(),
        2
    );
    let big = "x".repeat(crate::MAX_LOG_CHUNK_BYTES + 10);
    assert_eq!(
        store
            .append_log(&lease, LogStream::Stderr, &big, T0 + 2)
            .await
            .unwrap(),
        4
    );

    let all = store.read_logs(&acme, &p, &job.id, 0, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|c| c.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(all[1].stream, LogStream::Stdout);
    assert_eq!(all[1].content, "round 1\n");
    assert_eq!(all[2].content.len() + all[3].content.len(), big.len());
    let tail = store.read_logs(&acme, &p, &job.id, 2, 100).await.unwrap();
    assert_eq!(tail.len(), 2);
    assert!(
        store
            .read_logs(&beta, &q, &job.id, 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A job is visible only in its own project and tenant.
pub async fn jobs_are_scoped(meta: &SqlMetaStore) {
    let (store, acme, p, beta, q) = setup(meta).await;
    let job = store
        .submit(&acme, &p, &spec("mine"), "alice", T0)
        .await
        .unwrap();
    let error = store.get(&beta, &q, &job.id).await.unwrap_err();
    assert!(matches!(error, JobError::NotFound { .. }), "{error}");
    let error = store.cancel(&beta, &q, &job.id, T0).await.unwrap_err();
    assert!(matches!(error, JobError::NotFound { .. }), "{error}");
    assert!(
        store
            .list(&beta, &q, &Default::default())
            .await
            .unwrap()
            .is_empty()
    );
    let listed = store.list(&acme, &p, &Default::default()).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, job.id);
}

/// A tenant with more queued jobs over its quota than one page of the claim's scan does not
/// hide another tenant's job queued behind them.
pub async fn full_tenant_does_not_starve_others(meta: &SqlMetaStore) {
    let (store, acme, p, beta, q) = setup(meta).await;
    store
        .set_quota(
            &acme,
            &Quota {
                max_running_jobs: Some(1),
                max_cpus: None,
                max_gpus: None,
            },
            T0,
        )
        .await
        .unwrap();
    for index in 0..120 {
        store
            .submit(
                &acme,
                &p,
                &spec(&format!("acme-{index}")),
                "alice",
                T0 + index,
            )
            .await
            .unwrap();
    }
    let other = store
        .submit(&beta, &q, &spec("beta-late"), "bob", T0 + 500)
        .await
        .unwrap();
    let now = T0 + 1_000;
    let (first, _) = store.claim(&worker("w1"), now).await.unwrap().unwrap();
    assert_eq!(first.tenant, acme);
    let (next, _) = store.claim(&worker("w1"), now).await.unwrap().unwrap();
    assert_eq!(
        next.id, other.id,
        "the other tenant's job behind 119 blocked ones is claimed"
    );
}
