//! Ingest of the shipped nycflights13 tables. The missing values of flights (cancelled and
//! diverted flights) are counted a second time here by parsing the CSV with the `csv` crate.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use common::{csv_options, harness};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/nycflights13")
}

/// Counts rows and `NA` or empty fields per column of a gzip CSV file.
fn independent_counts(file: &str) -> (u64, BTreeMap<String, u64>) {
    let mut text = String::new();
    let compressed = std::fs::File::open(data_dir().join(file)).unwrap();
    flate2::read::GzDecoder::new(compressed)
        .read_to_string(&mut text)
        .unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    let mut missing: BTreeMap<String, u64> = header.iter().map(|name| (name.clone(), 0)).collect();
    let mut rows = 0;
    for record in reader.records() {
        let record = record.unwrap();
        rows += 1;
        for (name, value) in header.iter().zip(record.iter()) {
            if value == "NA" || value.is_empty() {
                *missing.get_mut(name).unwrap() += 1;
            }
        }
    }
    (rows, missing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flights_missing_values_match_independent_count() {
    let h = harness().await;
    let schema = std::fs::read_to_string(data_dir().join("flights.schema.yaml")).unwrap();
    h.create("flights", &schema).await;
    let outcome = h
        .ingest(
            "flights",
            &data_dir().join("flights.csv.gz"),
            &csv_options(),
        )
        .await
        .unwrap();

    let (rows, missing) = independent_counts("flights.csv.gz");
    assert_eq!(rows, 336_776);
    assert_eq!(missing["arr_delay"], 9_430, "cancelled or diverted flights");
    assert_eq!(missing["dep_time"], 8_255, "cancelled flights");

    let version = &outcome.version;
    assert_eq!(
        outcome.report.rows_quarantined, 0,
        "{:?}",
        outcome.report.sample
    );
    assert_eq!(version.row_count, rows);
    assert_eq!(version.profile.row_count, rows);
    for column in &version.profile.columns {
        assert_eq!(
            column.null_count, missing[&column.name],
            "null count of {}",
            column.name
        );
    }
    let time_hour = version
        .profile
        .columns
        .iter()
        .find(|column| column.name == "time_hour")
        .unwrap();
    assert_eq!(
        time_hour.min,
        Some(serde_json::json!("2013-01-01T10:00:00Z"))
    );
    let origin = version
        .profile
        .columns
        .iter()
        .find(|column| column.name == "origin")
        .unwrap();
    assert_eq!(origin.distinct_estimate, 3);
    let carrier = version
        .profile
        .columns
        .iter()
        .find(|column| column.name == "carrier")
        .unwrap();
    assert_eq!(carrier.distinct_estimate, 16);
}

#[tokio::test]
async fn other_tables_ingest_without_failures() {
    let h = harness().await;
    for (table, expected_rows) in [
        ("weather", 26_115),
        ("planes", 3_322),
        ("airports", 1_458),
        ("airlines", 16),
    ] {
        let schema =
            std::fs::read_to_string(data_dir().join(format!("{table}.schema.yaml"))).unwrap();
        h.create(table, &schema).await;
        let outcome = h
            .ingest(
                table,
                &data_dir().join(format!("{table}.csv.gz")),
                &csv_options(),
            )
            .await
            .unwrap_or_else(|error| panic!("{table}: {error}"));
        assert_eq!(
            outcome.report.rows_quarantined, 0,
            "{table}: {:?}",
            outcome.report.sample
        );
        assert_eq!(outcome.version.row_count, expected_rows, "{table}");

        let (_, missing) = independent_counts(&format!("{table}.csv.gz"));
        for column in &outcome.version.profile.columns {
            assert_eq!(
                column.null_count, missing[&column.name],
                "{table}.{}",
                column.name
            );
        }
    }
}
