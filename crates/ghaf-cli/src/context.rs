//! Global flags and the server URL and token that client commands use.
//!
//! Precedence for the URL and the token: flag, then environment variable (clap reads both
//! into the same field), then the selected profile in `profiles.toml`, then the default URL.

use clap::Args;
use ghaf_client::Client;

use crate::failure::UsageError;
use crate::output::OutputFormat;
use crate::profiles::{self, DEFAULT_PROFILE, Profile};

/// Server URL used when no flag, environment variable or profile sets one.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// Flags accepted by every subcommand.
#[derive(Args, Clone, Debug, Default)]
pub struct GlobalArgs {
    /// Server URL, such as http://127.0.0.1:8080 [default: from the profile, else http://127.0.0.1:8080]
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "GHAF_URL",
        value_name = "URL"
    )]
    pub url: Option<String>,

    /// API token to send as `Authorization: Bearer` [default: from the profile]
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "GHAF_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,

    /// Profile in profiles.toml to read the URL and token from, and that `ghaf login` writes
    /// [default: default]
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "GHAF_PROFILE",
        value_name = "NAME"
    )]
    pub profile: Option<String>,

    /// Output format
    #[arg(
        long,
        short = 'o',
        global = true,
        help_heading = "Global options",
        env = "GHAF_OUTPUT",
        value_enum,
        default_value_t
    )]
    pub output: OutputFormat,
}

impl GlobalArgs {
    /// Returns the selected profile name and whether it was chosen explicitly.
    pub fn profile_name(&self) -> (&str, bool) {
        match &self.profile {
            Some(name) => (name, true),
            None => (DEFAULT_PROFILE, false),
        }
    }
}

/// Server URL and token after applying the precedence rules.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub url: String,
    pub token: Option<String>,
}

/// Applies the precedence rules; `flag_url` and `flag_token` already contain the environment
/// variables when no flag was given. Each field is resolved on its own, so a URL given as a
/// flag is combined with the profile's token when no token flag is given.
pub fn resolve(
    flag_url: Option<&str>,
    flag_token: Option<&str>,
    profile: Option<&Profile>,
) -> Target {
    let url = flag_url
        .map(str::to_owned)
        .or_else(|| profile.and_then(|p| p.url.clone()))
        .unwrap_or_else(|| DEFAULT_URL.to_owned());
    let token = flag_token
        .map(str::to_owned)
        .or_else(|| profile.and_then(|p| p.token.clone()));
    Target { url, token }
}

/// Output format, profile name and request target of a client command.
#[derive(Clone, Debug)]
pub struct Context {
    pub output: OutputFormat,
    pub target: Target,
    pub profile: String,
}

impl Context {
    /// Resolves the URL and token from the flags, the environment and the profiles file.
    pub fn load(global: &GlobalArgs) -> anyhow::Result<Self> {
        let (profile_name, explicit) = global.profile_name();
        profiles::validate_profile_name(profile_name)?;
        let needs_profile = global.url.is_none() || global.token.is_none();

        let mut saved = None;
        if needs_profile {
            let path = match profiles::profiles_path() {
                Ok(path) => Some(path),
                // Without a home directory there are no profiles, which is fine unless one
                // was named.
                Err(error) if explicit => return Err(error.into()),
                Err(_) => None,
            };
            if let Some(path) = path {
                let mut file = profiles::load(&path)?;
                saved = file.profiles.remove(profile_name);
                if saved.is_none() && explicit {
                    return Err(UsageError::new(format!(
                        "profile {profile_name:?} not found in {}; create it with \
                         `ghaf login --profile {profile_name} --url URL --token TOKEN`",
                        path.display()
                    ))
                    .into());
                }
            }
        }

        Ok(Self {
            output: global.output,
            target: resolve(
                global.url.as_deref(),
                global.token.as_deref(),
                saved.as_ref(),
            ),
            profile: profile_name.to_owned(),
        })
    }

    /// Builds a client that sends the resolved token; fails when there is none.
    pub fn client(&self) -> anyhow::Result<Client> {
        let Some(token) = &self.target.token else {
            return Err(UsageError::new(format!(
                "no API token: pass --token, set GHAF_TOKEN, or run `ghaf login` to save one in profile {:?}",
                self.profile
            ))
            .into());
        };
        Ok(Client::new(&self.target.url, Some(token.clone()))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(url: &str, token: &str) -> Profile {
        Profile {
            url: Some(url.into()),
            token: Some(token.into()),
        }
    }

    #[test]
    fn flags_beat_profile() {
        let saved = profile("http://profile:1", "profile-token");
        let target = resolve(Some("http://flag:1"), Some("flag-token"), Some(&saved));
        assert_eq!(target.url, "http://flag:1");
        assert_eq!(target.token.as_deref(), Some("flag-token"));
    }

    #[test]
    fn profile_fills_missing_flags() {
        let saved = profile("http://profile:1", "profile-token");
        let target = resolve(None, Some("flag-token"), Some(&saved));
        assert_eq!(target.url, "http://profile:1");
        assert_eq!(target.token.as_deref(), Some("flag-token"));

        let target = resolve(Some("http://flag:1"), None, Some(&saved));
        assert_eq!(target.token.as_deref(), Some("profile-token"));
    }

    #[test]
    fn default_url_without_profile() {
        let target = resolve(None, None, None);
        assert_eq!(target.url, DEFAULT_URL);
        assert_eq!(target.token, None);
    }

    #[test]
    fn default_url_when_profile_has_no_url() {
        let saved = Profile {
            url: None,
            token: Some("t".into()),
        };
        assert_eq!(resolve(None, None, Some(&saved)).url, DEFAULT_URL);
    }

    #[test]
    fn client_without_token_is_usage_error() {
        let context = Context {
            output: OutputFormat::Table,
            target: resolve(None, None, None),
            profile: "default".into(),
        };
        let error = context.client().unwrap_err();
        assert!(error.is::<UsageError>(), "{error:#}");
        assert!(error.to_string().contains("ghaf login"), "{error}");
    }
}
