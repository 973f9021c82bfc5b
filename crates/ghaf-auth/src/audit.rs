//! Verification of the hash-chained audit log.
//!
//! The check walks a chain from its first entry and recomputes every hash, then compares the
//! last entry with the sealed head. It reports the first position where the stored chain and
//! the recomputed one disagree:
//! - an edited entry fails its own hash;
//! - a deleted entry leaves a gap in the sequence numbers;
//! - an inserted or reordered entry fails the hash at its new position;
//! - removed newest entries leave the head pointing past the last entry;
//! - entries appended without the audit key extend the chain past the sealed head, and a
//!   rewritten head fails its MAC.

use ghaf_core::audit::{self, GENESIS_HASH};
use ghaf_meta::{MetaError, MetaStore};
use serde::{Deserialize, Serialize};

/// Entries read per page while verifying.
const PAGE_SIZE: u32 = 1_000;

/// Result of verifying one tenant's chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChainReport {
    pub tenant: String,
    /// Entries read and checked.
    pub entries_checked: i64,
    pub valid: bool,
    /// First sequence number where the chain is broken.
    pub first_bad_seq: Option<i64>,
    /// Description of the break at `first_bad_seq`.
    pub problem: Option<String>,
}

impl ChainReport {
    fn broken(tenant: &str, checked: i64, seq: i64, problem: String) -> Self {
        Self {
            tenant: tenant.to_owned(),
            entries_checked: checked,
            valid: false,
            first_bad_seq: Some(seq),
            problem: Some(problem),
        }
    }
}

/// Verifies one tenant's chain against its sealed head, using `key` to check the seal.
///
/// Every stored entry is read, including any with a sequence number below 1, which no
/// honest append writes. An entry that cannot be decoded is reported as the break, not
/// returned as an error. For a tenant that exists, an empty chain is a break too: tenant
/// creation writes the first entry.
pub async fn verify_chain(
    store: &dyn MetaStore,
    tenant: &str,
    key: &[u8],
) -> Result<ChainReport, MetaError> {
    let mut prev_hash = GENESIS_HASH;
    let mut cursor = i64::MIN;
    let mut last_seq = 0i64;
    let mut last_hash_hex = hex::encode(GENESIS_HASH);
    let mut checked = 0i64;

    loop {
        let page = match store.audit_chain_page(tenant, cursor, PAGE_SIZE).await {
            Ok(page) => page,
            Err(MetaError::Corrupt { message, .. }) => {
                return Ok(ChainReport::broken(
                    tenant,
                    checked,
                    last_seq + 1,
                    format!("entries after {last_seq} cannot be read: {message}"),
                ));
            }
            Err(error) => return Err(error),
        };
        if page.is_empty() {
            break;
        }
        for entry in &page {
            let expected_seq = last_seq + 1;
            if entry.seq != expected_seq {
                let problem = if entry.seq < expected_seq {
                    format!(
                        "an entry with sequence number {} precedes entry {expected_seq}: entries were inserted",
                        entry.seq
                    )
                } else {
                    format!(
                        "entry {expected_seq} is missing (the next stored entry is {}): entries were deleted",
                        entry.seq
                    )
                };
                return Ok(ChainReport::broken(tenant, checked, expected_seq, problem));
            }
            let recomputed = audit::chain_hash(&prev_hash, entry.seq, &entry.content());
            if hex::encode(recomputed) != entry.hash {
                return Ok(ChainReport::broken(
                    tenant,
                    checked,
                    entry.seq,
                    format!(
                        "entry {} does not match its chain hash: it was edited, inserted or moved",
                        entry.seq
                    ),
                ));
            }
            checked += 1;
            prev_hash = recomputed;
            last_seq = entry.seq;
            cursor = entry.seq;
            last_hash_hex.clone_from(&entry.hash);
        }
    }

    let Some(head) = store.audit_head(tenant).await? else {
        if checked > 0 {
            return Ok(ChainReport::broken(
                tenant,
                checked,
                1,
                "the chain has entries but no sealed head: the head was deleted".into(),
            ));
        }
        let tenant_exists = tenant != audit::SYSTEM_CHAIN
            && store
                .get_tenant(&ghaf_core::TenantId::from_stored(tenant))
                .await?
                .is_some();
        if tenant_exists {
            return Ok(ChainReport::broken(
                tenant,
                0,
                1,
                "the tenant exists but its chain is empty: its entries and head were deleted"
                    .into(),
            ));
        }
        return Ok(ChainReport {
            tenant: tenant.to_owned(),
            entries_checked: 0,
            valid: true,
            first_bad_seq: None,
            problem: None,
        });
    };

    let expected_mac = audit::head_mac(key, tenant, head.seq, &head.hash);
    if expected_mac != head.mac {
        return Ok(ChainReport::broken(
            tenant,
            checked,
            head.seq.min(last_seq + 1).max(1),
            "the chain head's seal (MAC) is invalid: the head was rewritten without the audit key"
                .into(),
        ));
    }
    if head.seq > last_seq {
        return Ok(ChainReport::broken(
            tenant,
            checked,
            last_seq + 1,
            format!(
                "the sealed head is at entry {} but the chain ends at {last_seq}: the newest entries were removed",
                head.seq
            ),
        ));
    }
    if head.seq < last_seq {
        return Ok(ChainReport::broken(
            tenant,
            checked,
            head.seq + 1,
            format!(
                "entries after the sealed head ({}) were appended without the audit key",
                head.seq
            ),
        ));
    }
    if head.hash != last_hash_hex {
        return Ok(ChainReport::broken(
            tenant,
            checked,
            head.seq,
            format!("entry {} differs from the sealed head", head.seq),
        ));
    }
    Ok(ChainReport {
        tenant: tenant.to_owned(),
        entries_checked: checked,
        valid: true,
        first_bad_seq: None,
        problem: None,
    })
}
