//! The Kubernetes executor: renders a `batch/v1` Job for the attempt (resources including
//! `nvidia.com/gpu`, node selector and tolerations for spot pools, a checkpoint volume),
//! creates it and a Secret with the attempt's tracking token through the API server (bearer
//! token, CA file), follows the Job's status and maps it to the attempt's outcome. It talks
//! plain HTTP to the paths below, so no Kubernetes client library is needed:
//!
//! - `POST /api/v1/namespaces/{ns}/secrets`, `DELETE /api/v1/namespaces/{ns}/secrets/{name}`
//! - `POST /apis/batch/v1/namespaces/{ns}/jobs`, `GET` and `DELETE …/jobs/{name}`

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::command::{issue_job_token, revoke_job_token};
use super::{ExecError, Executor, JobContext};
use crate::{Job, JobKind};

/// Label keys Ghaf puts on the Jobs and pods it creates.
pub const LABEL_JOB: &str = "ghaf.dev/job-id";
pub const LABEL_TENANT: &str = "ghaf.dev/tenant";
pub const LABEL_PROJECT: &str = "ghaf.dev/project";
pub const LABEL_ATTEMPT: &str = "ghaf.dev/attempt";

/// Start of the error of an attempt whose Job reported the `Failed` condition.
const JOB_FAILED: &str = "the Kubernetes Job failed";

/// Settings of the Kubernetes executor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// API server URL, such as `https://kubernetes.default.svc`.
    pub api_url: String,
    /// Namespace of the Jobs and Secrets.
    pub namespace: String,
    /// File with the bearer token, read at every attempt so rotated tokens are picked up;
    /// empty sends none. In a pod: `/var/run/secrets/kubernetes.io/serviceaccount/token`.
    pub token_file: String,
    /// PEM file with the CA certificate of the API server; empty uses the system roots.
    pub ca_file: String,
    /// Tracking URI the pods use to reach Ghaf, passed as `MLFLOW_TRACKING_URI`.
    pub tracking_uri: String,
    /// Seconds between status reads.
    pub poll_seconds: u64,
    /// Seconds Kubernetes keeps a finished Job before deleting it.
    pub ttl_seconds_after_finished: u64,
    /// Service accounts a job may name; a job naming another is refused. The namespace is
    /// shared by every tenant, so an account listed here is open to all of them.
    pub allowed_service_accounts: Vec<String>,
    /// Persistent volume claims a job may mount as its checkpoint volume; others are
    /// refused, so one tenant cannot mount another's claim.
    pub allowed_claims: Vec<String>,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            api_url: String::new(),
            namespace: "default".to_owned(),
            token_file: String::new(),
            ca_file: String::new(),
            tracking_uri: String::new(),
            poll_seconds: 10,
            ttl_seconds_after_finished: 86_400,
            allowed_service_accounts: Vec::new(),
            allowed_claims: Vec::new(),
        }
    }
}

/// Returns the name of the Kubernetes objects of one attempt: `ghaf-<job id>-a<attempt>`,
/// at most 50 characters, a valid DNS label.
pub fn object_name(job: &Job, attempt: u32) -> String {
    format!("ghaf-{}-a{attempt}", job.id)
}

/// Renders the `batch/v1` Job of an attempt.
///
/// Ghaf retries failed attempts itself, so `backoffLimit` is 0. A pod disrupted by a node
/// drain or a spot reclaim (`DisruptionTarget`) is ignored by the pod failure policy and
/// replaced by Kubernetes, so it does not fail the attempt; with a checkpoint volume the new
/// pod resumes from the files the old one wrote.
pub fn render_job(job: &Job, attempt: u32, config: &KubernetesConfig) -> Result<Value, ExecError> {
    let JobKind::Kubernetes {
        image,
        command,
        env,
        node_selector,
        tolerations,
        checkpoint_volume,
        service_account,
    } = &job.spec.kind
    else {
        return Err(ExecError::permanent(
            "the Kubernetes executor got a job of another kind",
        ));
    };
    if let Some(account) = service_account
        && !config.allowed_service_accounts.contains(account)
    {
        return Err(ExecError::permanent(format!(
            "service account {account:?} is not in jobs.kubernetes.allowed_service_accounts; \
             ask an operator to allow it, or leave service_account out"
        )));
    }
    if let Some(volume) = checkpoint_volume
        && !config.allowed_claims.contains(&volume.claim_name)
    {
        return Err(ExecError::permanent(format!(
            "volume claim {:?} is not in jobs.kubernetes.allowed_claims; ask an operator to \
             allow it, or leave checkpoint_volume out",
            volume.claim_name
        )));
    }
    let name = object_name(job, attempt);
    let labels = json!({
        LABEL_JOB: job.id,
        LABEL_TENANT: job.tenant.as_str(),
        LABEL_PROJECT: job.project.as_str(),
        LABEL_ATTEMPT: attempt.to_string(),
    });

    let mut variables = vec![
        json!({"name": "GHAF_JOB_ID", "value": job.id}),
        json!({"name": "GHAF_JOB_ATTEMPT", "value": attempt.to_string()}),
        json!({"name": "GHAF_PARAMETERS", "value": Value::Object(job.spec.parameters.clone()).to_string()}),
        json!({"name": "GHAF_INPUTS", "value": Value::Array(
            job.spec.inputs.iter().map(|input| json!(input)).collect()
        ).to_string()}),
        json!({"name": "MLFLOW_TRACKING_URI", "value": config.tracking_uri}),
        json!({"name": "MLFLOW_TRACKING_TOKEN", "valueFrom": {"secretKeyRef": {"name": name, "key": "token"}}}),
    ];
    if let Some(label) = &job.spec.label {
        variables.push(json!({"name": "GHAF_LABEL", "value": label}));
    }
    if let Some(volume) = checkpoint_volume {
        variables.push(json!({"name": "GHAF_CHECKPOINT_DIR", "value": volume.mount_path}));
        variables.push(
            json!({"name": "GHAF_OUTPUT_DIR", "value": format!("{}/output", volume.mount_path)}),
        );
    }
    for (key, value) in env {
        variables.push(json!({"name": key, "value": value}));
    }

    let resources = &job.spec.resources;
    let cpu = format!("{}m", resources.millicpus());
    let memory = format!("{}Mi", resources.memory_mb);
    let mut requests = json!({"cpu": cpu, "memory": memory});
    let mut limits = json!({"memory": memory});
    if resources.gpus > 0 {
        requests["nvidia.com/gpu"] = json!(resources.gpus.to_string());
        limits["nvidia.com/gpu"] = json!(resources.gpus.to_string());
    }

    let mut container = json!({
        "name": "train",
        "image": image,
        "env": variables,
        "resources": {"requests": requests, "limits": limits},
    });
    if !command.is_empty() {
        container["command"] = json!(command);
    }
    let mut pod_spec = json!({
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 60,
        "containers": [],
    });
    if let Some(volume) = checkpoint_volume {
        container["volumeMounts"] =
            json!([{"name": "checkpoints", "mountPath": volume.mount_path}]);
        pod_spec["volumes"] = json!([{
            "name": "checkpoints",
            "persistentVolumeClaim": {"claimName": volume.claim_name},
        }]);
    }
    pod_spec["containers"] = json!([container]);
    if !node_selector.is_empty() {
        pod_spec["nodeSelector"] = json!(node_selector);
    }
    if !tolerations.is_empty() {
        pod_spec["tolerations"] = Value::Array(
            tolerations
                .iter()
                .map(|toleration| {
                    let mut value = json!({"key": toleration.key, "operator": toleration.operator});
                    if let Some(v) = &toleration.value {
                        value["value"] = json!(v);
                    }
                    if let Some(effect) = &toleration.effect {
                        value["effect"] = json!(effect);
                    }
                    value
                })
                .collect(),
        );
    }
    if let Some(account) = service_account {
        pod_spec["serviceAccountName"] = json!(account);
    }

    Ok(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": config.namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": config.ttl_seconds_after_finished,
            "podFailurePolicy": {"rules": [{
                "action": "Ignore",
                "onPodConditions": [{"type": "DisruptionTarget"}],
            }]},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }))
}

/// Renders the Secret that holds the attempt's tracking token.
pub fn render_token_secret(
    job: &Job,
    attempt: u32,
    config: &KubernetesConfig,
    token: &str,
) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": object_name(job, attempt),
            "namespace": config.namespace,
            "labels": {LABEL_JOB: job.id, LABEL_TENANT: job.tenant.as_str()},
        },
        "type": "Opaque",
        "stringData": {"token": token},
    })
}

/// The state of a Kubernetes Job, read from its `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobStatus {
    /// Pods are pending or running.
    Running {
        active: u64,
    },
    Complete,
    Failed {
        reason: String,
    },
}

/// Maps a Job's `status` to [`JobStatus`]: a `Complete` or `Failed` condition with status
/// `True` ends it, anything else is still running.
pub fn parse_status(job: &Value) -> JobStatus {
    let status = &job["status"];
    if let Some(conditions) = status["conditions"].as_array() {
        for condition in conditions {
            if condition["status"] != "True" {
                continue;
            }
            match condition["type"].as_str() {
                Some("Complete") => return JobStatus::Complete,
                Some("Failed") => {
                    let reason = condition["reason"].as_str().unwrap_or("Failed");
                    let message = condition["message"].as_str().unwrap_or("");
                    return JobStatus::Failed {
                        reason: format!("{reason}: {message}")
                            .trim_end_matches(": ")
                            .to_owned(),
                    };
                }
                _ => {}
            }
        }
    }
    JobStatus::Running {
        active: status["active"].as_u64().unwrap_or(0),
    }
}

/// Runs `kubernetes` jobs as Kubernetes Jobs.
#[derive(Clone, Debug)]
pub struct KubernetesExecutor {
    config: KubernetesConfig,
    http: reqwest::Client,
}

impl KubernetesExecutor {
    /// Builds the executor, reading the CA file now so a bad file fails at start.
    pub fn new(config: KubernetesConfig) -> Result<Self, String> {
        if config.api_url.is_empty() {
            return Err("kubernetes.api_url is empty; set the API server URL".to_owned());
        }
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
        if !config.ca_file.is_empty() {
            let pem = std::fs::read(&config.ca_file).map_err(|error| {
                format!("cannot read kubernetes.ca_file {}: {error}", config.ca_file)
            })?;
            let certificate = reqwest::Certificate::from_pem(&pem).map_err(|error| {
                format!(
                    "kubernetes.ca_file {} is not a PEM certificate: {error}",
                    config.ca_file
                )
            })?;
            builder = builder.add_root_certificate(certificate);
        }
        let http = builder
            .build()
            .map_err(|error| format!("cannot build the Kubernetes HTTP client: {error}"))?;
        Ok(Self { config, http })
    }

    fn bearer(&self) -> Result<Option<String>, ExecError> {
        if self.config.token_file.is_empty() {
            return Ok(None);
        }
        let path = PathBuf::from(&self.config.token_file);
        let token = std::fs::read_to_string(&path).map_err(|error| {
            ExecError::transient(format!(
                "cannot read kubernetes.token_file {}: {error}",
                path.display()
            ))
        })?;
        Ok(Some(token.trim().to_owned()))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.api_url.trim_end_matches('/'))
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), ExecError> {
        let mut request = self.http.request(method.clone(), self.url(path));
        if let Some(token) = self.bearer()? {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|error| {
            ExecError::transient(format!("Kubernetes API {method} {path} failed: {error}"))
        })?;
        let status = response.status();
        let value = response.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, value))
    }

    fn api_error(method: &str, path: &str, status: StatusCode, body: &Value) -> ExecError {
        let message = format!(
            "Kubernetes API {method} {path} returned {status}: {}",
            body["message"].as_str().unwrap_or("no message")
        );
        if status == StatusCode::UNAUTHORIZED
            || status == StatusCode::FORBIDDEN
            || status == StatusCode::UNPROCESSABLE_ENTITY
            || status == StatusCode::BAD_REQUEST
        {
            ExecError::permanent(message)
        } else {
            ExecError::transient(message)
        }
    }

    async fn create(&self, path: &str, body: &Value) -> Result<(), ExecError> {
        let (status, response) = self.send(reqwest::Method::POST, path, Some(body)).await?;
        // An object of this attempt that exists already was created by this attempt before a
        // retry of the request; it is adopted.
        if status.is_success() || status == StatusCode::CONFLICT {
            return Ok(());
        }
        Err(Self::api_error("POST", path, status, &response))
    }

    async fn delete(&self, path: &str) {
        let body = json!({"propagationPolicy": "Background"});
        match self.send(reqwest::Method::DELETE, path, Some(&body)).await {
            Ok((status, _)) if status.is_success() || status == StatusCode::NOT_FOUND => {}
            Ok((status, response)) => {
                tracing::warn!(path, %status, message = ?response["message"], "cannot delete a Kubernetes object")
            }
            Err(error) => tracing::warn!(path, %error, "cannot delete a Kubernetes object"),
        }
    }
}

#[async_trait]
impl Executor for KubernetesExecutor {
    async fn run(&self, context: &JobContext) -> Result<Value, ExecError> {
        let job = &context.job;
        let attempt = context.lease.attempt;
        let namespace = &self.config.namespace;
        let name = object_name(job, attempt);
        let manifest = render_job(job, attempt, &self.config)?;
        let jobs_path = format!("/apis/batch/v1/namespaces/{namespace}/jobs");
        let secrets_path = format!("/api/v1/namespaces/{namespace}/secrets");
        let job_path = format!("{jobs_path}/{name}");
        let secret_path = format!("{secrets_path}/{name}");

        let lifetime = 7 * 24 * 3600;
        let (token_id, token) = issue_job_token(context, lifetime).await?;
        let outcome = async {
            self.create(
                &secrets_path,
                &render_token_secret(job, attempt, &self.config, &token),
            )
            .await?;
            self.create(&jobs_path, &manifest).await?;
            context
                .log
                .system(format!("created Kubernetes Job {namespace}/{name}"));
            self.follow(context, &job_path).await
        }
        .await;
        // A Job that reported Failed has no running pods and stays for inspection until its
        // TTL. After any other error (a stop, an API outage, a lost Job) its pods may still
        // run, and the retry would start a second Job beside it, so it is deleted.
        let job_failed = matches!(
            &outcome,
            Err(ExecError::Failed { message, .. }) if message.starts_with(JOB_FAILED)
        );
        if outcome.is_err() && !job_failed {
            self.delete(&job_path).await;
            context
                .log
                .system(format!("deleted Kubernetes Job {namespace}/{name}"));
        }
        self.delete(&secret_path).await;
        revoke_job_token(context, &token_id).await;
        outcome.map(|()| json!({"kubernetes_job": format!("{namespace}/{name}")}))
    }
}

impl KubernetesExecutor {
    /// Reads the Job's status until it completes, fails or the attempt is asked to stop.
    async fn follow(&self, context: &JobContext, job_path: &str) -> Result<(), ExecError> {
        let mut last: Option<JobStatus> = None;
        let mut read_failures = 0u32;
        loop {
            let read = self.send(reqwest::Method::GET, job_path, None).await;
            match read {
                Ok((status, body)) if status.is_success() => {
                    read_failures = 0;
                    let current = parse_status(&body);
                    if last.as_ref() != Some(&current) {
                        context
                            .log
                            .system(format!("Kubernetes Job status: {current:?}"));
                    }
                    match &current {
                        JobStatus::Complete => return Ok(()),
                        JobStatus::Failed { reason } => {
                            return Err(ExecError::transient(format!("{JOB_FAILED}: {reason}")));
                        }
                        JobStatus::Running { .. } => {}
                    }
                    last = Some(current);
                }
                Ok((status, body)) if status == StatusCode::NOT_FOUND => {
                    return Err(Self::api_error("GET", job_path, status, &body));
                }
                Ok((status, body)) => {
                    read_failures += 1;
                    if read_failures >= 5 {
                        return Err(Self::api_error("GET", job_path, status, &body));
                    }
                }
                Err(error) => {
                    read_failures += 1;
                    if read_failures >= 5 {
                        return Err(error);
                    }
                }
            }
            tokio::select! {
                reason = context.stopped() => return Err(ExecError::Stopped(reason)),
                () = tokio::time::sleep(Duration::from_secs(self.config.poll_seconds.max(1))) => {}
            }
        }
    }
}
