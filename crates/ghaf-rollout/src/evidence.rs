//! Evidence of rollout decisions in the tenant's audit chain, and an endpoint's history.

use std::collections::VecDeque;

use ghaf_core::TenantId;
use ghaf_core::audit::{AuditEntry, AuditOutcome, NewAuditEntry};
use ghaf_meta::{AuditFilter, MetaStore};

use crate::RolloutError;

/// Actor of the decisions the controller takes on its own.
pub const CONTROLLER_ACTOR: &str = "system:rollout-controller";

/// Prefix of the audit actions of rollout decisions.
pub const ACTION_PREFIX: &str = "endpoints.rollout.";

/// Audit action of the endpoint changes the API middleware records.
pub const DEPLOY_ACTION: &str = "endpoints.deploy";

/// Maximum entries one history read returns.
pub const MAX_HISTORY: u32 = 1000;

/// Entries read from the audit log per page while collecting a history.
const PAGE: u32 = 500;

/// Returns the audited resource of an endpoint, as the API middleware names it.
pub fn resource(project_name: &str, endpoint: &str) -> String {
    format!("projects/{project_name}/endpoints/{endpoint}")
}

/// A rollout decision to append to the audit chain.
#[derive(Clone, Debug)]
pub struct Record<'a> {
    pub tenant: &'a TenantId,
    pub project_name: &'a str,
    pub endpoint: &'a str,
    pub actor: &'a str,
    /// Decision name after `endpoints.rollout.`, such as `promoted`.
    pub decision: &'a str,
    /// Rollout the decision belongs to; empty for an alias switch without a rollout.
    pub rollout_id: &'a str,
    pub details: serde_json::Value,
}

/// Appends a decision to the tenant's audit chain. The request id is `rollout-<id>` (or
/// `endpoint-<name>` without a rollout), so every entry of one rollout shares it.
pub async fn append(meta: &dyn MetaStore, record: Record<'_>) -> Result<AuditEntry, RolloutError> {
    let request_id = if record.rollout_id.is_empty() {
        format!("endpoint-{}", record.endpoint)
    } else {
        format!("rollout-{}", record.rollout_id)
    };
    let mut details = record.details;
    if let serde_json::Value::Object(map) = &mut details {
        map.insert("endpoint".to_owned(), record.endpoint.into());
        if !record.rollout_id.is_empty() {
            map.insert("rollout_id".to_owned(), record.rollout_id.into());
        }
    }
    let entry = NewAuditEntry {
        tenant: record.tenant.as_str().to_owned(),
        actor: record.actor.to_owned(),
        action: format!("{ACTION_PREFIX}{}", record.decision),
        resource: resource(record.project_name, record.endpoint),
        outcome: AuditOutcome::Success,
        status: 200,
        request_id,
        time: ghaf_core::now_millis(),
        details,
    };
    Ok(meta.append_audit(&entry).await?)
}

/// Returns whether an audit entry belongs to an endpoint's history: a rollout decision or a
/// change the API middleware recorded.
pub fn in_history(entry: &AuditEntry) -> bool {
    entry.action.starts_with(ACTION_PREFIX) || entry.action == DEPLOY_ACTION
}

/// Lists the newest `limit` history entries of an endpoint (rollout decisions and the
/// changes recorded for the endpoint and the paths below it), newest last.
pub async fn history(
    meta: &dyn MetaStore,
    tenant: &TenantId,
    project_name: &str,
    endpoint: &str,
    limit: u32,
) -> Result<Vec<AuditEntry>, RolloutError> {
    let limit = limit.clamp(1, MAX_HISTORY) as usize;
    let mut kept: VecDeque<AuditEntry> = VecDeque::with_capacity(limit);
    let mut filter = AuditFilter {
        resource: Some(resource(project_name, endpoint)),
        limit: PAGE,
        ..AuditFilter::default()
    };
    loop {
        let page = meta.list_audit(tenant.as_str(), &filter).await?;
        let last = page.last().map(|entry| entry.seq);
        let full = page.len() == PAGE as usize;
        for entry in page.into_iter().filter(in_history) {
            if kept.len() == limit {
                kept.pop_front();
            }
            kept.push_back(entry);
        }
        match last {
            Some(seq) if full => filter.after_seq = Some(seq),
            _ => break,
        }
    }
    Ok(kept.into())
}
