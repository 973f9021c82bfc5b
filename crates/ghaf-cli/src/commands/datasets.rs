//! `ghaf datasets`: create datasets from schema files, ingest files with a progress bar, and
//! show versions, profiles and quarantined rows.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use clap::Subcommand;
use ghaf_ingest::DatasetSchema;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::context::Context;
use crate::output::{self, OutputFormat};

#[derive(Subcommand, Clone, Debug)]
pub enum DatasetsCommand {
    /// List the datasets of a project
    List {
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Create a dataset from a schema file (YAML or JSON)
    Create {
        /// Dataset name, unique in the project: lowercase letters, digits, `-`, `_` and `.`
        name: String,
        /// Schema file with `columns`, and optionally `event_time`, `unique_key` and `acceptance`
        #[arg(long, value_name = "FILE")]
        schema: PathBuf,
        #[arg(long, value_name = "TEXT", default_value = "")]
        description: String,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Show a dataset's current schema and schema history
    Show {
        name: String,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Add a schema version from a file; the server rejects incompatible changes. A column
    /// without `classification` keeps its current label
    Schema {
        name: String,
        #[arg(long, value_name = "FILE")]
        schema: PathBuf,
        /// Allow the schema to lower this column's classification (repeatable); each
        /// lowering is recorded in the audit log
        #[arg(long = "lower-classification", value_name = "COLUMN")]
        lower_classification: Vec<String>,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Upload a CSV, NDJSON or Parquet file (optionally gzip-compressed) into a new version,
    /// or have the server read an object-store URI (`s3://BUCKET/KEY`)
    Ingest {
        name: String,
        /// The file to upload, or an `s3://BUCKET/KEY` URI that the server reads; its
        /// prefix must be in the server's `ingest.object_uri_prefixes`
        file: PathBuf,
        /// csv, ndjson or parquet [default: from the file name]
        #[arg(long)]
        format: Option<String>,
        /// CSV field separator, one character, or \t for a tab
        #[arg(long)]
        delimiter: Option<String>,
        /// The CSV file has no header line; columns are matched by position
        #[arg(long)]
        no_header: bool,
        /// A CSV value read as null, such as NA; repeat for several [default: the empty field]
        #[arg(long = "null", value_name = "TOKEN")]
        null_values: Vec<String>,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// List a dataset's versions, newest first
    Versions {
        name: String,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Show the column profile and check counts of a version
    Profile {
        name: String,
        /// Version number, as listed by `ghaf datasets versions`
        #[arg(value_name = "VERSION")]
        number: i64,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Print the quarantined rows of a version with their reasons (NDJSON)
    Quarantine {
        name: String,
        /// Version number, as listed by `ghaf datasets versions`
        #[arg(value_name = "VERSION")]
        number: i64,
        #[arg(long, default_value = "default")]
        project: String,
    },
}

/// Reads a schema file and checks it locally, so mistakes are reported with the file name.
fn read_schema(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the schema file {}", path.display()))?;
    let schema =
        DatasetSchema::from_yaml(&text).with_context(|| format!("in {}", path.display()))?;
    Ok(serde_json::to_value(schema)?)
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

pub async fn run(context: &Context, command: &DatasetsCommand) -> anyhow::Result<()> {
    let client = context.client()?;
    match command {
        DatasetsCommand::List { project } => {
            let response = client.list_datasets(project).await?;
            output::emit(context.output, &response, |list| {
                let mut table =
                    output::table(&["name", "schema", "columns", "description", "created"]);
                for dataset in list["datasets"].as_array().into_iter().flatten() {
                    let columns = dataset["schema"]["columns"].as_array().map_or(0, Vec::len);
                    table.add_row([
                        text(&dataset["name"]),
                        format!("v{}", dataset["schema_version"]),
                        columns.to_string(),
                        text(&dataset["description"]),
                        text(&dataset["created_at"]),
                    ]);
                }
                output::print_table(&table, &format!("Project {project} has no datasets."));
            });
        }
        DatasetsCommand::Create {
            name,
            schema,
            description,
            project,
        } => {
            let body = serde_json::json!({
                "name": name,
                "description": description,
                "schema": read_schema(schema)?,
            });
            let response = client.create_dataset(project, &body).await?;
            output::emit(context.output, &response, |dataset| {
                println!(
                    "Created dataset {} in project {project}.",
                    text(&dataset["name"])
                );
            });
        }
        DatasetsCommand::Show { name, project } => {
            let response = client.get_dataset(project, name).await?;
            output::emit(context.output, &response, print_dataset);
        }
        DatasetsCommand::Schema {
            name,
            schema,
            lower_classification,
            project,
        } => {
            let response = client
                .update_dataset_schema_lowering(
                    project,
                    name,
                    &read_schema(schema)?,
                    lower_classification,
                )
                .await?;
            output::emit(context.output, &response, |version| {
                println!(
                    "Dataset {name} now has schema version {}.",
                    version["version"]
                );
            });
        }
        DatasetsCommand::Ingest {
            name,
            file,
            format,
            delimiter,
            no_header,
            null_values,
            project,
        } => {
            ingest(
                context,
                name,
                file,
                format.as_deref(),
                delimiter.as_deref(),
                *no_header,
                null_values,
                project,
            )
            .await?;
        }
        DatasetsCommand::Versions { name, project } => {
            let response = client.list_dataset_versions(project, name).await?;
            output::emit(context.output, &response, |list| {
                let mut table = output::table(&[
                    "version",
                    "rows",
                    "quarantined",
                    "schema",
                    "source",
                    "created",
                    "digest",
                ]);
                for version in list["versions"].as_array().into_iter().flatten() {
                    let digest = text(&version["content_digest"]);
                    table.add_row([
                        text(&version["version"]),
                        text(&version["row_count"]),
                        text(&version["quarantined_rows"]),
                        format!("v{}", version["schema_version"]),
                        text(&version["source"]),
                        text(&version["created_at"]),
                        digest.chars().take(12).collect(),
                    ]);
                }
                output::print_table(&table, &format!("Dataset {name} has no versions yet."));
            });
        }
        DatasetsCommand::Profile {
            name,
            number,
            project,
        } => {
            let response = client.get_dataset_version(project, name, *number).await?;
            output::emit(context.output, &response, print_profile);
        }
        DatasetsCommand::Quarantine {
            name,
            number,
            project,
        } => {
            let rows = client
                .get_dataset_quarantine(project, name, *number)
                .await?;
            print!("{rows}");
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn ingest(
    context: &Context,
    name: &str,
    file: &Path,
    format: Option<&str>,
    delimiter: Option<&str>,
    no_header: bool,
    null_values: &[String],
    project: &str,
) -> anyhow::Result<()> {
    let client = context.client()?;
    let uri = file.to_str().filter(|text| text.starts_with("s3://"));
    let mut query = Vec::new();
    if let Some(format) = format {
        query.push(("format", format.to_owned()));
    }
    if let Some(delimiter) = delimiter {
        query.push(("delimiter", delimiter.to_owned()));
    }
    if no_header {
        query.push(("header", "false".to_owned()));
    }
    if !null_values.is_empty() {
        query.push(("null", null_values.join(",")));
    }
    let response = match uri {
        Some(uri) => {
            eprintln!("The server is reading {uri}.");
            client
                .ingest_dataset_object(project, name, uri, &query)
                .await?
        }
        None => upload(context, &client, name, file, query, project).await?,
    };

    print_ingest_outcome(context, name, &response);
    Ok(())
}

/// Streams `file` to the upload route with a progress bar.
async fn upload(
    context: &Context,
    client: &ghaf_client::Client,
    name: &str,
    file: &Path,
    mut query: Vec<(&'static str, String)>,
    project: &str,
) -> anyhow::Result<ghaf_client::ApiResponse<Value>> {
    let handle = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("cannot open {}", file.display()))?;
    let size = handle.metadata().await?.len();
    let file_name = file
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "upload".into());
    query.push(("file_name", file_name));

    let bar = ProgressBar::new(size);
    if context.output == OutputFormat::Table {
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(format!("uploading {}", file.display()));
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let progress_bar = bar.clone();
    let progress: Arc<dyn Fn(u64) + Send + Sync> =
        Arc::new(move |sent| progress_bar.set_position(sent));
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let result = client
        .upload_dataset_file(project, name, handle, &query, progress)
        .await;
    bar.finish_and_clear();
    Ok(result?)
}

fn print_ingest_outcome(context: &Context, name: &str, response: &ghaf_client::ApiResponse<Value>) {
    output::emit(context.output, response, |outcome| {
        let version = &outcome["version"];
        if outcome["created"] == Value::Bool(true) {
            println!(
                "Created version {} of {name}: {} rows stored, {} rows quarantined.",
                version["version"], version["row_count"], version["quarantined_rows"]
            );
        } else {
            println!(
                "Version {} of {name} already has this content; nothing new was stored.",
                version["version"]
            );
        }
        print_checks(&outcome["report"]);
    });
}

fn print_checks(report: &Value) {
    let mut table = output::table(&["check", "column", "failed rows"]);
    for check in report["checks"].as_array().into_iter().flatten() {
        if check["failed"].as_u64().unwrap_or(0) > 0 {
            table.add_row([
                text(&check["check"]),
                text(&check["column"]),
                text(&check["failed"]),
            ]);
        }
    }
    if table.row_count() > 0 {
        println!();
        output::print_table(&table, "");
    }
}

fn print_dataset(dataset: &Value) {
    output::print_fields(&[
        ("name", text(&dataset["name"])),
        ("description", text(&dataset["description"])),
        ("schema version", text(&dataset["schema_version"])),
        ("event time", text(&dataset["schema"]["event_time"])),
        ("created", text(&dataset["created_at"])),
    ]);
    println!();
    let mut table = output::table(&[
        "column",
        "type",
        "nullable",
        "classification",
        "constraints",
    ]);
    for column in dataset["schema"]["columns"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let mut constraints = Vec::new();
        for key in ["min", "max", "allowed", "pattern", "unique", "timezone"] {
            if !column[key].is_null() {
                constraints.push(format!("{key}={}", column[key]));
            }
        }
        table.add_row([
            text(&column["name"]),
            text(&column["type"]),
            output::yes_no(column["nullable"].as_bool().unwrap_or(true)).to_owned(),
            text(&column["classification"]),
            constraints.join(" "),
        ]);
    }
    output::print_table(&table, "The schema has no columns.");
}

fn print_profile(version: &Value) {
    output::print_fields(&[
        ("version", text(&version["version"])),
        ("rows", text(&version["row_count"])),
        ("quarantined rows", text(&version["quarantined_rows"])),
        ("digest", text(&version["content_digest"])),
        ("source", text(&version["source"])),
    ]);
    println!();
    let mut table = output::table(&[
        "column",
        "type",
        "nulls",
        "min",
        "max",
        "mean",
        "distinct (est.)",
    ]);
    for column in version["profile"]["columns"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let mean = column["mean"]
            .as_f64()
            .map_or_else(|| "-".into(), |mean| format!("{mean:.4}"));
        table.add_row([
            text(&column["name"]),
            text(&column["type"]),
            text(&column["null_count"]),
            text(&column["min"]),
            text(&column["max"]),
            mean,
            text(&column["distinct_estimate"]),
        ]);
    }
    output::print_table(&table, "The version has no columns.");
    print_checks(&version["report"]);
}
