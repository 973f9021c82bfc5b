//! `ghaf quickstart`: runs the ML loop against an in-process server on the shipped
//! nycflights13 data, from raw files to a monitored endpoint that retrains itself.
//!
//! The server runs on an embedded store (SQLite and local blobs) in a temporary or given
//! directory and listens on a free port of 127.0.0.1, with its job worker and rollout
//! controller in the same process. The command acts as a client of it: it ingests the five tables, applies
//! feature definitions, trains through a job with a quality gate, deploys an endpoint bound
//! to the feature service, replays July to December as live traffic with labels, and lets a
//! drift alert retrain the model and a canary roll it out. It stops the server before
//! returning, also when a step fails or on Ctrl-C.

mod features;
mod flights;
mod http;
mod ingest;
mod monitoring;
mod pipeline;
mod replay;
mod serving;
mod summary;
mod training;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use ghaf_client::{
    Client, ClientError, CreatePrincipalRequest, CreateProjectRequest, CreateTokenRequest,
    GrantMemberRequest, PrincipalKind,
};
use ghaf_core::ProjectRole;
use ghaf_server::{LogFormat, ServerConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Project the quickstart creates.
const PROJECT: &str = "quickstart";

/// Service account the quickstart creates and issues a project-scoped token to.
const SERVICE_ACCOUNT: &str = "quickstart-bot";

/// Lifetime of the service account's token, in seconds: one day.
const SERVICE_TOKEN_LIFETIME_SECONDS: u64 = 86_400;

/// Time the in-process server gets to finish in-flight requests when it stops.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Directory of the nycflights13 files in the source tree this binary was built from.
const SHIPPED_DATA_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/nycflights13");

/// Exit status after Ctrl-C, as shells report a process ended by SIGINT.
const INTERRUPTED_EXIT_CODE: i32 = 130;

#[derive(Args, Clone, Debug)]
pub struct QuickstartArgs {
    /// Directory for the store: empty, or kept from an earlier quickstart, whose project, dataset versions and registered model are then reused [default: a temporary directory, removed at exit]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Directory with the nycflights13 CSV and schema files [default: data/nycflights13 of the source tree]
    #[arg(long, value_name = "DIR")]
    pub nycflights13: Option<PathBuf>,

    /// Ingest about ROWS rows of each table (every k-th line of the file) in place of every row, for a faster run
    #[arg(long, value_name = "ROWS", value_parser = clap::value_parser!(u64).range(100..))]
    pub sample: Option<u64>,

    /// Write a JSON summary of every stage's outcome to PATH (tables, model versions, AUC per month, drift, alerts, retraining, canary decisions, lineage, stage times)
    #[arg(long, value_name = "PATH")]
    pub summary_json: Option<PathBuf>,
}

/// Wall-clock time of each stage, in the order the stages ran.
#[derive(Default)]
struct StageTimes(Vec<(&'static str, Duration)>);

impl StageTimes {
    fn record(&mut self, stage: &'static str, started: Instant) {
        self.0.push((stage, started.elapsed()));
    }
}

pub async fn run(args: &QuickstartArgs) -> anyhow::Result<()> {
    println!(
        "Ghaf quickstart: the foundation (tenants, projects, principals, tokens, audit log), then \
         ingestion, the feature store, a training job, serving, monitoring, retraining and a canary \
         rollout on nycflights13.\n"
    );
    // Request logs at the info level would hide the step summary. RUST_LOG still overrides
    // the warn level.
    ghaf_server::telemetry::init(LogFormat::Text, "warn");
    let started = Instant::now();
    let mut times = StageTimes::default();

    let source_dir = args
        .nycflights13
        .clone()
        .unwrap_or_else(|| PathBuf::from(SHIPPED_DATA_DIR));
    let source_dir = std::fs::canonicalize(&source_dir).unwrap_or(source_dir);
    if !source_dir.join("flights.csv.gz").is_file() {
        bail!(
            "{} has no flights.csv.gz; pass the directory of the nycflights13 files with --nycflights13 DIR",
            source_dir.display()
        );
    }

    // The temporary directory, if any, is removed when `temporary` is dropped at return.
    let (data_dir, temporary) = match &args.data_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let dir = tempfile::Builder::new()
                .prefix("ghaf-quickstart-")
                .tempdir()
                .context("cannot create a temporary data directory")?;
            (dir.path().to_owned(), Some(dir))
        }
    };
    let keeps_store = temporary.is_none();
    println!(
        "  data directory: {}{}",
        data_dir.display(),
        if keeps_store {
            ""
        } else {
            " (temporary, removed at exit)"
        }
    );
    println!("  source files:   {}", source_dir.display());
    if let Some(rows) = args.sample {
        println!(
            "  sample:         about {} rows of each table",
            thousands(rows)
        );
    }

    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .context("cannot listen on a free port of 127.0.0.1")?;
    let address = listener.local_addr()?;
    let mut config = ServerConfig {
        data_dir: data_dir.clone(),
        listen: address,
        ..ServerConfig::default()
    };
    // The worker picks up the training jobs sooner than with the default poll of a second.
    config.jobs.poll_ms = 100;
    // The replay evaluates the monitor through the API after each simulated week. The
    // evaluator's clock would run it at wall-clock times instead, before the recent training
    // set that its alert's retraining job reads exists.
    config.monitoring.evaluator = false;

    let foundation_started = Instant::now();
    let state = ghaf_server::open_state(&config)
        .await
        .context("step 1, open the embedded store, failed")?;
    step(
        1,
        "opened the embedded store (SQLite metadata, local blobs)",
    );

    let admin_secret = match ghaf_server::bootstrap(&state)
        .await
        .context("step 2, bootstrap, failed")?
    {
        Some(created) => {
            step(
                2,
                &format!(
                    "bootstrapped tenant {}, project {} and admin user {}",
                    created.tenant.id, created.project.name, created.admin.name
                ),
            );
            created.token.secret
        }
        None => {
            if !has_quickstart_project(&state).await? {
                bail!(
                    "step 2, bootstrap, failed: {} already contains a Ghaf store that no quickstart created; \
                     pass an empty --data-dir, the data directory of an earlier quickstart, or omit it to use a temporary directory",
                    data_dir.display()
                );
            }
            let issued = state
                .tenancy()
                .issue_recovery_token()
                .await
                .context("step 2, issue an admin token for the existing store, failed")?;
            step(
                2,
                "reused the store of an earlier quickstart and issued a new admin token (the audit log records it)",
            );
            issued.secret
        }
    };

    let url = format!("http://{address}");
    let server = InProcessServer::start(listener, state);
    step(3, &format!("server listening on {url}"));

    let steps = run_client_steps(
        &url,
        &admin_secret,
        &source_dir,
        args.sample,
        &data_dir,
        foundation_started,
        &mut times,
    );
    let result: anyhow::Result<serde_json::Value> = tokio::select! {
        result = steps => result,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\nInterrupted by Ctrl-C: stopping the server.");
            let stopped = server.stop().await;
            if let Err(error) = stopped {
                eprintln!("{error:#}");
            }
            // Training runs on a blocking thread that cannot be cancelled, and the runtime
            // would wait for it at exit, so the process exits here after the cleanup.
            drop(temporary);
            std::process::exit(INTERRUPTED_EXIT_CODE);
        }
    };
    let stopped = server.stop().await;
    let mut summary = result?;
    stopped?;
    step(16, "stopped the server");
    println!("\nAll steps passed.");

    println!("\nTime per stage (wall clock):");
    for (stage, time) in &times.0 {
        println!("  {stage:<36} {:>6.1} s", time.as_secs_f64());
    }
    let total = started.elapsed().as_secs_f64();
    println!("  {:<36} {total:>6.1} s", "total");

    if let Some(path) = &args.summary_json {
        summary["stages"] = serde_json::Value::Array(
            times
                .0
                .iter()
                .map(|(stage, time)| serde_json::json!({"stage": stage, "seconds": time.as_secs_f64()}))
                .collect(),
        );
        summary["total_seconds"] = serde_json::json!(total);
        summary["data_dir"] = serde_json::json!(data_dir.display().to_string());
        let text = serde_json::to_string_pretty(&summary)?;
        std::fs::write(path, text)
            .with_context(|| format!("cannot write the summary to {}", path.display()))?;
        println!("\nSummary written to {}.", path.display());
    }

    if keeps_store {
        println!(
            "\nThe store stays in {dir}. Admin token (shown once; Ghaf stores only its hash):\n\n  {admin_secret}\n\n\
             Start the server on it again with:\n  ghaf server --data-dir {dir}\n\
             log in with:\n  ghaf login --url http://127.0.0.1:8080 --token <the token above>\n\
             and look around with:\n  \
             ghaf datasets versions flights --project {PROJECT}\n  \
             ghaf features list --project {PROJECT}\n  \
             ghaf jobs list --project {PROJECT}\n  \
             ghaf endpoints get {endpoint} --project {PROJECT}\n  \
             ghaf monitor report {monitor} --project {PROJECT}\n  \
             ghaf monitor alerts {monitor} --project {PROJECT}",
            dir = data_dir.display(),
            endpoint = serving::ENDPOINT,
            monitor = monitoring::MONITOR,
        );
    } else {
        println!(
            "\nThe store was temporary and is removed now; pass --data-dir DIR to keep it and look \
             around with the ghaf commands afterwards."
        );
    }
    Ok(())
}

/// Returns whether the store has the quickstart's project, in any tenant: the mark of a
/// store that an earlier quickstart created.
async fn has_quickstart_project(state: &ghaf_server::AppState) -> anyhow::Result<bool> {
    for tenant in state.store().list_tenants().await? {
        if state
            .store()
            .get_project_by_name(&tenant.id, PROJECT)
            .await?
            .is_some()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Returns whether the error is the server's `409 already_exists`.
fn already_exists(error: &ClientError) -> bool {
    matches!(error, ClientError::Api { status: 409, .. })
}

/// Formats a count with commas between thousands, such as 336,776.
fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

async fn run_client_steps(
    url: &str,
    admin_token: &str,
    source_dir: &Path,
    sample: Option<u64>,
    data_dir: &Path,
    foundation_started: Instant,
    times: &mut StageTimes,
) -> anyhow::Result<serde_json::Value> {
    let admin = Client::new(url, Some(admin_token.to_owned()))?;

    let identity = admin
        .whoami()
        .await
        .context("step 4, whoami, failed")?
        .value;
    step(
        4,
        &format!(
            "whoami: {} ({}) in tenant {}, tenant roles {}",
            identity.principal.name,
            identity.principal.kind,
            identity.tenant,
            identity.tenant_roles.join(", ")
        ),
    );

    let project = CreateProjectRequest {
        name: PROJECT.to_owned(),
        description: "Created by ghaf quickstart".to_owned(),
    };
    match admin.create_project(&project).await {
        Ok(_) => step(5, &format!("created project {PROJECT}")),
        Err(error) if already_exists(&error) => {
            step(5, &format!("reused project {PROJECT}"));
        }
        Err(error) => {
            return Err(error).with_context(|| format!("step 5, create project {PROJECT}, failed"));
        }
    }

    let account = CreatePrincipalRequest {
        name: SERVICE_ACCOUNT.to_owned(),
        kind: PrincipalKind::ServiceAccount,
        email: None,
    };
    match admin.create_principal(&account).await {
        Ok(_) => {}
        Err(error) if already_exists(&error) => {}
        Err(error) => {
            return Err(error).with_context(|| {
                format!("step 6, create service account {SERVICE_ACCOUNT}, failed")
            });
        }
    }
    let membership = GrantMemberRequest {
        principal: SERVICE_ACCOUNT.to_owned(),
        role: ProjectRole::Developer,
    };
    match admin.grant_member(PROJECT, &membership).await {
        Ok(_) => {}
        Err(error) if already_exists(&error) => {}
        Err(error) => {
            return Err(error).with_context(|| {
                format!("step 6, grant developer on {PROJECT} to {SERVICE_ACCOUNT}, failed")
            });
        }
    }
    step(
        6,
        &format!("service account {SERVICE_ACCOUNT} has the developer role on {PROJECT}"),
    );

    let token_request = CreateTokenRequest {
        name: "quickstart".to_owned(),
        principal: Some(SERVICE_ACCOUNT.to_owned()),
        project: Some(PROJECT.to_owned()),
        max_role: Some(ProjectRole::Viewer),
        expires_in_seconds: Some(SERVICE_TOKEN_LIFETIME_SECONDS),
    };
    let issued = admin
        .create_token(&token_request)
        .await
        .context("step 7, create a project-scoped token, failed")?
        .value;
    step(
        7,
        &format!(
            "issued a token (id {}) for {SERVICE_ACCOUNT}: only project {PROJECT}, at most viewer, expires {}",
            issued.token.id,
            issued.token.expires_at.as_deref().unwrap_or("never")
        ),
    );

    let all_projects = admin
        .list_projects()
        .await
        .context("step 8, list projects, failed")?
        .value;
    let service = Client::new(url, Some(issued.secret.clone()))?;
    let scoped_projects = service
        .list_projects()
        .await
        .context("step 8, list projects with the service account's token, failed")?
        .value;
    let names = |projects: &[ghaf_client::ProjectView]| {
        projects
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !scoped_projects.projects.iter().any(|p| p.name == PROJECT) {
        bail!(
            "step 8 failed: the service account's token does not see project {PROJECT}; it sees [{}]",
            names(&scoped_projects.projects)
        );
    }
    step(
        8,
        &format!(
            "listed projects: the admin sees [{}], the service account's token sees [{}]",
            names(&all_projects.projects),
            names(&scoped_projects.projects)
        ),
    );

    times.record("foundation (steps 1-8)", foundation_started);

    let outcome =
        pipeline::run_data_steps(&admin, admin_token, source_dir, sample, data_dir, times).await?;

    let audit_started = Instant::now();
    let verified = admin
        .verify_audit()
        .await
        .context("step 15, verify the audit chain, failed")?
        .value;
    if !verified.valid || verified.chains.iter().any(|chain| !chain.valid) {
        let broken = verified.chains.iter().find(|chain| !chain.valid);
        bail!(
            "step 15 failed: the audit chain {:?} is broken at entry {}: {}",
            broken.map_or("?", |chain| chain.tenant.as_str()),
            broken
                .and_then(|chain| chain.first_bad_seq)
                .map_or_else(|| "?".to_owned(), |seq| seq.to_string()),
            broken
                .and_then(|chain| chain.problem.as_deref())
                .unwrap_or("no description")
        );
    }
    let entries_checked: i64 = verified
        .chains
        .iter()
        .map(|chain| chain.entries_checked)
        .sum();
    times.record("audit verification (step 15)", audit_started);
    step(
        15,
        &format!(
            "verified the audit hash chains (the tenant's and the one for unauthenticated calls): {entries_checked} entries in {} chain(s), all intact",
            verified.chains.len()
        ),
    );
    Ok(outcome.summary)
}

fn step(number: u32, text: &str) {
    println!("  [{number:>2}] {text}");
}

/// The API served on a tokio task until [`InProcessServer::stop`].
struct InProcessServer {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl InProcessServer {
    fn start(listener: tokio::net::TcpListener, state: ghaf_server::AppState) -> Self {
        let (shutdown, stop_requested) = oneshot::channel::<()>();
        let task = tokio::spawn(ghaf_server::serve_with(state, listener, async {
            let _ = stop_requested.await;
        }));
        Self { shutdown, task }
    }

    /// Stops accepting connections and waits for in-flight requests, for at most
    /// [`SHUTDOWN_TIMEOUT`].
    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(());
        match tokio::time::timeout(SHUTDOWN_TIMEOUT, self.task).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(error))) => Err(error.context("the in-process server failed")),
            Ok(Err(error)) => {
                Err(anyhow::Error::from(error).context("the in-process server task panicked"))
            }
            Err(_) => bail!(
                "the in-process server did not stop within {} s",
                SHUTDOWN_TIMEOUT.as_secs()
            ),
        }
    }
}
