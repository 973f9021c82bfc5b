//! `ghaf projects`: projects and their members.

use clap::Subcommand;
use ghaf_client::{CreateProjectRequest, GrantMemberRequest, ProjectView};
use ghaf_core::{ProjectRole, Role};

use super::roles::{self, parse_project_role};
use crate::context::Context;
use crate::output::{self, OutputFormat};

#[derive(Subcommand, Clone, Debug)]
pub enum ProjectsCommand {
    /// List the projects you can see
    List,
    /// Create a project
    Create {
        /// Project name, unique in the tenant: lowercase letters, digits, `-`, `_` and `.`
        name: String,
        /// Free-text description
        #[arg(long, value_name = "TEXT", default_value = "")]
        description: String,
    },
    /// Show one project
    Get {
        /// Project name
        name: String,
    },
    /// List, grant and revoke project roles
    #[command(subcommand)]
    Members(MembersCommand),
}

#[derive(Subcommand, Clone, Debug)]
pub enum MembersCommand {
    /// List the role bindings on a project
    List {
        /// Project name
        project: String,
    },
    /// Grant a project role to a principal
    Grant {
        /// Project name
        project: String,
        /// Principal name
        principal: String,
        /// viewer, developer, deployer or admin
        #[arg(value_parser = parse_project_role)]
        role: ProjectRole,
    },
    /// Revoke a project role from a principal
    Revoke {
        /// Project name
        project: String,
        /// Principal name
        principal: String,
        /// viewer, developer, deployer or admin
        #[arg(value_parser = parse_project_role)]
        role: ProjectRole,
    },
}

pub async fn run(context: &Context, command: &ProjectsCommand) -> anyhow::Result<()> {
    let client = context.client()?;
    match command {
        ProjectsCommand::List => {
            let response = client.list_projects().await?;
            output::emit(context.output, &response, |list| {
                let mut table = output::table(&["name", "description", "created", "id"]);
                for project in &list.projects {
                    table.add_row([
                        &project.name,
                        &project.description,
                        &project.created_at,
                        &project.id,
                    ]);
                }
                output::print_table(&table, "No projects found.");
            });
        }
        ProjectsCommand::Create { name, description } => {
            let request = CreateProjectRequest {
                name: name.clone(),
                description: description.clone(),
            };
            let response = client.create_project(&request).await?;
            output::emit(context.output, &response, |project| {
                println!("Created project {} ({}).", project.name, project.id);
            });
        }
        ProjectsCommand::Get { name } => {
            let response = client.get_project(name).await?;
            output::emit(context.output, &response, print_project);
        }
        ProjectsCommand::Members(command) => run_members(context, command).await?,
    }
    Ok(())
}

async fn run_members(context: &Context, command: &MembersCommand) -> anyhow::Result<()> {
    let client = context.client()?;
    match command {
        MembersCommand::List { project } => {
            let response = client.list_members(project).await?;
            let empty = format!("Project {project} has no members.");
            output::emit(context.output, &response, |list| {
                roles::print_bindings(list, &empty)
            });
        }
        MembersCommand::Grant {
            project,
            principal,
            role,
        } => {
            let request = GrantMemberRequest {
                principal: principal.clone(),
                role: *role,
            };
            let response = client.grant_member(project, &request).await?;
            output::emit(context.output, &response, roles::print_granted);
        }
        MembersCommand::Revoke {
            project,
            principal,
            role,
        } => {
            client.revoke_member(project, principal, *role).await?;
            if context.output == OutputFormat::Table {
                println!(
                    "Revoked {} from {principal} on project {project}.",
                    Role::from(*role)
                );
            }
        }
    }
    Ok(())
}

fn print_project(project: &ProjectView) {
    output::print_fields(&[
        ("name", project.name.clone()),
        ("id", project.id.clone()),
        ("tenant", project.tenant.clone()),
        (
            "description",
            output::or_dash(Some(&project.description)).to_owned(),
        ),
        ("created", project.created_at.clone()),
    ]);
}
