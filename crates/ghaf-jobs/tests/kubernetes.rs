//! The Kubernetes executor: the rendered `batch/v1` Job against a stored snapshot, and
//! submission, status tracking, failure and cancellation against a local fake of the API
//! server's Job and Secret paths.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use ghaf_core::{Name, ProjectId, TenantId};
use ghaf_jobs::executor::kubernetes::{
    JobStatus, KubernetesConfig, KubernetesExecutor, parse_status, render_job,
};
use ghaf_jobs::worker::Worker;
use ghaf_jobs::{Job, JobSpec, JobState};
use ghaf_meta::MetaStore;
use serde_json::{Value, json};

fn snapshot_job() -> Job {
    let spec = JobSpec::from_json(json!({
        "name": "bert-finetune",
        "kind": {
            "type": "kubernetes",
            "image": "registry.example.com/train/bert:1.4",
            "command": ["python", "train.py", "--epochs", "3"],
            "env": {"HF_HOME": "/checkpoints/hf"},
            "node_selector": {"cloud.google.com/gke-spot": "true", "gpu": "a100"},
            "tolerations": [
                {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"},
                {"key": "nvidia.com/gpu", "operator": "Exists"}
            ],
            "checkpoint_volume": {"claim_name": "bert-checkpoints"},
            "service_account": "trainer",
        },
        "inputs": [{"type": "dataset_version", "dataset": "reviews", "version": 4}],
        "label": "sentiment",
        "parameters": {"learning_rate": 0.00002},
        "resources": {"cpus": 7.5, "memory_mb": 61440, "gpus": 2},
    }))
    .unwrap();
    Job {
        id: "0190f3a2b4c57d8e9f0a1b2c3d4e5f60".to_owned(),
        tenant: TenantId::new(Name::parse("acme").unwrap()),
        project: ProjectId::from_stored("0190f3a2-project"),
        name: spec.name.clone(),
        spec,
        state: JobState::Running,
        attempt: 2,
        interruptions: 1,
        not_before: 0,
        cancel_requested: false,
        lease_owner: Some("worker-1".to_owned()),
        lease_expires_at: None,
        checkpoint: None,
        result: None,
        error: None,
        created_at: 0,
        created_by: "alice".to_owned(),
        started_at: None,
        finished_at: None,
        updated_at: 0,
    }
}

#[test]
fn rendered_job_matches_snapshot() {
    let config = KubernetesConfig {
        api_url: "https://kubernetes.default.svc".to_owned(),
        namespace: "ml-training".to_owned(),
        tracking_uri: "http://ghaf.ml.svc:8080".to_owned(),
        allowed_service_accounts: vec!["trainer".to_owned()],
        allowed_claims: vec!["bert-checkpoints".to_owned()],
        ..KubernetesConfig::default()
    };
    let rendered = render_job(&snapshot_job(), 2, &config).unwrap();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/snapshots/kubernetes_job.json"
    );
    if std::env::var("GHAF_UPDATE_SNAPSHOTS").as_deref() == Ok("1") {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&rendered).unwrap() + "\n",
        )
        .unwrap();
    }
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(path).expect("snapshot exists; GHAF_UPDATE_SNAPSHOTS=1 writes it"),
    )
    .unwrap();
    assert_eq!(
        rendered,
        expected,
        "the rendered Job differs from {path}; review the change and rerun with GHAF_UPDATE_SNAPSHOTS=1:\n{}",
        serde_json::to_string_pretty(&rendered).unwrap()
    );
}

#[test]
fn service_accounts_and_claims_must_be_allowed() {
    let job = snapshot_job();
    let error = render_job(&job, 1, &KubernetesConfig::default()).unwrap_err();
    assert!(
        error.to_string().contains("allowed_service_accounts"),
        "{error}"
    );
    let config = KubernetesConfig {
        allowed_service_accounts: vec!["trainer".to_owned()],
        ..KubernetesConfig::default()
    };
    let error = render_job(&job, 1, &config).unwrap_err();
    assert!(error.to_string().contains("allowed_claims"), "{error}");
}

#[test]
fn status_conditions_map_to_outcomes() {
    assert_eq!(
        parse_status(&json!({"status": {"active": 1}})),
        JobStatus::Running { active: 1 }
    );
    assert_eq!(
        parse_status(&json!({"status": {"conditions": [{"type": "Complete", "status": "True"}]}})),
        JobStatus::Complete
    );
    assert_eq!(
        parse_status(&json!({"status": {"conditions": [
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}
        ]}})),
        JobStatus::Failed {
            reason: "BackoffLimitExceeded: Job has reached the specified backoff limit".to_owned()
        }
    );
    assert_eq!(
        parse_status(&json!({"status": {"conditions": [{"type": "Failed", "status": "False"}]}})),
        JobStatus::Running { active: 0 }
    );
}

/// What the fake API server does with Job status reads.
#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    /// Active on the first read, complete on the next.
    Complete,
    Fail,
    /// Active forever.
    Run,
}

#[derive(Default)]
struct Fake {
    behaviour: Option<Behaviour>,
    jobs: BTreeMap<String, Value>,
    secrets: BTreeMap<String, Value>,
    reads: BTreeMap<String, u32>,
    deleted: Vec<String>,
    unauthorised: u32,
}

type Shared = Arc<Mutex<Fake>>;

fn authorised(headers: &HeaderMap, fake: &Shared) -> bool {
    let ok =
        headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer test-token");
    if !ok {
        fake.lock().unwrap().unauthorised += 1;
    }
    ok
}

async fn create_secret(
    State(fake): State<Shared>,
    Path(_ns): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if !authorised(&headers, &fake) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "Unauthorized"})),
        );
    }
    let name = body["metadata"]["name"].as_str().unwrap().to_owned();
    fake.lock().unwrap().secrets.insert(name, body.clone());
    (StatusCode::CREATED, Json(body))
}

async fn delete_secret(
    State(fake): State<Shared>,
    Path((_ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> StatusCode {
    if !authorised(&headers, &fake) {
        return StatusCode::UNAUTHORIZED;
    }
    let mut fake = fake.lock().unwrap();
    fake.secrets.remove(&name);
    fake.deleted.push(format!("secret/{name}"));
    StatusCode::OK
}

async fn create_job(
    State(fake): State<Shared>,
    Path(_ns): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if !authorised(&headers, &fake) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "Unauthorized"})),
        );
    }
    let name = body["metadata"]["name"].as_str().unwrap().to_owned();
    fake.lock().unwrap().jobs.insert(name, body.clone());
    (StatusCode::CREATED, Json(body))
}

async fn read_job(
    State(fake): State<Shared>,
    Path((_ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    if !authorised(&headers, &fake) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "Unauthorized"})),
        );
    }
    let mut fake = fake.lock().unwrap();
    let Some(mut job) = fake.jobs.get(&name).cloned() else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"message": format!("jobs.batch \"{name}\" not found")})),
        );
    };
    let behaviour = fake.behaviour.unwrap();
    let reads = fake.reads.entry(name).or_default();
    *reads += 1;
    job["status"] = match (behaviour, *reads) {
        (Behaviour::Complete, 1) | (Behaviour::Run, _) => json!({"active": 1}),
        (Behaviour::Complete, _) => {
            json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
        }
        (Behaviour::Fail, _) => json!({"failed": 1, "conditions": [
            {"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": "Container train exited with code 2"}]}),
    };
    (StatusCode::OK, Json(job))
}

async fn delete_job(
    State(fake): State<Shared>,
    Path((_ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> StatusCode {
    if !authorised(&headers, &fake) {
        return StatusCode::UNAUTHORIZED;
    }
    let mut fake = fake.lock().unwrap();
    fake.jobs.remove(&name);
    fake.deleted.push(format!("job/{name}"));
    StatusCode::OK
}

/// Starts the fake API server on a free 127.0.0.1 port and returns its URL.
async fn start_fake(behaviour: Behaviour) -> (String, Shared) {
    let fake: Shared = Arc::new(Mutex::new(Fake {
        behaviour: Some(behaviour),
        ..Fake::default()
    }));
    let router = Router::new()
        .route("/api/v1/namespaces/{ns}/secrets", post(create_secret))
        .route(
            "/api/v1/namespaces/{ns}/secrets/{name}",
            axum::routing::delete(delete_secret),
        )
        .route("/apis/batch/v1/namespaces/{ns}/jobs", post(create_job))
        .route(
            "/apis/batch/v1/namespaces/{ns}/jobs/{name}",
            get(read_job).delete(delete_job),
        )
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (format!("http://{address}"), fake)
}

async fn kubernetes_worker(h: &common::Harness, api_url: String) -> Arc<Worker> {
    let token_file = h.dir.path().join("k8s-token");
    std::fs::write(&token_file, "test-token\n").unwrap();
    let executor = KubernetesExecutor::new(KubernetesConfig {
        api_url,
        namespace: "ml".to_owned(),
        token_file: token_file.display().to_string(),
        tracking_uri: "http://ghaf.test:8080".to_owned(),
        poll_seconds: 1,
        ..KubernetesConfig::default()
    })
    .unwrap();
    Arc::new(
        Worker::new(h.worker_config("k8s"), h.services.clone())
            .with_executor("kubernetes", Arc::new(executor)),
    )
}

fn kubernetes_spec(name: &str) -> Value {
    json!({
        "name": name,
        "kind": {"type": "kubernetes", "image": "trainer:1", "command": ["python", "train.py"]},
        "resources": {"cpus": 2, "memory_mb": 4096, "gpus": 1},
        "max_attempts": 1,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubernetes_job_is_submitted_and_followed() {
    let h = common::harness().await;
    let (url, fake) = start_fake(Behaviour::Complete).await;
    let worker = kubernetes_worker(&h, url).await;
    let job = h.submit(kubernetes_spec("k8s-ok")).await;
    // The worker has no GPUs of its own; the job's GPU goes to the cluster.
    assert_eq!(worker.config().gpus, 0);
    let (claimed, lease) = worker
        .claim()
        .await
        .unwrap()
        .expect("a GPU job claimed for Kubernetes");
    let (_keep, interrupt) = tokio::sync::watch::channel(false);
    worker.run_attempt(claimed, lease, interrupt).await;

    let job = h.job(&job.id).await;
    assert_eq!(
        job.state,
        JobState::Succeeded,
        "{job:?}\n{}",
        h.log_text(&job.id).await
    );
    let name = format!("ghaf-{}-a1", job.id);
    assert_eq!(
        job.result.as_ref().unwrap()["kubernetes_job"],
        json!(format!("ml/{name}"))
    );

    {
        let fake = fake.lock().unwrap();
        assert_eq!(fake.unauthorised, 0);
        let manifest = &fake.jobs[&name];
        let container = &manifest["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["resources"]["requests"]["nvidia.com/gpu"], "1");
        assert_eq!(container["resources"]["requests"]["cpu"], "2000m");
        assert_eq!(
            manifest["metadata"]["labels"]["ghaf.dev/job-id"],
            json!(job.id)
        );
        assert_eq!(fake.reads[&name], 2);
        assert!(fake.secrets.is_empty(), "the token secret was not deleted");
        assert_eq!(fake.deleted, vec![format!("secret/{name}")]);
    }

    let tokens = h.meta.list_tokens(&h.tenant, None).await.unwrap();
    assert_eq!(tokens.len(), 1);
    assert!(
        tokens[0].revoked_at.is_some(),
        "the job token was not revoked"
    );
    assert!(
        h.log_text(&job.id)
            .await
            .contains("created Kubernetes Job ml/")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_kubernetes_job_fails_the_attempt() {
    let h = common::harness().await;
    let (url, _fake) = start_fake(Behaviour::Fail).await;
    let worker = kubernetes_worker(&h, url).await;
    let mut spec = kubernetes_spec("k8s-fail");
    spec["resources"]["gpus"] = json!(0);
    let job = h.submit(spec).await;
    let (claimed, lease) = worker.claim().await.unwrap().unwrap();
    let (_keep, interrupt) = tokio::sync::watch::channel(false);
    worker.run_attempt(claimed, lease, interrupt).await;
    let job = h.job(&job.id).await;
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(
        job.error.as_deref(),
        Some("the Kubernetes Job failed: PodFailurePolicy: Container train exited with code 2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelled_kubernetes_job_is_deleted() {
    let h = common::harness().await;
    let (url, fake) = start_fake(Behaviour::Run).await;
    let worker = kubernetes_worker(&h, url).await;
    let mut spec = kubernetes_spec("k8s-cancel");
    spec["resources"]["gpus"] = json!(0);
    let job = h.submit(spec).await;
    let (claimed, lease) = worker.claim().await.unwrap().unwrap();
    let (_keep, interrupt) = tokio::sync::watch::channel(false);
    let running = tokio::spawn({
        let worker = worker.clone();
        async move { worker.run_attempt(claimed, lease, interrupt).await }
    });
    let name = format!("ghaf-{}-a1", job.id);
    for _ in 0..100 {
        if fake.lock().unwrap().jobs.contains_key(&name) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.services
        .jobs
        .cancel(&h.tenant, &h.project, &job.id, ghaf_core::now_millis())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the attempt stops")
        .unwrap();
    assert_eq!(h.job(&job.id).await.state, JobState::Cancelled);
    let fake = fake.lock().unwrap();
    assert!(
        fake.deleted.contains(&format!("job/{name}")),
        "{:?}",
        fake.deleted
    );
    assert!(
        fake.deleted.contains(&format!("secret/{name}")),
        "{:?}",
        fake.deleted
    );
}
