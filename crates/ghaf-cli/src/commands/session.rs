//! `ghaf login` and `ghaf whoami`.

use std::collections::HashMap;

use ghaf_client::{Client, WhoamiView};

use crate::context::{Context, DEFAULT_URL, GlobalArgs};
use crate::failure::UsageError;
use crate::output::{self, OutputFormat};
use crate::profiles::{self, Profile};

/// Checks the token with `whoami`, then saves the URL and token in the selected profile.
pub async fn login(global: &GlobalArgs) -> anyhow::Result<()> {
    let (profile_name, _) = global.profile_name();
    profiles::validate_profile_name(profile_name)?;
    let Some(token) = global.token.clone() else {
        return Err(UsageError::new(
            "`ghaf login` needs a token: pass --token TOKEN or set GHAF_TOKEN",
        )
        .into());
    };
    let path = profiles::profiles_path()?;
    let mut file = profiles::load(&path)?;
    let url = global
        .url
        .clone()
        .or_else(|| file.profiles.get(profile_name).and_then(|p| p.url.clone()))
        .unwrap_or_else(|| DEFAULT_URL.to_owned());

    let client = Client::new(&url, Some(token.clone()))?;
    let response = client.whoami().await?;

    file.profiles.insert(
        profile_name.to_owned(),
        Profile {
            url: Some(url.clone()),
            token: Some(token),
        },
    );
    profiles::save(&path, &file)?;

    let identity = &response.value;
    match global.output {
        OutputFormat::Json => output::print_json(&response.body),
        OutputFormat::Table => println!(
            "Logged in to {url} as {} ({}) in tenant {}.\nSaved profile {profile_name:?} to {}.",
            identity.principal.name,
            identity.principal.kind,
            identity.tenant,
            path.display()
        ),
    }
    Ok(())
}

/// Prints the identity and roles of the current token.
pub async fn whoami(context: &Context) -> anyhow::Result<()> {
    let client = context.client()?;
    let response = client.whoami().await?;
    if context.output == OutputFormat::Json {
        output::print_json(&response.body);
        return Ok(());
    }
    let project_names = project_names(&client).await;
    print_whoami(&response.value, &project_names);
    Ok(())
}

fn print_whoami(identity: &WhoamiView, project_names: &HashMap<String, String>) {
    let name_of = |id: &str| {
        project_names
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.to_owned())
    };
    let project_roles = identity
        .project_roles
        .iter()
        .map(|(project, role)| format!("{}={role}", name_of(project)))
        .collect::<Vec<_>>();
    let join = |values: &[String]| {
        if values.is_empty() {
            "-".to_owned()
        } else {
            values.join(", ")
        }
    };
    output::print_fields(&[
        ("tenant", identity.tenant.clone()),
        (
            "principal",
            format!("{} ({})", identity.principal.name, identity.principal.id),
        ),
        ("kind", identity.principal.kind.clone()),
        (
            "platform admin",
            output::yes_no(identity.platform_admin).to_owned(),
        ),
        ("tenant roles", join(&identity.tenant_roles)),
        ("project roles", join(&project_roles)),
        ("token", identity.token_id.clone()),
        (
            "token project",
            identity
                .token_project
                .as_deref()
                .map_or_else(|| "- (all projects)".to_owned(), name_of),
        ),
        (
            "token max role",
            output::or_dash(identity.token_max_role.as_deref()).to_owned(),
        ),
    ]);
}

/// Maps project ids to names for display. Any failure leaves the ids as they are, because
/// the names only decorate the output.
async fn project_names(client: &Client) -> HashMap<String, String> {
    match client.list_projects().await {
        Ok(response) => response
            .value
            .projects
            .into_iter()
            .map(|project| (project.id, project.name))
            .collect(),
        Err(_) => HashMap::new(),
    }
}
