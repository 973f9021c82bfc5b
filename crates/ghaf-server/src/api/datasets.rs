//! Datasets: create with a declared schema, evolve the schema, upload files into immutable
//! versions, and read versions, profiles, quarantine files and Parquet content.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::TryStreamExt;
use ghaf_auth::{Action, Caller};
use ghaf_core::ErrorCode;
use ghaf_ingest::{
    Dataset, DatasetSchema, DatasetVersion, IngestError, IngestInput, IngestService, InputFormat,
    PushFormat, ReadOptions, SchemaVersion,
};
use ghaf_meta::Project;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use utoipa::ToSchema;

use super::{Access, ApiRouter, RouteInfo};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

/// Route of dataset uploads (POST); its time limit is `ingest.upload_timeout_seconds`.
pub const UPLOAD_ROUTE: &str = "/api/v1/projects/{project}/datasets/{dataset}/versions";

pub fn register(api: &mut ApiRouter) {
    use Access::Action as A;
    const DATASETS: &str = "/api/v1/projects/{project}/datasets";
    const DATASET: &str = "/api/v1/projects/{project}/datasets/{dataset}";
    const VERSIONS: &str = UPLOAD_ROUTE;
    const VERSION: &str = "/api/v1/projects/{project}/datasets/{dataset}/versions/{version}";
    api.add(
        RouteInfo::new(
            Method::GET,
            DATASETS,
            A(Action::DatasetsList),
            "List the project's datasets",
        )
        .response("DatasetList"),
        list_datasets,
    );
    api.add(
        RouteInfo::new(
            Method::POST,
            DATASETS,
            A(Action::DatasetsCreate),
            "Create a dataset with a declared schema",
        )
        .request("CreateDatasetRequest")
        .response("DatasetView")
        .status(201),
        create_dataset,
    );
    api.add(
        RouteInfo::new(
            Method::GET,
            DATASET,
            A(Action::DatasetsGet),
            "Get a dataset with its current schema and schema history",
        )
        .response("DatasetView"),
        get_dataset,
    );
    api.add(
        RouteInfo::new(
            Method::POST,
            "/api/v1/projects/{project}/datasets/{dataset}/schemas",
            A(Action::DatasetsSchemaUpdate),
            "Add a schema version; it must be able to read the data of the current one",
        )
        .request("UpdateSchemaRequest")
        .response("SchemaVersionView")
        .status(201),
        update_schema,
    );
    api.add(
        RouteInfo::new(
            Method::POST,
            VERSIONS,
            A(Action::DatasetsIngest),
            "Upload a CSV, NDJSON or Parquet file (optionally gzip-compressed) as the raw \
             request body, or name an object with `uri` and send no body, and ingest it into \
             a new version; 200 with `created: false` when a version with the same content \
             exists",
        )
        .response("IngestResponse")
        .status(201)
        .query(INGEST_QUERY),
        ingest,
    );
    api.add(
        RouteInfo::new(
            Method::POST,
            "/api/v1/projects/{project}/datasets/{dataset}/push",
            A(Action::DatasetsPush),
            "Push a micro-batch of messages (NDJSON, or a JSON array of objects) as an appended \
             segment; messages with a stored key are dropped and failing ones go to the \
             dataset `<dataset>.dead-letter`",
        )
        .response("PushResponse"),
        push,
    );
    api.add(
        RouteInfo::new(
            Method::GET,
            VERSIONS,
            A(Action::DatasetVersionsList),
            "List the dataset's versions, newest first",
        )
        .response("DatasetVersionList"),
        list_versions,
    );
    api.add(
        RouteInfo::new(
            Method::GET,
            VERSION,
            A(Action::DatasetVersionsGet),
            "Get a version with its check report and column profile",
        )
        .response("DatasetVersionView"),
        get_version,
    );
    api.add(
        RouteInfo::new(
            Method::GET,
            "/api/v1/projects/{project}/datasets/{dataset}/versions/{version}/quarantine",
            A(Action::DatasetQuarantineRead),
            "Download the version's quarantine file: one JSON object per failing row (NDJSON)",
        ),
        get_quarantine,
    );
    api.add(
        RouteInfo::new(
            Method::GET,
            "/api/v1/projects/{project}/datasets/{dataset}/versions/{version}/data",
            A(Action::DatasetVersionsDownload),
            "Download the version's rows as a Parquet file",
        ),
        get_data,
    );
}

const INGEST_QUERY: &[(&str, &str)] = &[
    (
        "format",
        "csv, ndjson or parquet; when unset, taken from `file_name`, then from the Content-Type",
    ),
    (
        "file_name",
        "Name of the uploaded file, recorded as the version's source",
    ),
    (
        "uri",
        "Object to ingest instead of the request body, such as `s3://landing/sales/day1.csv`; \
         it must be under a prefix in `ingest.object_uri_prefixes`",
    ),
    (
        "delimiter",
        "CSV field separator, one character; default `,`",
    ),
    ("quote", "CSV quote character; default `\"`"),
    (
        "header",
        "Whether the CSV starts with a header line; default true",
    ),
    (
        "null",
        "Comma-separated CSV tokens read as null, such as `NA,` for `NA` and the empty \
         field; default: only the empty field",
    ),
];

/// Body of `POST /projects/{project}/datasets`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDatasetRequest {
    /// Dataset name, unique in the project: lowercase letters, digits, `-`, `_`, `.`.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The declared schema, as in a schema file: `columns`, `event_time`, `unique_key`,
    /// `acceptance`.
    #[schema(value_type = Object)]
    pub schema: serde_json::Value,
}

/// Body of `POST /projects/{project}/datasets/{dataset}/schemas`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSchemaRequest {
    /// The new schema. A column without `classification` keeps its current label.
    #[schema(value_type = Object)]
    pub schema: serde_json::Value,
    /// Columns whose classification the new schema may lower. Lowering a label of a column
    /// not listed here is rejected; each lowering is recorded in the audit log.
    #[serde(default)]
    pub lower_classification: Vec<String>,
}

/// A dataset.
#[derive(Debug, Serialize, ToSchema)]
pub struct DatasetView {
    pub name: String,
    pub description: String,
    /// Number of the current schema version.
    pub schema_version: i64,
    #[schema(value_type = Object)]
    pub schema: DatasetSchema,
    /// Every schema version, oldest first; only on single-dataset reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_history: Option<Vec<SchemaVersionView>>,
    /// RFC 3339 creation time.
    pub created_at: String,
    pub created_by: String,
}

impl From<Dataset> for DatasetView {
    fn from(dataset: Dataset) -> Self {
        Self {
            name: dataset.name,
            description: dataset.description,
            schema_version: dataset.schema_version,
            schema: dataset.schema,
            schema_history: None,
            created_at: ghaf_core::format_millis(dataset.created_at),
            created_by: dataset.created_by,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DatasetList {
    pub datasets: Vec<DatasetView>,
}

/// One version of a dataset's schema.
#[derive(Debug, Serialize, ToSchema)]
pub struct SchemaVersionView {
    pub version: i64,
    #[schema(value_type = Object)]
    pub schema: DatasetSchema,
    pub created_at: String,
    pub created_by: String,
}

impl From<SchemaVersion> for SchemaVersionView {
    fn from(version: SchemaVersion) -> Self {
        Self {
            version: version.version,
            schema: version.schema,
            created_at: ghaf_core::format_millis(version.created_at),
            created_by: version.created_by,
        }
    }
}

/// An immutable dataset version.
#[derive(Debug, Serialize, ToSchema)]
pub struct DatasetVersionView {
    pub version: i64,
    pub schema_version: i64,
    /// SHA-256 of the version's Parquet file.
    pub content_digest: String,
    pub content_size: u64,
    pub row_count: u64,
    pub quarantined_rows: u64,
    /// SHA-256 of the quarantine file, when rows failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantine_digest: Option<String>,
    /// Origin of the rows, such as `upload:<file name>`.
    pub source: String,
    pub created_at: String,
    pub created_by: String,
    /// Failure counts per check and a sample of failing rows; only on single-version reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub report: Option<ghaf_ingest::IngestReport>,
    /// Row count, nulls, min, max, mean and distinct estimate per column; only on
    /// single-version reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub profile: Option<ghaf_ingest::Profile>,
}

impl DatasetVersionView {
    fn summary(version: DatasetVersion) -> Self {
        Self {
            version: version.version,
            schema_version: version.schema_version,
            content_digest: version.content_digest,
            content_size: version.content_size,
            row_count: version.row_count,
            quarantined_rows: version.quarantined_rows,
            quarantine_digest: version.quarantine_digest,
            source: version.source,
            created_at: ghaf_core::format_millis(version.created_at),
            created_by: version.created_by,
            report: None,
            profile: None,
        }
    }

    fn full(version: DatasetVersion) -> Self {
        let report = version.report.clone();
        let profile = version.profile.clone();
        Self {
            report: Some(report),
            profile: Some(profile),
            ..Self::summary(version)
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DatasetVersionList {
    pub versions: Vec<DatasetVersionView>,
}

/// Result of an upload.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestResponse {
    /// False when a version with the same content existed; it is returned instead.
    pub created: bool,
    /// OpenLineage run id of this ingest.
    pub run_id: String,
    pub version: DatasetVersionView,
    /// Failure counts of this upload's rows.
    #[schema(value_type = Object)]
    pub report: ghaf_ingest::IngestReport,
}

/// Result of a push.
#[derive(Debug, Serialize, ToSchema)]
pub struct PushResponse {
    /// Outcome of the push. `appended`: a segment was stored and failing messages were
    /// dead-lettered. `all_duplicates`: every message's key was stored before, so nothing
    /// was stored. `all_dead_lettered`: no message passed, and all went to the dead-letter
    /// dataset. `empty`: the batch had no message.
    #[schema(value_type = String)]
    pub result: ghaf_ingest::PushResult,
    /// Messages in the batch.
    pub received: u64,
    /// Messages dropped because their key was stored before or repeats in the batch.
    pub duplicates_dropped: u64,
    /// Messages stored in the segment.
    pub accepted: u64,
    /// Messages sent to the dead-letter dataset.
    pub dead_lettered: u64,
    /// The appended segment; absent when no message was accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment: Option<DatasetVersionView>,
    /// Version of `<dataset>.dead-letter` that contains this batch's failing messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_version: Option<i64>,
    /// OpenLineage run id; empty when every message was a duplicate.
    pub run_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestQuery {
    format: Option<String>,
    file_name: Option<String>,
    uri: Option<String>,
    delimiter: Option<String>,
    quote: Option<String>,
    header: Option<bool>,
    null: Option<String>,
}

impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> Self {
        let details = error.details();
        ApiError::new(error.code(), error.to_string()).with_details(details)
    }
}

fn service(state: &AppState) -> Result<&IngestService, ApiError> {
    state.ingest().ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unavailable,
            "dataset ingestion is not configured on this server",
        )
    })
}

fn parse_schema(value: serde_json::Value) -> Result<DatasetSchema, ApiError> {
    DatasetSchema::from_json(value)
        .map_err(|error| ApiError::invalid_field("schema", error.to_string()))
}

async fn find_dataset(
    state: &AppState,
    project: &Project,
    name: &str,
) -> Result<Dataset, ApiError> {
    Ok(service(state)?
        .store()
        .get_dataset(&project.tenant, &project.id, name)
        .await?)
}

async fn list_datasets(
    State(state): State<AppState>,
    Extension(project): Extension<Project>,
) -> Result<Json<DatasetList>, ApiError> {
    let datasets = service(&state)?
        .store()
        .list_datasets(&project.tenant, &project.id)
        .await?;
    Ok(Json(DatasetList {
        datasets: datasets.into_iter().map(Into::into).collect(),
    }))
}

async fn create_dataset(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(project): Extension<Project>,
    ApiJson(body): ApiJson<CreateDatasetRequest>,
) -> Result<(StatusCode, Json<DatasetView>), ApiError> {
    let name = ghaf_core::Name::parse(&body.name)
        .map_err(|error| ApiError::invalid_field("name", error.to_string()))?;
    if name.as_str().ends_with(ghaf_ingest::DEAD_LETTER_SUFFIX) {
        return Err(ApiError::invalid_field(
            "name",
            format!(
                "dataset names ending in {:?} are reserved for dead letters of pushed messages; \
                 choose another name",
                ghaf_ingest::DEAD_LETTER_SUFFIX
            ),
        ));
    }
    super::tenancy::check_text("description", &body.description, 1000)?;
    let schema = parse_schema(body.schema)?;
    let dataset = service(&state)?
        .create_dataset(
            &project.tenant,
            &project.id,
            name.as_str(),
            &body.description,
            &schema,
            caller.principal.as_str(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(dataset.into())))
}

async fn get_dataset(
    State(state): State<AppState>,
    Extension(project): Extension<Project>,
    ApiPath((_, dataset)): ApiPath<(String, String)>,
) -> Result<Json<DatasetView>, ApiError> {
    let dataset = find_dataset(&state, &project, &dataset).await?;
    let history = service(&state)?.store().list_schemas(&dataset).await?;
    let mut view = DatasetView::from(dataset);
    view.schema_history = Some(history.into_iter().map(Into::into).collect());
    Ok(Json(view))
}

async fn update_schema(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(project): Extension<Project>,
    ApiPath((_, dataset)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<UpdateSchemaRequest>,
) -> Result<Response, ApiError> {
    let dataset = find_dataset(&state, &project, &dataset).await?;
    let schema = parse_schema(body.schema)?;
    let (version, lowered) = service(&state)?
        .update_schema_lowering(
            &dataset,
            &schema,
            caller.principal.as_str(),
            &body.lower_classification,
        )
        .await?;
    let mut response =
        (StatusCode::CREATED, Json(SchemaVersionView::from(version))).into_response();
    if !lowered.is_empty() {
        response
            .extensions_mut()
            .insert(crate::middleware::AuditDetails(serde_json::json!({
                "dataset": dataset.name,
                "classification_lowered": lowered,
            })));
    }
    Ok(response)
}

fn single_byte(field: &str, value: &str) -> Result<u8, ApiError> {
    match value.as_bytes() {
        [byte] if byte.is_ascii() => Ok(*byte),
        _ if value == "\\t" => Ok(b'\t'),
        _ => Err(ApiError::invalid_field(
            field,
            format!("`{field}` must be one ASCII character, or \\t for a tab; got {value:?}"),
        )),
    }
}

/// Returns the name that sets an upload's format: `file_name`, else the last part of `uri`.
fn file_name(query: &IngestQuery) -> Option<String> {
    query
        .file_name
        .clone()
        .or_else(|| query.uri.as_deref().and_then(ghaf_ingest::object_file_name))
}

/// Builds the read options of an upload from its query and Content-Type.
fn read_options(query: &IngestQuery, content_type: Option<&str>) -> Result<ReadOptions, ApiError> {
    let from_content_type = content_type.and_then(|value| {
        match value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "text/csv" => Some(InputFormat::Csv),
            "application/x-ndjson" | "application/jsonl" => Some(InputFormat::Ndjson),
            "application/vnd.apache.parquet" => Some(InputFormat::Parquet),
            _ => None,
        }
    });
    let format = match &query.format {
        Some(format) => InputFormat::parse(format).ok_or_else(|| {
            ApiError::invalid_field(
                "format",
                format!("unknown format {format:?}; use csv, ndjson or parquet"),
            )
        })?,
        None => file_name(query)
            .as_deref()
            .and_then(InputFormat::from_file_name)
            .or(from_content_type)
            .ok_or_else(|| {
                ApiError::invalid_field(
                    "format",
                    "cannot tell the file format; set `format=csv`, `ndjson` or `parquet`",
                )
            })?,
    };
    let mut options = ReadOptions::new(format);
    // A `.tsv` file name sets the tab delimiter unless the query sets another.
    if let Some(by_name) = file_name(query)
        .as_deref()
        .and_then(ReadOptions::for_file_name)
        && by_name.format == format
    {
        options.delimiter = by_name.delimiter;
    }
    if let Some(delimiter) = &query.delimiter {
        options.delimiter = single_byte("delimiter", delimiter)?;
    }
    if let Some(quote) = &query.quote {
        options.quote = single_byte("quote", quote)?;
    }
    if let Some(header) = query.header {
        options.header = header;
    }
    if let Some(null) = &query.null {
        options.null_values = null.split(',').map(str::to_owned).collect();
    }
    Ok(options)
}

/// Streams the request body to a staging file, failing with `413` past `limit` bytes.
async fn receive_upload(
    request: Request,
    staging_dir: &std::path::Path,
    limit: u64,
) -> Result<tempfile::TempPath, ApiError> {
    let internal = |error: std::io::Error| {
        ApiError::new(
            ErrorCode::Internal,
            format!("cannot write the upload staging file: {error}"),
        )
    };
    tokio::fs::create_dir_all(staging_dir)
        .await
        .map_err(internal)?;
    let file = tempfile::Builder::new()
        .prefix("upload-")
        .tempfile_in(staging_dir)
        .map_err(internal)?;
    let (file, path) = file.into_parts();
    let mut file = tokio::fs::File::from_std(file);
    let mut body = request.into_body().into_data_stream();
    let mut received: u64 = 0;
    while let Some(chunk) = body.try_next().await.map_err(|error| {
        ApiError::new(
            ErrorCode::MalformedBody,
            format!("cannot read the upload: {error}"),
        )
    })? {
        received += chunk.len() as u64;
        if received > limit {
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "the upload exceeds the server's limit of {limit} bytes (ingest.max_upload_bytes)"
                ),
            ));
        }
        file.write_all(&chunk).await.map_err(internal)?;
    }
    file.flush().await.map_err(internal)?;
    Ok(path)
}

async fn ingest(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(project): Extension<Project>,
    ApiPath((_, dataset)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<IngestQuery>,
    request: Request,
) -> Result<(StatusCode, Json<IngestResponse>), ApiError> {
    let service = service(&state)?;
    let dataset = find_dataset(&state, &project, &dataset).await?;
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let mut options = read_options(&query, content_type.as_deref())?;
    service.limits().apply(&mut options);
    if let Some(name) = &query.file_name {
        super::tenancy::check_text("file_name", name, 255)?;
    }

    let max_bytes = state.config().ingest.max_upload_bytes;
    let outcome = if let Some(uri) = &query.uri {
        super::tenancy::check_text("uri", uri, 1024)?;
        service
            .ingest_object(
                &dataset,
                &project.name,
                uri,
                &options,
                caller.principal.as_str(),
                max_bytes,
            )
            .await?
    } else {
        let upload = receive_upload(request, service.staging_dir(), max_bytes).await?;
        let source = format!("upload:{}", query.file_name.as_deref().unwrap_or("body"));
        service
            .ingest(
                &dataset,
                &project.name,
                IngestInput {
                    path: &upload,
                    options: &options,
                    source: &source,
                    progress: Some(Arc::new(AtomicU64::new(0))),
                },
                caller.principal.as_str(),
            )
            .await?
    };
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(IngestResponse {
            created: outcome.created,
            run_id: outcome.run_id,
            version: DatasetVersionView::summary(outcome.version),
            report: outcome.report,
        }),
    ))
}

async fn push(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(project): Extension<Project>,
    ApiPath((_, dataset)): ApiPath<(String, String)>,
    request: Request,
) -> Result<Json<PushResponse>, ApiError> {
    let service = service(&state)?;
    let dataset = find_dataset(&state, &project, &dataset).await?;
    let mime = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|value| value.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let format = match mime.as_str() {
        "application/x-ndjson" | "application/jsonl" => PushFormat::Ndjson,
        "application/json" => PushFormat::JsonArray,
        _ => {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "send the messages as `Content-Type: application/x-ndjson` (one object per line) \
                 or `application/json` (an array of objects)",
            ));
        }
    };
    let limit = state.config().http.max_body_bytes;
    let body = axum::body::to_bytes(request.into_body(), limit).await.map_err(|_| {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the batch exceeds the server's limit of {limit} bytes (http.max_body_bytes); push smaller batches"),
        )
    })?;
    let outcome = service
        .push(
            &dataset,
            &project.name,
            &body,
            format,
            caller.principal.as_str(),
        )
        .await?;
    Ok(Json(PushResponse {
        result: outcome.result,
        received: outcome.received,
        duplicates_dropped: outcome.duplicates_dropped,
        accepted: outcome.accepted,
        dead_lettered: outcome.dead_lettered,
        segment: outcome.segment.map(DatasetVersionView::summary),
        dead_letter_version: outcome.dead_letter_version,
        run_id: outcome.run_id,
    }))
}

async fn list_versions(
    State(state): State<AppState>,
    Extension(project): Extension<Project>,
    ApiPath((_, dataset)): ApiPath<(String, String)>,
) -> Result<Json<DatasetVersionList>, ApiError> {
    let dataset = find_dataset(&state, &project, &dataset).await?;
    let versions = service(&state)?
        .store()
        .list_versions(&project.tenant, &dataset.id)
        .await?;
    Ok(Json(DatasetVersionList {
        versions: versions
            .into_iter()
            .map(DatasetVersionView::summary)
            .collect(),
    }))
}

async fn find_version(
    state: &AppState,
    project: &Project,
    dataset: &str,
    version: &str,
) -> Result<DatasetVersion, ApiError> {
    let number: i64 = version.parse().map_err(|_| {
        ApiError::invalid_field(
            "version",
            format!("version {version:?} is not a number such as 1"),
        )
    })?;
    let dataset = find_dataset(state, project, dataset).await?;
    Ok(service(state)?
        .store()
        .get_version(&project.tenant, &dataset.id, number)
        .await?)
}

async fn get_version(
    State(state): State<AppState>,
    Extension(project): Extension<Project>,
    ApiPath((_, dataset, version)): ApiPath<(String, String, String)>,
) -> Result<Json<DatasetVersionView>, ApiError> {
    let version = find_version(&state, &project, &dataset, &version).await?;
    Ok(Json(DatasetVersionView::full(version)))
}

/// Streams a blob of the project's tenant as the response body.
async fn stream_blob(
    state: &AppState,
    project: &Project,
    digest: &str,
    content_type: &'static str,
    file_name: String,
) -> Result<Response, ApiError> {
    let digest = IngestService::digest(digest)?;
    let stream = service(state)?
        .blobs()
        .open(&project.tenant, &digest)
        .await?;
    let body = Body::from_stream(stream);
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\"")) {
        response.headers_mut().insert(CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

async fn get_quarantine(
    State(state): State<AppState>,
    Extension(project): Extension<Project>,
    ApiPath((_, dataset, version)): ApiPath<(String, String, String)>,
) -> Result<Response, ApiError> {
    let found = find_version(&state, &project, &dataset, &version).await?;
    let Some(digest) = &found.quarantine_digest else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!(
                "version {} of dataset {dataset:?} has no quarantined rows",
                found.version
            ),
        ));
    };
    let name = format!("{dataset}-v{}-quarantine.ndjson", found.version);
    stream_blob(&state, &project, digest, "application/x-ndjson", name).await
}

async fn get_data(
    State(state): State<AppState>,
    Extension(project): Extension<Project>,
    ApiPath((_, dataset, version)): ApiPath<(String, String, String)>,
) -> Result<Response, ApiError> {
    let found = find_version(&state, &project, &dataset, &version).await?;
    let name = format!("{dataset}-v{}.parquet", found.version);
    stream_blob(
        &state,
        &project,
        &found.content_digest,
        "application/vnd.apache.parquet",
        name,
    )
    .await
}
