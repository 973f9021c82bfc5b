//! `ghaf principals`: users and service accounts.

use clap::Subcommand;
use ghaf_client::{CreatePrincipalRequest, PrincipalKind, PrincipalView};

use crate::context::Context;
use crate::output;

#[derive(Subcommand, Clone, Debug)]
pub enum PrincipalsCommand {
    /// List the users and service accounts of the tenant
    List,
    /// Create a user, or a service account with --service-account
    Create {
        /// Principal name: lowercase letters, digits, `-`, `_` and `.`
        name: String,
        /// Create a service account for automation instead of a user
        #[arg(long)]
        service_account: bool,
        /// Email address of the user
        #[arg(long, value_name = "ADDRESS")]
        email: Option<String>,
    },
    /// Show one principal
    Get {
        /// Principal name
        name: String,
    },
}

pub async fn run(context: &Context, command: &PrincipalsCommand) -> anyhow::Result<()> {
    let client = context.client()?;
    match command {
        PrincipalsCommand::List => {
            let response = client.list_principals().await?;
            output::emit(context.output, &response, |list| {
                let mut table = output::table(&[
                    "name",
                    "kind",
                    "email",
                    "platform admin",
                    "disabled",
                    "created",
                    "id",
                ]);
                for principal in &list.principals {
                    table.add_row([
                        principal.name.as_str(),
                        principal.kind.as_str(),
                        output::or_dash(principal.email.as_deref()),
                        output::yes_no(principal.platform_admin),
                        output::yes_no(principal.disabled),
                        principal.created_at.as_str(),
                        principal.id.as_str(),
                    ]);
                }
                output::print_table(&table, "No principals found.");
            });
        }
        PrincipalsCommand::Create {
            name,
            service_account,
            email,
        } => {
            let kind = if *service_account {
                PrincipalKind::ServiceAccount
            } else {
                PrincipalKind::User
            };
            let request = CreatePrincipalRequest {
                name: name.clone(),
                kind,
                email: email.clone(),
            };
            let response = client.create_principal(&request).await?;
            output::emit(context.output, &response, |principal| {
                println!(
                    "Created {} {} ({}).",
                    principal.kind, principal.name, principal.id
                );
            });
        }
        PrincipalsCommand::Get { name } => {
            let response = client.get_principal(name).await?;
            output::emit(context.output, &response, print_principal);
        }
    }
    Ok(())
}

fn print_principal(principal: &PrincipalView) {
    output::print_fields(&[
        ("name", principal.name.clone()),
        ("id", principal.id.clone()),
        ("kind", principal.kind.clone()),
        (
            "email",
            output::or_dash(principal.email.as_deref()).to_owned(),
        ),
        (
            "platform admin",
            output::yes_no(principal.platform_admin).to_owned(),
        ),
        ("disabled", output::yes_no(principal.disabled).to_owned()),
        ("created", principal.created_at.clone()),
    ]);
}
