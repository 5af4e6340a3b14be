//! What rank 0 shows while work goes on: progress bars (indicatif, drawn only on a terminal) and
//! one line per milestone (printed always, so logs of batch jobs show progress too).

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    visible: bool,
}

impl Progress {
    /// Shows anything only when `visible` (rank 0).
    pub fn new(visible: bool) -> Self {
        Progress { visible }
    }

    /// A bar of `len` units; hidden on other ranks and when stderr is not a terminal.
    pub(crate) fn bar(&self, len: u64, message: &str) -> ProgressBar {
        if !self.visible {
            return ProgressBar::hidden();
        }
        let style = ProgressStyle::with_template(
            "{msg:>18} [{bar:40}] {pos}/{len} {elapsed_precise} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> ");
        ProgressBar::new(len).with_style(style).with_message(message.to_string())
    }

    pub(crate) fn note(&self, line: &str) {
        if self.visible {
            println!("{line}");
        }
    }
}
