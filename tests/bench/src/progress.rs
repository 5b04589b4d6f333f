//! Progress bars on stderr while the bench runs (hidden when stderr is not a terminal).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

/// A bar for a fixed amount of work (`total` items).
pub fn count_bar(label: &str, total: u64) -> ProgressBar {
    labeled_bar(label, total, "{prefix:>18.bold} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}")
}

/// A bar that fills over `window` of wall time; its message shows a running count and rate.
pub fn timed_bar(label: &str, window: Duration) -> ProgressBar {
    labeled_bar(
        label,
        u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
        "{prefix:>18.bold} [{bar:30}] {elapsed}/{duration} {msg}",
    )
}

/// A bar of `length` drawn with `template`, `label` in front: the look every bar shares.
fn labeled_bar(label: &str, length: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(length).with_style(
        ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "),
    );
    bar.set_prefix(label.to_owned());
    bar
}

/// Moves a [`timed_bar`] along with the clock and, given a `counter`, shows it (`what`, e.g.
/// "completed") and its rate, every 100 ms until stopped.
#[derive(Debug)]
pub struct Ticker {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Ticker {
    /// Starts ticking `bar` from now.
    pub fn start(bar: ProgressBar, counter: Option<Arc<AtomicU64>>, what: &'static str) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let start = Instant::now();
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tick.tick() => {}
                    }
                    let elapsed = start.elapsed();
                    let millis = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
                    bar.set_position(millis.min(bar.length().unwrap_or(0)));
                    if let Some(counter) = &counter {
                        let count = counter.load(Ordering::Relaxed);
                        bar.set_message(format!(
                            "{count} {what} ({:.0}/s)",
                            count as f64 / elapsed.as_secs_f64().max(0.001)
                        ));
                    }
                }
                bar.finish_and_clear();
            }
        });
        Self { stop, task }
    }

    /// Stops and clears the bar.
    pub async fn finish(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}
