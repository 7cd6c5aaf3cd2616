//! Measurement primitives every stage shares: the monotonic clock used for latencies (the
//! one reading of a wall clock outside the capture itself), nanosecond histograms and their
//! sliding windows for Prometheus summaries, and table occupancy. No dependency on any
//! stage, so the capture and the workers can record without reaching downstream.

use hdrhistogram::Histogram;
use std::sync::OnceLock;
use std::time::Instant;

/// (entries, capacity, entries evicted or refused because the table was full).
pub type Occupancy = (u64, u64, u64);

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Monotonic nanoseconds since the first call in this process (never 0 after the first
/// call returns, so 0 can mean "unknown").
pub fn mono_ns() -> u64 {
    let e = EPOCH.get_or_init(Instant::now);
    u64::try_from(e.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Longest time a histogram records: one hour, in nanoseconds. Longer values are clamped.
const HIST_MAX_NS: u64 = 3_600_000_000_000;

/// A nanosecond histogram with 2 significant digits from 1 ns to one hour (~36 KiB).
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that satisfy hdrhistogram's only requirements (low >= 1,
    // high >= 2 * low, sigfig <= 5): construction depends on no input and cannot fail.
    #[allow(clippy::expect_used)]
    let h = Histogram::new_with_bounds(1, HIST_MAX_NS, 2).expect("constant bounds"); // ok: no input
    h
}

/// Records `count` observations of `ns` nanoseconds, clamped into the histogram's range.
pub fn record(h: &mut Histogram<u64>, ns: u64, count: u64) {
    let _ = h.record_n(ns.clamp(1, HIST_MAX_NS), count);
}

/// Length of a quantile window: a summary's quantiles cover the last 5 to 10 minutes, so
/// an old spike ages out and a new one is not drowned by weeks of history.
pub const QUANTILE_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// A histogram for a Prometheus summary: cumulative count and sum, quantiles over a sliding
/// window of two [`QUANTILE_WINDOW`]s (the current one and the one before).
#[derive(Debug)]
pub struct Windowed {
    current: Histogram<u64>,
    previous: Histogram<u64>,
    since: Instant,
    count: u64,
    sum_ns: f64,
}

impl Default for Windowed {
    fn default() -> Self {
        Windowed {
            current: new_histogram(),
            previous: new_histogram(),
            since: Instant::now(),
            count: 0,
            sum_ns: 0.0,
        }
    }
}

impl Windowed {
    fn rotate(&mut self) {
        let age = self.since.elapsed();
        if age < QUANTILE_WINDOW {
            return;
        }
        std::mem::swap(&mut self.previous, &mut self.current);
        self.current.reset();
        if age >= 2 * QUANTILE_WINDOW {
            self.previous.reset();
        }
        self.since = Instant::now();
    }

    /// Adds observations (same bounds: no allocation).
    pub fn add(&mut self, h: &Histogram<u64>) {
        self.rotate();
        let _ = self.current.add(h);
        self.count += h.len();
        self.sum_ns += h.mean() * h.len() as f64;
    }

    /// The window's observations, merged.
    pub fn window(&mut self) -> Histogram<u64> {
        self.rotate();
        let mut h = self.current.clone();
        let _ = h.add(&self.previous);
        h
    }

    /// Observations ever added.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Their sum, in nanoseconds.
    pub fn sum_ns(&self) -> f64 {
        self.sum_ns
    }
}
