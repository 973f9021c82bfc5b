//! The command executor: runs the job's program on the worker's machine with the tracking
//! server's URI, a token for the job's project, the input files and an output directory in
//! its environment, streams its stdout and stderr to the job log, and stops it on cancel or
//! shutdown (SIGTERM to its process group, SIGKILL after a grace period).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use ghaf_core::{PrincipalId, ProjectRole, Role};
use ghaf_meta::StoredToken;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

use super::{ExecError, Executor, JobContext, StopReason};
use crate::{JobInput, JobKind, LogStream};

/// Lifetime of the token a command gets when the job sets no time limit.
const DEFAULT_TOKEN_SECONDS: u64 = 24 * 3600;

/// Runs `command` jobs as local processes.
#[derive(Clone, Debug)]
pub struct CommandExecutor {
    /// Tracking server URI given to the program as `MLFLOW_TRACKING_URI`, such as
    /// `http://127.0.0.1:8080`; empty leaves it unset.
    pub tracking_uri: String,
    /// Time between SIGTERM and SIGKILL when the program is stopped.
    pub stop_grace: Duration,
}

impl CommandExecutor {
    pub fn new(tracking_uri: impl Into<String>) -> Self {
        Self {
            tracking_uri: tracking_uri.into(),
            stop_grace: Duration::from_secs(10),
        }
    }
}

#[async_trait]
impl Executor for CommandExecutor {
    async fn run(&self, context: &JobContext) -> Result<Value, ExecError> {
        let job = &context.job;
        let JobKind::Command {
            command,
            env,
            timeout_seconds,
        } = &job.spec.kind
        else {
            return Err(ExecError::permanent(
                "the command executor got a job of another kind",
            ));
        };

        let inputs_dir = context.work_dir.join("inputs");
        let output_dir = context.work_dir.join("output");
        for dir in [&inputs_dir, &output_dir] {
            tokio::fs::create_dir_all(dir).await.map_err(|error| {
                ExecError::transient(format!("cannot create {}: {error}", dir.display()))
            })?;
        }
        let mut variables: BTreeMap<String, String> = env.clone();
        let mut input_paths = Vec::new();
        for (index, input) in job.spec.inputs.iter().enumerate() {
            let (bytes, _) = context.services.read_input(job, input).await?;
            let JobInput::DatasetVersion { dataset, version } = input else {
                continue;
            };
            let path = inputs_dir.join(format!("{dataset}-v{version}.parquet"));
            tokio::fs::write(&path, &bytes).await.map_err(|error| {
                ExecError::transient(format!("cannot write {}: {error}", path.display()))
            })?;
            let path = path.display().to_string();
            variables.insert(format!("GHAF_INPUT_{index}"), path.clone());
            input_paths.push(json!({"dataset": dataset, "version": version, "path": path}));
        }
        variables.insert(
            "GHAF_INPUTS".to_owned(),
            Value::Array(input_paths).to_string(),
        );
        variables.insert(
            "GHAF_OUTPUT_DIR".to_owned(),
            output_dir.display().to_string(),
        );
        variables.insert("GHAF_JOB_ID".to_owned(), job.id.clone());
        variables.insert(
            "GHAF_JOB_ATTEMPT".to_owned(),
            context.lease.attempt.to_string(),
        );
        variables.insert(
            "GHAF_PARAMETERS".to_owned(),
            Value::Object(job.spec.parameters.clone()).to_string(),
        );
        if let Some(label) = &job.spec.label {
            variables.insert("GHAF_LABEL".to_owned(), label.clone());
        }
        if !self.tracking_uri.is_empty() {
            variables.insert("MLFLOW_TRACKING_URI".to_owned(), self.tracking_uri.clone());
        }
        let token =
            issue_job_token(context, timeout_seconds.unwrap_or(DEFAULT_TOKEN_SECONDS)).await?;
        variables.insert("MLFLOW_TRACKING_TOKEN".to_owned(), token.1.clone());

        let result = self
            .run_process(context, command, &variables, *timeout_seconds)
            .await;
        revoke_job_token(context, &token.0).await;
        result
    }
}

impl CommandExecutor {
    async fn run_process(
        &self,
        context: &JobContext,
        command: &[String],
        variables: &BTreeMap<String, String>,
        timeout_seconds: Option<u64>,
    ) -> Result<Value, ExecError> {
        context
            .log
            .system(format!("starting {:?}", command.join(" ")));
        // The worker's own environment can hold operator secrets (database URLs, cloud
        // keys); the command gets only the variables it needs to run and Ghaf's own.
        let inherited = INHERITED_VARIABLES
            .iter()
            .filter_map(|name| std::env::var_os(name).map(|value| (*name, value)));
        let mut child = Command::new(&command[0])
            .args(&command[1..])
            .env_clear()
            .envs(inherited)
            .envs(variables)
            .current_dir(&context.work_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| {
                ExecError::permanent(format!("cannot start {:?}: {error}", command[0]))
            })?;
        let pid = child.id();

        let stdout = child
            .stdout
            .take()
            .map(|out| pump(out, LogStream::Stdout, context.log.clone()));
        let stderr = child
            .stderr
            .take()
            .map(|err| pump(err, LogStream::Stderr, context.log.clone()));
        let deadline = async {
            match timeout_seconds {
                Some(seconds) => tokio::time::sleep(Duration::from_secs(seconds)).await,
                None => std::future::pending().await,
            }
        };

        let ended = tokio::select! {
            status = child.wait() => Ok(status),
            reason = context.stopped() => Err(Some(reason)),
            () = deadline => Err(None),
        };
        let status = match ended {
            Ok(status) => status.map_err(|error| {
                ExecError::transient(format!("cannot wait for the command: {error}"))
            })?,
            Err(reason) => {
                self.terminate(&mut child, pid).await;
                drain(stdout, stderr).await;
                return Err(match reason {
                    Some(reason) => {
                        context.log.system(format!("command stopped ({reason:?})"));
                        ExecError::Stopped(reason)
                    }
                    None => ExecError::transient(format!(
                        "the command ran longer than its time limit of {} s and was stopped",
                        timeout_seconds.unwrap_or_default()
                    )),
                });
            }
        };
        drain(stdout, stderr).await;
        match status.code() {
            Some(0) => {
                let outputs = list_outputs(&context.work_dir.join("output")).await;
                Ok(json!({"exit_code": 0, "outputs": outputs}))
            }
            Some(code) => Err(ExecError::transient(format!(
                "the command exited with status {code}"
            ))),
            None => Err(ExecError::transient("the command was killed by a signal")),
        }
    }

    /// Sends SIGTERM to the command's process group, then SIGKILL to the whole group after
    /// the grace period, so children that ignore SIGTERM do not outlive the job.
    async fn terminate(&self, child: &mut tokio::process::Child, pid: Option<u32>) {
        if let Some(pid) = pid {
            signal_group(pid, "-TERM").await;
        }
        if tokio::time::timeout(self.stop_grace, child.wait())
            .await
            .is_err()
        {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        if let Some(pid) = pid {
            // The lead process is gone; its group may still hold children and the pipes.
            signal_group(pid, "-KILL").await;
        }
    }
}

/// Signals a process group; `kill` is the portable way to do it without unsafe code.
async fn signal_group(pid: u32, signal: &str) {
    let sent = Command::new("kill")
        .args([signal, "--", &format!("-{pid}")])
        .stderr(Stdio::null())
        .status()
        .await;
    if let Err(error) = sent {
        tracing::warn!(pid, signal, %error, "cannot signal a job command's process group");
    }
}

/// Maximum time to wait for the output pumps after the command ended. A background child
/// that inherited the pipes must not keep the job running.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Waits for the output pumps, for at most [`DRAIN_LIMIT`] in all.
async fn drain(
    stdout: Option<tokio::task::JoinHandle<()>>,
    stderr: Option<tokio::task::JoinHandle<()>>,
) {
    let pumps = [stdout, stderr].into_iter().flatten().collect::<Vec<_>>();
    let aborts: Vec<_> = pumps.iter().map(|pump| pump.abort_handle()).collect();
    let waited = tokio::time::timeout(DRAIN_LIMIT, async {
        for pump in pumps {
            let _ = pump.await;
        }
    })
    .await;
    if waited.is_err() {
        for abort in aborts {
            abort.abort();
        }
    }
}

/// Variables of the worker's environment that a command inherits; every other one is left
/// out, and the job spec's `env` and Ghaf's variables are added.
const INHERITED_VARIABLES: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", "USER"];

/// Maximum bytes of one job-log line; longer output is split into several lines.
const MAX_LINE_BYTES: usize = 64 * 1024;

/// Copies lines of a child's output stream to the job log. Bytes that are not UTF-8 are
/// replaced, and a line longer than [`MAX_LINE_BYTES`] is split, so the pipe is always
/// drained and no line is held whole in memory.
fn pump<R>(reader: R, stream: LogStream, log: super::LogSink) -> tokio::task::JoinHandle<()>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut reader = BufReader::new(reader);
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = (&mut reader)
                .take(MAX_LINE_BYTES as u64)
                .read_until(b'\n', &mut line)
                .await;
            match read {
                Ok(0) => return,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                    }
                    log.write(stream, String::from_utf8_lossy(&line).into_owned());
                }
                Err(error) => {
                    log.system(format!(
                        "cannot read the command's {}: {error}",
                        stream.as_str()
                    ));
                    return;
                }
            }
        }
    })
}

async fn list_outputs(dir: &std::path::Path) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(mut entries) = tokio::fs::read_dir(dir).await {
        while let Ok(Some(entry)) = entries.next_entry().await {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    names
}

/// Issues a token for the job's creator, restricted to the job's project and to the
/// developer role, which expires after `seconds` and is revoked when the attempt ends.
/// Returns its id and secret.
pub(crate) async fn issue_job_token(
    context: &JobContext,
    seconds: u64,
) -> Result<(ghaf_core::TokenId, String), ExecError> {
    let job = &context.job;
    let (id, secret, secret_hash) = ghaf_auth::token::generate();
    let now = ghaf_core::now_millis();
    let lifetime = i64::try_from(seconds.saturating_add(300)).unwrap_or(i64::MAX / 2000) * 1000;
    let stored = StoredToken {
        id: id.clone(),
        tenant: job.tenant.clone(),
        principal: PrincipalId::from_stored(job.created_by.clone()),
        name: format!("job-{}-attempt-{}", job.id, context.lease.attempt),
        secret_hash,
        project: Some(job.project.clone()),
        max_role: Some(Role::from(ProjectRole::Developer)),
        created_at: now,
        created_by: format!("job:{}", job.id),
        expires_at: Some(now.saturating_add(lifetime)),
        revoked_at: None,
    };
    context
        .services
        .meta
        .create_token(&stored)
        .await
        .map_err(|error| {
            ExecError::transient(format!("cannot issue the job's tracking token: {error}"))
        })?;
    Ok((id, secret))
}

pub(crate) async fn revoke_job_token(context: &JobContext, id: &ghaf_core::TokenId) {
    let job = &context.job;
    if let Err(error) = context
        .services
        .meta
        .revoke_token(&job.tenant, id, ghaf_core::now_millis())
        .await
    {
        tracing::warn!(job = %job.id, tenant = %job.tenant, token_id = %id, %error, "cannot revoke a job token; it expires on its own");
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::Cancelled => "cancelled",
            StopReason::Interrupted => "interrupted",
            StopReason::LeaseLost => "lease lost",
        })
    }
}
