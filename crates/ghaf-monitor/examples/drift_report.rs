//! Computes a drift report on numeric data stored as raw little-endian `f64` values, for the
//! benchmark driver `bench/drift_vs_evidently.py`.
//!
//! Usage: `drift_report FILE ROWS COLUMNS MODE`, where FILE holds the reference columns and
//! then the current columns, each column as ROWS consecutive values, and MODE is `evidently`
//! (compatibility mode) or `ghaf` (default mode). Prints one JSON object with the per-column
//! results and the time spent computing the report, file reads included.
//!
//! The report is computed one column at a time: the reference and current values of a column
//! are read, tested and dropped before the next column is read, so memory stays at about
//! two columns. The dataset-level step (share of drifted columns and, in the default mode,
//! the Benjamini–Hochberg adjustment) runs on the per-column results at the end.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::time::Instant;

use ghaf_monitor::Column;
use ghaf_monitor::drift::DatasetDrift;
use ghaf_monitor::drift::evidently;
use ghaf_monitor::drift::ghaf::{self, GhafOptions, ReferenceColumn};

type BoxError = Box<dyn std::error::Error>;

/// Raw column file of `2 × columns` columns with `rows` values each.
struct ColumnFile {
    reader: BufReader<File>,
    rows: usize,
}

impl ColumnFile {
    /// Opens the file after checking its size against the expected shape.
    fn open(path: &str, rows: usize, columns: usize) -> Result<Self, BoxError> {
        let file = File::open(path).map_err(|error| format!("cannot open {path}: {error}"))?;
        let expected = (2 * rows * columns * 8) as u64;
        let actual = file.metadata()?.len();
        if actual != expected {
            return Err(format!(
                "{path} has {actual} bytes, expected {expected} for {rows} rows × {columns} columns × 2"
            )
            .into());
        }
        Ok(Self {
            reader: BufReader::with_capacity(1 << 20, file),
            rows,
        })
    }

    /// Reads column `index` (reference columns first, then current columns).
    fn read(&mut self, index: usize, name: &str) -> Result<Column, BoxError> {
        let bytes_per_column = self.rows * 8;
        self.reader
            .seek(SeekFrom::Start((index * bytes_per_column) as u64))?;
        let mut values = Vec::with_capacity(self.rows);
        let mut chunk = vec![0u8; 1 << 16];
        let mut remaining = bytes_per_column;
        while remaining > 0 {
            let length = remaining.min(chunk.len());
            self.reader.read_exact(&mut chunk[..length])?;
            values.extend(
                chunk[..length]
                    .chunks_exact(8)
                    .map(|bytes| f64::from_le_bytes(bytes.try_into().expect("8-byte chunk"))),
            );
            remaining -= length;
        }
        Ok(Column::numeric(name, values))
    }
}

pub fn main() -> Result<(), BoxError> {
    let arguments: Vec<String> = std::env::args().collect();
    let [_, path, rows, columns, mode] = arguments.as_slice() else {
        return Err(
            "usage: drift_report FILE ROWS COLUMNS MODE (MODE is evidently or ghaf)".into(),
        );
    };
    let rows: usize = rows
        .parse()
        .map_err(|error| format!("invalid ROWS '{rows}': {error}"))?;
    let columns: usize = columns
        .parse()
        .map_err(|error| format!("invalid COLUMNS '{columns}': {error}"))?;
    if mode != "evidently" && mode != "ghaf" {
        return Err(format!("invalid MODE '{mode}': expected evidently or ghaf").into());
    }
    let mut file = ColumnFile::open(path, rows, columns)?;

    let start = Instant::now();
    let options = GhafOptions::default();
    let mut results = Vec::with_capacity(columns);
    for index in 0..columns {
        let name = format!("f{index}");
        let reference = file.read(index, &name)?;
        let current = file.read(columns + index, &name)?;
        let result = if mode == "evidently" {
            evidently::column_drift(&reference, &current, None)?
        } else {
            ReferenceColumn::fit(&reference, &options)?.test(&current)?
        };
        results.push(result);
    }
    let report = if mode == "evidently" {
        DatasetDrift::from_columns(results, 0.5)
    } else {
        ghaf::decide(results, &options)
    };
    let seconds = start.elapsed().as_secs_f64();

    let columns: Vec<String> = report
        .columns
        .iter()
        .map(|column| {
            format!(
                "{{\"column\":\"{}\",\"method\":\"{:?}\",\"score\":{:e},\"drifted\":{}}}",
                column.column, column.method, column.score, column.drifted
            )
        })
        .collect();
    println!(
        "{{\"mode\":\"{mode}\",\"report_seconds\":{seconds},\"share\":{},\"dataset_drifted\":{},\"columns\":[{}]}}",
        report.share,
        report.dataset_drifted,
        columns.join(",")
    );
    Ok(())
}
