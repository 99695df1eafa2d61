//! The progress bar: drawn on stderr only when it is a terminal (and not
//! turned off with --no-progress), so reports piped to files stay clean.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar over the sending window, in tenths of a second.
    pub fn new(enabled: bool, window: Duration) -> Self {
        if !enabled {
            return Self {
                bar: ProgressBar::hidden(),
            };
        }
        let bar = ProgressBar::with_draw_target(
            Some(window.as_millis() as u64 / 100),
            ProgressDrawTarget::stderr(),
        );
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}")
        {
            bar.set_style(style);
        }
        Self { bar }
    }

    pub fn update(&self, elapsed: Duration, message: String) {
        self.bar.set_position(elapsed.as_millis() as u64 / 100);
        self.bar.set_message(message);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
