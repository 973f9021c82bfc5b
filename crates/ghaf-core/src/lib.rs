//! Shared domain vocabulary of Ghaf: typed ids, names, roles, the error-code table and the
//! audit-entry hashing rule. This crate does no IO.

pub mod audit;
pub mod error;
pub mod ids;
pub mod role;

pub use error::{ErrorBody, ErrorCode, ErrorKind};
pub use ids::{Name, NameError, PrincipalId, ProjectId, RequestId, TenantId, TokenId};
pub use role::{ProjectRole, Role, TenantRole};

/// Milliseconds since the Unix epoch, the time unit of every stored timestamp.
pub type UnixMillis = i64;

/// Returns the current wall-clock time in milliseconds since the Unix epoch.
pub fn now_millis() -> UnixMillis {
    chrono::Utc::now().timestamp_millis()
}

/// Formats milliseconds since the epoch as an RFC 3339 UTC timestamp.
pub fn format_millis(millis: UnixMillis) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| millis.to_string())
}
