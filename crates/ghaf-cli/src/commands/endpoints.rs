//! `ghaf endpoints` deploys registered model versions as endpoints, shows their load status,
//! posts ground-truth labels from a file and prints the prediction log.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::context::Context;
use crate::output;

/// Labels sent per request; the server takes at most 10 000.
const LABEL_BATCH: usize = 5000;

#[derive(Subcommand, Clone, Debug)]
pub enum EndpointsCommand {
    /// Create an endpoint that serves a registered model version
    // `--version` names the model version here, so the program's version flag is off.
    #[command(disable_version_flag = true)]
    Create {
        name: String,
        /// Registered model name
        #[arg(long)]
        model: String,
        /// Registered model version
        #[arg(long)]
        version: i64,
        /// Feature service whose online features are joined to each request
        #[arg(long)]
        feature_service: Option<String>,
        /// cpu, cuda or cuda:N
        #[arg(long, default_value = "cpu")]
        execution_provider: String,
        #[arg(long)]
        description: Option<String>,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Deploy another model version on an endpoint
    // `--version` names the model version here, so the program's version flag is off.
    #[command(disable_version_flag = true)]
    Update {
        name: String,
        #[arg(long)]
        model: String,
        #[arg(long)]
        version: i64,
        #[arg(long)]
        feature_service: Option<String>,
        #[arg(long, default_value = "cpu")]
        execution_provider: String,
        #[arg(long)]
        description: Option<String>,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// List the project's endpoints with their load status
    List {
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Show an endpoint: model version, status, load errors, inputs and outputs
    Get {
        name: String,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Delete an endpoint (its prediction log and label datasets stay)
    Delete {
        name: String,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Post ground-truth labels from a CSV (request_id,row,label) or NDJSON file
    Label {
        name: String,
        /// labels.csv or labels.ndjson; `row` may be left out and defaults to 0
        #[arg(long)]
        file: PathBuf,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Print the newest rows of the prediction log
    Predictions {
        name: String,
        /// Maximum number of rows, 1 to 1000
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long, default_value = "default")]
        project: String,
    },
}

fn text(value: &Value, key: &str) -> String {
    match &value[key] {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn deploy_body(
    model: &str,
    version: i64,
    feature_service: &Option<String>,
    execution_provider: &str,
    description: &Option<String>,
) -> Value {
    let mut body = json!({
        "model": model,
        "version": version,
        "execution_provider": execution_provider,
    });
    if let Some(service) = feature_service {
        body["feature_service"] = json!(service);
    }
    if let Some(description) = description {
        body["description"] = json!(description);
    }
    body
}

fn status_line(endpoint: &Value) -> String {
    endpoint["status"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|status| {
            let mut line = format!(
                "{} {}@{} {}",
                text(status, "name"),
                text(status, "model"),
                text(status, "version"),
                text(status, "state")
            );
            if let Some(reason) = status["reason"].as_str() {
                line.push_str(&format!(": {reason}"));
            }
            line
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn print_endpoint(endpoint: &Value) {
    println!("name:             {}", text(endpoint, "name"));
    println!("status:           {}", status_line(endpoint));
    if let Some(service) = endpoint["feature_service"].as_str() {
        println!("feature service:  {service}");
    }
    println!("provider:         {}", text(endpoint, "execution_provider"));
    for status in endpoint["status"].as_array().into_iter().flatten() {
        if let Some(load) = status["load_ms"].as_u64() {
            println!(
                "load:             {load} ms, warm-up {} ms",
                status["warmup_ms"].as_u64().unwrap_or(0)
            );
        }
    }
    for (label, key) in [("inputs:", "inputs"), ("outputs:", "outputs")] {
        if let Some(list) = endpoint[key].as_array() {
            let names: Vec<String> = list
                .iter()
                .map(|t| format!("{} {} {}", text(t, "name"), text(t, "datatype"), t["shape"]))
                .collect();
            println!("{label:<18}{}", names.join(", "));
        }
    }
    println!(
        "prediction log:   {}",
        text(endpoint, "predictions_dataset")
    );
    println!("labels:           {}", text(endpoint, "labels_dataset"));
}

/// Reads labels from CSV (with a header naming request_id, label and optionally row) or
/// NDJSON.
fn read_labels(file: &PathBuf) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the label file {}", file.display()))?;
    let is_csv = file.extension().is_some_and(|ext| ext == "csv");
    if !is_csv {
        return text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(number, line)| {
                serde_json::from_str(line).with_context(|| {
                    format!(
                        "{} line {} is not a JSON object",
                        file.display(),
                        number + 1
                    )
                })
            })
            .collect();
    }
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers()?.clone();
    let column = |name: &str| headers.iter().position(|h| h.trim() == name);
    let request_id = column("request_id")
        .with_context(|| format!("{} has no request_id column", file.display()))?;
    let label =
        column("label").with_context(|| format!("{} has no label column", file.display()))?;
    let row = column("row");
    let mut labels = Vec::new();
    for (number, record) in reader.records().enumerate() {
        let record = record?;
        let line = number + 2;
        let value: f64 = record
            .get(label)
            .unwrap_or("")
            .trim()
            .parse()
            .with_context(|| {
                format!("{} line {line}: the label is not a number", file.display())
            })?;
        let mut entry =
            json!({"request_id": record.get(request_id).unwrap_or("").trim(), "label": value});
        if let Some(row) = row {
            let text = record.get(row).unwrap_or("").trim();
            if !text.is_empty() {
                let number: i64 = text.parse().with_context(|| {
                    format!(
                        "{} line {line}: row {text:?} is not a whole number",
                        file.display()
                    )
                })?;
                entry["row"] = json!(number);
            }
        }
        labels.push(entry);
    }
    Ok(labels)
}

pub async fn run(context: &Context, command: &EndpointsCommand) -> anyhow::Result<()> {
    let client = context.client()?;
    match command {
        EndpointsCommand::Create {
            name,
            model,
            version,
            feature_service,
            execution_provider,
            description,
            project,
        } => {
            let mut body = deploy_body(
                model,
                *version,
                feature_service,
                execution_provider,
                description,
            );
            body["name"] = json!(name);
            let response = client.create_endpoint(project, &body).await?;
            output::emit(context.output, &response, |endpoint| {
                println!(
                    "created endpoint {name}; the model is loading: ghaf endpoints get {name} --project {project}"
                );
                print_endpoint(endpoint);
            });
        }
        EndpointsCommand::Update {
            name,
            model,
            version,
            feature_service,
            execution_provider,
            description,
            project,
        } => {
            let body = deploy_body(
                model,
                *version,
                feature_service,
                execution_provider,
                description,
            );
            let response = client.update_endpoint(project, name, &body).await?;
            output::emit(context.output, &response, print_endpoint);
        }
        EndpointsCommand::List { project } => {
            let response = client.list_endpoints(project).await?;
            output::emit(context.output, &response, |list| {
                let mut table = output::table(&["name", "status", "feature service", "updated"]);
                for endpoint in list["endpoints"].as_array().into_iter().flatten() {
                    table.add_row(vec![
                        text(endpoint, "name"),
                        status_line(endpoint),
                        text(endpoint, "feature_service"),
                        text(endpoint, "updated_at"),
                    ]);
                }
                println!("{table}");
            });
        }
        EndpointsCommand::Get { name, project } => {
            let response = client.get_endpoint(project, name).await?;
            output::emit(context.output, &response, print_endpoint);
        }
        EndpointsCommand::Delete { name, project } => {
            client.delete_endpoint(project, name).await?;
            println!(
                "deleted endpoint {name}; its datasets {name}-predictions and {name}-labels stay"
            );
        }
        EndpointsCommand::Label {
            name,
            file,
            project,
        } => {
            let labels = read_labels(file)?;
            anyhow::ensure!(!labels.is_empty(), "{} has no labels", file.display());
            let mut totals = [0u64; 4];
            for chunk in labels.chunks(LABEL_BATCH) {
                let response = client.post_labels(project, name, chunk).await?;
                for (total, key) in totals.iter_mut().zip([
                    "received",
                    "accepted",
                    "duplicates",
                    "unknown_request_ids",
                ]) {
                    *total += response.value[key].as_u64().unwrap_or(0);
                }
                if context.output == output::OutputFormat::Json {
                    output::print_json(&response.body);
                }
            }
            if context.output != output::OutputFormat::Json {
                println!(
                    "received {}, stored {}, duplicates {} (kept the first label), request ids not in the log {}",
                    totals[0], totals[1], totals[2], totals[3]
                );
            }
        }
        EndpointsCommand::Predictions {
            name,
            limit,
            project,
        } => {
            let response = client.endpoint_predictions(project, name, *limit).await?;
            output::emit(context.output, &response, |list| {
                for row in list["predictions"].as_array().into_iter().flatten() {
                    println!("{row}");
                }
            });
        }
    }
    Ok(())
}
