//! Audit entries and the hash-chain rule that makes the audit log tamper-evident.
//!
//! Each tenant has its own chain. Entry `n` stores `hash_n = SHA-256(hash_{n-1} || canonical
//! JSON of entry n without its hash)`, with `hash_0` being 32 zero bytes for the first entry.
//! Editing, deleting, inserting or reordering an entry breaks the chain from that position on;
//! a stored chain head detects removal of the newest entries.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::UnixMillis;

/// Outcome of an audited call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// The call completed with a 2xx or 3xx status.
    Success,
    /// Authentication or authorisation rejected the call.
    Denied,
    /// The call was allowed but failed (4xx other than denials, or 5xx).
    Failed,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Success => "success",
            AuditOutcome::Denied => "denied",
            AuditOutcome::Failed => "failed",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "success" => Some(AuditOutcome::Success),
            "denied" => Some(AuditOutcome::Denied),
            "failed" => Some(AuditOutcome::Failed),
            _ => None,
        }
    }
}

/// An audit record before it is appended to a chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewAuditEntry {
    /// Tenant whose chain receives the entry; [`SYSTEM_CHAIN`] for unauthenticated calls.
    pub tenant: String,
    /// Principal id, or `anonymous` when no valid credentials came with the call.
    pub actor: String,
    /// Action name, such as `projects.create`.
    pub action: String,
    /// Resource path, such as `projects/fraud`.
    pub resource: String,
    pub outcome: AuditOutcome,
    /// HTTP status sent to the caller.
    pub status: u16,
    pub request_id: String,
    pub time: UnixMillis,
    /// Extra context: error code, token id, counts. Never secrets or row data.
    pub details: serde_json::Value,
}

/// Chain name used for calls that carry no valid tenant (failed authentication).
pub const SYSTEM_CHAIN: &str = "_system";

/// A stored audit entry: its position in the tenant's chain and the chain hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Position in the tenant's chain, starting at 1.
    pub seq: i64,
    pub tenant: String,
    pub actor: String,
    pub action: String,
    pub resource: String,
    pub outcome: AuditOutcome,
    pub status: u16,
    pub request_id: String,
    /// Milliseconds since the Unix epoch.
    #[schema(value_type = i64)]
    pub time: UnixMillis,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// Hex SHA-256 of the previous entry's hash and this entry's content.
    pub hash: String,
}

/// Hash that precedes the first entry of every chain.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// Computes the chain hash of the entry at `seq` that follows `prev_hash`.
///
/// The content is serialised as JSON with a fixed field order, so the hash does not depend on
/// the storage backend. `details` is serialised by `serde_json`, which keeps map keys sorted.
pub fn chain_hash(prev_hash: &[u8; 32], seq: i64, entry: &NewAuditEntry) -> [u8; 32] {
    let canonical = serde_json::json!([
        seq,
        entry.tenant,
        entry.actor,
        entry.action,
        entry.resource,
        entry.outcome.as_str(),
        entry.status,
        entry.request_id,
        entry.time,
        entry.details,
    ]);
    let mut hasher = Sha256::new();
    hasher.update(prev_hash);
    hasher.update(canonical.to_string().as_bytes());
    hasher.finalize().into()
}

impl AuditEntry {
    /// Returns the entry's content without the chain fields, as it was hashed.
    pub fn content(&self) -> NewAuditEntry {
        NewAuditEntry {
            tenant: self.tenant.clone(),
            actor: self.actor.clone(),
            action: self.action.clone(),
            resource: self.resource.clone(),
            outcome: self.outcome,
            status: self.status,
            request_id: self.request_id.clone(),
            time: self.time,
            details: self.details.clone(),
        }
    }
}

/// Decodes a 64-character hex hash; `None` if it is malformed.
pub fn decode_hash(hex_hash: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hex_hash).ok()?;
    bytes.try_into().ok()
}

/// Computes the MAC that seals a chain head, so that removing the newest entries and
/// rewinding the stored head is detected by anyone with the audit key.
pub fn head_mac(key: &[u8], tenant: &str, seq: i64, hash_hex: &str) -> String {
    use hmac::{Mac, SimpleHmac};
    let mut mac =
        SimpleHmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(tenant.as_bytes());
    mac.update(&[0]);
    mac.update(&seq.to_be_bytes());
    mac.update(hash_hex.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str) -> NewAuditEntry {
        NewAuditEntry {
            tenant: "acme".into(),
            actor: "p1".into(),
            action: action.into(),
            resource: "projects/x".into(),
            outcome: AuditOutcome::Success,
            status: 200,
            request_id: "r1".into(),
            time: 1_700_000_000_000,
            details: serde_json::json!({"b": 1, "a": 2}),
        }
    }

    #[test]
    fn chain_hash_depends_on_every_input() {
        let base = chain_hash(&GENESIS_HASH, 1, &entry("projects.create"));
        assert_ne!(
            base,
            chain_hash(&GENESIS_HASH, 2, &entry("projects.create"))
        );
        assert_ne!(base, chain_hash(&[1; 32], 1, &entry("projects.create")));
        assert_ne!(
            base,
            chain_hash(&GENESIS_HASH, 1, &entry("projects.delete"))
        );
        assert_eq!(
            base,
            chain_hash(&GENESIS_HASH, 1, &entry("projects.create"))
        );
    }

    #[test]
    fn decode_hash_rejects_bad_hex() {
        assert!(decode_hash(&"00".repeat(32)).is_some());
        assert!(decode_hash("zz").is_none());
        assert!(decode_hash(&"00".repeat(31)).is_none());
    }
}
