//! `ghaf jobs` submits training jobs from a spec file, lists, shows and cancels them, and
//! prints or follows their logs. `ghaf worker` runs a job worker on the server's data.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::Value;

use super::server::ConfigArgs;
use crate::context::Context;
use crate::output;

#[derive(Subcommand, Clone, Debug)]
pub enum JobsCommand {
    /// Submit a job from a spec file (JSON, or TOML when the name ends in .toml)
    Submit {
        file: PathBuf,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// List the project's jobs, newest first
    List {
        /// Only jobs in this state: queued, running, succeeded, failed or cancelled
        #[arg(long)]
        state: Option<String>,
        /// Maximum number of jobs, 1 to 1000
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Show a job with its spec, attempts, checkpoint and result
    Get {
        job: String,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Cancel a queued or running job
    Cancel {
        job: String,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Print a job's log
    Logs {
        job: String,
        /// Keep printing new output until the job ends
        #[arg(long, short = 'f')]
        follow: bool,
        /// Print only chunks after this sequence number
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[arg(long, default_value = "default")]
        project: String,
    },
}

#[derive(Args, Clone, Debug)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub config: ConfigArgs,

    /// Lease owner name of this worker [default: host name, process id and a random suffix]
    #[arg(long)]
    pub id: Option<String>,
}

/// Runs a job worker on the configured metadata database and blob store until SIGINT or
/// SIGTERM; running attempts are then interrupted and go back to the queue.
pub async fn run_worker(args: &WorkerArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    ghaf_server::telemetry::init(config.log_format, &config.log_level);
    let state = ghaf_server::open_state(&config).await?;
    let worker = ghaf_server::jobs::build_worker(&state, args.id.clone())?;
    let (stop, receiver) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(worker.run(receiver));
    ghaf_server::shutdown_signal().await;
    let _ = stop.send(true);
    task.await.context("the job worker task failed")?;
    Ok(())
}

fn read_spec(file: &PathBuf) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the job spec {}", file.display()))?;
    if file.extension().is_some_and(|ext| ext == "toml") {
        let value: toml::Value = toml::from_str(&text)
            .with_context(|| format!("{} is not valid TOML", file.display()))?;
        return serde_json::to_value(value).context("cannot convert the TOML spec to JSON");
    }
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", file.display()))
}

pub async fn run(context: &Context, command: &JobsCommand) -> anyhow::Result<()> {
    let client = context.client()?;
    match command {
        JobsCommand::Submit { file, project } => {
            let spec = read_spec(file)?;
            let response = client.submit_job(project, &spec).await?;
            output::emit(context.output, &response, |job| {
                println!(
                    "submitted job {} ({}); follow it with: ghaf jobs logs --follow {} --project {project}",
                    text(job, "id"),
                    text(job, "name"),
                    text(job, "id")
                );
            });
        }
        JobsCommand::List {
            state,
            limit,
            project,
        } => {
            let response = client
                .list_jobs(project, state.as_deref(), Some(*limit))
                .await?;
            output::emit(context.output, &response, |list| {
                let mut table =
                    output::table(&["id", "name", "kind", "state", "attempt", "created"]);
                for job in list["jobs"].as_array().into_iter().flatten() {
                    table.add_row(vec![
                        text(job, "id"),
                        text(job, "name"),
                        job["spec"]["kind"]["type"]
                            .as_str()
                            .unwrap_or("")
                            .to_owned(),
                        text(job, "state"),
                        job["attempt"].to_string(),
                        text(job, "created_at"),
                    ]);
                }
                output::print_table(&table, "no jobs");
            });
        }
        JobsCommand::Get { job, project } => {
            let response = client.get_job(project, job).await?;
            output::emit(context.output, &response, print_job);
        }
        JobsCommand::Cancel { job, project } => {
            let response = client.cancel_job(project, job).await?;
            output::emit(context.output, &response, |job| {
                if text(job, "state") == "cancelled" {
                    println!("job {} is cancelled", text(job, "id"));
                } else {
                    println!(
                        "cancellation of job {} requested; its worker stops it at the next heartbeat",
                        text(job, "id")
                    );
                }
            });
        }
        JobsCommand::Logs {
            job,
            follow,
            after,
            project,
        } => {
            let json = context.output == output::OutputFormat::Json;
            let mut stdout = std::io::stdout().lock();
            client
                .job_logs(project, job, *after, *follow, |chunk| {
                    let _ = if json {
                        writeln!(stdout, "{chunk}")
                    } else {
                        write!(stdout, "{}", chunk["content"].as_str().unwrap_or(""))
                    };
                    let _ = stdout.flush();
                })
                .await?;
            if *follow && !json {
                let response = client.get_job(project, job).await?;
                eprintln!("job {job} ended as {}", text(&response.value, "state"));
            }
        }
    }
    Ok(())
}

fn text(value: &Value, key: &str) -> String {
    value[key].as_str().unwrap_or("").to_owned()
}

fn print_job(job: &Value) {
    let mut fields = vec![
        ("id", text(job, "id")),
        ("name", text(job, "name")),
        (
            "kind",
            job["spec"]["kind"]["type"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        ),
        ("state", text(job, "state")),
        ("attempt", job["attempt"].to_string()),
        ("interruptions", job["interruptions"].to_string()),
        (
            "created",
            format!("{} by {}", text(job, "created_at"), text(job, "created_by")),
        ),
    ];
    if job["state"] == "queued" {
        fields.push(("not before", text(job, "not_before")));
    }
    if let Some(worker) = job["worker"].as_str() {
        fields.push(("worker", worker.to_owned()));
    }
    if !job["checkpoint"].is_null() {
        fields.push((
            "checkpoint",
            format!(
                "{} (attempt {})",
                job["checkpoint"]["progress"], job["checkpoint"]["attempt"]
            ),
        ));
    }
    if let Some(error) = job["error"].as_str() {
        fields.push(("error", error.to_owned()));
    }
    output::print_fields(&fields);
    if !job["result"].is_null() {
        println!("result:");
        println!("{}", output::pretty_json(&job["result"].to_string()));
    }
}
