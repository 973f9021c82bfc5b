//! The artifact proxy under `/api/2.0/mlflow-artifacts/artifacts`: upload, download, list
//! and delete files. Paths are relative to the project's artifact root; content goes to the
//! tenant's blob store.

use axum::Json;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use ghaf_auth::Action;
use serde_json::{Value, json};

use super::{Ctx, Params};
use crate::api::{Access, ApiRouter, RouteInfo};
use crate::error::ApiError;
use crate::extract::ApiPath;

const FILE_PATH: &str = "/api/2.0/mlflow-artifacts/artifacts/{*path}";

pub fn register(api: &mut ApiRouter) {
    let route = |method, path, action, summary| {
        RouteInfo::new(method, path, Access::Action(action), summary).mlflow()
    };
    api.add(
        route(
            Method::PUT,
            FILE_PATH,
            Action::ArtifactsWrite,
            "Upload an artifact file as the raw request body (MLflow)",
        ),
        upload,
    );
    api.add(
        route(
            Method::GET,
            FILE_PATH,
            Action::ArtifactsRead,
            "Download an artifact file (MLflow)",
        ),
        download,
    );
    api.add(
        route(
            Method::DELETE,
            FILE_PATH,
            Action::ArtifactsWrite,
            "Delete an artifact file or directory (MLflow)",
        ),
        delete,
    );
    api.add(
        route(
            Method::GET,
            "/api/2.0/mlflow-artifacts/artifacts",
            Action::ArtifactsRead,
            "List an artifact directory (MLflow)",
        )
        .response("MlflowMessage")
        .query(&[("path", "Directory below the project's artifact root.")]),
        list,
    );
}

async fn upload(
    ctx: Ctx,
    ApiPath(path): ApiPath<String>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    // The body streams into the blob store, so artifacts are not bound by the JSON body limit.
    let stream = request
        .into_body()
        .into_data_stream()
        .map_err(std::io::Error::other);
    ctx.service.put_artifact(&ctx.scope, &path, stream).await?;
    Ok(Json(json!({})))
}

async fn download(ctx: Ctx, ApiPath(path): ApiPath<String>) -> Result<Response, ApiError> {
    let content = ctx.service.open_artifact(&ctx.scope, &path).await?;
    let size = content.entry.size;
    let stream = content.stream.map_err(std::io::Error::other);
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn delete(ctx: Ctx, ApiPath(path): ApiPath<String>) -> Result<Json<Value>, ApiError> {
    let removed = ctx.service.delete_artifacts(&ctx.scope, &path).await?;
    if removed == 0 {
        return Err(ApiError::not_found("artifact", &path));
    }
    Ok(Json(json!({})))
}

async fn list(ctx: Ctx, params: Params) -> Result<Json<Value>, ApiError> {
    let dir = params.get("path").unwrap_or_default();
    let entries = ctx.service.list_artifact_dir(&ctx.scope, dir).await?;
    if entries.is_empty() {
        return Ok(Json(json!({})));
    }
    let files: Vec<Value> = entries
        .iter()
        .map(|entry| {
            let mut file = json!({ "path": entry.name, "is_dir": entry.is_dir });
            if let Some(size) = entry.size {
                file["file_size"] = json!(size);
            }
            file
        })
        .collect();
    Ok(Json(json!({ "files": files })))
}
