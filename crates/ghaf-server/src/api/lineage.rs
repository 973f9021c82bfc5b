//! OpenLineage run events of ingest runs, for the projects the caller can see.

use axum::extract::State;
use axum::http::Method;
use axum::{Extension, Json};
use ghaf_auth::{Action, Caller};
use ghaf_ingest::LineageFilter;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Access, ApiRouter, RouteInfo};
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::state::AppState;

const MAX_PAGE: u32 = 1_000;
const DEFAULT_PAGE: u32 = 100;

pub fn register(api: &mut ApiRouter) {
    api.add(
        RouteInfo::new(
            Method::GET,
            "/api/v1/lineage",
            Access::Action(Action::LineageList),
            "List OpenLineage run events (START, COMPLETE, FAIL) of the projects the caller can \
             see, oldest first",
        )
        .response("LineagePage")
        .query(&[
            ("project", "Only events of this project"),
            ("dataset", "Only events of this dataset"),
            ("run_id", "Only events of this run"),
            (
                "after",
                "Only events after this event id, from `next_after` of the previous page",
            ),
            ("limit", "Page size, 1 to 1000; default 100"),
        ]),
        list_lineage,
    );
}

/// One page of lineage events.
#[derive(Debug, Serialize, ToSchema)]
pub struct LineagePage {
    /// OpenLineage `RunEvent` objects, as posted to an OpenLineage endpoint.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<serde_json::Value>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LineageQuery {
    project: Option<String>,
    dataset: Option<String>,
    run_id: Option<String>,
    after: Option<String>,
    limit: Option<u32>,
}

async fn list_lineage(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<LineageQuery>,
) -> Result<Json<LineagePage>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            format!("`limit` {limit} is out of range; use 1 to {MAX_PAGE}"),
        ));
    }
    let visible = state.tenancy().list_projects(&caller).await?;
    let projects = match &query.project {
        Some(name) => {
            let project = visible
                .into_iter()
                .find(|project| &project.name == name)
                .ok_or_else(|| ApiError::not_found("project", name))?;
            vec![project.id]
        }
        None => visible.into_iter().map(|project| project.id).collect(),
    };
    let Some(service) = state.ingest() else {
        return Ok(Json(LineagePage {
            events: Vec::new(),
            next_after: None,
        }));
    };
    let filter = LineageFilter {
        projects: Some(projects),
        dataset: query.dataset,
        run_id: query.run_id,
        after: query.after,
        limit,
    };
    let events = service.lineage_events(&caller.tenant, &filter).await?;
    let next_after = (events.len() == limit as usize)
        .then(|| events.last().map(|event| event.id.clone()))
        .flatten();
    Ok(Json(LineagePage {
        events: events.into_iter().map(|event| event.event).collect(),
        next_after,
    }))
}
