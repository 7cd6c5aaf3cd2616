//! Alert sinks: each on its own thread behind a bounded queue, retried with backoff.
//!
//! Every sink (the JSON-lines file or stdout, syslog) gets one thread and one bounded queue.
//! The output thread hands each rendered [`AlertRecord`] to every sink with
//! [`SinkHandle::deliver`] and moves on: a slow or dead sink (a syslog server that went
//! away, a full disk) can then never hold up capture, the output thread or the other sinks.
//!
//! Two modes, because replay and live capture want opposite things:
//!
//! - [`Mode::Lossless`] (replay): `deliver` blocks while the queue is full, so nothing is
//!   dropped; the first error is final (a replay must fail loudly, not silently skip alerts)
//!   and is returned by [`SinkHandle::close`].
//! - [`Mode::Lossy`] (live): `deliver` never blocks; a full queue drops the alert and counts
//!   it. A failed send is retried with exponential backoff (100 ms doubling to 30 s) while
//!   the following alerts wait in the queue, so order is kept and a sink that comes back
//!   gets everything that fit in the queue. At shutdown the thread keeps trying for a
//!   bounded time (2 s by default), then counts what is left as dropped.
//!
//! The thread holds at most one alert outside the queue (the one being retried), so a sink
//! never holds more than `queue + 1` alerts. Reopen requests (SIGHUP, after logrotate) travel
//! on a separate one-slot channel: they must not block the signal thread or be lost when the
//! alert queue is full, and must be seen while an alert is held in backoff.
//!
//! Nothing here panics: a sink thread that died would silently stop alerting.

use super::sink::Output;
use crate::telemetry::record::AlertRecord;
use crate::telemetry::SinkCounters;
use crossbeam_channel::{bounded, select, Receiver, RecvTimeoutError, Sender};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// First retry delay after a failed send (live). Short, so a one-off hiccup (a syslog
/// server restart, a TCP reset) costs little latency.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// Longest retry delay (live). Bounds how long after a sink comes back alerts start flowing
/// again, while keeping a dead sink's retries (and their DNS lookups, connects) rare.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How long [`SinkHandle::close`] lets a live sink keep trying its remaining alerts. Long
/// enough for a healthy sink to drain a full queue, short enough that a dead one cannot hold
/// up a service stop (systemd's default stop timeout is 90 s, shared with everything else).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// At most one "sink failing" warning per this interval: a dead syslog server retried every
/// 30 s for days must not fill the log.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// How a sink sends one alert (a file, stdout, a syslog socket).
pub trait Transport: Send + 'static {
    /// Label of this sink in metrics and logs: "file", "stdout", "syslog".
    fn name(&self) -> &'static str;
    /// Sends one alert. An error makes the sink thread retry it with backoff (live).
    fn send(&mut self, rec: &AlertRecord) -> io::Result<()>;
    /// Closes and reopens the destination (SIGHUP, after logrotate moved the file).
    fn reopen(&mut self) -> io::Result<()>;
}

/// Replay waits and treats errors as final; live never waits and retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Block when the queue is full; the first error is final and reported by `close`.
    Lossless,
    /// Never block the caller: drop (and count) when the queue is full; retry failures
    /// with exponential backoff.
    Lossy,
}

/// Requests to the sink thread other than alerts.
#[derive(Debug)]
enum Ctrl {
    /// Close and reopen the destination.
    Reopen,
}

/// Asks a sink to reopen its destination, from any thread (the SIGHUP handler's loop),
/// without blocking.
#[derive(Clone, Debug)]
pub struct Reopener(Sender<Ctrl>);

impl Reopener {
    /// Requests a reopen; a request already pending serves this one too.
    pub fn reopen(&self) {
        let _ = self.0.try_send(Ctrl::Reopen);
    }
}

/// The caller's end of a sink thread.
///
/// Dropping it without [`SinkHandle::close`] stops the thread the same way (with the
/// default grace period) but does not wait for it.
pub struct SinkHandle {
    name: &'static str,
    counters: Arc<SinkCounters>,
    mode: Mode,
    /// `None` once closing: dropping it tells the thread no more alerts will come.
    alerts: Option<Sender<Arc<AlertRecord>>>,
    /// One slot: a pending reopen absorbs further requests until the thread handles it.
    ctrl: Option<Sender<Ctrl>>,
    /// Set when closing: until when a live sink may keep trying.
    deadline: Arc<OnceLock<Instant>>,
    thread: Option<JoinHandle<Option<io::Error>>>,
}

impl SinkHandle {
    /// Starts the sink's thread, `outflow-sink-<name>`, behind a queue of `queue` alerts
    /// (at least 1).
    pub fn spawn(t: Box<dyn Transport>, mode: Mode, queue: usize) -> io::Result<SinkHandle> {
        let name = t.name();
        let counters = Arc::new(SinkCounters {
            up: AtomicBool::new(true),
            ..SinkCounters::default()
        });
        // A zero-capacity crossbeam channel is a rendezvous: every lossy delivery would be
        // dropped unless the thread happened to be waiting.
        let (alert_tx, alert_rx) = bounded(queue.max(1));
        let (ctrl_tx, ctrl_rx) = bounded(1);
        let deadline = Arc::new(OnceLock::new());
        let body = SinkThread {
            t,
            name,
            mode,
            c: Arc::clone(&counters),
            alerts: alert_rx,
            ctrl: ctrl_rx,
            ctrl_open: true,
            deadline: Arc::clone(&deadline),
            first_error: None,
            streak: 0,
            streak_logged: false,
            last_warn: None,
            shutdown_dropped: 0,
        };
        let thread = std::thread::Builder::new()
            .name(format!("outflow-sink-{name}"))
            .spawn(move || body.run())?;
        Ok(SinkHandle {
            name,
            counters,
            mode,
            alerts: Some(alert_tx),
            ctrl: Some(ctrl_tx),
            deadline,
            thread: Some(thread),
        })
    }

    /// The sink's label.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The sink's counters.
    pub fn counters(&self) -> Arc<SinkCounters> {
        Arc::clone(&self.counters)
    }

    /// Queues one alert. `Lossy`: never blocks; a full queue drops the alert and counts it.
    /// `Lossless`: waits for room.
    pub fn deliver(&self, rec: Arc<AlertRecord>) {
        let Some(tx) = self.alerts.as_ref() else {
            self.counters.dropped.fetch_add(1, Relaxed);
            return;
        };
        // Counted before the send so the thread's decrement can never run first and wrap
        // the gauge below zero.
        self.counters.queued.fetch_add(1, Relaxed);
        let queued = match self.mode {
            Mode::Lossless => tx.send(rec).is_ok(),
            Mode::Lossy => tx.try_send(rec).is_ok(),
        };
        if !queued {
            // Full (lossy), or the thread is gone (cannot happen short of a bug).
            self.counters.queued.fetch_sub(1, Relaxed);
            self.counters.dropped.fetch_add(1, Relaxed);
        }
    }

    /// A handle for reopening from another thread.
    pub fn reopener(&self) -> Option<Reopener> {
        self.ctrl.clone().map(Reopener)
    }

    /// Asks the sink to reopen its destination (never blocks). Alerts queued after this
    /// call go to the reopened destination.
    pub fn reopen(&self) {
        if let Some(tx) = self.ctrl.as_ref() {
            // Full means a reopen is already pending, which serves this request too.
            let _ = tx.try_send(Ctrl::Reopen);
        }
    }

    /// Drains and stops the thread; returns the first error in `Lossless` mode.
    ///
    /// `Lossless`: every queued alert is sent (or, after the first error, counted as
    /// dropped) before this returns. `Lossy`: the thread keeps trying for at most
    /// [`SHUTDOWN_GRACE`], then drops and counts the rest; always returns `None`.
    pub fn close(self) -> Option<io::Error> {
        self.close_within(SHUTDOWN_GRACE)
    }

    /// Like [`SinkHandle::close`] with a grace period of `d` for a `Lossy` sink (a send
    /// already in progress when it runs out still finishes: transports bound their own
    /// calls, e.g. syslog's 5 s TCP timeouts). `Lossless` sinks always drain fully, and so
    /// does a `Lossy` one given a `d` too large to add to the clock.
    pub fn close_within(mut self, d: Duration) -> Option<io::Error> {
        // A grace too long to represent is no limit (like `Lossless`).
        if let Some(t) = Instant::now().checked_add(d) {
            let _ = self.deadline.set(t);
        }
        self.alerts = None;
        self.ctrl = None;
        let thread = self.thread.take()?;
        match thread.join() {
            Ok(r) => r,
            Err(_) => {
                tracing::error!(sink = self.name, "alert sink thread panicked");
                match self.mode {
                    Mode::Lossless => Some(io::Error::other(format!(
                        "{} sink: thread panicked",
                        self.name
                    ))),
                    Mode::Lossy => None,
                }
            }
        }
    }
}

impl Drop for SinkHandle {
    fn drop(&mut self) {
        // No join: dropping must not block. The detached thread finishes within the grace.
        if let Some(t) = Instant::now().checked_add(SHUTDOWN_GRACE) {
            let _ = self.deadline.set(t);
        }
        self.alerts = None;
        self.ctrl = None;
    }
}

/// The sink thread's state.
struct SinkThread {
    t: Box<dyn Transport>,
    name: &'static str,
    mode: Mode,
    c: Arc<SinkCounters>,
    alerts: Receiver<Arc<AlertRecord>>,
    ctrl: Receiver<Ctrl>,
    /// False once the handle dropped its end (closing).
    ctrl_open: bool,
    deadline: Arc<OnceLock<Instant>>,
    /// Lossless: the error that ended delivery; later alerts are counted as dropped.
    first_error: Option<io::Error>,
    /// Consecutive failed attempts.
    streak: u64,
    /// Whether this failure streak was logged (its recovery is then logged too).
    streak_logged: bool,
    last_warn: Option<Instant>,
    /// Alerts given up on because the shutdown grace ran out.
    shutdown_dropped: u64,
}

impl SinkThread {
    fn run(mut self) -> Option<io::Error> {
        while let Some(rec) = self.next() {
            self.c.queued.fetch_sub(1, Relaxed);
            // A reopen requested before this alert was queued applies to it (logrotate:
            // rename, SIGHUP, and the next alert lands in the new file).
            while let Ok(Ctrl::Reopen) = self.ctrl.try_recv() {
                self.reopen();
            }
            if self.first_error.is_some() {
                self.c.dropped.fetch_add(1, Relaxed);
                continue;
            }
            self.send(&rec);
        }
        // Only a live sink out of grace gets here with alerts left; the senders are gone,
        // so this empties the queue for good.
        for _ in self.alerts.try_iter() {
            self.c.queued.fetch_sub(1, Relaxed);
            self.c.dropped.fetch_add(1, Relaxed);
            self.shutdown_dropped = self.shutdown_dropped.saturating_add(1);
        }
        if self.shutdown_dropped > 0 {
            tracing::warn!(
                sink = self.name,
                dropped = self.shutdown_dropped,
                "{} sink: {} alerts still unsent at shutdown were dropped",
                self.name,
                self.shutdown_dropped
            );
        }
        self.first_error
    }

    /// Until when a live sink may keep trying, once closing. Lossless sinks drain fully.
    fn closing_deadline(&self) -> Option<Instant> {
        match self.mode {
            Mode::Lossy => self.deadline.get().copied(),
            Mode::Lossless => None,
        }
    }

    /// The next alert, handling reopen requests while waiting; `None` when the queue is
    /// closed and empty, or the shutdown grace is over.
    fn next(&mut self) -> Option<Arc<AlertRecord>> {
        loop {
            let deadline = self.closing_deadline();
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
            if self.ctrl_open {
                select! {
                    recv(self.alerts) -> r => return r.ok(),
                    recv(self.ctrl) -> c => match c {
                        Ok(Ctrl::Reopen) => self.reopen(),
                        Err(_) => self.ctrl_open = false,
                    },
                }
            } else {
                return match deadline {
                    Some(d) => self.alerts.recv_deadline(d).ok(),
                    None => self.alerts.recv().ok(),
                };
            }
        }
    }

    /// Sends one alert: once (lossless), or until it succeeds or the shutdown grace runs
    /// out (lossy).
    fn send(&mut self, rec: &AlertRecord) {
        let mut backoff = INITIAL_BACKOFF;
        loop {
            let e = match self.t.send(rec) {
                Ok(()) => {
                    self.succeeded();
                    return;
                }
                Err(e) => e,
            };
            self.c.failures.fetch_add(1, Relaxed);
            self.c.up.store(false, Relaxed);
            self.streak = self.streak.saturating_add(1);
            match self.mode {
                Mode::Lossless => {
                    self.c.dropped.fetch_add(1, Relaxed);
                    tracing::error!(
                        sink = self.name,
                        "{} sink failed, its remaining alerts are dropped: {e}",
                        self.name
                    );
                    self.first_error =
                        Some(io::Error::new(e.kind(), format!("{} sink: {e}", self.name)));
                    return;
                }
                Mode::Lossy => {
                    self.warn(&e);
                    if !self.wait(backoff) {
                        self.c.dropped.fetch_add(1, Relaxed);
                        self.shutdown_dropped = self.shutdown_dropped.saturating_add(1);
                        return;
                    }
                    backoff = backoff.saturating_mul(2).min(MAX_BACKOFF);
                }
            }
        }
    }

    fn succeeded(&mut self) {
        self.c.delivered.fetch_add(1, Relaxed);
        self.c.up.store(true, Relaxed);
        if self.streak > 0 {
            // Logged only when the failure was: every "failing" line in the log is followed
            // by its "recovered" line, and a flapping sink is still rate-limited.
            if self.streak_logged {
                tracing::info!(
                    sink = self.name,
                    failures = self.streak,
                    "{} sink recovered after {} failures",
                    self.name,
                    self.streak
                );
            }
            self.streak = 0;
            self.streak_logged = false;
        }
    }

    /// Rate-limited failure warning: the first failure, then at most once per minute.
    fn warn(&mut self, e: &io::Error) {
        if self.last_warn.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            return;
        }
        self.last_warn = Some(Instant::now());
        self.streak_logged = true;
        tracing::warn!(
            sink = self.name,
            failures = self.streak,
            "{} sink failing ({} consecutive failures), retrying with backoff: {e}",
            self.name,
            self.streak
        );
    }

    /// Waits `backoff` before the next retry, still handling reopen requests (a reopen ends
    /// the wait: it may be what fixes the sink). False when the shutdown grace ran out.
    fn wait(&mut self, backoff: Duration) -> bool {
        let now = Instant::now();
        // `backoff` is at most MAX_BACKOFF, so the fallback (retry now) never happens.
        let mut until = now.checked_add(backoff).unwrap_or(now);
        loop {
            let now = Instant::now();
            if let Some(d) = self.closing_deadline() {
                if now >= d {
                    return false;
                }
                until = until.min(d);
            }
            if now >= until {
                return true;
            }
            if self.ctrl_open {
                match self.ctrl.recv_deadline(until) {
                    Ok(Ctrl::Reopen) => {
                        self.reopen();
                        return true;
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => self.ctrl_open = false,
                }
            } else {
                std::thread::sleep(until.saturating_duration_since(now));
            }
        }
    }

    fn reopen(&mut self) {
        match self.t.reopen() {
            Ok(()) => tracing::info!(sink = self.name, "{} sink reopened", self.name),
            Err(e) => {
                self.c.failures.fetch_add(1, Relaxed);
                self.c.up.store(false, Relaxed);
                tracing::warn!(sink = self.name, "{} sink: cannot reopen: {e}", self.name);
            }
        }
    }
}

/// Alerts as JSON lines to a file or standard output.
///
/// Each alert is one `write` of the whole line (so lines from concurrent writers are never
/// interleaved) with no user-space buffer, so a `tail -f` sees it at once. After a write
/// error the file is closed and the next attempt reopens the path for appending: that is
/// how a full disk that was cleaned up, or a directory removed and recreated, recovers.
pub struct JsonLinesFile {
    output: Output,
    /// `None` for stdout, and for a file after a failed write or reopen.
    file: Option<File>,
    /// Reused line buffer.
    line: Vec<u8>,
}

impl JsonLinesFile {
    /// Opens `output` now, so a bad path fails at start-up; `append` keeps an existing
    /// file's content (live), otherwise it is truncated (replay). Reopens always append.
    pub fn open(output: &Output, append: bool) -> io::Result<Self> {
        let file = match output {
            Output::Stdout => None,
            Output::File(p) => Some(open_file(p, append)?),
        };
        Ok(JsonLinesFile {
            output: output.clone(),
            file,
            line: Vec::new(),
        })
    }
}

impl Transport for JsonLinesFile {
    fn name(&self) -> &'static str {
        match self.output {
            Output::Stdout => "stdout",
            Output::File(_) => "file",
        }
    }

    fn send(&mut self, rec: &AlertRecord) -> io::Result<()> {
        self.line.clear();
        self.line.extend_from_slice(rec.json.as_bytes());
        self.line.push(b'\n');
        match &self.output {
            Output::Stdout => {
                // The lock keeps other stdout writers out for the whole line.
                let mut out = io::stdout().lock();
                out.write_all(&self.line)
                    .and_then(|()| out.flush())
                    .map_err(|e| io::Error::new(e.kind(), format!("cannot write to stdout: {e}")))
            }
            Output::File(p) => {
                let mut f = match self.file.take() {
                    Some(f) => f,
                    None => open_file(p, true)?,
                };
                match f.write_all(&self.line).and_then(|()| f.flush()) {
                    Ok(()) => {
                        self.file = Some(f);
                        Ok(())
                    }
                    // `f` is dropped: the retry reopens the path.
                    Err(e) => Err(io::Error::new(
                        e.kind(),
                        format!("cannot write {}: {e}", p.display()),
                    )),
                }
            }
        }
    }

    fn reopen(&mut self) -> io::Result<()> {
        if let Output::File(p) = &self.output {
            // Close first: if the open fails, the next send retries it.
            self.file = None;
            self.file = Some(open_file(p, true)?);
        }
        Ok(())
    }
}

/// Opens (appending) or creates (truncating) `p`; the error names the path.
fn open_file(p: &Path, append: bool) -> io::Result<File> {
    let r = if append {
        open_append(p)
    } else {
        File::create(p)
    };
    r.map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", p.display())))
}

/// Opens `p` for appending and, if it ends in a partial line (a write cut short by a full
/// disk, a crash), ends that line, so the next alert is not glued onto it and lost to
/// parsers.
fn open_append(p: &Path) -> io::Result<File> {
    let rw = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(p);
    let f = match rw {
        Ok(f) => f,
        // Write-only permission: append without the check.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return OpenOptions::new().append(true).create(true).open(p);
        }
        Err(e) => return Err(e),
    };
    if ends_mid_line(&f) {
        (&f).write_all(b"\n")?;
    }
    Ok(f)
}

/// Whether a non-empty regular file's last byte is not a newline. Best effort: anything
/// unreadable (a FIFO, a device) counts as ending cleanly.
fn ends_mid_line(f: &File) -> bool {
    use std::os::unix::fs::FileExt;
    let Ok(meta) = f.metadata() else {
        return false;
    };
    let Some(last) = meta.len().checked_sub(1) else {
        return false;
    };
    if !meta.is_file() {
        return false;
    }
    let mut b = [0u8; 1];
    matches!(f.read_at(&mut b, last), Ok(1)) && b != [b'\n']
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Detector;
    use std::sync::atomic::AtomicU64;
    use std::sync::Mutex;

    fn rec(i: u64) -> Arc<AlertRecord> {
        Arc::new(AlertRecord::from_json(
            Detector::LargeTransfer,
            i,
            format!(r#"{{"alert_id":"a{i}","message":"m{i}"}}"#),
            0,
        ))
    }

    /// Fails the first `fail` attempts, then succeeds; records what it sent and when.
    struct Flaky {
        fail: u64,
        attempts: Arc<Mutex<Vec<Instant>>>,
        sent: Arc<Mutex<Vec<String>>>,
        reopens: Arc<AtomicU64>,
        /// Fail until reopened (instead of counting attempts).
        until_reopen: bool,
    }

    impl Flaky {
        fn new(fail: u64) -> Self {
            Flaky {
                fail,
                attempts: Arc::default(),
                sent: Arc::default(),
                reopens: Arc::default(),
                until_reopen: false,
            }
        }
    }

    impl Transport for Flaky {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn send(&mut self, rec: &AlertRecord) -> io::Result<()> {
            let mut a = self.attempts.lock().unwrap();
            a.push(Instant::now());
            let failing = if self.until_reopen {
                self.reopens.load(Relaxed) == 0
            } else {
                a.len() as u64 <= self.fail
            };
            if failing {
                return Err(io::Error::other("refused"));
            }
            self.sent.lock().unwrap().push(rec.id.clone());
            Ok(())
        }
        fn reopen(&mut self) -> io::Result<()> {
            self.reopens.fetch_add(1, Relaxed);
            Ok(())
        }
    }

    /// Blocks every send until the gate's sender is dropped.
    struct Stuck(Receiver<()>);

    impl Transport for Stuck {
        fn name(&self) -> &'static str {
            "stuck"
        }
        fn send(&mut self, _: &AlertRecord) -> io::Result<()> {
            let _ = self.0.recv();
            Ok(())
        }
        fn reopen(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn wait_for(mut cond: impl FnMut() -> bool) {
        let end = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < end, "timed out");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn lossy_retries_with_backoff_and_keeps_order() {
        let t = Flaky::new(3);
        let (attempts, sent) = (Arc::clone(&t.attempts), Arc::clone(&t.sent));
        let h = SinkHandle::spawn(Box::new(t), Mode::Lossy, 16).unwrap();
        let c = h.counters();
        assert!(c.up.load(Relaxed), "up before the first attempt");
        let start = Instant::now();
        for i in 0..5 {
            h.deliver(rec(i));
        }
        wait_for(|| c.delivered.load(Relaxed) == 5);
        let took = start.elapsed();
        assert!(h.close().is_none());
        assert_eq!(*sent.lock().unwrap(), ["a0", "a1", "a2", "a3", "a4"]);
        assert_eq!(c.failures.load(Relaxed), 3);
        assert_eq!(c.dropped.load(Relaxed), 0);
        assert_eq!(c.queued.load(Relaxed), 0);
        assert!(c.up.load(Relaxed));
        // Waits of 100, 200 and 400 ms between the four attempts at the first alert.
        let a = attempts.lock().unwrap();
        let gaps: Vec<Duration> = a.windows(2).take(3).map(|w| w[1] - w[0]).collect();
        for (g, min) in gaps.iter().zip([90, 190, 390]) {
            assert!(*g >= Duration::from_millis(min), "gaps {gaps:?}");
        }
        assert!(gaps[2] > gaps[0], "gaps {gaps:?}");
        assert!(took >= Duration::from_millis(650) && took < Duration::from_secs(5));
    }

    #[test]
    fn lossy_full_queue_drops_without_blocking() {
        let (gate, rx) = bounded::<()>(0);
        let h = SinkHandle::spawn(Box::new(Stuck(rx)), Mode::Lossy, 16).unwrap();
        let c = h.counters();
        let start = Instant::now();
        for i in 0..10_000 {
            h.deliver(rec(i));
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        // 16 queued plus at most one held by the stuck transport.
        let dropped = c.dropped.load(Relaxed);
        assert!((10_000 - 17..=10_000 - 16).contains(&dropped), "{dropped}");
        assert!(c.queued.load(Relaxed) <= 16);
        drop(gate);
        assert!(h.close().is_none());
        assert_eq!(c.delivered.load(Relaxed) + c.dropped.load(Relaxed), 10_000);
        assert_eq!(c.queued.load(Relaxed), 0);
    }

    #[test]
    fn lossless_first_error_is_returned_by_close() {
        // Succeeds once, then fails: attempt 1 ok is arranged by failing from attempt 2 on.
        struct FailSecond(u32);
        impl Transport for FailSecond {
            fn name(&self) -> &'static str {
                "fake"
            }
            fn send(&mut self, _: &AlertRecord) -> io::Result<()> {
                self.0 += 1;
                if self.0 >= 2 {
                    return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
                }
                Ok(())
            }
            fn reopen(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let h = SinkHandle::spawn(Box::new(FailSecond(0)), Mode::Lossless, 2).unwrap();
        let c = h.counters();
        for i in 0..5 {
            h.deliver(rec(i));
        }
        let e = h.close().expect("an error");
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert!(e.to_string().contains("fake sink"), "{e}");
        assert!(e.to_string().contains("disk full"), "{e}");
        assert_eq!(c.delivered.load(Relaxed), 1);
        assert_eq!(c.failures.load(Relaxed), 1, "no retry in lossless mode");
        assert_eq!(c.dropped.load(Relaxed), 4);
        assert_eq!(c.queued.load(Relaxed), 0);
        assert!(!c.up.load(Relaxed));
    }

    #[test]
    fn lossless_drains_everything_on_close() {
        let t = Flaky::new(0);
        let sent = Arc::clone(&t.sent);
        let h = SinkHandle::spawn(Box::new(t), Mode::Lossless, 1).unwrap();
        for i in 0..100 {
            h.deliver(rec(i));
        }
        assert!(h.close().is_none());
        assert_eq!(sent.lock().unwrap().len(), 100);
    }

    #[test]
    fn close_within_bounds_a_dead_sink() {
        let t = Flaky::new(u64::MAX);
        let h = SinkHandle::spawn(Box::new(t), Mode::Lossy, 16).unwrap();
        let c = h.counters();
        for i in 0..5 {
            h.deliver(rec(i));
        }
        wait_for(|| c.failures.load(Relaxed) >= 1);
        let start = Instant::now();
        assert!(h.close_within(Duration::from_millis(300)).is_none());
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(250), "{took:?}");
        assert!(took < Duration::from_secs(1), "{took:?}");
        assert_eq!(c.delivered.load(Relaxed), 0);
        assert_eq!(c.dropped.load(Relaxed), 5);
        assert_eq!(c.queued.load(Relaxed), 0);
    }

    #[test]
    fn reopen_during_backoff_retries_at_once() {
        let mut t = Flaky::new(0);
        t.until_reopen = true;
        let (attempts, reopens) = (Arc::clone(&t.attempts), Arc::clone(&t.reopens));
        let h = SinkHandle::spawn(Box::new(t), Mode::Lossy, 4).unwrap();
        let c = h.counters();
        h.deliver(rec(0));
        // Into the 800 ms wait (after attempts at 0, 100, 300, 700 ms).
        wait_for(|| attempts.lock().unwrap().len() >= 4);
        let start = Instant::now();
        h.reopen();
        wait_for(|| c.delivered.load(Relaxed) == 1);
        assert!(start.elapsed() < Duration::from_millis(400));
        assert_eq!(reopens.load(Relaxed), 1);
        assert!(h.close().is_none());
    }

    #[test]
    fn file_writes_lines_and_follows_logrotate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.json");
        std::fs::write(&path, "old\n").unwrap();
        let out = Output::File(path.clone());
        // Replay truncates; the reopen appends.
        let t = JsonLinesFile::open(&out, false).unwrap();
        assert_eq!(t.name(), "file");
        let h = SinkHandle::spawn(Box::new(t), Mode::Lossy, 8).unwrap();
        let c = h.counters();
        h.deliver(rec(1));
        h.deliver(rec(2));
        wait_for(|| c.delivered.load(Relaxed) == 2);
        let rotated = dir.path().join("alerts.json.1");
        std::fs::rename(&path, &rotated).unwrap();
        h.reopen();
        h.deliver(rec(3));
        assert!(h.close().is_none());
        let old = std::fs::read_to_string(&rotated).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!(old.lines().count(), 2, "{old}");
        assert!(old.starts_with(r#"{"alert_id":"a1""#), "{old}");
        assert!(old.lines().nth(1).unwrap().contains("\"a2\""), "{old}");
        assert!(old.ends_with('\n'));
        assert_eq!(new, "{\"alert_id\":\"a3\",\"message\":\"m3\"}\n");
        assert_eq!(c.failures.load(Relaxed), 0);
    }

    #[test]
    fn file_recovers_when_its_directory_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("log");
        std::fs::create_dir(&sub).unwrap();
        let path = sub.join("alerts.json");
        let mut t = JsonLinesFile::open(&Output::File(path.clone()), true).unwrap();
        t.send(&rec(1)).unwrap();
        std::fs::remove_dir_all(&sub).unwrap();
        // The open handle still works on the unlinked file; a reopen needs the directory.
        let e = t.reopen().unwrap_err();
        assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}");
        let e = t.send(&rec(2)).unwrap_err();
        assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}");
        std::fs::create_dir(&sub).unwrap();
        t.send(&rec(3)).unwrap();
        let s = std::fs::read_to_string(&path).unwrap();
        assert_eq!(s, "{\"alert_id\":\"a3\",\"message\":\"m3\"}\n");
    }

    #[test]
    fn file_append_ends_a_partial_line_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.json");
        std::fs::write(&path, "{\"cut\":").unwrap();
        let mut t = JsonLinesFile::open(&Output::File(path.clone()), true).unwrap();
        t.send(&rec(1)).unwrap();
        let s = std::fs::read_to_string(&path).unwrap();
        assert_eq!(s, "{\"cut\":\n{\"alert_id\":\"a1\",\"message\":\"m1\"}\n");
    }

    #[test]
    fn file_open_error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("alerts.json");
        let e = JsonLinesFile::open(&Output::File(path.clone()), true)
            .err()
            .expect("an error");
        assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}");
    }

    #[test]
    fn stdout_reopen_is_a_no_op() {
        let mut t = JsonLinesFile::open(&Output::Stdout, true).unwrap();
        assert_eq!(t.name(), "stdout");
        t.reopen().unwrap();
    }

    #[test]
    fn thread_is_named_after_the_sink() {
        struct Named(Arc<Mutex<Option<String>>>);
        impl Transport for Named {
            fn name(&self) -> &'static str {
                "syslog"
            }
            fn send(&mut self, _: &AlertRecord) -> io::Result<()> {
                *self.0.lock().unwrap() = std::thread::current().name().map(str::to_owned);
                Ok(())
            }
            fn reopen(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let seen = Arc::new(Mutex::new(None));
        let h = SinkHandle::spawn(Box::new(Named(Arc::clone(&seen))), Mode::Lossless, 1).unwrap();
        assert_eq!(h.name(), "syslog");
        h.deliver(rec(0));
        assert!(h.close().is_none());
        assert_eq!(seen.lock().unwrap().as_deref(), Some("outflow-sink-syslog"));
    }
}
