//! `ndots demo`: simulated pods through the proxy, shortcut off and on (see `crate::demo`).

use std::time::Duration;

use anyhow::anyhow;

use super::{CliError, TextOrJson};
use crate::config::{parse_duration, ShortcutMode};
use crate::demo::{self, DemoSettings};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  ndots demo\n  ndots demo --format json | jq '.runs[] | {mode, upstream_queries}'\n  \
                  ndots demo --lookups 500 --modes nxdomain --seed 7"
)]
pub struct DemoArgs {
    /// getaddrinfo calls per run (each asks A and AAAA).
    #[arg(long, default_value_t = 3000)]
    pub lookups: usize,
    /// Simulated pods per namespace (four namespaces).
    #[arg(long, default_value_t = 4)]
    pub pods: usize,
    /// Seed of the traffic mix and of which pods use glibc or musl.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Added before every upstream answer: the trip to kube-dns or the cloud resolver.
    #[arg(long, value_name = "DURATION", default_value = "1ms")]
    pub upstream_delay: String,
    /// Shortcut modes to compare with `off` (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "nxdomain,autopath"
    )]
    pub modes: Vec<ShortcutMode>,
    /// Output: text for a person, json for scripts.
    #[arg(long, value_enum)]
    pub format: Option<TextOrJson>,
}

pub fn run(args: DemoArgs) -> Result<(), CliError> {
    let format = args.format.unwrap_or(TextOrJson::Text);
    let delay: Duration = parse_duration(&args.upstream_delay).map_err(CliError::usage)?;
    let settings = DemoSettings {
        seed: args.seed,
        lookups: args.lookups,
        pods_per_namespace: args.pods,
        upstream_delay: delay,
        modes: args.modes,
    };
    if settings.lookups == 0 || !(1..=200).contains(&settings.pods_per_namespace) {
        return Err(CliError::usage(anyhow!(
            "--lookups must be at least 1 and --pods between 1 and 200"
        )));
    }
    let result = demo::run(&settings).map_err(CliError::runtime)?;
    match format {
        TextOrJson::Json => println!(
            "{}",
            serde_json::to_string_pretty(&result).expect("the demo result serializes")
        ),
        _ => print!("{}", demo::text(&result)),
    }
    Ok(())
}
