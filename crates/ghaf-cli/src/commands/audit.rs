//! `ghaf audit`: read the audit log and verify its hash chain.

use anyhow::bail;
use clap::{Args, Subcommand};
use ghaf_client::{AuditEntry, AuditFilter, AuditVerifyView, Client};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::context::Context;
use crate::output::{self, OutputFormat};

#[derive(Subcommand, Clone, Debug)]
pub enum AuditCommand {
    /// List audit entries of your tenant, oldest first
    List(ListArgs),
    /// Verify the hash chain of your tenant's audit log; exits with 1 when it is broken
    Verify,
}

#[derive(Args, Clone, Debug)]
pub struct ListArgs {
    /// Only entries by this principal, given by name or id
    #[arg(long, value_name = "PRINCIPAL")]
    pub actor: Option<String>,
    /// Only entries with this action, such as projects.create
    #[arg(long, value_name = "ACTION")]
    pub action: Option<String>,
    /// Only entries on this resource path or below it, such as projects/fraud
    #[arg(long, value_name = "PATH")]
    pub resource: Option<String>,
    /// Only entries with this outcome
    #[arg(long, value_parser = ["success", "denied", "failed"])]
    pub outcome: Option<String>,
    /// Only entries at or after this RFC 3339 time, such as 2026-01-31T12:00:00Z
    #[arg(long, value_name = "TIME", value_parser = parse_rfc3339)]
    pub since: Option<String>,
    /// Only entries before this RFC 3339 time
    #[arg(long, value_name = "TIME", value_parser = parse_rfc3339)]
    pub until: Option<String>,
    /// Continue after this sequence number, as printed at the end of a page
    #[arg(long, value_name = "SEQ")]
    pub after: Option<i64>,
    /// Entries per page, 1 to 1000 [default: 100, set by the server]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    /// Follow the pages until the last one and print every entry
    #[arg(long)]
    pub all: bool,
}

pub async fn run(context: &Context, command: &AuditCommand) -> anyhow::Result<()> {
    let client = context.client()?;
    match command {
        AuditCommand::List(args) if args.all => list_all(context, &client, args).await,
        AuditCommand::List(args) => list_page(context, &client, args).await,
        AuditCommand::Verify => verify(context, &client).await,
    }
}

fn filter_of(args: &ListArgs) -> AuditFilter {
    AuditFilter {
        actor: args.actor.clone(),
        action: args.action.clone(),
        resource: args.resource.clone(),
        outcome: args.outcome.clone(),
        since: args.since.clone(),
        until: args.until.clone(),
        after: args.after,
        limit: args.limit,
    }
}

async fn list_page(context: &Context, client: &Client, args: &ListArgs) -> anyhow::Result<()> {
    let response = client.list_audit(&filter_of(args)).await?;
    output::emit(context.output, &response, |page| {
        print_entries(&page.entries);
        if let Some(next) = page.next_after {
            eprintln!(
                "More entries follow: rerun with --after {next}, or with --all for every page."
            );
        }
    });
    Ok(())
}

/// Entries of one page as the server sent them, for joining pages without reformatting.
#[derive(Deserialize)]
struct RawPage {
    #[serde(default)]
    entries: Vec<Box<RawValue>>,
}

/// Follows `next_after` until the last page. JSON output is one page object with every
/// entry and `next_after` set to null.
async fn list_all(context: &Context, client: &Client, args: &ListArgs) -> anyhow::Result<()> {
    let mut filter = filter_of(args);
    let mut entries: Vec<AuditEntry> = Vec::new();
    let mut raw_entries: Vec<Box<RawValue>> = Vec::new();
    loop {
        let response = client.list_audit(&filter).await?;
        if context.output == OutputFormat::Json {
            let page: RawPage = serde_json::from_str(&response.body)?;
            raw_entries.extend(page.entries);
        } else {
            entries.extend(response.value.entries);
        }
        match response.value.next_after {
            Some(next) if filter.after.is_some_and(|after| next <= after) => {
                bail!(
                    "the server returned next_after {next}, which does not advance past {after:?}; stopping",
                    after = filter.after
                )
            }
            Some(next) => filter.after = Some(next),
            None => break,
        }
    }
    match context.output {
        OutputFormat::Json => {
            let joined: Vec<&str> = raw_entries.iter().map(|entry| entry.get()).collect();
            output::print_json(&format!(
                "{{\"entries\":[{}],\"next_after\":null}}",
                joined.join(",")
            ));
        }
        OutputFormat::Table => print_entries(&entries),
    }
    Ok(())
}

/// Shows the principal's name next to its id when the entry records it.
fn actor_label(entry: &AuditEntry) -> String {
    match entry
        .details
        .get("principal_name")
        .and_then(|name| name.as_str())
    {
        Some(name) => format!("{name} ({})", entry.actor),
        None => entry.actor.clone(),
    }
}

fn print_entries(entries: &[AuditEntry]) {
    let mut table = output::table(&[
        "seq",
        "time",
        "actor",
        "action",
        "resource",
        "outcome",
        "status",
        "request id",
    ]);
    for entry in entries {
        table.add_row([
            entry.seq.to_string(),
            entry.time.clone(),
            actor_label(entry),
            entry.action.clone(),
            entry.resource.clone(),
            entry.outcome.clone(),
            entry.status.to_string(),
            entry.request_id.clone(),
        ]);
    }
    output::print_table(&table, "No audit entries found.");
}

/// Verifies the chains and fails with the first broken position when any chain is invalid.
async fn verify(context: &Context, client: &Client) -> anyhow::Result<()> {
    let response = client.verify_audit().await?;
    output::emit(context.output, &response, print_reports);
    if let Some(problem) = describe_first_problem(&response.value) {
        bail!(problem);
    }
    Ok(())
}

fn print_reports(view: &AuditVerifyView) {
    let mut table = output::table(&[
        "chain",
        "entries checked",
        "valid",
        "first bad seq",
        "problem",
    ]);
    for chain in &view.chains {
        table.add_row([
            chain.tenant.clone(),
            chain.entries_checked.to_string(),
            output::yes_no(chain.valid).to_owned(),
            chain
                .first_bad_seq
                .map_or_else(|| "-".to_owned(), |seq| seq.to_string()),
            output::or_dash(chain.problem.as_deref()).to_owned(),
        ]);
    }
    output::print_table(&table, "The server checked no audit chains.");
}

/// Describes the first invalid chain; `None` when every chain is valid.
fn describe_first_problem(view: &AuditVerifyView) -> Option<String> {
    let broken: Vec<_> = view.chains.iter().filter(|chain| !chain.valid).collect();
    let Some(first) = broken.first() else {
        return (!view.valid).then(|| {
            "the server reports the audit log as invalid without naming a chain".to_owned()
        });
    };
    let position = first.first_bad_seq.map_or_else(
        || "an unknown position".to_owned(),
        |seq| format!("entry {seq}"),
    );
    let problem = first.problem.as_deref().unwrap_or("no problem description");
    let mut message = format!(
        "the audit chain {:?} is broken at {position}: {problem}",
        first.tenant
    );
    if broken.len() > 1 {
        message.push_str(&format!(" ({} chains are broken in all)", broken.len()));
    }
    Some(message)
}

fn parse_rfc3339(value: &str) -> Result<String, String> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|_| value.to_owned())
        .map_err(|error| {
            format!("invalid time {value:?}: {error}; use RFC 3339, such as 2026-01-31T12:00:00Z")
        })
}

#[cfg(test)]
mod tests {
    use ghaf_client::ChainReport;

    use super::*;

    fn report(tenant: &str, valid: bool) -> ChainReport {
        ChainReport {
            tenant: tenant.into(),
            entries_checked: 7,
            valid,
            first_bad_seq: (!valid).then_some(5),
            problem: (!valid).then(|| "hash mismatch".to_owned()),
        }
    }

    #[test]
    fn valid_chains_have_no_problem() {
        let view = AuditVerifyView {
            valid: true,
            chains: vec![report("default", true)],
        };
        assert_eq!(describe_first_problem(&view), None);
    }

    #[test]
    fn broken_chain_names_position_and_problem() {
        let view = AuditVerifyView {
            valid: false,
            chains: vec![
                report("default", true),
                report("acme", false),
                report("_system", false),
            ],
        };
        let message = describe_first_problem(&view).unwrap();
        assert_eq!(
            message,
            "the audit chain \"acme\" is broken at entry 5: hash mismatch (2 chains are broken in all)"
        );
    }

    #[test]
    fn invalid_without_chains_is_a_problem() {
        let view = AuditVerifyView {
            valid: false,
            chains: vec![],
        };
        assert!(describe_first_problem(&view).is_some());
    }

    #[test]
    fn rfc3339_times_are_checked() {
        assert!(parse_rfc3339("2026-01-31T12:00:00Z").is_ok());
        assert!(parse_rfc3339("2026-01-31T12:00:00+02:00").is_ok());
        assert!(parse_rfc3339("yesterday").unwrap_err().contains("RFC 3339"));
    }
}
