//! Reading and verifying the audit log of the caller's tenant.

use axum::extract::State;
use axum::http::Method;
use axum::{Extension, Json};
use ghaf_auth::audit::{ChainReport, verify_chain};
use ghaf_auth::{Action, Caller};
use ghaf_core::audit::AuditOutcome;
use ghaf_meta::AuditFilter;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::views::*;
use super::{Access, ApiRouter, RouteInfo};
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::state::AppState;

/// Largest audit page.
const MAX_PAGE: u32 = 1_000;
const DEFAULT_PAGE: u32 = 100;

pub fn register(api: &mut ApiRouter) {
    use Access::Action as A;
    api.add(
        RouteInfo::new(
            Method::GET,
            "/api/v1/audit",
            A(Action::AuditList),
            "List audit entries of the caller's tenant, oldest first",
        )
        .response("AuditPage")
        .query(&[
            ("actor", "Principal name or id"),
            ("action", "Action name, such as projects.create"),
            (
                "resource",
                "Resource path; matches it and everything below it",
            ),
            ("outcome", "success, denied or failed"),
            ("since", "RFC 3339 time, inclusive"),
            ("until", "RFC 3339 time, exclusive"),
            ("after", "Sequence number to continue after"),
            ("limit", "Page size, 1 to 1000 (default 100)"),
        ]),
        list_audit,
    );
    api.add(
        RouteInfo::new(
            Method::POST,
            "/api/v1/audit/verify",
            A(Action::AuditVerify),
            "Verify the hash chain of the caller's tenant and name the first bad entry",
        )
        .response("AuditVerifyView"),
        verify,
    );
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditVerifyView {
    pub valid: bool,
    pub chains: Vec<ChainReport>,
}

fn parse_time(field: &str, value: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|error| {
            ApiError::invalid_field(
                field,
                format!("invalid `{field}` {value:?}: {error}; use RFC 3339, such as 2026-01-31T12:00:00Z"),
            )
        })
}

async fn list_audit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            format!("`limit` {limit} is out of range; use 1 to {MAX_PAGE}"),
        ));
    }
    let outcome = match query.outcome.as_deref() {
        Some(value) => Some(AuditOutcome::parse(value).ok_or_else(|| {
            ApiError::invalid_field(
                "outcome",
                format!("invalid `outcome` {value:?}; use success, denied or failed"),
            )
        })?),
        None => None,
    };
    // Actors are stored as principal ids; accept a principal name as well. An existing id
    // wins, so a principal named after another's id cannot hide that principal's entries.
    let actor = match query.actor {
        Some(actor) => {
            let id = ghaf_core::PrincipalId::from_stored(actor.clone());
            let is_id = state
                .store()
                .get_principal(&caller.tenant, &id)
                .await?
                .is_some();
            let by_name = if is_id {
                None
            } else {
                state
                    .store()
                    .get_principal_by_name(&caller.tenant, &actor)
                    .await?
            };
            Some(by_name.map_or(actor, |principal| principal.id.to_string()))
        }
        None => None,
    };
    let filter = AuditFilter {
        actor,
        action: query.action,
        resource: query.resource,
        outcome,
        since: query
            .since
            .as_deref()
            .map(|v| parse_time("since", v))
            .transpose()?,
        until: query
            .until
            .as_deref()
            .map(|v| parse_time("until", v))
            .transpose()?,
        after_seq: query.after,
        limit,
    };
    let entries = state
        .store()
        .list_audit(caller.tenant.as_str(), &filter)
        .await?;
    let next_after = (entries.len() == limit as usize)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    Ok(Json(AuditPage {
        entries: entries.into_iter().map(Into::into).collect(),
        next_after,
    }))
}

async fn verify(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<AuditVerifyView>, ApiError> {
    let mut chains =
        vec![verify_chain(state.store(), caller.tenant.as_str(), state.audit_key()).await?];
    // The platform administrator also verifies the chain of unauthenticated calls.
    if caller.platform_admin {
        chains.push(
            verify_chain(
                state.store(),
                ghaf_core::audit::SYSTEM_CHAIN,
                state.audit_key(),
            )
            .await?,
        );
    }
    let valid = chains.iter().all(|report| report.valid);
    if !valid {
        tracing::error!(tenant = %caller.tenant, ?chains, "audit chain verification failed");
    }
    Ok(Json(AuditVerifyView { valid, chains }))
}
