//! `ghaf tenants`: list and create tenants (platform administrator only).

use clap::Subcommand;
use ghaf_client::{CreateTenantRequest, CreatedTenant};

use crate::context::Context;
use crate::output;

#[derive(Subcommand, Clone, Debug)]
pub enum TenantsCommand {
    /// List tenants
    List,
    /// Create a tenant with an admin user, and print the admin's token once
    Create {
        /// Tenant name: lowercase letters, digits, `-`, `_` and `.`, at most 63 characters
        name: String,
        /// Human-readable name [default: the tenant name]
        #[arg(long, value_name = "TEXT")]
        display_name: Option<String>,
        /// Name of the tenant's first admin user [default: admin]
        #[arg(long, value_name = "NAME")]
        admin: Option<String>,
    },
}

pub async fn run(context: &Context, command: &TenantsCommand) -> anyhow::Result<()> {
    let client = context.client()?;
    match command {
        TenantsCommand::List => {
            let response = client.list_tenants().await?;
            output::emit(context.output, &response, |list| {
                let mut table = output::table(&["name", "display name", "created"]);
                for tenant in &list.tenants {
                    table.add_row([&tenant.name, &tenant.display_name, &tenant.created_at]);
                }
                output::print_table(&table, "No tenants found.");
            });
        }
        TenantsCommand::Create {
            name,
            display_name,
            admin,
        } => {
            let request = CreateTenantRequest {
                name: name.clone(),
                display_name: display_name.clone(),
                admin: admin.clone(),
            };
            let response = client.create_tenant(&request).await?;
            let url = context.target.url.clone();
            output::emit(context.output, &response, |created| {
                print_created(created, &url)
            });
        }
    }
    Ok(())
}

fn print_created(created: &CreatedTenant, url: &str) {
    let tenant = &created.tenant.name;
    let admin = &created.admin.name;
    let secret = &created.token.secret;
    println!(
        "Created tenant {tenant} with admin user {admin}.\n\n\
         Admin token for {tenant}/{admin} (shown once; Ghaf stores only its hash):\n\n  {secret}\n\n\
         Log in with:\n  ghaf login --profile {tenant} --url {url} --token {secret}"
    );
}
