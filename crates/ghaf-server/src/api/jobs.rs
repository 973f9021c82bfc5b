//! Training jobs of a project: submit, list, get, cancel, and read logs (optionally
//! following them until the job ends).

use std::time::Duration;

use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use ghaf_auth::{Action, Caller};
use ghaf_core::ErrorCode;
use ghaf_jobs::{Job, JobError, JobFilter, JobSpec, JobState, JobStore, LogChunk};
use ghaf_meta::Project;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Access, ApiRouter, RouteInfo};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

/// Time between reads of new log chunks while following.
const FOLLOW_POLL: Duration = Duration::from_millis(500);
/// Log chunks read per database query.
const LOG_PAGE: u32 = 500;

pub fn register(api: &mut ApiRouter) {
    use Access::Action as A;
    const JOBS: &str = "/api/v1/projects/{project}/jobs";
    const JOB: &str = "/api/v1/projects/{project}/jobs/{job}";
    api.add(
        RouteInfo::new(
            Method::POST,
            JOBS,
            A(Action::JobsSubmit),
            "Submit a training job",
        )
        .request("JobSpecBody")
        .response("JobView")
        .status(201),
        submit,
    );
    api.add(
        RouteInfo::new(
            Method::GET,
            JOBS,
            A(Action::JobsList),
            "List the project's jobs, newest first",
        )
        .response("JobList")
        .query(&[
            ("state", "queued, running, succeeded, failed or cancelled"),
            ("limit", "Maximum number of jobs, 1 to 1000; default 100"),
        ]),
        list,
    );
    api.add(
        RouteInfo::new(
            Method::GET,
            JOB,
            A(Action::JobsGet),
            "Get a job with its state, attempts and result",
        )
        .response("JobView"),
        get,
    );
    api.add(
        RouteInfo::new(
            Method::POST,
            "/api/v1/projects/{project}/jobs/{job}/cancel",
            A(Action::JobsCancel),
            "Cancel a job: a queued job at once, a running one at its next heartbeat",
        )
        .response("JobView"),
        cancel,
    );
    api.add(
        RouteInfo::new(
            Method::GET,
            "/api/v1/projects/{project}/jobs/{job}/logs",
            A(Action::JobsLogs),
            "Read a job's log as NDJSON chunks ({seq, attempt, stream, time, content}); with \
             follow=true the response stays open until the job ends",
        )
        .query(&[
            ("after", "Only chunks with a larger seq; default 0"),
            (
                "follow",
                "Keep the response open and send new chunks until the job ends",
            ),
        ]),
        logs,
    );
}

/// Body of `POST /projects/{project}/jobs`: the job spec.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(value_type = Object)]
pub struct JobSpecBody(pub serde_json::Value);

/// A job.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub id: String,
    pub name: String,
    /// queued, running, succeeded, failed or cancelled.
    pub state: String,
    /// The submitted spec, with defaults filled in.
    #[schema(value_type = Object)]
    pub spec: JobSpec,
    /// Attempts started so far.
    pub attempt: u32,
    /// Attempts ended by an interruption (SIGTERM), which do not count toward max_attempts.
    pub interruptions: u32,
    /// RFC 3339 time before which a queued job is not started (retry backoff).
    pub not_before: String,
    pub cancel_requested: bool,
    /// Worker holding the running attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Latest checkpoint: blob digest and progress (trees for GBDT).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub checkpoint: Option<ghaf_jobs::CheckpointRef>,
    /// Result document of the job: run id, metrics, model version, gate decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// Error of the latest failed attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at: String,
    pub created_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

impl From<Job> for JobView {
    fn from(job: Job) -> Self {
        Self {
            id: job.id,
            name: job.name,
            state: job.state.as_str().to_owned(),
            spec: job.spec,
            attempt: job.attempt,
            interruptions: job.interruptions,
            not_before: ghaf_core::format_millis(job.not_before),
            cancel_requested: job.cancel_requested,
            worker: job.lease_owner,
            checkpoint: job.checkpoint,
            result: job.result,
            error: job.error,
            created_at: ghaf_core::format_millis(job.created_at),
            created_by: job.created_by,
            started_at: job.started_at.map(ghaf_core::format_millis),
            finished_at: job.finished_at.map(ghaf_core::format_millis),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobView>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    limit: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    after: Option<i64>,
    follow: Option<bool>,
}

impl From<JobError> for ApiError {
    fn from(error: JobError) -> Self {
        let details = match error.field() {
            Some(field) => serde_json::json!({ "field": field }),
            None => serde_json::Value::Null,
        };
        ApiError::new(error.code(), error.to_string()).with_details(details)
    }
}

fn store(state: &AppState) -> Result<&JobStore, ApiError> {
    state
        .job_services()
        .map(|services| &services.jobs)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unavailable,
                "the job system is not configured on this server",
            )
        })
}

async fn submit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(project): Extension<Project>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let spec = JobSpec::from_json(body)?;
    let job = store(&state)?
        .submit(
            &project.tenant,
            &project.id,
            &spec,
            caller.principal.as_str(),
            ghaf_core::now_millis(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(job.into())))
}

async fn list(
    State(state): State<AppState>,
    Extension(project): Extension<Project>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<JobList>, ApiError> {
    let state_filter = match query.state.as_deref() {
        None => None,
        Some(text) => Some(JobState::parse(text).ok_or_else(|| {
            ApiError::invalid_field(
                "state",
                format!(
                    "state {text:?} is invalid; use queued, running, succeeded, failed or cancelled"
                ),
            )
        })?),
    };
    if let Some(limit) = query.limit
        && !(1..=1000).contains(&limit)
    {
        return Err(ApiError::invalid_field(
            "limit",
            format!("limit is {limit}; use 1 to 1000"),
        ));
    }
    let jobs = store(&state)?
        .list(
            &project.tenant,
            &project.id,
            &JobFilter {
                state: state_filter,
                limit: query.limit.unwrap_or(100),
            },
        )
        .await?;
    Ok(Json(JobList {
        jobs: jobs.into_iter().map(Into::into).collect(),
    }))
}

async fn get(
    State(state): State<AppState>,
    Extension(project): Extension<Project>,
    ApiPath((_, job)): ApiPath<(String, String)>,
) -> Result<Json<JobView>, ApiError> {
    let job = store(&state)?
        .get(&project.tenant, &project.id, &job)
        .await?;
    Ok(Json(job.into()))
}

async fn cancel(
    State(state): State<AppState>,
    Extension(project): Extension<Project>,
    ApiPath((_, job)): ApiPath<(String, String)>,
) -> Result<Json<JobView>, ApiError> {
    let job = store(&state)?
        .cancel(&project.tenant, &project.id, &job, ghaf_core::now_millis())
        .await?;
    Ok(Json(job.into()))
}

/// One line of the log response.
#[derive(Serialize)]
struct LogLine<'a> {
    seq: i64,
    attempt: u32,
    stream: &'a str,
    time: String,
    content: &'a str,
}

fn ndjson(chunks: &[LogChunk]) -> String {
    let mut text = String::new();
    for chunk in chunks {
        let line = LogLine {
            seq: chunk.seq,
            attempt: chunk.attempt,
            stream: chunk.stream.as_str(),
            time: ghaf_core::format_millis(chunk.created_at),
            content: &chunk.content,
        };
        if let Ok(json) = serde_json::to_string(&line) {
            text.push_str(&json);
            text.push('\n');
        }
    }
    text
}

async fn logs(
    State(state): State<AppState>,
    Extension(project): Extension<Project>,
    ApiPath((_, job_id)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> Result<Response, ApiError> {
    let jobs = store(&state)?.clone();
    // Fails with not_found before the response starts for a job of another project.
    jobs.get(&project.tenant, &project.id, &job_id).await?;
    let after = query.after.unwrap_or(0);
    let follow = query.follow.unwrap_or(false);

    let tenant = project.tenant.clone();
    let project_id = project.id.clone();
    let stream = futures::stream::unfold(Some(after), move |cursor| {
        let jobs = jobs.clone();
        let tenant = tenant.clone();
        let project_id = project_id.clone();
        let job_id = job_id.clone();
        async move {
            let mut after = cursor?;
            loop {
                // Read the state first: chunks stored before a job ends are all visible once
                // it is seen as ended.
                let ended = if follow {
                    match jobs.get(&tenant, &project_id, &job_id).await {
                        Ok(job) => job.state.is_terminal(),
                        Err(error) => {
                            return Some((Err(std::io::Error::other(error.to_string())), None));
                        }
                    }
                } else {
                    true
                };
                let chunks = match jobs
                    .read_logs(&tenant, &project_id, &job_id, after, LOG_PAGE)
                    .await
                {
                    Ok(chunks) => chunks,
                    Err(error) => {
                        tracing::error!(job = %job_id, tenant = %tenant, %error, "cannot read job logs");
                        return Some((Err(std::io::Error::other(error.to_string())), None));
                    }
                };
                if let Some(last) = chunks.last() {
                    after = last.seq;
                    let full_page = chunks.len() as u32 == LOG_PAGE;
                    let next = if ended && !full_page {
                        None
                    } else {
                        Some(after)
                    };
                    return Some((
                        Ok::<_, std::io::Error>(bytes::Bytes::from(ndjson(&chunks))),
                        next,
                    ));
                }
                if ended {
                    return None;
                }
                tokio::time::sleep(FOLLOW_POLL).await;
            }
        }
    });
    let mut response = Body::from_stream(stream).into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}
