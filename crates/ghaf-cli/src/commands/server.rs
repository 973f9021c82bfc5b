//! `ghaf server` and `ghaf init`: the commands that run on the server's own data.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use clap::Args;
use ghaf_server::{ConfigOverrides, LogFormat, ServerConfig};

/// Flags that select and override the server configuration.
#[derive(Args, Clone, Debug, Default)]
pub struct ConfigArgs {
    /// TOML configuration file; every key in it is optional
    #[arg(long, env = "GHAF_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Directory for the embedded SQLite database, local blobs and key files (overrides `data_dir`)
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address and port to listen on, such as 127.0.0.1:8080 (overrides `listen`)
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_listen)]
    pub listen: Option<SocketAddr>,

    /// Log format on stderr (overrides `log_format`)
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

impl ConfigArgs {
    /// Loads the configuration: defaults, then the file, then `GHAF_*` variables, then flags.
    pub fn load(&self) -> anyhow::Result<ServerConfig> {
        let overrides = ConfigOverrides {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            log_format: self.log_format,
        };
        Ok(ServerConfig::load(self.config.as_deref(), &overrides)?)
    }
}

#[derive(Args, Clone, Debug)]
pub struct ServerArgs {
    #[command(flatten)]
    pub config: ConfigArgs,

    /// Print the effective configuration as TOML, with secrets replaced by ***, and exit
    #[arg(long)]
    pub print_config: bool,
}

#[derive(Args, Clone, Debug)]
pub struct InitArgs {
    #[command(flatten)]
    pub config: ConfigArgs,

    /// Issues a new token for the platform administrator of an existing store, for when the
    /// admin token is lost. Needs direct access to the server's configuration and data.
    #[arg(long)]
    pub issue_admin_token: bool,
}

/// Runs the server until SIGINT or SIGTERM, bootstrapping an empty store first when the
/// configuration allows it.
pub async fn run_server(args: &ServerArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    if args.print_config {
        print!("{}", config.to_redacted_toml());
        return Ok(());
    }
    ghaf_server::telemetry::init(config.log_format, &config.log_level);
    let listener = ghaf_server::bind(config.listen).await?;
    let address = listener.local_addr()?;
    let state = ghaf_server::open_state(&config).await?;
    ghaf_server::warm_online_store(&state).await;
    if config.bootstrap.enabled
        && let Some(created) = ghaf_server::bootstrap(&state).await?
    {
        ghaf_server::print_bootstrap(&created, &format!("http://{address}"));
    }
    ghaf_server::serve_with(state, listener, ghaf_server::shutdown_signal()).await
}

/// Bootstraps an empty store and prints the admin token; reports an existing store without
/// printing any secret.
pub async fn run_init(args: &InitArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    ghaf_server::telemetry::init(config.log_format, &config.log_level);
    let state = ghaf_server::open_state(&config).await?;
    if args.issue_admin_token {
        let issued = state.tenancy().issue_recovery_token().await?;
        println!(
            "New token for the platform administrator (shown once; the audit log records its issue):\n\n  {}\n",
            issued.secret
        );
        return Ok(());
    }
    match ghaf_server::bootstrap(&state).await? {
        Some(created) => {
            ghaf_server::print_bootstrap(&created, &format!("http://{}", config.listen));
        }
        None => {
            let location = if config.metadata.url.is_empty() {
                format!("in {}", config.data_dir.display())
            } else {
                "in the configured metadata database".to_owned()
            };
            println!(
                "The metadata store {location} already has a tenant, so there is nothing to initialise.\n\
                 Log in with an existing token, or ask a tenant admin to create one with `ghaf tokens create`.\n\
                 If the admin token is lost, run `ghaf init --issue-admin-token` on the server's machine."
            );
        }
    }
    Ok(())
}

/// Parses `IP:PORT`, or resolves `HOST:PORT` and takes its first address.
fn parse_listen(value: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = value.parse() {
        return Ok(address);
    }
    let hint = "use HOST:PORT, such as 127.0.0.1:8080 or localhost:8080";
    let mut addresses = value
        .to_socket_addrs()
        .map_err(|error| format!("invalid listen address {value:?}: {error}; {hint}"))?;
    addresses
        .next()
        .ok_or_else(|| format!("invalid listen address {value:?}: the host has no address; {hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_accepts_ip_and_port() {
        assert_eq!(parse_listen("127.0.0.1:9000").unwrap().port(), 9000);
        assert_eq!(parse_listen("[::1]:9000").unwrap().port(), 9000);
    }

    #[test]
    fn listen_resolves_localhost() {
        let address = parse_listen("localhost:9000").unwrap();
        assert!(address.ip().is_loopback(), "{address}");
        assert_eq!(address.port(), 9000);
    }

    #[test]
    fn listen_without_port_is_rejected() {
        let error = parse_listen("127.0.0.1").unwrap_err();
        assert!(error.contains("HOST:PORT"), "{error}");
    }
}
