//! Progress of a long replay on a terminal: bytes and packets read, rate, time left.
//!
//! Drawn on standard error only when the caller asks (the command does when standard error
//! is a terminal and `-q` is not given), and only once the replay has run
//! [`SHOW_AFTER`]: a short replay prints nothing but its summary. The reader calls
//! [`Progress::update`] every [`crate::pipeline::PUBLISH_EVERY`] frames; that reads the
//! monotonic clock once, and redraws at most every [`REDRAW_EVERY`] (the one allocation, the
//! line, is made then, never per packet).

use indicatif::{HumanBytes, HumanCount, HumanDuration, ProgressBar, ProgressDrawTarget};
use std::time::{Duration, Instant};

/// How long a replay runs before its progress is shown.
pub const SHOW_AFTER: Duration = Duration::from_secs(2);

/// Minimum time between two redraws: a few per second reads as live without costing
/// anything measurable.
pub const REDRAW_EVERY: Duration = Duration::from_millis(250);

/// The progress display of one replay.
pub struct Progress {
    enabled: bool,
    started: Instant,
    last: Option<Instant>,
    total: Option<u64>,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A display for inputs of `total` bytes in all (`None` when one is a stream), drawn
    /// only when `enabled`.
    pub fn new(enabled: bool, total: Option<u64>) -> Progress {
        Progress {
            enabled,
            started: Instant::now(),
            last: None,
            total,
            bar: None,
        }
    }

    /// A display that never draws.
    pub fn off() -> Progress {
        Progress::new(false, None)
    }

    /// Redraws if due. `bytes` (input bytes consumed so far: compressed bytes for a
    /// compressed file) is asked only then, since it may cost a system call.
    pub fn update(&mut self, bytes: impl FnOnce() -> u64, packets: u64) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        let elapsed = now.duration_since(self.started);
        if elapsed < SHOW_AFTER
            || self
                .last
                .is_some_and(|t| now.duration_since(t) < REDRAW_EVERY)
        {
            return;
        }
        self.last = Some(now);
        let bytes = bytes();
        let bar = self.bar.get_or_insert_with(|| new_bar(self.total));
        bar.set_position(bytes);
        bar.set_message(line(bytes, self.total, packets, elapsed));
    }

    /// Removes the display, so the summary that follows starts on a clean line.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

fn new_bar(total: Option<u64>) -> ProgressBar {
    // indicatif redraws on its own only when told to; our updates are already rate-limited.
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    let template = if total.is_some() {
        "[{bar:24}] {msg}"
    } else {
        "{msg}"
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// One progress line, e.g. `1.50 GiB of 3.00 GiB (50%), 1,000,000 packets, 150.00 MiB/s,
/// 100,000 packets/s, 10 seconds left`. Without a total (a stream) there is neither a share
/// nor a time left.
pub fn line(bytes: u64, total: Option<u64>, packets: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let byte_rate = bytes as f64 / secs;
    let pps = (packets as f64 / secs) as u64;
    let rate = format!(
        "{} packets, {}/s, {} packets/s",
        HumanCount(packets),
        HumanBytes(byte_rate as u64),
        HumanCount(pps)
    );
    match total {
        Some(total) if total > 0 => {
            let share = (bytes as f64 / total as f64 * 100.0).min(100.0);
            let left = total.saturating_sub(bytes);
            let eta = if byte_rate >= 1.0 {
                format!(
                    ", {} left",
                    HumanDuration(Duration::from_secs_f64(left as f64 / byte_rate))
                )
            } else {
                String::new()
            };
            format!(
                "{} of {} ({share:.0}%), {rate}{eta}",
                HumanBytes(bytes),
                HumanBytes(total)
            )
        }
        _ => format!("{} read, {rate}", HumanBytes(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_has_bytes_packets_rates_and_time_left() {
        let l = line(3 << 29, Some(3 << 30), 1_000_000, Duration::from_secs(10));
        assert_eq!(
            l,
            "1.50 GiB of 3.00 GiB (50%), 1,000,000 packets, 153.60 MiB/s, 100,000 packets/s, \
             10 seconds left"
        );
    }

    #[test]
    fn a_stream_has_no_share_and_no_time_left() {
        let l = line(1 << 20, None, 2_000, Duration::from_secs(4));
        assert_eq!(
            l,
            "1.00 MiB read, 2,000 packets, 256.00 KiB/s, 500 packets/s"
        );
    }

    #[test]
    fn nothing_read_yet_has_no_time_left_and_no_division_by_zero() {
        let l = line(0, Some(1000), 0, Duration::ZERO);
        assert_eq!(l, "0 B of 1000 B (0%), 0 packets, 0 B/s, 0 packets/s");
    }

    /// A display whose replay started `ago`.
    fn started(enabled: bool, ago: Duration) -> Progress {
        let mut p = Progress::new(enabled, Some(100));
        p.started = Instant::now().checked_sub(ago).unwrap_or(p.started);
        p
    }

    #[test]
    fn a_disabled_display_never_draws_nor_asks_for_bytes() {
        let mut p = started(false, SHOW_AFTER * 2);
        p.update(|| panic!("bytes asked of a disabled display"), 1);
        assert!(p.bar.is_none());
    }

    #[test]
    fn a_short_replay_shows_nothing_then_a_long_one_does() {
        let mut p = started(true, Duration::ZERO);
        p.update(|| panic!("bytes asked before the display is due"), 1);
        assert!(p.bar.is_none());
        let mut p = started(true, SHOW_AFTER * 2);
        p.update(|| 40, 1);
        assert_eq!(p.bar.as_ref().map(ProgressBar::position), Some(40));
        // Redrawn at most every REDRAW_EVERY: an update before then asks nothing. (The last
        // redraw is put in the future so that a slow machine cannot let the time pass.)
        p.last = Some(Instant::now() + Duration::from_secs(3600));
        p.update(|| panic!("bytes asked between redraws"), 2);
        p.finish();
        assert!(p.bar.is_none());
    }
}
