//! Progress bars (indicatif) for `analyze` and `replay`: on a terminal and not under CI
//! only, silent otherwise, so logs and pipes get the summary lines alone.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::capture::session::Progress;

/// Whether to draw: stderr is a terminal and `CI` is not set.
pub(super) fn wanted() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("CI").is_none()
}

/// Reading captures: bytes of the file (rate and ETA), events and events per second.
pub(super) struct ReadBar {
    on: bool,
    bar: Option<ProgressBar>,
    started: Instant,
}

impl ReadBar {
    pub(super) fn new() -> Self {
        ReadBar {
            on: wanted(),
            bar: None,
            started: Instant::now(),
        }
    }
}

impl Progress for ReadBar {
    fn begin(&mut self, path: &Path, bytes: Option<u64>) {
        if !self.on {
            return;
        }
        self.started = Instant::now();
        let bar = match bytes {
            Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr())
                .with_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:20}] {percent:>3}% {msg}, {binary_bytes_per_sec}, ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            ),
            // Standard input: no size, so no ETA; a spinner with the rate.
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
                ProgressStyle::with_template("{spinner} {prefix} {msg}, {binary_bytes_per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        // The file name alone: the line must fit a terminal.
        let short = path.file_name().unwrap_or(path.as_os_str());
        bar.set_prefix(short.to_string_lossy().into_owned());
        bar.set_message("0 events");
        self.bar = Some(bar);
    }

    fn update(&mut self, bytes: u64, events: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(bytes);
            let secs = self.started.elapsed().as_secs_f64().max(1e-3);
            bar.set_message(format!("{events} events ({:.0}/s)", events as f64 / secs));
        }
    }

    fn end(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// A bar over `n` steps (replay's settings), with ETA; hidden off a terminal.
pub(super) fn steps(n: u64, what: &str) -> ProgressBar {
    if !wanted() {
        return ProgressBar::hidden();
    }
    ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()).with_style(
        ProgressStyle::with_template(&format!(
            "{what} {{pos}}/{{len}} [{{bar:20}}] ETA {{eta}} {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    )
}
