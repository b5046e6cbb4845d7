//! Progress bars of long commands (on stderr; hidden when it is not a terminal).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar counting `unit`s; its length is set by the first report.
pub fn bar(unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    let template = format!("{{bar:40}} {{pos}}/{{len}} {unit} {{msg}}");
    bar.set_style(
        ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// A callback for `(done, total)` reports that moves `bar`.
pub fn reporter(bar: &ProgressBar) -> impl FnMut(usize, usize) + '_ {
    move |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    }
}
