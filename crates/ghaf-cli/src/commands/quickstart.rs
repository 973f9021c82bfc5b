//! `ghaf quickstart`: runs the foundation and the parts of the ML loop that exist today
//! against an in-process server, on the shipped nycflights13 data.
//!
//! The server runs on an embedded store (SQLite and local blobs) in a temporary or given
//! directory and listens on a free port of 127.0.0.1. The command then acts as a client of
//! it: it ingests the five tables through the API, trains gradient-boosted trees on the
//! flights version it downloads, computes drift per month, logs the run and registers the
//! model. It stops the server before returning, also when a step fails or on Ctrl-C.

mod drift;
mod ingest;
mod model;
mod tracking;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use ghaf_client::{
    Client, ClientError, CreatePrincipalRequest, CreateProjectRequest, CreateTokenRequest,
    GrantMemberRequest, PrincipalKind, RunSearch,
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
         ingestion, training, drift and the model registry on nycflights13.\n"
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
    let config = ServerConfig {
        data_dir: data_dir.clone(),
        listen: address,
        ..ServerConfig::default()
    };

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
    let result = tokio::select! {
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
    result?;
    stopped?;
    step(14, "stopped the server");
    println!("\nAll steps passed.");

    println!("\nTime per stage (wall clock):");
    for (stage, time) in &times.0 {
        println!("  {stage:<34} {:>6.1} s", time.as_secs_f64());
    }
    println!(
        "  {:<34} {:>6.1} s",
        "total",
        started.elapsed().as_secs_f64()
    );

    if keeps_store {
        println!(
            "\nThe store stays in {dir}. Admin token (shown once; Ghaf stores only its hash):\n\n  {admin_secret}\n\n\
             Start the server on it again with:\n  ghaf server --data-dir {dir}\n\
             and look at the data with:\n  ghaf datasets versions flights --project {PROJECT}",
            dir = data_dir.display(),
        );
    }
    println!(
        "\nNot built yet: the feature store (point-in-time joins of weather and planes), model \
         serving, canary deployments, drift alerts and the retraining loop. This quickstart \
         trains and evaluates the model in the CLI process and computes drift offline."
    );
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
) -> anyhow::Result<()> {
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

    run_data_steps(&admin, admin_token, source_dir, sample, data_dir, times).await?;

    let audit_started = Instant::now();
    let verified = admin
        .verify_audit()
        .await
        .context("step 13, verify the audit chain, failed")?
        .value;
    if !verified.valid || verified.chains.iter().any(|chain| !chain.valid) {
        let broken = verified.chains.iter().find(|chain| !chain.valid);
        bail!(
            "step 13 failed: the audit chain {:?} is broken at entry {}: {}",
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
    times.record("audit verification (step 13)", audit_started);
    step(
        13,
        &format!(
            "verified the audit hash chains (the tenant's and the one for unauthenticated calls): {entries_checked} entries in {} chain(s), all intact",
            verified.chains.len()
        ),
    );
    Ok(())
}

/// Runs the ingestion, training, drift and tracking steps (9 to 12) as the admin.
async fn run_data_steps(
    admin: &Client,
    admin_token: &str,
    source_dir: &Path,
    sample: Option<u64>,
    data_dir: &Path,
    times: &mut StageTimes,
) -> anyhow::Result<()> {
    let ingest_started = Instant::now();
    // Sampled files are written next to the store and removed with this directory.
    let scratch = tempfile::Builder::new()
        .prefix("quickstart-samples-")
        .tempdir_in(data_dir)
        .context("cannot create a directory for sampled files")?;
    let tables = ingest::ingest_tables(admin, PROJECT, source_dir, sample, scratch.path())
        .await
        .context("step 9, ingest the nycflights13 tables, failed")?;
    drop(scratch);
    step(
        9,
        "ingested the five nycflights13 tables through the API (null tokens NA and the empty field):",
    );
    ingest::print_tables(&tables);
    times.record("ingestion (step 9)", ingest_started);

    let train_started = Instant::now();
    let flights_version = tables
        .iter()
        .find(|table| table.name == "flights")
        .map(|table| table.version)
        .context("step 10 failed: no flights version was ingested")?;
    let parquet = admin
        .download_dataset_version(PROJECT, "flights", flights_version)
        .await
        .with_context(|| {
            format!("step 10, download version {flights_version} of flights, failed")
        })?;
    let parquet_bytes = parquet.len();
    // Decoding and training are CPU-bound, so they run off the async worker threads.
    let (flights, trained) = tokio::task::spawn_blocking(move || {
        let flights = model::read_flights(parquet)?;
        let trained = model::train_and_evaluate(&flights)?;
        anyhow::Ok((flights, trained))
    })
    .await
    .context("step 10, training, panicked")?
    .context("step 10, train the model, failed")?;
    step(
        10,
        &format!(
            "downloaded flights v{flights_version} as Parquet ({:.1} MB) and trained gradient-boosted trees \
             for arr_delay > 15 on January-June:",
            parquet_bytes as f64 / 1e6
        ),
    );
    print_training(&flights, &trained);
    times.record("training and evaluation (step 10)", train_started);

    let drift_started = Instant::now();
    let scores = trained.scores.clone();
    let months = tokio::task::spawn_blocking(move || drift::monthly_drift(&flights, &scores))
        .await
        .context("step 11, drift, panicked")?
        .context("step 11, compute drift, failed")?;
    step(
        11,
        "drift of the numeric features and the score, January-June against each later month \
         (default mode: KS or chi-square with Benjamini-Hochberg and an effect-size floor; \
         evidently: Evidently 0.7.23's DataDriftPreset):",
    );
    drift::print_drift(&months);
    times.record("drift (step 11)", drift_started);

    let tracking_started = Instant::now();
    let record = run_record(flights_version, sample, &trained);
    let (run_id, version, reused) = match find_logged_run(admin, &record).await? {
        Some((run_id, version)) => (run_id, version, true),
        None => {
            let url = admin.base_url().as_str().to_owned();
            let logged = tracking::log_run(&url, admin_token, PROJECT, &record)
                .await
                .context("step 12, log the run and register the model, failed")?;
            let version: i64 = logged.model_version.parse().with_context(|| {
                format!(
                    "step 12 failed: model version {:?} is not a number",
                    logged.model_version
                )
            })?;
            (logged.run_id, version, false)
        }
    };
    let verified = admin
        .verify_model_version(PROJECT, REGISTERED_MODEL, version)
        .await
        .with_context(|| {
            format!("step 12, verify version {version} of {REGISTERED_MODEL}, failed")
        })?
        .value;
    let logged = if reused {
        format!(
            "reused run {run_id} in experiment {EXPERIMENT}, logged by an earlier quickstart from the \
             same dataset version (training is deterministic, so it has the same model)"
        )
    } else {
        format!(
            "logged run {run_id} in experiment {EXPERIMENT} with {} params, {} metrics and the model file",
            record.params.len(),
            record.metrics.len(),
        )
    };
    step(
        12,
        &format!(
            "{logged}; {REGISTERED_MODEL} version {version} is registered from it, and its signed manifest \
             verified ({} file(s), key {})",
            verified["files"],
            verified["signing_key_id"].as_str().unwrap_or("?")
        ),
    );
    times.record("tracking and registry (step 12)", tracking_started);
    Ok(())
}

/// Finds a finished run of an earlier quickstart with the same dataset version and sample,
/// and the version of the registered model made from it.
async fn find_logged_run(
    admin: &Client,
    record: &tracking::RunRecord<'_>,
) -> anyhow::Result<Option<(String, i64)>> {
    let param = |key: &str| {
        record
            .params
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, value)| value.replace('\'', ""))
            .unwrap_or_default()
    };
    let search = RunSearch {
        filter: Some(format!(
            "params.dataset = '{}' and params.sample_rows = '{}' and attributes.status = 'FINISHED'",
            param("dataset"),
            param("sample_rows")
        )),
        max_results: Some(100),
        ..RunSearch::default()
    };
    let runs = admin
        .search_runs(PROJECT, &search)
        .await
        .context("step 12, search the runs of earlier quickstarts, failed")?
        .value;
    let run_ids: Vec<&str> = runs["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|run| run["run_id"].as_str())
        .collect();
    if run_ids.is_empty() {
        return Ok(None);
    }
    let versions = match admin.list_model_versions(PROJECT, REGISTERED_MODEL).await {
        Ok(response) => response.value,
        Err(ClientError::Api { status: 404, .. }) => return Ok(None),
        Err(error) => {
            return Err(error).context("step 12, list the registered model's versions, failed");
        }
    };
    let found = versions["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|version| {
            let run_id = version["run_id"].as_str()?;
            run_ids
                .contains(&run_id)
                .then(|| Some((run_id.to_owned(), version["version"].as_i64()?)))
                .flatten()
        });
    Ok(found)
}

/// Experiment and registered model the quickstart logs to.
const EXPERIMENT: &str = "quickstart-flights";
const REGISTERED_MODEL: &str = "flights-arr-delay";

fn run_record<'a>(
    flights_version: i64,
    sample: Option<u64>,
    trained: &'a model::Trained,
) -> tracking::RunRecord<'a> {
    let params = vec![
        ("trainer", "ghaf-train gbdt".to_owned()),
        ("label", "arr_delay > 15".to_owned()),
        ("dataset", format!("{PROJECT}/flights v{flights_version}")),
        (
            "sample_rows",
            sample.map_or_else(|| "all".to_owned(), |rows| rows.to_string()),
        ),
        ("training_months", "1-6".to_owned()),
        ("trees", trained.n_trees.to_string()),
        ("train_rows", trained.train_rows.to_string()),
        ("validation_rows", trained.validation_rows.to_string()),
    ];
    let mut metrics = vec![("validation_auc".to_owned(), trained.validation_auc)];
    for month in &trained.months {
        metrics.push((
            format!("auc_{}", model::month_name(month.month).to_lowercase()),
            month.auc,
        ));
    }
    tracking::RunRecord {
        experiment: EXPERIMENT,
        run_name: "gbdt-jan-jun",
        params,
        metrics,
        model_bytes: &trained.model_bytes,
        registered_model: REGISTERED_MODEL,
    }
}

fn print_training(flights: &model::Flights, trained: &model::Trained) {
    let labelled = flights.dataset.n_rows();
    println!(
        "       {} labelled flights of {} read ({} without arr_delay left out); features: {} \
         and carrier, origin, dest as categories",
        thousands(labelled as u64),
        thousands(flights.rows_read as u64),
        thousands((flights.rows_read - labelled) as u64),
        model::NUMERIC_FEATURES.join(", ")
    );
    println!(
        "       {} trees; {} training rows, {} validation rows; validation AUC {:.4}",
        trained.n_trees,
        thousands(trained.train_rows as u64),
        thousands(trained.validation_rows as u64),
        trained.validation_auc
    );
    let top: Vec<&str> = trained
        .importance
        .iter()
        .take(5)
        .map(|(name, _)| name.as_str())
        .collect();
    println!("       features by split gain: {}", top.join(", "));
    println!("       month   flights   delayed   AUC");
    for month in &trained.months {
        println!(
            "       {:<5} {:>9} {:>8.1}%   {:.4}",
            model::month_name(month.month),
            thousands(month.rows as u64),
            month.positive_rate * 100.0,
            month.auc
        );
    }
    println!(
        "       model file: {} bytes (ghaf-model format v1)",
        thousands(trained.model_bytes.len() as u64)
    );
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
