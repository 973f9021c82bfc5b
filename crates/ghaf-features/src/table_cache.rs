//! Feature tables persisted on disk, so the first training set or materialisation after a
//! restart reads a view's computed table instead of the dataset version.
//!
//! One file contains the feature table of one view version over one dataset version, with its
//! rows in index order ([`FeatureTable::into_sorted`]), so loading it rebuilds the as-of
//! index in one linear pass. The file name is the SHA-256 of the key text: the file format,
//! the crate version, tenant, project, view name and version, the view's fingerprint (keys,
//! source, times and features) and the dataset version's content digest. A new dataset
//! version, view version or Ghaf version therefore reads a new file, and the key text is
//! also stored in the file and compared on load.
//!
//! Layout: an Arrow IPC file with one record batch, then a 24-byte trailer: the IPC length
//! (u64 LE), the CRC-32 of the IPC bytes (u32 LE), four zero bytes and the magic
//! `GHAFTBL1`. A file that is missing reads as a miss, and a file that fails any check
//! reads as `Corrupt`. Files are written to a temporary name and renamed, without fsync: a
//! crash can leave a damaged file, which the checks catch. After each write, the oldest
//! files by modification time (set again on every hit) are deleted until the directory
//! contains at most `max_bytes`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch};
use arrow::buffer::Buffer;
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use arrow_ipc::reader::{FileDecoder, read_footer_length};
use arrow_ipc::writer::{DictionaryTracker, FileWriter, IpcDataGenerator, IpcWriteOptions};
use sha2::{Digest, Sha256};

use crate::FeatureError;
use crate::view::{CompiledView, FeatureTable};

const MAGIC: &[u8; 8] = b"GHAFTBL1";
const TRAILER_LEN: usize = 24;
/// Version of the file layout and key text; a change makes every older file a miss.
const FORMAT: u32 = 1;
/// Version of how feature tables are computed (expressions, windows, casts, row order).
/// Bump it with any change to view.rs, expr.rs, window.rs or asof.rs that changes a
/// table's rows or values, so files computed by an older build become misses.
const COMPUTATION: u32 = 1;
const EXTENSION: &str = "ftable";
const TEMP_PREFIX: &str = ".tmp-";
/// Age after which a temporary file is taken to be left by a write that died.
const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);
const KEY_METADATA: &str = "ghaf.table_key";
const SOURCE_SCHEMA_METADATA: &str = "ghaf.source_schema";
const EVENT_COLUMN: &str = "event";
const CREATED_COLUMN: &str = "created";

/// The identity of one persisted feature table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableKey {
    text: String,
    file_name: String,
}

impl TableKey {
    /// Builds the key of a view version's table over a dataset version. `fingerprint` is
    /// [`crate::FeatureViewSpec::fingerprint`] over the entities the view is compiled with.
    pub fn new(
        tenant: &str,
        project: &str,
        view: &str,
        version: i64,
        fingerprint: &str,
        dataset_digest: &str,
    ) -> Self {
        let text = serde_json::json!({
            "format": FORMAT,
            "computation": COMPUTATION,
            "ghaf": env!("CARGO_PKG_VERSION"),
            "tenant": tenant,
            "project": project,
            "view": view,
            "view_version": version,
            "fingerprint": fingerprint,
            "dataset_digest": dataset_digest,
        })
        .to_string();
        let file_name = format!("{}.{EXTENSION}", hex::encode(Sha256::digest(&text)));
        TableKey { text, file_name }
    }
}

/// A table read back from its file, not yet checked against the compiled view.
pub struct StoredTable {
    /// Arrow schema of the dataset version the table was computed from.
    pub source_schema: SchemaRef,
    batch: RecordBatch,
    key_count: usize,
}

impl StoredTable {
    /// Checks the stored columns against `view` (key and feature count and types) and
    /// rebuilds the as-of index. A mismatch fails with `Corrupt`.
    pub fn into_table(self, view: &CompiledView) -> Result<FeatureTable, FeatureError> {
        let corrupt = |message: String| FeatureError::Corrupt {
            what: "feature table cache file",
            message,
        };
        let schema = self.batch.schema();
        let has_created = schema.index_of(CREATED_COLUMN).is_ok();
        let expected = view.keys.len() + 1 + usize::from(has_created) + view.features.len();
        if self.key_count != view.keys.len() || schema.fields().len() != expected {
            return Err(corrupt(format!(
                "it has {} columns with {} keys; view {}@v{} needs {} keys and {} features",
                schema.fields().len(),
                self.key_count,
                view.name,
                view.version,
                view.keys.len(),
                view.features.len()
            )));
        }
        let columns = self.batch.columns();
        for (key, column) in view.keys.iter().zip(columns) {
            if column.data_type() != &key.arrow_type() {
                return Err(corrupt(format!(
                    "key column {:?} has type {}, expected {}",
                    key.column,
                    column.data_type(),
                    key.arrow_type()
                )));
            }
        }
        let events = &columns[view.keys.len()];
        if events.data_type() != &DataType::Int64 || events.null_count() > 0 {
            return Err(corrupt(
                "the event column is not Int64 without nulls".to_owned(),
            ));
        }
        let events = events.as_primitive::<Int64Type>().values();
        let created = has_created.then(|| {
            columns[view.keys.len() + 1]
                .as_primitive_opt::<Int64Type>()
                .map(|c| c.iter().collect::<Vec<_>>())
        });
        let created = match created {
            Some(None) => return Err(corrupt("the created column is not Int64".to_owned())),
            Some(Some(created)) => Some(created),
            None => None,
        };
        let first_feature = view.keys.len() + 1 + usize::from(has_created);
        let features = columns[first_feature..].to_vec();
        for (feature, column) in view.features.iter().zip(&features) {
            if column.data_type() != &feature.data_type {
                return Err(corrupt(format!(
                    "feature {:?} has type {}, expected {}",
                    feature.name,
                    column.data_type(),
                    feature.data_type
                )));
            }
        }
        let keys = columns[..view.keys.len()].to_vec();
        FeatureTable::from_sorted(keys, events, created, features)
    }
}

/// A directory of persisted feature tables with a size budget.
#[derive(Clone, Debug)]
pub struct TableCache {
    dir: PathBuf,
    max_bytes: u64,
}

impl TableCache {
    /// Keeps tables in `dir`, at most `max_bytes` in all; a table larger than the budget is
    /// not written.
    pub fn new(dir: PathBuf, max_bytes: u64) -> Self {
        TableCache { dir, max_bytes }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the file of `key`.
    pub fn path(&self, key: &TableKey) -> PathBuf {
        self.dir.join(&key.file_name)
    }

    /// Reads the table of `key`; `Ok(None)` when there is no file. A hit sets the file's
    /// modification time, which the size budget evicts by.
    pub fn load(&self, key: &TableKey) -> Result<Option<StoredTable>, FeatureError> {
        let path = self.path(key);
        let started = std::time::Instant::now();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let read = started.elapsed();
        let size = bytes.len();
        let stored = decode(bytes, key)?;
        tracing::debug!(
            path = %path.display(),
            bytes = size,
            read_ms = read.as_millis() as u64,
            decode_ms = (started.elapsed() - read).as_millis() as u64,
            "read feature table cache file"
        );
        // Best effort: a file whose time cannot be set is only evicted earlier.
        if let Ok(file) = File::options().append(true).open(&path) {
            let _ = file.set_modified(SystemTime::now());
        }
        Ok(Some(stored))
    }

    /// Deletes the file of `key`, if any.
    pub fn remove(&self, key: &TableKey) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(key)) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }

    /// Writes a sorted table ([`FeatureTable::into_sorted`]) under `key`, then evicts the
    /// oldest files over the budget. Returns the file size, or `None` when the table is
    /// larger than the whole budget and was not written.
    pub fn store(
        &self,
        key: &TableKey,
        source_schema: &Schema,
        table: &FeatureTable,
    ) -> Result<Option<u64>, FeatureError> {
        let batch = encode_table(key, source_schema, table)?;
        let estimate: usize = batch
            .columns()
            .iter()
            .map(|c| c.get_buffer_memory_size())
            .sum();
        if estimate as u64 > self.max_bytes {
            return Ok(None);
        }
        std::fs::create_dir_all(&self.dir)?;
        let temp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&self.dir)?;
        let mut out = ChecksumWriter {
            inner: BufWriter::with_capacity(1 << 20, temp.as_file()),
            hasher: crc32fast::Hasher::new(),
            written: 0,
        };
        let mut writer = FileWriter::try_new(&mut out, &batch.schema())?;
        writer.write(&batch)?;
        writer.finish()?;
        drop(writer);
        let ipc_len = out.written;
        let crc = out.hasher.clone().finalize();
        let mut trailer = Vec::with_capacity(TRAILER_LEN);
        trailer.extend_from_slice(&ipc_len.to_le_bytes());
        trailer.extend_from_slice(&crc.to_le_bytes());
        trailer.extend_from_slice(&[0; 4]);
        trailer.extend_from_slice(MAGIC);
        out.inner.write_all(&trailer)?;
        out.inner.flush()?;
        drop(out);
        let path = self.path(key);
        temp.persist(&path).map_err(|error| error.error)?;
        let size = ipc_len + TRAILER_LEN as u64;
        self.evict(&path)?;
        Ok(Some(size))
    }

    /// Deletes the oldest table files until the directory contains at most `max_bytes`,
    /// keeping `keep`, and deletes temporary files of writes that died.
    fn evict(&self, keep: &Path) -> std::io::Result<()> {
        let mut files = Vec::new();
        let mut total = 0u64;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            // Another process of the same data directory may delete a file meanwhile.
            let metadata = match entry.metadata() {
                Ok(metadata) => metadata,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => return Err(error),
            };
            if !metadata.is_file() {
                continue;
            }
            let path = entry.path();
            let modified = metadata.modified()?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(TEMP_PREFIX) {
                let age = SystemTime::now()
                    .duration_since(modified)
                    .unwrap_or_default();
                if age >= STALE_TEMP_AGE {
                    match std::fs::remove_file(&path) {
                        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                            return Err(error);
                        }
                        _ => {}
                    }
                }
                continue;
            }
            if path.extension().is_some_and(|e| e == EXTENSION) {
                total += metadata.len();
                files.push((modified, metadata.len(), path));
            }
        }
        files.sort();
        let mut deleted = 0;
        for (_, size, path) in files {
            if total <= self.max_bytes {
                break;
            }
            if path == keep {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                // Another process of the same data directory deleted it first.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
            total -= size;
            deleted += 1;
        }
        if deleted > 0 {
            tracing::info!(
                deleted,
                bytes = total,
                dir = %self.dir.display(),
                "deleted feature table cache files over the size budget"
            );
        }
        Ok(())
    }
}

/// Counts the bytes written through it and their CRC-32.
struct ChecksumWriter<W: Write> {
    inner: W,
    hasher: crc32fast::Hasher,
    written: u64,
}

impl<W: Write> Write for ChecksumWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.written += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Builds the record batch of a sorted table: the key columns, `event`, `created` when the
/// view has one, then the features; the key text and source schema in the metadata.
fn encode_table(
    key: &TableKey,
    source_schema: &Schema,
    table: &FeatureTable,
) -> Result<RecordBatch, FeatureError> {
    let events: Vec<i64> = table
        .events
        .iter()
        .map(|event| {
            event.ok_or_else(|| FeatureError::InvalidArgument {
                argument: "feature table",
                message: "a row has no event time; persist only a sorted table".to_owned(),
            })
        })
        .collect::<Result<_, _>>()?;
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (i, column) in table.keys.iter().enumerate() {
        fields.push(Field::new(
            format!("key_{i}"),
            column.data_type().clone(),
            false,
        ));
        columns.push(column.clone());
    }
    fields.push(Field::new(EVENT_COLUMN, DataType::Int64, false));
    columns.push(Arc::new(Int64Array::from(events)));
    if let Some(created) = &table.created {
        fields.push(Field::new(CREATED_COLUMN, DataType::Int64, true));
        columns.push(Arc::new(Int64Array::from(created.clone())));
    }
    for (i, column) in table.features.iter().enumerate() {
        fields.push(Field::new(
            format!("feature_{i}"),
            column.data_type().clone(),
            true,
        ));
        columns.push(column.clone());
    }
    let encoded = IpcDataGenerator::default().schema_to_bytes_with_dictionary_tracker(
        source_schema,
        &mut DictionaryTracker::new(false),
        &IpcWriteOptions::default(),
    );
    let metadata = [
        (KEY_METADATA.to_owned(), key.text.clone()),
        (
            SOURCE_SCHEMA_METADATA.to_owned(),
            hex::encode(encoded.ipc_message),
        ),
        ("ghaf.key_count".to_owned(), table.keys.len().to_string()),
    ]
    .into_iter()
    .collect();
    let schema = Schema::new(fields).with_metadata(metadata);
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}

/// Checks the trailer, checksum and key of a file's bytes and decodes its batch without
/// copying the column buffers.
fn decode(bytes: Vec<u8>, key: &TableKey) -> Result<StoredTable, FeatureError> {
    let corrupt = |message: String| FeatureError::Corrupt {
        what: "feature table cache file",
        message,
    };
    let total = bytes.len();
    if total < TRAILER_LEN + 10 {
        return Err(corrupt(format!("it has only {total} bytes")));
    }
    let trailer = &bytes[total - TRAILER_LEN..];
    if &trailer[16..] != MAGIC {
        return Err(corrupt("the trailer magic is missing".to_owned()));
    }
    let ipc_len = u64::from_le_bytes(trailer[..8].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(trailer[8..12].try_into().expect("4 bytes"));
    if ipc_len != (total - TRAILER_LEN) as u64 {
        return Err(corrupt(format!(
            "the trailer gives {ipc_len} data bytes, the file has {}",
            total - TRAILER_LEN
        )));
    }
    let ipc_len = ipc_len as usize;
    let actual = crc32fast::hash(&bytes[..ipc_len]);
    if actual != crc {
        return Err(corrupt(format!(
            "checksum mismatch (stored {crc:08x}, computed {actual:08x})"
        )));
    }

    let buffer = Buffer::from_vec(bytes);
    let ipc = &buffer[..ipc_len];
    let footer_start = ipc_len - 10;
    let footer_len = read_footer_length(ipc[footer_start..].try_into().expect("10 bytes"))?;
    if footer_len > footer_start {
        return Err(corrupt(format!(
            "the footer length {footer_len} is too large"
        )));
    }
    let footer = arrow_ipc::root_as_footer(&ipc[footer_start - footer_len..footer_start])
        .map_err(|error| corrupt(format!("the footer is invalid: {error}")))?;
    let schema = footer
        .schema()
        .map(arrow_ipc::convert::fb_to_schema)
        .ok_or_else(|| corrupt("the footer has no schema".to_owned()))?;
    let metadata = schema.metadata();
    if metadata.get(KEY_METADATA) != Some(&key.text) {
        return Err(corrupt(
            "its key differs from the requested one (a hash collision or a moved file)".to_owned(),
        ));
    }
    let key_count: usize = metadata
        .get("ghaf.key_count")
        .and_then(|count| count.parse().ok())
        .ok_or_else(|| corrupt("the key count is missing".to_owned()))?;
    let source_schema = metadata
        .get(SOURCE_SCHEMA_METADATA)
        .and_then(|text| hex::decode(text).ok())
        .ok_or_else(|| corrupt("the source schema is missing".to_owned()))
        .and_then(|bytes| {
            arrow_ipc::convert::try_schema_from_flatbuffer_bytes(&bytes)
                .map_err(|error| corrupt(format!("the source schema is invalid: {error}")))
        })?;
    let blocks = footer
        .recordBatches()
        .ok_or_else(|| corrupt("it has no record batch".to_owned()))?;
    if blocks.len() != 1 {
        return Err(corrupt(format!(
            "it has {} record batches, expected 1",
            blocks.len()
        )));
    }
    let block = blocks.get(0);
    let offset = usize::try_from(block.offset()).unwrap_or(usize::MAX);
    let length = usize::try_from(block.metaDataLength())
        .ok()
        .zip(usize::try_from(block.bodyLength()).ok())
        .map(|(meta, body)| meta.saturating_add(body))
        .unwrap_or(usize::MAX);
    if offset.saturating_add(length) > footer_start - footer_len {
        return Err(corrupt("the record batch lies outside the file".to_owned()));
    }
    let decoder = FileDecoder::new(Arc::new(schema), footer.version());
    let data = buffer.slice_with_length(offset, length);
    let batch = decoder
        .read_record_batch(block, &data)?
        .ok_or_else(|| corrupt("the record batch is empty".to_owned()))?;
    Ok(StoredTable {
        source_schema: Arc::new(source_schema),
        batch,
        key_count,
    })
}

#[cfg(test)]
mod tests {
    use arrow::array::{Float64Array, StringArray};
    use arrow::datatypes::TimeUnit;

    use super::*;
    use crate::AsOfIndex;
    use crate::definition::{Entity, FeatureViewSpec, KeyType};

    fn source_schema() -> Schema {
        Schema::new(vec![
            Field::new("rider", DataType::Utf8, false),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                false,
            ),
            Field::new(
                "created",
                DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                true,
            ),
            Field::new("score", DataType::Float64, true),
        ])
    }

    fn view() -> CompiledView {
        let spec: FeatureViewSpec = serde_json::from_value(serde_json::json!({
            "name": "scores",
            "entities": ["rider"],
            "source": {"dataset": "rides"},
            "event_time": "at",
            "created_time": "created",
            "features": [{"name": "score"}],
        }))
        .unwrap();
        let rider = Entity {
            name: "rider".to_owned(),
            join_key: None,
            value_type: KeyType::String,
            description: String::new(),
        };
        CompiledView::compile(&spec, 1, &[rider], &source_schema()).unwrap()
    }

    /// A sorted table of riders `b` (two rows) and `a` (one row).
    fn table() -> FeatureTable {
        let keys: Vec<ArrayRef> = vec![Arc::new(StringArray::from(vec!["b", "b", "a"]))];
        let features: Vec<ArrayRef> = vec![Arc::new(Float64Array::from(vec![
            Some(1.0),
            None,
            Some(3.0),
        ]))];
        FeatureTable::from_sorted(
            keys,
            &[10, 20, 5],
            Some(vec![Some(1), None, Some(2)]),
            features,
        )
        .unwrap()
    }

    fn key(digest: &str) -> TableKey {
        TableKey::new("t", "p", "scores", 1, "fingerprint", digest)
    }

    #[test]
    fn round_trip_keeps_rows_and_index() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TableCache::new(dir.path().join("tables"), 1 << 20);
        assert!(cache.load(&key("d1")).unwrap().is_none());
        cache.store(&key("d1"), &source_schema(), &table()).unwrap();

        let stored = cache.load(&key("d1")).unwrap().unwrap();
        assert_eq!(stored.source_schema.as_ref(), &source_schema());
        let loaded = stored.into_table(&view()).unwrap();
        let original = table();
        assert_eq!(loaded.keys[0].as_ref(), original.keys[0].as_ref());
        assert_eq!(loaded.features[0].as_ref(), original.features[0].as_ref());
        assert_eq!(loaded.events, original.events);
        assert_eq!(loaded.created, original.created);
        let lookup: Vec<ArrayRef> = vec![Arc::new(StringArray::from(vec!["b", "a", "c"]))];
        let found = loaded
            .index
            .lookup(&lookup, &[Some(15), Some(5), Some(5)], None)
            .unwrap();
        assert_eq!(found.iter().collect::<Vec<_>>(), [Some(0), Some(2), None]);

        // Another key never reads this file.
        assert!(cache.load(&key("d2")).unwrap().is_none());
    }

    #[test]
    fn damaged_files_are_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TableCache::new(dir.path().to_owned(), 1 << 20);
        cache.store(&key("d1"), &source_schema(), &table()).unwrap();
        let path = cache.path(&key("d1"));
        let bytes = std::fs::read(&path).unwrap();

        for damaged in [
            bytes[..bytes.len() - 1].to_vec(),
            bytes[..10].to_vec(),
            Vec::new(),
            {
                let mut flipped = bytes.clone();
                flipped[bytes.len() / 3] ^= 1;
                flipped
            },
        ] {
            std::fs::write(&path, &damaged).unwrap();
            let error = cache.load(&key("d1")).err().unwrap();
            assert!(matches!(error, FeatureError::Corrupt { .. }), "{error}");
        }

        // A valid file under another key's name is rejected by the stored key text.
        std::fs::write(cache.path(&key("d2")), &bytes).unwrap();
        let error = cache.load(&key("d2")).err().unwrap();
        assert!(error.to_string().contains("key differs"), "{error}");
    }

    const MIB: usize = 1 << 20;

    /// Builds a sorted table of several MiB.
    fn large_table() -> FeatureTable {
        let rows = 3 * MIB / 16;
        let keys: Vec<ArrayRef> = vec![Arc::new(StringArray::from_iter_values(
            (0..rows).map(|row| format!("rider-{:06}", row / 4)),
        ))];
        let events: Vec<i64> = (0..rows as i64).map(|row| row % 4).collect();
        let features: Vec<ArrayRef> = vec![Arc::new(Float64Array::from_iter_values(
            (0..rows).map(|row| row as f64 * 0.5),
        ))];
        FeatureTable::from_sorted(keys, &events, Some(vec![None; rows]), features).unwrap()
    }

    #[test]
    fn large_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TableCache::new(dir.path().to_owned(), 1 << 30);
        let size = cache
            .store(&key("d1"), &source_schema(), &large_table())
            .unwrap()
            .unwrap();
        assert!(size as usize > 2 * MIB, "{size} bytes");

        let loaded = cache
            .load(&key("d1"))
            .unwrap()
            .unwrap()
            .into_table(&view())
            .unwrap();
        let original = large_table();
        assert_eq!(loaded.keys[0].as_ref(), original.keys[0].as_ref());
        assert_eq!(loaded.features[0].as_ref(), original.features[0].as_ref());
        assert_eq!(loaded.events, original.events);
    }

    #[test]
    fn large_damaged_files_are_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TableCache::new(dir.path().to_owned(), 1 << 30);
        cache
            .store(&key("d1"), &source_schema(), &large_table())
            .unwrap();
        let path = cache.path(&key("d1"));
        let bytes = std::fs::read(&path).unwrap();

        // One flipped bit near the start, past the middle and in the last data byte before
        // the trailer, and a file cut short by one MiB.
        let flipped_at = |position: usize| {
            let mut flipped = bytes.clone();
            flipped[position] ^= 0x10;
            flipped
        };
        for damaged in [
            flipped_at(100),
            flipped_at(bytes.len() / 2 + MIB / 3),
            flipped_at(bytes.len() - TRAILER_LEN - 1),
            bytes[..bytes.len() - MIB].to_vec(),
        ] {
            std::fs::write(&path, &damaged).unwrap();
            let error = cache.load(&key("d1")).err().unwrap();
            assert!(matches!(error, FeatureError::Corrupt { .. }), "{error}");
        }
    }

    #[test]
    fn unsorted_rows_are_corrupt() {
        let keys: Vec<ArrayRef> = vec![Arc::new(StringArray::from(vec!["b", "a", "b"]))];
        let error = AsOfIndex::from_sorted(&keys, &[1, 2, 3], None)
            .err()
            .unwrap();
        assert!(error.to_string().contains("earlier run"), "{error}");
        let keys: Vec<ArrayRef> = vec![Arc::new(StringArray::from(vec!["b", "b"]))];
        let error = AsOfIndex::from_sorted(&keys, &[2, 1], None).err().unwrap();
        assert!(error.to_string().contains("earlier"), "{error}");
    }

    #[test]
    fn oldest_files_are_evicted_over_budget() {
        let dir = tempfile::tempdir().unwrap();
        let probe = TableCache::new(dir.path().join("probe"), 1 << 20);
        let size = probe
            .store(&key("d0"), &source_schema(), &table())
            .unwrap()
            .unwrap();

        // Room for two files: the third write deletes the oldest.
        let cache = TableCache::new(dir.path().join("tables"), 2 * size + size / 2);
        for digest in ["d1", "d2", "d3"] {
            cache
                .store(&key(digest), &source_schema(), &table())
                .unwrap();
            // Distinct modification times, whatever the file system's resolution.
            let file = File::options()
                .append(true)
                .open(cache.path(&key(digest)))
                .unwrap();
            let age = match digest {
                "d1" => 300,
                "d2" => 200,
                _ => 100,
            };
            file.set_modified(SystemTime::now() - Duration::from_secs(age))
                .unwrap();
        }
        cache.store(&key("d4"), &source_schema(), &table()).unwrap();
        assert!(!cache.path(&key("d1")).exists());
        assert!(!cache.path(&key("d2")).exists());
        assert!(cache.path(&key("d3")).exists());
        assert!(cache.path(&key("d4")).exists());

        // A table larger than the whole budget is not written.
        let tiny = TableCache::new(dir.path().join("tiny"), 8);
        assert_eq!(
            tiny.store(&key("d1"), &source_schema(), &table()).unwrap(),
            None
        );
        assert!(!tiny.path(&key("d1")).exists());
    }
}
