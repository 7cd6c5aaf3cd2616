//! The sensor's side of the bus: the output thread hands each event (and progress marks) to
//! [`BusSink`], which encodes it and queues it for a publisher thread; that thread publishes
//! to JetStream and waits for the acknowledgements.
//!
//! The queue is bounded (`bus.queue`). Live, a full queue drops the event and counts it,
//! so an absent bus never holds up the output thread — the sensor's own alerts, written
//! by that thread at the crossing packet, keep flowing. A replay waits for room instead (up
//! to `bus.drain_timeout` at a time), so the bus receives the whole capture.
//!
//! Every message carries a de-duplication id (`Nats-Msg-Id`: sensor, run, sequence) fixed
//! when it is queued. A message whose acknowledgement fails or does not come is published
//! again with the same id, together with everything sent after it; JetStream drops the
//! copies it already stored, so a reconnecting sensor never counts anything twice.

use super::{connect, ensure_stream, partition_of_addr, subject, BusError};
use crate::config::BusConfig;
use crate::decode::Addr;
use crate::event::{Event, EventKey};
use crate::telemetry::BusCounters;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Messages published and awaiting acknowledgement at once: enough to keep a loopback or
/// LAN round trip busy, few enough that a failure re-sends little.
const WINDOW: usize = 512;

/// How long an acknowledgement may take before the message is sent again.
const ACK_WAIT: Duration = Duration::from_secs(3);

/// A batch message is closed at this size (JetStream's default message limit is 1 MiB).
const BATCH_BYTES: usize = 64 * 1024;

/// ...or at this many events.
const BATCH_EVENTS: u32 = 1024;

/// One queued item: an event for one partition, or a mark for all of them.
enum Item {
    Event { home: Addr, payload: Vec<u8> },
    Mark { watermark_ns: u64, done: bool },
}

/// A message ready to publish.
#[derive(Clone)]
struct Msg {
    subject: String,
    id: String,
    payload: bytes::Bytes,
    /// Events it carries (0: a mark).
    events: u32,
}

/// The open batch of one partition, and the partition's message numbering.
#[derive(Default)]
struct Batch {
    buf: Vec<u8>,
    events: u32,
    /// Number of the partition's next message (this run): batches and marks alike.
    next_msg: u64,
    /// This batch's number.
    msg: u64,
}

impl Batch {
    fn number(&mut self) -> u64 {
        self.next_msg += 1;
        self.next_msg
    }
}

/// What the publisher did, for the replay summary and the exit status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BusReport {
    /// Events acknowledged by the bus.
    pub published: u64,
    /// Messages acknowledged by the bus (batches of events, marks).
    pub messages: u64,
    /// Events dropped: queue full, or still unsent when the drain timed out.
    pub dropped: u64,
    /// Messages sent again after a failed acknowledgement.
    pub resent: u64,
}

/// The output thread's handle on the bus.
pub struct BusSink {
    tx: Option<Sender<Item>>,
    notify: Arc<tokio::sync::Notify>,
    closed: Arc<std::sync::atomic::AtomicBool>,
    counters: Arc<BusCounters>,
    thread: Option<std::thread::JoinHandle<()>>,
    sensor: String,
    /// Replay: wait for room in the queue instead of dropping.
    wait: Option<Duration>,
    /// The queue stayed full for a whole `wait`: the bus is away, stop waiting (and drop)
    /// until there is room again.
    stalled: bool,
    last_mark_ns: u64,
    last_mark_at: Instant,
}

impl BusSink {
    /// Starts the publisher thread for `cfg` (`bus.url` set). `lossless`: a replay, which
    /// waits for the bus rather than dropping.
    pub fn start(
        cfg: &BusConfig,
        lossless: bool,
        counters: Arc<BusCounters>,
    ) -> Result<BusSink, BusError> {
        let (tx, rx) = crossbeam_channel::bounded(cfg.queue.max(1));
        let notify = Arc::new(tokio::sync::Notify::new());
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sensor = cfg.effective_sensor_id();
        // The run tells this process's stream from a previous one of the same sensor
        // (whose watermark was further on) and makes the de-duplication ids unique.
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let worker = Publisher {
            cfg: cfg.clone(),
            rx,
            notify: Arc::clone(&notify),
            closed: Arc::clone(&closed),
            counters: Arc::clone(&counters),
            sensor: sensor.clone(),
            run,
        };
        let thread = std::thread::Builder::new()
            .name("outflow-bus".into())
            .spawn(move || worker.run())
            .map_err(|source| BusError::Start {
                what: "the bus publisher thread",
                source,
            })?;
        tracing::info!(url = %cfg.url, sensor = %sensor, "publishing events to the bus");
        Ok(BusSink {
            tx: Some(tx),
            notify,
            closed,
            counters,
            thread: Some(thread),
            sensor,
            wait: lossless.then_some(cfg.drain_timeout),
            stalled: false,
            last_mark_ns: 0,
            last_mark_at: Instant::now(),
        })
    }

    /// This sensor's id on the bus.
    pub fn sensor(&self) -> &str {
        &self.sensor
    }

    fn queue(&mut self, item: Item) {
        let Some(tx) = &self.tx else {
            return;
        };
        let is_event = matches!(item, Item::Event { .. });
        let sent = match (self.wait, self.stalled) {
            (Some(w), false) => match tx.send_timeout(item, w) {
                Ok(()) => true,
                Err(_) => {
                    tracing::error!(
                        "bus: queue full for {w:?}; dropping events until the bus takes them again"
                    );
                    self.stalled = true;
                    false
                }
            },
            _ => match tx.try_send(item) {
                Ok(()) => {
                    self.stalled = false;
                    true
                }
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
            },
        };
        if sent {
            if is_event {
                self.counters.queued.fetch_add(1, Ordering::Relaxed);
            }
            self.notify.notify_one();
        } else if is_event {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queues one event of the stream (never blocks live).
    pub fn event(&mut self, key: &EventKey, ev: &Event) {
        let mut payload = Vec::with_capacity(128);
        if let Err(e) = super::wire::encode_event(&mut payload, key, ev) {
            // Cannot happen for events this build produced; counted, never fatal.
            tracing::warn!("bus: cannot encode an event: {e}");
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let item = Item::Event {
            home: super::home_of(ev),
            payload,
        };
        self.queue(item);
    }

    /// The sensor's progress: no event below `watermark_ns` will follow. Sent when it
    /// moved at least a second of packet time, or 200 ms of wall time, since the last mark.
    pub fn progress(&mut self, watermark_ns: u64) {
        if watermark_ns <= self.last_mark_ns {
            return;
        }
        let packet_step = watermark_ns - self.last_mark_ns >= 1_000_000_000;
        if !packet_step && self.last_mark_at.elapsed() < Duration::from_millis(200) {
            return;
        }
        self.mark(watermark_ns, false);
    }

    fn mark(&mut self, watermark_ns: u64, done: bool) {
        self.last_mark_ns = watermark_ns;
        self.last_mark_at = Instant::now();
        let item = Item::Mark { watermark_ns, done };
        self.queue(item);
    }

    /// End of input: a last mark saying so, then waits (up to `bus.drain_timeout`) for
    /// the bus to take everything queued.
    pub fn finish(mut self, last_ns: u64) -> BusReport {
        // Never blocks: the end mark is worth waiting for only as long as the rest.
        self.wait = self.wait.map(|w| w.min(Duration::from_secs(1)));
        self.mark(last_ns.max(self.last_mark_ns), true);
        self.close()
    }

    fn close(&mut self) -> BusReport {
        self.tx = None;
        self.closed.store(true, Ordering::Release);
        self.notify.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let c = &self.counters;
        BusReport {
            published: c.published.load(Ordering::Relaxed),
            messages: c.messages.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            resent: c.resent.load(Ordering::Relaxed),
        }
    }
}

impl Drop for BusSink {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.close();
        }
    }
}

/// The publisher thread's state.
struct Publisher {
    cfg: BusConfig,
    rx: Receiver<Item>,
    notify: Arc<tokio::sync::Notify>,
    /// Set when the output thread is done (the queue's end).
    closed: Arc<std::sync::atomic::AtomicBool>,
    counters: Arc<BusCounters>,
    sensor: String,
    run: u64,
}

impl Publisher {
    fn run(self) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!("bus: cannot start the publisher's runtime: {e}");
                return;
            }
        };
        rt.block_on(self.publish());
    }

    /// The de-duplication id of message `msg` of partition `p`.
    fn id(&self, p: u32, msg: u64) -> String {
        format!("{}.{}.p{p}.{msg}", self.sensor, self.run)
    }

    /// Takes a queued item: an event joins its partition's batch (a full batch becomes a
    /// message); a mark first closes every batch (it must follow the events it covers),
    /// then goes to every partition.
    fn take(&self, item: Item, batches: &mut [Batch], out: &mut VecDeque<Msg>) {
        let n = batches.len() as u32;
        match item {
            Item::Event { home, payload } => {
                let p = partition_of_addr(home, n);
                let Some(b) = batches.get_mut(p as usize) else {
                    return;
                };
                if b.events == 0 {
                    b.buf.clear();
                    b.msg = b.number();
                    super::wire::encode_batch_head(&mut b.buf, &self.sensor, self.run, b.msg);
                }
                super::wire::push_event(&mut b.buf, &payload);
                b.events += 1;
                if b.buf.len() >= BATCH_BYTES || b.events >= BATCH_EVENTS {
                    self.close(p, b, out);
                }
            }
            Item::Mark { watermark_ns, done } => {
                self.close_all(batches, out);
                for (p, b) in batches.iter_mut().enumerate() {
                    let msg = b.number();
                    let mut buf = Vec::with_capacity(96);
                    super::wire::encode_mark(
                        &mut buf,
                        &self.sensor,
                        self.run,
                        msg,
                        watermark_ns,
                        done,
                    );
                    out.push_back(Msg {
                        subject: subject(p as u32),
                        id: self.id(p as u32, msg),
                        payload: bytes::Bytes::from(buf),
                        events: 0,
                    });
                }
            }
        }
    }

    /// Partition `p`'s batch becomes a message; its id (sensor, run, partition, number)
    /// is fixed from now on: a re-send is the same message.
    fn close(&self, p: u32, b: &mut Batch, out: &mut VecDeque<Msg>) {
        if b.events == 0 {
            return;
        }
        out.push_back(Msg {
            subject: subject(p),
            id: self.id(p, b.msg),
            payload: bytes::Bytes::from(std::mem::take(&mut b.buf)),
            events: b.events,
        });
        b.events = 0;
    }

    fn close_all(&self, batches: &mut [Batch], out: &mut VecDeque<Msg>) {
        for (p, b) in batches.iter_mut().enumerate() {
            self.close(p as u32, b, out);
        }
    }

    async fn publish(self) {
        let c = Arc::clone(&self.counters);
        let client = match connect(
            &self.cfg.url,
            &format!("outflow sensor {}", self.sensor),
            true,
        )
        .await
        {
            Ok(cl) => cl,
            Err(e) => {
                tracing::error!("{e}");
                c.errors.fetch_add(1, Ordering::Relaxed);
                self.drop_all(0);
                return;
            }
        };
        let js = async_nats::jetstream::ContextBuilder::new()
            .timeout(ACK_WAIT)
            .build(client.clone());
        let mut backoff = Duration::from_millis(100);
        let mut deadline: Option<Instant> = None;
        let mut closed = false;
        let mut warned = false;
        // The stream (and its partition count) first: until it is there, items wait in
        // the queue.
        let partitions = loop {
            c.connected.store(
                client.connection_state() == async_nats::connection::State::Connected,
                Ordering::Relaxed,
            );
            // Bounded: a request to a server that is away may otherwise wait for the
            // reconnect, past the drain deadline.
            let attempt = tokio::time::timeout(
                ACK_WAIT,
                ensure_stream(&js, self.cfg.partitions, self.cfg.retention),
            )
            .await;
            match attempt {
                Ok(Ok(n)) => break n,
                Ok(Err(e)) => {
                    c.errors.fetch_add(1, Ordering::Relaxed);
                    if !warned {
                        tracing::warn!("{e}; events queue until it is there (bus.queue)");
                        warned = true;
                    }
                }
                Err(_) => {
                    c.errors.fetch_add(1, Ordering::Relaxed);
                    if !warned {
                        tracing::warn!(
                            url = %self.cfg.url,
                            "bus unreachable; events queue until it answers (bus.queue)"
                        );
                        warned = true;
                    }
                }
            }
            closed |= self.closed.load(Ordering::Acquire);
            if closed {
                let d = *deadline.get_or_insert_with(|| Instant::now() + self.cfg.drain_timeout);
                if Instant::now() >= d {
                    self.drop_all(0);
                    return;
                }
            }
            let left = deadline.map_or(backoff, |d| d.saturating_duration_since(Instant::now()));
            tokio::time::sleep(backoff.min(left)).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        };
        if warned {
            tracing::info!(url = %self.cfg.url, "bus reachable; sending what was queued");
        }
        backoff = Duration::from_millis(100);
        let mut batches: Vec<Batch> = (0..partitions).map(|_| Batch::default()).collect();
        let mut fresh: VecDeque<Msg> = VecDeque::new();
        let mut retry: VecDeque<Msg> = VecDeque::new();
        let mut inflight: VecDeque<(Msg, async_nats::jetstream::context::PublishAckFuture)> =
            VecDeque::new();
        let mut failing = false;
        loop {
            // The output thread is done: start the drain clock even while every message
            // is waiting to be re-sent (the queue is then never looked at).
            closed |= self.closed.load(Ordering::Acquire);
            c.connected.store(
                client.connection_state() == async_nats::connection::State::Connected,
                Ordering::Relaxed,
            );
            // Fill the window: messages to send again first, in order, then new ones.
            while inflight.len() < WINDOW && !failing {
                let m = match retry.pop_front().or_else(|| fresh.pop_front()) {
                    Some(m) => m,
                    None => match self.rx.try_recv() {
                        Ok(item) => {
                            self.take(item, &mut batches, &mut fresh);
                            continue;
                        }
                        Err(e) => {
                            // Nothing more for now: what is batched goes out (live, a
                            // quiet link does not hold events back).
                            closed |= e == crossbeam_channel::TryRecvError::Disconnected;
                            self.close_all(&mut batches, &mut fresh);
                            if fresh.is_empty() {
                                break;
                            }
                            continue;
                        }
                    },
                };
                let mut h = async_nats::HeaderMap::new();
                h.insert("Nats-Msg-Id", m.id.as_str());
                // Bounded: with the bus away the client's buffer fills and a publish waits.
                let sent = tokio::time::timeout(
                    ACK_WAIT,
                    js.publish_with_headers(m.subject.clone(), h, m.payload.clone()),
                )
                .await;
                match sent {
                    Ok(Ok(ack)) => inflight.push_back((m, ack)),
                    _ => {
                        c.errors.fetch_add(1, Ordering::Relaxed);
                        retry.push_front(m);
                        failing = true;
                    }
                }
            }
            if closed {
                let d = *deadline.get_or_insert_with(|| Instant::now() + self.cfg.drain_timeout);
                if Instant::now() >= d {
                    let unsent: u64 = fresh
                        .iter()
                        .chain(retry.iter())
                        .chain(inflight.iter().map(|(m, _)| m))
                        .map(|m| u64::from(m.events))
                        .chain(batches.iter().map(|b| u64::from(b.events)))
                        .sum();
                    self.drop_all(unsent);
                    return;
                }
            }
            if let Some((m, ack)) = inflight.pop_front() {
                match tokio::time::timeout(ACK_WAIT, ack).await {
                    Ok(Ok(_)) => {
                        c.published
                            .fetch_add(u64::from(m.events), Ordering::Relaxed);
                        c.messages.fetch_add(1, Ordering::Relaxed);
                        sub_queued(&c, &m);
                        backoff = Duration::from_millis(100);
                        failing = false;
                    }
                    _ => {
                        // This one and everything after it go again, same ids, in order.
                        c.errors.fetch_add(1, Ordering::Relaxed);
                        let mut again: Vec<Msg> = vec![m];
                        again.extend(inflight.drain(..).map(|(m, _)| m));
                        c.resent.fetch_add(again.len() as u64, Ordering::Relaxed);
                        for m in again.into_iter().rev() {
                            retry.push_front(m);
                        }
                        failing = true;
                    }
                }
                continue;
            }
            if failing {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                failing = false;
                continue;
            }
            if fresh.is_empty() && retry.is_empty() {
                if closed {
                    return;
                }
                // Woken by the next item; the timeout notices a closed queue.
                let _ =
                    tokio::time::timeout(Duration::from_millis(200), self.notify.notified()).await;
            }
        }
    }

    /// Gives up on what is left: counted as dropped (events only; a mark is not an event
    /// of the stream). `unsent_msgs`: event messages already taken from the queue.
    fn drop_all(&self, unsent_msgs: u64) {
        let mut n = 0u64;
        while let Ok(item) = self.rx.try_recv() {
            if matches!(item, Item::Event { .. }) {
                n += 1;
            }
        }
        let total = n + unsent_msgs;
        if total > 0 {
            self.counters.dropped.fetch_add(total, Ordering::Relaxed);
            tracing::error!(
                url = %self.cfg.url,
                "bus: {total} events still unsent when bus.drain_timeout ({:?}) ran out: dropped",
                self.cfg.drain_timeout
            );
        }
        self.counters.queued.store(0, Ordering::Relaxed);
    }
}

/// A message was acknowledged: its events wait no longer (marks are not counted there).
fn sub_queued(c: &BusCounters, m: &Msg) {
    let n = u64::from(m.events);
    let _ = c
        .queued
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
            Some(q.saturating_sub(n))
        });
}
