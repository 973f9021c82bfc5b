//! `ghaf quickstart`: runs the foundation end to end against an in-process server.
//!
//! The server runs on an embedded store (SQLite and local blobs) in a temporary or given
//! directory and listens on a free port of 127.0.0.1. The command then acts as a client of
//! it and stops it before returning, also when a step fails.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use ghaf_client::{
    Client, CreatePrincipalRequest, CreateProjectRequest, CreateTokenRequest, GrantMemberRequest,
    PrincipalKind,
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

#[derive(Args, Clone, Debug)]
pub struct QuickstartArgs {
    /// Directory for the store, which must not contain a Ghaf store yet [default: a temporary directory, removed at exit]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

pub async fn run(args: &QuickstartArgs) -> anyhow::Result<()> {
    println!(
        "Ghaf quickstart: the foundation (tenants, projects, principals, tokens, audit log) end to end.\n"
    );
    // Request logs at the info level would hide the step summary. RUST_LOG still overrides
    // the warn level.
    ghaf_server::telemetry::init(LogFormat::Text, "warn");

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

    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .context("cannot listen on a free port of 127.0.0.1")?;
    let address = listener.local_addr()?;
    let config = ServerConfig {
        data_dir: data_dir.clone(),
        listen: address,
        ..ServerConfig::default()
    };

    let state = ghaf_server::open_state(&config)
        .await
        .context("step 1, open the embedded store, failed")?;
    step(
        1,
        "opened the embedded store (SQLite metadata, local blobs)",
    );

    let Some(created) = ghaf_server::bootstrap(&state)
        .await
        .context("step 2, bootstrap, failed")?
    else {
        bail!(
            "step 2, bootstrap, failed: {} already contains a Ghaf store; pass an empty --data-dir, or omit it to use a temporary directory",
            data_dir.display()
        );
    };
    step(
        2,
        &format!(
            "bootstrapped tenant {}, project {} and admin user {}",
            created.tenant.id, created.project.name, created.admin.name
        ),
    );

    let url = format!("http://{address}");
    let server = InProcessServer::start(listener, state);
    step(3, &format!("server listening on {url}"));

    let result = run_client_steps(&url, &created.token.secret).await;
    let stopped = server.stop().await;
    result?;
    stopped?;
    step(10, "stopped the server");
    println!("\nAll steps passed.");
    if keeps_store {
        println!(
            "\nThe store stays in {dir}. Admin token (shown once; Ghaf stores only its hash):\n\n  {secret}\n\n\
             Start the server on it again with:\n  ghaf server --data-dir {dir}",
            dir = data_dir.display(),
            secret = created.token.secret
        );
    }
    println!(
        "\nNot built yet: data ingestion, features, training, model serving and monitoring. \
         This quickstart exercises only the foundation listed above."
    );
    Ok(())
}

async fn run_client_steps(url: &str, admin_token: &str) -> anyhow::Result<()> {
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
    admin
        .create_project(&project)
        .await
        .with_context(|| format!("step 5, create project {PROJECT}, failed"))?;
    step(5, &format!("created project {PROJECT}"));

    let account = CreatePrincipalRequest {
        name: SERVICE_ACCOUNT.to_owned(),
        kind: PrincipalKind::ServiceAccount,
        email: None,
    };
    admin
        .create_principal(&account)
        .await
        .with_context(|| format!("step 6, create service account {SERVICE_ACCOUNT}, failed"))?;
    let membership = GrantMemberRequest {
        principal: SERVICE_ACCOUNT.to_owned(),
        role: ProjectRole::Developer,
    };
    admin
        .grant_member(PROJECT, &membership)
        .await
        .with_context(|| {
            format!("step 6, grant developer on {PROJECT} to {SERVICE_ACCOUNT}, failed")
        })?;
    step(
        6,
        &format!("created service account {SERVICE_ACCOUNT} with the developer role on {PROJECT}"),
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
            "issued token {} for {SERVICE_ACCOUNT}: only project {PROJECT}, at most viewer, expires {}",
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

    let verified = admin
        .verify_audit()
        .await
        .context("step 9, verify the audit chain, failed")?
        .value;
    if !verified.valid || verified.chains.iter().any(|chain| !chain.valid) {
        let broken = verified.chains.iter().find(|chain| !chain.valid);
        bail!(
            "step 9 failed: the audit chain {:?} is broken at entry {}: {}",
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
    step(
        9,
        &format!(
            "verified the audit hash chain: {entries_checked} entries in {} chain(s), all intact",
            verified.chains.len()
        ),
    );
    Ok(())
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
