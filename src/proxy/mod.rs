//! The proxy: listeners, the request path, upstreams.

use std::path::PathBuf;

use crate::cli::CliError;
use crate::config::{Config, Overrides};

pub fn serve(_cfg: Config, _path: Option<PathBuf>, _o: Overrides) -> Result<(), CliError> {
    Err(CliError::runtime(anyhow::anyhow!("proxy: being built (issue 2)")))
}
