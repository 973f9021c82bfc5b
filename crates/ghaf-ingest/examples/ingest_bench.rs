//! Ingests one file into a fresh local store and prints the rows, the time and the peak
//! memory, for `bench/ingest_vs_duckdb.sh`.
//!
//! The store is a temporary directory with an embedded SQLite database and local blobs,
//! as in the crate's tests, and is deleted on exit.
//!
//! ```sh
//! cargo run --release -p ghaf-ingest --example ingest_bench -- \
//!     data/nycflights13/flights.csv.gz data/nycflights13/flights.schema.yaml
//! ```
//!
//! Output is one line of `key=value` pairs. `seconds` covers only the ingest call (read,
//! checks, profile, Parquet, blob store and version row), not opening the store.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ghaf_blob::{BlobConfig, BlobStore};
use ghaf_core::{Name, PrincipalId, TenantId};
use ghaf_ingest::{
    DatasetSchema, DatasetStore, IngestInput, IngestService, InputFormat, ReadOptions,
};
use ghaf_meta::{Db, MetaStore, SqlMetaStore};

const USAGE: &str = "usage: ingest_bench INPUT SCHEMA_YAML [--format csv|ndjson|parquet] \
                     [--null TOKEN]...\n\
                     Null tokens default to \"NA\" and \"\" (the nycflights13 files).";

struct Args {
    input: PathBuf,
    schema: PathBuf,
    format: InputFormat,
    null_values: Option<Vec<String>>,
}

fn parse_args() -> Result<Args, String> {
    let mut positional = Vec::new();
    let mut format = InputFormat::Csv;
    let mut null_values: Option<Vec<String>> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--format" => {
                let value = args.next().ok_or("--format needs a value")?;
                format = match value.as_str() {
                    "csv" => InputFormat::Csv,
                    "ndjson" => InputFormat::Ndjson,
                    "parquet" => InputFormat::Parquet,
                    other => {
                        return Err(format!(
                            "unknown format {other:?}: use csv, ndjson or parquet"
                        ));
                    }
                };
            }
            "--null" => {
                let value = args.next().ok_or("--null needs a value")?;
                null_values.get_or_insert_with(Vec::new).push(value);
            }
            "-h" | "--help" => return Err(String::new()),
            _ => positional.push(PathBuf::from(arg)),
        }
    }
    let [input, schema] = <[PathBuf; 2]>::try_from(positional)
        .map_err(|found| format!("expected INPUT and SCHEMA_YAML, got {} paths", found.len()))?;
    Ok(Args {
        input,
        schema,
        format,
        null_values,
    })
}

/// Peak resident set size of this process in KiB (`VmHWM` of `/proc/self/status`), or
/// `None` where that file is missing (not Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Opens an ingest service on a SQLite database and local blobs under `dir`, with tenant
/// `bench` and project `p`, and returns it with the created dataset `bench`.
async fn open_store(
    dir: &Path,
    schema: &DatasetSchema,
) -> anyhow::Result<(IngestService, ghaf_ingest::Dataset)> {
    let url = format!("sqlite://{}", dir.join("meta.db").display());
    let db = Db::connect(&url, 4).await?;
    let meta = SqlMetaStore::new(db.clone(), b"ingest-bench-key".to_vec());
    let tenant = TenantId::new(Name::parse("bench")?);
    meta.create_tenant(&tenant, "Benchmark").await?;
    let project = meta
        .create_project(
            &tenant,
            &Name::parse("p")?,
            "",
            &PrincipalId::from_stored("bench"),
        )
        .await?;
    let blobs = BlobStore::from_config(&BlobConfig::Local {
        root: dir.join("blobs"),
    })?;
    let service = IngestService::new(DatasetStore::new(db), blobs, dir.join("staging"));
    let dataset = service
        .create_dataset(&tenant, &project.id, "bench", "", schema, "bench")
        .await?;
    Ok((service, dataset))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("error: {message}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let schema_text = std::fs::read_to_string(&args.schema).map_err(|error| {
        anyhow::anyhow!(
            "failed to read schema file {}: {error}",
            args.schema.display()
        )
    })?;
    let schema = DatasetSchema::from_yaml(&schema_text)?;
    let mut options = ReadOptions::new(args.format);
    options.null_values = args
        .null_values
        .unwrap_or_else(|| vec!["NA".into(), String::new()]);

    let dir = tempfile::tempdir()?;
    let (service, dataset) = open_store(dir.path(), &schema).await?;

    let source = args.input.display().to_string();
    let started = Instant::now();
    let outcome = service
        .ingest(
            &dataset,
            "p",
            IngestInput {
                path: &args.input,
                options: &options,
                source: &source,
                progress: None,
            },
            "bench",
        )
        .await?;
    let seconds = started.elapsed().as_secs_f64();

    let report = &outcome.report;
    #[allow(clippy::cast_precision_loss)]
    let rows_per_second = report.rows_read as f64 / seconds;
    let peak_rss = peak_rss_kib().map_or_else(|| "unknown".to_owned(), |kib| kib.to_string());
    println!(
        "rows_read={} rows_accepted={} rows_quarantined={} seconds={seconds:.3} \
         rows_per_s={rows_per_second:.0} parquet_bytes={} peak_rss_kib={peak_rss}",
        report.rows_read,
        report.rows_accepted,
        report.rows_quarantined,
        outcome.version.content_size,
    );
    Ok(())
}
