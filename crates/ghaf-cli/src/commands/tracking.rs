//! `ghaf runs` and `ghaf models`: search runs with MLflow's filter grammar, list registered
//! models and their signed versions, verify a version, and move aliases.

use clap::Subcommand;
use ghaf_client::RunSearch;
use serde_json::Value;

use crate::context::Context;
use crate::output;

#[derive(Subcommand, Clone, Debug)]
pub enum RunsCommand {
    /// Search runs, newest first unless --order-by sets another order
    List {
        /// Experiment id or name; repeat for several [default: every active experiment]
        #[arg(long = "experiment", value_name = "ID_OR_NAME")]
        experiments: Vec<String>,
        /// MLflow filter, such as "metrics.acc > 0.9 and params.model = 'rf'"
        #[arg(long)]
        filter: Option<String>,
        /// Sort key, such as "metrics.acc DESC"; repeat for several
        #[arg(long = "order-by", value_name = "KEY")]
        order_by: Vec<String>,
        /// Maximum number of runs, 1 to 50,000
        #[arg(long, default_value_t = 100)]
        max_results: u32,
        /// next_page_token printed by the previous page
        #[arg(long)]
        page_token: Option<String>,
        #[arg(long, default_value = "default")]
        project: String,
    },
}

#[derive(Subcommand, Clone, Debug)]
pub enum ModelsCommand {
    /// List registered models with their aliases
    List {
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// List a model's versions, newest first, with stage, aliases and signing key
    Versions {
        model: String,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Verify a version's manifest signature and the digest of every file
    Verify {
        model: String,
        /// Version number
        #[arg(value_name = "VERSION")]
        number: i64,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Point or remove an alias such as champion
    #[command(subcommand)]
    Alias(AliasCommand),
}

#[derive(Subcommand, Clone, Debug)]
pub enum AliasCommand {
    /// Point ALIAS at VERSION, moving it from the version it named before
    Set {
        model: String,
        alias: String,
        /// Version number the alias points at
        #[arg(value_name = "VERSION")]
        number: i64,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Remove ALIAS from the model
    Delete {
        model: String,
        alias: String,
        #[arg(long, default_value = "default")]
        project: String,
    },
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Formats a key-value object as `key=value` pairs separated by spaces.
fn pairs(value: &Value) -> String {
    value
        .as_object()
        .map(|map| {
            map.iter()
                .map(|(key, value)| format!("{key}={}", text(value)))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

pub async fn run_runs(context: &Context, command: &RunsCommand) -> anyhow::Result<()> {
    let client = context.client()?;
    let RunsCommand::List {
        experiments,
        filter,
        order_by,
        max_results,
        page_token,
        project,
    } = command;
    let search = RunSearch {
        experiments: experiments.clone(),
        filter: filter.clone(),
        order_by: order_by.clone(),
        max_results: Some(*max_results),
        page_token: page_token.clone(),
    };
    let response = client.search_runs(project, &search).await?;
    output::emit(context.output, &response, |list| {
        let mut table = output::table(&[
            "run",
            "name",
            "experiment",
            "status",
            "started",
            "metrics",
            "params",
        ]);
        for run in list["runs"].as_array().into_iter().flatten() {
            table.add_row([
                text(&run["run_id"]),
                text(&run["run_name"]),
                text(&run["experiment_id"]),
                text(&run["status"]),
                run["start_time"]
                    .as_i64()
                    .map_or_else(|| "-".into(), output::format_millis),
                pairs(&run["metrics"]),
                pairs(&run["params"]),
            ]);
        }
        output::print_table(&table, &format!("No runs in project {project} match."));
        if let Some(token) = list["next_page_token"].as_str() {
            eprintln!("More runs: pass --page-token {token}");
        }
    });
    Ok(())
}

pub async fn run_models(context: &Context, command: &ModelsCommand) -> anyhow::Result<()> {
    let client = context.client()?;
    match command {
        ModelsCommand::List { project } => {
            let response = client.list_models(project).await?;
            output::emit(context.output, &response, |list| {
                let mut table = output::table(&["name", "latest", "aliases", "description"]);
                for model in list["models"].as_array().into_iter().flatten() {
                    table.add_row([
                        text(&model["name"]),
                        text(&model["latest_version"]),
                        pairs(&model["aliases"]),
                        text(&model["description"]),
                    ]);
                }
                output::print_table(
                    &table,
                    &format!("Project {project} has no registered models."),
                );
            });
        }
        ModelsCommand::Versions { model, project } => {
            let response = client.list_model_versions(project, model).await?;
            output::emit(context.output, &response, |list| {
                let mut table = output::table(&[
                    "version",
                    "stage",
                    "aliases",
                    "run",
                    "files",
                    "signed by",
                    "created",
                ]);
                for version in list["versions"].as_array().into_iter().flatten() {
                    let aliases: Vec<String> = version["aliases"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(text)
                        .collect();
                    table.add_row([
                        text(&version["version"]),
                        text(&version["stage"]),
                        aliases.join(","),
                        text(&version["run_id"]),
                        version["files"].as_array().map_or(0, Vec::len).to_string(),
                        text(&version["signing_key_id"]),
                        version["creation_time"]
                            .as_i64()
                            .map_or_else(|| "-".into(), output::format_millis),
                    ]);
                }
                output::print_table(&table, &format!("Model {model} has no versions."));
            });
        }
        ModelsCommand::Verify {
            model,
            number,
            project,
        } => {
            let response = client.verify_model_version(project, model, *number).await?;
            output::emit(context.output, &response, |report| {
                println!(
                    "Model {model} version {number}: signature by key {} and {} file digests \
                     verified.",
                    text(&report["signing_key_id"]),
                    text(&report["files"])
                );
            });
        }
        ModelsCommand::Alias(AliasCommand::Set {
            model,
            alias,
            number,
            project,
        }) => {
            let response = client
                .set_model_alias(project, model, alias, *number)
                .await?;
            output::emit(context.output, &response, |_| {
                println!("Alias {alias} of model {model} now points at version {number}.");
            });
        }
        ModelsCommand::Alias(AliasCommand::Delete {
            model,
            alias,
            project,
        }) => {
            client.delete_model_alias(project, model, alias).await?;
            println!("Deleted alias {alias} of model {model}.");
        }
    }
    Ok(())
}
