//! Parts shared by the stream consumers: the dataset a consumer feeds and the commit of one
//! batch as a pushed segment.

use ghaf_core::{ProjectId, TenantId};

use crate::{IngestError, IngestService, PushFormat, PushOutcome};

/// The dataset a consumer writes to.
#[derive(Clone, Debug)]
pub struct ConsumerTarget {
    pub tenant: TenantId,
    pub project: ProjectId,
    pub project_name: String,
    pub dataset: String,
}

/// Commits the payloads of one fetched batch as a pushed segment of `target`, with the push
/// semantics: key deduplication, dead-lettering of failing messages with their reasons, and
/// one transaction for the segment and its keys.
///
/// Each payload becomes one NDJSON line. Line breaks inside a payload become spaces, which
/// JSON ignores between tokens. An empty payload becomes `null`, so it is dead-lettered
/// instead of being skipped as a blank line.
pub(crate) async fn commit_batch<'a>(
    service: &IngestService,
    target: &ConsumerTarget,
    payloads: impl IntoIterator<Item = &'a [u8]>,
    actor: &str,
) -> Result<PushOutcome, IngestError> {
    let mut body = Vec::new();
    for payload in payloads {
        if payload.iter().all(u8::is_ascii_whitespace) {
            body.extend_from_slice(b"null");
        } else {
            body.extend(payload.iter().map(|&byte| {
                if byte == b'\n' || byte == b'\r' {
                    b' '
                } else {
                    byte
                }
            }));
        }
        body.push(b'\n');
    }
    let dataset = service
        .store()
        .get_dataset(&target.tenant, &target.project, &target.dataset)
        .await?;
    service
        .push(
            &dataset,
            &target.project_name,
            &body,
            PushFormat::Ndjson,
            actor,
        )
        .await
}
