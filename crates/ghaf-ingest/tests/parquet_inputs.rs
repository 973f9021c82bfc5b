//! Parquet files as pandas, pyarrow and Spark write them: compressed pages (Snappy, gzip,
//! LZ4, zstd) and timestamp columns whose time zone is a name such as `UTC`.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Int64Array, RecordBatch, TimestampMicrosecondArray, TimestampMillisecondArray,
    TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use common::{Harness, harness};
use ghaf_core::ErrorCode;
use ghaf_ingest::{IngestError, InputFormat, ReadOptions};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, GzipLevel, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};

const EVENTS: &str = "
columns:
  - {name: id, type: integer, nullable: false}
  - {name: at, type: timestamp}
";

/// 2024-03-01T10:00:00Z and 2024-03-01T10:00:01.5Z in microseconds since the epoch.
const MICROS: [i64; 2] = [1_709_287_200_000_000, 1_709_287_201_500_000];

/// Writes one batch to `file_name` in the harness directory with `compression` on every page.
fn write_parquet(
    h: &Harness,
    file_name: &str,
    batch: &RecordBatch,
    compression: Compression,
) -> PathBuf {
    let path = h.dir.path().join(file_name);
    let properties = WriterProperties::builder()
        .set_compression(compression)
        .build();
    let file = std::fs::File::create(&path).unwrap();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(properties)).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
    path
}

/// Returns the page codec of the first column chunk of a Parquet file.
fn codec_of(path: &PathBuf) -> Compression {
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    reader.metadata().row_group(0).column(0).compression()
}

fn batch(timestamps: ArrayRef) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("at", timestamps.data_type().clone(), true),
    ]);
    let ids: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
    RecordBatch::try_new(Arc::new(schema), vec![ids, timestamps]).unwrap()
}

fn micros_in(zone: &str) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(MICROS.to_vec()).with_timezone(zone))
}

/// Reads the `at` column of a stored version, in microseconds since the epoch.
async fn stored_micros(h: &Harness, content_digest: &str) -> Vec<i64> {
    let digest = ghaf_ingest::IngestService::digest(content_digest).unwrap();
    let bytes = h.service.blobs().get(&h.tenant, &digest).await.unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap();
    let mut values = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let column = batch.column_by_name("at").unwrap();
        assert_eq!(
            column.data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
        );
        let column = column
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        values.extend(column.values().iter().copied());
    }
    values
}

#[tokio::test]
async fn compressed_parquet_pages_are_read() {
    let h = harness().await;
    h.create("events", EVENTS).await;
    let codecs = [
        ("snappy", Compression::SNAPPY),
        ("gzip", Compression::GZIP(GzipLevel::default())),
        ("lz4_raw", Compression::LZ4_RAW),
        ("lz4", Compression::LZ4),
        ("zstd", Compression::ZSTD(ZstdLevel::default())),
    ];
    let mut digests = Vec::new();
    for (name, compression) in codecs {
        let path = write_parquet(
            &h,
            &format!("events-{name}.parquet"),
            &batch(micros_in("+00:00")),
            compression,
        );
        assert_eq!(codec_of(&path), compression, "{name}");
        let outcome = h
            .ingest("events", &path, &ReadOptions::new(InputFormat::Parquet))
            .await
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(outcome.report.rows_read, 2, "{name}");
        assert_eq!(outcome.report.rows_accepted, 2, "{name}");
        assert_eq!(
            stored_micros(&h, &outcome.version.content_digest).await,
            MICROS,
            "{name}"
        );
        digests.push(outcome.version.content_digest);
    }
    // The codec of the input does not change the content of the stored version.
    assert!(
        digests.iter().all(|digest| digest == &digests[0]),
        "{digests:?}"
    );
}

#[tokio::test]
async fn pandas_style_snappy_file_is_read() {
    let h = harness().await;
    h.create("events", EVENTS).await;
    // pandas' to_parquet: Snappy pages and a tz-aware UTC column in nanoseconds named "UTC".
    let nanos: Vec<i64> = MICROS.iter().map(|micros| micros * 1000).collect();
    let timestamps: ArrayRef = Arc::new(TimestampNanosecondArray::from(nanos).with_timezone("UTC"));
    let path = write_parquet(
        &h,
        "pandas.parquet",
        &batch(timestamps),
        Compression::SNAPPY,
    );
    assert_eq!(codec_of(&path), Compression::SNAPPY);
    let outcome = h
        .ingest("events", &path, &ReadOptions::new(InputFormat::Parquet))
        .await
        .unwrap();
    assert_eq!(outcome.report.rows_accepted, 2);
    assert_eq!(
        stored_micros(&h, &outcome.version.content_digest).await,
        MICROS
    );
}

#[tokio::test]
async fn utc_zone_names_in_every_unit_are_read() {
    let h = harness().await;
    h.create("events", EVENTS).await;
    let millis: Vec<i64> = MICROS.iter().map(|micros| micros / 1000).collect();
    let nanos: Vec<i64> = MICROS.iter().map(|micros| micros * 1000).collect();
    let cases: Vec<(&str, ArrayRef)> = vec![
        ("UTC", micros_in("UTC")),
        (
            "UTC",
            Arc::new(TimestampMillisecondArray::from(millis.clone()).with_timezone("UTC")),
        ),
        (
            "UTC",
            Arc::new(TimestampNanosecondArray::from(nanos.clone()).with_timezone("UTC")),
        ),
        ("Z", micros_in("Z")),
        ("Etc/UTC", micros_in("Etc/UTC")),
        ("GMT", micros_in("GMT")),
        // A fixed offset only changes how the instants are shown, not the instants.
        ("+04:00", micros_in("+04:00")),
        ("-0530", micros_in("-0530")),
    ];
    for (index, (zone, timestamps)) in cases.into_iter().enumerate() {
        let unit = timestamps.data_type().to_string();
        let path = write_parquet(
            &h,
            &format!("events-{index}.parquet"),
            &batch(timestamps),
            Compression::SNAPPY,
        );
        let outcome = h
            .ingest("events", &path, &ReadOptions::new(InputFormat::Parquet))
            .await
            .unwrap_or_else(|error| panic!("{unit} in {zone}: {error}"));
        assert_eq!(outcome.report.rows_accepted, 2, "{unit} in {zone}");
        assert_eq!(
            stored_micros(&h, &outcome.version.content_digest).await,
            MICROS,
            "{unit} in {zone}"
        );
    }
}

#[tokio::test]
async fn unsupported_zone_names_are_input_errors() {
    let h = harness().await;
    h.create("events", EVENTS).await;
    for zone in ["Asia/Dubai", "America/New_York", "not a zone"] {
        let path = write_parquet(
            &h,
            "named.parquet",
            &batch(micros_in(zone)),
            Compression::SNAPPY,
        );
        let error = h
            .ingest("events", &path, &ReadOptions::new(InputFormat::Parquet))
            .await
            .unwrap_err();
        assert!(
            matches!(error, IngestError::InvalidInput(_)),
            "{zone}: {error:?}"
        );
        assert_eq!(error.code(), ErrorCode::InvalidArgument, "{zone}");
        let message = error.to_string();
        assert!(
            message.contains("column \"at\"") && message.contains(&format!("{zone:?}")),
            "{message}"
        );
        assert!(message.contains("tz_convert"), "{message}");
    }
    let dataset = h.dataset("events").await;
    let versions = h
        .service
        .store()
        .list_versions(&h.tenant, &dataset.id)
        .await
        .unwrap();
    assert!(versions.is_empty(), "no version is stored: {versions:?}");
}

#[tokio::test]
async fn sub_microsecond_nanoseconds_fail() {
    let h = harness().await;
    h.create(
        "events",
        &format!("{EVENTS}acceptance: {{max_failure_share: 0.5}}\n"),
    )
    .await;
    let nanos = vec![MICROS[0] * 1000, MICROS[1] * 1000 + 1];
    let timestamps: ArrayRef = Arc::new(TimestampNanosecondArray::from(nanos).with_timezone("UTC"));
    let path = write_parquet(&h, "nanos.parquet", &batch(timestamps), Compression::SNAPPY);
    let outcome = h
        .ingest("events", &path, &ReadOptions::new(InputFormat::Parquet))
        .await
        .unwrap();
    assert_eq!(outcome.report.rows_accepted, 1);
    assert_eq!(outcome.report.sample.len(), 1);
    assert_eq!(outcome.report.sample[0].row, 2);
    let reason = &outcome.report.sample[0].reasons[0];
    assert!(
        reason.message.contains("without changing the value"),
        "{}",
        reason.message
    );
    assert_eq!(
        stored_micros(&h, &outcome.version.content_digest).await,
        [MICROS[0]]
    );
}

fn pandas_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

#[tokio::test]
async fn files_written_by_pandas() {
    let h = harness().await;
    h.create("events", EVENTS).await;
    let snappy = pandas_file("pandas-utc-snappy.parquet");
    assert_eq!(codec_of(&snappy), Compression::SNAPPY);
    let outcome = h
        .ingest("events", &snappy, &ReadOptions::new(InputFormat::Parquet))
        .await
        .unwrap();
    assert_eq!(outcome.report.rows_accepted, 2);
    assert_eq!(
        stored_micros(&h, &outcome.version.content_digest).await,
        MICROS
    );

    // Brotli is the one codec pandas offers that Ghaf does not read.
    let error = h
        .ingest(
            "events",
            &pandas_file("pandas-utc-brotli.parquet"),
            &ReadOptions::new(InputFormat::Parquet),
        )
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::InvalidArgument, "{error}");
    let message = error.to_string();
    assert!(
        message.contains("brotli") && message.contains("compression=\"zstd\""),
        "{message}"
    );

    let error = h
        .ingest(
            "events",
            &pandas_file("pandas-dubai.parquet"),
            &ReadOptions::new(InputFormat::Parquet),
        )
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::InvalidArgument, "{error}");
    let message = error.to_string();
    assert!(
        message.contains("column \"at\"") && message.contains("\"Asia/Dubai\""),
        "{message}"
    );
}
