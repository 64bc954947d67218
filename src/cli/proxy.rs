//! `ndots proxy`: turn flags and the config file into a validated `Config` and serve.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::CliError;
use crate::config::{parse_socket_addr, Config, LogFormat, Overrides, Profile, ShortcutMode};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  ndots proxy --listen 127.0.0.1:1053 --upstream cluster.local=10.96.0.10:53 --upstream 1.1.1.1:53"
)]
pub struct ProxyArgs {
    /// YAML configuration file (see configs/example.yaml). Without it the embedded default runs.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Validate FILE and exit: 0 when valid, 2 with the problem otherwise.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    pub check_config: Option<PathBuf>,
    /// Address to serve DNS on, UDP and TCP (repeatable; replaces the file's `listen`).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Vec<String>,
    /// Upstream server, optionally for one zone (repeatable; replaces the file's `upstreams`).
    #[arg(long, value_name = "[ZONE=]ADDR:PORT")]
    pub upstream: Vec<String>,
    /// Admin HTTP address (/metrics, /report, /healthz, /readyz).
    #[arg(long, value_name = "ADDR:PORT")]
    pub admin: Option<String>,
    /// Shortcut mode for search-path expansions.
    #[arg(long, value_enum)]
    pub shortcut_mode: Option<ShortcutMode>,
    /// Zone whose names are never meant under a search suffix (repeatable; adds to the file's).
    #[arg(long, value_name = "ZONE")]
    pub shortcut_zone: Vec<String>,
    /// Log format on stderr (replaces the file's `log.format`); the level comes from the
    /// NDOTS_LOG environment variable (default `info`).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// The nodes' platform: its node domains and zones (replaces the file's `cluster.profile`).
    #[arg(long, value_enum, value_name = "PROFILE")]
    pub cluster_profile: Option<Profile>,
}

impl ProxyArgs {
    pub fn overrides(&self) -> anyhow::Result<Overrides> {
        let listen = self
            .listen
            .iter()
            .map(|s| parse_socket_addr(s, None))
            .collect::<anyhow::Result<Vec<SocketAddr>>>()?;
        let upstreams = self
            .upstream
            .iter()
            .map(|s| match s.split_once('=') {
                Some((zone, addr)) => Ok((zone.to_string(), parse_socket_addr(addr, Some(53))?)),
                None => Ok((".".to_string(), parse_socket_addr(s, Some(53))?)),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let admin = self
            .admin
            .as_deref()
            .map(|s| parse_socket_addr(s, None))
            .transpose()?;
        Ok(Overrides {
            listen,
            upstreams,
            admin,
            shortcut_mode: self.shortcut_mode,
            shortcut_zones: self.shortcut_zone.clone(),
            log_format: self.log_format,
            profile: self.cluster_profile,
        })
    }
}

pub fn run(args: ProxyArgs) -> Result<(), CliError> {
    let overrides = args.overrides().map_err(CliError::usage)?;
    if let Some(path) = &args.check_config {
        let cfg = Config::load(Some(path), &overrides).map_err(CliError::usage)?;
        println!(
            "{}: ok ({} listen, {} upstream zones, shortcut {})",
            path.display(),
            cfg.listen.len(),
            cfg.upstreams.len(),
            cfg.shortcut.mode.as_str()
        );
        return Ok(());
    }
    // The file as read, taken first: a change while the proxy starts is a change to reload.
    let read_as = args.config.as_deref().and_then(crate::proxy::FileState::of);
    let cfg = Config::load(args.config.as_deref(), &overrides).map_err(CliError::usage)?;
    crate::proxy::serve(cfg, args.config.clone(), read_as, overrides).map_err(CliError::runtime)
}
