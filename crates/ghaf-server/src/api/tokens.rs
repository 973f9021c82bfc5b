//! API tokens: issue (shown once), list and revoke.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::{Extension, Json};
use ghaf_auth::{Action, Caller, TokenRequest};

use super::tenancy::check_text;
use super::views::*;
use super::{Access, ApiRouter, RouteInfo};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::middleware::AuditDetails;
use crate::state::AppState;

pub fn register(api: &mut ApiRouter) {
    use Access::Action as A;
    api.add(
        RouteInfo::new(
            Method::GET,
            "/api/v1/tokens",
            A(Action::TokensList),
            "List the caller's tokens (every token of the tenant for tenant admins)",
        )
        .response("TokenList"),
        list_tokens,
    );
    api.add(
        RouteInfo::new(
            Method::POST,
            "/api/v1/tokens",
            A(Action::TokensCreate),
            "Create a token; the secret is in this response only",
        )
        .request("CreateTokenRequest")
        .response("IssuedTokenView")
        .status(201),
        create_token,
    );
    api.add(
        RouteInfo::new(
            Method::DELETE,
            "/api/v1/tokens/{token}",
            A(Action::TokensRevoke),
            "Revoke a token",
        )
        .response("TokenView"),
        revoke_token,
    );
}

async fn list_tokens(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<TokenList>, ApiError> {
    let tokens = state.tenancy().list_tokens(&caller).await?;
    Ok(Json(TokenList {
        tokens: tokens.into_iter().map(Into::into).collect(),
    }))
}

async fn create_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<CreateTokenRequest>,
) -> Result<(StatusCode, Extension<AuditDetails>, Json<IssuedTokenView>), ApiError> {
    if body.name.trim().is_empty() {
        return Err(ApiError::invalid_field(
            "name",
            "`name` must not be empty; label the token, such as `laptop`",
        ));
    }
    check_text("name", &body.name, 100)?;
    let request = TokenRequest {
        principal: body.principal,
        name: body.name,
        project: body.project,
        max_role: body.max_role,
        expires_in_seconds: body.expires_in_seconds,
    };
    let issued = state.tenancy().issue_token(&caller, &request).await?;
    let details = AuditDetails(serde_json::json!({
        "token": issued.stored.id.to_string(),
        "owner": issued.stored.principal.to_string(),
        "project": issued.stored.project.as_ref().map(ToString::to_string),
        "max_role": issued.stored.max_role.map(|role| role.as_str()),
        "expires_at": issued.stored.expires_at,
    }));
    Ok((StatusCode::CREATED, Extension(details), Json(issued.into())))
}

async fn revoke_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<(Extension<AuditDetails>, Json<TokenView>), ApiError> {
    let token = state.tenancy().revoke_token(&caller, &id).await?;
    let details = AuditDetails(serde_json::json!({
        "token": token.id.to_string(),
        "owner": token.principal.to_string(),
    }));
    Ok((Extension(details), Json(token.into())))
}
