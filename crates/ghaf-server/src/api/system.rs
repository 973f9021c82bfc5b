//! Health, readiness, metrics and the OpenAPI document: the routes that need no token.

use axum::Json;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use ghaf_core::ErrorCode;

use super::views::HealthView;
use super::{Access, ApiRouter, RouteInfo};
use crate::error::ApiError;
use crate::state::AppState;

pub fn register(api: &mut ApiRouter) {
    api.add(
        RouteInfo::new(
            Method::GET,
            "/healthz",
            Access::Public,
            "Liveness: the process serves requests",
        )
        .response("HealthView"),
        healthz,
    );
    api.add(
        RouteInfo::new(
            Method::GET,
            "/readyz",
            Access::Public,
            "Readiness: the metadata database answers",
        )
        .response("HealthView"),
        readyz,
    );
    api.add(
        RouteInfo::new(
            Method::GET,
            "/metrics",
            Access::Public,
            "Prometheus metrics in text format",
        ),
        metrics,
    );
    api.add(
        RouteInfo::new(
            Method::GET,
            "/api/v1/openapi.json",
            Access::Public,
            "This API's OpenAPI 3.1 document",
        ),
        openapi,
    );
}

async fn healthz() -> Json<HealthView> {
    Json(HealthView {
        status: "ok".into(),
    })
}

async fn readyz(State(state): State<AppState>) -> Result<Json<HealthView>, ApiError> {
    state.store().ping().await.map_err(|error| {
        ApiError::new(
            ErrorCode::Unavailable,
            format!("the metadata database does not answer: {error}"),
        )
    })?;
    Ok(Json(HealthView {
        status: "ready".into(),
    }))
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        StatusCode::OK,
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics().render(),
    )
        .into_response()
}

async fn openapi() -> Response {
    (
        StatusCode::OK,
        [(CONTENT_TYPE, "application/json")],
        crate::openapi::document_json(),
    )
        .into_response()
}
