//! Crash points: places where a test can make a process die on the spot, to prove that a crash
//! there loses nothing and repeats nothing. A point is armed by naming it in the
//! `GENGATE_CRASH_POINTS` environment variable (comma-separated, each `name` or `name@n`); an armed
//! point aborts the process (no destructors, no flushing: as a `SIGKILL` would) the `n`th time it
//! is reached (the first, without `@n`). Unarmed, a point costs one look at a list read once. Never
//! arm one in production.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable that arms crash points.
pub const ENV: &str = "GENGATE_CRASH_POINTS";

/// An armed point: its name, on which arrival it fires, and how often it was reached.
struct Armed {
    name: String,
    at: u64,
    reached: AtomicU64,
}

fn armed() -> &'static [Armed] {
    static ARMED: OnceLock<Vec<Armed>> = OnceLock::new();
    ARMED.get_or_init(|| {
        let names = std::env::var(ENV).unwrap_or_default();
        names
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|point| {
                let (name, at) = point.split_once('@').unwrap_or((point, "1"));
                let at = at.parse().unwrap_or_else(|_| panic!("{ENV}: {point:?} is not name@n"));
                Armed { name: name.to_owned(), at, reached: AtomicU64::new(0) }
            })
            .collect()
    })
}

/// Aborts the process here if `name` is armed and this is the arrival it fires on.
pub fn reached(name: &str) {
    for point in armed().iter().filter(|p| p.name == name) {
        if point.reached.fetch_add(1, Ordering::SeqCst) + 1 == point.at {
            eprintln!("crash point {name} reached: aborting");
            std::process::abort();
        }
    }
}
