//! `ghaf features`: apply definition files (plan first), list definitions and view
//! versions, materialise views, build training sets and read online features.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use ghaf_features::Definitions;
use serde_json::Value;

use crate::context::Context;
use crate::output;

#[derive(Subcommand, Clone, Debug)]
pub enum FeaturesCommand {
    /// Plan the definitions of a directory (its .yaml, .yml and .json files), print the
    /// plan, and apply it after confirmation
    Apply {
        /// Directory of definition files
        dir: PathBuf,
        /// Apply without asking
        #[arg(long)]
        yes: bool,
        /// Print the plan only
        #[arg(long, conflicts_with = "yes")]
        plan_only: bool,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// List entities, feature views (latest versions) and feature services
    List {
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// List the versions of a feature view and the materialised intervals of the latest
    Versions {
        view: String,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Write the latest row per key of an event-time range to the online store
    Materialize {
        view: String,
        /// RFC 3339 start (inclusive) [default: the end of the last materialised interval,
        /// else end minus the view's TTL]
        #[arg(long)]
        start: Option<String>,
        /// RFC 3339 end (inclusive) [default: now]
        #[arg(long)]
        end: Option<String>,
        /// View version to materialise [default: the latest]
        #[arg(long)]
        view_version: Option<i64>,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Read features of entity rows from the online store
    GetOnline {
        /// Feature references `view:feature` or `view@vN:feature`, comma-separated
        #[arg(long, value_delimiter = ',', required_unless_present = "service")]
        features: Vec<String>,
        /// Feature service to read instead of a feature list
        #[arg(long, conflicts_with = "features")]
        service: Option<String>,
        /// Join key and values, `KEY=V1,V2,...` (repeatable). A value that is valid JSON is
        /// sent as JSON (`1` is a number, `"1"` a string); any other value is a string
        #[arg(long = "entity", value_name = "KEY=VALUES", required = true)]
        entities: Vec<String>,
        /// Name features `view__feature`
        #[arg(long)]
        full_names: bool,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Build a point-in-time training set into a new version of a dataset
    TrainingSet {
        /// Dataset whose rows are the entity table, `NAME` or `NAME@vN`
        #[arg(long)]
        entities: String,
        /// Feature references, comma-separated
        #[arg(long, value_delimiter = ',', required_unless_present = "service")]
        features: Vec<String>,
        #[arg(long, conflicts_with = "features")]
        service: Option<String>,
        /// Dataset that receives the training set; created when missing
        #[arg(long)]
        output_dataset: String,
        /// Entity-table column with the lookup time [default: event_timestamp, else the
        /// only timestamp column]
        #[arg(long)]
        timestamp_column: Option<String>,
        /// Name feature columns `view__feature`
        #[arg(long)]
        full_names: bool,
        #[arg(long, default_value = "default")]
        project: String,
    },
}

pub async fn run(context: &Context, command: &FeaturesCommand) -> anyhow::Result<()> {
    let client = context.client()?;
    match command {
        FeaturesCommand::Apply {
            dir,
            yes,
            plan_only,
            project,
        } => {
            let definitions = Definitions::load_dir(dir)?;
            let definitions = serde_json::to_value(&definitions)?;
            let plan = client.plan_features(project, &definitions).await?;
            print!("{}", plan.value["text"].as_str().unwrap_or_default());
            let changes = plan.value["changes"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let pending = changes
                .iter()
                .filter(|c| c["action"] != "unchanged")
                .count();
            if *plan_only || pending == 0 {
                return Ok(());
            }
            if !*yes && !confirm("Apply these changes?")? {
                println!("Nothing applied.");
                return Ok(());
            }
            let applied = client.apply_features(project, &definitions).await?;
            output::emit(context.output, &applied, |_| {
                println!("Applied {pending} change(s) to project {project}.");
            });
        }
        FeaturesCommand::List { project } => {
            let response = client.list_features(project).await?;
            output::emit(context.output, &response, print_registry);
        }
        FeaturesCommand::Versions { view, project } => {
            let response = client.feature_view_versions(project, view).await?;
            output::emit(context.output, &response, print_versions);
        }
        FeaturesCommand::Materialize {
            view,
            start,
            end,
            view_version,
            project,
        } => {
            let body = serde_json::json!({ "start": start, "end": end, "version": view_version });
            let response = client.materialize_features(project, view, &body).await?;
            output::emit(context.output, &response, |outcome| {
                let record = &outcome["materialization"];
                println!(
                    "Materialised {view} v{} from {} to {} into {}: {} key(s) written, {} older write(s) skipped.",
                    record["view_version"],
                    text(&outcome["start"]),
                    text(&outcome["end"]),
                    text(&outcome["backend"]),
                    record["keys_written"],
                    record["keys_skipped"],
                );
            });
        }
        FeaturesCommand::GetOnline {
            features,
            service,
            entities,
            full_names,
            project,
        } => {
            let mut columns = serde_json::Map::new();
            for entity in entities {
                let Some((key, values)) = entity.split_once('=') else {
                    bail!(
                        "--entity {entity:?} is not KEY=V1,V2,...; write it as driver_id=1001,1002"
                    );
                };
                let values: Vec<Value> = values
                    .split(',')
                    .map(|v| {
                        serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()))
                    })
                    .collect();
                columns.insert(key.to_owned(), Value::Array(values));
            }
            let mut body =
                serde_json::json!({ "entities": columns, "full_feature_names": full_names });
            match service {
                Some(service) => body["feature_service"] = Value::String(service.clone()),
                None => body["features"] = serde_json::json!(features),
            }
            let response = client.get_online_features(project, &body).await?;
            output::emit(context.output, &response, print_online);
        }
        FeaturesCommand::TrainingSet {
            entities,
            features,
            service,
            output_dataset,
            timestamp_column,
            full_names,
            project,
        } => {
            let (dataset, version) = match entities.split_once("@v") {
                Some((name, number)) => (
                    name,
                    Some(number.parse::<i64>().with_context(|| {
                        format!("--entities {entities:?}: the version after @v must be a number")
                    })?),
                ),
                None => (entities.as_str(), None),
            };
            let mut body = serde_json::json!({
                "entity_dataset": dataset,
                "entity_version": version,
                "output_dataset": output_dataset,
                "timestamp_column": timestamp_column,
                "full_feature_names": full_names,
            });
            match service {
                Some(service) => body["feature_service"] = Value::String(service.clone()),
                None => body["features"] = serde_json::json!(features),
            }
            let response = client.create_training_set(project, &body).await?;
            output::emit(context.output, &response, |outcome| {
                println!(
                    "Stored {} rows as {}@v{}.",
                    outcome["rows"],
                    text(&outcome["dataset"]),
                    outcome["version"]
                );
                println!("Columns: {}", join(&outcome["columns"]));
                println!("Lineage: {}", text(&outcome["source"]));
            });
        }
    }
    Ok(())
}

/// Asks a yes/no question on the terminal; without a terminal, fails and names `--yes`.
fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "standard input is not a terminal, so the plan cannot be confirmed; pass --yes to apply it"
        );
    }
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn join(values: &Value) -> String {
    values
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_registry(registry: &Value) {
    let mut table = output::table(&["kind", "name", "version", "details"]);
    for entity in registry["entities"].as_array().into_iter().flatten() {
        let key = entity
            .get("join_key")
            .filter(|k| !k.is_null())
            .unwrap_or(&entity["name"]);
        table.add_row([
            "entity".to_owned(),
            text(&entity["name"]),
            "-".to_owned(),
            format!("join key {} ({})", text(key), text(&entity["value_type"])),
        ]);
    }
    for view in registry["feature_views"].as_array().into_iter().flatten() {
        let spec = &view["spec"];
        let features: Vec<String> = spec["features"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| text(&f["name"]))
            .collect();
        table.add_row([
            "feature_view".to_owned(),
            text(&view["name"]),
            format!("v{}", view["version"]),
            format!(
                "dataset {}: {}",
                text(&spec["source"]["dataset"]),
                features.join(", ")
            ),
        ]);
    }
    for service in registry["feature_services"]
        .as_array()
        .into_iter()
        .flatten()
    {
        table.add_row([
            "feature_service".to_owned(),
            text(&service["name"]),
            "-".to_owned(),
            join(&service["features"]),
        ]);
    }
    output::print_table(&table, "The project has no feature definitions.");
}

/// An interval bound in microseconds as RFC 3339 UTC; the open bounds of a run over every
/// row print as `-`.
fn format_event_micros(value: &Value) -> String {
    match value.as_i64() {
        Some(i64::MIN) | Some(i64::MAX) | None => "-".to_owned(),
        Some(micros) => chrono::DateTime::from_timestamp_micros(micros)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            .unwrap_or_else(|| micros.to_string()),
    }
}

fn print_versions(versions: &Value) {
    let mut table = output::table(&["version", "fingerprint", "created", "created by"]);
    for version in versions["versions"].as_array().into_iter().flatten() {
        let fingerprint = text(&version["fingerprint"]);
        table.add_row([
            format!("v{}", version["version"]),
            fingerprint.chars().take(12).collect(),
            output::format_millis(version["created_at"].as_i64().unwrap_or(0)),
            // The principal's name when the server knows it, else its id.
            match version["created_by_name"].as_str() {
                Some(name) => name.to_owned(),
                None => text(&version["created_by"]),
            },
        ]);
    }
    output::print_table(&table, "The view has no versions.");
    let mut runs = output::table(&["start", "end", "written", "skipped", "dataset version"]);
    for run in versions["materializations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        runs.add_row([
            format_event_micros(&run["start_micros"]),
            format_event_micros(&run["end_micros"]),
            run["keys_written"].to_string(),
            run["keys_skipped"].to_string(),
            run["dataset_version"].to_string(),
        ]);
    }
    output::print_table(&runs, "The latest version was never materialised.");
}

fn print_online(response: &Value) {
    let names: Vec<String> = response["metadata"]["feature_names"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    let results = response["results"].as_array().cloned().unwrap_or_default();
    let rows = results
        .first()
        .and_then(|r| r["values"].as_array())
        .map_or(0, Vec::len);
    let headers: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut table = output::table(&headers);
    for row in 0..rows {
        let cells: Vec<String> = results
            .iter()
            .map(|column| {
                let value = text(&column["values"][row]);
                match column["statuses"][row].as_str() {
                    Some("PRESENT") | None => value,
                    Some(status) => format!("{value} ({status})"),
                }
            })
            .collect();
        table.add_row(cells);
    }
    output::print_table(&table, "No entity rows.");
}
