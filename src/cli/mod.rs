//! Command-line surface (DESIGN §2). Each subcommand's arguments live in their own file; `run`
//! turns them into validated configuration and calls the library. Errors are values until
//! `main`, which maps them to exit codes: 0 ok, 1 runtime failure, 2 usage or config error.

use clap::{Parser, Subcommand};

pub mod analyze;
pub mod capture;
pub mod collect;
pub mod demo;
pub mod generate;
pub mod node_local;
mod progress;
pub mod proxy;
pub mod replay;
pub mod report;
pub mod simulate;

pub use crate::VERSION;

#[derive(Parser, Debug)]
#[command(
    name = "ndots",
    version = VERSION,
    about = "Find and remove the DNS load that Kubernetes' ndots:5 search-path expansion creates",
    after_help = "Start here:\n  ndots demo                 see what ndots does, on this machine, in seconds\n  \
                  ndots proxy --help         run the proxy\n\nDocs: docs/README.md"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run simulated pods through the proxy with the shortcut off and on, and compare.
    Demo(demo::DemoArgs),
    /// Caching DNS forwarder that short-circuits search-path expansion and tracks amplification.
    Proxy(proxy::ProxyArgs),
    /// Show the queries a stub resolver sends for one lookup under ndots and a search list.
    Simulate(simulate::SimulateArgs),
    /// Render the amplification report of running proxies (merged) or of saved JSON files.
    Report(report::ReportArgs),
    /// Rebuild lookups from captured queries and print the amplification report.
    Analyze(analyze::AnalyzeArgs),
    /// Receive dnstap from DNS servers (Frame Streams over unix or TCP) and track amplification.
    Collect(collect::CollectArgs),
    /// Capture tools: write a synthetic capture, dump any capture's events.
    Capture(capture::CaptureArgs),
    /// What-if: replay captured lookups under other ndots/search/stub/shortcut settings,
    /// offline or live against --target; list changed resolutions and recommend a setting.
    Replay(replay::ReplayArgs),
    /// Node-local setup: `teardown` removes the link, addresses, NOTRACK table and firewall
    /// rules the proxy leaves in place.
    NodeLocal(node_local::NodeLocalArgs),
    /// Print a shell completion script (bash, zsh or fish) to standard output.
    Completions(generate::CompletionsArgs),
    /// Write man pages generated from these command definitions.
    Man(generate::ManArgs),
    /// Write the generated reference pages (metrics, config keys, CLI flags).
    #[command(hide = true)]
    Docs(generate::DocsArgs),
}

/// The command tree as clap sees it (for completions, man pages and the generated docs).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// An error that carries its exit code.
#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub error: anyhow::Error,
}

impl CliError {
    /// Usage or configuration error: exit code 2.
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        CliError {
            code: 2,
            error: error.into(),
        }
    }
    /// Runtime failure: exit code 1.
    pub fn runtime(error: impl Into<anyhow::Error>) -> Self {
        CliError {
            code: 1,
            error: error.into(),
        }
    }
}

impl From<anyhow::Error> for CliError {
    fn from(error: anyhow::Error) -> Self {
        CliError::runtime(error)
    }
}

pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Proxy(args) => proxy::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Report(args) => report::run(args),
        Command::Capture(args) => capture::run(args),
        Command::Collect(args) => collect::run(args),
        Command::Analyze(args) => analyze::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Completions(args) => generate::completions(args),
        Command::Man(args) => generate::man(args),
        Command::Docs(args) => generate::docs(args),
        Command::Replay(args) => replay::run(args),
        Command::NodeLocal(args) => node_local::run(args),
    }
}

/// Output format shared by every command that prints a report.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Html,
}

/// Output format of the commands that have no HTML form (`demo`, `simulate`): clap offers
/// only what they print.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextOrJson {
    Text,
    Json,
}
