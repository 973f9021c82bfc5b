//! Saved connection profiles: `profiles.toml` in the configuration directory.
//!
//! ```toml
//! [profiles.default]
//! url = "http://127.0.0.1:8080"
//! token = "ghaf_…"
//! ```
//!
//! The file contains tokens, so `ghaf login` writes it with owner-only permissions (0600 on
//! Unix) and the directory with 0700.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::failure::UsageError;

/// Name of the profiles file inside the configuration directory.
pub const PROFILES_FILE: &str = "profiles.toml";

/// Profile used when neither `--profile` nor `GHAF_PROFILE` is set.
pub const DEFAULT_PROFILE: &str = "default";

/// Contents of `profiles.toml`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfilesFile {
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// Server URL and token saved under one profile name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Returns the configuration directory: `$GHAF_CONFIG_DIR`, else `$XDG_CONFIG_HOME/ghaf`,
/// else `$HOME/.config/ghaf`. `lookup` reads an environment variable; empty values count as
/// unset, and so does a relative `XDG_CONFIG_HOME`, which the XDG Base Directory
/// Specification declares invalid.
pub fn config_dir(lookup: impl Fn(&str) -> Option<String>) -> Result<PathBuf, UsageError> {
    let get = |name: &str| lookup(name).filter(|value| !value.is_empty());
    if let Some(dir) = get("GHAF_CONFIG_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = get("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
    {
        return Ok(dir.join("ghaf"));
    }
    if let Some(home) = get("HOME") {
        return Ok(PathBuf::from(home).join(".config").join("ghaf"));
    }
    Err(UsageError::new(
        "cannot find the configuration directory for profiles: set GHAF_CONFIG_DIR or HOME",
    ))
}

/// Returns the path of `profiles.toml` for the process environment.
pub fn profiles_path() -> Result<PathBuf, UsageError> {
    Ok(config_dir(|name| std::env::var(name).ok())?.join(PROFILES_FILE))
}

/// Checks that a profile name is usable as a TOML key and in messages.
pub fn validate_profile_name(name: &str) -> Result<(), UsageError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(UsageError::new(format!(
            "invalid profile name {name:?}: use 1 to 64 letters, digits, `-`, `_` or `.`"
        )))
    }
}

/// Reads the profiles file; a missing file reads as no profiles.
pub fn load(path: &Path) -> anyhow::Result<ProfilesFile> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(ProfilesFile::default());
        }
        Err(error) => {
            return Err(error)
                .with_context(|| format!("cannot read profiles file {}", path.display()));
        }
    };
    warn_if_shared(path);
    toml::from_str(&text).map_err(|error| {
        UsageError::new(format!(
            "invalid profiles file {}: {}; fix it or remove it and run `ghaf login` again",
            path.display(),
            error.message()
        ))
        .into()
    })
}

/// Writes the profiles file with owner-only permissions, replacing it atomically so a
/// crash leaves either the old or the new file.
pub fn save(path: &Path, profiles: &ProfilesFile) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let text = toml::to_string_pretty(profiles).context("cannot serialise the profiles")?;
    let temporary = dir.join(format!(".{PROFILES_FILE}.{}.tmp", std::process::id()));

    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let write = || -> std::io::Result<()> {
        let mut file = options.open(&temporary)?;
        // A file left by an earlier crashed run keeps its mode; narrow it again.
        set_owner_only(&temporary, 0o600)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    };
    write().map_err(|error| {
        let _ = std::fs::remove_file(&temporary);
        anyhow::Error::from(error).context(format!("cannot write profiles file {}", path.display()))
    })
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .with_context(|| format!("cannot create configuration directory {}", dir.display()))
}

#[cfg(unix)]
fn set_owner_only(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_owner_only(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

/// Warns on stderr when other users can read the file, because it contains tokens.
#[cfg(unix)]
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(metadata) = std::fs::metadata(path)
        && metadata.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "warning: {} is readable by other users and contains tokens; run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    #[test]
    fn config_dir_prefers_ghaf_config_dir() {
        let vars = [
            ("GHAF_CONFIG_DIR", "/g"),
            ("XDG_CONFIG_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(config_dir(env(&vars)).unwrap(), PathBuf::from("/g"));
    }

    #[test]
    fn config_dir_uses_xdg_then_home() {
        let xdg = [("XDG_CONFIG_HOME", "/x"), ("HOME", "/h")];
        assert_eq!(config_dir(env(&xdg)).unwrap(), PathBuf::from("/x/ghaf"));
        let home = [("HOME", "/h")];
        assert_eq!(
            config_dir(env(&home)).unwrap(),
            PathBuf::from("/h/.config/ghaf")
        );
    }

    #[test]
    fn config_dir_ignores_empty_and_relative_values() {
        let vars = [
            ("GHAF_CONFIG_DIR", ""),
            ("XDG_CONFIG_HOME", "relative"),
            ("HOME", "/h"),
        ];
        assert_eq!(
            config_dir(env(&vars)).unwrap(),
            PathBuf::from("/h/.config/ghaf")
        );
    }

    #[test]
    fn config_dir_without_home_is_usage_error() {
        let error = config_dir(env(&[])).unwrap_err();
        assert!(error.to_string().contains("GHAF_CONFIG_DIR"), "{error}");
    }

    #[test]
    fn profile_names_are_checked() {
        assert!(validate_profile_name("prod-eu.1").is_ok());
        for bad in ["", "a b", "x]", &"a".repeat(65)] {
            assert!(validate_profile_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn missing_file_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = load(&dir.path().join(PROFILES_FILE)).unwrap();
        assert!(loaded.profiles.is_empty());
    }

    #[test]
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join(PROFILES_FILE);
        let mut profiles = ProfilesFile::default();
        profiles.profiles.insert(
            "default".into(),
            Profile {
                url: Some("http://127.0.0.1:9000".into()),
                token: Some("ghaf_a_b".into()),
            },
        );
        profiles.profiles.insert("empty".into(), Profile::default());

        save(&path, &profiles).unwrap();

        assert_eq!(load(&path).unwrap(), profiles);
    }

    #[cfg(unix)]
    #[test]
    fn saved_file_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        let path = config.join(PROFILES_FILE);
        std::fs::create_dir(&config).unwrap();
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

        save(&path, &ProfilesFile::default()).unwrap();

        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[cfg(unix)]
    #[test]
    fn new_config_dir_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("ghaf");

        save(&config.join(PROFILES_FILE), &ProfilesFile::default()).unwrap();

        let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn unknown_key_is_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PROFILES_FILE);
        std::fs::write(
            &path,
            "[profiles.default]\nurl = \"http://h\"\ntokn = \"x\"\n",
        )
        .unwrap();

        let error = load(&path).unwrap_err();

        assert!(error.is::<UsageError>(), "{error:#}");
        let message = error.to_string();
        assert!(message.contains("tokn"), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
    }
}
