//! The subcommands and their dispatch.

pub mod audit;
pub mod datasets;
pub mod endpoints;
pub mod features;
pub mod jobs;
pub mod monitor;
pub mod principals;
pub mod projects;
pub mod quickstart;
pub mod roles;
pub mod rollouts;
pub mod server;
pub mod session;
pub mod tenants;
pub mod tokens;
pub mod tracking;

use clap::{Parser, Subcommand};

use crate::context::{Context, GlobalArgs};

/// Command-line client and server of the Ghaf ML platform.
#[derive(Parser, Clone, Debug)]
#[command(name = "ghaf", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Clone, Debug)]
pub enum Command {
    /// Run the API server; bootstraps an empty store and prints its admin token once
    Server(server::ServerArgs),
    /// Create the first tenant, project and admin token in an empty store
    Init(server::InitArgs),
    /// Run a job worker on the server's configuration until SIGINT or SIGTERM
    Worker(jobs::WorkerArgs),
    /// Check a token with the server and save it with the URL in a profile
    Login,
    /// Show the identity and roles of the current token
    Whoami,
    /// List and create tenants (platform administrator)
    #[command(subcommand)]
    Tenants(tenants::TenantsCommand),
    /// List, create and get projects, and manage their members
    #[command(subcommand)]
    Projects(projects::ProjectsCommand),
    /// List, create and get users and service accounts
    #[command(subcommand)]
    Principals(principals::PrincipalsCommand),
    /// List, grant and revoke role bindings
    #[command(subcommand)]
    Roles(roles::RolesCommand),
    /// List, create and revoke API tokens
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// List the audit log and verify its hash chain
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Create datasets, ingest files into versions, show profiles and quarantined rows
    #[command(subcommand)]
    Datasets(datasets::DatasetsCommand),
    /// Apply feature definitions, build training sets, materialise and read online features
    #[command(subcommand)]
    Features(features::FeaturesCommand),
    /// Submit, list, cancel and follow training jobs
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Deploy model versions as endpoints, post labels and read the prediction log
    #[command(subcommand)]
    Endpoints(endpoints::EndpointsCommand),
    /// Monitor endpoints and datasets for drift and performance, with alerts
    #[command(subcommand)]
    Monitor(monitor::MonitorCommand),
    /// Search experiment runs with MLflow's filter grammar
    #[command(subcommand)]
    Runs(tracking::RunsCommand),
    /// List registered models and versions, verify versions, and set aliases
    #[command(subcommand)]
    Models(tracking::ModelsCommand),
    /// Run the foundation end to end against a temporary in-process server
    Quickstart(quickstart::QuickstartArgs),
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Server(args) => server::run_server(args).await,
        Command::Init(args) => server::run_init(args).await,
        Command::Worker(args) => jobs::run_worker(args).await,
        Command::Login => session::login(&cli.global).await,
        Command::Quickstart(args) => quickstart::run(args).await,
        Command::Whoami => session::whoami(&Context::load(&cli.global)?).await,
        Command::Tenants(command) => tenants::run(&Context::load(&cli.global)?, command).await,
        Command::Projects(command) => projects::run(&Context::load(&cli.global)?, command).await,
        Command::Principals(command) => {
            principals::run(&Context::load(&cli.global)?, command).await
        }
        Command::Roles(command) => roles::run(&Context::load(&cli.global)?, command).await,
        Command::Tokens(command) => tokens::run(&Context::load(&cli.global)?, command).await,
        Command::Audit(command) => audit::run(&Context::load(&cli.global)?, command).await,
        Command::Datasets(command) => datasets::run(&Context::load(&cli.global)?, command).await,
        Command::Features(command) => features::run(&Context::load(&cli.global)?, command).await,
        Command::Jobs(command) => jobs::run(&Context::load(&cli.global)?, command).await,
        Command::Endpoints(command) => endpoints::run(&Context::load(&cli.global)?, command).await,
        Command::Monitor(command) => monitor::run(&Context::load(&cli.global)?, command).await,
        Command::Runs(command) => tracking::run_runs(&Context::load(&cli.global)?, command).await,
        Command::Models(command) => {
            tracking::run_models(&Context::load(&cli.global)?, command).await
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
