//! Progress of `caravan ingest` on standard error: on a terminal a bar of
//! the input read (bytes of the files, compressed for gzip) with the events'
//! rate and the time left; otherwise a plain line every few seconds. Standard
//! input has no known size: a spinner and the rate.
//!
//! Depends only on the shared tally and indicatif.

use super::Tally;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the bar is redrawn.
const TICK: Duration = Duration::from_millis(200);
/// How often a plain line is written when standard error is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(2);

/// Draws until `done` is set; clears the bar then.
pub(crate) async fn show(
    tally: Arc<Tally>,
    total_bytes: Option<u64>,
    mut done: tokio::sync::watch::Receiver<bool>,
) {
    let started = Instant::now();
    let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let (bar, template) = match total_bytes {
            Some(total) => (
                indicatif::ProgressBar::new(total),
                "{spinner} {percent:>3}% [{wide_bar}] {msg}, {eta} left",
            ),
            None => (indicatif::ProgressBar::new_spinner(), "{spinner} {msg}"),
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    });
    let mut last_line = Instant::now();
    loop {
        let text = tally.progress_text(started.elapsed());
        let read = tally.bytes_read.load(Ordering::Relaxed);
        match &bar {
            Some(bar) => {
                bar.set_position(read);
                bar.set_message(text);
            }
            None if last_line.elapsed() >= LINE_EVERY => {
                let share = total_bytes
                    .filter(|&t| t > 0)
                    .map(|t| {
                        let done = read as f64 / t as f64;
                        let left = started.elapsed().as_secs_f64() * (1.0 - done) / done.max(1e-9);
                        format!(
                            " {:.0} % of the input, about {left:.0} s left;",
                            done * 100.0
                        )
                    })
                    .unwrap_or_default();
                eprintln!("caravan ingest:{share} {text}");
                last_line = Instant::now();
            }
            None => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = done.changed() => break,
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}
