//! `ghaf tokens`: list, create and revoke API tokens.

use clap::Subcommand;
use ghaf_client::{CreateTokenRequest, IssuedTokenView};
use ghaf_core::ProjectRole;

use super::roles::parse_project_role;
use crate::context::Context;
use crate::duration::parse_duration_seconds;
use crate::output;

#[derive(Subcommand, Clone, Debug)]
pub enum TokensCommand {
    /// List your tokens (every token of the tenant for tenant admins)
    List,
    /// Create a token and print its secret once
    Create {
        /// Label for the token, such as laptop or ci
        name: String,
        /// Principal that owns the token [default: you]; only tenant admins may name another
        #[arg(long, value_name = "NAME")]
        principal: Option<String>,
        /// Restrict the token to this project
        #[arg(long, value_name = "PROJECT")]
        project: Option<String>,
        /// Highest project role the token can use: viewer, developer, deployer or admin
        #[arg(long, value_name = "ROLE", value_parser = parse_project_role)]
        max_role: Option<ProjectRole>,
        /// Lifetime with the unit s, m, h or d, such as 30d or 12h [default: no expiry]
        #[arg(long, value_name = "DURATION", value_parser = parse_duration_seconds)]
        expires_in: Option<u64>,
    },
    /// Revoke a token by id
    Revoke {
        /// Token id, as shown by `ghaf tokens list`
        token_id: String,
    },
}

pub async fn run(context: &Context, command: &TokensCommand) -> anyhow::Result<()> {
    let client = context.client()?;
    match command {
        TokensCommand::List => {
            let response = client.list_tokens().await?;
            output::emit(context.output, &response, |list| {
                let mut table = output::table(&[
                    "id",
                    "name",
                    "principal",
                    "project",
                    "max role",
                    "created",
                    "expires",
                    "revoked",
                ]);
                for token in &list.tokens {
                    table.add_row([
                        token.id.as_str(),
                        token.name.as_str(),
                        token.principal.as_str(),
                        output::or_dash(token.project.as_deref()),
                        output::or_dash(token.max_role.as_deref()),
                        token.created_at.as_str(),
                        output::or_dash(token.expires_at.as_deref()),
                        output::or_dash(token.revoked_at.as_deref()),
                    ]);
                }
                output::print_table(&table, "No tokens found.");
            });
        }
        TokensCommand::Create {
            name,
            principal,
            project,
            max_role,
            expires_in,
        } => {
            let request = CreateTokenRequest {
                name: name.clone(),
                principal: principal.clone(),
                project: project.clone(),
                max_role: *max_role,
                expires_in_seconds: *expires_in,
            };
            let response = client.create_token(&request).await?;
            output::emit(context.output, &response, |issued| {
                print_issued(issued, project.as_deref());
            });
        }
        TokensCommand::Revoke { token_id } => {
            let response = client.revoke_token(token_id).await?;
            output::emit(context.output, &response, |token| {
                println!(
                    "Revoked token {} ({}) at {}.",
                    token.name,
                    token.id,
                    output::or_dash(token.revoked_at.as_deref())
                );
            });
        }
    }
    Ok(())
}

/// Prints the new token's limits and its secret. `project_name` is the name given on the
/// command line, because the response carries only the project id.
fn print_issued(issued: &IssuedTokenView, project_name: Option<&str>) {
    let token = &issued.token;
    let project = match (project_name, &token.project) {
        (Some(name), _) => name.to_owned(),
        (None, Some(id)) => id.clone(),
        (None, None) => "- (all projects)".to_owned(),
    };
    println!("Created token {} ({}).", token.name, token.id);
    output::print_fields(&[
        ("principal", token.principal.clone()),
        ("project", project),
        (
            "max role",
            output::or_dash(token.max_role.as_deref()).to_owned(),
        ),
        (
            "expires",
            token
                .expires_at
                .clone()
                .unwrap_or_else(|| "never".to_owned()),
        ),
    ]);
    println!(
        "\nToken secret (shown once; Ghaf stores only its hash):\n\n  {}\n",
        issued.secret
    );
}
