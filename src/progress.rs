//! Progress bars on stderr: only for work over [`PROGRESS_BYTES_MIN`], only when stderr is a
//! terminal, never with `--json` (scripts and CI logs stay clean).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// Work smaller than this finishes too fast for a bar to help.
pub const PROGRESS_BYTES_MIN: u64 = 256 << 20;

/// Draws one bar on stderr at `done` of `total` bytes and leaves it there (a status command's
/// picture of work going on elsewhere, such as a node's rebuild). Nothing when stderr is not
/// a terminal.
pub fn show_once(done: u64, total: u64, what: &str) {
    if !std::io::stderr().is_terminal() || total == 0 {
        return;
    }
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what.to_string());
    bar.set_position(done.min(total));
    bar.abandon();
}

pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(total_bytes: u64, json: bool, what: &str) -> Self {
        let show = !json && total_bytes >= PROGRESS_BYTES_MIN && std::io::stderr().is_terminal();
        let bar = show.then(|| {
            let bar = ProgressBar::new(total_bytes);
            let style = ProgressStyle::with_template(
                "{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(what.to_string());
            bar
        });
        Progress { bar }
    }

    pub fn add(&self, bytes: u64) {
        if let Some(b) = &self.bar {
            b.inc(bytes);
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
