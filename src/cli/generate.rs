//! Files generated from the clap definitions and the code: shell completions, man pages, and
//! the reference pages under docs/reference (see `crate::docs`).

use std::path::PathBuf;

use super::CliError;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  ndots completions bash > /etc/bash_completion.d/ndots\n  \
                  ndots completions zsh > \"${fpath[1]}/_ndots\"\n  \
                  ndots completions fish > ~/.config/fish/completions/ndots.fish"
)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Example:\n  ndots man --dir /usr/local/share/man/man1 && man ndots-proxy")]
pub struct ManArgs {
    /// Directory to write the pages into (`ndots.1`, `ndots-proxy.1`, ...); created if missing.
    #[arg(long, value_name = "DIR", default_value = "man")]
    pub dir: PathBuf,
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Example:\n  ndots docs --dir docs/reference")]
pub struct DocsArgs {
    /// Directory to write metrics.md, config.md and cli.md into.
    #[arg(long, value_name = "DIR", default_value = crate::docs::REFERENCE_DIR)]
    pub dir: PathBuf,
}

pub fn completions(args: CompletionsArgs) -> Result<(), CliError> {
    let mut cmd = super::command();
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut cmd, "ndots", &mut std::io::stdout());
    Ok(())
}

pub fn man(args: ManArgs) -> Result<(), CliError> {
    let written = crate::docs::write_man_pages(&args.dir, &super::command()).map_err(|e| {
        CliError::runtime(anyhow::anyhow!(
            "writing man pages to {}: {e} (choose a writable directory with --dir)",
            args.dir.display()
        ))
    })?;
    for f in written {
        println!("{f}");
    }
    Ok(())
}

pub fn docs(args: DocsArgs) -> Result<(), CliError> {
    let written = crate::docs::write_reference(&args.dir, &super::command()).map_err(|e| {
        CliError::runtime(anyhow::anyhow!(
            "writing the reference pages to {}: {e}",
            args.dir.display()
        ))
    })?;
    for f in written {
        println!("{f}");
    }
    Ok(())
}
