//! `ndots simulate`: print the walk a stub resolver sends (DESIGN §5).

use super::{CliError, Format};

#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// Names to look up, as an application would pass them to getaddrinfo.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Stub resolver model.
    #[arg(long, default_value = "glibc")]
    pub stub: String,
    /// ndots option.
    #[arg(long)]
    pub ndots: Option<u8>,
    /// Search list, space-separated as in resolv.conf.
    #[arg(long)]
    pub search: Option<String>,
    /// Read ndots, search and options from a resolv.conf file.
    #[arg(long)]
    pub resolv_conf: Option<std::path::PathBuf>,
    #[arg(long, value_name = "NAME[/TYPE]")]
    pub exists: Vec<String>,
    #[arg(long, value_name = "NAME[/TYPE]")]
    pub nodata: Vec<String>,
    #[arg(long, value_name = "NAME[/TYPE]")]
    pub servfail: Vec<String>,
    #[arg(long, value_name = "NAME[/TYPE]")]
    pub refused: Vec<String>,
    #[arg(long, value_name = "NAME[/TYPE]")]
    pub timeout: Vec<String>,
    /// Address family: inet (A), inet6 (AAAA) or unspec (both).
    #[arg(long, default_value = "unspec")]
    pub family: String,
    #[arg(long, value_enum)]
    pub format: Option<Format>,
}

pub fn run(_args: SimulateArgs) -> Result<(), CliError> {
    Err(CliError::runtime(anyhow::anyhow!("simulate: not built yet (issue 3)")))
}
