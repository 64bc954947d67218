//! `ndots node-local teardown`: undo what the node-local proxy sets up (the proxy itself never
//! does, DESIGN §3): the link and its addresses, the NOTRACK table, the firewall rules.

use std::path::PathBuf;

use super::CliError;
use crate::config::{Config, FileConfig, NodeLocalSection, Overrides};

/// The configuration the node-local DaemonSet runs with: what a teardown without `--config`
/// removes.
const SHIPPED: &str = include_str!("../../deploy/node-local/ndots.yaml");

#[derive(clap::Args, Debug)]
pub struct NodeLocalArgs {
    #[command(subcommand)]
    pub command: NodeLocalCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum NodeLocalCommand {
    /// Remove the node-local link (with its addresses), the nftables NOTRACK table and the
    /// ACCEPT rules in the host's filter INPUT/OUTPUT chains. Stop the DaemonSet first: a
    /// running proxy puts them back within 2 s.
    #[command(
        after_help = "Example (on the node, after deleting the DaemonSet):\n  \
                      ndots node-local teardown --config /etc/ndots/ndots.yaml"
    )]
    Teardown {
        /// The proxy's configuration: its `node_local` section names the link, the addresses
        /// and the ports. Without it, the configuration deploy/node-local ships (nodelocaldns,
        /// 169.254.20.10 and fd00::a9fe:140a, DNS port 53, admin port 9255).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

pub fn run(args: NodeLocalArgs) -> Result<(), CliError> {
    match args.command {
        NodeLocalCommand::Teardown { config } => teardown(config),
    }
}

fn teardown(path: Option<PathBuf>) -> Result<(), CliError> {
    // Only the node_local section matters; the rest of the file is validated all the same,
    // so a typo is reported rather than half a teardown done.
    let mut file = match &path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| CliError::usage(anyhow::anyhow!("reading {}: {e}", p.display())))?;
            FileConfig::parse_file(&text)
                .map_err(|e| CliError::usage(e.context(format!("in {}", p.display()))))?
        }
        None => FileConfig::parse(SHIPPED).map_err(CliError::runtime)?,
    };
    let mut section = file.node_local.take().unwrap_or_default();
    if section.enabled != Some(true) {
        section = NodeLocalSection {
            enabled: Some(true),
            ..section
        };
    }
    file.node_local = Some(section);
    // Upstreams do not matter here and may name variables only the proxy's pod has: the flag
    // form replaces them.
    let overrides = Overrides {
        upstreams: vec![(".".into(), "127.0.0.1:53".parse().expect("static"))],
        ..Default::default()
    };
    let cfg = Config::from_file_config(file, &overrides).map_err(CliError::usage)?;
    let nl = cfg.node_local.expect("enabled above");
    let done = crate::node_local::teardown(&nl).map_err(CliError::runtime)?;
    println!(
        "link {}: {}; nftables table inet {}: {}; firewall rules removed: {}",
        nl.interface,
        if done.link { "removed" } else { "not there" },
        crate::node_local::NOTRACK_TABLE,
        if done.notrack_table {
            "removed"
        } else {
            "not there"
        },
        done.firewall_rules
    );
    Ok(())
}
