//! `ghaf roles`: tenant-wide role bindings, and the role parsers that other commands share.

use clap::Subcommand;
use ghaf_client::{GrantRoleRequest, RoleBindingList, RoleBindingView};
use ghaf_core::{ProjectRole, Role};

use crate::context::Context;
use crate::output::{self, OutputFormat};

#[derive(Subcommand, Clone, Debug)]
pub enum RolesCommand {
    /// List every role binding of the tenant
    List,
    /// Grant a tenant role, or a project role with --project
    Grant {
        /// Principal name
        principal: String,
        /// viewer, developer, deployer or admin with --project; tenant_admin or auditor without it
        #[arg(value_parser = parse_role)]
        role: Role,
        /// Project name, for project roles
        #[arg(long, value_name = "PROJECT")]
        project: Option<String>,
    },
    /// Revoke a tenant role, or a project role with --project
    Revoke {
        /// Principal name
        principal: String,
        /// Role to revoke
        #[arg(value_parser = parse_role)]
        role: Role,
        /// Project name, for project roles
        #[arg(long, value_name = "PROJECT")]
        project: Option<String>,
    },
}

pub async fn run(context: &Context, command: &RolesCommand) -> anyhow::Result<()> {
    let client = context.client()?;
    match command {
        RolesCommand::List => {
            let response = client.list_role_bindings().await?;
            output::emit(context.output, &response, |list| {
                print_bindings(list, "No role bindings found.");
            });
        }
        RolesCommand::Grant {
            principal,
            role,
            project,
        } => {
            let request = GrantRoleRequest {
                principal: principal.clone(),
                role: *role,
                project: project.clone(),
            };
            let response = client.grant_role(&request).await?;
            output::emit(context.output, &response, print_granted);
        }
        RolesCommand::Revoke {
            principal,
            role,
            project,
        } => {
            client
                .revoke_role(principal, *role, project.as_deref())
                .await?;
            if context.output == OutputFormat::Table {
                println!(
                    "Revoked {role} from {principal}{}.",
                    on_project(project.as_deref())
                );
            }
        }
    }
    Ok(())
}

/// Prints role bindings as a table.
pub fn print_bindings(list: &RoleBindingList, empty_message: &str) {
    let mut table = output::table(&["principal", "role", "project", "created", "created by"]);
    for binding in &list.bindings {
        table.add_row([
            binding.principal.as_str(),
            binding.role.as_str(),
            output::or_dash(binding.project.as_deref()),
            binding.created_at.as_str(),
            binding.created_by.as_str(),
        ]);
    }
    output::print_table(&table, empty_message);
}

pub fn print_granted(binding: &RoleBindingView) {
    println!(
        "Granted {} to {}{}.",
        binding.role,
        binding.principal,
        on_project(binding.project.as_deref())
    );
}

fn on_project(project: Option<&str>) -> String {
    match project {
        Some(project) => format!(" on project {project}"),
        None => " tenant-wide".to_owned(),
    }
}

/// Parses any role name: a project role or a tenant role.
pub fn parse_role(value: &str) -> Result<Role, String> {
    value.parse()
}

/// Parses a project role name: viewer, developer, deployer or admin.
pub fn parse_project_role(value: &str) -> Result<ProjectRole, String> {
    let role: Role = value.parse().map_err(|_| {
        format!(
            "unknown project role {value:?}; expected one of viewer, developer, deployer, admin"
        )
    })?;
    role.project_role().ok_or_else(|| {
        format!(
            "{value} is a tenant role; use a project role: viewer, developer, deployer or admin"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_role_parses_project_roles() {
        assert_eq!(parse_project_role("viewer"), Ok(ProjectRole::Viewer));
        assert_eq!(parse_project_role("admin"), Ok(ProjectRole::Admin));
    }

    #[test]
    fn project_role_rejects_tenant_roles() {
        let error = parse_project_role("tenant_admin").unwrap_err();
        assert!(error.contains("tenant role"), "{error}");
    }

    #[test]
    fn unknown_role_lists_choices() {
        let error = parse_role("owner").unwrap_err();
        assert!(error.contains("viewer"), "{error}");
    }
}
