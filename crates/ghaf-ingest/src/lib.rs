//! Data ingestion of Ghaf: declared dataset schemas, readers for CSV, NDJSON and Parquet,
//! row checks with a quarantine file, column profiles, immutable content-addressed dataset
//! versions in the blob store, and OpenLineage events for every ingest run.
//!
//! One ingest is one streaming pass: the reader converts the input to Arrow batches of the
//! declared types, the validator checks each batch, passing rows go to a zstd Parquet
//! staging file and the profile, failing rows go to an NDJSON quarantine file with their
//! reasons. Only after both files are in the blob store does one database transaction make
//! the version visible.

mod consumer;
mod convert;
mod error;
pub mod kafka;
pub mod lineage;
pub mod nats;
mod object;
mod pipeline;
mod profile;
mod push;
mod read;
pub mod schema;
mod service;
mod store;
mod validate;

pub mod conformance;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::IngestError;
pub use object::{ObjectInputConfig, object_file_name};
pub use pipeline::{IngestReport, QuarantineRow, SAMPLE_VALUE_CHARS, VersionEncoding, staging_dir};
pub use profile::{ColumnProfile, PROFILE_TEXT_CHARS, Profile};
pub use push::{
    DEAD_LETTER_MESSAGE_BYTES, DEAD_LETTER_SUFFIX, PushFormat, PushOutcome, PushResult,
};
pub use read::{
    DEFAULT_BATCH_ROWS, DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_FIELD_BYTES, DEFAULT_MAX_ROW_BYTES,
    DEFAULT_MAX_ROW_GROUP_BYTES, InputFormat, ReadOptions,
};
pub use schema::{
    AcceptancePolicy, Classification, ColumnSpec, ColumnType, DatasetSchema, LabelChange,
};
pub use service::{IngestInput, IngestOutcome, IngestService, ReadLimits};
pub use store::{
    Dataset, DatasetStore, DatasetVersion, LineageFilter, SchemaVersion, StoredLineageEvent,
};
pub use validate::{CheckCount, CheckKind, Failure};
