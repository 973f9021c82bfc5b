//! Quickstart stage: create the nycflights13 datasets from their schema files and upload the
//! gzip CSV files through the API, as `ghaf datasets create` and `ghaf datasets ingest` do.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use ghaf_client::{Client, ClientError};
use ghaf_ingest::DatasetSchema;
use serde_json::Value;

use super::thousands;

/// The shipped tables, in upload order: name and description.
const TABLES: [(&str, &str); 5] = [
    (
        "flights",
        "Every flight that departed New York City in 2013",
    ),
    ("weather", "Hourly weather at EWR, JFK and LGA in 2013"),
    ("planes", "Aircraft by tail number"),
    ("airports", "Airports by FAA code"),
    ("airlines", "Carriers by code"),
];

/// CSV tokens read as null: the files write missing values as `NA`.
const NULL_TOKENS: &str = "NA,";

/// Outcome of one table's upload.
pub struct IngestedTable {
    pub name: &'static str,
    pub version: i64,
    /// False when a version with the same rows existed and was returned instead.
    pub created: bool,
    pub rows_accepted: u64,
    pub rows_quarantined: u64,
    /// Failed checks of this upload, most frequent first: check, column and failed rows.
    pub failed_checks: Vec<(String, String, u64)>,
    /// Null count per column from the stored profile, for columns with nulls, most first.
    pub null_counts: Vec<(String, u64)>,
}

/// Creates each dataset unless it exists and uploads its file, or a systematic sample of
/// about `sample` rows of it written to `scratch`.
pub async fn ingest_tables(
    client: &Client,
    project: &str,
    source_dir: &Path,
    sample: Option<u64>,
    scratch: &Path,
) -> anyhow::Result<Vec<IngestedTable>> {
    let mut tables = Vec::with_capacity(TABLES.len());
    for (name, description) in TABLES {
        let schema_path = source_dir.join(format!("{name}.schema.yaml"));
        let data_path = source_dir.join(format!("{name}.csv.gz"));
        ensure_dataset(client, project, name, description, &schema_path).await?;
        let upload_path = match sample {
            Some(rows) => write_sample(&data_path, rows, scratch)?,
            None => data_path.clone(),
        };
        let table = upload(client, project, name, &upload_path)
            .await
            .with_context(|| format!("cannot ingest {}", data_path.display()))?;
        tables.push(table);
    }
    Ok(tables)
}

/// Creates the dataset from its schema file; an existing dataset of that name is kept.
async fn ensure_dataset(
    client: &Client,
    project: &str,
    name: &str,
    description: &str,
    schema_path: &Path,
) -> anyhow::Result<()> {
    match client.get_dataset(project, name).await {
        Ok(_) => return Ok(()),
        Err(ClientError::Api { status: 404, .. }) => {}
        Err(error) => return Err(error).with_context(|| format!("cannot read dataset {name}")),
    }
    let text = std::fs::read_to_string(schema_path)
        .with_context(|| format!("cannot read the schema file {}", schema_path.display()))?;
    let schema =
        DatasetSchema::from_yaml(&text).with_context(|| format!("in {}", schema_path.display()))?;
    let body = serde_json::json!({
        "name": name,
        "description": description,
        "schema": serde_json::to_value(schema)?,
    });
    client
        .create_dataset(project, &body)
        .await
        .with_context(|| format!("cannot create dataset {name}"))?;
    Ok(())
}

async fn upload(
    client: &Client,
    project: &str,
    name: &'static str,
    path: &Path,
) -> anyhow::Result<IngestedTable> {
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    let file_name = path.file_name().map_or_else(
        || format!("{name}.csv.gz"),
        |n| n.to_string_lossy().into_owned(),
    );
    let query = [
        ("file_name", file_name),
        ("format", "csv".to_owned()),
        ("null", NULL_TOKENS.to_owned()),
    ];
    let outcome = client
        .upload_dataset_file(project, name, file, &query, Arc::new(|_| {}))
        .await?
        .value;

    let version = outcome["version"]["version"]
        .as_i64()
        .context("the ingest response has no version number")?;
    let mut failed_checks: Vec<(String, String, u64)> = outcome["report"]["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|check| {
            let failed = check["failed"].as_u64().filter(|&n| n > 0)?;
            Some((
                check["check"].as_str().unwrap_or("?").to_owned(),
                check["column"].as_str().unwrap_or("-").to_owned(),
                failed,
            ))
        })
        .collect();
    failed_checks.sort_by_key(|check| std::cmp::Reverse(check.2));

    let stored = client
        .get_dataset_version(project, name, version)
        .await
        .with_context(|| format!("cannot read version {version} of {name}"))?
        .value;
    Ok(IngestedTable {
        name,
        version,
        created: outcome["created"] == Value::Bool(true),
        rows_accepted: stored["row_count"].as_u64().unwrap_or(0),
        rows_quarantined: outcome["report"]["rows_quarantined"].as_u64().unwrap_or(0),
        failed_checks,
        null_counts: null_counts(&stored["profile"]),
    })
}

fn null_counts(profile: &Value) -> Vec<(String, u64)> {
    let mut counts: Vec<(String, u64)> = profile["columns"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|column| {
            let nulls = column["null_count"].as_u64().filter(|&n| n > 0)?;
            Some((column["name"].as_str()?.to_owned(), nulls))
        })
        .collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts
}

/// Writes the header and every k-th data line of a gzip CSV file, with k chosen so that
/// about `rows` lines remain, and returns the new file's path. Tables with at most `rows`
/// lines are copied whole. Every line of the shipped files is one record (no quoted line
/// breaks), which this relies on.
fn write_sample(path: &Path, rows: u64, scratch: &Path) -> anyhow::Result<PathBuf> {
    let open = || -> anyhow::Result<_> {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok(BufReader::new(flate2::read::GzDecoder::new(file)))
    };
    let total = open()?.lines().count().saturating_sub(1) as u64;
    let step = total.div_ceil(rows.max(1)).max(1);

    let name = path.file_name().map_or_else(
        || "sample.csv.gz".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let target = scratch.join(format!("sample-{rows}-{name}"));
    let file = std::fs::File::create(&target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    let mut encoder = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    for (index, line) in open()?.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        // Line 0 is the header; data line i (from 0) is kept when i is a multiple of `step`.
        if index == 0 || (index as u64 - 1).is_multiple_of(step) {
            writeln!(encoder, "{line}")?;
        }
    }
    encoder.finish()?.flush()?;
    Ok(target)
}

/// Prints one block per table: rows stored and quarantined with the top reasons, and the
/// nulls the schema keeps.
pub fn print_tables(tables: &[IngestedTable]) {
    for table in tables {
        let state = if table.created {
            "new version"
        } else {
            "same content as the existing version, reused"
        };
        println!(
            "       {:<9} v{} ({state}): {} rows accepted, {} quarantined",
            table.name,
            table.version,
            thousands(table.rows_accepted),
            thousands(table.rows_quarantined)
        );
        if !table.failed_checks.is_empty() {
            let reasons: Vec<String> = table
                .failed_checks
                .iter()
                .take(3)
                .map(|(check, column, failed)| {
                    format!("{check} on {column}: {}", thousands(*failed))
                })
                .collect();
            println!(
                "                 quarantine reasons: {}",
                reasons.join(", ")
            );
        }
        if !table.null_counts.is_empty() {
            let nulls: Vec<String> = table
                .null_counts
                .iter()
                .take(5)
                .map(|(column, nulls)| format!("{column} {}", thousands(*nulls)))
                .collect();
            println!("                 kept as null: {}", nulls.join(", "));
        }
        if table.name == "flights"
            && let Some((_, cancelled)) = table.null_counts.iter().find(|(c, _)| c == "dep_time")
        {
            let no_arrival = table
                .null_counts
                .iter()
                .find(|(c, _)| c == "arr_delay")
                .map_or(0, |(_, n)| *n);
            println!(
                "                 {} flights have no departure time (cancelled) and {} no arrival delay \
                 (cancelled or diverted); the model leaves the latter out of its labels",
                thousands(*cancelled),
                thousands(no_arrival)
            );
        }
    }
}
